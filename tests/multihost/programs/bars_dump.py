"""Open a market feed of the sim backend on TOPIC through the root at
HOST:PORT, print a ready line, wait for STEPS steps of its 1 s bars, then
print one JSON line: whether the buffers came by stream (another host) or
shared memory, this host's id, and per period its closed rows, each as
the hex of its bytes by its ``index`` (rows closed at least two steps
before the open one, so settled).  Usage: bars_dump.py HOST PORT TOPIC STEPS"""

import json
import sys

import trio

from tractor_sampler import open_market_feed
from tractor_sampler._remote import LocalBuffer
from tractor_services import host_id


async def main(host: str, port: int, topic: str, steps: int) -> None:
    async with open_market_feed([topic], registry_addr=(host, port)) as feed:
        print(json.dumps({'ready': True}), flush=True)
        shm = feed.buffer(topic, 1.0)
        start = int(shm.last_row['index'])
        with trio.fail_after(120):
            while int(shm.last_row['index']) < start + steps:
                await trio.sleep(0.05)
        rows = {}
        for p, buf in feed.buffers[topic].items():
            arr = buf.array
            settled = arr[arr['index'] <= int(arr['index'][-1]) - 2]
            rows[repr(p)] = {int(r['index']): r.tobytes().hex() for r in settled}
        out = {
            'remote': isinstance(shm, LocalBuffer),
            'host_id': host_id(),
            'rows': rows,
        }
    print(json.dumps(out), flush=True)


if __name__ == '__main__':
    trio.run(main, sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4]))
