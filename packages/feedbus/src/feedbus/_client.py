'''
The subscriber side: ``open_feed()`` yields a :class:`Feed` that many
local tasks can read, and ``maybe_open_feed()`` shares one feed per set of
topics with per-key reference counts.

'''
from __future__ import annotations

import itertools
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager as acm
from dataclasses import dataclass, field
from typing import Any, Union

import msgspec
import trio

from tractor_services import compat

from ._bus import OUTBOX_SIZE, Outbox, SubStats, check_rate
from ._ctl import (
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
from ._msgs import Frame, Quote
from ._producer import open_feed_stream
from ._wire import decoder

log = compat.get_logger('client', 'feedbus')


class FeedError(RuntimeError):
    '''The producer refused a control request.'''


@dataclass
class Feed:
    '''A subscription to one producer's topics over one IPC stream.

    Read it with ``async for msg in feed`` (each ``msg`` a :class:`Quote`
    or, when throttled, a :class:`Frame`; batches are unpacked), or give
    each local task its own reader with ``feed.open_reader()``.
    '''
    stream: Any
    topics: set[str]
    first_quotes: dict[str, Quote | None]
    rate: float | None
    buffer: int = OUTBOX_SIZE
    _readers: set[Outbox] = field(default_factory=set)
    _default: Outbox | None = None
    _ids: Iterable[int] = field(default_factory=lambda: itertools.count(1))
    _pending: dict[int, Any] = field(default_factory=dict)
    local_stats: SubStats = field(default_factory=SubStats)
    #: error replies to requests nobody waits for (e.g. malformed ones)
    errors: list[Error] = field(default_factory=list)
    _error_seen: trio.Event = field(default_factory=trio.Event)

    # --- reading -----------------------------------------------------------

    def __aiter__(self) -> Feed:
        return self

    async def __anext__(self) -> Quote | Frame:
        assert self._default is not None
        try:
            return await self._default.receive()
        except trio.EndOfChannel:
            raise StopAsyncIteration from None

    async def receive(self) -> Quote | Frame:
        assert self._default is not None
        return await self._default.receive()

    @acm
    async def open_reader(self) -> AsyncIterator[Outbox]:
        '''A reader of its own for one local task: every message from now
        on, in a bounded buffer that drops (and counts) the oldest.'''
        reader = Outbox(self.buffer, self.local_stats)
        self._readers.add(reader)
        try:
            yield reader
        finally:
            self._readers.discard(reader)
            reader.close()

    # --- control -----------------------------------------------------------

    async def pause(self) -> None:
        '''Stop delivery; one message on this feed's stream, however many
        topics it carries.'''
        await self._request(Pause)

    async def resume(self) -> None:
        await self._request(Resume)

    async def subscribe(self, topics: Iterable[str]) -> dict[str, Quote | None]:
        '''Add topics; returns their latest quotes.'''
        topics = list(topics)
        res = await self._request(Subscribe, topics=topics)
        self.topics |= set(topics)
        return {t: msgspec.convert(q, Quote) if q else None for t, q in (res or {}).items()}

    async def unsubscribe(self, topics: Iterable[str]) -> None:
        topics = list(topics)
        await self._request(Unsubscribe, topics=topics)
        self.topics -= set(topics)

    async def set_rate(self, rate: float) -> None:
        '''Change this throttled feed's rate (Hz) without resubscribing.'''
        check_rate(rate)
        await self._request(SetRate, rate=rate)
        self.rate = rate

    async def stats(self) -> SubStats:
        '''This subscriber's counters, as the producer keeps them.'''
        return msgspec.convert(await self._request(GetStats), SubStats)

    async def _request(self, kind: type, **kw: Any) -> Any:
        rid = next(self._ids)  # type: ignore[call-overload]
        slot: dict[str, Any] = {'done': trio.Event()}
        self._pending[rid] = slot
        try:
            await self.stream.send(msgspec.to_builtins(kind(id=rid, **kw)))
            await slot['done'].wait()
        finally:
            self._pending.pop(rid, None)
        reply = slot['reply']
        if isinstance(reply, Error):
            raise FeedError(reply.error)
        return reply.result

    async def wait_errors(self, n: int) -> list[Error]:
        '''Wait until ``n`` unsolicited error replies have arrived.'''
        while len(self.errors) < n:
            await self._error_seen.wait()
        return self.errors

    # --- the pump ------------------------------------------------------------

    def _fan_out(self, msg: Any) -> None:
        for reader in list(self._readers):
            reader.put(msg)

    async def _pump(self) -> None:
        '''Drain the stream (never blocking between receives, so the a5
        context cannot overrun): data to every reader, replies to their
        requests.'''
        decode = _data_decoder.decode
        readers = self._readers
        try:
            async for raw in self.stream:
                if isinstance(raw, bytes):
                    msg = decode(raw)
                    if type(msg) is list:
                        for reader in list(readers):
                            for m in msg:
                                reader.put(m)
                    else:
                        for reader in list(readers):
                            reader.put(msg)
                    continue
                reply = decode_reply(raw)
                slot = self._pending.get(reply.id)
                if slot is not None:
                    slot['reply'] = reply
                    slot['done'].set()
                elif isinstance(reply, Error):
                    log.error(f'producer error: {reply.error}')
                    self.errors.append(reply)
                    self._error_seen.set()
                    self._error_seen = trio.Event()
        finally:
            for reader in list(readers):
                reader.close()
            for slot in self._pending.values():
                slot['reply'] = Error(id=0, cmd=None, error='the feed stream ended')
                slot['done'].set()


_data_decoder = decoder(Union[Quote, Frame])


@acm
async def open_feed(
    portal: Any,
    topics: Iterable[str],
    *,
    tick_throttle: float | None = None,
    allow_remote_ctl_ui: bool = False,
    batch: bool = True,
    buffer: int = OUTBOX_SIZE,
    **endpoint_kwargs: Any,
) -> AsyncIterator[Feed]:
    '''Subscribe to ``topics`` on the producer behind ``portal``.'''
    topics = list(topics)
    check_rate(tick_throttle)
    async with compat.open_context(
        portal,
        open_feed_stream,
        topics=topics,
        tick_throttle=tick_throttle,
        allow_remote_ctl_ui=allow_remote_ctl_ui,
        batch=batch,
        **endpoint_kwargs,
    ) as (ctx, first):
        async with compat.open_drained_stream(ctx) as stream:
            feed = Feed(
                stream=stream,
                topics=set(topics),
                first_quotes={t: msgspec.convert(q, Quote) if q else None for t, q in first.items()},
                rate=tick_throttle,
                buffer=buffer,
            )
            async with trio.open_nursery() as tn, feed.open_reader() as default:
                feed._default = default
                tn.start_soon(feed._pump)
                await stream.send(msgspec.to_builtins(Ready()))
                try:
                    yield feed
                finally:
                    tn.cancel_scope.cancel()
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
    portal: Any,
    topics: Iterable[str],
    *,
    tick_throttle: float | None = None,
    allow_remote_ctl_ui: bool = False,
) -> AsyncIterator[Feed]:
    '''Share one feed per (producer, set of topics, rate): the first caller
    opens it, later ones reuse it (reference counted per key), and it
    closes when the last user leaves.  The first caller's exit waits for
    the others.'''
    key = (tuple(portal.channel.uid), frozenset(topics), tick_throttle, allow_remote_ctl_ui)
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
            portal, topics, tick_throttle=tick_throttle,
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
