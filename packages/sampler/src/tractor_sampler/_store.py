"""The bar store: closed bars of every buffer, kept on disk across runs.

A store is any object with the :class:`BarStore` methods; stores are
registered through the ``tractor_sampler_register_stores`` hook (see
``hookspecs.py``), the built-in Parquet one (``'parquet'``) through the
same hook, by this module.

The Parquet store keeps one dataset (a directory) per backend, topic and
period under the data directory::

    <data dir>/bars/<backend>/<topic>/<period>s/<first>-<last>.parquet

Each write is one new file, written to a temporary name and renamed into
place (``os.replace``), so a file is either whole or absent: a crash or a
full disk mid-write leaves at most a ``.tmp`` file, which readers ignore.
Files are never rewritten, so a stored bar is never overwritten; only
closed bars are written (the feed daemon's writer never hands over the open
bar).  Times are the bars' own (seconds since the epoch, float), the
``index`` field is not stored (it is the buffer's own numbering).

pyarrow is an optional dependency (``tractor-sampler[store]``): without it
:func:`open_store` returns ``None`` and says so once.
"""

from __future__ import annotations

import math
import os
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from tractor_services import compat

from ._datadir import DataDirError, data_dir
from .hookspecs import hookimpl
from .shm import DEFAULT_DTYPE

log = compat.get_logger('store', 'tractor_sampler')

#: which store the feed daemon uses, unless told otherwise
STORE_ENV = 'TRACTOR_SAMPLER_STORE'
DEFAULT_STORE = 'parquet'
#: the store setting that turns it off
NO_STORE = 'none'

EXTRA_HINT = "pip install 'tractor-sampler[store]'"


class StoreError(Exception):
    """A store operation failed: the message names the file and the problem."""


class BarStore(Protocol):
    """What the feed daemon needs of a store (all calls are blocking: the
    daemon runs them in a worker thread)."""

    name: str

    def write(self, backend: str, topic: str, period_s: float, bars: np.ndarray) -> int:
        """Append closed ``bars`` (oldest first, all later than the last
        stored one); returns how many were written."""
        ...

    def read(
        self,
        backend: str,
        topic: str,
        period_s: float,
        start: float | None = None,
        end: float | None = None,
        last: int | None = None,
    ) -> np.ndarray:
        """The stored bars with ``start <= time < end`` (or the ``last``
        ones), oldest first, in :data:`~tractor_sampler.shm.DEFAULT_DTYPE`."""
        ...


def _safe(part: str) -> str:
    """A topic or backend name as one path component."""
    return re.sub(r'[^A-Za-z0-9._=+-]', '_', part) or '_'


def period_dir(period_s: float) -> str:
    return f'{period_s:g}s'


def _pyarrow() -> Any:
    import pyarrow  # noqa: F401
    import pyarrow.parquet

    return pyarrow


@dataclass
class ParquetStore:
    """Closed bars as Parquet files, one new file per write (see the module
    docstring for the layout).  Choose pyarrow: it writes a Parquet file from
    numpy columns without a copy into another frame library, it is the
    reader every other tool (polars, DuckDB, pandas) opens, and appending
    one small file per batch needs no database engine running."""

    root: Path
    name: str = 'parquet'
    #: files found corrupt (each named in the log once)
    corrupt: set[str] = field(default_factory=set)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def __post_init__(self) -> None:
        self.pa = _pyarrow()

    def dataset(self, backend: str, topic: str, period_s: float) -> Path:
        return self.root / 'bars' / _safe(backend) / _safe(topic) / period_dir(period_s)

    def files(self, backend: str, topic: str, period_s: float) -> list[Path]:
        d = self.dataset(backend, topic, period_s)
        if not d.is_dir():
            return []
        return sorted(
            (f for f in d.iterdir() if f.suffix == '.parquet'),
            key=lambda f: float(f.stem.split('-')[0]) if _stem_ok(f.stem) else 0.0,
        )

    def write(self, backend: str, topic: str, period_s: float, bars: np.ndarray) -> int:
        if not len(bars):
            return 0
        pa = self.pa
        names = [n for n in (bars.dtype.names or ()) if n != 'index']
        table = pa.table({n: np.ascontiguousarray(bars[n]) for n in names})
        d = self.dataset(backend, topic, period_s)
        first, last = float(bars['time'][0]), float(bars['time'][-1])
        path = d / f'{first:.1f}-{last:.1f}.parquet'
        tmp = d / f'.{path.name}.{os.getpid()}.tmp'
        try:
            d.mkdir(parents=True, exist_ok=True)
            if path.exists():  # never overwrite a stored file
                raise StoreError(f'{path}: already stored, not overwritten')
            pa.parquet.write_table(table, tmp)
            os.replace(tmp, path)
        except OSError as err:
            try:
                tmp.unlink()
            except OSError:
                pass
            raise StoreError(f'{path}: write failed: {err.strerror or err}') from None
        return len(bars)

    def _read_file(self, f: Path) -> np.ndarray | None:
        try:
            table = self.pa.parquet.read_table(f)
        except Exception as err:  # pyarrow raises ArrowInvalid & co.
            with self._lock:
                if str(f) not in self.corrupt:
                    self.corrupt.add(str(f))
                    log.error(f'bar store: {f}: corrupt Parquet file, skipped: {err}')
            return None
        out = np.zeros(table.num_rows, dtype=DEFAULT_DTYPE)
        for n in out.dtype.names or ():
            if n in table.column_names:
                out[n] = table.column(n).to_numpy()
        return out

    def read(
        self,
        backend: str,
        topic: str,
        period_s: float,
        start: float | None = None,
        end: float | None = None,
        last: int | None = None,
    ) -> np.ndarray:
        files = self.files(backend, topic, period_s)
        parts: list[np.ndarray] = []
        got = 0
        # newest first when only the last bars are wanted
        for f in reversed(files) if last is not None else files:
            if _stem_ok(f.stem):
                lo, hi = (float(x) for x in f.stem.split('-'))
                if start is not None and hi < start - 1e-6:
                    continue
                if end is not None and lo >= end:
                    continue
            arr = self._read_file(f)
            if arr is None:
                continue
            parts.append(arr)
            got += len(arr)
            if last is not None and got >= last:
                break
        if not parts:
            return np.zeros(0, dtype=DEFAULT_DTYPE)
        bars = np.concatenate(parts)
        bars = bars[np.argsort(bars['time'], kind='stable')]
        # a bar stored twice (two writers of one topic) is kept once
        keep = np.ones(len(bars), dtype=bool)
        keep[1:] = np.diff(bars['time']) > 1e-6
        bars = bars[keep]
        if start is not None:
            bars = bars[bars['time'] >= start - 1e-6]
        if end is not None:
            bars = bars[bars['time'] < end]
        if last is not None:
            bars = bars[-last:] if last else bars[:0]
        bars['index'] = np.arange(len(bars))
        return bars


def _stem_ok(stem: str) -> bool:
    return bool(re.fullmatch(r'-?[0-9.]+--?[0-9.]+', stem)) and stem.count('-') == 1


# --- the registry of store implementations (the pluggy hook) --------------

StoreFactory = Callable[..., BarStore]


def _parquet_factory(root: Path, **_: Any) -> BarStore:
    return ParquetStore(root)


@hookimpl
def tractor_sampler_register_stores(register: Callable[..., None]) -> None:
    """The built-in Parquet store, registered like any other."""
    register('parquet', _parquet_factory)


_said_off = False


def open_store(
    path: str | os.PathLike[str] | None = None,
    name: str | None = None,
) -> BarStore | None:
    """The store ``name`` (default ``$TRACTOR_SAMPLER_STORE`` or
    ``'parquet'``) on the data directory ``path`` (see
    :func:`~tractor_sampler._datadir.data_dir`); ``None`` when the store is
    off: ``'none'``, or the Parquet store without pyarrow (said once).
    Raises :class:`DataDirError` or ``ValueError`` (an unknown store), one
    line each."""
    global _said_off
    name = name or os.environ.get(STORE_ENV, '').strip() or DEFAULT_STORE
    if name == NO_STORE:
        return None
    from ._plugins import load_stores

    stores = load_stores()
    if name not in stores:
        raise ValueError(
            f'bar store {name!r} is not registered (known: {", ".join(sorted(stores)) or "none"})'
        )
    root = data_dir(path)
    try:
        return stores[name](root)
    except ImportError:
        if not _said_off:
            _said_off = True
            log.warning(
                f'bar store off: the {name!r} store needs pyarrow ({EXTRA_HINT})'
            )
        return None


#: how often the feed daemon's writer appends the closed bars (seconds);
#: what a kill -9 of the daemon can lose (the gap is backfilled from the
#: backend's history on restart when it has one)
FLUSH_ENV = 'TRACTOR_SAMPLER_STORE_FLUSH_S'
DEFAULT_FLUSH_S = 60.0


def flush_interval() -> float:
    raw = os.environ.get(FLUSH_ENV, '').strip()
    if not raw:
        return DEFAULT_FLUSH_S
    try:
        v = float(raw)
    except ValueError:
        v = -1.0
    if not (0 < v < 86400):
        raise ValueError(f'${FLUSH_ENV}={raw!r} must be seconds in (0, 86400)')
    return v


def storable(shm: Any) -> bool:
    """Only buffers on the period's multiples, stamped on their open, are
    stored (the dataset's one grid; the backend's history is on it too)."""
    tok = shm.token
    return (
        not getattr(tok, 'origin', 0.0)
        and getattr(tok, 'stamp', 'open') == 'open'
        and 'time' in (shm.dtype.names or ())
    )


@dataclass
class StoreWriter:
    """The feed daemon's side of the store: which bars of each topic's
    buffers are stored (``upto``: the last stored bar's time per topic and
    period), and the counters ``samplerd ls`` shows.  :meth:`collect` copies
    the closed bars not yet stored (on the trio thread: a copy of a few rows
    per buffer); :meth:`write` appends them (in a worker thread).  A failed
    write leaves ``upto`` where it was: the bars are written at the next
    flush (retried), and the failure is counted."""

    store: BarStore
    backend: str
    upto: dict[tuple[str, float], float] = field(default_factory=dict)
    bars: int = 0
    writes: int = 0
    failures: int = 0
    last_error: str | None = None
    _said: set[str] = field(default_factory=set)

    def collect(self, topics: dict[str, Any]) -> list[tuple[str, float, np.ndarray]]:
        out = []
        for name, t in list(topics.items()):
            for p, shm in t.shms.items():
                if not storable(shm) or len(shm) < 2:
                    continue
                arr = shm.array
                closed = arr[:-1]  # the open bar (the last row) never
                upto = self.upto.get((name, p))
                if upto is not None:
                    closed = closed[closed['time'] > upto + 1e-6]
                if len(closed):
                    out.append((name, p, closed.copy()))
        return out

    def write(self, batch: list[tuple[str, float, np.ndarray]]) -> None:
        """Blocking: append each topic's bars, one failure not stopping
        the others."""
        for name, p, bars in batch:
            try:
                self.store.write(self.backend, name, p, bars)
            except Exception as err:
                self.failures += 1
                msg = (
                    str(err)
                    if isinstance(err, StoreError)
                    else f'{type(err).__name__}: {err}'
                )
                self.last_error = msg
                if msg not in self._said:  # one line per distinct problem
                    self._said.add(msg)
                    log.error(f'bar store: {msg} (retried at the next flush)')
                continue
            self.writes += 1
            self.bars += len(bars)
            self.upto[(name, p)] = float(bars['time'][-1])

    async def flush(self, topics: dict[str, Any]) -> None:
        import trio

        batch = self.collect(topics)
        if batch:
            await trio.to_thread.run_sync(self.write, batch)

    async def run(self, topics: dict[str, Any], every_s: float) -> None:
        """Flush every ``every_s`` seconds; once more when cancelled (the
        daemon stops: its last closed bars are kept)."""
        import trio

        try:
            while True:
                await trio.sleep(every_s)
                await self.flush(topics)
        finally:
            with trio.CancelScope(shield=True), trio.move_on_after(30):
                await self.flush(topics)

    def seed(
        self, topic: str, period_s: float, now: float, rows: int
    ) -> tuple[np.ndarray | None, int]:
        """Blocking: the stored bars to seed a new buffer of ``topic`` with
        (at most ``rows``, the last ending right before the gap) and how
        many bars the gap to the open bar holds (what the backend's history
        is asked for).  ``(None, rows)`` when nothing usable is stored."""
        try:
            stored = self.store.read(self.backend, topic, period_s, last=rows)
        except Exception as err:
            log.error(
                f'bar store: {topic} {period_s:g} s: read failed, not seeded: {err}'
            )
            return None, rows
        if not len(stored):
            return None, rows
        last = float(stored['time'][-1])
        self.upto[(topic, period_s)] = last
        open_t = math.floor(now / period_s + 1e-9) * period_s
        gap = round((open_t - period_s - last) / period_s)
        if gap < 0:  # stored past now (a clock that went back): unused
            return None, rows
        if gap >= rows:
            return None, rows
        return stored[-(rows - gap) :], gap


def join_stored(
    stored: np.ndarray, fetched: np.ndarray | None, period_s: float
) -> np.ndarray:
    """Stored bars, then the backend's bars after the last stored one (a
    hole between them, where the backend has no bars, flat at the last
    stored close): one bar per period, no gap and no overlap."""
    last = float(stored['time'][-1])
    if fetched is None or not len(fetched):
        return stored
    fetched = fetched[fetched['time'] > last + 1e-6]
    conv = np.zeros(len(fetched), dtype=stored.dtype)
    for f in stored.dtype.names or ():
        if f in (fetched.dtype.names or ()):
            conv[f] = fetched[f]
    if len(conv):
        hole = round((float(conv['time'][0]) - last) / period_s) - 1
        if hole > 0:
            fill = np.zeros(hole, dtype=stored.dtype)
            c = stored['close'][-1]
            for f in ('open', 'high', 'low', 'close'):
                fill[f] = c
            fill['time'] = last + period_s * np.arange(1, hole + 1)
            conv = np.concatenate([fill, conv])
    return np.concatenate([stored, conv])


__all__ = [
    'BarStore',
    'DataDirError',
    'ParquetStore',
    'StoreError',
    'StoreWriter',
    'open_store',
]
