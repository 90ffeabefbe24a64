"""A separate program: find-or-spawn a service through the registry.
Usage: client.py HOST PORT NAME"""

import json
import sys

import trio

from tractor_services import maybe_spawn_daemon

import services_endpoints as eps


async def main(host: str, port: int, name: str) -> None:
    async with maybe_spawn_daemon(
        name, 'services_endpoints:sleeper', registry_addr=(host, port)
    ) as portal:
        pong = await portal.run(eps.ping)
        uid = list(portal.channel.uid)
    print(json.dumps({'pong': pong, 'uid': uid}), flush=True)


if __name__ == '__main__':
    trio.run(main, sys.argv[1], int(sys.argv[2]), sys.argv[3])
