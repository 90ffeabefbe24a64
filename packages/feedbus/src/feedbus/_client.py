"""
The subscriber side: ``open_feed()`` yields a :class:`Feed` that many
local tasks can read, and ``maybe_open_feed()`` shares one feed per set of
topics with per-key reference counts.

"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager as acm
from dataclasses import dataclass, field
from typing import Any, Union

import msgspec
import trio

from tractor_services import compat

from ._bus import (
    OUTBOX_SIZE,
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
from ._msgs import Frame, Quote
from ._producer import open_feed_stream, producer_pid
from ._readers import SEND_GRACE_S, StreamReaders
from ._wire import decoder

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

    # --- control -----------------------------------------------------------

    async def pause(self) -> None:
        """Stop delivery; one message on this feed's stream, however many
        topics it carries."""
        await self._request(Pause)

    async def resume(self) -> None:
        await self._request(Resume)

    async def subscribe(self, topics: Iterable[str]) -> dict[str, Quote | None]:
        """Add topics; returns their latest quotes."""
        topics = list(topics)
        res = await self._request(Subscribe, topics=topics)
        self.topics |= set(topics)
        return {
            t: msgspec.convert(q, Quote) if q else None for t, q in (res or {}).items()
        }

    async def unsubscribe(self, topics: Iterable[str]) -> None:
        topics = list(topics)
        await self._request(Unsubscribe, topics=topics)
        self.topics -= set(topics)

    async def set_rate(self, rate: float) -> None:
        """Change this throttled feed's rate (Hz) without resubscribing."""
        check_rate(rate)
        await self._request(SetRate, rate=rate)
        self.rate = rate

    async def stats(self) -> SubStats:
        """This subscriber's counters, as the producer keeps them; once the
        producer removed it, the final ones (no request is sent)."""
        try:
            return msgspec.convert(await self._request(GetStats), SubStats)
        except SubscriptionDropped as err:
            if isinstance(err.stats, SubStats):
                return err.stats
            raise

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
    **endpoint_kwargs: Any,
) -> AsyncIterator[Feed]:
    """Subscribe to ``topics`` on the producer behind ``portal``.

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
    for name, check in (
        ('outbox_size', check_outbox_size),
        ('stall_timeout', check_stall_timeout),
        ('clearing', check_clearing),
    ):
        if name in endpoint_kwargs:
            check(endpoint_kwargs[name])
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
            )
            async with feed._running():
                await compat.send_whole_or_abort(
                    stream, msgspec.to_builtins(Ready()), SEND_GRACE_S
                )
                yield feed
                if feed.dropped is not None:
                    raise feed.dropped
        await ctx.cancel()


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
