"""
The relay mirror: a feed daemon on host b whose topics come from the
feed daemon of the same backend on host a.

``samplerd run --host B --upstream A:P`` sets :data:`UPSTREAM_ENV` in b's
root; every ``feedd.<backend>`` b's root spawns (when a client on b opens
a feed, as today) then runs :func:`run_mirror` instead of a local feed
daemon.  It registers as ``feedd.<backend>`` in b's registry and answers
``attach_feed``, ``stream_bars`` and ``feed_info`` like any feed daemon
(it *is* a :class:`~tractor_sampler._feedd.FeedDaemon` whose topics are
served differently), so ``open_market_feed`` on b works unchanged and
attaches the mirror's LOCAL shared-memory buffers.

The topics of one attach request (asked for together, with one config)
form a group, served by one session with a's feed daemon (found through
a's registry, started there if needed): a's ``attach_feed`` (a's status
reports), a's ``stream_bars`` (the bars) and one feedbus subscription
(the quotes, republished on the mirror's bus).  However many clients on b
read a topic, a sends it to b once.

Bars are never rebuilt from trades: the buffers are seeded from
``stream_bars``' snapshot of a's buffers (history and the open bar), and
every row ``stream_bars`` sends (the open row's updates, each row a's
samplerd step closes, corrections of closed rows) is copied byte for
byte into the same row of the local buffer.  The local buffers are NOT
registered with b's samplerd: rows come from a alone, so no step on b's
clock can add a row a did not make (b's samplerd still broadcasts its
steps to b's sample-stream subscribers; see docs/multihost.md, "The relay
mirror").  Through one registration with b's samplerd, with no buffers,
the mirror tells those subscribers what changed: a ``Backfill`` with
``reason='correction'`` for closed rows a corrected, ``'history'`` for a
re-seeded buffer.

When a goes away (its feed daemon's connection ends, ``PeerGone``, or
nothing heard for :data:`~tractor_sampler._remote.SILENCE_S`) the topic
(every topic of its group) is reported ``restarting`` and the mirror
subscribes again, backing off from :data:`BACKOFF_S` to
:data:`MAX_BACKOFF_S`; once a serves the topic again the local buffers are re-seeded in place (same shared memory, so
b's clients keep their attachments) and the topic is ``up``.

The mirror's buffers go to its own host's bar store like a feed daemon's
(the same :class:`~tractor_sampler._store.StoreWriter`: every
:func:`~tractor_sampler._store.flush_interval`, when a group's session
ends for good, and once more when the mirror stops; on by default, in
b's data directory).  The upstream wins: the buffers are never seeded
from b's store (they are a's window, row for row); the store only
receives, each topic and period from its last stored bar on (read once
from the store, so a restarted mirror appends what it missed from a's
window and never writes a bar twice).

"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import msgspec
import numpy as np
import trio

import feedbus
from feedbus import FeedsBus
from tractor_services import PeerGone, compat, describe_error
from tractor_services._heartbeat import heartbeat_interval

from ._errors import SamplerError
from ._feedd import (
    DEFAULT_STREAM_POLICY,
    FeedDaemon,
    Topic,
    _holder,
    attach_feed,
    feedd_name,
)
from ._msgs import Backfill, FeedStatus
from ._ohlc import OHLCWriter
from ._plugins import Backend
from ._pool import BufferPool, GroupKey
from ._remote import DEFAULT_RATE, HEARTBEAT_S, SILENCE_S, stream_bars
from ._store import storable
from .shm import ShmArray, ShmToken

log = compat.get_logger('mirror', 'tractor_sampler')

#: ``host:port`` of the upstream root: set, feed daemons spawned by this
#: root (and its children) mirror that root's feed daemons
UPSTREAM_ENV = 'TRACTOR_SAMPLER_UPSTREAM'

#: rows of each of a's buffers asked for in the snapshot (its whole window,
#: up to this many: history and live bars)
MIRROR_ROWS: int = 200_000

#: updates a second asked of a's ``stream_bars`` (its default: each update
#: costs a's feed daemon a pass over the rows it tracks for us)
MIRROR_RATE: float = DEFAULT_RATE

#: topics asked for within this long with the same config share a session
#: (an attach request starts its topics concurrently: they arrive together)
BATCH_S: float = 0.005

#: Backfill notices queued for b's samplerd at most (then counted lost)
NOTICE_QUEUE: int = 1024

#: backoff between attempts to subscribe to a again
BACKOFF_S: float = 0.5
MAX_BACKOFF_S: float = 5.0


class UpstreamLost(Exception):
    """The upstream stopped serving a mirrored topic (its topic failed or
    ended there, or its bars stream went wrong): subscribe again."""


def parse_upstream(text: Any) -> tuple[str, int]:
    """``'host:port'`` (the upstream root's registry) as an address; a
    ``ValueError`` naming the problem otherwise."""
    if isinstance(text, (tuple, list)) and len(text) == 2:
        host, port = text
    elif isinstance(text, str):
        host, sep, port = text.strip().rpartition(':')
        if not sep or not host:
            raise ValueError(
                f"upstream {text!r} must be HOST:PORT (the upstream root's registry)"
            )
    else:
        raise ValueError(f'upstream {text!r} must be HOST:PORT')
    try:
        port = int(port)
    except (TypeError, ValueError):
        raise ValueError(f'upstream {text!r}: {port!r} is not a port number') from None
    if not 0 < port <= 65535:
        raise ValueError(f'upstream {text!r}: port {port} is out of range (1 to 65535)')
    host = str(host).strip('[]')
    if host in ('0.0.0.0', '::', ''):
        raise ValueError(
            f'upstream {text!r}: {host!r} is a wildcard, not the address of a root'
        )
    return host, port


def upstream_from_env() -> tuple[str, int] | None:
    """The upstream :data:`UPSTREAM_ENV` names, or ``None`` when unset."""
    text = os.environ.get(UPSTREAM_ENV, '').strip()
    if not text:
        return None
    try:
        return parse_upstream(text)
    except ValueError as err:
        raise ValueError(f'${UPSTREAM_ENV}: {err}') from None


@contextmanager
def upstream_env(upstream: str | tuple[str, int] | None) -> Iterator[None]:
    """Set :data:`UPSTREAM_ENV` for the block (the root's children inherit
    it), as ``samplerd run --upstream`` does; nothing with ``None``."""
    if upstream is None:
        yield
        return
    host, port = parse_upstream(upstream)
    old = os.environ.get(UPSTREAM_ENV)
    os.environ[UPSTREAM_ENV] = f'{host}:{port}'
    try:
        yield
    finally:
        if old is None:
            os.environ.pop(UPSTREAM_ENV, None)
        else:
            os.environ[UPSTREAM_ENV] = old


def _no_quotes(*args: Any, **kwargs: Any) -> Any:
    raise RuntimeError('a mirror takes its quotes from its upstream')


class _Seeded:
    """One local buffer mirroring one of a's, of the same size: a's rows go
    to the same positions (``off``, ours less a's, stays 0)."""

    def __init__(self, shm: ShmArray) -> None:
        self.shm = shm
        self.off = 0
        self.dtype = shm.dtype

    def seed(self, snap: dict[str, Any], reset: Any) -> None:
        """Fill the buffer with a's snapshot rows ``[lo, last)``: emptied
        with its window starting at ``lo`` (``reset``), then the rows in one
        push (written before the window moves over them)."""
        tok = ShmToken.from_msg(snap['token'])
        if tok.dtype != self.dtype or tok.size != self.shm.size:
            raise UpstreamLost(
                f'the upstream buffer ({tok.size} rows of {tok.dtype}) does not fit '
                f"the mirror's ({self.shm.size} rows of {self.dtype})"
            )
        lo, last = int(snap['lo']), int(snap['last'])
        rows = np.frombuffer(snap['rows'], dtype=self.dtype)
        if len(rows) != last - lo or not 0 <= lo <= last <= self.shm.size:
            raise UpstreamLost(f'a snapshot of {len(rows)} rows for [{lo}, {last})')
        reset(self.shm, lo)
        if len(rows):
            self.shm.push(rows)
        self.off = 0
        if tok.first_live is not None:
            self.shm.mark_live(tok.first_live, tok.first_partial)

    def apply(self, lo: int, last: int, data: bytes) -> tuple[int, int] | None:
        """a's rows ``[lo, last)`` (the end of its window): written over
        ours in place, the new ones appended.  Returns the ``index`` span
        ``(start, end)`` of the rows closed here (all but the open one) that
        changed, a's corrections, or ``None``."""
        rows = np.frombuffer(data, dtype=self.dtype)
        if len(rows) != last - lo:
            raise UpstreamLost(f'{len(rows)} rows for [{lo}, {last})')
        shm = self.shm
        first, have = shm.window.tolist()
        my_lo, my_last = lo + self.off, last + self.off
        if my_lo > have:
            raise UpstreamLost(
                f'rows from {lo} but the mirror ends at {have - self.off}'
            )
        start = max(my_lo, first)
        end = min(my_last, have)
        changed = None
        closed = min(end, have - 1)  # the open row changes all the time
        if start < closed and 'index' in (self.dtype.names or ()):
            void = np.dtype((np.void, self.dtype.itemsize))
            new = rows[start - my_lo : closed - my_lo]
            diff = np.flatnonzero(shm.rows[start:closed].view(void) != new.view(void))
            if len(diff):
                idx = new['index']
                changed = (int(idx[diff[0]]), int(idx[diff[-1]]) + 1)
        if start < end:
            shm.rows[start:end] = rows[start - my_lo : end - my_lo]
        if my_last > have:
            shm.push(rows[have - my_lo :])
        return changed

    def span(self) -> tuple[int, int] | None:
        """The ``index`` span of the window (for a re-seed's notice)."""
        arr = self.shm.array
        if not len(arr) or 'index' not in (self.dtype.names or ()):
            return None
        return int(arr['index'][0]), int(arr['index'][-1]) + 1


@dataclass(eq=False)
class _Member:
    """One topic of a group: who waits for it to serve, its topic once
    seeded, its local buffers by period."""

    name: str
    done: trio.Event = field(default_factory=trio.Event)
    error: Exception | None = None
    topic: Topic | None = None
    seeded: dict[float, _Seeded] = field(default_factory=dict)

    def serves(self) -> None:
        if not self.done.is_set():
            self.done.set()

    def refused(self, err: Exception) -> None:
        if not self.done.is_set():
            self.error = err
            self.done.set()


class MirrorDaemon(FeedDaemon):
    """A feed daemon whose topics are copies of the upstream's (see the
    module docstring): what ``attach_feed``, ``stream_bars`` and
    ``feed_info`` see is a :class:`FeedDaemon`; only how topics are served
    differs: in groups, one session with the upstream per group
    (:meth:`_start_topic`)."""

    stops_topics = False  # they follow the upstream's (its linger, stop)

    def __init__(
        self,
        backend: str,
        tn: trio.Nursery,
        upstream: tuple[str, int],
        *,
        pool: BufferPool | None = None,
        bus: FeedsBus | None = None,
        store: Any = None,
    ) -> None:
        be = Backend(
            name=backend,
            stream_quotes=_no_quotes,
            dist=f'mirror of {upstream[0]}:{upstream[1]}',
        )
        super().__init__(
            be, tn, policy=DEFAULT_STREAM_POLICY, pool=pool, bus=bus, store=store
        )
        self.upstream = upstream
        self.what = (
            f'the upstream feed daemon {feedd_name(backend)} at '
            f'{upstream[0]}:{upstream[1]}'
        )
        #: pools by dtype (a backend's buffers may have fields of their own)
        self._pools: dict[str, BufferPool] = {}
        #: topics asked for and not yet in a group, by config
        self._pending: dict[str, tuple[dict[str, Any], list[_Member]]] = {}
        #: sessions opened with the upstream (each serves a group of topics)
        self.sessions = 0
        #: groups served (each its own session at a time)
        self.groups = 0
        # Backfill notices for b's sample-stream subscribers (re-seeds, a's
        # corrections), sent through the daemon's link with b's samplerd
        self._notices_in, self._notices = trio.open_memory_channel[Backfill](
            NOTICE_QUEUE
        )
        #: notices not sent: the queue was full, or samplerd refused or was away
        self.notices_lost = 0
        tn.start_soon(self._send_notices)
        # the bar store (see the module docstring): one flush at a time;
        # the topics and periods whose last stored bar was looked up
        self._store_lock = trio.Lock()
        self._positioned: set[tuple[str, float]] = set()

    # --- buffers ------------------------------------------------------------

    def _pool_for(self, dtype: np.dtype) -> BufferPool:
        if dtype == self.pool.dtype:
            return self.pool
        key = str(dtype.descr)
        pool = self._pools.get(key)
        if pool is None:
            pool = self._pools[key] = BufferPool(self.pool.members, dtype=dtype)
        return pool

    def _reset(self, shm: ShmArray, start: int) -> None:
        """Empty ``shm`` for a (re-)seed, its window at ``[start, start)``,
        keeping its slot (b's clients hold its token): its group's
        ``reset_member`` (the pool's group, looked up by name)."""
        for pool in (self.pool, *self._pools.values()):
            g = pool._by_name.get(shm.token.shm_name)
            if g is not None:
                g.group.reset_member(shm.token.member, start)
                return
        raise UpstreamLost(f'{shm.name}: no group of the mirror holds it')

    def _drop(self, m: _Member) -> None:
        """``m``'s topic is gone here, its slots free."""
        if m.topic is not None and self.topics.get(m.name) is m.topic:
            del self.topics[m.name]
        for seeded in m.seeded.values():
            self._pool_for(seeded.dtype).give_back(seeded.shm)
        m.seeded = {}
        m.topic = None

    def close(self) -> None:
        for pool in self._pools.values():
            pool.close()

    # --- the bar store ------------------------------------------------------

    def _position(self, keys: list[tuple[str, float]]) -> None:
        """Blocking: the writer starts each topic and period after its last
        stored bar (what an earlier run of the mirror stored), so nothing
        is written twice and the gap since is filled from a's window."""
        w = self.store_writer
        assert w is not None
        for name, p in keys:
            try:
                last = w.store.read(w.backend, name, p, last=1)
            except Exception as err:
                log.error(
                    f'bar store: {name} {p:g} s: reading the last stored bar failed, '
                    f'storing the whole window: {describe_error(err)}'
                )
                continue
            if len(last):
                t = float(last['time'][-1])
                w.upto[(name, p)] = max(w.upto.get((name, p), -math.inf), t)

    async def store_flush(self, topics: dict[str, Topic]) -> None:
        """Append ``topics``' closed bars not yet stored (one flush at a
        time; each topic and period positioned first)."""
        w = self.store_writer
        if w is None:
            return
        async with self._store_lock:
            new = [
                (name, p)
                for name, t in list(topics.items())
                for p, shm in t.shms.items()
                if (name, p) not in self._positioned and storable(shm)
            ]
            if new:
                await trio.to_thread.run_sync(self._position, new)
                self._positioned.update(new)
            await w.flush(topics)

    async def run_store(self, every_s: float) -> None:
        """Flush every ``every_s`` seconds, and once more when cancelled
        (the mirror stops: its last closed bars are kept)."""
        try:
            while True:
                await trio.sleep(every_s)
                await self.store_flush(self.topics)
        finally:
            with trio.CancelScope(shield=True), trio.move_on_after(30):
                await self.store_flush(self.topics)

    async def _flush_members(self, members: list[_Member]) -> None:
        """A group ends (its slots are given back next): its topics'
        closed bars first (shielded)."""
        topics = {m.name: m.topic for m in members if m.topic is not None}
        if self.store_writer is None or not topics:
            return
        with trio.CancelScope(shield=True), trio.move_on_after(30):
            await self.store_flush(topics)

    # --- notices to b's sample-stream subscribers ----------------------------

    def _notice(self, msg: Backfill) -> None:
        try:
            self._notices_in.send_nowait(msg)
        except trio.WouldBlock:
            self.notices_lost += 1
            if self.notices_lost in (1, 10) or not self.notices_lost % 100:
                log.warning(
                    f'{msg.topic}: {self.notices_lost} Backfill notices lost so far '
                    f'(more than {NOTICE_QUEUE} queued for samplerd)'
                )

    async def _ensure_link(self) -> None:
        """The daemon's one registration with b's samplerd (the feed
        daemon's link), with no buffers in it: the notices go through it.
        Without samplerd the mirror serves on (the notices are lost)."""
        if self._link_running:
            return
        async with self._link_lock:
            if self._link_running:
                return
            try:
                await self._tn.start(self._run_link)
            except Exception as err:
                log.warning(
                    f'no link with samplerd, Backfill notices are lost: {describe_error(err)}'
                )

    async def _send_notices(self) -> None:
        async for msg in self._notices:
            steps = self._steps
            if steps is None:
                self.notices_lost += 1
                continue
            try:
                await steps.broadcast(msg)
            except SamplerError as err:
                self.notices_lost += 1
                log.warning(f'{msg.topic}: a Backfill notice was not sent: {err}')

    # --- topics ---------------------------------------------------------------

    async def _start_topic(self, name: str, config: dict[str, Any]) -> Topic:
        """Start ``name`` as a member of a group: the topics asked for
        within :data:`BATCH_S` with the same config (those of one attach
        request: it starts them concurrently) share one session with the
        upstream.  Returns once the topic serves; the upstream's refusal
        is this call's ``ValueError``."""
        key = msgspec.json.encode(config, order='sorted').decode()
        m = _Member(name)
        pending = self._pending.get(key)
        if pending is None:
            pending = self._pending[key] = (config, [])
            self._tn.start_soon(self._launch, key)
        pending[1].append(m)
        await m.done.wait()
        if m.error is not None:
            raise m.error
        assert m.topic is not None
        return m.topic

    async def _launch(self, key: str) -> None:
        await trio.sleep(BATCH_S)  # the rest of the attach request's topics
        config, members = self._pending.pop(key)
        self._tn.start_soon(self._serve_group, members, config)

    async def _serve_group(
        self, members: list[_Member], config: dict[str, Any]
    ) -> None:
        """Serve ``members`` from the upstream until cancelled: one session
        at a time (:meth:`_session`), again with backoff whenever a goes
        away.  If the first session fails before serving, a group of one
        tells its client why; a larger group is split (one topic the
        upstream refuses does not keep the others from serving)."""
        self.groups += 1
        backoff = BACKOFF_S
        try:
            while True:
                served = [False]
                try:
                    await self._session(members, config, served)
                    err: BaseException = UpstreamLost('the upstream session ended')
                except BaseException as exc:  # a5 raises groups: by content below
                    await trio.lowlevel.checkpoint_if_cancelled()  # ours goes on
                    err = compat.unwrap_error(exc)
                    if not all(m.done.is_set() for m in members):
                        self._refused(members, config, err)
                        return
                if served[0]:
                    backoff = BACKOFF_S
                why = (
                    f'{self.what} went away ({describe_error(err)}): subscribing again'
                )
                log.warning(f'{", ".join(m.name for m in members)}: {why}')
                for m in members:
                    if m.topic is not None and self.topics.get(m.name) is m.topic:
                        m.topic.restarts += 1
                        self._report(m.topic, 'restarting', why)
                if not any(
                    m.topic is not None and self.topics.get(m.name) is m.topic
                    for m in members
                ):
                    return  # all torn down meanwhile
                await trio.sleep(backoff)
                backoff = min(backoff * 2, MAX_BACKOFF_S)
        finally:
            await self._flush_members(members)
            for m in members:
                m.refused(
                    ValueError(f'topic {m.name!r}: the mirror stopped while it started')
                )
                self._drop(m)

    def _refused(
        self, members: list[_Member], config: dict[str, Any], err: BaseException
    ) -> None:
        """The first session failed: a single topic's client gets the
        reason (the upstream's refusal as a ``ValueError`` with its
        message); several topics are served one by one instead."""
        for m in members:
            self._drop(m)
        if len(members) > 1:
            for m in members:
                self._tn.start_soon(self._serve_group, [m], config)
            members.clear()  # handed over: nothing left to drop here
            return
        (m,) = members
        remote = compat.remote_error_type(err)
        msg = compat.remote_error_message(err) if remote else describe_error(err)
        m.refused(ValueError(f'topic {m.name!r} (mirrored from {self.what}): {msg}'))

    async def _session(
        self,
        members: list[_Member],
        config: dict[str, Any],
        served: list[bool],
    ) -> None:
        """One subscription to the upstream's topics: seed (or re-seed) the
        buffers from its snapshot, then copy its rows, relay its quotes and
        follow its status until it goes away."""
        from ._feed import StatusStream, maybe_open_feedd

        names = [m.name for m in members]
        by_name = {m.name: m for m in members}
        self.sessions += 1
        # first (it may wait for samplerd): a's streams must be read as soon
        # as they open (a5 kills a context whose queue overruns)
        await self._ensure_link()
        async with maybe_open_feedd(
            self.backend.name, registry_addr=self.upstream
        ) as portal:
            # the upstream on another host: heartbeats on its status stream
            # (its quote subscription asks for its own in feedbus.open_feed)
            heartbeat_s = heartbeat_interval(portal)
            async with compat.open_context(
                portal,
                attach_feed,
                topics=names,
                config=config or None,
                heartbeat_s=heartbeat_s,
            ) as (actx, started):
                firsts = started['topics']
                async with (
                    compat.raise_on_peer_exit(started['pid'], self.what, portal),
                    compat.open_context(
                        portal,
                        stream_bars,
                        topics=names,
                        rows=MIRROR_ROWS,
                        rate=MIRROR_RATE,
                    ) as (bctx, bstarted),
                ):
                    for m in members:
                        self._seed(m, config, bstarted['bars'][m.name], firsts[m.name])
                    async with (
                        compat.open_drained_stream(bctx) as bstream,
                        compat.open_drained_stream(actx) as sstream,
                        feedbus.open_feed(
                            portal, names, watch_producer=False
                        ) as quotes,
                        trio.open_nursery() as n,
                    ):
                        status = StatusStream(
                            stream=sstream,
                            buffer=256,
                            heartbeat_s=heartbeat_s,
                            peer_what=self.what,
                        )
                        async with status._running():
                            n.start_soon(self._copy_rows, by_name, bstream)
                            n.start_soon(self._relay_quotes, quotes)
                            for m in members:
                                assert m.topic is not None
                                self._follow(
                                    m.topic,
                                    msgspec.convert(
                                        firsts[m.name]['status'], FeedStatus
                                    ),
                                )
                                m.serves()
                            served[0] = True
                            async for st in status:
                                m2 = by_name.get(getattr(st, 'topic', ''))
                                if m2 is not None and m2.topic is not None:
                                    self._follow(m2.topic, st)
                            raise UpstreamLost('its status stream ended')

    def _seed(
        self,
        m: _Member,
        config: dict[str, Any],
        snaps: dict[str, Any],
        first: dict[str, Any],
    ) -> None:
        """``m``'s local buffers from a's snapshot: taken on the first
        session, emptied and filled again in place on the next ones."""
        for p_key, snap in snaps.items():
            p = float(p_key)
            if p not in m.seeded:
                if m.topic is not None:
                    continue  # a period a's topic did not have before
                tok = ShmToken.from_msg(snap['token'])
                pool = self._pool_for(tok.dtype)
                shm = pool.take(GroupKey(p, tok.size, tok.origin, tok.stamp))
                m.seeded[p] = _Seeded(shm)
            m.seeded[p].seed(snap, self._reset)
            span = m.seeded[p].span()
            if m.topic is not None and span is not None:
                # re-seeded: b's views redraw the whole window
                self._notice(
                    Backfill(
                        topic=m.name,
                        timeframe=p,
                        start_index=span[0],
                        end_index=span[1],
                    )
                )
        if m.topic is None:
            shms = {p: s.shm for p, s in m.seeded.items()}
            m.topic = Topic(
                name=m.name,
                shms=shms,
                # never written: rows come from the upstream; it answers
                # the counters feed_info reports
                writer=OHLCWriter(shms),
                info=first.get('info'),
                config=config,
            )
            self.bus.add_topic(m.name)
            self.topics[m.name] = m.topic

    def _follow(self, topic: Topic, st: FeedStatus) -> None:
        """The upstream topic's status is ours (``up``, ``restarting`` with
        its error); a topic that failed or ended there is subscribed again."""
        if st.state in ('failed', 'ended'):
            raise UpstreamLost(f'its topic {topic.name!r} {st.state}: {st.error}')
        self._report(topic, st.state, st.error)

    async def _copy_rows(self, by_name: dict[str, _Member], stream: Any) -> None:
        """a's rows into ours as they come; nothing for :data:`SILENCE_S`
        (a's heartbeats come every :data:`HEARTBEAT_S`) is a's going away."""
        while True:
            with trio.move_on_after(SILENCE_S) as cs:
                msg = await stream.receive()
            if cs.cancelled_caught:
                raise PeerGone(
                    f'{self.what} sent nothing for {SILENCE_S:g} s (heartbeats every '
                    f'{HEARTBEAT_S:g} s)'
                )
            if msg.get('type') != 'rows':
                continue
            for name, updates in msg['topics'].items():
                m = by_name.get(name)
                if m is None:
                    continue
                for p, lo, last, data in updates:
                    s = m.seeded.get(float(p))
                    if s is None:
                        continue
                    changed = s.apply(int(lo), int(last), data)
                    if changed is not None:  # a's correction: b's views redraw it
                        self._notice(
                            Backfill(
                                topic=name,
                                timeframe=float(p),
                                start_index=changed[0],
                                end_index=changed[1],
                                reason='correction',
                            )
                        )

    async def _relay_quotes(self, quotes: Any) -> None:
        """a's quotes onto the mirror's bus (b's subscribers, throttled or
        not, as from any feed daemon)."""
        async for q in quotes:
            if isinstance(q, feedbus.Quote):
                self.bus.publish(q.topic, q.fields, q.ticks)
        raise UpstreamLost('its quote stream ended')


async def run_mirror(
    ctx: Any,
    backend: str,
    upstream: tuple[str, int],
    group_members: int,
    data_dir: str | bool | None = None,
) -> None:
    """The body of ``feedd`` in a root with an upstream: serve
    :class:`MirrorDaemon` as this actor's feed daemon until cancelled,
    its buffers stored in this host's bar store (``data_dir``: as a feed
    daemon's)."""
    from ._client import spawn_samplerd
    from ._feedd import _feedd_store
    from ._pool import check_group_members

    store, flush_s = _feedd_store(data_dir)

    compat.expose_module('tractor_sampler._feedd')  # attach_feed, feed_info
    compat.expose_module('tractor_sampler._remote')  # stream_bars
    # b's samplerd: it steps no mirrored buffer, but its steps go to b's
    # sample-stream subscribers (docs/multihost.md, "The relay mirror")
    await spawn_samplerd()
    pool = BufferPool(check_group_members(group_members))
    daemon: MirrorDaemon | None = None
    try:
        async with trio.open_nursery() as tn:
            daemon = MirrorDaemon(backend, tn, upstream, pool=pool, store=store)
            if daemon.store_writer is not None:
                tn.start_soon(daemon.run_store, flush_s)
            _holder.daemon = daemon
            _holder.ready.set()
            try:
                await ctx.started(
                    {
                        'pid': os.getpid(),
                        'backend': backend,
                        'version': None,
                        'upstream': f'{upstream[0]}:{upstream[1]}',
                    }
                )
                await trio.sleep_forever()
            finally:
                _holder.daemon = None
                _holder.ready = trio.Event()
                tn.cancel_scope.cancel()
    finally:
        if daemon is not None:
            daemon.close()
        pool.close()


__all__ = [
    'UPSTREAM_ENV',
    'MirrorDaemon',
    'UpstreamLost',
    'parse_upstream',
    'run_mirror',
    'upstream_env',
    'upstream_from_env',
]
