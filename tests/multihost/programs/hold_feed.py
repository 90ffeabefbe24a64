"""(host a) Open a market feed of the sim backend on TOPIC through the
root at HOST:PORT (spawning the feed daemon there), print one JSON line,
hold it until SIGTERM.  Usage: hold_feed.py HOST PORT TOPIC"""

import json
import signal
import sys

import trio

from tractor_sampler import open_market_feed


async def main(host: str, port: int, topic: str) -> None:
    async with open_market_feed([topic], registry_addr=(host, port)) as feed:
        print(json.dumps({'ready': True, 'topics': list(feed.topics)}), flush=True)
        with trio.open_signal_receiver(signal.SIGTERM) as signals:
            async for _ in signals:
                break


if __name__ == '__main__':
    trio.run(main, sys.argv[1], int(sys.argv[2]), sys.argv[3])
