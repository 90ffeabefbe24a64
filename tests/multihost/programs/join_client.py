"""(host a) Asks the tree at HOST:PORT for services on the joined host
LABEL: an `idle` service (mh_endpoints) by maybe_spawn_daemon(host=) and
the sim feed of SYMBOL by open_market_feed(feed_host=); prints one JSON
line: the names the portals reached, how the bars came (by stream or
shared memory), the bars' row count, and LABEL's services (name -> pid,
as that host's manager reports them).
Usage: join_client.py HOST PORT LABEL SYMBOL"""

import json
import sys

import trio

from tractor_sampler import open_market_feed
from tractor_services import compat, maybe_spawn_daemon, open_root_mngr


async def main(host: str, port: int, label: str, symbol: str) -> None:
    addr = (host, port)
    out = {}
    async with compat.open_root_actor(addr, 'join_client', loglevel='critical'):
        async with maybe_spawn_daemon(
            'idle', 'mh_endpoints:idle', registry_addr=addr, host=label
        ) as portal:
            out['idle'] = portal.channel.uid[0]
        async with open_market_feed(
            [symbol], registry_addr=addr, feed_host=label
        ) as feed:
            out['feed'] = feed.portal.channel.uid[0]
            buf = feed.buffer(symbol, 1.0)
            out['bars'] = type(buf).__name__
            out['rows'] = len(buf.array)
        async with open_root_mngr(addr, host=label) as mngr:
            out['services'] = {s.name: s.pid for s in await mngr.list_services()}
    print(json.dumps(out), flush=True)


if __name__ == '__main__':
    trio.run(main, sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4])
