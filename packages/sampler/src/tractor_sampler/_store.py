"""The bar store: closed bars of every buffer, kept on disk across runs.

A store is any object with the :class:`BarStore` methods; stores are
registered through the ``tractor_sampler_register_stores`` hook (see
``hookspecs.py``), the built-in Parquet one (``'parquet'``) through the
same hook, by this module.

The Parquet store keeps one dataset (a directory) per backend, topic and
period under the data directory::

    <data dir>/bars/<backend>/<topic>/<period>s/<first>-<last>_<seq>.parquet
    <data dir>/bars/<backend>/<topic>/<period>s/<first>-<last>_<seq>.day.parquet

Each write is one new file, written to a temporary name and renamed into
place (``os.replace``), so a file is either whole or absent: a crash or a
full disk mid-write leaves at most a ``.tmp`` file, which readers ignore.
``seq`` orders the writes of a dataset (microseconds since the epoch, kept
strictly increasing per dataset; files without one, from before, are the
oldest).  A write may hold bars already stored: a bar a late trade
corrected after it was written is written again by the feed daemon's
writer, and readers resolve a time stored more than once to its latest
write (the highest ``seq``).  Only closed bars are written (the feed
daemon's writer never hands over the open bar), so a stored bar is never
replaced by a partial one.

Compaction (:meth:`ParquetStore.compact`, :func:`compact`) merges the
small files of a dataset into one ``.day`` file per UTC day once the day
is closed, and the current day's files once there are more than
``max_small`` of them.  A merged file takes the highest ``seq`` of its
inputs and holds, per time, its inputs' latest bar; it is written to a
temporary name, fsynced and renamed before its inputs are deleted, so at
any moment (a reader listing the directory meanwhile, a kill -9 between
any two steps) the dataset resolves to the same bars, each once: where a
merged file and its inputs are both present they agree on every time's
latest bar.  Times are the bars' own (seconds since the epoch, float),
the ``index`` field is not stored (it is the buffer's own numbering).

pyarrow is an optional dependency (``tractor-sampler[store]``): without it
:func:`open_store` returns ``None`` and says so once.
"""

from __future__ import annotations

import bisect
import functools
import math
import os
import re
import threading
import time
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
        """Append closed ``bars`` (oldest first): bars later than the last
        stored one, and stored bars a late trade corrected since (the
        latest write of a time is the one :meth:`read` returns); returns
        how many were written.  A store may also have ``compact(backend,
        topic, period_s, *, now, max_small, settle_s)``, which the feed
        daemon's writer calls after its flushes (see
        :meth:`ParquetStore.compact_dir`)."""
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
        ones), oldest first, each time once (its latest write), in
        :data:`~tractor_sampler.shm.DEFAULT_DTYPE`."""
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


#: a stored file's name: its first and last bar times, the write's sequence
#: number (absent in files from before sequence numbers: the oldest) and
#: ``.day`` for a merged (compacted) file
_NAME = re.compile(
    r'(?P<lo>-?[0-9]+(?:\.[0-9]+)?)-(?P<hi>-?[0-9]+(?:\.[0-9]+)?)'
    r'(?:_(?P<seq>[0-9]+)(?P<day>\.day)?)?\.parquet'
)

DAY_S = 86400.0

#: compaction: the current day's small files are merged once there are more
#: than this many of them
COMPACT_MAX_SMALL = 64
#: tolerance of bar times (a bar's time is the float nearest k * period)
_EPS = 1e-6


@dataclass(frozen=True)
class StoredFile:
    """One file of a dataset, as its name describes it."""

    path: Path
    lo: float  # the first bar's time
    hi: float  # the last bar's time
    seq: int  # the write's sequence number (0: from before they existed)
    merged: bool  # a compacted (``.day``) file

    @property
    def order(self) -> tuple[int, bool, str]:
        """Which of two files wins a time both hold: the later write."""
        return (self.seq, self.merged, self.path.name)


def _parse(path: Path) -> StoredFile | None:
    m = _NAME.fullmatch(path.name)
    if m is None:
        return None
    return StoredFile(
        path,
        float(m['lo']),
        float(m['hi']),
        int(m['seq'] or 0),
        bool(m['day']),
    )


def _day(t: float) -> int:
    """The UTC day (days since the epoch) of the time ``t``."""
    return math.floor(t / DAY_S)


def resolve(parts: list[np.ndarray]) -> np.ndarray:
    """Bars of several writes (``parts``, oldest write first) with every time
    once: its bar from the latest write that holds it; sorted by time."""
    if not parts:
        return np.zeros(0, dtype=DEFAULT_DTYPE)
    bars = np.concatenate(parts)
    rank = np.repeat(np.arange(len(parts)), [len(p) for p in parts])
    order = np.lexsort((rank, bars['time']))  # by time, then by write
    bars = bars[order]
    keep = np.ones(len(bars), dtype=bool)  # the last of each run of one time
    keep[:-1] = np.diff(bars['time']) > _EPS
    return bars[keep]


@dataclass
class CompactStats:
    """What a compaction did: datasets merged, files read and written, bars
    in the files written."""

    datasets: int = 0
    inputs: int = 0
    outputs: int = 0
    bars: int = 0

    def add(self, other: CompactStats) -> None:
        self.datasets += other.datasets
        self.inputs += other.inputs
        self.outputs += other.outputs
        self.bars += other.bars


class _Vanished(Exception):
    """A file listed a moment ago is gone (compacted meanwhile): list again."""


@dataclass
class ParquetStore:
    """Closed bars as Parquet files, one new file per write, merged per day by
    :meth:`compact` (see the module docstring for the layout).  Choose
    pyarrow: it writes a Parquet file from numpy columns without a copy into
    another frame library, it is the reader every other tool (polars,
    DuckDB, pandas) opens, and appending one small file per batch needs no
    database engine running."""

    root: Path
    name: str = 'parquet'
    #: files found corrupt (each named in the log once)
    corrupt: set[str] = field(default_factory=set)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    #: the last sequence number given per dataset directory
    _seqs: dict[Path, int] = field(default_factory=dict, repr=False)
    #: a test's hook: called with the name of each step of a compaction
    _step: Callable[[str], None] | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        self.pa = _pyarrow()

    def dataset(self, backend: str, topic: str, period_s: float) -> Path:
        return self.root / 'bars' / _safe(backend) / _safe(topic) / period_dir(period_s)

    def _scan(self, d: Path) -> list[StoredFile]:
        """The dataset's files, oldest write first (files whose name is not
        one of ours come first and are never compacted away)."""
        if not d.is_dir():
            return []
        out = []
        for f in d.iterdir():
            if f.suffix != '.parquet' or f.name.startswith('.'):
                continue
            sf = _parse(f)
            out.append(sf or StoredFile(f, -math.inf, math.inf, -1, False))
        out.sort(key=lambda f: f.order)
        return out

    def files(self, backend: str, topic: str, period_s: float) -> list[Path]:
        """The dataset's files, oldest write first."""
        return [f.path for f in self._scan(self.dataset(backend, topic, period_s))]

    def _next_seq(self, d: Path) -> int:
        """A sequence number above every file of ``d``: the time in
        microseconds, or one more than the last (a clock that went back)."""
        with self._lock:
            last = self._seqs.get(d)
            if last is None:
                last = max((f.seq for f in self._scan(d)), default=0)
            seq = max(last + 1, time.time_ns() // 1000)
            self._seqs[d] = seq
            return seq

    def write(self, backend: str, topic: str, period_s: float, bars: np.ndarray) -> int:
        if not len(bars):
            return 0
        pa = self.pa
        names = [n for n in (bars.dtype.names or ()) if n != 'index']
        table = pa.table({n: np.ascontiguousarray(bars[n]) for n in names})
        d = self.dataset(backend, topic, period_s)
        first, last = float(bars['time'].min()), float(bars['time'].max())
        path = d / f'{first:.1f}-{last:.1f}.parquet'  # named in errors before mkdir
        tmp = d / f'.{path.name}.{os.getpid()}.tmp'
        try:
            d.mkdir(parents=True, exist_ok=True)
            path = d / f'{first:.1f}-{last:.1f}_{self._next_seq(d)}.parquet'
            tmp = d / f'.{path.name}.{os.getpid()}.tmp'
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
            # one file, no dataset discovery: about twice as fast as
            # read_table for the small files of a flush
            with self.pa.parquet.ParquetFile(f) as pf:
                table = pf.read()
        except FileNotFoundError:
            raise _Vanished(str(f)) from None
        except Exception as err:  # pyarrow raises ArrowInvalid & co.
            if not f.exists():  # removed while pyarrow opened it
                raise _Vanished(str(f)) from None
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
        d = self.dataset(backend, topic, period_s)
        for _ in range(100):
            try:
                bars = self._read_once(d, start, end, last)
                break
            except _Vanished:  # compacted meanwhile: the merged file is in place
                continue
        else:
            raise StoreError(f'{d}: files keep vanishing while read')
        bars['index'] = np.arange(len(bars))
        return bars

    def _read_once(
        self, d: Path, start: float | None, end: float | None, last: int | None
    ) -> np.ndarray:
        files = [
            f
            for f in self._scan(d)
            if not (start is not None and f.hi < start - _EPS)
            and not (end is not None and f.lo >= end)
        ]
        if last is not None:
            # the newest bars: files by their last bar, newest first, until
            # the files left cannot hold a time as new as the last-th one
            got: dict[int, np.ndarray] = {}
            cut = -math.inf
            for i in sorted(range(len(files)), key=lambda i: -files[i].hi):
                if files[i].hi < cut - _EPS:
                    break
                arr = self._read_file(files[i].path)
                if arr is None:
                    continue
                got[i] = arr
                times = np.unique(np.concatenate([a['time'] for a in got.values()]))
                if last and len(times) >= last:
                    cut = float(times[-last])
            parts = [got[i] for i in sorted(got)]  # oldest write first
        else:
            parts = [a for f in files if (a := self._read_file(f.path)) is not None]
        bars = resolve(parts)
        if start is not None:
            bars = bars[bars['time'] >= start - _EPS]
        if end is not None:
            bars = bars[bars['time'] < end]
        if last is not None:
            bars = bars[-last:] if last else bars[:0]
        return bars

    # --- compaction -----------------------------------------------------------

    def compact(
        self,
        backend: str,
        topic: str,
        period_s: float,
        *,
        now: float | None = None,
        max_small: int = COMPACT_MAX_SMALL,
        settle_s: float = 0.0,
        all_days: bool = False,
    ) -> CompactStats:
        """Blocking: merge the dataset's files that are due (see
        :meth:`compact_dir`)."""
        return self.compact_dir(
            self.dataset(backend, topic, period_s),
            now=now,
            max_small=max_small,
            settle_s=settle_s,
            all_days=all_days,
        )

    def compact_dir(
        self,
        d: Path,
        *,
        now: float | None = None,
        max_small: int = COMPACT_MAX_SMALL,
        settle_s: float = 0.0,
        all_days: bool = False,
    ) -> CompactStats:
        """Blocking: merge the files of the dataset ``d`` into one ``.day``
        file per UTC day: a closed day (ended ``settle_s`` before ``now``,
        default the wall clock; every day with ``all_days``) held in more
        than one file or in a file not merged yet, and the current day when
        more than ``max_small`` files not merged yet hold it.  Raises
        :class:`StoreError` (one line naming the file) when a file cannot be
        written; the dataset is unchanged then but for a ``.tmp`` file."""
        stats = CompactStats()
        now = time.time() if now is None else now
        open_day = math.inf if all_days else _day(now - settle_s)
        for _ in range(100_000):  # one group per round; ends when none is due
            files = [
                f
                for f in self._scan(d)
                if f.seq >= 0 and str(f.path) not in self.corrupt
            ]
            group = _due(files, open_day, max_small)
            if not group:
                break
            try:
                stats.add(self._merge(d, group))
            except _Vanished:  # another process compacts it too: list again
                continue
        stats.datasets = 1 if stats.inputs else 0
        _remove_stale_tmp(d)
        return stats

    def _merge(self, d: Path, group: list[StoredFile]) -> CompactStats:
        """Merge ``group`` (every file holding a time in its span) into one
        file per day: written, fsynced, renamed, then the inputs deleted."""
        step = self._step or (lambda _: None)
        parts, used = [], []
        for f in group:
            arr = self._read_file(f.path)
            if arr is None:  # corrupt: left where it is (and named in the log)
                continue
            parts.append(arr)
            used.append(f)
        if not used:
            return CompactStats()
        bars = resolve(parts)
        seq = max(f.seq for f in used)
        days = np.floor(bars['time'] / DAY_S + _EPS / DAY_S).astype(np.int64)
        cuts = np.flatnonzero(np.diff(days)) + 1
        outs: list[Path] = []
        names = [n for n in DEFAULT_DTYPE.names or () if n != 'index']
        for chunk in np.split(bars, cuts):
            if not len(chunk):
                continue
            lo, hi = float(chunk['time'][0]), float(chunk['time'][-1])
            path = d / f'{lo:.1f}-{hi:.1f}_{seq}.day.parquet'
            tmp = d / f'.{path.name}.{os.getpid()}.tmp'
            table = self.pa.table({n: np.ascontiguousarray(chunk[n]) for n in names})
            try:
                self.pa.parquet.write_table(table, tmp)
                fd = os.open(tmp, os.O_RDONLY)
                try:
                    os.fsync(fd)
                finally:
                    os.close(fd)
                step('written')
                os.replace(tmp, path)
            except OSError as err:
                try:
                    tmp.unlink()
                except OSError:
                    pass
                raise StoreError(
                    f'{path}: compaction failed: {err.strerror or err}'
                ) from None
            outs.append(path)
            step('renamed')
        _fsync_dir(d)  # the merged files are durable before any input goes
        step('synced')
        for f in used:
            if f.path in outs:  # replaced by its own merge (same name)
                continue
            try:
                f.path.unlink()
            except FileNotFoundError:
                pass
            step('deleted')
        _fsync_dir(d)
        return CompactStats(1, len(used), len(outs), len(bars))


#: a ``.tmp`` file this old is left over from a crash: compaction removes it
STALE_TMP_S = 3600.0


def _remove_stale_tmp(d: Path) -> None:
    now = time.time()
    try:
        entries = list(d.iterdir())
    except OSError:
        return
    for f in entries:
        if f.name.startswith('.') and f.name.endswith('.tmp'):
            try:
                if f.stat().st_mtime < now - STALE_TMP_S:
                    f.unlink()
            except OSError:
                pass


def _fsync_dir(d: Path) -> None:
    try:
        fd = os.open(d, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _due(files: list[StoredFile], open_day: float, max_small: int) -> list[StoredFile]:
    """The next group of ``files`` to merge (empty: none is due).

    A closed day (before ``open_day``) is due unless one merged file holds
    it alone: all its files are merged.  The current day is due when more
    than ``max_small`` small files hold it: those are merged (the day's
    earlier merged files stay, so a bar is rewritten about twice a day,
    not at every merge), or when more than ``max_small`` merged files hold
    it: all are.  The group then takes in every file holding a time in its
    span, and so on until no file outside overlaps it, so the merged file
    takes the place of everything it overlaps (what makes its ``seq``, its
    inputs' highest, right for every time in it)."""
    by_day: dict[int, list[StoredFile]] = {}
    for f in files:
        for day in range(_day(f.lo), _day(f.hi) + 1):
            by_day.setdefault(day, []).append(f)
    for day in sorted(by_day):
        held = by_day[day]
        if day < open_day:
            if (
                len(held) == 1
                and held[0].merged
                and _day(held[0].lo) == _day(held[0].hi)
            ):
                continue
        else:
            small = [f for f in held if not f.merged]
            if len(small) > max_small:
                held = small
            elif len(held) - len(small) <= max_small:
                continue
        group = set(held)
        lo, hi = min(f.lo for f in group), max(f.hi for f in group)
        while True:
            more = {
                f
                for f in files
                if f not in group and f.lo <= hi + _EPS and f.hi >= lo - _EPS
            }
            if not more:
                break
            group |= more
            lo, hi = min(lo, *(f.lo for f in more)), max(hi, *(f.hi for f in more))
        return sorted(group, key=lambda f: f.order)
    return []


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


#: how far back from the newest stored bar (seconds) the feed daemon's
#: writer looks, at each flush, for stored bars a late trade has corrected
#: since (they are written again); 0: never
RECHECK_ENV = 'TRACTOR_SAMPLER_STORE_RECHECK_S'
DEFAULT_RECHECK_S = 600.0

_said_recheck = False


def recheck_window() -> float:
    """``$TRACTOR_SAMPLER_STORE_RECHECK_S`` (default 600 s); a bad value is
    one logged line and the default (the feed runs on)."""
    global _said_recheck
    raw = os.environ.get(RECHECK_ENV, '').strip()
    if not raw:
        return DEFAULT_RECHECK_S
    try:
        v = float(raw)
    except ValueError:
        v = -1.0
    if not (0 <= v <= 86400):
        if not _said_recheck:
            _said_recheck = True
            log.error(
                f'${RECHECK_ENV}={raw!r} must be seconds in [0, 86400]: '
                f'using {DEFAULT_RECHECK_S:g}'
            )
        return DEFAULT_RECHECK_S
    return v


_OHLCV = ('open', 'high', 'low', 'close', 'volume')


def row_sums(bars: np.ndarray) -> np.ndarray:
    """A 64-bit checksum of each bar's OHLCV, from their bits (NaN equals
    NaN): an FNV-style fold whose every step is a bijection, so a bar that
    differs in one field always differs in its sum."""
    h = np.full(len(bars), 0xCBF29CE484222325, dtype=np.uint64)
    prime = np.uint64(0x100000001B3)
    for f in _OHLCV:
        if f in (bars.dtype.names or ()):
            v = np.ascontiguousarray(bars[f], dtype=np.float64).view(np.uint64)
            h = (h ^ v) * prime
    return h


def _rows_after(closed: np.ndarray, t: float) -> np.ndarray:
    """The rows of ``closed`` (time ascending) later than ``t``: a bisection
    over the buffer's own rows (a few element reads, not a pass over hours
    of bars)."""
    return closed[bisect.bisect_right(closed['time'], t) :]


def _copy(rows: np.ndarray) -> np.ndarray:
    """A copy of buffer rows: as bytes (a structured array's ``copy()``
    goes field by field, several times slower)."""
    return np.frombuffer(bytearray(rows.tobytes()), dtype=rows.dtype)


@dataclass
class StoreWriter:
    """The feed daemon's side of the store: which bars of each topic's
    buffers are stored (``upto``: the last stored bar's time per topic and
    period; ``sums``: a checksum per stored bar of the last
    ``recheck_s`` seconds before it), and the counters ``samplerd ls``
    shows.  :meth:`collect` copies the closed bars not yet stored and those
    of the recheck window (on the trio thread: a copy of a few hundred rows
    per buffer at most); :meth:`write` appends the new bars and those whose
    checksum changed since they were stored (a late trade corrected them),
    in a worker thread.  A failed write leaves ``upto`` and ``sums`` where
    they were: the bars are written at the next flush (retried), and the
    failure is counted.  :meth:`compact_due` merges the small files of the
    datasets written (see :meth:`ParquetStore.compact_dir`)."""

    store: BarStore
    backend: str
    upto: dict[tuple[str, float], float] = field(default_factory=dict)
    bars: int = 0
    writes: int = 0
    failures: int = 0
    last_error: str | None = None
    #: seconds of stored bars before the newest one checked for corrections
    recheck_s: float = field(default_factory=recheck_window)
    #: stored bars written again because a late trade had changed them
    rewrites: int = 0
    #: compaction: merge the current day's files past this many; a day is
    #: closed (merged into one file) this long after it ended
    max_small: int = COMPACT_MAX_SMALL
    settle_s: float = DEFAULT_FLUSH_S + DEFAULT_RECHECK_S
    #: files merged away, files written by merges, failed compactions
    compacted: int = 0
    merged_files: int = 0
    compact_failures: int = 0
    sums: dict[tuple[str, float], tuple[np.ndarray, np.ndarray]] = field(
        default_factory=dict, repr=False
    )
    _said: set[str] = field(default_factory=set)
    #: per dataset: writes since its last compaction check, and the day of it
    _since_check: dict[tuple[str, float], int] = field(default_factory=dict)
    _checked_day: dict[tuple[str, float], int] = field(default_factory=dict)

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
                    closed = _rows_after(closed, upto + _EPS - self.recheck_s)
                if len(closed):
                    out.append((name, p, _copy(closed)))
        return out

    def _fail(self, err: Exception, what: str) -> str:
        msg = (
            str(err) if isinstance(err, StoreError) else f'{type(err).__name__}: {err}'
        )
        if msg not in self._said:  # one line per distinct problem
            self._said.add(msg)
            log.error(f'bar store: {msg} ({what})')
        return msg

    def write(self, batch: list[tuple[str, float, np.ndarray]]) -> None:
        """Blocking: append each topic's new bars and the stored ones that
        changed since, one failure not stopping the others."""
        for name, p, rows in batch:
            key = (name, p)
            upto = self.upto.get(key)
            sums = row_sums(rows)
            times = rows['time']
            if upto is None:
                new = np.ones(len(rows), dtype=bool)
            else:
                new = times > upto + _EPS
            known = np.zeros(len(rows), dtype=bool)  # stored, sum recorded
            changed = np.zeros(len(rows), dtype=bool)
            rec = self.sums.get(key)
            old = ~new
            if rec is not None and len(rec[0]) and old.any():
                rt, rs = rec
                i = np.minimum(np.searchsorted(rt, times[old] - _EPS), len(rt) - 1)
                hit = np.abs(rt[i] - times[old]) <= _EPS
                known[old] = hit
                changed[old] = hit & (rs[i] != sums[old])
            todo = new | changed
            if todo.any():
                try:
                    self.store.write(self.backend, name, p, rows[todo])
                except Exception as err:
                    self.failures += 1
                    self.last_error = self._fail(err, 'retried at the next flush')
                    continue
                self.writes += 1
                self.bars += int(todo.sum())
                self.rewrites += int(changed.sum())
                self._since_check[key] = self._since_check.get(key, 0) + 1
            if new.any():
                upto = float(times[new][-1])
                self.upto[key] = upto
            if upto is None:
                continue
            stored = (new | known) & (times > upto - self.recheck_s - _EPS)
            self.sums[key] = (times[stored].copy(), sums[stored])

    def remember(self, topic: str, period_s: float, stored: np.ndarray) -> None:
        """``stored`` (time ascending) is what the store holds last of
        ``topic``'s ``period_s`` bars: the newest stored time, and the sums
        of the recheck window before it."""
        if not len(stored):
            return
        key = (topic, period_s)
        last = float(stored['time'][-1])
        self.upto[key] = last
        win = stored[stored['time'] > last - self.recheck_s - _EPS]
        self.sums[key] = (win['time'].copy(), row_sums(win))

    def compact_due(self, now: float | None = None, budget_s: float = math.inf) -> None:
        """Blocking: compact each dataset written since its last check that
        may be due: more than ``max_small`` writes since, a new day since,
        or never checked by this writer; for at most about ``budget_s``
        seconds (the datasets left are checked next time: after midnight
        every dataset's day is merged, spread over a few flushes).
        Failures are counted and logged once per distinct problem; the
        files stay as they were."""
        compact = getattr(self.store, 'compact', None)
        if compact is None:
            return
        now = time.time() if now is None else now
        day = _day(now - self.settle_s)
        until = time.monotonic() + budget_s
        checked = 0
        for key, n in list(self._since_check.items()):
            if n <= self.max_small and self._checked_day.get(key) == day:
                continue
            if checked and time.monotonic() > until:
                break  # the others next time
            checked += 1
            try:
                st = compact(
                    self.backend,
                    key[0],
                    key[1],
                    now=now,
                    max_small=self.max_small,
                    settle_s=self.settle_s,
                )
            except Exception as err:
                self.compact_failures += 1
                self._fail(err, 'compaction retried later')
                continue
            self._since_check[key] = 0
            self._checked_day[key] = day
            self.compacted += st.inputs
            self.merged_files += st.outputs

    #: topics collected between two checkpoints of the feed daemon's loop
    COLLECT_CHUNK = 64

    async def flush(self, topics: dict[str, Any]) -> None:
        """Collect (on the trio thread, yielding to the quote path every
        :attr:`COLLECT_CHUNK` topics), then write in a worker thread."""
        import trio

        items = list(topics.items())
        batch = []
        for i in range(0, len(items), self.COLLECT_CHUNK):
            if i:
                await trio.lowlevel.checkpoint()
            batch += self.collect(dict(items[i : i + self.COLLECT_CHUNK]))
        if batch:
            await trio.to_thread.run_sync(self.write, batch)

    async def run(self, topics: dict[str, Any], every_s: float) -> None:
        """Flush every ``every_s`` seconds, then compact what is due (in a
        worker thread, like the writes); flush once more when cancelled
        (the daemon stops: its last closed bars are kept)."""
        import trio

        self.settle_s = every_s + self.recheck_s
        try:
            while True:
                await trio.sleep(every_s)
                await self.flush(topics)
                await trio.to_thread.run_sync(
                    functools.partial(self.compact_due, budget_s=every_s / 2)
                )
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
        self.remember(topic, period_s, stored)
        open_t = math.floor(now / period_s + 1e-9) * period_s
        gap = round((open_t - period_s - last) / period_s)
        if gap < 0:  # stored past now (a clock that went back): unused
            return None, rows
        if gap >= rows:
            return None, rows
        return stored[-(rows - gap) :], gap


def compact(
    data_dir: str | os.PathLike[str] | None = None,
    *,
    backend: str | None = None,
    topic: str | None = None,
    period_s: float | None = None,
    now: float | None = None,
    max_small: int = COMPACT_MAX_SMALL,
    settle_s: float = DEFAULT_FLUSH_S + DEFAULT_RECHECK_S,
    all_days: bool = False,
) -> CompactStats:
    """Blocking: compact the Parquet bar store under ``data_dir`` (see
    :func:`~tractor_sampler._datadir.data_dir`): every dataset, or those of
    ``backend``, ``topic``, ``period_s``.  Each closed UTC day (ended
    ``settle_s`` before ``now``) ends in one file; the current day's files
    are merged when more than ``max_small``; ``all_days=True`` merges the
    current day too (a dataset no daemon writes any more).  Safe while a
    feed daemon writes and readers read the store.  Returns what was done;
    a dataset that cannot be compacted does not stop the others, and the
    first problem is raised at the end (:class:`StoreError`, one line
    naming the file).  ``ValueError`` when pyarrow is missing."""
    s = open_store(data_dir, 'parquet')
    if s is None:
        raise ValueError(
            f'the bar store is off: compacting it needs pyarrow ({EXTRA_HINT})'
        )
    assert isinstance(s, ParquetStore)
    stats = CompactStats()
    errors: list[str] = []
    root = s.root / 'bars'

    def dirs(d: Path, want: str | None) -> list[Path]:
        if not d.is_dir():
            return []
        return sorted(x for x in d.iterdir() if x.is_dir() and want in (None, x.name))

    want_p = period_dir(period_s) if period_s is not None else None
    for b in dirs(root, _safe(backend) if backend is not None else None):
        for t in dirs(b, _safe(topic) if topic is not None else None):
            for d in dirs(t, want_p):
                try:
                    stats.add(
                        s.compact_dir(
                            d,
                            now=now,
                            max_small=max_small,
                            settle_s=settle_s,
                            all_days=all_days,
                        )
                    )
                except StoreError as err:
                    errors.append(str(err))
    if errors:
        more = f' (and {len(errors) - 1} more)' if len(errors) > 1 else ''
        raise StoreError(errors[0] + more)
    return stats


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
    'CompactStats',
    'DataDirError',
    'ParquetStore',
    'StoreError',
    'StoreWriter',
    'compact',
    'open_store',
]
