"""A client of a relay mirror: with a root actor on the mirror's registry
(HOST:MIRROR_PORT), open TOPIC of the sim backend through the mirror (as
any client on its host does) and through the upstream root (HOST:
UPSTREAM_PORT), and a 1 s sample stream of the mirror's tree; wait for
STEPS closed rows of the mirror's 1 s buffer, then print one JSON line:
whether each feed's buffers are shared memory, the steps read, and per
feed and period its settled closed rows (closed at least two steps before
the open one), each as the hex of its bytes by its ``index``; then what
opening a topic the upstream refuses (with a good one) raised.
Usage: mirror_bars.py HOST MIRROR_PORT UPSTREAM_PORT TOPIC STEPS"""

import json
import sys

import trio

from tractor_sampler import Step, open_market_feed, open_sample_stream
from tractor_sampler._remote import LocalBuffer
from tractor_services import compat


def settled(feed, topic):
    rows = {}
    for p, buf in feed.buffers[topic].items():
        arr = buf.array
        done = arr[arr['index'] <= int(arr['index'][-1]) - 2]
        rows[repr(p)] = {int(r['index']): r.tobytes().hex() for r in done}
    return rows


async def main(host: str, mport: int, uport: int, topic: str, steps: int) -> None:
    mirror, upstream = (host, mport), (host, uport)
    async with compat.open_root_actor(mirror, 'mirror_client'):
        async with (
            open_market_feed([topic], registry_addr=mirror) as mfeed,
            open_market_feed([topic], registry_addr=upstream) as ufeed,
            open_sample_stream(1.0, registry_addr=mirror) as ss,
        ):
            print(json.dumps({'ready': True}), flush=True)
            shm = mfeed.buffer(topic, 1.0)
            start = int(shm.last_row['index'])
            seen = []

            async def read_steps():
                async for msg in ss:
                    if isinstance(msg, Step):
                        seen.append(msg.index)

            async with trio.open_nursery() as n:
                n.start_soon(read_steps)
                with trio.fail_after(120):
                    while int(shm.last_row['index']) < start + steps or len(seen) < 2:
                        await trio.sleep(0.05)
                # the upstream's rows of the same bars have closed there too
                await trio.sleep(0.5)
                n.cancel_scope.cancel()
            out = {
                'mirror_shm': not isinstance(shm, LocalBuffer),
                'upstream_shm': not isinstance(ufeed.buffer(topic, 1.0), LocalBuffer),
                'steps': len(seen),
                'mirror': settled(mfeed, topic),
                'upstream': settled(ufeed, topic),
                'backend_dist': (await mfeed.info()).dist,
            }
        # a topic the upstream refuses: the client's one error, naming it
        try:
            async with open_market_feed(['BBB', 'bad sym'], registry_addr=mirror):
                out['refusal'] = None
        except ValueError as err:
            out['refusal'] = str(err)
    print(json.dumps(out), flush=True)


if __name__ == '__main__':
    trio.run(
        main,
        sys.argv[1],
        int(sys.argv[2]),
        int(sys.argv[3]),
        sys.argv[4],
        int(sys.argv[5]),
    )
