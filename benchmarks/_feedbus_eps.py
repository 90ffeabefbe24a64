"""Endpoints ``bench_feedbus.py`` runs in its producer and subscriber actors.

A module of its own (not the benchmark's ``__main__``) so that a subscriber
actor can name the producer's endpoints (``raw_source``) by an importable
module path.  The benchmark puts this folder on ``PYTHONPATH`` before it
spawns anything.

Clocks: every timestamp is ``time.perf_counter()`` (``CLOCK_MONOTONIC`` on
Linux, one clock for every process on the machine), so the root subtracts a
producer's start from a subscriber's last arrival.
"""

from __future__ import annotations

import cProfile
import io
import os
import pstats
import random
import time
from typing import Any

import tractor
import trio

from feedbus import FeedsBus, Quote, get_feed_bus, open_feed
from feedbus.wire import pack_many
from tractor_services import compat, resolve_registry_addr

PRODUCER = 'fb_prod'
#: yield to trio every this many publishes when publishing flat out
CHECKPOINT_EVERY = 50

_POOL_SIZE = 512


def _profile_text(prof: cProfile.Profile, n: int = 25) -> str:
    buf = io.StringIO()
    pstats.Stats(prof, stream=buf).sort_stats('tottime').print_stats(n)
    return buf.getvalue()


def _fields(i: int) -> dict[str, Any]:
    """One 20-field quote."""
    p = 100.0 + (i % 97) * 0.01
    return {
        'symbol': 'BENCH',
        'exchange': 'XBNC',
        'bid': p - 0.01,
        'ask': p + 0.01,
        'last': p,
        'bsize': 100 + i % 7,
        'asize': 200 + i % 5,
        'volume': 1_000_000 + i,
        'vwap': p - 0.005,
        'open': 99.5,
        'high': 101.0,
        'low': 99.0,
        'close': 100.0,
        'prev_close': 99.8,
        'change': p - 99.8,
        'pct_change': (p - 99.8) / 99.8,
        'trades': 5000 + i,
        'tick_dir': i % 3 - 1,
        'halted': False,
        'ts': 1_700_000_000.0 + i * 1e-3,
    }


_FIELDS = [_fields(i) for i in range(_POOL_SIZE)]
_TICKS = [
    [{'type': 'trade', 'price': f['last'], 'size': float(1 + i % 9)}]
    for i, f in enumerate(_FIELDS)
]

# --- producer ----------------------------------------------------------------

#: raw-baseline streams per topic, registered by ``raw_source``
_raw: dict[str, list[Any]] = {}


@tractor.context
async def raw_source(ctx: tractor.Context, topic: str) -> None:
    """Baseline: a plain tractor stream the producer's ``raw`` command
    sends to.  Handshake (hello / ack) so that nothing is sent before both
    ends have their stream open; the subscriber says bye when done."""
    await ctx.started(None)
    async with ctx.open_stream() as stream:
        assert await stream.receive() == 'hello'
        _raw.setdefault(topic, []).append(stream)
        await stream.send('ack')
        try:
            assert await stream.receive() == 'bye'
        finally:
            _raw[topic].remove(stream)
            if not _raw[topic]:
                del _raw[topic]


async def _publish(bus: FeedsBus, topic: str, n: int) -> dict[str, Any]:
    """Publish ``n`` quotes on ``topic`` as fast as possible."""
    t0 = time.perf_counter()
    for i in range(n):
        bus.publish(topic, _FIELDS[i % _POOL_SIZE], _TICKS[i % _POOL_SIZE])
        if i % CHECKPOINT_EVERY == CHECKPOINT_EVERY - 1:
            await trio.lowlevel.checkpoint()
    return {'t0': t0, 't_pub': time.perf_counter()}


async def _raw_send(topic: str, n: int) -> dict[str, Any]:
    """Baseline: one task sends each dict to every raw stream in turn."""
    streams = list(_raw.get(topic, ()))
    t0 = time.perf_counter()
    for i in range(n):
        j = i % _POOL_SIZE
        d = {'topic': topic, 'seq': i + 1, 'fields': _FIELDS[j], 'ticks': _TICKS[j]}
        for s in streams:
            await s.send(d)
    return {'t0': t0, 't_pub': time.perf_counter(), 'streams': len(streams)}


def _batch(k: int) -> bytes:
    """A batch of ``k`` 20-field one-tick quotes, as feedbus sends it."""
    return pack_many(
        [
            Quote(topic='t', seq=i + 1, fields=_FIELDS[i], ticks=_TICKS[i])
            for i in range(k)
        ]
    )


async def _raw_bytes(topic: str, k: int, n: int) -> dict[str, Any]:
    """Send a ``k``-quote batch ``n`` times to the raw stream of ``topic``;
    this process's CPU time per send."""
    (stream,) = _raw[topic]
    data = _batch(k)
    c0 = time.process_time()
    for _ in range(n):
        await stream.send(data)
    return {'cpu': time.process_time() - c0}


def _a5_strings(on: bool) -> None:
    """a5's own message methods (``on``), or the adapter's, for the
    connections opened from now on."""
    compat._install_quiet_messages(not on)


def _tick_pool(seed: int, size: int = 4096) -> list[dict[str, Any]]:
    """bid / ask / size ticks with ~5% trades of random sizes."""
    rng = random.Random(seed)
    out = []
    for _ in range(size):
        r = rng.random()
        price = round(100 + rng.uniform(-1, 1), 2)
        if r < 0.05:
            out.append(
                {'type': 'trade', 'price': price, 'size': float(rng.randint(1, 500))}
            )
        else:
            kind = ('bid', 'ask', 'size')[int(r * 1000) % 3]
            out.append(
                {'type': kind, 'price': price, 'size': float(rng.randint(1, 50))}
            )
    return out


async def _paced(
    bus: FeedsBus, topic: str, rate: float, secs: float, idle: bool, seed: int
) -> dict[str, Any]:
    """Publish ``rate`` one-tick quotes per second for ``secs`` s, in bursts
    of about a millisecond's worth, and measure this process's CPU time.
    ``idle``: the same loop into a bus nobody subscribes to."""
    target = FeedsBus() if idle else bus
    target.add_topic(topic)
    pool = _tick_pool(seed)
    npool = len(pool)
    burst = max(1, round(rate / 1000))
    trades = 0
    trade_size = 0.0
    i = 0
    c0 = time.process_time()
    w0 = time.perf_counter()
    t0 = trio.current_time()
    end = t0 + secs
    while True:
        now = trio.current_time()
        if now >= end:
            break
        due = int((now - t0) * rate) + 1  # ticks due by now (k-th at k / rate)
        while i < due:
            tick = pool[i % npool]
            target.publish(topic, _FIELDS[i % _POOL_SIZE], [tick])
            if tick['type'] == 'trade':
                trades += 1
                trade_size += tick['size']
            i += 1
        await trio.sleep_until(t0 + (i + burst - 1) / rate)
    cpu = time.process_time() - c0
    w1 = time.perf_counter()
    if not idle:
        # the subscriber stops at the frame holding this
        target.publish(topic, {'end': True}, [{'type': 'end'}])
    return {
        'ticks': i,
        'trades': trades,
        'trade_size': trade_size,
        'cpu': cpu,
        't0': w0,
        't_end': w1,
    }


@tractor.context
async def producer_ctl(ctx: tractor.Context) -> None:
    """The producer actor's command loop: one command, one reply."""
    compat.quiet_runtime_logs()
    bus = get_feed_bus()
    await ctx.started(os.getpid())
    whole: cProfile.Profile | None = None  # between prof_start and prof_stop
    async with ctx.open_stream() as stream:
        async for cmd in stream:
            op = cmd['op']
            if op == 'prof_start':
                whole = cProfile.Profile()
                whole.enable()
                await stream.send({})
                continue
            if op == 'prof_stop':
                assert whole is not None
                whole.disable()
                await stream.send({'profile': _profile_text(whole)})
                whole = None
                continue
            prof = cProfile.Profile() if cmd.get('profile') else None
            if prof is not None:
                prof.enable()
            if op == 'topic':
                bus.add_topic(cmd['topic'])
                res: dict[str, Any] = {}
            elif op == 'cpu':
                res = {'cpu': time.process_time()}
            elif op == 'publish':
                res = await _publish(bus, cmd['topic'], cmd['n'])
            elif op == 'raw_bytes':
                res = await _raw_bytes(cmd['topic'], cmd['k'], cmd['n'])
            elif op == 'a5_strings':
                _a5_strings(cmd['on'])
                res = {}
            elif op == 'raw':
                res = await _raw_send(cmd['topic'], cmd['n'])
            elif op == 'paced':
                res = await _paced(
                    bus,
                    cmd['topic'],
                    cmd['rate'],
                    cmd['secs'],
                    cmd['idle'],
                    cmd['seed'],
                )
            else:
                raise ValueError(f'unknown op {op!r}')
            if prof is not None:
                prof.disable()
                res['profile'] = _profile_text(prof)
            await stream.send(res)


# --- subscribers ---------------------------------------------------------------


async def _sub_raw(portal: Any, ctl: Any, topic: str, n: int) -> dict[str, Any]:
    count = 0
    async with compat.open_context(portal, raw_source, topic=topic) as (pctx, _):
        async with pctx.open_stream() as ps:
            await ps.send('hello')
            assert await ps.receive() == 'ack'
            await ctl.send('ready')
            c0 = time.process_time()
            async for d in ps:
                count += 1
                if d['seq'] >= n:
                    break
            t_last = time.perf_counter()
            cpu = time.process_time() - c0
            await ps.send('bye')
    return {
        'count': count,
        't_last': t_last,
        'dropped': 0,
        'messages': count,
        'cpu': cpu,
    }


async def _sub_raw_bytes(
    portal: Any, ctl: Any, topic: str, n: int, on: bool
) -> dict[str, Any]:
    """Receive ``n`` messages on a raw stream over a connection of its own
    (so that its receive path runs the message methods chosen by ``on``,
    a5's or the adapter's, on both ends); CPU time from the first to the
    last."""
    _a5_strings(on)
    count = 0
    try:
        async with (
            compat.open_portal(portal.channel.raddr) as own,
            compat.open_context(own, raw_source, topic=topic) as (pctx, _),
            pctx.open_stream() as ps,
        ):
            await ps.send('hello')
            assert await ps.receive() == 'ack'
            await ctl.send('ready')
            c0 = 0.0
            async for _ in ps:
                if count == 0:
                    c0 = time.process_time()
                count += 1
                if count >= n:
                    break
            cpu = time.process_time() - c0
            await ps.send('bye')
    finally:
        _a5_strings(False)
    return {'count': count, 'cpu': cpu}


async def _sub_feed(
    portal: Any, ctl: Any, topic: str, n: int, batch: bool
) -> dict[str, Any]:
    # outbox and local buffers big enough for the whole run: a lossless
    # comparison with the (lossless, flow-controlled) raw stream
    size = max(n, 1024)
    count = 0
    # the stream, as for a subscriber on another host (a local one reads the
    # shared-memory ring by default: bench_ring.py compares the two)
    async with open_feed(
        portal, [topic], batch=batch, buffer=size, outbox_size=size, ring=False
    ) as feed:
        await feed.stats()  # round trip: subscribed, and Ready handled
        await ctl.send('ready')
        c0 = time.process_time()
        async for q in feed:
            count += 1
            if q.seq >= n:
                break
        t_last = time.perf_counter()
        cpu = time.process_time() - c0
        st = await feed.stats()
        local = feed.local_stats.dropped
    return {
        'cpu': cpu,
        'count': count,
        't_last': t_last,
        'dropped': st.dropped + local,
        'messages': st.messages,
    }


async def _sub_throttled(
    portal: Any, ctl: Any, topic: str, rate: float, ring: bool = True
) -> dict[str, Any]:
    """A throttled subscriber: framed by the producer (``ring=False``, the
    stream) or on this side (the shared-memory ring, when it is local).
    ``cpu``: this process's CPU time from subscribed to the last frame."""
    times: list[float] = []
    trades = 0
    trade_size = 0.0
    quotes = 0
    async with open_feed(portal, [topic], tick_throttle=rate, ring=ring) as feed:
        await feed.stats()
        await ctl.send('ready')
        c0 = time.process_time()
        async for fr in feed:
            times.append(time.perf_counter())
            tf = fr.topics.get(topic)
            if tf is None:
                continue
            quotes += tf.n_quotes
            for t in tf.ticks_by_type.get('trade', ()):
                trades += 1
                trade_size += t['size']
            if 'end' in tf.ticks_by_type:
                break
        cpu = time.process_time() - c0
        st = await feed.stats()
        local = feed.local_stats.dropped
        on_ring = feed.ring
    return {
        'times': times,
        'trades': trades,
        'trade_size': trade_size,
        'quotes': quotes,
        'dropped': st.dropped + local,
        'cpu': cpu,
        'ring': on_ring,
    }


@tractor.context
async def sub_ctl(ctx: tractor.Context) -> None:
    """A subscriber actor's command loop: one trial per command; replies
    ``'ready'`` once subscribed, then the trial's figures."""
    compat.quiet_runtime_logs()
    async with compat.wait_for_actor(PRODUCER, resolve_registry_addr()) as portal:
        await ctx.started(os.getpid())
        async with ctx.open_stream() as ctl:
            async for cmd in ctl:
                kind, topic = cmd['kind'], cmd['topic']
                prof = cProfile.Profile() if cmd.get('profile') else None
                if prof is not None:
                    prof.enable()
                if kind == 'raw':
                    res = await _sub_raw(portal, ctl, topic, cmd['n'])
                elif kind == 'raw_bytes':
                    res = await _sub_raw_bytes(
                        portal, ctl, topic, cmd['n'], cmd['a5_strings']
                    )
                elif kind in ('fb', 'fb_batch'):
                    res = await _sub_feed(
                        portal, ctl, topic, cmd['n'], kind == 'fb_batch'
                    )
                elif kind == 'throttled':
                    res = await _sub_throttled(
                        portal, ctl, topic, cmd['rate'], cmd.get('ring', True)
                    )
                else:
                    raise ValueError(f'unknown kind {kind!r}')
                if prof is not None:
                    prof.disable()
                    res['profile'] = _profile_text(prof)
                await ctl.send(res)
