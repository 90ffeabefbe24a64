"""Endpoints ``bench_sampler.py`` runs in its actors.

- in **samplerd** (started with ``enable_modules=['_sampler_eps']``):
  :func:`lateness_reset` / :func:`lateness_read` read the schedule's own
  per-step lateness record (``Schedule(keep_lateness=N)``);
- in the **raw source** actor: :func:`raw_feed` (a plain tractor stream per
  subscriber) and :func:`raw_run`, the baseline: a bare trio timer waking on
  wall-clock boundaries half a period away from samplerd's steps and
  sending time-stamped dicts over those streams;
- in each **subscriber** actor: :func:`sub_ep`, which holds a sample stream
  (``open_sample_stream(period)``) and a raw feed, and reports the arrival
  time of every message minus the wall-clock time it carries.

A module of its own (not the benchmark's ``__main__``) so that samplerd and
the subscribers can import it by name; the benchmark puts this folder on
``PYTHONPATH`` before it spawns anything.  Every timestamp here is
``time.time()`` (one system clock for every process on the machine).
"""

from __future__ import annotations

import os
import time
from typing import Any

import tractor
import trio

from tractor_sampler import Step, get_sampler, open_sample_stream
from tractor_services import compat, parse_addr

RAW_SRC = 'bench_raw_src'
_EPS = 1e-6

# --- in samplerd --------------------------------------------------------------


async def lateness_reset() -> int:
    """(samplerd) Forget the recorded lateness; returns the step count."""
    stats = get_sampler().schedule.stats
    stats.lateness_s.clear()
    return stats.steps


async def lateness_read() -> dict[str, Any]:
    """(samplerd) The lateness recorded since the reset, and the counters."""
    sampler = get_sampler()
    stats = sampler.schedule.stats
    return {
        'lateness': list(stats.lateness_s),
        'steps': stats.steps,
        'late': stats.late,
        'caught_up': stats.caught_up,
        'skipped': stats.skipped,
        'pid': os.getpid(),
    }


# --- in the raw source actor -------------------------------------------------

_feeds: dict[int, Any] = {}


@tractor.context
async def raw_feed(ctx: tractor.Context, idx: int) -> None:
    """(raw source) One plain tractor stream to subscriber ``idx``."""
    await ctx.started(os.getpid())
    async with ctx.open_stream() as stream:
        _feeds[idx] = stream
        try:
            async for _ in stream:  # until the subscriber closes it
                pass
        finally:
            _feeds.pop(idx, None)


async def raw_run(t0: float, n: int, period: float, nsubs: int) -> dict[str, Any]:
    """(raw source) The baseline: for each of the ``n`` periods from ``t0``,
    wake at a quarter period past the boundary and send ``time.time()`` to
    subscriber 0 (raw one-way latency), then at half a period past it and
    send that half-period boundary to every subscriber in turn (a bare trio
    timer plus a fan-out: what samplerd does, minus samplerd).  Returns the
    timer's lateness at every wake-up, computed like samplerd's schedule:
    wall time mapped once onto trio's clock."""
    with trio.fail_after(30):
        while len(_feeds) < nsubs:
            await trio.sleep(0.01)
    offset = time.time() - trio.current_time()
    late_q: list[float] = []
    late_h: list[float] = []
    for k in range(n):
        base = t0 + k * period
        due = base + period / 4 - offset
        await trio.sleep_until(due)
        late_q.append(trio.current_time() - due)
        await _feeds[0].send({'k': 'one', 't': time.time()})
        b = base + period / 2
        due = b - offset
        await trio.sleep_until(due)
        late_h.append(trio.current_time() - due)
        for i in range(nsubs):
            await _feeds[i].send({'k': 'fan', 'b': b})
    return {'late_quarter': late_q, 'late_half': late_h}


# --- in each subscriber actor --------------------------------------------------


@tractor.context
async def sub_ep(
    ctx: tractor.Context, idx: int, registry_addr: list, period: float
) -> None:
    """(subscriber) Subscribe to samplerd's steps and to the raw feed, then
    on each command ``{'t0', 'n'}`` record arrival - carried time for the
    steps of ``[t0, t0 + n * period)`` and the raw messages of those
    periods, and reply with the lists."""
    compat.quiet_runtime_logs()
    addr = parse_addr(registry_addr)
    async with (
        open_sample_stream(period, registry_addr=addr) as ss,
        compat.wait_for_actor(RAW_SRC, addr) as rportal,
        compat.open_context(rportal, raw_feed, idx=idx) as (rctx, _),
        rctx.open_stream() as rstream,
    ):
        await ctx.started(os.getpid())
        async with ctx.open_stream() as ctl:
            async for cmd in ctl:
                t0, n = cmd['t0'], cmd['n']
                last = t0 + (n - 1) * period
                res: dict[str, Any] = {'step': [], 'one': [], 'fan': [], 'index': []}

                async def steps(
                    t0: float = t0, last: float = last, res: dict[str, Any] = res
                ) -> None:
                    async for msg in ss:
                        now = time.time()
                        if not isinstance(msg, Step) or msg.time < t0 - _EPS:
                            continue
                        res['step'].append(now - msg.time)
                        res['index'].append(msg.index)
                        if msg.time >= last - _EPS:
                            return

                async def raws(last: float = last, res: dict[str, Any] = res) -> None:
                    async for m in rstream:
                        now = time.time()
                        if m['k'] == 'one':
                            res['one'].append(now - m['t'])
                        else:
                            res['fan'].append(now - m['b'])
                            if m['b'] >= last + period / 2 - _EPS:
                                return

                # give up a few periods after the window's end
                deadline = trio.current_time() + (last - time.time()) + 3 * period + 2
                with trio.move_on_at(deadline):
                    async with trio.open_nursery() as tn:
                        tn.start_soon(steps)
                        tn.start_soon(raws)
                await ctl.send(res)
        await rctx.cancel()
