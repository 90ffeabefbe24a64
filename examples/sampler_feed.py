"""
tractor-sampler from code: attach to the service root at --registry (or
become it), open two topics of the simulated backend, read quotes and
throttled frames, watch samplerd step the 1 s bars, print them, and ask
the tree what runs (``introspect``: typed records, what `samplerd ls` shows).

    uv run python examples/sampler_feed.py [--registry HOST:PORT]

With a `samplerd run` already serving there, this program attaches to it and
its feed daemon (or has the root spawn one); otherwise it starts its own root
and stops everything on exit.
"""

from __future__ import annotations

import argparse
import time

import trio

from tractor_sampler import Step, introspect, open_market_feed, open_sample_stream
from tractor_services import maybe_open_service_root


def bar_line(row) -> str:
    t = time.strftime('%H:%M:%S', time.localtime(float(row['time'])))
    o, h, lo, c, v = (float(row[f]) for f in ('open', 'high', 'low', 'close', 'volume'))
    return f'{t}  o={o:.2f} h={h:.2f} l={lo:.2f} c={c:.2f} v={v:g}'


async def main(registry: str | None) -> None:
    async with maybe_open_service_root(registry):
        # no config: a topic that already runs (another client's, a
        # `samplerd watch`) is shared as it runs; asking for a config of
        # our own would be refused for it
        async with open_market_feed(['AAA', 'BBB']) as feed:
            for topic in feed.topics:
                shm = feed.buffer(topic, 60.0)
                print(
                    f'{topic}: {feed.first_status[topic].state}, {len(shm)} one-minute bars '
                    f'(backfilled), read-only={shm.readonly}'
                )

            # every quote, numbered per topic
            seen = {t: 0 for t in feed.topics}
            last = {}
            async for quote in feed:
                seen[quote.topic] += 1
                last[quote.topic] = quote
                if min(seen.values()) >= 25:
                    break
            aaa_q = last['AAA'].fields
            print(f'quotes: {seen}, last AAA bid/ask {aaa_q["bid"]}/{aaa_q["ask"]}')

            # samplerd's steps: each opens a new 1 s bar in every buffer
            async with open_sample_stream(1.0) as steps:
                n = 0
                async for msg in steps:
                    if isinstance(msg, Step) and msg.period_s == 1.0:
                        n += 1
                        if n == 2:
                            break
            print('last 1 s bars of AAA:')
            for row in feed.buffer('AAA', 1.0).array[-3:]:
                print('  ' + bar_line(row))

            # what runs, as typed records (the same as `samplerd ls --json`)
            tree = await introspect(registry)
            [feedd] = tree.feeds
            aaa = feedd.topics['AAA']
            print(
                f'feed daemon {feedd.backend} (pid {feedd.pid}): AAA {aaa.state}, '
                f'{aaa.quotes} quotes, {aaa.trades} trades, {len(aaa.subscribers)} subscriber(s)'
            )

        services = [s.name for s in tree.services]
        print(f'services: {", ".join(sorted(services))}')
    print('done')


if __name__ == '__main__':
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[1])
    parser.add_argument('--registry', default=None, help='HOST:PORT of the registry')
    args = parser.parse_args()
    trio.run(main, args.registry)
