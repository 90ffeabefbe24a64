"""Open a market feed of the sim backend on TOPIC through the root at
HOST:PORT, print a ready line (whether its buffers are shared memory),
then one JSON line per status report of the topic, and one per Backfill
notice of a 1 s sample stream of the same tree, until SIGTERM (or until
the feed ends: one line saying how).  Usage: mirror_watch.py HOST
PORT TOPIC"""

import json
import signal
import sys

import trio

from tractor_sampler import Backfill, open_market_feed, open_sample_stream
from tractor_sampler._remote import LocalBuffer


async def watch(host: str, port: int, topic: str) -> None:
    try:
        async with open_market_feed([topic], registry_addr=(host, port)) as feed:
            shm = feed.buffer(topic, 1.0)
            print(
                json.dumps(
                    {
                        'ready': True,
                        'shm': not isinstance(shm, LocalBuffer),
                        'state': feed.first_status[topic].state,
                    }
                ),
                flush=True,
            )
            async with (
                open_sample_stream(1.0, registry_addr=(host, port)) as steps,
                trio.open_nursery() as n,
            ):

                async def notices() -> None:
                    async for msg in steps:
                        if isinstance(msg, Backfill) and msg.topic == topic:
                            print(
                                json.dumps(
                                    {'backfill': msg.reason, 'timeframe': msg.timeframe}
                                ),
                                flush=True,
                            )

                n.start_soon(notices)
                async for st in feed.status:
                    last = int(shm.last_row['index']) if len(shm) else None
                    print(
                        json.dumps(
                            {'state': st.state, 'error': st.error, 'index': last}
                        ),
                        flush=True,
                    )
    except Exception as err:
        print(json.dumps({'ended': type(err).__name__, 'why': str(err)}), flush=True)


async def main(host: str, port: int, topic: str) -> None:
    async with trio.open_nursery() as tn:
        tn.start_soon(watch, host, port, topic)
        with trio.open_signal_receiver(signal.SIGTERM) as signals:
            async for _ in signals:
                break
        tn.cancel_scope.cancel()


if __name__ == '__main__':
    trio.run(main, sys.argv[1], int(sys.argv[2]), sys.argv[3])
