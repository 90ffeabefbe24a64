"""
feedbus demo: a producer actor streams simulated quotes for two symbols;
one subscriber reads every quote, another reads 4 throttled frames per
second; the first pauses and resumes, and both print their counters.

    uv run python examples/feedbus_demo.py [--registry HOST:PORT]
"""

from __future__ import annotations

import argparse
import random
from functools import partial

import trio

# isort: off
# feedbus before tractor: it silences tractor 0.1.0a5's import-time warning
from feedbus import Frame, get_feed_bus, open_feed, publish_from
from tractor_services import open_service_root
import tractor
# isort: on


async def simulated_quotes(symbols: list[str], hz: float, seed: int = 7):
    """An async iterator of ``{topic: quote}``: bids and asks, now and
    then a trade."""
    rng = random.Random(seed)
    price = {s: 100.0 for s in symbols}
    deadline = trio.current_time()
    while True:
        out = {}
        for s in symbols:
            price[s] += rng.choice((-0.01, 0.01))
            p = round(price[s], 2)
            ticks = [
                {'type': 'bid', 'price': round(p - 0.01, 2), 'size': rng.randint(1, 9)},
                {'type': 'ask', 'price': round(p + 0.01, 2), 'size': rng.randint(1, 9)},
            ]
            if rng.random() < 0.2:
                ticks.append({'type': 'trade', 'price': p, 'size': rng.randint(1, 5)})
            out[s] = {'last': p, 'ticks': ticks}
        yield out
        deadline += 1 / hz
        await trio.sleep_until(deadline)


@tractor.context
async def quote_producer(
    ctx: tractor.Context, symbols: list[str], hz: float = 100.0
) -> None:
    """A producer: declares its topics, publishes into its bus, and lets
    subscribers open feedbus' endpoint on it."""
    bus = get_feed_bus()
    for s in symbols:
        bus.add_topic(s)
    async with trio.open_nursery() as tn:
        await tn.start(publish_from, simulated_quotes(symbols, hz))
        await ctx.started(sorted(bus.topics))
        await trio.sleep_forever()


async def read_all(portal, out: dict) -> None:
    async with open_feed(portal, ['btc', 'eth']) as feed:
        n = 0
        async for _quote in feed:
            n += 1
            if n == 100:
                await feed.pause()
                print('all-quotes reader: paused after 100 quotes', flush=True)
                await feed.resume()
                print('all-quotes reader: resumed', flush=True)
            if n == 300:
                break
        out['all'] = await feed.stats()


async def read_frames(portal, out: dict) -> None:
    async with open_feed(portal, ['btc'], tick_throttle=4) as feed:
        for _ in range(6):
            frame: Frame = await feed.receive()
            tf = frame.topics['btc']
            latest = {
                t: round(ticks[-1]['price'], 2) for t, ticks in tf.ticks_by_type.items()
            }
            trades = len(tf.ticks_by_type.get('trade', []))
            print(
                f'frame {frame.seq}: {tf.n_quotes} quotes (seq {tf.first_seq}-{tf.last_seq}), '
                f'{len(tf.ticks)} ticks, {trades} trades, latest {latest}',
                flush=True,
            )
        out['frames'] = await feed.stats()


async def main(registry: str | None) -> None:
    async with open_service_root(registry) as mngr:
        topics = await mngr.start_service(
            'quotes', partial(quote_producer, symbols=['btc', 'eth'])
        )
        print(f'producer serves {topics}', flush=True)
        portal = mngr.portal('quotes')
        stats: dict = {}
        async with trio.open_nursery() as tn:
            tn.start_soon(read_all, portal, stats)
            tn.start_soon(read_frames, portal, stats)
        for name, s in stats.items():
            print(
                f'{name}: delivered={s.delivered} messages={s.messages} '
                f'conflated={s.conflated} dropped={s.dropped}',
                flush=True,
            )
    print('done', flush=True)


if __name__ == '__main__':
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--registry', help='registry address HOST:PORT')
    args = parser.parse_args()
    trio.run(main, args.registry)
