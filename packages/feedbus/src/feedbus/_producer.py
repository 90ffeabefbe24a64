'''
The producer side: the ``@tractor.context`` endpoint a subscriber opens,
and a helper that feeds the bus from any async source.

'''
from __future__ import annotations

import math
import os
from collections.abc import AsyncIterable, AsyncIterator
from contextlib import asynccontextmanager as acm
from typing import Any

import msgspec
import tractor
import trio

from tractor_services import compat

from ._bus import (
    OUTBOX_SIZE,
    STALL_TIMEOUT_S,
    FeedsBus,
    Outbox,
    Sub,
    SubStats,
    check_rate,
    get_feed_bus,
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
    decode_ctl,
)
from ._msgs import CLEARING_TICK_TYPES, Frame
from ._throttle import Throttler
from ._wire import pack, pack_many

log = compat.get_logger('producer', 'feedbus')

_encode = msgspec.to_builtins


class _Stalled(Exception):
    pass


async def _send(stream: Any, msg: Any, timeout: float) -> None:
    '''One bounded send of a control reply.'''
    with trio.move_on_after(timeout) as cs:
        await stream.send(_encode(msg))
    if cs.cancelled_caught:
        raise _Stalled(f'a send took longer than {timeout} s')


async def _deliver(
    bus: FeedsBus,
    sub: Sub,
    ready: trio.Event,
    batch: bool,
    stall_timeout: float,
    done: trio.CancelScope,
) -> None:
    '''The subscriber's own sender task: outbox -> its stream, as msgpack
    bytes (see :mod:`feedbus._wire`).  One cancel scope watches every send:
    its deadline is armed for the length of a send only.'''
    stats = sub.stats
    stream = sub.ipc
    watch = trio.CancelScope()
    inf = math.inf
    try:
        with watch:
            await ready.wait()
            if sub.throttler is not None:
                async def send_frame(frame: Frame) -> None:
                    watch.deadline = trio.current_time() + stall_timeout
                    await stream.send(pack(frame))
                    watch.deadline = inf
                    stats.messages += 1
                    n = 0
                    for tf in frame.topics.values():
                        n += tf.n_quotes
                    stats.delivered += n
                    stats.conflated += n - len(frame.topics)

                await sub.throttler.run(sub.send_chan, send_frame)
                return
            outbox = sub.send_chan
            while True:
                await outbox.wait_nonempty()
                items = outbox.take_all() if batch else [outbox.take_one()]
                data = pack(items[0]) if len(items) == 1 else pack_many(items)
                watch.deadline = trio.current_time() + stall_timeout
                await stream.send(data)
                watch.deadline = inf
                stats.messages += 1
                stats.delivered += len(items)
        if watch.cancelled_caught:
            raise _Stalled(f'a send took longer than {stall_timeout} s')
    except trio.EndOfChannel:
        return
    except _Stalled as err:
        bus.drop_sub(sub, f'stalled: {err}')
    except (trio.BrokenResourceError, trio.ClosedResourceError, compat.PeerDisconnected) as err:
        bus.drop_sub(sub, f'stream broken: {err!r}')
    done.cancel()


@acm
async def open_sub(
    bus: FeedsBus,
    stream: Any,
    *,
    rate: float | None = None,
    rc_ui: bool = False,
    batch: bool = True,
    outbox_size: int = OUTBOX_SIZE,
    stall_timeout: float = STALL_TIMEOUT_S,
    clearing: frozenset[str] = CLEARING_TICK_TYPES,
) -> AsyncIterator[tuple[Sub, trio.Event]]:
    '''Make ``stream`` a subscriber of ``bus``: a :class:`Sub` with its own
    outbox and sender task (a throttler when ``rate`` is set), which starts
    sending once the yielded event is set.  The caller adds the Sub to
    topics; on exit it is removed from all and its task cancelled.  If the
    bus drops the subscriber, the block is cancelled.'''
    if not (isinstance(outbox_size, int) and outbox_size > 0):
        raise ValueError(f'outbox_size={outbox_size!r} must be a positive int')
    stats = SubStats()
    sub = Sub(
        ipc=stream,
        send_chan=Outbox(outbox_size, stats),
        throttle_cs=trio.CancelScope(),
        rc_ui=rc_ui,
        stats=stats,
        throttler=Throttler(rate, clearing=clearing) if rate is not None else None,
    )
    ready = trio.Event()
    async with trio.open_nursery() as tn:
        async def sender() -> None:
            with sub.throttle_cs:
                await _deliver(bus, sub, ready, batch, stall_timeout, tn.cancel_scope)

        tn.start_soon(sender)
        try:
            yield sub, ready
        finally:
            bus.forget_sub(sub)
            tn.cancel_scope.cancel()


@tractor.context
async def open_feed_stream(
    ctx: tractor.Context,
    topics: list[str],
    tick_throttle: float | None = None,
    allow_remote_ctl_ui: bool = False,
    batch: bool = True,
    outbox_size: int = OUTBOX_SIZE,
    stall_timeout: float = STALL_TIMEOUT_S,
    clearing: list[str] | None = None,
) -> None:
    '''Subscribe the calling actor to ``topics`` on this actor's bus.

    ``started()`` carries the latest quote per topic (``None`` if none yet).
    Then the stream delivers :class:`Quote` s (several in one message when
    the subscriber lags and ``batch`` is on), or throttled
    :class:`Frame` s at most ``tick_throttle`` per second, and serves the
    control protocol (``feedbus._ctl``) on the same stream.

    '''
    bus = get_feed_bus()
    rate = check_rate(tick_throttle)
    if isinstance(topics, str) or not topics:
        raise ValueError(f'topics must be a non-empty list of topic names, not {topics!r}')
    unknown = sorted(set(topics) - bus.topics)
    if unknown:
        raise ValueError(
            f'unknown topic(s) {unknown}: this producer serves {sorted(bus.topics)}'
        )
    if not (isinstance(outbox_size, int) and outbox_size > 0):
        raise ValueError(f'outbox_size={outbox_size!r} must be a positive int')

    await ctx.started({t: _encode(q) if (q := bus.latest(t)) else None for t in topics})

    async with compat.open_stream(ctx) as stream, open_sub(
        bus, stream,
        rate=rate,
        rc_ui=allow_remote_ctl_ui,
        batch=batch,
        outbox_size=outbox_size,
        stall_timeout=stall_timeout,
        clearing=frozenset(clearing) if clearing else CLEARING_TICK_TYPES,
    ) as (sub, ready):
        stats = sub.stats
        throttler = sub.throttler
        subscribed = set(topics)
        paused = False
        for t in subscribed:
            bus.add_subs(t, {sub})
        try:
            async for raw in stream:
                stats.requests += 1
                try:
                    msg = decode_ctl(raw)
                except ValueError as err:
                    await _reply(stream, Error(id=_id_of(raw), cmd=None, error=str(err)), stall_timeout)
                    continue
                cmd = type(msg).__name__.lower()
                result: Any = None
                try:
                    match msg:
                        case Ready():
                            ready.set()
                            continue
                        case Pause():
                            paused = True
                            for t in subscribed:
                                bus.remove_subs(t, {sub})
                            sub.send_chan.clear()
                        case Resume():
                            paused = False
                            for t in subscribed:
                                bus.add_subs(t, {sub})
                        case Subscribe(topics=new):
                            bad = sorted(set(new) - bus.topics)
                            if bad:
                                raise ValueError(f'unknown topic(s) {bad}: this producer serves {sorted(bus.topics)}')
                            added = set(new) - subscribed
                            subscribed |= added
                            if not paused:
                                for t in added:
                                    bus.add_subs(t, {sub})
                            result = {t: _encode(q) if (q := bus.latest(t)) else None for t in sorted(added)}
                        case Unsubscribe(topics=gone):
                            for t in set(gone) & subscribed:
                                bus.remove_subs(t, {sub})
                            subscribed -= set(gone)
                        case SetRate(rate=new_rate):
                            if throttler is None:
                                raise ValueError('this subscription is not throttled: subscribe with tick_throttle to set a rate')
                            throttler.rate = check_rate(new_rate) or throttler.rate
                        case GetStats():
                            result = _encode(stats)
                except ValueError as err:
                    await _reply(stream, Error(id=msg.id, cmd=cmd, error=str(err)), stall_timeout)
                    continue
                await _reply(stream, Ack(id=msg.id, cmd=cmd, result=result), stall_timeout)
        except (compat.PeerDisconnected, trio.BrokenResourceError, trio.ClosedResourceError):
            pass  # the subscriber went away: open_sub() forgets it


async def producer_pid() -> int:
    '''(producer) This producer's process id: a subscriber on the same host
    watches it, so a producer that dies ends its feeds instead of leaving
    them waiting.'''
    await trio.lowlevel.checkpoint()
    return os.getpid()


def _id_of(raw: Any) -> int:
    i = raw.get('id') if isinstance(raw, dict) else None
    return i if isinstance(i, int) else 0


async def _reply(stream: Any, msg: Any, timeout: float) -> None:
    try:
        await _send(stream, msg, timeout)
    except _Stalled:
        pass


async def publish_from(
    source: AsyncIterable[dict[str, dict[str, Any]]],
    bus: FeedsBus | None = None,
    *,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    '''Feed the bus from an async iterator (or receive channel) of
    ``{topic: quote}`` mappings, where a quote is a dict of fields with an
    optional ``'ticks'`` list.  Topics are declared on first sight.'''
    bus = bus or get_feed_bus()
    task_status.started()
    async for batch in source:
        for topic, quote in batch.items():
            fields = dict(quote)
            ticks = fields.pop('ticks', None) or []
            bus.publish(topic, fields, ticks)
