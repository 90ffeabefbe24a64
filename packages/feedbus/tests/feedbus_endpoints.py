'''Producer and subscriber endpoints the feedbus tests run in actors.'''
from __future__ import annotations

import os

import tractor
import trio

from feedbus import get_feed_bus, open_feed
from tractor_services import compat


async def _produce(topics: list[str], hz: float, trade_every: int) -> None:
    '''Publish one quote per topic every 1/hz s; every ``trade_every``-th
    carries a trade tick.'''
    bus = get_feed_bus()
    n = 0
    next_t = trio.current_time()
    while True:
        n += 1
        for t in topics:
            ticks = [{'type': 'bid', 'price': 100.0 + n, 'size': 1.0}]
            if trade_every and n % trade_every == 0:
                ticks.append({'type': 'trade', 'price': 100.0 + n, 'size': 2.0})
            bus.publish(t, {'last': 100.0 + n, 'n': n}, ticks)
        next_t += 1 / hz
        await trio.sleep_until(next_t)


@tractor.context
async def producer(ctx: tractor.Context, topics: list[str], hz: float = 200.0, trade_every: int = 5) -> None:
    bus = get_feed_bus()
    for t in topics:
        bus.add_topic(t)
    async with trio.open_nursery() as tn:
        tn.start_soon(_produce, topics, hz, trade_every)
        await ctx.started(os.getpid())
        await trio.sleep_forever()


@tractor.context
async def subscriber(
    ctx: tractor.Context,
    producer_name: str,
    topics: list[str],
    tick_throttle: float | None = None,
) -> None:
    '''Subscribe to the producer, and report (count, last seq) on request.'''
    async with compat.find_actor(producer_name, compat.resolve_registry_addr()) as portal:
        async with open_feed(portal, topics, tick_throttle=tick_throttle) as feed:
            counts = {'msgs': 0}
            await ctx.started(os.getpid())
            async with ctx.open_stream() as stream, trio.open_nursery() as tn:
                async def count():
                    async for _ in feed:
                        counts['msgs'] += 1
                tn.start_soon(count)
                async for _ in stream:
                    await stream.send(counts['msgs'])
                tn.cancel_scope.cancel()
