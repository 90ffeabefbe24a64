"""
The tick log: every quote a feed daemon publishes for a recorded topic,
appended to files that survive ``kill -9``.

Layout (under the data directory, see :mod:`tractor_sampler._datadir`)::

    <data dir>/ticks/<backend>/<topic, %-quoted>/<YYYYMMDD>-<nnnn>.tlog

one directory per topic, one *segment* file per UTC day of the quotes'
times, a new segment (``nnnn`` + 1) when one reaches
:data:`SEGMENT_BYTES`.  A segment is :data:`MAGIC`, one framed header
record (a msgpack map: ``topic``, ``backend``, ``volume``, ``created``,
``version``), then framed quote records.  A framed record is
``<u32 length><u32 crc32>`` (little-endian) and ``length`` bytes of
msgpack: ``[time, quote]``, the wall time the recorder received the
quote and the quote as the feed bus encoded it (a map: ``seq``, the bus's
sequence number, ``fields``, ``ticks``, and the bus's ``type`` and
``topic``), written as received, never decoded and encoded again.  Append-only: a record once written is never rewritten.

Who writes: :func:`run_recorder`, a subscriber of the feed bus inside the
feed daemon (a task per recorded topic), so the quote path is unchanged:
``publish()`` puts the already-encoded quote into the recorder's outbox
as into any subscriber's (full: the oldest dropped and counted in the
subscriber's ``dropped``, shown by ``samplerd ls``).  It writes in
batches, flushed (``os.write``, into the page cache: a killed process
loses nothing written) at least every :data:`FLUSH_S` seconds; so after a
``kill -9`` at most the last flush interval is lost (with ``fsync=True``
also after a power loss, at a cost per flush).

Reopening (:meth:`TickLog.open`): the newest segment is scanned, a torn
last record (too short for its length, or a CRC mismatch up to the end of
the file) is cut, and appending goes on after the last intact record.
Readers (:func:`read_ticks`) stop quietly at a torn tail of the newest
segment (a writer may be writing it); anywhere else a bad record is a
:class:`TickLogError` naming the file and the byte offset.

"""

from __future__ import annotations

import calendar
import collections
import math
import os
import struct
import time
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote as _quote

import msgspec
import trio

from tractor_services import compat

from ._datadir import data_dir as _data_dir

log = compat.get_logger('ticklog', 'tractor_sampler')

#: the first bytes of every segment
MAGIC = b'TSTICKS1'
#: a record's frame: length and CRC-32 of the payload
_FRAME = struct.Struct('<II')
#: the largest record accepted (a bigger length is corruption)
MAX_RECORD = 64 * 1024 * 1024
#: a segment that reaches this many bytes is closed; the next one begins
SEGMENT_BYTES = 64 * 1024 * 1024
#: the recorder flushes at least this often (seconds): what a kill -9 may lose
FLUSH_S = 1.0
#: ... and whenever this many bytes are waiting
FLUSH_BYTES = 1 << 20
#: quotes the recorder's outbox holds before the oldest is dropped (counted)
RECORDER_OUTBOX = 65_536
#: a failing write is retried after the flush interval, then twice as long
#: each time, up to this (seconds)
RETRY_MAX_S = 30.0
VERSION = 1
#: set (to anything but ``0``) in a root started with ``samplerd run
#: --record``: its feed daemons record every topic
RECORD_ENV = 'TRACTOR_SAMPLER_RECORD'
SUFFIX = '.tlog'

_enc = msgspec.msgpack.Encoder()
_dec = msgspec.msgpack.Decoder()


class TickLogError(ValueError):
    """A tick log cannot be read or written: the message names the file and
    the problem."""


class _Head(bytes):
    """A segment's magic and header record, queued before its records."""


@dataclass(frozen=True)
class _NewSegment:
    """In a writer's queue: a new segment begins here (``t``: its first
    record's time, whose UTC day names it)."""

    t: float


@dataclass(frozen=True)
class TickRecord:
    """One recorded quote."""

    seq: int
    time: float
    fields: dict[str, Any]
    ticks: list[dict[str, Any]]


def topic_dir(
    topic: str, backend: str = 'sim', data_dir: str | os.PathLike[str] | None = None
) -> Path:
    """The directory holding ``topic``'s segments (made when missing)."""
    if not isinstance(topic, str) or not topic:
        raise TickLogError(f'bad topic {topic!r}: a topic is a non-empty string')
    return (
        _data_dir(data_dir)
        / 'ticks'
        / _quote(backend, safe='')
        / _quote(topic, safe='')
    )


def frame(payload: bytes) -> bytes:
    return _FRAME.pack(len(payload), zlib.crc32(payload)) + payload


def _day(t: float) -> str:
    return time.strftime('%Y%m%d', time.gmtime(t))


def _day_end(day: str) -> float:
    """When the UTC day ``day`` (``YYYYMMDD``) ends (``-inf``: no day)."""
    if not day:
        return -math.inf
    return calendar.timegm(time.strptime(day, '%Y%m%d')) + 86_400.0


def segments(directory: Path) -> list[Path]:
    """A topic directory's segments, oldest first."""
    if not directory.is_dir():
        return []
    return sorted(p for p in directory.iterdir() if p.name.endswith(SUFFIX))


def _scan(
    path: Path, data: bytes
) -> tuple[dict[str, Any], list[tuple[int, int]], int, str | None, bool]:
    """Parse a segment: its header, the (offset, end) of each intact
    record, where the intact part ends, if something follows it why it is
    bad, and whether that is only a torn tail (the bad record runs to the
    end of the file: a write cut short), not damage with data after it."""
    if not data.startswith(MAGIC):
        if MAGIC.startswith(data):  # torn while its magic was written
            return {}, [], 0, 'a torn segment header', True
        raise TickLogError(f'{path}: not a tick log segment (bad magic)')
    pos = len(MAGIC)
    header: dict[str, Any] | None = None
    spans: list[tuple[int, int]] = []
    n = len(data)
    while pos < n:
        if n - pos < _FRAME.size:
            return header or {}, spans, pos, f'a torn record frame at byte {pos}', True
        length, crc = _FRAME.unpack_from(data, pos)
        if length > MAX_RECORD:
            return (
                header or {},
                spans,
                pos,
                f'a record length {length} at byte {pos}',
                False,
            )
        end = pos + _FRAME.size + length
        if end > n:
            return header or {}, spans, pos, f'a torn record at byte {pos}', True
        if zlib.crc32(data[pos + _FRAME.size : end]) != crc:
            return header or {}, spans, pos, f'a CRC mismatch at byte {pos}', end == n
        if header is None:
            try:
                header = _dec.decode(data[pos + _FRAME.size : end])
            except msgspec.DecodeError as err:
                raise TickLogError(f'{path}: bad segment header: {err}') from None
            if not isinstance(header, dict):
                raise TickLogError(f'{path}: bad segment header {header!r}')
        else:
            spans.append((pos + _FRAME.size, end))
        pos = end
    if header is None:
        return {}, spans, pos, 'no segment header', True
    return header, spans, pos, None, True


def _payload(t: float, quote: bytes) -> bytes:
    """A record's payload: msgpack ``[t, quote]`` around an encoded quote."""
    return b'\x92\xcb' + _F64.pack(t) + quote


_F64 = struct.Struct('>d')


def _decode(path: Path, payload: bytes, at: int) -> TickRecord:
    try:
        t, q = _dec.decode(payload)
        return TickRecord(int(q['seq']), float(t), q['fields'], q.get('ticks') or [])
    except (msgspec.DecodeError, TypeError, ValueError, KeyError) as err:
        raise TickLogError(f'{path}: bad record at byte {at}: {err}') from None


class TickLog:
    """The append side of one topic's tick log.  :meth:`open` it (which
    cuts a torn tail), :meth:`append` records, :meth:`flush` at least every
    flush interval, :meth:`close` at the end."""

    def __init__(
        self,
        directory: Path,
        topic: str,
        *,
        backend: str = 'sim',
        volume: str = 'sum',
        segment_bytes: int = SEGMENT_BYTES,
        fsync: bool = False,
    ) -> None:
        self.dir = directory
        self.topic = topic
        self.backend = backend
        self.volume = volume
        self.segment_bytes = int(segment_bytes)
        self.fsync = fsync
        self._fd: int | None = None
        self._path: Path | None = None
        #: the current segment: its whole records end at ``_size``
        self._size = 0
        self._day = ''
        #: a write failed part-way: bytes after ``_size`` to cut first
        self._torn = False
        #: queued: records, a segment's head first (:class:`_Head`), and
        #: where a new segment begins (:class:`_NewSegment`)
        self._buf: list[bytes | _NewSegment] = []
        self._new_segments = 0  # _NewSegment items queued
        #: where the next record goes once the queue is written: the
        #: segment's day and size
        self._next_day = ''
        self._next_size = 0
        #: when ``_next_day`` ends (epoch seconds): a record at or after it
        #: may begin a new segment (its day is computed only then)
        self._day_end = -math.inf
        self.pending_bytes = 0
        #: records queued, not yet written
        self.pending_records = 0
        #: the last sequence number written (0: none)
        self.last_seq = 0
        self.last_time = -math.inf
        #: records appended / written / bytes written by this writer; bytes
        #: cut on reopen
        self.records = 0
        self.written = 0
        self.bytes = 0
        self.cut_bytes = 0
        #: quotes whose sequence number went back (a restarted bus): a new
        #: run, written as is (readers see seq restart)
        self.restarts = 0

    @classmethod
    def open(
        cls,
        topic: str,
        *,
        backend: str = 'sim',
        data_dir: str | os.PathLike[str] | None = None,
        directory: str | os.PathLike[str] | None = None,
        **kw: Any,
    ) -> TickLog:
        """The writer of ``topic``'s log (``directory``, else its place in
        the data directory), after recovering the newest segment."""
        d = (
            Path(directory)
            if directory is not None
            else topic_dir(topic, backend, data_dir)
        )
        try:
            d.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise TickLogError(
                f'{d}: cannot make the tick log directory ({err.strerror or err})'
            ) from None
        self = cls(d, topic, backend=backend, **kw)
        self._recover()
        self._next_day, self._next_size = self._day, self._size
        self._day_end = _day_end(self._next_day)
        return self

    def _recover(self) -> None:
        segs = segments(self.dir)
        if not segs:
            return
        path = segs[-1]
        data = path.read_bytes()
        header, spans, good, why, tail = _scan(path, data)
        if why is not None and not tail:
            raise TickLogError(
                f'{path}: corrupt segment ({why}, with data after it): not appending '
                'to it (move it away to start a new one)'
            )
        if header and header.get('topic') != self.topic:
            raise TickLogError(
                f'{path}: holds topic {header.get("topic")!r}, not {self.topic!r}'
            )
        if why is not None:
            cut = len(data) - good
            if not header:  # nothing intact: the segment goes
                path.unlink()
                log.warning(f'{path}: removed ({why}, no record in it)')
                self.cut_bytes += len(data)
                return self._recover()
            os.truncate(path, good)
            self.cut_bytes += cut
            log.warning(f'{path}: cut {cut} bytes after the last intact record ({why})')
        if spans:
            last = _decode(path, data[spans[-1][0] : spans[-1][1]], spans[-1][0])
            self.last_seq, self.last_time = last.seq, last.time
        else:  # a segment begun, no record in it yet: the last one is before it
            for older in reversed(segs[:-1]):
                _, recs = read_segment(older)
                final = collections.deque(recs, maxlen=1)  # its last record
                if final:
                    self.last_seq, self.last_time = final[0].seq, final[0].time
                    break
        self._path, self._size = path, good
        self._day = path.name.split('-', 1)[0]

    def _head(self) -> _Head:
        """A new segment's first bytes: the magic and the header record."""
        return _Head(
            MAGIC
            + frame(
                _enc.encode(
                    {
                        'topic': self.topic,
                        'backend': self.backend,
                        'volume': self.volume,
                        'created': time.time(),
                        'version': VERSION,
                    }
                )
            )
        )

    def _begin_segment(self, t: float) -> None:
        """Close the current segment and create the next (empty: its head
        is written with its first records)."""
        self._close_fd()
        day = _day(t)
        n = 0
        segs = segments(self.dir)
        if segs:
            last = segs[-1].name[: -len(SUFFIX)]
            d, _, num = last.partition('-')
            if d == day:
                n = int(num) + 1
            elif d > day:  # the clock went back: keep the files in order
                day, n = d, int(num) + 1
        path = self.dir / f'{day}-{n:04d}{SUFFIX}'
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o644)
        self._fd, self._path, self._size, self._day = fd, path, 0, day
        self._torn = False

    def _ensure_fd(self) -> None:
        if self._fd is None and self._path is not None:
            self._fd = os.open(self._path, os.O_WRONLY | os.O_APPEND)

    def append(
        self, seq: int, t: float, fields: dict[str, Any], ticks: list[dict[str, Any]]
    ) -> None:
        """Queue one record (written at the next :meth:`flush`)."""
        self.append_encoded(
            seq, t, _enc.encode({'seq': seq, 'fields': fields, 'ticks': ticks})
        )

    def append_encoded(self, seq: int, t: float, quote: bytes) -> None:
        """Queue one record of a quote already encoded as a msgpack map with
        ``seq``, ``fields`` and ``ticks`` (the feed bus's encoding)."""
        if seq <= self.last_seq:
            self.restarts += 1
        rec = frame(_payload(t, quote))
        if t >= self._day_end or self._next_size + len(rec) > self.segment_bytes:
            day = _day(t)
            if (
                not self._next_day
                or day > self._next_day
                or self._next_size + len(rec) > self.segment_bytes
            ):
                head = self._head()
                self._buf += (_NewSegment(t), head)
                self._new_segments += 1
                # a clock gone back: the files stay in order
                self._next_day = max(day, self._next_day)
                self._next_size = len(head)
                self.pending_bytes += len(head)
                self._day_end = _day_end(self._next_day)
        self._buf.append(rec)
        self._next_size += len(rec)
        self.pending_bytes += len(rec)
        self.pending_records += 1
        self.last_seq, self.last_time = seq, t
        self.records += 1

    def flush(self) -> int:
        """Write what is queued, segment by segment; returns the bytes
        written.  A write that fails (``OSError``: a full disk, EIO, a
        directory gone) raises with nothing lost or torn: what it had not
        written stays queued, and the next flush first cuts the segment
        back to its last whole record, then writes it again (so a retried
        log holds every record once, in sequence)."""
        done = 0
        buf = self._buf
        while buf:
            first = buf[0]
            if isinstance(first, _NewSegment):
                self._begin_segment(first.t)
                del buf[0]
                self._new_segments -= 1
            # the run of records (after the head) up to the next segment
            end = len(buf)
            if self._new_segments:
                end = next(i for i, x in enumerate(buf) if isinstance(x, _NewSegment))
            data = b''.join(buf[:end])  # type: ignore[arg-type]
            self._write(data)
            recs = end - isinstance(buf[0], _Head)
            del buf[:end]
            self.pending_bytes -= len(data)
            self.pending_records -= recs
            self.written += recs
            self.bytes += len(data)
            done += len(data)
        return done

    def _write(self, data: bytes) -> None:
        """Append ``data`` to the current segment whole, or raise leaving
        the segment to cut back to ``_size`` (``_torn``)."""
        self._ensure_fd()
        fd = self._fd
        assert fd is not None
        if self._torn:  # a failed write may have left part of a batch
            os.ftruncate(fd, self._size)
        self._torn = True
        view = memoryview(data)
        while view:
            n = os.write(fd, view)
            view = view[n:]
        if self.fsync:
            os.fsync(fd)
        self._torn = False
        self._size += len(data)

    def _close_fd(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            if self._torn:  # best effort: leave only whole records
                try:
                    os.ftruncate(fd, self._size)
                    self._torn = False
                except OSError:
                    pass  # a torn tail: cut when the log is opened again
            os.close(fd)

    def close(self) -> None:
        """Flush and close.  A flush that fails raises (``OSError``) after
        the file is closed: :attr:`pending_records` were not written."""
        try:
            self.flush()
        finally:
            self._close_fd()

    def __enter__(self) -> TickLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def read_segment(
    path: str | os.PathLike[str], *, last: bool = False
) -> tuple[dict[str, Any], Iterator[TickRecord]]:
    """One segment's header and records.  ``last``: it is the newest
    segment of its log, whose torn tail is tolerated."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as err:
        raise TickLogError(f'{path}: cannot read ({err.strerror or err})') from None
    header, spans, good, why, tail = _scan(path, data)
    # the newest segment may end torn (a writer killed mid-write), even in
    # its header (killed right after creating it: no record in it then)
    if why is not None and not (last and tail):
        raise TickLogError(f'{path}: corrupt segment ({why})')

    def records() -> Iterator[TickRecord]:
        for a, b in spans:
            yield _decode(path, data[a:b], a - _FRAME.size)

    return header, records()


def log_header(directory: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The header of a log directory's newest segment (``None``: empty)."""
    segs = segments(Path(directory))
    for i, seg in enumerate(reversed(segs)):
        header, _ = read_segment(seg, last=i == 0)
        if header:
            return header
    return None


def read_ticks(
    topic: str | None = None,
    start: float | None = None,
    end: float | None = None,
    *,
    backend: str = 'sim',
    data_dir: str | os.PathLike[str] | None = None,
    directory: str | os.PathLike[str] | None = None,
) -> Iterator[TickRecord]:
    """The records of ``topic``'s log (of ``backend``, in the data
    directory; or of the log ``directory``, a topic directory or one
    segment file) with ``start <= time < end``, oldest first.  A corrupt
    segment raises :class:`TickLogError` naming the file."""
    if directory is not None:
        d = Path(directory)
        if d.is_file():
            segs, d = [d], d.parent
        elif d.is_dir():
            segs = segments(d)
        else:
            raise TickLogError(f'{d}: no such tick log')
    else:
        if topic is None:
            raise TickLogError('read_ticks needs a topic or a directory')
        d = topic_dir(topic, backend, data_dir)
        segs = segments(d)
    newest = segments(d)[-1:] if d.is_dir() else []
    lo_day = _day(start) if start is not None and math.isfinite(start) else ''
    hi_day = _day(end) if end is not None and math.isfinite(end) else '~'
    for i, path in enumerate(segs):
        day = path.name.split('-', 1)[0]
        nxt = segs[i + 1].name.split('-', 1)[0] if i + 1 < len(segs) else '~'
        if day > hi_day or nxt < lo_day:
            continue  # wholly outside [start, end)
        header, recs = read_segment(path, last=path in newest)
        if topic is not None and header and header.get('topic') != topic:
            raise TickLogError(
                f'{path}: holds topic {header.get("topic")!r}, not {topic!r}'
            )
        for r in recs:
            if start is not None and r.time < start:
                continue
            if end is not None and r.time >= end:
                continue
            yield r


# --- the recorder: a subscriber of the feed bus -----------------------------


class _Seq(msgspec.Struct):
    seq: int


@dataclass
class _Recorder:
    """A recorder's log and its write failures (what ``samplerd ls``
    shows, see :func:`recorder_info`)."""

    log: TickLog
    #: failed flushes (each retried)
    failures: int = 0
    #: the wall time writes began to fail (``None``: they do not now)
    failing_since: float | None = None
    last_error: str | None = None
    #: the subscriber's ``dropped`` when writes began to fail
    dropped_before: int = 0
    #: failed flushes in a row: the next retry waits 2**n flush intervals
    in_a_row: int = 0
    #: the log's ``written`` when the recorder began
    written0: int = 0


class _NoIPC:
    """The recorder's stand-in for a subscriber's stream (it reads its
    outbox in process; nothing is sent anywhere).  ``recorder``: its log
    and counters."""

    def __init__(self, recorder: _Recorder | None = None) -> None:
        self.recorder = recorder

    async def send(self, msg: Any) -> None:  # pragma: no cover
        raise RuntimeError('the tick recorder has no IPC stream')


def recorder_info(subs: Any) -> dict[str, Any]:
    """The tick log of a topic whose subscribers are ``subs`` (a feed
    bus's), for :class:`~tractor_sampler.TopicInfo`: ``path`` (the segment
    written), ``records`` written, ``pending`` (queued in memory),
    ``dropped`` (quotes that will never be in the log: the recorder fell
    behind, or its writes failed for longer than its outbox holds),
    ``failures`` (failed writes, retried), ``failing_since`` (wall time;
    ``None`` when writes succeed) and ``last_error``; empty when the topic
    is not recorded."""
    for sub in subs:
        rec = getattr(sub.ipc, 'recorder', None)
        if isinstance(sub.ipc, _NoIPC) and rec is not None:
            log = rec.log
            return {
                'path': str(log._path or log.dir),
                'records': log.written - rec.written0,
                'pending': log.pending_records,
                'dropped': sub.stats.dropped,
                'failures': rec.failures,
                'failing_since': rec.failing_since,
                'last_error': rec.last_error,
            }
    return {}


def _flush(rec: _Recorder, topic: str, stats: Any) -> bool:
    """Flush ``rec``'s log: ``False`` when the write failed (counted, said
    once per run of failures, naming the file and the error; said again
    when writes succeed once more)."""
    log_ = rec.log
    try:
        log_.flush()
    except OSError as err:
        rec.failures += 1
        rec.in_a_row += 1
        where = log_._path or log_.dir
        rec.last_error = f'{where}: {err.strerror or err}'
        if rec.failing_since is None:
            rec.failing_since = time.time()
            rec.dropped_before = stats.dropped
            log.error(
                f'{where}: the tick log of {topic} cannot be written '
                f'({err.strerror or err}): retrying with backoff; the feed runs on, '
                f'quotes are held in memory (up to {RECORDER_OUTBOX}, then new ones '
                'dropped, counted in samplerd ls)'
            )
        return False
    if rec.failing_since is not None:
        lost = stats.dropped - rec.dropped_before
        log.warning(
            f'{log_._path or log_.dir}: the tick log of {topic} is written again '
            f'after {rec.in_a_row} failed writes over '
            f'{time.time() - rec.failing_since:.0f} s; {lost} quotes dropped meanwhile'
        )
        rec.failing_since = None
    rec.in_a_row = 0
    return True


async def run_recorder(
    bus: Any,
    topic: str,
    ticklog: TickLog,
    *,
    flush_s: float = FLUSH_S,
    retry_max_s: float = RETRY_MAX_S,
    alive: Any = None,
    task_status: trio.TaskStatus[Any] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Record every quote ``bus`` publishes for ``topic`` into ``ticklog``
    until cancelled (or until ``alive()`` turns false, checked every flush
    interval); flushes at least every ``flush_s`` seconds and on the way
    out, then closes the log.  ``task_status.started(sub)``: the
    subscriber (its ``stats``: ``delivered``, quotes handed to the log,
    and ``dropped``; :func:`recorder_info` has the records written and the
    failures).

    A write that fails (a full disk, EIO) ends nothing: it is counted,
    said once in one line, and retried after ``flush_s``, then twice as
    long each time up to ``retry_max_s``; meanwhile quotes are still
    taken (each stamped as it arrives) and held in memory, up to
    :data:`RECORDER_OUTBOX` records; beyond that the new ones are dropped
    and counted (one gap in the log).  What was held is written, whole and
    in sequence, once the file system writes again."""
    from feedbus import Sub, SubStats
    from tractor_services import DropOldestQueue

    stats = SubStats()
    rec = _Recorder(ticklog, written0=ticklog.written)
    sub = Sub(
        ipc=_NoIPC(rec),  # type: ignore[arg-type]
        send_chan=DropOldestQueue(RECORDER_OUTBOX, stats),
        throttle_cs=trio.CancelScope(),
        stats=stats,
    )
    outbox = sub.send_chan
    # only the sequence number is read out of the bus's encoded quote
    seq_of = msgspec.msgpack.Decoder(_Seq).decode

    def take() -> None:
        now_t = time.time()
        room = RECORDER_OUTBOX - ticklog.pending_records
        for item in outbox.take_all():
            if room <= 0:  # writes fail and this many wait: the new ones go
                stats.dropped += 1
                continue
            room -= 1
            if isinstance(item, (bytes, bytearray)):  # the bus's encoded quote
                ticklog.append_encoded(seq_of(item).seq, now_t, bytes(item))
            else:  # a Quote struct
                ticklog.append(item.seq, now_t, item.fields, item.ticks)
            stats.delivered += 1

    bus.add_subs(topic, {sub})
    reported = 0
    try:
        task_status.started(sub)
        next_flush = trio.current_time() + flush_s
        while True:
            with trio.move_on_at(next_flush):
                await outbox.wait_nonempty()
            take()  # stamped as they arrive, failing or not
            now = trio.current_time()
            was_failing = rec.failing_since is not None
            if now >= next_flush or (
                not was_failing and ticklog.pending_bytes >= FLUSH_BYTES
            ):
                if _flush(rec, topic, stats):
                    next_flush = now + flush_s
                    if was_failing:  # its drops were said with the recovery
                        reported = stats.dropped
                else:
                    wait = flush_s * 2.0 ** min(rec.in_a_row - 1, 30)
                    next_flush = now + min(wait, max(retry_max_s, flush_s))
                if stats.dropped != reported and rec.failing_since is None:
                    log.warning(
                        f'{topic}: the tick recorder fell behind: {stats.dropped - reported} '
                        f'quotes dropped ({stats.dropped} in all)'
                    )
                    reported = stats.dropped
                if alive is not None and not alive():
                    return
    finally:
        bus.remove_subs(topic, (sub,))
        take()  # what is still queued goes in the log too
        outbox.close()
        try:
            ticklog.close()
        except OSError as err:
            stats.dropped += ticklog.pending_records
            rec.failures += 1
            log.error(
                f'{ticklog._path or ticklog.dir}: the tick log of {topic} ends '
                f'with {ticklog.pending_records} quotes not written '
                f'({err.strerror or err})'
            )
