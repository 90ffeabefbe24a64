"""(another host) Open a market feed of the sim backend on TOPIC through
the root at HOST:PORT, print a ready line (whether the bars came by
stream), hold it until it ends; then print one JSON line: the error that
ended it, its message, and what a read of the 1 s buffer raises then.
Usage: bars_until_gone.py HOST PORT TOPIC"""

import json
import sys

import trio

from tractor_sampler import open_market_feed
from tractor_sampler._remote import LocalBuffer
from tractor_services import PeerDisconnected


async def main(host: str, port: int, topic: str) -> None:
    buf = None
    try:
        async with open_market_feed([topic], registry_addr=(host, port)) as feed:
            buf = feed.buffer(topic, 1.0)
            print(
                json.dumps({'ready': True, 'remote': isinstance(buf, LocalBuffer)}),
                flush=True,
            )
            await trio.sleep_forever()
    except PeerDisconnected as err:
        lost = err
    try:
        _ = buf.array
        read = None
    except Exception as err:
        read = type(err).__name__
    print(
        json.dumps({'lost': type(lost).__name__, 'message': str(lost), 'read': read}),
        flush=True,
    )


if __name__ == '__main__':
    trio.run(main, sys.argv[1], int(sys.argv[2]), sys.argv[3])
