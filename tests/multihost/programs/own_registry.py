"""(another host) A program that runs a registry of its own at MYHOST
(a service root) and looks NAME up in the registry at HOST:PORT.  Prints
one JSON line: where NAME is, or the error (type and message).
Usage: own_registry.py MYHOST HOST PORT NAME"""

import json
import sys

import trio

from tractor_services import compat, open_service_root
from tractor_services.testing import free_port


async def main(my_host: str, host: str, port: int, name: str) -> None:
    async with open_service_root((my_host, free_port(my_host)), handle_signals=False):
        assert compat.is_registry()
        try:
            with trio.fail_after(30):
                where = await compat.find_actor_addr(name, (host, port))
        except Exception as err:
            out = {'error': type(err).__name__, 'message': str(err)}
        else:
            out = {'found': list(where) if where else None}
    print(json.dumps(out), flush=True)


if __name__ == '__main__':
    trio.run(main, sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4])
