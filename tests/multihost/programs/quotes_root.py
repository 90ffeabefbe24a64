"""(host a) A service root at HOST:PORT and nothing else: no samplerd.
A feed daemon started here by a relay on another host runs quotes-only
(no bars, no samplerd).  Prints one JSON line when ready; runs until
SIGTERM.  Usage: quotes_root.py HOST PORT"""

import json
import sys

import trio

from tractor_services import open_service_root


async def main(host: str, port: int) -> None:
    async with open_service_root((host, port)):
        print(json.dumps({'ready': True}), flush=True)
        await trio.sleep_forever()


if __name__ == '__main__':
    trio.run(main, sys.argv[1], int(sys.argv[2]))
