"""Child process for test_shm: attaches or creates a buffer and obeys one
command per stdin line, answering one JSON line per command on stdout.

    python shm_child.py attach '<token json>'   # attach read-only
    python shm_child.py create <key>            # create, push 3 rows

Commands: ``read`` (the window and the closes), ``write`` (try every way
of writing; reports what each raised), ``tracker`` (the pid of this
process' resource tracker), ``exit`` (return without destroying).
"""

from __future__ import annotations

import json
import sys
from multiprocessing import resource_tracker

import numpy as np

from tractor_sampler.shm import ShmToken, attach_shm_array, open_shm_array


def reply(obj: object) -> None:
    print(json.dumps(obj), flush=True)


def main() -> None:
    mode, arg = sys.argv[1], sys.argv[2]
    if mode == 'attach':
        shm = attach_shm_array(ShmToken.from_msg(json.loads(arg)), readonly=True)
    else:
        shm = open_shm_array(16, key=arg)
        rows = np.zeros(3, dtype=shm.dtype)
        rows['close'] = [1.0, 2.0, 3.0]
        shm.push(rows)
    reply({'ready': shm.token.shm_name})
    for line in sys.stdin:
        cmd = line.strip()
        if cmd == 'read':
            arr = shm.array
            reply(
                {
                    'first': shm.first,
                    'last': shm.last,
                    'close': arr['close'].tolist(),
                    'writeable': bool(arr.flags.writeable),
                }
            )
        elif cmd == 'write':
            out = {}
            try:
                shm.push(np.zeros(1, dtype=shm.dtype))
                out['push'] = 'ok'
            except Exception as err:
                out['push'] = type(err).__name__
            arr = shm.array
            try:
                arr['close'][0] = -1.0
                out['assign'] = 'ok'
            except Exception as err:
                out['assign'] = type(err).__name__
            try:
                arr.flags.writeable = True
                out['flag'] = 'ok'
            except Exception as err:
                out['flag'] = type(err).__name__
            reply(out)
        elif cmd == 'tracker':
            reply({'pid': resource_tracker._resource_tracker._pid})
        elif cmd == 'exit':
            return
        else:
            reply({'error': f'unknown command {cmd!r}'})


if __name__ == '__main__':
    main()
