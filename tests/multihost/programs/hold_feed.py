"""(host a) Open a market feed of the sim backend on TOPIC through the
root at HOST:PORT (spawning the feed daemon there), print one JSON line,
hold it until SIGTERM.  When the feed daemon goes away, open it again
(the root restarts the daemon; opening starts the topic there again).
Usage: hold_feed.py HOST PORT TOPIC"""

import json
import signal
import sys

import trio

from tractor_sampler import open_market_feed
from tractor_services import PeerDisconnected, ServiceError


async def hold(host: str, port: int, topic: str) -> None:
    while True:
        try:
            async with open_market_feed([topic], registry_addr=(host, port)) as feed:
                print(
                    json.dumps({'ready': True, 'topics': list(feed.topics)}), flush=True
                )
                await trio.sleep_forever()
        except (PeerDisconnected, ServiceError, OSError) as err:
            print(json.dumps({'lost': type(err).__name__}), flush=True)
            await trio.sleep(0.5)


async def main(host: str, port: int, topic: str) -> None:
    async with trio.open_nursery() as tn:
        tn.start_soon(hold, host, port, topic)
        with trio.open_signal_receiver(signal.SIGTERM) as signals:
            async for _ in signals:
                break
        tn.cancel_scope.cancel()


if __name__ == '__main__':
    trio.run(main, sys.argv[1], int(sys.argv[2]), sys.argv[3])
