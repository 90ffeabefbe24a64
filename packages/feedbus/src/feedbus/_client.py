"""
The subscriber side: ``open_feed()`` yields a :class:`Feed` that many
local tasks can read, and ``maybe_open_feed()`` shares one feed per set of
topics with per-key reference counts.

"""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import asynccontextmanager as acm
from dataclasses import dataclass, field
from typing import Any, Union

import msgspec
import trio

from tractor_services import compat, host_id
from tractor_services._heartbeat import check_heartbeat, heartbeat_interval

from ._bus import (
    OUTBOX_SIZE,
    Outbox,
    SubStats,
    check_clearing,
    check_flag,
    check_outbox_size,
    check_rate,
    check_stall_timeout,
    check_topics,
)
from ._ctl import (
    Ack,
    Error,
    GetStats,
    Pause,
    Ready,
    Resume,
    SetRate,
    Subscribe,
    Unsubscribe,
    decode_reply,
)
from ._errors import FeedError, SubscriptionDropped
from ._msgs import CLEARING_TICK_TYPES, Frame, Quote
from ._producer import open_feed_stream, producer_pid
from ._readers import SEND_GRACE_S, StreamReaders
from ._ring import RingGone, RingReader, RingToken
from ._throttle import Throttler
from ._wire import decoder

#: seconds a ring reader that found its ring gone waits before it ends the
#: feed itself, when the producer's process is watched: the watch names
#: the death first (``PeerGone``)
RING_GONE_GRACE_S: float = 2.0

#: the longest a ring feed whose local readers are more than half full
#: waits before it looks again whether they have room (the backlog
#: meanwhile stays in the ring)
RING_BACKLOG_POLL_S: float = 0.008

_quote_decode = msgspec.msgpack.Decoder(Quote).decode
#: a ring read's quotes, decoded in one call (see ``RingReader._take``)
_quotes_decode = msgspec.msgpack.Decoder(list[Quote]).decode

log = compat.get_logger('client', 'feedbus')


@dataclass(kw_only=True, eq=False)
class Feed(StreamReaders):
    """A subscription to one producer's topics over one IPC stream.

    Read it with ``async for msg in feed`` (each ``msg`` a :class:`Quote`
    or, when throttled, a :class:`Frame`; batches are unpacked), or give
    each local task its own reader with ``feed.open_reader()``.

    If the producer removes this subscriber (it stalled, or the producer
    ended it), readers raise :class:`SubscriptionDropped` after the
    messages that arrived before, ``feed.dropped`` holds it, requests
    raise it, and ``await feed.stats()`` returns the final counters.

    ``feed.ring`` says whether quotes come through the producer's
    shared-memory ring (a producer on this host) rather than the stream;
    either way they read alike.
    """

    data_decoder = decoder(Union[Quote, Frame])
    end_is_error = True

    @staticmethod
    def decode_reply(raw: Any) -> Ack | Error:
        return decode_reply(raw)

    topics: set[str]
    first_quotes: dict[str, Quote | None]
    rate: float | None
    #: error replies to requests nobody waits for (e.g. malformed ones)
    errors: list[Error] = field(default_factory=list)
    _error_seen: trio.Event = field(default_factory=trio.Event)
    #: the ring to read, when the producer is on this host (else ``None``)
    ring_token: RingToken | None = None
    #: tick types that make a frame urgent (ring feeds frame on this side)
    clearing: frozenset[str] = CLEARING_TICK_TYPES
    #: the producer's process is watched (its death raises ``PeerGone``)
    watched: bool = False
    _ring_reader: RingReader | None = None
    _throttler: Throttler | None = None
    _ring_queue_stats: SubStats = field(default_factory=SubStats)

    @property
    def ring(self) -> bool:
        """Quotes come through the shared-memory ring."""
        return self.ring_token is not None

    # --- control -----------------------------------------------------------

    async def pause(self) -> None:
        """Stop delivery; one message on this feed's stream, however many
        topics it carries."""
        rr = self._ring_reader
        if rr is not None:  # a ring feed stops on its own side at once
            rr.pause()
            if self._throttler is not None:
                self._throttler.discard()
        await self._request(Pause)

    async def resume(self) -> None:
        await self._request(Resume)
        if self._ring_reader is not None:
            self._ring_reader.resume()

    async def subscribe(self, topics: Iterable[str]) -> dict[str, Quote | None]:
        """Add topics; returns their latest quotes."""
        topics = list(topics)
        res = await self._request(Subscribe, topics=topics)
        self.topics |= set(topics)
        if self._ring_reader is not None:
            self._ring_reader.set_topics(self.topics)
        return {
            t: msgspec.convert(q, Quote) if q else None for t, q in (res or {}).items()
        }

    async def unsubscribe(self, topics: Iterable[str]) -> None:
        topics = list(topics)
        await self._request(Unsubscribe, topics=topics)
        self.topics -= set(topics)
        if self._ring_reader is not None:
            self._ring_reader.set_topics(self.topics)

    async def set_rate(self, rate: float) -> None:
        """Change this throttled feed's rate (Hz) without resubscribing."""
        check_rate(rate)
        await self._request(SetRate, rate=rate)
        self.rate = rate
        if self._throttler is not None:
            self._throttler.rate = rate

    async def stats(self) -> SubStats:
        """This subscriber's counters, as the producer keeps them; once the
        producer removed it, the final ones (no request is sent).  A ring
        feed's delivery counters (delivered, messages, conflated, dropped,
        overruns, gaps) are its own, kept on this side."""
        try:
            stats = msgspec.convert(await self._request(GetStats), SubStats)
        except SubscriptionDropped as err:
            if not isinstance(err.stats, SubStats):
                raise
            stats = err.stats
        return self._ring_counters(stats)

    def _ring_counters(self, stats: SubStats) -> SubStats:
        rr = self._ring_reader
        if rr is None:
            return stats
        q = self._ring_queue_stats
        stats.ring = True
        stats.delivered = rr.delivered
        stats.messages = rr.messages
        stats.conflated = rr.conflated
        stats.gaps = rr.gaps
        stats.dropped = rr.dropped + q.dropped
        stats.overruns = q.overruns
        return stats

    # --- the ring -----------------------------------------------------------------

    @acm
    async def _running(self) -> AsyncIterator[None]:
        async with super()._running():
            if self.ring_token is None:
                yield
                return
            reader = RingReader(
                self.ring_token, set(self.topics), _quote_decode, _quotes_decode
            )
            self._ring_reader = reader
            try:
                async with trio.open_nursery() as tn:
                    tn.start_soon(self._ring_pump, reader)
                    try:
                        yield
                    finally:
                        tn.cancel_scope.cancel()
            finally:
                reader.close()

    def _deliver_local(self, msgs: list[Any]) -> None:
        for r in list(self._readers):
            try:
                for m in msgs:
                    r.put(m)
            except trio.ClosedResourceError:
                pass

    async def _room(self, reader: RingReader) -> int:
        """Room in the fullest local reader, waiting while it is more than
        half full, the backlog staying in the ring; but never until the
        ring is half lapped: then a local reader that does not keep up
        loses its oldest (counted), as on the stream path, rather than the
        whole feed a gap.  See :func:`_wait_for_room` for how it waits."""
        half = self.buffer // 2
        cap = reader.token.cap // 2

        def fullest() -> int:
            return max((len(r) for r in self._readers), default=0)

        def ready() -> bool:
            return fullest() <= half or reader.lag() > cap

        await _wait_for_room(fullest, ready)
        return max(self.buffer - fullest(), 1)

    async def _ring_pump(self, reader: RingReader) -> None:
        """Read the ring into the local readers (this subscriber's own
        framing when throttled), until the feed ends; a ring that goes
        away ends the feed with :class:`SubscriptionDropped`."""
        try:
            if self.rate is None:
                while self.dropped is None:
                    # the ring holds the backlog: read no more than the
                    # fullest local reader has room for (a reader that
                    # falls more than the ring behind gets a gap)
                    room = await self._room(reader)
                    batch = await reader.read(room)
                    if self.dropped is not None:
                        break
                    self.received += 1
                    reader.messages += 1
                    reader.delivered += len(batch)
                    self._deliver_local(batch)
                    reader.publish_counters()
                return
            quotes = Outbox(self.buffer, self._ring_queue_stats)
            throttler = self._throttler = Throttler(self.rate, clearing=self.clearing)

            async def send_frame(frame: Frame) -> None:
                n = 0
                for tf in frame.topics.values():
                    n += tf.n_quotes
                self.received += 1
                reader.messages += 1
                reader.delivered += n
                reader.conflated += n - len(frame.topics)
                self._deliver_local([frame])
                reader.publish_counters()
                await trio.lowlevel.checkpoint()

            half = max(1, self.buffer // 2)

            def queued() -> int:
                return len(quotes)

            def queue_ready() -> bool:
                return len(quotes) < half

            async with trio.open_nursery() as tn:
                tn.start_soon(throttler.run, quotes, send_frame)
                while self.dropped is None:
                    # the throttler takes in its whole queue when it fills
                    # halfway: read no more than fits, the backlog staying
                    # in the ring.  Never drop from the queue: it holds
                    # trades (a throttler starved for longer than the ring
                    # lasts gets a gap, counted)
                    await _wait_for_room(queued, queue_ready)
                    for m in await reader.read(self.buffer - len(quotes)):
                        quotes.put(m)
                quotes.close()
        except RingGone as err:
            if self.dropped is None:
                # whoever watches the producer's process (we, or the
                # caller, as tractor-sampler's market feeds do) names its
                # death first
                await trio.sleep(RING_GONE_GRACE_S if self.watched else 1.0)
            self._drop(SubscriptionDropped('broken', str(err), None))

    async def _request(self, kind: type, **kw: Any) -> Any:
        reply = await self._ask(lambda rid: kind(id=rid, **kw))
        if isinstance(reply, Error):
            raise FeedError(reply.error)
        return reply.result

    def _unsolicited(self, reply: Any) -> None:
        if isinstance(reply, Error):
            log.error(f'producer error: {reply.error}')
            self.errors.append(reply)
            self._error_seen.set()
            self._error_seen = trio.Event()

    def _ended_reply(self) -> Error:
        return Error(id=0, cmd=None, error='the feed stream ended')

    async def wait_errors(self, n: int) -> list[Error]:
        """Wait until ``n`` unsolicited error replies have arrived."""
        while len(self.errors) < n:
            await self._error_seen.wait()
        return self.errors


async def _wait_for_room(level: Callable[[], int], ready: Callable[[], bool]) -> None:
    """(ring feeds) Wait until ``ready()``: by yielding while ``level()``
    (how full the local queues are) keeps falling, since a consumer that
    is reading drains them within a few turns; by sleeping 1 ms, doubling
    up to :data:`RING_BACKLOG_POLL_S`, only while it does not."""
    tries = 0
    last = level()
    while not ready():
        now = level()
        if now < last:
            tries = 0  # draining: look again at the next turn
        last = now
        tries += 1
        if tries <= 3:
            await trio.lowlevel.checkpoint()
        else:
            # the exponent is capped: a long wait must not overflow a float
            await trio.sleep(min(0.001 * 2 ** min(tries - 4, 16), RING_BACKLOG_POLL_S))


#: ``0`` turns the shared-memory ring off by default (``open_feed(ring=None)``)
RING_ENV = 'FEEDBUS_RING'


def ring_default() -> bool:
    """``open_feed``'s ``ring`` when not given: on, unless ``$FEEDBUS_RING``
    is ``0``; another value is one ``ValueError`` naming it."""
    raw = os.environ.get(RING_ENV, '1')
    if raw not in ('0', '1'):
        raise ValueError(f'${RING_ENV}={raw!r} must be 0 or 1')
    return raw == '1'


@acm
async def open_feed(
    portal: compat.Portal,
    topics: Iterable[str],
    *,
    tick_throttle: float | None = None,
    allow_remote_ctl_ui: bool = False,
    batch: bool = True,
    buffer: int = OUTBOX_SIZE,
    watch_producer: bool = True,
    ring: bool | None = None,
    **endpoint_kwargs: Any,
) -> AsyncIterator[Feed]:
    """Subscribe to ``topics`` on the producer behind ``portal``.

    ``ring`` (default on; ``$FEEDBUS_RING=0`` turns the default off for a
    process and its subactors): if the producer shares this host's memory
    (the same :func:`tractor_services.host_id`), quotes come through its
    shared-memory ring and this side frames them; otherwise, and with
    ``ring=False``, through the stream.  Control (pause, resume, stats,
    a drop) always travels on the stream.

    With ``watch_producer`` (and a producer on this host), a producer
    process that dies cancels the block and raises
    :class:`tractor_services.PeerGone` at once.  If the producer removes
    this subscriber, the block raises :class:`SubscriptionDropped` (its
    readers do as soon as they reach that point).

    Arguments are checked here, before anything is sent: a bad one raises
    one ``ValueError`` naming it."""
    iterable = isinstance(topics, Iterable) and not isinstance(topics, (str, bytes))
    topics = check_topics(list(topics) if iterable else topics)
    check_rate(tick_throttle)
    check_flag('allow_remote_ctl_ui', allow_remote_ctl_ui)
    check_flag('batch', batch)
    check_outbox_size(buffer, 'buffer')
    if ring is None:
        ring = ring_default()
    check_flag('ring', ring)
    for name, check in (
        ('outbox_size', check_outbox_size),
        ('stall_timeout', check_stall_timeout),
        ('clearing', check_clearing),
    ):
        if name in endpoint_kwargs:
            check(endpoint_kwargs[name])
    clearing = endpoint_kwargs.get('clearing')
    here = host_id() if ring else None
    if here is not None:
        endpoint_kwargs['ring_host'] = here
        endpoint_kwargs['ring_pid'] = os.getpid()
    heartbeat_s = _heartbeat_s(portal, endpoint_kwargs)
    watching: Any = contextlib.nullcontext()
    if watch_producer:
        pid = await portal.run(producer_pid)
        watching = compat.raise_on_peer_exit(pid, 'the feed producer', portal)
    async with (
        watching,
        compat.open_context(
            portal,
            open_feed_stream,
            topics=topics,
            tick_throttle=tick_throttle,
            allow_remote_ctl_ui=allow_remote_ctl_ui,
            batch=batch,
            **endpoint_kwargs,
        ) as (ctx, first),
    ):
        token = None
        if here is not None:
            token = first.get('ring')
            token = msgspec.convert(token, RingToken) if token else None
            first = first['latest']
        async with compat.open_drained_stream(ctx) as stream:
            feed = Feed(
                stream=stream,
                topics=set(topics),
                first_quotes={
                    t: msgspec.convert(q, Quote) if q else None
                    for t, q in first.items()
                },
                rate=tick_throttle,
                buffer=buffer,
                ring_token=token,
                clearing=CLEARING_TICK_TYPES
                if clearing is None
                else frozenset(clearing),
                watched=watch_producer,
                heartbeat_s=heartbeat_s,
                peer_what='the feed producer',
            )
            async with feed._running():
                await compat.send_whole_or_abort(
                    stream, msgspec.to_builtins(Ready()), SEND_GRACE_S
                )
                yield feed
                if feed.dropped is not None:
                    raise feed.dropped
        await ctx.cancel()


def _heartbeat_s(
    portal: compat.Portal, endpoint_kwargs: dict[str, Any]
) -> float | None:
    """Heartbeats from a producer on another host (or from every one with
    ``$TRACTOR_SERVICES_HEARTBEATS=1``): asked for in ``endpoint_kwargs``,
    unless the caller gave ``heartbeat_s`` itself; the interval asked."""
    if 'heartbeat_s' not in endpoint_kwargs:
        endpoint_kwargs['heartbeat_s'] = heartbeat_interval(portal)
    return check_heartbeat(endpoint_kwargs['heartbeat_s'])


@dataclass
class _Shared:
    feed: Feed | None = None
    users: int = 0
    ready: trio.Event = field(default_factory=trio.Event)
    idle: trio.Event = field(default_factory=trio.Event)


_cache: dict[tuple, _Shared] = {}


@acm
async def maybe_open_feed(
    portal: compat.Portal,
    topics: Iterable[str],
    *,
    tick_throttle: float | None = None,
    allow_remote_ctl_ui: bool = False,
) -> AsyncIterator[Feed]:
    """Share one feed per (producer, set of topics, rate): the first caller
    opens it, later ones reuse it (reference counted per key), and it
    closes when the last user leaves.  The first caller's exit waits for
    the others.

    Why not ``tractor.trionics.maybe_open_context``, which is meant for
    this: tractor 0.1.0a5 counts its users globally, not per key (one
    counter for every cached resource of the actor), so a feed stays open
    for as long as any *other* shared resource has a user, and may never
    close.  The per-key count below is ours and calls nothing of
    tractor's, so it needs no adapter: it would stay as it is on a fixed
    tractor."""
    key = (
        tuple(portal.channel.uid),
        frozenset(topics),
        tick_throttle,
        allow_remote_ctl_ui,
    )
    shared = _cache.get(key)
    if shared is not None:
        await shared.ready.wait()
        if shared.feed is not None:
            shared.users += 1
            try:
                yield shared.feed
            finally:
                shared.users -= 1
                if shared.users == 0:
                    shared.idle.set()
            return
    shared = _cache[key] = _Shared(users=1)
    try:
        async with open_feed(
            portal,
            topics,
            tick_throttle=tick_throttle,
            allow_remote_ctl_ui=allow_remote_ctl_ui,
        ) as feed:
            shared.feed = feed
            shared.ready.set()
            try:
                yield feed
            finally:
                shared.users -= 1
                if shared.users:
                    await shared.idle.wait()
    finally:
        shared.feed = None
        shared.ready.set()
        if _cache.get(key) is shared:
            del _cache[key]
