"""(any host) A client root named NAME registered in the registry at
HOST:PORT; prints one JSON line with the address it bound, then waits.
Usage: client_root.py HOST PORT NAME"""

import json
import sys

import trio

from tractor_services import compat


async def main(host: str, port: int, name: str) -> None:
    async with compat.open_root_actor((host, port), name, loglevel='critical') as actor:
        print(json.dumps({'bound': list(actor.accept_addr)}), flush=True)
        await trio.sleep_forever()


if __name__ == '__main__':
    trio.run(main, sys.argv[1], int(sys.argv[2]), sys.argv[3])
