"""Drive the root at HOST:PORT as a peer: each STEP is a JSON list
``[token, action, name, endpoint]`` (action ``start`` or ``cancel``,
token ``null`` for none).  Prints one JSON list: per step ``"ok"`` or
``[error type, message]``.  Usage: control.py HOST PORT STEP..."""

import json
import sys

import trio

from tractor_services import compat
from tractor_services._remote import RemoteServiceMngr


async def main(host: str, port: int, steps: list) -> None:
    addr = (host, port)
    out = []
    async with compat.open_root_actor(addr, 'control', loglevel='critical'):
        async with compat.open_portal(addr) as portal:
            for token, action, name, endpoint in steps:
                mngr = RemoteServiceMngr(portal, token)
                try:
                    if action == 'start':
                        await mngr.start_service(name, endpoint)
                    else:
                        await mngr.cancel_service(name)
                except Exception as err:
                    out.append([type(err).__name__, str(err)])
                else:
                    out.append('ok')
    print(json.dumps(out), flush=True)


if __name__ == '__main__':
    trio.run(main, sys.argv[1], int(sys.argv[2]), [json.loads(a) for a in sys.argv[3:]])
