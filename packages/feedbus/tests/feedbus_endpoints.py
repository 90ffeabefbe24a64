'''Producer and subscriber endpoints the feedbus tests run in actors.'''
from __future__ import annotations

import os

import tractor
import trio

from feedbus import get_feed_bus, open_feed
from tractor_services import compat


async def _produce(topics: list[str], hz: float, trade_every: int, pad: int = 0) -> None:
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
            fields = {'last': 100.0 + n, 'n': n}
            if pad:
                fields['pad'] = 'x' * pad
            bus.publish(t, fields, ticks)
        next_t += 1 / hz
        await trio.sleep_until(next_t)


@tractor.context
async def producer(
    ctx: tractor.Context,
    topics: list[str],
    hz: float = 200.0,
    trade_every: int = 5,
    pad: int = 0,
) -> None:
    bus = get_feed_bus()
    for t in topics:
        bus.add_topic(t)
    async with trio.open_nursery() as tn:
        tn.start_soon(_produce, topics, hz, trade_every, pad)
        await ctx.started(os.getpid())
        await trio.sleep_forever()


async def bus_report() -> dict[str, list[dict]]:
    '''(in the producer) Each topic's subscribers' counters.'''
    import msgspec

    return {
        t: [{**msgspec.to_builtins(sub.stats), 'rc_ui': sub.rc_ui, 'rate': sub.rate} for sub in subs]
        for t, subs in get_feed_bus().subs_items()
    }


_received = {'msgs': 0}


async def received() -> int:
    '''(in a subscriber) How many messages it has read so far.'''
    return _received['msgs']


@tractor.context
async def subscriber(
    ctx: tractor.Context,
    producer_name: str,
    topics: list[str],
    tick_throttle: float | None = None,
    stall_timeout: float = 5.0,
) -> None:
    '''Subscribe to the producer and count what arrives.'''
    async with compat.find_actor(producer_name, compat.resolve_registry_addr()) as portal:
        async with open_feed(portal, topics, tick_throttle=tick_throttle, stall_timeout=stall_timeout) as feed:
            await ctx.started(os.getpid())
            async for _ in feed:
                _received['msgs'] += 1
