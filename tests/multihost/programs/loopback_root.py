"""(host a) A service root at HOST:PORT whose services bind 127.0.0.1
(as every service did before roots had a service host): one service,
``lonely``.  Prints one JSON line when ready; runs until SIGTERM.
Usage: loopback_root.py HOST PORT"""

import json
import sys

import mh_endpoints
import trio

from tractor_services import open_service_root


async def main(host: str, port: int) -> None:
    async with open_service_root((host, port), service_host='127.0.0.1') as mngr:
        await mngr.start_service('lonely', mh_endpoints.idle)
        print(json.dumps({'ready': True}), flush=True)
        await trio.sleep_forever()


if __name__ == '__main__':
    trio.run(main, sys.argv[1], int(sys.argv[2]))
