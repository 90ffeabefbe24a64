"""Endpoints ``bench_feedd.py`` runs in its actors.

- in the **raw source** actor (the baseline): :func:`raw_feed`, one plain
  tractor 0.1.0a5 context stream per subscriber (``ctx.open_stream()``,
  default backpressure), and :func:`raw_run`, which runs the sim backend's
  quote stream (``tractor_sampler.backends.sim.stream_quotes``) and sends
  every quote over each of those streams in turn: no shared memory, no
  feedbus; :func:`sim_alone` runs the same sim stream and does nothing with
  the quotes (the sim's own cost);
- in each **subscriber** actor: :func:`sub_ctl`, a command loop that runs
  one trial per command, either ``tractor_sampler.open_market_feed(['AAA'], ...)``
  (the feed daemon) or a :func:`raw_feed` stream, and reports what arrived
  inside the trial's measurement window.

A module of its own (not the benchmark's ``__main__``) so that the
subscribers can name the raw source's endpoints by an importable module
path; the benchmark puts this folder on ``PYTHONPATH`` before it spawns
anything.  Every timestamp here is ``time.time()`` (one system clock for
every process on the machine; the sim stamps its quotes with it).
"""

from __future__ import annotations

import math
import os
import time
from array import array
from typing import Any

import tractor
import trio

from tractor_sampler import open_market_feed
from tractor_sampler.backends.sim import stream_quotes
from tractor_services import compat

RAW_SRC = 'feedd_raw_src'
TOPIC = 'AAA'
#: small buffers, no history: the topic starts fast; the 1 s buffer holds
#: half an hour of live bars, the 60 s one a few hours
BUFFERS = {1.0: (4096, 0), 60.0: (512, 0)}


# --- the raw source (baseline) ------------------------------------------------

#: the open baseline streams, one per subscriber
_raw: list[Any] = []


@tractor.context
async def raw_feed(ctx: tractor.Context) -> None:
    """(raw source) One plain stream to a subscriber.  Handshake (hello /
    ack) so that nothing is sent before both ends have their stream open;
    the subscriber says bye when it has read the end marker."""
    await ctx.started(os.getpid())
    async with ctx.open_stream() as stream:
        assert await stream.receive() == 'hello'
        _raw.append(stream)
        await stream.send('ack')
        try:
            assert await stream.receive() == 'bye'
        finally:
            if stream in _raw:
                _raw.remove(stream)


async def raw_run(rate: float, t0: float, t_stop: float, t1: float) -> dict[str, Any]:
    """(raw source) Run the sim at ``rate`` quotes/s and send every quote
    to every open :func:`raw_feed` stream in turn (``await stream.send``,
    so a slow subscriber holds the loop back, as a5's flow control does)
    until ``t_stop``; then an end marker.  Counts the quotes generated in
    ``[t0, t1)``."""
    streams = list(_raw)
    source = stream_quotes([TOPIC], tick_rate=rate)
    seq = 0
    gen = 0
    try:
        async for batch in source:
            now = time.time()
            if now >= t_stop:
                break
            for sym, q in batch.items():
                seq += 1
                if t0 <= now < t1:
                    gen += 1
                d = dict(q)
                d['topic'] = sym
                d['seq'] = seq
                for s in streams:
                    await s.send(d)
    finally:
        await source.aclose()
    for s in streams:
        await s.send({'end': True, 'seq': seq})
    return {'generated': gen, 'seq': seq, 'streams': len(streams)}


async def sim_alone(rate: float, t0: float, t1: float) -> dict[str, Any]:
    """(raw source) The sim at ``rate`` quotes/s and nothing else: the
    quotes generated in ``[t0, t1)``."""
    source = stream_quotes([TOPIC], tick_rate=rate)
    gen = 0
    try:
        async for batch in source:
            now = time.time()
            if now >= t1:
                break
            if now >= t0:
                gen += len(batch)
    finally:
        await source.aclose()
    return {'generated': gen}


# --- subscribers -----------------------------------------------------------------


class _Window:
    """What one subscriber saw: inside the window ``[t0, t1)`` (arrival
    time) the count and latencies (arrival - the quote's ``time``); over
    the whole trial (from its first quote to the last) the sequence gaps,
    inside the window and in all."""

    def __init__(self) -> None:
        self.t0 = self.t1 = self.t_end = math.inf  # until the root says
        self.count = 0
        self.lat = array('f')
        self.gaps = 0  # inside the window
        self.gaps_all = 0  # over the trial
        self.quotes_all = 0
        self.prev: int | None = None

    def see(self, now: float, seq: int, t_gen: float) -> bool:
        """Record one arrival; True once past ``t_end``, a little after
        the window (until then the subscriber stays subscribed, so the
        daemon's counters read at the window's end still include it)."""
        prev = self.prev
        gap = seq - prev - 1 if prev is not None and seq > prev + 1 else 0
        self.prev = seq
        self.quotes_all += 1
        self.gaps_all += gap
        if self.t0 <= now < self.t1:
            self.gaps += gap
            self.count += 1
            self.lat.append(now - t_gen)
        return now >= self.t_end

    def result(self) -> dict[str, Any]:
        return {
            'count': self.count,
            'lat': self.lat.tobytes(),
            'gaps': self.gaps,
            'gaps_all': self.gaps_all,
            'quotes_all': self.quotes_all,
        }


async def _sub_feedd(
    ctl: Any, cmd: dict[str, Any], addr: tuple[str, int]
) -> dict[str, Any]:
    w = _Window()
    async with open_market_feed(
        [TOPIC],
        backend='sim',
        registry_addr=addr,
        config=cmd['config'],
        buffers=BUFFERS,
    ) as feed:
        await feed.quotes.stats()  # a round trip: subscribed, and Ready handled
        await ctl.send('ready')
        async with trio.open_nursery() as tn:

            async def window() -> None:
                win = await ctl.receive()
                w.t0, w.t1, w.t_end = win['t0'], win['t1'], win['t_end']

            tn.start_soon(window)
            async for q in feed:
                if w.see(time.time(), q.seq, q.fields['time']):
                    break
        # drops in this subscriber's own buffer while it was reading (quotes
        # keep coming, unread, until it leaves)
        local = feed.quotes.local_stats.dropped
        # this subscriber's counters in the daemon, over the whole trial
        st = await feed.quotes.stats()
    res = w.result()
    res.update(
        {
            'local_dropped': local,
            'd_dropped': st.dropped,
            'd_overruns': st.overruns,
            'd_delivered': st.delivered,
            'd_messages': st.messages,
        }
    )
    return res


async def _sub_raw(portal: Any, ctl: Any) -> dict[str, Any]:
    w = _Window()
    async with compat.open_context(portal, raw_feed) as (pctx, _):
        async with pctx.open_stream() as ps:
            await ps.send('hello')
            assert await ps.receive() == 'ack'
            await ctl.send('ready')
            win = await ctl.receive()
            w.t0, w.t1, w.t_end = win['t0'], win['t1'], win['t_end']
            async for d in ps:
                if 'end' in d:
                    break
                w.see(time.time(), d['seq'], d['time'])
            await ps.send('bye')
    res = w.result()
    res.update({'local_dropped': 0, 'd_dropped': 0, 'd_overruns': 0})
    return res


@tractor.context
async def sub_ctl(ctx: tractor.Context, registry_addr: list) -> None:
    """A subscriber actor's command loop: one trial per command; replies
    ``'ready'`` once subscribed, takes the window ``{t0, t1}``, then
    replies with what arrived inside it."""
    compat.quiet_runtime_logs()
    addr = (registry_addr[0], int(registry_addr[1]))
    async with compat.wait_for_actor(RAW_SRC, addr) as raw_portal:
        await ctx.started(os.getpid())
        async with ctx.open_stream() as ctl:
            async for cmd in ctl:
                if cmd['kind'] == 'feedd':
                    res = await _sub_feedd(ctl, cmd, addr)
                elif cmd['kind'] == 'raw':
                    res = await _sub_raw(raw_portal, ctl)
                else:
                    raise ValueError(f'unknown kind {cmd["kind"]!r}')
                await ctl.send(res)


# --- topics per feed daemon ---------------------------------------------------

#: the buffers of the topics curve: a short history each, so /dev/shm
#: touched per topic shows the rows it uses (not a topic's capacity)
TOPIC_BUFFERS = {1.0: (4096, 0), 60.0: (512, 0)}


def proc_figures(pid: int, shm_prefix: str | None = None) -> dict[str, Any]:
    """What one process holds: file descriptors (all, and those on
    /dev/shm), anonymous resident memory (``RssAnon``, private) in bytes."""
    fds = shm = 0
    for fd in os.listdir(f'/proc/{pid}/fd'):
        fds += 1
        try:
            target = os.readlink(f'/proc/{pid}/fd/{fd}')
        except OSError:
            continue
        if target.startswith('/dev/shm/') and (
            shm_prefix is None or target.startswith(f'/dev/shm/{shm_prefix}')
        ):
            shm += 1
    anon = 0
    with open(f'/proc/{pid}/status') as f:
        for line in f:
            if line.startswith('RssAnon:'):
                anon = int(line.split()[1]) * 1024
    return {'fds': fds, 'shm_fds': shm, 'rss_anon': anon}


def shm_touched(names: set[str]) -> int:
    """Bytes of /dev/shm the segments ``names`` (and their control
    segments) have allocated: tmpfs allocates touched pages only."""
    total = 0
    for name in names:
        for n in (name, name + '_ctl'):
            try:
                total += os.stat(f'/dev/shm/{n}').st_blocks * 512
            except FileNotFoundError:
                pass
    return total
