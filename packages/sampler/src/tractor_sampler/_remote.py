"""
Bars for a client on another host: a feed daemon's buffers, streamed.

A client that shares ``/dev/shm`` with the feed daemon (the same
:func:`tractor_services.host_id`) attaches its buffers read-only.  A client
on another host cannot: it gets the bars by stream instead, into a
:class:`LocalBuffer` per topic and period, an in-process buffer with the
shm buffer's read API (``array``, ``rows``, ``window``, ``first``,
``last``, ``last_row``, ``len()``, ``token``), so client code does not
change: ``MarketFeed.buffer(topic, period)`` returns it.

The feed daemon's side is :func:`stream_bars`, a context endpoint beside
``attach_feed``:

- ``started()`` carries a snapshot per topic and period: the last
  ``rows`` rows of the buffer (:data:`DEFAULT_SNAPSHOT_ROWS`), the
  buffer's token (its dtype, where its bars lie, where live bars begin)
  and its window;
- then, at most ``rate`` times a second (:data:`DEFAULT_RATE`, 20) and
  only on change, one message with every buffer that changed: the rows
  from the earliest changed one to the end of the window.  That covers the
  open row's updates, the rows samplerd's steps append (a closed row is
  sent as it closes, and again whenever the feed daemon changes it
  afterwards: a late trade's correction, trades held for the step), so
  every closed row ends as the feed daemon's own, row for row.  Changes
  are found by comparing the last :data:`TAIL_ROWS` rows with what was
  sent every tick, and every :data:`SWEEP_S` seconds the last ``rows``
  rows too, by a checksum per row;
- a heartbeat when nothing else was sent for :data:`HEARTBEAT_S` (1 s).

The client's side, :func:`open_remote_bars`, applies each message to its
buffers as it arrives (its receive loop never blocks, so nothing is
dropped) and raises :class:`tractor_services.PeerGone` when nothing came
for :data:`SILENCE_S` (3 s: the daemon's host went silent, or the link
was cut): the block is cancelled and every read of the buffers raises
the same error.

Whether a feed goes this way is decided by host identity, not by address
(:func:`remote_bars_wanted`): the feed daemon reports its ``host_id`` in
``attach_feed``'s ``started()``; ``remote_bars=True`` (or
``$TRACTOR_SAMPLER_REMOTE_BARS=1``) forces the stream on one host, which
is how the tests exercise it.

"""

from __future__ import annotations

import math
import os
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager as acm
from typing import Any

import numpy as np
import trio

from tractor_services import PeerDisconnected, PeerGone, compat, host_id

from .shm import ShmArray, ShmToken

log = compat.get_logger('remote', 'tractor_sampler')

#: rows per topic and period in the snapshot a client gets at subscribe time
DEFAULT_SNAPSHOT_ROWS: int = 1024
#: at most this many update messages a second (one per tick with changes)
DEFAULT_RATE: float = 20.0
MAX_RATE: float = 100.0
#: the endpoint sends a heartbeat after this long without any message
HEARTBEAT_S: float = 1.0
#: a client raises PeerGone after this long without any message
SILENCE_S: float = 3.0
#: a silence watch that wakes this much past its deadline (this process
#: stalled) gives the messages that arrived meanwhile this long to be read
STALL_GRACE_S: float = 0.5
#: rows at the end of each buffer compared with what was sent, every tick
TAIL_ROWS: int = 64
#: every this often all the rows a client holds (up to its snapshot size)
#: are compared with what was sent, by a checksum per row
SWEEP_S: float = 5.0
#: force (``1``) or forbid (``0``) bars by stream, whatever the host ids say
REMOTE_BARS_ENV = 'TRACTOR_SAMPLER_REMOTE_BARS'


def check_rows(rows: Any) -> int:
    """A snapshot size: an int >= 1."""
    if not isinstance(rows, int) or isinstance(rows, bool) or rows < 1:
        raise ValueError(
            f'remote_rows={rows!r} must be an int >= 1 (rows per snapshot)'
        )
    return rows


def _env_choice() -> bool | None:
    env = os.environ.get(REMOTE_BARS_ENV, '').strip()
    if not env:
        return None
    if env not in ('0', '1'):
        raise ValueError(f'${REMOTE_BARS_ENV}={env!r} must be 0 or 1')
    return env == '1'


def check_remote(remote_bars: Any, remote_rows: Any) -> None:
    """``open_market_feed``'s ``remote_bars`` / ``remote_rows`` and
    :data:`REMOTE_BARS_ENV`, checked before anything starts."""
    if remote_bars not in (None, True, False):
        raise ValueError(f'remote_bars={remote_bars!r} must be None, True or False')
    check_rows(remote_rows)
    _env_choice()


def remote_bars_wanted(asked: bool | None, started: dict[str, Any]) -> bool:
    """Does a client take its bars by stream?  ``asked`` if given, else
    :data:`REMOTE_BARS_ENV` if set, else when the feed daemon's host id
    (in ``attach_feed``'s ``started`` value) is not ours.  A daemon that
    reports none is taken to share our memory (as before host ids)."""
    if asked is not None:
        return bool(asked)
    env = _env_choice()
    if env is not None:
        return env
    theirs = started.get('host_id')
    return theirs is not None and theirs != host_id()


# --- the client's buffer -----------------------------------------------------


class LocalBuffer:
    """A copy of one of a feed daemon's buffers, kept in this process from
    its stream: the read API of :class:`~tractor_sampler.shm.ShmArray`
    (read-only).  It holds the snapshot's rows and every row after; when
    its storage (twice the snapshot) fills, the oldest half goes, so
    ``first`` moves on (positions are this buffer's own; the rows' ``index``
    field is the feed daemon's).  ``token`` is the daemon's buffer's token:
    its dtype, where its bars lie, where live bars begin (not attachable
    here).  Once the stream is gone (:class:`~tractor_services.PeerGone`)
    every read raises that error; after the feed is left, ``ValueError``."""

    def __init__(self, topic: str, period_s: float, token: ShmToken, capacity: int):
        self.topic = topic
        self.period_s = period_s
        self._token = token
        self._rows = np.zeros(capacity, dtype=token.dtype)
        self._window = np.zeros(2, dtype=np.int64)
        self._offset = 0  # the daemon's row position of our row 0
        self._error: BaseException | None = None
        self._closed = False
        #: update messages applied (the snapshot not counted)
        self.updates = 0

    # -- identity
    @property
    def token(self) -> ShmToken:
        return self._token

    @property
    def name(self) -> str:
        return f'remote:{self.topic}@{self.period_s:g}s'

    @property
    def dtype(self) -> np.dtype:
        return self._rows.dtype

    @property
    def size(self) -> int:
        return len(self._rows)

    @property
    def readonly(self) -> bool:
        return True

    @property
    def is_creator(self) -> bool:
        return False

    @property
    def is_remote(self) -> bool:
        return True

    @property
    def closed(self) -> bool:
        return self._closed

    # -- the window
    def _check(self) -> None:
        if self._error is not None:
            raise self._error
        if self._closed:
            raise ValueError(f'buffer {self.name!r} is closed (its feed was left)')

    def _bounds(self) -> tuple[int, int]:
        self._check()
        first, last = self._window.tolist()
        return first, last

    @property
    def first(self) -> int:
        return self._bounds()[0]

    @property
    def last(self) -> int:
        """One past the last valid row."""
        return self._bounds()[1]

    def __len__(self) -> int:
        first, last = self._bounds()
        return last - first

    @property
    def array(self) -> np.ndarray:
        """The valid rows (a read-only view)."""
        first, last = self._bounds()
        view = self._rows[first:last]
        view.flags.writeable = False
        return view

    @property
    def rows(self) -> np.ndarray:
        """All ``size`` rows of the storage (read-only; rows outside the
        window are unspecified)."""
        self._check()
        view = self._rows[:]
        view.flags.writeable = False
        return view

    @property
    def window(self) -> np.ndarray:
        """The ``(first, last)`` pair (a read-only ``(2,)`` int64 view)."""
        self._check()
        view = self._window[:]
        view.flags.writeable = False
        return view

    @property
    def last_row(self) -> np.void:
        first, last = self._bounds()
        if last <= first:
            raise IndexError(f'buffer {self.name!r} is empty')
        return self._rows[last - 1]

    def push(self, rows: Any, prepend: bool = False) -> int:
        self._check()
        raise PermissionError(
            f"buffer {self.name!r} is a read-only copy of a feed daemon's: cannot write"
        )

    def close(self) -> None:
        self._closed = True

    def __repr__(self) -> str:
        state = 'gone' if self._error else 'closed' if self._closed else 'live'
        return f'<LocalBuffer {self.name} {state} rows={self._window.tolist()}>'

    # -- fed by the stream
    def _gone(self, err: BaseException) -> None:
        if self._error is None:
            self._error = err

    def _load(self, first: int, lo: int, last: int, data: bytes) -> None:
        """The snapshot: the daemon's rows ``[lo, last)`` (its window
        starts at ``first``)."""
        rows = np.frombuffer(data, dtype=self.dtype)
        n = last - lo
        if len(rows) != n or n > self.size:
            raise ValueError(
                f'{self.name}: a snapshot of {len(rows)} rows for [{lo}, {last})'
            )
        self._offset = lo
        self._rows[:n] = rows
        self._window[:] = (0, n)

    def _apply(self, lo: int, last: int, data: bytes) -> None:
        """An update: the daemon's rows ``[lo, last)``, the end of its
        window.  Rows before ``lo`` are as we have them."""
        rows = np.frombuffer(data, dtype=self.dtype)
        if len(rows) != last - lo:
            raise ValueError(f'{self.name}: {len(rows)} rows for [{lo}, {last})')
        off = self._offset
        have_first, have_last = self._window.tolist()
        if lo > have_last + off:
            raise ValueError(
                f'{self.name}: rows from {lo} but we end at {have_last + off}: a gap'
            )
        if last - off > self.size:  # full: keep the newest half
            keep_from = max(have_first + off, last - self.size // 2)
            if keep_from < lo:  # rows we have that the update does not carry
                moved = self._rows[keep_from - off : lo - off].copy()
                self._rows[: len(moved)] = moved
            self._offset = off = keep_from
            have_first = 0
        start = max(lo, have_first + off)
        if start < last:
            self._rows[start - off : last - off] = rows[start - lo :]
        self._window[:] = (have_first, last - off)
        self.updates += 1


# --- the feed daemon's side ----------------------------------------------------


_WEIGHTS: dict[int, np.ndarray] = {}


def _row_sums(rows: np.ndarray) -> np.ndarray:
    """A 64-bit checksum per row (its bytes times fixed odd weights,
    summed): any change of one byte changes it, a change of several
    almost surely.  8 bytes a row to remember what a client holds."""
    size = rows.dtype.itemsize
    w = _WEIGHTS.get(size)
    if w is None:
        rng = np.random.default_rng(0x7EA5)
        w = _WEIGHTS[size] = rng.integers(1, 2**62, size=size, dtype=np.uint64) | 1
    b = np.ascontiguousarray(rows).view(np.uint8).reshape(len(rows), size)
    return (b.astype(np.uint64) * w).sum(axis=1, dtype=np.uint64)


class _Tail:
    """What one subscription has sent of one buffer, to send only what
    changed: its window end, a copy of its last :data:`TAIL_ROWS` rows
    (compared every tick) and a checksum of each row the client holds, up
    to its snapshot size (compared every :data:`SWEEP_S`)."""

    def __init__(
        self, topic: Any, period: float, shm: ShmArray, rows: int = TAIL_ROWS
    ) -> None:
        self.topic = topic
        self.name = topic.name
        self.period = period
        self.shm = shm
        self.rows = max(rows, TAIL_ROWS)
        self.void = np.dtype((np.void, shm.dtype.itemsize))
        self.last = 0
        self.base = 0
        self.copy = np.zeros(0, dtype=shm.dtype)
        self.sbase = 0
        self.sums = np.zeros(0, dtype=np.uint64)

    def snapshot(self, rows: int) -> dict[str, Any]:
        first, last = self.shm.window.tolist()
        lo = max(first, last - rows)
        self._keep(first, last, lo)
        return {
            'token': self.shm.token.to_msg(),
            'first': first,
            'lo': lo,
            'last': last,
            'rows': self.shm.rows[lo:last].tobytes(),
        }

    def _keep(self, first: int, last: int, sent: int) -> None:
        """Rows ``[sent, last)`` went out: remember them."""
        rows = self.shm.rows
        self.base = max(first, last - TAIL_ROWS)
        self.copy = rows[self.base : last].copy()
        sbase = max(first, last - self.rows)
        sums = np.empty(last - sbase, dtype=np.uint64)
        kept = max(sbase, min(sent, self.last))
        if sbase < self.sbase:  # cannot happen (windows only grow): redo
            kept = sbase
        if kept > sbase:
            sums[: kept - sbase] = self.sums[sbase - self.sbase : kept - self.sbase]
        sums[kept - sbase :] = _row_sums(rows[kept:last])
        self.sbase, self.sums = sbase, sums
        self.last = last

    def poll(self, full: bool, sweep: bool = False) -> list[Any] | None:
        """``[period, lo, last, bytes]`` of what changed since the last
        poll, or ``None``.  Without ``full`` a window that did not move and
        an open row that did not change are taken as no change; with
        ``sweep`` every row the client holds is checked (by checksum)."""
        first, last = self.shm.window.tolist()
        rows = self.shm.rows
        if last <= first:
            return None
        if not (full or sweep) and last == self.last and len(self.copy):
            if rows[last - 1 : last].tobytes() == self.copy[-1:].tobytes():
                return None
        lo = None
        r0, r1 = max(first, self.base), min(self.last, last)
        if r0 < r1:
            old = self.copy[r0 - self.base : r1 - self.base].view(self.void)
            new = rows[r0:r1].view(self.void)
            changed = np.flatnonzero(old != new)
            if len(changed):
                lo = r0 + int(changed[0])
        if sweep:
            r0 = max(first, self.sbase)
            r1 = min(self.last, last, self.base if lo is None else lo)
            if r0 < r1:
                sums = self.sums[r0 - self.sbase : r1 - self.sbase]
                changed = np.flatnonzero(sums != _row_sums(rows[r0:r1]))
                if len(changed):
                    lo = r0 + int(changed[0])
        if last > self.last:
            lo = self.last if lo is None else min(lo, self.last)
            lo = max(lo, first)
        if lo is None:
            return None
        data = rows[lo:last].tobytes()
        self._keep(first, last, lo)
        return [self.period, lo, last, data]


def _check_rate(rate: Any) -> float:
    if (
        not isinstance(rate, (int, float))
        or isinstance(rate, bool)
        or not math.isfinite(rate)
        or not 0 < rate <= MAX_RATE
    ):
        raise ValueError(
            f'rate={rate!r} must be a number in (0, {MAX_RATE:g}] (updates/s)'
        )
    return float(rate)


@compat.context
async def stream_bars(
    ctx: compat.Context,
    topics: list[str],
    rows: int = DEFAULT_SNAPSHOT_ROWS,
    rate: float = DEFAULT_RATE,
) -> None:
    """(feedd) The buffers of running ``topics`` for a client that cannot
    attach them (another host): ``started()`` carries this host's id and
    per topic and period a snapshot of the last ``rows`` rows; the stream
    then carries every change, at most ``rate`` messages a second, and a
    heartbeat each :data:`HEARTBEAT_S` without one (see the module
    docstring).  A topic that ends here is no longer sent (its status
    stream says why)."""
    from ._feedd import check_topics, wait_feed_daemon

    daemon = await wait_feed_daemon()
    names = check_topics(topics)
    rows = check_rows(rows)
    rate = _check_rate(rate)
    tails: list[_Tail] = []
    snap: dict[str, dict[str, Any]] = {}
    for name in names:
        t = daemon.topics.get(name)
        if t is None:
            raise ValueError(f'topic {name!r} does not run in this feed daemon')
        snap[name] = {}
        for p, shm in t.shms.items():
            tail = _Tail(t, p, shm, rows)
            snap[name][repr(p)] = tail.snapshot(rows)
            tails.append(tail)
    await ctx.started(
        {
            'host_id': host_id(),
            'bars': snap,
            'rate': rate,
            'heartbeat_s': HEARTBEAT_S,
        }
    )
    # a client of its topics (they linger when the last one leaves)
    async with compat.open_stream(ctx) as stream, daemon.holding(names):
        async with trio.open_nursery() as n:

            async def drain() -> None:
                try:
                    async for _ in stream:
                        pass  # no requests: held open until the client leaves
                except (
                    PeerDisconnected,
                    trio.BrokenResourceError,
                    trio.ClosedResourceError,
                ):
                    pass
                n.cancel_scope.cancel()

            n.start_soon(drain)
            period = 1.0 / rate
            full_every = max(1, round(rate))  # the tail's rows once a second
            sweep_every = max(1, round(rate * SWEEP_S))  # all of them
            tick = 0
            next_t = last_sent = trio.current_time()
            while True:
                next_t += period
                await trio.sleep_until(next_t)
                now = trio.current_time()
                if now - next_t > period:  # late (a busy loop): no catch-up burst
                    next_t = now
                tick += 1
                full = tick % full_every == 0
                sweep = tick % sweep_every == 0
                updates: dict[str, list[Any]] = {}
                for tail in list(tails):
                    if daemon.topics.get(tail.name) is not tail.topic:
                        # ended here: its slots are not its own any more
                        tails.remove(tail)
                        continue
                    u = tail.poll(full, sweep)
                    if u is not None:
                        updates.setdefault(tail.name, []).append(u)
                msg: dict[str, Any] | None = None
                if updates:
                    msg = {'type': 'rows', 'topics': updates}
                elif now - last_sent >= HEARTBEAT_S:
                    msg = {'type': 'hb'}
                if msg is not None:
                    try:
                        await stream.send(msg)
                    except (trio.BrokenResourceError, trio.ClosedResourceError):
                        break  # the client went away
                    last_sent = now
            n.cancel_scope.cancel()


# --- the client's side ---------------------------------------------------------


@acm
async def open_remote_bars(
    portal: Any,
    topics: Sequence[str],
    *,
    what: str = 'the feed daemon',
    rows: int = DEFAULT_SNAPSHOT_ROWS,
    rate: float = DEFAULT_RATE,
    silence_s: float = SILENCE_S,
) -> AsyncIterator[dict[str, dict[float, LocalBuffer]]]:
    """``topics``' buffers from the feed daemon behind ``portal`` by
    stream (see the module docstring): ``{topic: {period: LocalBuffer}}``,
    kept up to date while the block runs.  Nothing from the daemon for
    ``silence_s`` cancels the block and raises
    :class:`~tractor_services.PeerGone` (``what`` names the daemon), and
    every read of the buffers raises it from then on."""
    rows = check_rows(rows)
    rate = _check_rate(rate)
    async with compat.open_context(
        portal, stream_bars, topics=list(topics), rows=rows, rate=rate
    ) as (ctx, started):
        bufs: dict[str, dict[float, LocalBuffer]] = {}
        for name, by_period in started['bars'].items():
            bufs[name] = {}
            for p, snap in by_period.items():
                tok = ShmToken.from_msg(snap['token'])
                buf = LocalBuffer(name, float(p), tok, 2 * max(rows, TAIL_ROWS))
                buf._load(snap['first'], snap['lo'], snap['last'], snap['rows'])
                bufs[name][float(p)] = buf
        try:
            async with (
                compat.open_drained_stream(ctx) as stream,
                trio.open_nursery() as n,
            ):
                heard = [trio.current_time()]

                async def receive() -> None:
                    try:
                        async for msg in stream:
                            heard[0] = trio.current_time()
                            if msg.get('type') != 'rows':
                                continue
                            for name, updates in msg['topics'].items():
                                by_period = bufs.get(name, {})
                                for p, lo, last, data in updates:
                                    buf = by_period.get(float(p))
                                    if buf is not None:
                                        buf._apply(lo, last, data)
                    except (trio.BrokenResourceError, trio.ClosedResourceError):
                        pass  # the peer's end: told by the watches, as PeerGone

                async def watch() -> None:
                    stalled = False
                    while True:
                        deadline = heard[0] + silence_s
                        now = trio.current_time()
                        if now < deadline:
                            stalled = False
                            await trio.sleep_until(deadline)
                        elif now - deadline > STALL_GRACE_S and not stalled:
                            # we woke late: this process stalled, not the
                            # daemon; what arrived meanwhile is read first
                            stalled = True
                            await trio.sleep(STALL_GRACE_S)
                        else:
                            break
                    err = PeerGone(
                        f'{what} sent nothing for {silence_s:g} s (heartbeats every '
                        f'{HEARTBEAT_S:g} s): its host went silent or the link is cut'
                    )
                    for by_period in bufs.values():
                        for buf in by_period.values():
                            buf._gone(err)
                    compat.mark_disconnected(portal.channel)
                    raise err

                n.start_soon(receive)
                n.start_soon(watch)
                yield bufs
                n.cancel_scope.cancel()
        finally:
            # the connection ended under us (another watch, e.g. keepalive
            # across hosts, ended the feed): reads say so, not just "closed"
            gone = None
            if not portal.channel.connected():
                gone = PeerGone(f'{what} went away (its connection ended)')
            for by_period in bufs.values():
                for buf in by_period.values():
                    if gone is not None:
                        buf._gone(gone)
                    buf.close()
        await ctx.cancel()


@acm
async def maybe_open_remote_bars(
    remote: bool,
    portal: Any,
    topics: Sequence[str],
    **kwargs: Any,
) -> AsyncIterator[dict[str, dict[float, LocalBuffer]] | None]:
    """:func:`open_remote_bars` when ``remote``, else nothing (``None``):
    for ``open_market_feed``, which attaches shared memory otherwise."""
    if not remote:
        yield None
        return
    async with open_remote_bars(portal, topics, **kwargs) as bufs:
        yield bufs
