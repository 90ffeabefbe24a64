"""A root that joins another root's registry as a host of its own.
Usage: joiner.py REG_HOST REG_PORT HOST LABEL; prints one JSON line when
ready ({"ready": true, "root": pid}), or {"error": "<Type>: <message>"}
and exits 1 when the join is refused.  SIGTERM stops it cleanly."""

import json
import os
import sys

import trio

from tractor_services import ServiceError, compat
from tractor_services._join import open_join_root


async def main(reg_host: str, reg_port: int, host: str, label: str) -> int:
    try:
        async with open_join_root((reg_host, reg_port), host=host, label=label):
            print(json.dumps({'ready': True, 'root': os.getpid()}), flush=True)
            await trio.sleep_forever()
    except Exception as exc:
        err = compat.unwrap_error(exc)
        if not isinstance(err, (ServiceError, ValueError, OSError)):
            raise
        print(json.dumps({'error': f'{type(err).__name__}: {err}'}), flush=True)
        return 1
    return 0


if __name__ == '__main__':
    sys.exit(trio.run(main, sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]))
