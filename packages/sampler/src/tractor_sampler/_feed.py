"""
The client side of the feed daemons: :func:`open_market_feed` finds (or has the
root spawn) ``feedd.<backend>``, attaches each topic's buffers read-only
and subscribes to its quotes and status reports, from any actor or
another program.

"""

from __future__ import annotations

import functools
import os
from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import asynccontextmanager as acm
from dataclasses import dataclass, field
from typing import Any

import msgspec

import feedbus
from feedbus.protocol import StreamReaders
from feedbus.wire import decoder as wire_decoder
from tractor_services import (
    RestartPolicy,
    ServiceError,
    compat,
    maybe_spawn_daemon,
    one_peer_gone,
    resolve_registry_addr,
)
from tractor_services._heartbeat import forced as heartbeats_forced
from tractor_services._heartbeat import heartbeat_interval

from ._client import SAMPLERD, maybe_open_samplerd
from ._datadir import check_store_setting
from ._feedd import attach_feed, check_buffers, check_topics, feedd, feedd_name
from ._info import FeedInfo
from ._introspect import query_feed
from ._msgs import FeedStatus
from ._plugins import DEFAULT_BACKEND
from ._pool import check_group_members
from ._remote import (
    DEFAULT_SNAPSHOT_ROWS,
    check_remote,
    maybe_open_remote_bars,
    remote_bars_wanted,
)
from ._schedule import check_period
from .shm import ShmArray, ShmGroup, ShmToken, attach_shm_array, attach_shm_group

log = compat.get_logger('feed', 'tractor_sampler')

#: how the root's manager restarts a feed daemon whose process dies
FEEDD_POLICY = RestartPolicy(
    restart='transient', max_restarts=3, within_s=60.0, backoff_s=0.5
)


#: the feed daemons' buffer groups this process has attached (read-only),
#: by data segment name: [group, members handed out]; a group is attached
#: once however many topics (and feeds) use it, and closed with its last
_attached_groups: dict[str, list[Any]] = {}


def attach_buffer(token: ShmToken | dict) -> ShmArray:
    """A read-only handle on the buffer ``token`` names: a member of a
    group through this process' one attachment of the group (see
    :func:`release_buffer`), a standalone buffer on its own."""
    tok = ShmToken.from_msg(token)
    if tok.members == 1:
        return attach_shm_array(tok, readonly=True)
    entry = _attached_groups.get(tok.shm_name)
    if entry is None or entry[0].closed:
        entry = _attached_groups[tok.shm_name] = [
            attach_shm_group(tok, readonly=True),
            0,
        ]
    group: ShmGroup = entry[0]
    shm = group.member(tok.member, token=tok)
    entry[1] += 1
    return shm


def release_buffer(shm: ShmArray) -> None:
    """Done with a handle from :func:`attach_buffer`: a group is closed
    when its last member handle is released."""
    tok = shm.token
    if tok.members == 1:
        shm.close()
        return
    entry = _attached_groups.get(tok.shm_name)
    if entry is None:
        return
    entry[1] -= 1
    if entry[1] <= 0:
        del _attached_groups[tok.shm_name]
        entry[0].close()


def buffers_msg(buffers: Any) -> dict[str, dict[str, Any]]:
    """``buffers`` checked here, before anything starts (the daemon would
    refuse bad ones only once spawned): a ``ValueError`` naming the buffer;
    else their IPC form, ``{repr(period): {'rows': n, 'history': m,
    **options}}``, which the daemon checks again."""
    return {repr(p): spec.to_msg() for p, spec in check_buffers(buffers).items()}


@acm
async def maybe_open_feedd(
    backend: str = DEFAULT_BACKEND,
    *,
    registry_addr: str | tuple[str, int] | None = None,
    buffers: dict[float, Any] | None = None,
    restart: RestartPolicy | dict | None = None,
    plugins: Sequence[str] = (),
    loglevel: str | None = None,
    group_members: int | None = None,
    host: str | None = None,
    linger: float | None = None,
    stale_after: float | None = None,
    daemon_restart: RestartPolicy | None = None,
    data_dir: str | os.PathLike[str] | bool | None = None,
) -> AsyncIterator[Any]:
    """A portal to ``backend``'s feed daemon, spawned through the root's
    service manager if it is not running (then with ``buffers``, the quote
    streams' ``restart`` policy, extra ``plugins`` modules and
    ``group_members``, the slots of each shared-memory group of buffers;
    a running daemon keeps the settings it started with).  Leaving does
    not stop it.  ``host``: the feed daemon of a host that joined the
    registry (``feedd.<backend>@<label>``, with that host's samplerd;
    see docs/multihost.md).  ``linger``, ``stale_after``: the seconds a
    topic without clients keeps running, and without quotes is ``up``
    (defaults 30 s; see docs/sampler.md, "Lingering, stop and stale").
    ``daemon_restart``: how the root's manager restarts the daemon's
    process (default :data:`FEEDD_POLICY`; ``samplerd run --config``).
    ``data_dir``: the bar store's data directory (default: the data
    directory rule of docs/storage.md; ``False``: no bar store)."""
    kwargs: dict[str, Any] = {
        'backend': backend,
        **_lifecycle_kwargs(linger, stale_after),
    }
    data_dir = check_store_setting(data_dir)
    if data_dir is not None:
        kwargs['data_dir'] = data_dir
    if group_members is not None:
        kwargs['group_members'] = check_group_members(group_members)
    if buffers is not None:
        kwargs['buffers'] = buffers_msg(buffers)
    if restart is not None:
        kwargs['restart'] = msgspec.to_builtins(
            restart
            if isinstance(restart, RestartPolicy)
            else msgspec.convert(restart, RestartPolicy)
        )
    if plugins:
        kwargs['plugins'] = list(plugins)
    # the feed daemon requires samplerd: it runs first, and stops after it
    start: dict[str, Any] = {
        'restart': daemon_restart or FEEDD_POLICY,
        'requires': [SAMPLERD],
    }
    async with maybe_open_samplerd(registry_addr, host=host):
        pass
    if loglevel:
        start['loglevel'] = loglevel
    async with maybe_spawn_daemon(
        feedd_name(backend),
        functools.partial(feedd, **kwargs),
        registry_addr=registry_addr,
        host=host,
        **start,
    ) as portal:
        yield portal


@dataclass(kw_only=True, eq=False)
class StatusStream(StreamReaders):
    """The :class:`FeedStatus` reports of a feed's topics."""

    data_decoder = wire_decoder(FeedStatus)

    @staticmethod
    def decode_reply(raw: Any) -> Any:
        raise ValueError(f'unexpected message on a status stream: {raw!r}')

    def _ended_reply(self) -> Any:
        return None


@dataclass(kw_only=True, eq=False)
class MarketFeed:
    """Live topics of one backend: per topic its buffers (read-only, by
    period), its quote stream and its status.

    ``async for msg in feed`` reads the quotes (:class:`feedbus.Quote`, or
    :class:`feedbus.Frame` when throttled); ``feed.quotes`` is the
    underlying :class:`feedbus.Feed` (``pause()``, ``resume()``,
    ``set_rate()``, ``stats()``, ``open_reader()``)."""

    backend: str
    topics: list[str]
    #: topic -> period -> buffer, attached read-only
    buffers: dict[str, dict[float, ShmArray]]
    quotes: feedbus.Feed
    #: the status reports of these topics, as they change
    status: StatusStream
    #: topic -> its status when this feed opened
    first_status: dict[str, FeedStatus]
    #: topic -> what the backend's symbol_info said (None without one)
    symbol_info: dict[str, dict[str, Any] | None] = field(default_factory=dict)
    portal: Any = None

    def buffer(self, topic: str, period_s: float = 1.0) -> ShmArray:
        """``topic``'s buffer of ``period_s`` bars."""
        try:
            by_period = self.buffers[topic]
        except KeyError:
            raise KeyError(
                f'this feed has no topic {topic!r} (it has {self.topics})'
            ) from None
        p = check_period(period_s)
        try:
            return by_period[p]
        except KeyError:
            raise KeyError(
                f'{topic!r} has no {p:g} s buffer (periods: {sorted(by_period)})'
            ) from None

    def __aiter__(self) -> Any:
        return self.quotes.__aiter__()

    async def pause(self) -> None:
        await self.quotes.pause()

    async def resume(self) -> None:
        await self.quotes.resume()

    async def info(self) -> FeedInfo:
        """The feed daemon's backend and topics: states, counters,
        buffers and subscribers (:class:`~tractor_sampler.FeedInfo`)."""
        return await query_feed(self.portal)


def _with_record(config: dict[str, Any] | None, record: Any) -> dict[str, Any] | None:
    """``config`` with the feed daemon's ``record`` option (refused here,
    before anything starts, unless a bool)."""
    if not isinstance(record, bool):
        raise ValueError(f'record={record!r} must be True or False')
    return {**(config or {}), 'record': True} if record else config


@acm
async def open_market_feed(
    topics: Iterable[str],
    backend: str = DEFAULT_BACKEND,
    *,
    tick_throttle: float | None = None,
    registry_addr: str | tuple[str, int] | None = None,
    config: dict[str, Any] | None = None,
    buffers: dict[float, Any] | None = None,
    restart: RestartPolicy | dict | None = None,
    plugins: Sequence[str] = (),
    loglevel: str | None = None,
    allow_remote_ctl_ui: bool = False,
    buffer: int = feedbus.OUTBOX_SIZE,
    group_members: int | None = None,
    remote_bars: bool | None = None,
    remote_rows: int = DEFAULT_SNAPSHOT_ROWS,
    record: bool = False,
    feed_host: str | None = None,
    linger: float | None = None,
    stale_after: float | None = None,
    data_dir: str | os.PathLike[str] | bool | None = None,
) -> AsyncIterator[MarketFeed]:
    """Stream ``topics`` (symbols) of ``backend`` (default ``'sim'``): find
    or spawn its feed daemon (see :func:`maybe_open_feedd` for ``buffers``,
    ``restart``, ``plugins``), start the topics there if they are not
    running (with the backend ``config``: a topic already running with
    another config is an error; leave ``config`` out to share it), attach
    their buffers read-only and subscribe to their quotes (``tick_throttle``
    Hz frames, or every quote) and status.

    Refusals (an unknown symbol, a config the backend rejects) raise
    ``ValueError`` naming the problem; nothing is started for them.  A
    daemon that cannot start (an unknown backend, a plugin module that does
    not import) raises :class:`~tractor_services.ServiceFailed` naming it.
    If the daemon's process dies, the block is cancelled and
    :class:`~tractor_services.PeerGone` raised (the root's manager restarts
    the daemon; open the feed again).

    On another host than the feed daemon (its host id is not ours) the
    buffers come by stream instead of shared memory: a snapshot of the last
    ``remote_rows`` rows, then every change, into in-process buffers with
    the same read API (see :mod:`tractor_sampler._remote`);
    ``remote_bars=True`` forces that on one host, ``False`` forbids it.

    ``feed_host`` asks for the feed daemon of a host that joined the
    registry (its label or address: ``samplerd run --join``); it runs
    there, its bars stepped by that host's samplerd.

    Needs a service root at ``registry_addr`` (the ``samplerd`` command, or
    :func:`tractor_services.open_service_root`); in a program without a
    tractor runtime it boots a client root actor.  Leaving detaches and
    unsubscribes; the daemon keeps running.

    ``record=True``: the feed daemon also appends every quote of these
    topics to their tick log (see :mod:`tractor_sampler._ticklog`).

    ``linger`` / ``stale_after`` (seconds, for a daemon spawned here): a
    topic whose last client left stops after ``linger``; one without a
    quote for ``stale_after`` is reported ``stale``.  When every topic of
    this feed ends (``samplerd stop``, :func:`~tractor_sampler.stop_topic`)
    its quote iteration ends; ``feed.status`` said why.

    ``data_dir`` (for a daemon spawned here): its bar store's data
    directory; ``False``: no bar store (default: see docs/storage.md)."""
    names = check_topics(topics)
    _lifecycle_kwargs(linger, stale_after)  # refused before a root boots
    data_dir = check_store_setting(data_dir)
    config = _with_record(config, record)
    if buffers is not None:
        buffers_msg(buffers)  # a bad one is refused before a root boots
    if group_members is not None:
        check_group_members(group_members)
    check_remote(remote_bars, remote_rows)
    force_heartbeats = heartbeats_forced()  # a bad value is refused here
    # the feed daemon's process, connection and streams are each watched:
    # one PeerGone when it goes, not a group of them
    with one_peer_gone():
        async with (
            _maybe_client_root(registry_addr, loglevel) as registry_addr,
            maybe_open_feedd(
                backend,
                registry_addr=registry_addr,
                buffers=buffers,
                restart=restart,
                plugins=plugins,
                loglevel=loglevel,
                group_members=group_members,
                host=feed_host,
                linger=linger,
                stale_after=stale_after,
                data_dir=data_dir,
            ) as portal,
        ):
            # a feed daemon on another host: heartbeats on the status stream
            heartbeat_s = heartbeat_interval(portal, force_heartbeats)
            async with (
                _refusals_as_value_errors() as entering,
                compat.open_context(
                    portal,
                    attach_feed,
                    topics=names,
                    config=dict(config) if config else None,
                    heartbeat_s=heartbeat_s,
                ) as (ctx, started),
            ):
                entering.done = True  # from here on, errors are the caller's own
                first = started['topics']
                bufs: dict[str, dict[float, ShmArray]] = {}
                remote = remote_bars_wanted(remote_bars, started)
                try:
                    for name in () if remote else names:
                        bufs[name] = {}
                        for p, tok in first[name]['buffers'].items():
                            bufs[name][float(p)] = attach_buffer(tok)
                    async with (
                        compat.raise_on_peer_exit(
                            started['pid'],
                            f'the feed daemon {feedd_name(backend)}',
                            portal,
                        ),
                        compat.open_drained_stream(ctx) as sstream,
                        maybe_open_remote_bars(
                            remote,
                            portal,
                            names,
                            what=f'the feed daemon {feedd_name(backend)}',
                            rows=remote_rows,
                        ) as rbufs,
                    ):
                        status = StatusStream(
                            stream=sstream,
                            buffer=256,
                            heartbeat_s=heartbeat_s,
                            peer_what=f'the feed daemon {feedd_name(backend)}',
                        )
                        async with (
                            compat.far_end_endings(
                                feedd_name(backend),
                                f'the feed of {", ".join(names)}',
                                _silent_end,
                            ),
                            status._running(),
                            feedbus.open_feed(
                                portal,
                                names,
                                tick_throttle=tick_throttle,
                                allow_remote_ctl_ui=allow_remote_ctl_ui,
                                buffer=buffer,
                                watch_producer=False,  # watched above already
                            ) as quotes,
                            _ending_with_topics(status, quotes, names),
                        ):
                            yield MarketFeed(
                                backend=backend,
                                topics=names,
                                buffers=rbufs if rbufs is not None else bufs,  # type: ignore[arg-type]
                                quotes=quotes,
                                status=status,
                                first_status={
                                    n: msgspec.convert(first[n]['status'], FeedStatus)
                                    for n in names
                                },
                                symbol_info={n: first[n].get('info') for n in names},
                                portal=portal,
                            )
                finally:
                    for by_period in bufs.values():
                        for shm in by_period.values():
                            release_buffer(shm)
                await ctx.cancel()


def _lifecycle_kwargs(linger: Any, stale_after: Any) -> dict[str, float]:
    """The feed daemon's ``linger`` / ``stale_after`` given, checked."""
    from ._lifecycle import check_seconds

    out = {}
    if linger is not None:
        out['linger'] = check_seconds(linger, 'linger')
    if stale_after is not None:
        out['stale_after'] = check_seconds(stale_after, 'stale_after')
    return out


@acm
async def _ending_with_topics(
    status: StatusStream, quotes: feedbus.Feed, names: list[str]
) -> AsyncIterator[None]:
    """End the quote iteration (readers get end-of-channel once they have
    read what they hold) when every topic of the feed is ``ended`` or
    ``failed`` (stopped, or given up): no quote comes any more."""
    import trio

    left = set(names)

    async def watch() -> None:
        try:
            async with status.open_reader() as reports:
                async for st in reports:
                    if isinstance(st, FeedStatus) and st.state in ('ended', 'failed'):
                        left.discard(st.topic)
                        if not left:
                            break
        except Exception:
            return  # the status stream's own ending is reported where it is read
        if not left:
            # out of the pump's way first (it puts into its readers)
            readers = list(quotes._readers)
            quotes._readers.difference_update(readers)
            for reader in readers:
                reader.close()

    async with trio.open_nursery() as n:
        n.start_soon(watch)
        try:
            yield
        finally:
            n.cancel_scope.cancel()


def _silent_end(err: BaseException) -> bool:
    """feedbus's ``SubscriptionDropped('ended')`` without counters: the
    producer task was torn down without a word (its daemon stopping)."""
    return (
        isinstance(err, feedbus.SubscriptionDropped)
        and err.reason == 'ended'
        and err.stats is None
    )


@dataclass
class _Entering:
    done: bool = False


@acm
async def _refusals_as_value_errors() -> AsyncIterator[_Entering]:
    """The feed daemon's refusal of an attach request (a ``ValueError``,
    ``TypeError`` or ``KeyError`` raised there before ``started()``) as a
    local ``ValueError`` with its message, instead of the runtime's
    remote-error wrapper; errors after entering pass through untouched."""
    entering = _Entering()
    try:
        yield entering
    except Exception as exc:
        err = compat.unwrap_error(exc)
        if not entering.done and compat.remote_error_type(err) in (
            'ValueError',
            'TypeError',
            'KeyError',
            'NoShmSpace',  # a ValueError: /dev/shm is too full for the topic
        ):
            raise ValueError(compat.remote_error_message(err)) from err
        raise


@acm
async def _maybe_client_root(
    registry_addr: str | tuple[str, int] | None,
    loglevel: str | None,
) -> AsyncIterator[tuple[str, int] | None]:
    """Boot a client root actor in a program that runs none."""
    if compat.current_actor() is not None:
        yield resolve_registry_addr(registry_addr)
        return
    addr = resolve_registry_addr(registry_addr)
    if not await compat.registry_reachable(addr):
        raise ServiceError(
            f'no service root answers at {addr[0]}:{addr[1]}: start one with '
            '`samplerd` (or tractor_services.open_service_root())'
        )
    async with compat.open_root_actor(addr, 'feed_client', loglevel=loglevel):
        yield addr
