"""Reading stored bars back: the library's :func:`read_bars` (a numpy
structured array of stored + live bars, or a pandas/polars frame) and what
``samplerd export`` writes (Parquet or CSV).

Reading needs no running daemon: the store is files under the data
directory (see ``docs/storage.md``).  The live part comes from a
:class:`~tractor_sampler.MarketFeed`'s buffer when one is given: its rows
after the last stored bar (the open bar included), so the result is one bar
per period with no overlap.
"""

from __future__ import annotations

import csv
import datetime as _dt
import os
import sys
from typing import Any, TextIO

import numpy as np

from ._plugins import DEFAULT_BACKEND
from ._schedule import check_period
from ._store import EXTRA_HINT, open_store
from .shm import DEFAULT_DTYPE

EXPORT_FORMATS = ('parquet', 'csv')
COLUMNS = ('time', 'open', 'high', 'low', 'close', 'volume')


def parse_time(text: str | float | None, what: str = 'time') -> float | None:
    """Seconds since the epoch from a number or an ISO 8601 date/time (UTC
    unless it says otherwise); ``ValueError`` naming ``what`` otherwise."""
    if text is None or text == '':
        return None
    if isinstance(text, (int, float)):
        return float(text)
    try:
        return float(text)
    except ValueError:
        pass
    try:
        t = _dt.datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(
            f'{what} {text!r} is neither seconds since the epoch nor an ISO date/time'
        ) from None
    if t.tzinfo is None:
        t = t.replace(tzinfo=_dt.timezone.utc)
    return t.timestamp()


def read_bars(
    topic: str,
    period_s: float = 1.0,
    *,
    backend: str = DEFAULT_BACKEND,
    start: float | str | None = None,
    end: float | str | None = None,
    data_dir: str | os.PathLike[str] | None = None,
    store: str | None = None,
    feed: Any = None,
    frame: str | None = None,
) -> Any:
    """The bars of ``topic`` (one ``period_s`` dataset of ``backend``) in
    the bar store, with ``start <= time < end`` (epoch seconds or ISO
    strings), oldest first, as a numpy structured array in
    :data:`~tractor_sampler.shm.DEFAULT_DTYPE` (``index`` numbered from 0).

    ``feed``: a :class:`~tractor_sampler.MarketFeed` of the topic, whose
    buffer's rows after the last stored bar are appended (the live bars,
    the open one last).  ``frame='pandas'`` or ``'polars'`` returns a data
    frame instead (``ImportError`` naming the package when it is not
    installed).  Raises ``ValueError`` in one line for bad arguments or a
    store that is off (pyarrow missing)."""
    p = check_period(period_s)
    lo, hi = parse_time(start, 'start'), parse_time(end, 'end')
    if lo is not None and hi is not None and hi <= lo:
        raise ValueError(f'end {end!r} is not after start {start!r}')
    if frame not in (None, 'numpy', 'pandas', 'polars'):
        raise ValueError(f"frame={frame!r} must be None, 'pandas' or 'polars'")
    s = open_store(data_dir, store)
    if s is None:
        raise ValueError(
            f'the bar store is off: reading it needs pyarrow ({EXTRA_HINT})'
        )
    bars = s.read(backend, topic, p, start=lo, end=hi)
    if feed is not None:
        live = np.asarray(feed.buffer(topic, p).array)
        after = float(bars['time'][-1]) if len(bars) else -np.inf
        live = live[live['time'] > after + 1e-6]
        if lo is not None:
            live = live[live['time'] >= lo - 1e-6]
        if hi is not None:
            live = live[live['time'] < hi]
        conv = np.zeros(len(live), dtype=DEFAULT_DTYPE)
        for f in DEFAULT_DTYPE.names or ():
            if f in (live.dtype.names or ()):
                conv[f] = live[f]
        bars = np.concatenate([bars, conv])
        bars['index'] = np.arange(len(bars))
    if frame in (None, 'numpy'):
        return bars
    cols = {c: bars[c] for c in COLUMNS}
    if frame == 'pandas':
        import pandas as pd

        return pd.DataFrame(cols)
    import polars as pl

    return pl.DataFrame(cols)


def export_bars(
    bars: np.ndarray, fmt: str, out: str | os.PathLike[str] | TextIO | None
) -> int:
    """Write ``bars`` (the :data:`COLUMNS`) as ``fmt`` to the file ``out``
    (CSV also to a text stream, stdout by default); returns the rows
    written.  Parquet files are written to a temporary name and renamed."""
    if fmt not in EXPORT_FORMATS:
        raise ValueError(f'format {fmt!r} must be one of {", ".join(EXPORT_FORMATS)}')
    if fmt == 'parquet':
        if out is None or not isinstance(out, (str, os.PathLike)):
            raise ValueError('--format parquet needs a file: give -o FILE')
        import pyarrow as pa
        import pyarrow.parquet as pq

        tmp = f'{os.fspath(out)}.tmp'
        try:
            pq.write_table(pa.table({c: bars[c] for c in COLUMNS}), tmp)
            os.replace(tmp, out)
        except OSError as err:
            raise ValueError(f'{out}: cannot write: {err.strerror or err}') from None
        return len(bars)
    if out is None or not isinstance(out, (str, os.PathLike)):
        return _write_csv(bars, out or sys.stdout)
    try:
        with open(out, 'w', newline='') as f:
            return _write_csv(bars, f)
    except OSError as err:
        raise ValueError(f'{out}: cannot write: {err.strerror or err}') from None


def _write_csv(bars: np.ndarray, f: TextIO) -> int:
    w = csv.writer(f)
    w.writerow(COLUMNS)
    for row in bars:
        w.writerow([repr(float(row[c])) for c in COLUMNS])
    return len(bars)


__all__ = ['EXPORT_FORMATS', 'export_bars', 'parse_time', 'read_bars']
