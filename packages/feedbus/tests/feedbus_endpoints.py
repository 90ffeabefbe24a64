"""Producer and subscriber endpoints the feedbus tests run in actors."""

from __future__ import annotations

import os

import tractor
import trio

from feedbus import get_feed_bus, open_feed
from tractor_services import compat, resolve_registry_addr


async def _produce(
    topics: list[str], hz: float, trade_every: int, pad: int = 0
) -> None:
    """Publish one quote per topic every 1/hz s; every ``trade_every``-th
    carries a trade tick."""
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
    """(in the producer) Each topic's subscribers' counters."""
    import msgspec

    return {
        t: [
            {**msgspec.to_builtins(sub.stats), 'rc_ui': sub.rc_ui, 'rate': sub.rate}
            for sub in subs
        ]
        for t, subs in get_feed_bus().subs_items()
    }


_received = {'msgs': 0}


async def received() -> int:
    """(in a subscriber) How many messages it has read so far."""
    return _received['msgs']


@tractor.context
async def subscriber(
    ctx: tractor.Context,
    producer_name: str,
    topics: list[str],
    tick_throttle: float | None = None,
    stall_timeout: float = 5.0,
    ring: bool = True,
) -> None:
    """Subscribe to the producer and count what arrives (``ring=False``:
    through the stream even on the producer's host)."""
    async with compat.find_actor(producer_name, resolve_registry_addr()) as portal:
        async with open_feed(
            portal,
            topics,
            tick_throttle=tick_throttle,
            stall_timeout=stall_timeout,
            ring=ring,
        ) as feed:
            await ctx.started(os.getpid())
            async for _ in feed:
                _received['msgs'] += 1


async def published(topic: str) -> int:
    """(in the producer) The last sequence number published on ``topic``."""
    return get_feed_bus()._seq.get(topic, 0)


_two: dict = {}


async def two_feeds_report() -> dict:
    """(in the two_feeds subscriber) What its feeds have seen so far."""
    return dict(_two)


@tractor.context
async def two_feeds(ctx: tractor.Context, producer_name: str) -> None:
    """Two feeds on one portal (one connection): 'a' throttled at 10 Hz
    with a 1 s stall timeout, 'b' every quote with a long one.  Records
    what each sees; once 'a' ends, opens a new feed on the same portal."""
    import msgspec

    from feedbus import SubscriptionDropped

    rep = _two
    rep.update(
        a=0,
        b=0,
        b_seq=0,
        a_error=None,
        a_reason=None,
        a_stats=None,
        a_after=None,
        new_feed=0,
    )
    async with compat.find_actor(producer_name, resolve_registry_addr()) as portal:

        async def run_a() -> None:
            try:
                async with open_feed(
                    portal, ['a'], tick_throttle=10, stall_timeout=1.0, ring=False
                ) as fa:
                    try:
                        async for _ in fa:
                            rep['a'] += 1
                    finally:
                        if fa.dropped is not None:
                            rep['a_stats'] = msgspec.to_builtins(await fa.stats())
                rep['a_error'] = 'the feed ended without an error'
            except SubscriptionDropped as err:
                rep['a_error'] = str(err)
                rep['a_reason'] = err.reason
            async with open_feed(portal, ['a']) as again:
                async for _ in again:
                    rep['new_feed'] += 1
                    if rep['new_feed'] == 3:
                        break

        async def run_b() -> None:
            async with open_feed(portal, ['b'], stall_timeout=60.0, ring=False) as fb:
                async for q in fb:
                    rep['b'] += 1
                    rep['b_seq'] = q.seq

        async with trio.open_nursery() as tn:
            tn.start_soon(run_a)
            tn.start_soon(run_b)
            await ctx.started(os.getpid())
            await trio.sleep_forever()


async def end_subs(topic: str, why: str) -> int:
    """(in the producer) End every subscription to ``topic`` (the
    producer's own decision, reason 'ended')."""
    bus = get_feed_bus()
    subs = bus.get_subs(topic)
    for sub in subs:
        bus.drop_sub(sub, why, reason='ended')
    return len(subs)
