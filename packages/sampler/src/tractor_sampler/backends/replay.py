"""
The replay backend, ``replay``: streams recorded ticks as a live feed, so
samplerd builds live bars from them.

``stream_quotes([topic], *, path=None, backend='sim', data_dir=None,
speed=1.0, start=None, end=None, stop=False, clock=None)``

- the source: ``topic``'s tick log recorded from ``backend`` in the data
  directory (see :mod:`tractor_sampler._ticklog`) when ``path`` is not
  given; else ``path``: a tick log (a topic's log directory or one
  ``.tlog`` segment), a ``.csv`` file, or a ``.parquet`` file (read with
  pyarrow, which is then needed: ``pip install 'tractor-sampler[store]'``);
- ``start`` / ``end`` (epoch seconds): only the records with ``start <=
  time < end``;
- ``speed``: ``1.0`` the recorded pace, ``N`` N times faster, ``'max'``
  as fast as the feed daemon takes them (a checkpoint every
  :data:`MAX_BURST` quotes);
- times re-stamped to the present: a quote's ``'time'`` and every tick's
  ``'time'`` become the wall time it is due at (the replay's start plus
  the recorded offset divided by ``speed``; with ``'max'``, the time it
  goes out), so its trades fall into the open bars;
- after the last record the stream goes quiet and the topic stays ``up``
  (its bars stay, samplerd steps them on); with ``stop=True`` the stream
  ends there (the topic is reported ``ended`` and its buffers go).

CSV and Parquet columns (one row, one tick, one quote):

- ``time`` (required): epoch seconds, or an ISO 8601 date and time
  (without a zone: UTC);
- ``price`` (required): a number;
- ``size``: a number (default 0);
- ``type``: the tick type, ``trade`` (default), ``bid``, ``ask``,
  ``bsize``, ``asize`` or any other (only clearing ticks make bars);
- ``symbol``: when present, only the rows of the replayed topic are
  streamed (a file with none of them is refused).

Rows must be in time order.  Everything is checked when the stream is
asked for (the feed daemon's client gets one line naming the file and the
problem, nothing starts): a missing or misnamed column, a bad value (with
its line), rows out of order, a tick log of another topic, a corrupt
segment.

``await symbol_info(topic, *, path=None, backend='sim', data_dir=None)``
returns ``{'symbol', 'tick_size', 'lot_size', 'asset_type': 'replay'}`` and
the recording's volume mode (``'volume'``), so the bars are built as they
were live.

"""

from __future__ import annotations

import csv
import math
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import trio

from ..hookspecs import Register, hookimpl

NAME = 'replay'
#: with speed='max', a checkpoint every this many quotes
MAX_BURST = 64
#: the columns of a CSV or Parquet file
REQUIRED = ('time', 'price')
OPTIONAL = ('size', 'type', 'symbol')
#: names people use for the required columns (named in the refusal)
_ALIASES = {
    'time': ('timestamp', 'ts', 'datetime', 'date', 't', 'Time', 'Timestamp'),
    'price': ('px', 'last', 'close', 'Price', 'p'),
}


@hookimpl
def tractor_sampler_register_backends(register: Register) -> None:
    from .. import __version__

    register(
        NAME,
        stream_quotes=stream_quotes,
        symbol_info=symbol_info,
        version=__version__,
    )


Rec = tuple[float, dict[str, Any], list[dict[str, Any]]]


def _speed(speed: Any) -> float | None:
    """``None`` for as fast as possible, else a factor > 0."""
    if speed == 'max':
        return None
    if isinstance(speed, bool) or not isinstance(speed, (int, float)):
        raise ValueError(f"speed={speed!r} must be a number > 0 or 'max'")
    if not math.isfinite(speed) or speed <= 0:
        raise ValueError(f"speed={speed!r} must be a number > 0 or 'max'")
    return float(speed)


def _bound(name: str, v: Any) -> float | None:
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        raise ValueError(f'{name}={v!r} must be epoch seconds (a number) or None')
    return float(v)


def _source(topic: str, path: Any, backend: str, data_dir: Any) -> tuple[str, Path]:
    """What to read: ``('log', dir or segment)``, ``('csv', file)`` or
    ``('parquet', file)``."""
    from .._ticklog import SUFFIX, topic_dir

    if path is None:
        d = topic_dir(topic, backend, data_dir)
        if not d.is_dir():
            raise ValueError(
                f'no tick log of {topic!r} recorded from backend {backend!r} in {d} '
                "(record it with record=True, or give path='...')"
            )
        return 'log', d
    p = Path(path).expanduser()
    if p.is_dir():
        return 'log', p
    if not p.is_file():
        raise ValueError(f'replay file {p}: no such file or directory')
    suffix = p.suffix.lower()
    if suffix == SUFFIX:
        return 'log', p
    if suffix == '.csv':
        return 'csv', p
    if suffix in ('.parquet', '.pq'):
        return 'parquet', p
    raise ValueError(
        f'replay file {p}: unknown kind (a tick log directory or {SUFFIX} segment, '
        'a .csv or a .parquet file)'
    )


def _log_records(topic: str, where: Path, start: Any, end: Any) -> Iterator[Rec]:
    from .._ticklog import log_header, read_segment, read_ticks

    header = log_header(where) if where.is_dir() else read_segment(where, last=True)[0]
    if header is not None and header.get('topic') != topic:
        raise ValueError(
            f'replay file {where}: holds topic {header.get("topic")!r}, not {topic!r}'
        )
    return (
        (r.time, r.fields, r.ticks)
        for r in read_ticks(topic, start, end, directory=where)
    )


def _parse_time(v: Any) -> float:
    if isinstance(v, datetime):
        dt = v
    elif isinstance(v, (int, float)) and not isinstance(v, bool):
        return float(v)
    else:
        s = str(v).strip()
        try:
            return float(s)
        except ValueError:
            pass
        dt = datetime.fromisoformat(s.replace('Z', '+00:00'))
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=timezone.utc)
    return dt.timestamp()


def _table_records(
    topic: str,
    p: Path,
    columns: list[str],
    rows: Iterator[dict[str, Any]],
    line0: int,
    start: float | None,
    end: float | None,
) -> list[Rec]:
    missing = [c for c in REQUIRED if c not in columns]
    if missing:
        hints = [
            f'{a!r} for {c!r}' for c in missing for a in _ALIASES[c] if a in columns
        ]
        raise ValueError(
            f'replay file {p}: missing column{"s" if len(missing) > 1 else ""} '
            f'{", ".join(repr(c) for c in missing)} (it has {", ".join(repr(c) for c in columns)}'
            f'{"; rename " + ", ".join(hints) if hints else ""}; columns: time, price, '
            'size, type, symbol)'
        )
    by_symbol = 'symbol' in columns
    out: list[Rec] = []
    symbols: set[str] = set()
    cum = 0.0
    last_t = -math.inf
    for i, row in enumerate(rows):
        line = line0 + i
        if by_symbol:
            sym = str(row['symbol'])
            if sym != topic:
                if len(symbols) < 5:
                    symbols.add(sym)
                continue
        try:
            t = _parse_time(row['time'])
            price = float(row['price'])
            size = row.get('size')
            size = 0.0 if size in (None, '') else float(size)
        except (TypeError, ValueError) as err:
            raise ValueError(
                f'replay file {p}: line {line}: bad value ({err})'
            ) from None
        if not (math.isfinite(t) and math.isfinite(price) and math.isfinite(size)):
            raise ValueError(
                f'replay file {p}: line {line}: time, price and size must be finite'
            )
        if t < last_t:
            raise ValueError(
                f'replay file {p}: line {line}: time {t} before the line above ({last_t}): '
                'rows must be in time order'
            )
        last_t = t
        if (start is not None and t < start) or (end is not None and t >= end):
            continue
        kind = str(row.get('type') or 'trade')
        tick: dict[str, Any] = {'type': kind, 'price': price, 'size': size}
        if kind == 'trade':
            cum += size
            fields: dict[str, Any] = {'last': price, 'volume': cum, 'time': t}
            tick['time'] = t
        elif kind in ('bid', 'bsize'):
            fields = {'bid': price, 'bsize': size, 'time': t}
        elif kind in ('ask', 'asize'):
            fields = {'ask': price, 'asize': size, 'time': t}
        else:
            fields = {'time': t}
        out.append((t, fields, [tick]))
    if by_symbol and not out and symbols:
        raise ValueError(
            f'replay file {p}: holds no rows of topic {topic!r} (symbols: '
            f'{", ".join(sorted(symbols))})'
        )
    return out


def _csv_records(topic: str, p: Path, start: Any, end: Any) -> list[Rec]:
    try:
        with p.open(newline='') as f:
            reader = csv.DictReader(f)
            columns = [c.strip() for c in (reader.fieldnames or [])]
            reader.fieldnames = columns
            if not columns:
                raise ValueError(f'replay file {p}: empty (no header line)')
            return _table_records(topic, p, columns, iter(reader), 2, start, end)
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        raise ValueError(f'replay file {p}: cannot read ({err})') from None


def _parquet_records(topic: str, p: Path, start: Any, end: Any) -> list[Rec]:
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise ValueError(
            f'replay file {p}: reading Parquet needs pyarrow, which is not installed '
            "(pip install 'tractor-sampler[store]', or pyarrow)"
        ) from None
    try:
        table = pq.read_table(p)
    except Exception as err:  # pyarrow's own errors: a corrupt file
        raise ValueError(
            f'replay file {p}: not a readable Parquet file ({err})'
        ) from None
    cols = table.column_names
    data = table.to_pydict()
    rows = ({c: data[c][i] for c in cols} for i in range(table.num_rows))
    return _table_records(topic, p, cols, rows, 1, start, end)


def stream_quotes(
    symbols: Sequence[str],
    *,
    path: str | None = None,
    backend: str = 'sim',
    data_dir: str | None = None,
    speed: float | str = 1.0,
    start: float | None = None,
    end: float | None = None,
    stop: bool = False,
    clock: Callable[[], float] | None = None,
) -> AsyncIterator[dict[str, dict[str, Any]]]:
    """Check the source and the config (raising here, one line naming the
    file and the problem) and return the quote stream; see the module
    docstring."""
    if isinstance(symbols, str) or len(list(symbols)) != 1:
        raise ValueError(
            f'the replay backend streams one topic at a time, not {symbols!r}'
        )
    (topic,) = list(symbols)
    factor = _speed(speed)
    lo, hi = _bound('start', start), _bound('end', end)
    kind, where = _source(topic, path, backend, data_dir)
    from .._ticklog import TickLogError

    try:
        if kind == 'log':
            recs: Any = _log_records(topic, where, lo, hi)
            first = next(recs, None)  # reads (and checks) the first segment now
            if first is None:
                raise ValueError(f'replay file {where}: no record in the range asked')
            recs = _chain(first, recs)
        elif kind == 'csv':
            recs = _csv_records(topic, where, lo, hi)
        else:
            recs = _parquet_records(topic, where, lo, hi)
        if not recs and kind != 'log':
            raise ValueError(
                f'replay file {where}: no row of {topic!r} in the range asked'
            )
    except TickLogError as err:
        raise ValueError(str(err)) from None
    if not isinstance(stop, bool):
        raise ValueError(f'stop={stop!r} must be True or False')
    return _replay(topic, iter(recs), factor, clock, stop)


def _chain(first: Rec, rest: Iterator[Rec]) -> Iterator[Rec]:
    yield first
    yield from rest


async def _replay(
    topic: str,
    recs: Iterator[Rec],
    speed: float | None,
    clock: Callable[[], float] | None,
    stop: bool,
) -> AsyncIterator[dict[str, dict[str, Any]]]:
    if clock is None:
        offset = time.time() - trio.current_time()

        def clock() -> float:
            return trio.current_time() + offset

    t0: float | None = None
    s0 = trio.current_time()
    burst = 0
    for t, fields, ticks in recs:
        if t0 is None:
            t0 = t
        if speed is not None:
            due = s0 + (t - t0) / speed
            if due > trio.current_time():
                await trio.sleep_until(due)
                burst = 0
            now = due + (clock() - trio.current_time())
        else:
            now = clock()
        if burst >= MAX_BURST:
            await trio.lowlevel.checkpoint()
            burst = 0
        burst += 1
        out = dict(fields)
        if 'time' in out:
            out['time'] = now
        out['ticks'] = [({**tk, 'time': now} if 'time' in tk else tk) for tk in ticks]
        yield {topic: out}
    if not stop:
        await trio.sleep_forever()  # quiet: the topic and its bars stay


async def symbol_info(
    symbol: str,
    *,
    path: str | None = None,
    backend: str = 'sim',
    data_dir: str | None = None,
) -> dict[str, Any]:
    """The replayed topic's details; ``volume``: the recording's volume
    mode (a tick log's header says it)."""
    await trio.lowlevel.checkpoint()
    info: dict[str, Any] = {
        'symbol': symbol,
        'tick_size': 0.01,
        'lot_size': 1.0,
        'asset_type': NAME,
    }
    try:  # a bad source is refused by stream_quotes, with its own words
        kind, where = _source(symbol, path, backend, data_dir)
        if kind == 'log':
            from .._ticklog import log_header, read_segment

            header = (
                log_header(where)
                if where.is_dir()
                else read_segment(where, last=True)[0]
            )
            if header and header.get('volume') in ('sum', 'cumulative'):
                info['volume'] = header['volume']
    except Exception:
        pass
    return info
