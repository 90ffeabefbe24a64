"""(another host) Subscribe to TOPIC's quotes on the sim feed daemon
registered at HOST:PORT, read N of them, print one JSON line: the
address this client root bound and what arrived.  No shared memory: the
quote stream only.  Usage: quotes.py HOST PORT TOPIC N"""

import json
import sys

import trio

import feedbus
from tractor_sampler import feedd_name
from tractor_services import compat


async def main(host: str, port: int, topic: str, n: int) -> None:
    addr = (host, port)
    async with compat.open_root_actor(
        addr, 'quotes_client', loglevel='critical'
    ) as actor:
        async with compat.find_actor(feedd_name('sim'), addr) as portal:
            assert portal is not None, 'no feed daemon registered'
            feedd_at = list(portal.channel.raddr)
            got = []
            async with feedbus.open_feed(portal, [topic]) as feed:
                async for msg in feed:
                    got.append(type(msg).__name__)
                    if len(got) >= n:
                        break
        print(
            json.dumps(
                {
                    'bound': list(actor.accept_addr),
                    'feedd': feedd_at,
                    'received': got,
                }
            ),
            flush=True,
        )


if __name__ == '__main__':
    trio.run(main, sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4]))
