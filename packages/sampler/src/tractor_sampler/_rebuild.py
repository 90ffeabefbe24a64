"""
Bars built offline from a tick log (``samplerd bars``,
:func:`build_bars`), equal bar for bar to what the live path built from
the same ticks.

They agree by construction: the same code does the same work.  A
private (process-local, unlinked at the end) buffer of the period is
seeded as the feed daemon seeds a topic without history (the bar of the
first record, NaN until its first trade), an :class:`OHLCWriter` (the
feed daemon's writer, with the volume mode the log's header recorded)
folds every record's ticks into it, and before a record of a later bar
the rows of the boundaries in between are appended by samplerd's own
step code (:class:`~tractor_sampler.shm.StepPlan`: flat at the last
close, volume 0).  A trade tick without its own ``'time'`` takes the
record's time (when the recorder received the quote: within
milliseconds of the arrival time the live writer used).

Differences from a live buffer: only what the log holds is in the bars
(bars before the recording started, and the first recorded bar's trades
that came before the recorder subscribed, are not), and a period with no
record before its first trade stays NaN (live, it is seeded from the
backend's history).

"""

from __future__ import annotations

import math
import os
from typing import Any

import numpy as np

from ._ohlc import OHLCWriter
from ._schedule import Grid, check_period
from ._ticklog import TickLogError, log_header, read_ticks, topic_dir
from .shm import DEFAULT_DTYPE, StepPlan, open_shm_array

#: at most this many bars per build (a 1 s period over ~58 days)
MAX_BARS = 5_000_000


def build_bars(
    topic: str,
    period_s: float = 1.0,
    start: float | None = None,
    end: float | None = None,
    *,
    backend: str = 'sim',
    data_dir: str | os.PathLike[str] | None = None,
    directory: str | os.PathLike[str] | None = None,
    origin: float = 0.0,
    stamp: str = 'open',
) -> np.ndarray:
    """The ``period_s`` bars of ``topic``'s tick log (of ``backend`` in
    the data directory, or the log ``directory``) from its records with
    ``start <= time < end``: a :data:`DEFAULT_DTYPE` array, one row per
    bar from the bar of the first record to the bar of the last (the last
    one holds the trades up to ``end`` only), ``index`` from 0.  Empty
    when no record falls in the range.  A corrupt segment raises
    :class:`~tractor_sampler._ticklog.TickLogError` naming its file."""
    p = check_period(period_s)
    grid = Grid(p, origin, stamp)
    d = directory if directory is not None else topic_dir(topic, backend, data_dir)
    header = log_header(d) if os.path.isdir(d) else None
    volume = (header or {}).get('volume', 'sum')
    if volume not in ('sum', 'cumulative'):
        raise TickLogError(f'{d}: bad volume mode {volume!r} in the segment header')
    lo = hi = None
    for r in read_ticks(topic, start, end, directory=d):  # pass 1: the time span
        t = max([r.time] + [_t(tk, r.time) for tk in r.ticks if 'time' in tk])
        lo = r.time if lo is None else min(lo, r.time)
        hi = t if hi is None else max(hi, t)
    if lo is None or hi is None:
        return np.zeros(0, dtype=DEFAULT_DTYPE)
    k0, k1 = grid.bar_of(lo), grid.bar_of(hi)
    n = k1 - k0 + 1
    if n > MAX_BARS:
        raise ValueError(
            f'{d}: {n} bars of {p:g} s from {lo} to {hi}: more than {MAX_BARS}; '
            'give a shorter range (start, end) or a longer period'
        )
    shm = open_shm_array(n + 1, origin=origin, stamp=stamp, start=0)
    try:
        row = np.zeros(1, dtype=shm.dtype)
        row['time'] = grid.row_time(k0)
        for f in ('open', 'high', 'low', 'close'):
            row[f] = math.nan
        shm.push(row)
        writer = OHLCWriter({p: shm}, volume=volume)
        plan = StepPlan([shm])
        last_k = k0
        for r in read_ticks(topic, start, end, directory=d):  # pass 2: the bars
            k = grid.bar_of(r.time)
            while last_k < k:
                plan.step(p)
                writer.on_step(p)
                last_k += 1
            if r.ticks:
                writer.write(r.ticks, r.time)
        while last_k < k1:  # bars of trades stamped after their record's
            plan.step(p)
            writer.on_step(p)
            last_k += 1
        writer.on_step(p)
        out = shm.array.copy()
    finally:
        shm.destroy()
    out['index'] = np.arange(len(out))
    return out


def _t(tick: dict[str, Any], default: float) -> float:
    try:
        t = float(tick['time'])
    except (TypeError, ValueError):
        return default
    return t if math.isfinite(t) else default


def store_built_bars(
    topic: str,
    period_s: float,
    bars: np.ndarray,
    *,
    backend: str = 'sim',
    data_dir: str | os.PathLike[str] | None = None,
    store: Any = None,
) -> int:
    """Append bars from :func:`build_bars` to the bar store (``store``, else
    the data directory's, see :func:`~tractor_sampler._store.open_store`):
    the closed ones (the last bar, which may still be filling, is left out),
    NaN ones (before the log's first trade) left out, and only those later
    than the last bar already stored, so a stored bar is never overwritten.
    Returns how many were stored; ``ValueError`` when the store is off."""
    from ._store import open_store

    p = check_period(period_s)
    if store is None:
        store = open_store(data_dir)
        if store is None:
            raise ValueError(
                'the bar store is off ($TRACTOR_SAMPLER_STORE=none, or no pyarrow): '
                'nothing to store the bars in'
            )
    closed = bars[:-1]
    closed = closed[np.isfinite(closed['close'])]
    last = store.read(backend, topic, p, last=1)
    if len(last):
        closed = closed[closed['time'] > float(last['time'][-1])]
    if not len(closed):
        return 0
    return int(store.write(backend, topic, p, closed))
