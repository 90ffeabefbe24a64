"""A root daemon with two services; prints one JSON line with their pids
when ready.  Usage: daemon.py HOST PORT"""

import json
import os
import sys

import trio

from tractor_services import open_service_root

import services_endpoints as eps


async def main(host: str, port: int) -> None:
    async with open_service_root((host, port)) as mngr:
        pids = {}
        for name in ('alpha', 'beta'):
            pid, _ = await mngr.start_service(name, eps.sleeper)
            pids[name] = pid
        # one whose event loop is stuck: it must die with the root all the same
        pids['stuck'], _ = await mngr.start_service(
            'stuck', eps.blocks_its_loop, shutdown_timeout=1
        )
        print(
            json.dumps({'ready': True, 'root': os.getpid(), 'services': pids}),
            flush=True,
        )
        await trio.sleep_forever()
    print(json.dumps({'stopped': True}), flush=True)


if __name__ == '__main__':
    trio.run(main, sys.argv[1], int(sys.argv[2]))
