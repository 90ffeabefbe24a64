"""
The producer side: the ``@compat.context`` endpoint a subscriber opens,
and a helper that feeds the bus from any async source.

"""

from __future__ import annotations

import functools
import os
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Iterable
from contextlib import asynccontextmanager as acm
from dataclasses import dataclass
from typing import Any, ClassVar

import msgspec
import trio

from tractor_services import PeerDisconnected, compat, host_id
from tractor_services._heartbeat import Heartbeat, check_heartbeat

from ._bus import (
    OUTBOX_SIZE,
    STALL_TIMEOUT_S,
    BadQuote,
    FeedsBus,
    Outbox,
    Sub,
    SubStats,
    check_clearing,
    check_flag,
    check_outbox_size,
    check_rate,
    check_stall_timeout,
    check_topics,
    get_feed_bus,
)
from ._ctl import (
    Ack,
    Dropped,
    Error,
    GetStats,
    Pause,
    Ready,
    Resume,
    SetRate,
    Subscribe,
    Unsubscribe,
    decode_ctl,
)
from ._msgs import CLEARING_TICK_TYPES, Frame
from ._throttle import Throttler
from ._wire import pack, pack_many

log = compat.get_logger('producer', 'feedbus')

_encode = msgspec.to_builtins

#: control replies a subscriber may leave unread before it is removed
#: (reason ``'overrun'``)
MAX_PENDING_REPLIES: int = 256
#: seconds the owner's exit waits for a send still in flight before it
#: closes the whole connection (the peer sees a disconnect, never half a
#: message)
SEND_GRACE_S: float = 1.0


class _Removed(Exception):
    """The subscriber was removed while its sender was busy."""


class _Replies(Outbox):
    """A subscriber's queue of control replies: one that would overflow
    removes the subscriber (``on_full``) rather than lose a reply its
    request waits for."""

    def __init__(self, on_full: Callable[[], None]) -> None:
        super().__init__(MAX_PENDING_REPLIES, SubStats())
        self._on_full = on_full

    def put(self, msg: Any) -> None:
        if len(self) >= self.maxlen:
            self._on_full()
            self.close()
            return
        super().put(msg)


def _sender(
    stream: compat.MsgStream | compat.SafeStream,
) -> Callable[[Any], Awaitable[None]]:
    """``stream``'s send, never cut part-way (``compat.send_whole``): a
    ``compat.SafeStream`` already sends that way."""
    if isinstance(stream, compat.SafeStream):
        return stream.send
    return functools.partial(compat.send_whole, stream)


def _raw_stream(stream: compat.MsgStream | compat.SafeStream) -> compat.MsgStream:
    return stream.stream if isinstance(stream, compat.SafeStream) else stream


async def _watch_progress(bus: FeedsBus, sub: Sub, stall_timeout: float) -> None:
    """The stall rule, judged by the subscriber's progress.

    Every ``stall_timeout / 4`` s it looks whether a send to ``sub`` is in
    flight and none has finished since its last look; such time adds up,
    any finished send resets it, and once it reaches ``stall_timeout`` the
    subscriber is removed (``bus.drop_sub``, reason ``'stalled'``).  A look
    that comes much later than its tick means this process (or its event
    loop) was itself suspended: the subscriber cannot be blamed for that
    gap, so such a look counts one tick, not the time that passed.  No
    deadline on the send itself, which the sender's own pause could expire.
    One wake-up per tick, none per message."""
    tick = stall_timeout / 4
    late = 2 * tick
    now = trio.current_time
    prog = sub.progress
    stats = sub.stats
    stalled = 0.0
    seen_done = -1  # sends finished at the last look, if one was in flight then
    last = now()
    while stats.removed is None:
        await trio.sleep(tick)
        t = now()
        elapsed, last = t - last, t
        if prog.busy and prog.done == seen_done:
            stalled += elapsed if elapsed <= late else tick
            if stalled >= stall_timeout * (1 - 1e-9):
                bus.drop_sub(
                    sub,
                    f'stalled: no send to it finished for {stalled:.3g} s (stall_timeout={stall_timeout:g} s)',
                    reason='stalled',
                )
                return
        else:
            stalled = 0.0
        seen_done = prog.done if prog.busy else -1


async def _send_replies(sub: Sub, send: Callable[[Any], Awaitable[None]]) -> None:
    """Send ``sub``'s queued control replies, in order."""
    assert sub.ctl is not None
    prog = sub.progress
    ctl = sub.ctl
    try:
        while True:
            await ctl.wait_nonempty()
            msg = ctl.take_one()
            prog.started()
            try:
                await send(msg)
            finally:
                prog.finished()
    except (
        trio.EndOfChannel,
        trio.BrokenResourceError,
        trio.ClosedResourceError,
        PeerDisconnected,
    ):
        return  # broken streams are the data sender's to report


async def _deliver(
    bus: FeedsBus,
    sub: Sub,
    ready: trio.Event,
    batch: bool,
    send: Callable[[Any], Awaitable[None]],
    done: trio.CancelScope,
) -> None:
    """The subscriber's own sender task: outbox -> its stream, as msgpack
    bytes (see :mod:`feedbus._wire`).  Every send runs to its end (never
    cut: a5 would corrupt the connection); the stall watchdog judges it.
    If the subscriber is removed, the send in flight finishes, then it gets
    one :class:`~feedbus._ctl.Dropped` message saying why, and the
    subscription ends (``done`` is cancelled)."""
    stats = sub.stats
    prog = sub.progress
    try:
        await ready.wait()
        if sub.throttler is not None:

            async def send_frame(frame: Frame) -> None:
                n = 0
                for tf in frame.topics.values():
                    n += tf.n_quotes
                if stats.removed is not None:
                    stats.dropped += n
                    raise _Removed
                prog.started()
                try:
                    await send(pack(frame))
                finally:
                    prog.finished()
                stats.messages += 1
                stats.delivered += n
                stats.conflated += n - len(frame.topics)

            await sub.throttler.run(sub.send_chan, send_frame)
        else:
            outbox = sub.send_chan
            while True:
                await outbox.wait_nonempty()
                items = outbox.take_all() if batch else [outbox.take_one()]
                data = pack(items[0]) if len(items) == 1 else pack_many(items)
                prog.started()
                try:
                    await send(data)
                finally:
                    prog.finished()
                stats.messages += 1
                stats.delivered += len(items)
    except (trio.EndOfChannel, _Removed):
        pass
    except (
        trio.BrokenResourceError,
        trio.ClosedResourceError,
        PeerDisconnected,
    ) as err:
        bus.drop_sub(sub, f'broken: its stream failed: {err!r}', reason='broken')
        done.cancel()
        return
    if stats.removed is None:
        return  # the owner closed the outbox: its block is ending
    try:
        prog.started()
        try:
            await send(
                _encode(
                    Dropped(
                        reason=stats.reason or 'ended',
                        detail=stats.removed,
                        stats=_encode(stats),
                    )
                )
            )
        finally:
            prog.finished()
    except (trio.BrokenResourceError, trio.ClosedResourceError, PeerDisconnected):
        pass
    done.cancel()


async def _send_heartbeats(
    beat: Heartbeat,
    sub: Sub,
    ready: trio.Event,
    send: Callable[[Any], Awaitable[None]],
) -> None:
    """A heartbeat on ``sub``'s stream after each ``beat.interval`` without
    any other message (a subscriber on another host asked for them: see
    :mod:`tractor_services._heartbeat`), once it is ready; the stall rule
    judges these sends like any other."""
    prog = sub.progress

    async def send_one(msg: Any) -> None:
        prog.started()
        try:
            await send(msg)
        finally:
            prog.finished()

    try:
        await ready.wait()
        beat.last = trio.current_time()
        await beat.run(send_one)
    except (trio.BrokenResourceError, trio.ClosedResourceError, PeerDisconnected):
        return  # broken streams are the data sender's to report


@acm
async def open_sub(
    bus: FeedsBus,
    stream: compat.MsgStream | compat.SafeStream,
    *,
    rate: float | None = None,
    rc_ui: bool = False,
    batch: bool = True,
    outbox_size: int = OUTBOX_SIZE,
    stall_timeout: float = STALL_TIMEOUT_S,
    clearing: frozenset[str] | None = CLEARING_TICK_TYPES,
    ring_slot: int | None = None,
    heartbeat_s: float | None = None,
) -> AsyncIterator[tuple[Sub, trio.Event]]:
    """Make ``stream`` a subscriber of ``bus``: a :class:`Sub` with its own
    outbox and sender task (a throttler when ``rate`` is set), which starts
    sending once the yielded event is set, a reply queue
    (``sub.reply(msg)``) and a stall watchdog.  The caller adds the Sub to
    topics; on exit it is removed from all and its tasks cancelled.

    Nothing on ``stream`` is ever cut part-way.  If the bus drops the
    subscriber (stalled, broken, overrun, or ``bus.drop_sub`` by the
    producer), it gets a last message saying why (once the send in flight
    finished) and the block is cancelled.  If the block ends while a send
    is stuck, the exit waits :data:`SEND_GRACE_S`, then closes the whole
    connection (``compat.abort_connection``).

    ``ring_slot``: the subscriber reads the bus's quote ring from this
    reader slot (``bus.ring_slot()``): its quotes go there, not to its
    outbox, and it frames them on its own side (its throttler here only
    holds the rate, for listings and ``SetRate``: nothing feeds it).

    ``heartbeat_s``: a heartbeat after this long without any other message
    (for a subscriber on another host, which asked for them)."""
    outbox_size = check_outbox_size(outbox_size)
    stall_timeout = check_stall_timeout(stall_timeout)
    clearing = check_clearing(clearing)
    stats = SubStats(ring=ring_slot is not None)
    sub = Sub(
        ipc=stream,
        send_chan=Outbox(outbox_size, stats),
        throttle_cs=trio.CancelScope(),
        rc_ui=rc_ui,
        stats=stats,
        throttler=Throttler(
            rate,
            clearing=CLEARING_TICK_TYPES if clearing is None else clearing,
        )
        if rate is not None
        else None,
        ctl=_Replies(
            lambda: bus.drop_sub(
                sub,
                f'overrun: it left {MAX_PENDING_REPLIES} control replies unread',
                reason='overrun',
            )
        ),
        ring_slot=ring_slot,
    )
    ctl = sub.ctl
    assert ctl is not None
    send = _sender(stream)
    every = check_heartbeat(heartbeat_s)
    beat = Heartbeat(every) if every is not None else None
    if beat is not None:
        send = beat.wrap(send)
    ready = trio.Event()
    async with trio.open_nursery() as tn:

        async def sender() -> None:
            with sub.throttle_cs:
                await _deliver(bus, sub, ready, batch, send, tn.cancel_scope)

        tn.start_soon(sender)
        tn.start_soon(_send_replies, sub, send)
        tn.start_soon(_watch_progress, bus, sub, stall_timeout)
        if beat is not None:
            tn.start_soon(_send_heartbeats, beat, sub, ready, send)
        try:
            yield sub, ready
        finally:
            bus.forget_sub(sub)
            ctl.close()
            tn.cancel_scope.cancel()
            if sub.progress.busy:
                # a send is in flight and cannot be cut: give it a moment,
                # then close the connection under it (a clean disconnect)
                with trio.CancelScope(shield=True):
                    with trio.move_on_after(SEND_GRACE_S):
                        await sub.progress.wait_idle()
                    if sub.progress.busy:
                        log.warning(
                            f'a send to a subscriber is still stuck {SEND_GRACE_S} s after its '
                            'subscription ended: closing the connection to it'
                        )
                        compat.abort_connection(_raw_stream(stream))


def pause_sub(bus: FeedsBus, sub: Sub, topics: Iterable[str]) -> None:
    """Stop delivering to ``sub`` (its subscription is kept): out of
    ``topics``' sets, its outbox and its throttler's pending frame
    discarded.  A send already in flight finishes (and reaches the
    subscriber before anything sent after this call, such as the reply to
    its pause request); nothing else follows until :func:`resume_sub`."""
    for t in topics:
        bus._stop_delivery(t, [sub])  # still subscribed (counted)
    sub.send_chan.clear()
    if sub.throttler is not None:
        sub.throttler.discard()


def resume_sub(bus: FeedsBus, sub: Sub, topics: Iterable[str]) -> None:
    """Deliver ``topics`` to ``sub`` again after :func:`pause_sub`."""
    if sub.stats.removed is not None:
        return
    for t in topics:
        bus.add_subs(t, {sub})


def _latest(bus: FeedsBus, topics: Iterable[str]) -> dict[str, Any]:
    """The latest quote of each topic, as maps (``None`` if none yet)."""
    return {t: _encode(q) if (q := bus.latest(t)) else None for t in topics}


def _check_served(bus: FeedsBus, topics: Iterable[str]) -> None:
    unknown = sorted(set(topics) - bus.topics)
    if unknown:
        raise ValueError(
            f'unknown topic(s) {unknown}: this producer serves {sorted(bus.topics)}'
        )


#: what a :class:`_Session` method returns for a request that gets no reply
_NO_REPLY = object()


@dataclass(eq=False)
class _Session:
    """One subscriber's side of the control protocol (:mod:`feedbus.protocol`):
    the topics it asked for, whether it paused, and one method per request.

    :meth:`handle` decodes a request, runs its method, and queues the reply
    (``sub.reply``, never blocking): an :class:`Ack` carrying what the
    method returned, or an :class:`Error` when the request is malformed or
    the method refused it (a ``ValueError``).  A method that returns
    :data:`_NO_REPLY` (``Ready``'s) gets none."""

    bus: FeedsBus
    sub: Sub
    ready: trio.Event
    subscribed: set[str]
    paused: bool = False

    def __post_init__(self) -> None:
        for t in self.subscribed:
            self.bus.add_subs(t, {self.sub})
            self.bus._subscribe(t, self.sub)

    def handle(self, raw: Any) -> None:
        self.sub.stats.requests += 1
        try:
            msg = decode_ctl(raw)
        except ValueError as err:
            self.sub.reply(Error(id=_id_of(raw), cmd=None, error=str(err)))
            return
        cmd = type(msg).__name__.lower()
        try:
            result = self._methods[type(msg)](self, msg)
        except ValueError as err:
            self.sub.reply(Error(id=msg.id, cmd=cmd, error=str(err)))
            return
        if result is not _NO_REPLY:
            self.sub.reply(Ack(id=msg.id, cmd=cmd, result=result))

    def on_ready(self, msg: Ready) -> object:
        """The subscriber's stream is open: the sender may start."""
        self.ready.set()
        return _NO_REPLY

    def on_pause(self, msg: Pause) -> None:
        self.paused = True
        pause_sub(self.bus, self.sub, self.subscribed)

    def on_resume(self, msg: Resume) -> None:
        self.paused = False
        resume_sub(self.bus, self.sub, self.subscribed)

    def on_subscribe(self, msg: Subscribe) -> dict[str, Any]:
        """Add topics (delivered at once unless paused); returns their
        latest quotes."""
        _check_served(self.bus, msg.topics)
        added = set(msg.topics) - self.subscribed
        self.subscribed |= added
        for t in added:
            self.bus._subscribe(t, self.sub)
        if not self.paused:
            resume_sub(self.bus, self.sub, added)
        return _latest(self.bus, sorted(added))

    def on_unsubscribe(self, msg: Unsubscribe) -> None:
        gone = set(msg.topics) & self.subscribed
        for t in gone:
            self.bus.remove_subs(t, {self.sub})
        self.subscribed -= gone

    def on_set_rate(self, msg: SetRate) -> None:
        throttler = self.sub.throttler
        if throttler is None:
            raise ValueError(
                'this subscription is not throttled: subscribe with tick_throttle to set a rate'
            )
        throttler.rate = msg.rate  # the setter refuses a bad rate (ValueError)

    def on_get_stats(self, msg: GetStats) -> dict[str, Any]:
        self.bus._refresh((self.sub,))
        return _encode(self.sub.stats)

    _methods: ClassVar[dict[type, Callable[[_Session, Any], Any]]] = {
        Ready: on_ready,
        Pause: on_pause,
        Resume: on_resume,
        Subscribe: on_subscribe,
        Unsubscribe: on_unsubscribe,
        SetRate: on_set_rate,
        GetStats: on_get_stats,
    }


@compat.context
async def open_feed_stream(
    ctx: compat.Context,
    topics: list[str],
    tick_throttle: float | None = None,
    allow_remote_ctl_ui: bool = False,
    batch: bool = True,
    outbox_size: int = OUTBOX_SIZE,
    stall_timeout: float = STALL_TIMEOUT_S,
    clearing: list[str] | None = None,
    ring_host: str | None = None,
    ring_pid: int | None = None,
    heartbeat_s: float | None = None,
) -> None:
    """Subscribe the calling actor to ``topics`` on this actor's bus.

    Every argument is checked before ``started()``: a bad one is refused
    with one ``ValueError`` naming it.  ``started()`` carries the latest
    quote per topic (``None`` if none yet).  Then the stream delivers
    :class:`Quote` s (several in one message when the subscriber lags and
    ``batch`` is on), or throttled :class:`Frame` s at most
    ``tick_throttle`` per second, and serves the control protocol
    (``feedbus._ctl``, one :class:`_Session` per subscriber) on the same
    stream.  ``clearing``: the tick types that make a throttled frame
    urgent (``None``: the default set; ``[]``: none).

    ``ring_host``: the subscriber's :func:`tractor_services.host_id`, given
    when it can read the shared-memory quote ring.  Then ``started()``
    carries ``{'latest': ..., 'host_id': ours, 'ring': token}``, where the
    token (a :class:`feedbus._ring.RingToken` as a map) is ``None`` unless
    the ids match (the same ``/dev/shm``) and the ring has a reader slot
    free: with a token, quotes travel through the ring and the subscriber
    frames them itself; the stream carries the control protocol only.
    ``ring_pid``: the subscriber's process id, watched while it reads the
    ring (nothing else would tell that it died: no data goes to it on the
    stream); a pid that is not a live process here gets no ring.
    ``heartbeat_s``: a subscriber on another host asks for a heartbeat
    after this long without any other message (``open_sub``).

    """
    bus = get_feed_bus()
    topics = check_topics(topics)
    rate = check_rate(tick_throttle)
    check_flag('allow_remote_ctl_ui', allow_remote_ctl_ui)
    check_flag('batch', batch)
    outbox_size = check_outbox_size(outbox_size)
    stall_timeout = check_stall_timeout(stall_timeout)
    clearing_set = check_clearing(clearing)
    _check_served(bus, topics)
    if ring_host is not None and not isinstance(ring_host, str):
        raise ValueError(f'ring_host={ring_host!r} must be a host id (a string)')
    if ring_pid is not None and (
        not isinstance(ring_pid, int) or isinstance(ring_pid, bool) or ring_pid <= 0
    ):
        raise ValueError(f'ring_pid={ring_pid!r} must be a process id')
    heartbeat_s = check_heartbeat(heartbeat_s)

    slot: int | None = None
    here = host_id() if ring_host is not None else None
    if here is not None and ring_host == here and _alive(ring_pid):
        slot = bus.ring_slot()
    try:
        if ring_host is None:
            await ctx.started(_latest(bus, topics))
        else:
            token = None
            if slot is not None:
                assert bus.ring is not None
                token = _encode(bus.ring.token(slot))
            await ctx.started(
                {'latest': _latest(bus, topics), 'host_id': here, 'ring': token}
            )
        await _serve(
            ctx,
            bus,
            topics,
            rate=rate,
            rc_ui=allow_remote_ctl_ui,
            batch=batch,
            outbox_size=outbox_size,
            stall_timeout=stall_timeout,
            clearing=clearing_set,
            ring_slot=slot,
            ring_pid=ring_pid,
            heartbeat_s=heartbeat_s,
        )
    finally:
        if slot is not None:
            bus.free_ring_slot(slot)


async def _serve(
    ctx: compat.Context,
    bus: FeedsBus,
    topics: list[str],
    *,
    rate: float | None,
    rc_ui: bool,
    batch: bool,
    outbox_size: int,
    stall_timeout: float,
    clearing: frozenset[str] | None,
    ring_slot: int | None,
    ring_pid: int | None = None,
    heartbeat_s: float | None = None,
) -> None:
    """Stream to one subscriber and serve its requests until it leaves."""
    async with (
        compat.open_stream(ctx) as stream,
        open_sub(
            bus,
            stream,
            rate=rate,
            rc_ui=rc_ui,
            batch=batch,
            outbox_size=outbox_size,
            stall_timeout=stall_timeout,
            clearing=clearing,
            ring_slot=ring_slot,
            heartbeat_s=heartbeat_s,
        ) as (sub, ready),
    ):
        session = _Session(bus, sub, ready, set(topics))
        async with trio.open_nursery() as tn:
            if ring_slot is not None and ring_pid is not None:
                tn.start_soon(_watch_reader, bus, sub, ring_pid)
            try:
                async for raw in stream:
                    session.handle(raw)
            except (
                PeerDisconnected,
                trio.BrokenResourceError,
                trio.ClosedResourceError,
            ):
                pass  # the subscriber went away: open_sub() forgets it
            tn.cancel_scope.cancel()


def _alive(pid: int | None) -> bool:
    """Is ``pid`` a process we can see (the same pid namespace)?"""
    if pid is None:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    return True


async def _watch_reader(bus: FeedsBus, sub: Sub, pid: int) -> None:
    """A ring subscriber gets no data on its stream, so a send cannot
    find it dead (and a5 never ends a dead peer's stream): its process is
    watched instead, and its death removes it (reason ``'broken'``)."""
    await compat.wait_pid_exit(pid)
    bus.drop_sub(sub, f'broken: its process (pid {pid}) exited', reason='broken')


async def producer_pid() -> int:
    """(producer) This producer's process id: a subscriber on the same host
    watches it, so a producer that dies ends its feeds instead of leaving
    them waiting."""
    await trio.lowlevel.checkpoint()
    return os.getpid()


def _id_of(raw: Any) -> int:
    i = raw.get('id') if isinstance(raw, dict) else None
    return i if isinstance(i, int) else 0


async def publish_from(
    source: AsyncIterable[dict[str, dict[str, Any]]],
    bus: FeedsBus | None = None,
    *,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Feed the bus from an async iterator (or receive channel) of
    ``{topic: quote}`` mappings, where a quote is a dict of fields with an
    optional ``'ticks'`` list.  Topics are declared on first sight."""
    bus = bus or get_feed_bus()
    task_status.started()
    async for batch in source:
        for topic, quote in batch.items():
            fields = dict(quote)
            ticks = fields.pop('ticks', None) or []
            try:
                bus.publish(topic, fields, ticks)
            except BadQuote as err:
                log.warning(str(err))  # counted in bus.refused; the feed goes on
