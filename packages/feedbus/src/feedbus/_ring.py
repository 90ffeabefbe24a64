"""
The shared-memory quote ring: how a producer hands quotes to subscribers
on its own host without a message per quote per subscriber.

One ring per producer process (not per topic: file descriptors stay O(1)
in topics), made when its first local subscriber asks for it and unlinked
when its last one leaves (and on every exit path: see *Ownership*).  The
producer writes each published quote into it once, as the msgpack bytes
the bus encodes anyway; every local subscriber reads it on its own side,
at its own pace, and throttles (frames) there.

Layout (one POSIX shared-memory segment; all words little-endian int64)
--------------------------------------------------------------------------
- header, ``HEADER`` bytes: magic, version, data capacity ``cap``,
  ``head`` (bytes committed, monotonic), ``reserve`` (bytes the writer is
  about to have written, monotonic, ``>= head``), ``count`` (records
  committed), ``closed`` (1 once the producer closed it), the producer's
  pid;
- reader slots, ``SLOTS`` of ``SLOT_WORDS`` words: each local subscriber
  writes its counters into the slot the producer assigned it (delivered,
  gaps, dropped, its position), so the producer's subscriber listing shows
  them;
- data, ``cap`` bytes: records ``<Q gseq><I topic id><I length><payload>``
  padded to 8 bytes; ``gseq`` counts records from 1; ``topic id`` is the
  CRC-32 of the topic's UTF-8 name, so a reader skips other topics without
  decoding them (and checks the decoded topic, so a CRC collision costs
  a decode, never a wrong delivery).  A record never wraps: the writer
  marks the rest of the data area with ``gseq == 0`` and starts again at
  offset 0.

Writing and reading
-------------------
Positions are monotonic byte counts (``offset = pos % cap``).  To write
``L`` bytes at ``head`` the writer first moves ``reserve`` to
``head + L``, writes the record, then moves ``head``: a reader only reads
below ``head``, and a record it read at ``p`` is intact iff
``reserve - cap <= p`` still holds after it was read (otherwise the writer
may have overwritten it while it was being read).  A reader checks that
once per batch, after copying the batch's payloads out (before decoding
them), and discards what failed it.  Payloads are copied out of the
mapping as bytes, never sliced as memoryviews: no view of the segment
outlives the read that made it, so closing a reader's attachment always
unmaps it (a subscriber whose producers restart keeps no dead rings
mapped).  Stores of
aligned words are single machine stores and x86 keeps stores in program
order, so no lock is needed on either side; the writer never waits for
anyone.

Gaps
----
A reader that falls more than ``cap`` bytes behind has lost records it
will never see: it jumps to the newest position, counts one gap
(``SubStats.gaps``) and the quotes it lost (``SubStats.dropped``: from the
records skipped, and per topic from the quotes' own sequence numbers), and
logs one warning per gap.  The others are unaffected: nobody waits for a
slow reader.

Wake-up
-------
No syscall per quote per subscriber: ``head`` is the counter readers poll.
In each process, one reader at a time polls a ring (the others wait on a
``trio.Event`` it sets when ``head`` moves): it first yields for
``POLL_SPIN`` scheduler passes, then sleeps ``POLL_MIN_S`` at a time while
records came within ``POLL_HOT_S``, and only then backs off to
``POLL_MAX_S``; a reader that found data reads everything committed at
once, in one pass (one decode call for the batch).  When several readers
of one process read a ring, each record is decoded once for all of them
(the attachment keeps the newest :data:`DECODED_KEPT` decoded quotes); a
process's only reader keeps none (that would be tens of MB of quotes
nobody else reads).  So a busy ring costs
no sleep at all, a flowing one about ``1 / POLL_MIN_S`` wake-ups per second
per subscribing *process* (a quote waits about ``POLL_MIN_S``), an idle
one ``1 / POLL_MAX_S``, and the first quote after a quiet spell waits at
most ``POLL_MAX_S``.  (A futex would wake sleepers without polling, but needs a
thread per sleeping reader and the kernel's ABI through ctypes; eventfds
cannot be shared with an unrelated process.)

Liveness
--------
While idle, the polling reader checks every ``LIVE_CHECK_S`` that the
ring is not marked closed and that its file in ``/dev/shm`` is still the
one it attached (the resource tracker unlinks a killed producer's ring),
so a reader never polls a dead ring for ever: it raises
:class:`RingGone`.

Ownership
---------
The producer creates the segment and stays registered with the stdlib
resource tracker, which unlinks it if the producer dies by a signal
(SIGKILL included); a normal exit, a cancel and SIGTERM (which tractor
daemons turn into a cancel) unlink it in the ring's ``close()`` or the
``atexit`` hook.  Readers attach without tracking (they unregister from
the tracker on Python < 3.13, or the tracker would unlink the ring when
*they* exit) and never unlink; the segment helpers are the ones
tractor-sampler's buffers use (``tractor_services._shm``).  Segment names are
``<prefix><pid>_r<hex>``, the prefix from ``$FEEDBUS_SHM_PREFIX`` (default
``feedbus_``), so a test session's leak check finds its own.

"""

from __future__ import annotations

import os
import struct
import zlib
from collections.abc import Callable
from typing import Any

import msgspec
import trio

from tractor_services import compat
from tractor_services._shm import (
    SHM_DIR,
    attach_segment,
    close_fd,
    close_segment,
    create_segment,
    new_segment_name,
    unlink_segment,
)

log = compat.get_logger('ring', 'feedbus')

#: segment name prefix (recognisable in ``/dev/shm``); the environment
#: variable overrides it (test sessions give themselves their own)
KEY_PREFIX = 'feedbus_'
KEY_PREFIX_ENV = 'FEEDBUS_SHM_PREFIX'
#: data bytes of a ring (the header and reader slots come on top)
RING_BYTES: int = 8 << 20
#: readers (local subscribers) one ring serves; more get the TCP path
SLOTS: int = 256
SLOT_WORDS = 8
#: a reader's polling backoff, seconds (trio's timers wake in whole
#: milliseconds: the shortest sleep is one)
POLL_MIN_S: float = 0.001
POLL_MAX_S: float = 0.004
#: scheduler passes (``trio.lowlevel.checkpoint``) a reader that found the
#: ring empty makes before it sleeps: they catch a burst still being
#: written at no timer's cost
POLL_SPIN: int = 8
#: seconds after the last record found during which a polling reader stays
#: at the shortest sleep (a flowing ring is read within ``POLL_MIN_S``);
#: only after that does its sleep double up to ``POLL_MAX_S``
POLL_HOT_S: float = 0.05
#: seconds between liveness checks of an idle ring
LIVE_CHECK_S: float = 0.25
#: records one read takes at most before it lets other tasks run
MAX_BATCH = 1024
#: decoded quotes a subscribing process keeps for its other readers
DECODED_KEPT = 8192

_MAGIC = 0x666565646275_0001  # "feedbu" + 1
_VERSION = 1
HEADER = 64
(W_MAGIC, W_VERSION, W_CAP, W_HEAD, W_RESERVE, W_COUNT, W_CLOSED, W_PID) = range(8)
# slot words
S_OWNER, S_DELIVERED, S_GAPS, S_DROPPED, S_POS, S_MESSAGES, S_CONFLATED = range(7)
SLOTS_AT = HEADER
DATA_AT = HEADER + SLOTS * SLOT_WORDS * 8
REC = struct.Struct('<QII')
_Q = struct.Struct('<q')
_QQ = struct.Struct('<qq')
_WRAP = b'\0' * 8


def _array_head(n: int) -> bytes:
    """The msgpack header of an array of ``n`` items."""
    if n < 16:
        return bytes((0x90 | n,))
    if n < 1 << 16:
        return b'\xdc' + n.to_bytes(2, 'big')
    return b'\xdd' + n.to_bytes(4, 'big')


class RingGone(Exception):
    """The producer's ring is closed or gone (its process exited?)."""


def topic_id(topic: str) -> int:
    """A topic's id in ring records: the CRC-32 of its name."""
    return zlib.crc32(topic.encode())


def _new_name() -> str:
    return new_segment_name(KEY_PREFIX_ENV, KEY_PREFIX, 'r')


class RingToken(msgspec.Struct, frozen=True, kw_only=True):
    """What a local subscriber needs to read the ring: its name, data
    size, where to start reading, and its reader slot."""

    name: str
    cap: int
    start: int
    start_count: int
    slot: int


class RingWriter:
    """The producer's side: one segment, written by :meth:`write`."""

    def __init__(self, nbytes: int = RING_BYTES) -> None:
        if nbytes < 4096 or nbytes % 8:
            raise ValueError(f'ring size {nbytes!r} must be a multiple of 8, >= 4096')
        self.name = _new_name()
        self.cap = nbytes
        seg = create_segment(self.name, DATA_AT + nbytes)
        close_fd(seg)  # the mapping keeps a descriptor of its own
        self._seg = seg
        assert seg.buf is not None
        self.buf: memoryview = seg.buf
        buf = self.buf
        for w, v in (
            (W_MAGIC, _MAGIC),
            (W_VERSION, _VERSION),
            (W_CAP, nbytes),
            (W_PID, os.getpid()),
        ):
            _Q.pack_into(buf, w * 8, v)
        self.head = 0
        self.count = 0
        #: records too big for this ring (never written: readers see the
        #: topic's sequence number jump, a gap)
        self.oversize = 0
        self._slots: set[int] = set()
        self.closed = False

    # --- reader slots -------------------------------------------------------------

    def claim_slot(self) -> int | None:
        """A free reader slot (zeroed), or ``None`` when all are taken."""
        for i in range(SLOTS):
            if i not in self._slots:
                self._slots.add(i)
                at = SLOTS_AT + i * SLOT_WORDS * 8
                self.buf[at : at + SLOT_WORDS * 8] = bytes(SLOT_WORDS * 8)
                return i
        return None

    def free_slot(self, i: int) -> None:
        self._slots.discard(i)

    def slot(self, i: int) -> tuple[int, ...]:
        """A reader's counters as it last wrote them."""
        return struct.unpack_from(
            f'<{SLOT_WORDS}q', self.buf, SLOTS_AT + i * SLOT_WORDS * 8
        )

    def token(self, slot: int) -> RingToken:
        return RingToken(
            name=self.name,
            cap=self.cap,
            start=self.head,
            start_count=self.count,
            slot=slot,
        )

    # --- writing --------------------------------------------------------------------

    def write(self, tid: int, payload: bytes) -> None:
        """Append one record (never blocks, never waits for a reader)."""
        n = len(payload)
        size = (REC.size + n + 7) & ~7
        cap = self.cap
        if size > cap >> 2:
            self.oversize += 1
            if self.oversize == 1:
                log.warning(
                    f'a quote of {n} bytes does not fit the quote ring ({cap} bytes): '
                    'local subscribers see it as a gap'
                )
            return
        buf = self.buf
        pos = self.head
        off = pos % cap
        room = cap - off
        if room < size:
            buf[DATA_AT + off : DATA_AT + off + 8] = _WRAP
            pos += room
            off = 0
        end = pos + size
        _Q.pack_into(buf, W_RESERVE * 8, end)
        at = DATA_AT + off
        count = self.count + 1
        REC.pack_into(buf, at, count, tid, n)
        buf[at + 16 : at + 16 + n] = payload
        self.count = count
        self.head = end
        _QQ.pack_into(buf, W_HEAD * 8, end, count)

    def close(self) -> None:
        """Mark the ring closed (readers stop) and unlink it."""
        if self.closed:
            return
        self.closed = True
        _Q.pack_into(self.buf, W_CLOSED * 8, 1)
        unlink_segment(self._seg)
        _unmap(self._seg)


# --- the subscriber's side ---------------------------------------------------------


def _unmap(seg: Any) -> None:
    """Unmap a ring now.  Nothing of this module keeps a view of it past
    one call (payloads are copied out as bytes), so this cannot fail; if
    it ever did, the mapping would stay until its last view went, and we
    say so rather than keep it silently."""
    try:
        close_segment(seg, unmap=True)
    except BufferError:  # pragma: no cover - see above
        log.warning(
            f'the quote ring {seg.name!r} stays mapped in this process: '
            'a view of it is still in use'
        )


class _Attachment:
    """One process's mapping of one ring, shared by its readers, and the
    one poller among them (see *Wake-up*)."""

    def __init__(self, name: str, cap: int) -> None:
        try:
            seg = attach_segment(name)
        except FileNotFoundError:
            raise RingGone(f'the quote ring {name!r} is gone') from None
        self.name = name
        self.seg = seg
        assert seg.buf is not None
        #: for word loads and stores (``struct`` takes no lasting view)
        self.buf: memoryview = seg.buf
        #: for copying payloads out: slicing the ``mmap`` makes ``bytes``,
        #: a memoryview slice would keep the mapping exported
        self.mm = seg._mmap  # type: ignore[attr-defined]
        magic, _version, seg_cap = struct.unpack_from('<3q', self.buf, 0)
        if magic != _MAGIC or seg_cap != cap:
            _unmap(seg)
            raise RingGone(f'{name!r} is not the quote ring it was said to be')
        self.cap = cap
        self.ino = self._ino()
        close_fd(seg)  # one descriptor (the mapping's) per process and ring
        self.users = 0
        # quotes decoded by this process's readers, by record number: each
        # record is decoded once per process, however many feeds read it
        self.decoded: dict[int, Any] = {}
        self.polling = False
        self.moved = trio.Event()
        self.dead: str | None = None
        #: when a reader of this process last found records (trio time)
        self.seen_at = -1e9

    def _ino(self) -> int | None:
        if not SHM_DIR.is_dir():
            return None
        try:
            return os.stat(SHM_DIR / self.name).st_ino
        except FileNotFoundError:
            return -1

    def head(self) -> int:
        return _Q.unpack_from(self.buf, W_HEAD * 8)[0]

    def remember(self, gseqs: list[int], msgs: list[Any]) -> None:
        """Keep quotes decoded from records found intact, by record number,
        for this process's other readers (at least the newest
        :data:`DECODED_KEPT`: past twice that, the older are forgotten at
        once, so the cost stays O(1) per quote); none while there is no
        other reader."""
        if self.users < 2:
            return
        decoded = self.decoded
        decoded.update(zip(gseqs, msgs, strict=False))
        if len(decoded) > 2 * DECODED_KEPT:
            cut = max(decoded) - DECODED_KEPT
            self.decoded = {k: v for k, v in decoded.items() if k > cut}

    def check_alive(self) -> None:
        if self.dead is None:
            if _Q.unpack_from(self.buf, W_CLOSED * 8)[0]:
                self.dead = 'the producer closed its quote ring'
            elif self.ino is not None and self._ino() != self.ino:
                self.dead = "the producer's quote ring is gone (its process exited?)"
        if self.dead is not None:
            raise RingGone(self.dead)

    async def wait_past(self, pos: int) -> None:
        """Return once ``head`` is past ``pos``; :class:`RingGone` if the
        ring closes or goes away meanwhile."""
        if self.head() != pos:
            self.seen_at = trio.current_time()
            return
        while self.head() == pos:
            self.check_alive()
            if self.polling:
                await self.moved.wait()
                continue
            self.polling = True
            try:
                await self._poll(pos)
            finally:
                self.polling = False
                moved, self.moved = self.moved, trio.Event()
                moved.set()

    async def _poll(self, pos: int) -> None:
        """Spin a few scheduler passes, then sleep: at the shortest sleep
        while records came within :data:`POLL_HOT_S`, doubling up to
        :data:`POLL_MAX_S` after that (see *Wake-up*)."""
        head = self.head
        checkpoint = trio.lowlevel.checkpoint
        for _ in range(POLL_SPIN):
            await checkpoint()
            if head() != pos:
                self.seen_at = trio.current_time()
                return
        now = trio.current_time
        checked = now()
        hot_until = self.seen_at + POLL_HOT_S
        delay = POLL_MIN_S
        while head() == pos:
            await trio.sleep(delay)
            t = now()
            if t > hot_until:
                delay = min(delay * 2, POLL_MAX_S)
            if t - checked >= LIVE_CHECK_S:
                self.check_alive()
                checked = t
        self.seen_at = now()

    def close(self) -> None:
        self.decoded = {}
        del self.buf, self.mm
        _unmap(self.seg)


_attached: dict[str, _Attachment] = {}


class RingReader:
    """One local subscriber's reader of a ring: its own position, topic
    filter, counters, and pause state."""

    def __init__(
        self,
        token: RingToken,
        topics: set[str],
        decode: Callable[[Any], Any],
        decode_many: Callable[[Any], list[Any]] | None = None,
    ) -> None:
        att = _attached.get(token.name)
        if att is None:
            att = _attached[token.name] = _Attachment(token.name, token.cap)
        att.users += 1
        self._att = att
        self.token = token
        self.pos = token.start
        self.next_gseq = token.start_count + 1
        self.topics: set[str] = set()
        self.tids: set[int] = set()
        self.set_topics(topics)
        self._decode = decode
        #: decodes a msgpack array of the records' payloads in one call
        #: (``Decoder(list[T]).decode``); else each record is decoded alone
        self._decode_many = decode_many
        self._last_seq: dict[str, int] = {}
        self.paused = False
        self._resumed = trio.Event()
        # counters (also written into the reader's slot, for the producer)
        self.delivered = 0
        self.gaps = 0
        self.dropped = 0
        self.messages = 0
        self.conflated = 0
        self._slot_at = SLOTS_AT + token.slot * SLOT_WORDS * 8

    def set_topics(self, topics: set[str]) -> None:
        self.topics = set(topics)
        self.tids = {topic_id(t) for t in self.topics}

    def pause(self) -> None:
        self.paused = True
        self._resumed = trio.Event()

    def resume(self) -> None:
        """Deliver again from the newest record (what came during the
        pause is not delivered, as on the TCP path)."""
        if self.paused:
            self.paused = False
            self.pos = self._att.head()
            self.next_gseq = _Q.unpack_from(self._att.buf, W_COUNT * 8)[0] + 1
            self._last_seq.clear()
            self._resumed.set()

    def _gap(self, lost: int, why: str) -> None:
        """Count and log one gap; the quotes of our topics it cost are
        counted in ``dropped`` as the next quote of each topic shows them
        (by its sequence number)."""
        self.gaps += 1
        log.warning(
            f'a local subscriber fell behind the quote ring ({why}): '
            f'{lost} record(s) of all topics lost, skipped to the newest '
            f'(gap {self.gaps}; the ring holds {self.token.cap} bytes)'
        )

    def _jump(self) -> None:
        """Skip to the newest record after falling more than the ring behind."""
        buf = self._att.buf
        head, count = _QQ.unpack_from(buf, W_HEAD * 8)
        lost = count - self.next_gseq + 1
        self._gap(lost, f'{head - self.pos} bytes behind')
        self.pos = head
        self.next_gseq = count + 1

    def lag(self) -> int:
        """Bytes committed that this reader has not read yet."""
        return self._att.head() - self.pos

    def publish_counters(self) -> None:
        """Write this reader's counters into its slot (for the producer)."""
        struct.pack_into(
            '<6q',
            self._att.buf,
            self._slot_at + 8,
            self.delivered,
            self.gaps,
            self.dropped,
            self.pos,
            self.messages,
            self.conflated,
        )

    async def read(self, limit: int = MAX_BATCH) -> list[Any]:
        """The next quotes of this reader's topics, in order: everything
        committed since the last read (at most ``limit`` records), waiting
        for at least one record.  :class:`RingGone` once the ring is closed
        or gone."""
        att = self._att
        # always a checkpoint: a reader that never waits (a busy ring) must
        # still let its consumers run
        await trio.lowlevel.checkpoint()
        while True:
            if self.paused:
                await self._resumed.wait()
                continue
            await att.wait_past(self.pos)
            if self.paused:
                continue
            out = self._take(limit)
            if out:
                return out

    def _take(self, limit: int = MAX_BATCH) -> list[Any]:
        """Everything committed since the last read (at most ``limit``
        records), in one pass: the record headers are walked (other
        topics skipped by their id, undecoded), the payloads of ours
        copied out at once, checked intact, then decoded in one call (one
        msgpack array of the concatenated payloads, as the stream path's
        batches are) unless another reader of this process decoded them
        already."""
        att = self._att
        buf = att.buf
        mm = att.mm
        cap = self.token.cap
        head = _Q.unpack_from(buf, W_HEAD * 8)[0]
        pos = self.pos
        if head - pos > cap:
            self._jump()
            return []
        unpack = REC.unpack_from
        tids = self.tids
        gseq = self.next_gseq
        decoded = att.decoded
        want: list[int] = []  # record numbers of our topics' records
        new: list[int] = []  # those nobody in this process decoded yet
        spans: list[bytes] = []  # their payloads (copies, no views)
        bad = False
        end_at = DATA_AT + cap
        at = DATA_AT + pos % cap
        stop = gseq + limit
        while pos < head and gseq < stop:
            if at + 16 > end_at:  # no room for a header: the writer wrapped
                pos += end_at - at
                at = DATA_AT
                continue
            rseq, tid, length = unpack(buf, at)
            if rseq != gseq:
                if rseq == 0:  # the writer wrapped here
                    pos += end_at - at
                    at = DATA_AT
                    continue
                bad = True  # overwritten under us: the check below decides
                break
            if at + 16 + length > end_at:  # a torn header: nothing is copied
                bad = True
                break
            if tid in tids:
                want.append(rseq)
                if rseq not in decoded:
                    new.append(rseq)
                    spans.append(mm[at + 16 : at + 16 + length])
            size = (23 + length) & ~7  # REC.size + length, padded to 8
            pos += size
            at += size
            gseq += 1
        blob = _array_head(len(spans)) + b''.join(spans) if spans else b''
        del spans
        # what the writer may have overwritten while we copied it
        frontier = _Q.unpack_from(buf, W_RESERVE * 8)[0] - cap
        if frontier > self.pos or bad:
            self._jump()  # what we read may be torn: none of it counts
            return []
        msgs: list[Any] = []
        if new:
            try:
                msgs = self._decode_blob(blob)
            except (msgspec.DecodeError, msgspec.ValidationError):
                self._jump()  # not what was written: none of it counts
                return []
        self.pos = pos
        self.next_gseq = gseq
        if not want:
            return []
        if len(new) == len(want):
            got = msgs
            if new:
                att.remember(new, msgs)
        else:
            # the others from the quotes kept as they were when we looked
            # (remembering may forget the oldest of them)
            fresh = dict(zip(new, msgs, strict=True))
            got = [fresh[g] if g in fresh else decoded[g] for g in want]
            if new:
                att.remember(new, msgs)
        return self._count(got)

    def _decode_blob(self, blob: bytes) -> list[Any]:
        """Payloads behind a msgpack array header, decoded."""
        if self._decode_many is not None:
            return self._decode_many(blob)
        # one at a time (a reader made without ``decode_many``)
        decode = self._decode
        items = msgspec.msgpack.decode(blob, type=list[msgspec.Raw])
        return [decode(raw) for raw in items]

    def _count(self, got: list[Any]) -> list[Any]:
        """Keep quotes of our topics (a CRC collision's records are not),
        and count the quotes of our topics that never reached us (lost in
        a gap, or too big for the ring): exact, per topic, from their
        sequence numbers."""
        topics = self.topics
        last_seq = self._last_seq
        if len(topics) == 1:
            (t,) = topics
            got = [m for m in got if m.topic == t]
            if not got:
                return got
            # seqs increase: what is missing between the previous quote
            # (or the first of these) and the last of these
            first, last = got[0].seq, got[-1].seq
            prev = last_seq.get(t)
            if prev is None:
                missing = last - first - (len(got) - 1)
            else:
                missing = last - prev - len(got)
            if missing > 0:
                self.dropped += missing
            last_seq[t] = last
            return got
        out = []
        for msg in got:
            topic = msg.topic
            if topic not in topics:
                continue
            prev = last_seq.get(topic)
            if prev is not None and msg.seq > prev + 1:
                self.dropped += msg.seq - prev - 1
            last_seq[topic] = msg.seq
            out.append(msg)
        return out

    def close(self) -> None:
        att = self._att
        att.users -= 1
        if att.users == 1:
            att.decoded = {}  # the reader left has nobody to share with
        elif att.users == 0:
            if _attached.get(att.name) is att:
                del _attached[att.name]
            att.close()
