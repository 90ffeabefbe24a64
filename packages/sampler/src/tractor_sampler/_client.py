"""
The client side of samplerd: find or spawn it, register buffers with it,
and read its step stream from several local tasks.

"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager as acm
from dataclasses import dataclass
from typing import Any, Union

import msgspec

from feedbus.protocol import StreamReaders
from feedbus.wire import decoder as wire_decoder
from tractor_services import RestartPolicy, compat, maybe_spawn_daemon, open_root_mngr
from tractor_services._heartbeat import heartbeat_interval

from ._errors import SamplerError, SamplerRefused  # noqa: F401  (SamplerError: _ohlc catches it)
from ._msgs import (
    AddBuffersReq,
    Backfill,
    BroadcastReq,
    Error,
    GroupMembers,
    Info,
    RemoveBuffersReq,
    Step,
    decode_sample_msg,
)
from ._sampler import register_with_sampler, samplerd
from ._schedule import check_period
from .shm import ShmArray, ShmToken

log = compat.get_logger('client', 'tractor_sampler')

#: the name samplerd registers under
SAMPLERD: str = 'samplerd'

#: how the root's manager restarts samplerd when its process dies or its
#: endpoint fails (the feed daemons then register their buffers again)
SAMPLERD_POLICY = RestartPolicy(
    restart='transient',
    max_restarts=5,
    within_s=60.0,
    backoff_s=0.2,
    max_backoff_s=5.0,
)


async def spawn_samplerd(
    registry_addr: str | tuple[str, int] | None = None,
    **start_kwargs: Any,
) -> int:
    """Have the root's service manager start samplerd (at most one per
    tree: the manager's per-name lock makes concurrent calls spawn once),
    restarted by :data:`SAMPLERD_POLICY` unless ``restart`` says otherwise.
    Returns samplerd's pid."""
    start_kwargs.setdefault('restart', SAMPLERD_POLICY)
    async with open_root_mngr(registry_addr) as mngr:
        return await mngr.start_service(SAMPLERD, samplerd, **start_kwargs)


@acm
async def maybe_open_samplerd(
    registry_addr: str | tuple[str, int] | None = None,
    *,
    host: str | None = None,
    **start_kwargs: Any,
) -> AsyncIterator[Any]:
    """A portal to the tree's samplerd, spawning it through the root's
    service manager if it is not running (restarted by
    :data:`SAMPLERD_POLICY` unless ``restart`` says otherwise).  Leaving
    does not stop it.  ``host``: the samplerd of a host that joined the
    registry (``samplerd@<label>``; see docs/multihost.md); by default the
    one of this process's own host in a joined tree, else the registry's."""
    start_kwargs.setdefault('restart', SAMPLERD_POLICY)
    async with maybe_spawn_daemon(
        SAMPLERD,
        samplerd,
        registry_addr=registry_addr,
        host=host,
        **start_kwargs,
    ) as portal:
        yield portal


@dataclass(kw_only=True, eq=False)
class SampleStream(StreamReaders):
    """samplerd's step stream: :class:`Step` s of the subscribed periods,
    and :class:`Backfill` / :class:`Info` broadcasts.  Iterate it, or give
    each local task its own reader with :meth:`open_reader`."""

    data_decoder = wire_decoder(Union[Step, Backfill, Info])
    #: samplerd never ends a step stream on its own: an end is an error
    end_is_error = True

    @staticmethod
    def decode_reply(raw: Any) -> Any:
        return decode_sample_msg(raw)

    periods: list[float]
    #: samplerd's pid (a dependent waits for another one after a restart)
    pid: int | None = None

    async def broadcast(
        self, msg: Backfill | Info | dict, period_s: float | None = None
    ) -> int:
        """Have samplerd send ``msg`` to every subscriber of ``period_s``
        (of every period when ``None``); returns how many it reached."""
        if isinstance(msg, dict):
            msg = Info(info=msg)
        reply = await self._ask(
            lambda rid: BroadcastReq(id=rid, msg=msg, period_s=period_s)
        )
        if isinstance(reply, Error):
            raise SamplerRefused(reply.error)
        return reply.reached

    async def backfilled(
        self, topic: str, timeframe: float, start_index: int, end_index: int
    ) -> int:
        """Tell every subscriber that ``topic``'s ``timeframe`` buffer got
        history for rows ``[start_index, end_index)``."""
        return await self.broadcast(
            Backfill(
                topic=topic,
                timeframe=check_period(timeframe),
                start_index=start_index,
                end_index=end_index,
            )
        )

    async def add_buffers(self, shms_by_period: dict[float, Any]) -> int:
        """Have samplerd step these buffers too (``{period: buffer or
        token or a list of them}``), all or none (:class:`SamplerRefused`
        naming the problem); the steps of their periods come on this stream
        from then on, and leaving it unregisters them.  Returns how many."""
        tokens, groups = _group_tokens(shms_by_period)
        reply = await self._ask(
            lambda rid: AddBuffersReq(id=rid, buffers=tokens, groups=groups)
        )
        if isinstance(reply, Error):
            raise SamplerRefused(reply.error)
        return reply.reached

    async def remove_buffers(self, shms_by_period: dict[float, Any]) -> int:
        """Have samplerd stop stepping buffers added on this stream; once
        this returns it never writes them again.  Returns how many."""
        tokens, groups = _group_tokens(shms_by_period)
        reply = await self._ask(
            lambda rid: RemoveBuffersReq(id=rid, buffers=tokens, groups=groups)
        )
        if isinstance(reply, Error):
            raise SamplerRefused(reply.error)
        return reply.reached

    def _ended_reply(self) -> Error:
        return Error(id=0, error='the sample stream ended')


def _tokens(shms_by_period: dict[float, Any] | None) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for p, shms in (shms_by_period or {}).items():
        items: Iterable[Any] = shms if isinstance(shms, (list, tuple)) else [shms]
        out[repr(check_period(p))] = [
            (s.token if isinstance(s, ShmArray) else ShmToken.from_msg(s)).to_msg()
            for s in items
        ]
    return out


def _group_tokens(
    shms_by_period: dict[float, Any],
) -> tuple[dict[str, list[dict]], dict[str, list[GroupMembers]]]:
    """Tokens by period, the members of shm groups folded into one token
    per group and their member numbers (see :class:`AddBuffersReq`)."""
    tokens: dict[str, list[dict]] = {}
    groups: dict[str, list[GroupMembers]] = {}
    for p, shms in (shms_by_period or {}).items():
        key = repr(check_period(p))
        items: Iterable[Any] = shms if isinstance(shms, (list, tuple)) else [shms]
        by_group: dict[str, tuple[ShmToken, list[int]]] = {}
        for s in items:
            tok = s.token if isinstance(s, ShmArray) else ShmToken.from_msg(s)
            if tok.members > 1:
                by_group.setdefault(tok.shm_name, (tok, []))[1].append(tok.member)
            else:
                tokens.setdefault(key, []).append(tok.to_msg())
        if by_group:
            groups[key] = [
                GroupMembers(
                    token=msgspec.to_builtins(
                        msgspec.structs.replace(
                            tok, member=0, first_live=None, first_partial=False
                        )
                    ),
                    members=members,
                )
                for tok, members in by_group.values()
            ]
    return tokens, groups


@acm
async def open_sample_stream(
    period_s: float | None = None,
    shms_by_period: dict[float, Any] | None = None,
    open_index_stream: bool = True,
    sub_for_broadcasts: bool = True,
    *,
    registry_addr: str | tuple[str, int] | None = None,
    buffer: int = 256,
) -> AsyncIterator[SampleStream]:
    """Start samplerd if needed, register ``shms_by_period`` (``{period:
    buffer or token or a list of them}``) for stepping, and yield its step
    stream for ``period_s`` (plus the registered periods).  Leaving
    unregisters the buffers.  If samplerd's process dies, the block is
    cancelled and :class:`~tractor_services.PeerGone` raised."""
    if period_s is not None:
        period_s = check_period(period_s)
    async with maybe_open_samplerd(registry_addr) as portal:
        # samplerd on another host: heartbeats on the step stream
        heartbeat_s = heartbeat_interval(portal) if open_index_stream else None
        async with compat.open_context(
            portal,
            register_with_sampler,
            period_s=period_s,
            shms_by_period=_tokens(shms_by_period),
            open_index_stream=open_index_stream,
            sub_for_broadcasts=sub_for_broadcasts,
            heartbeat_s=heartbeat_s,
        ) as (ctx, first):
            periods = list(first['periods'])
            async with compat.raise_on_peer_exit(first['pid'], SAMPLERD, portal):
                if not open_index_stream:
                    yield SampleStream(
                        stream=None, periods=periods, buffer=buffer, pid=first['pid']
                    )
                else:
                    async with compat.open_drained_stream(ctx) as stream:
                        ss = SampleStream(
                            stream=stream,
                            periods=periods,
                            buffer=buffer,
                            pid=first['pid'],
                            heartbeat_s=heartbeat_s,
                            peer_what=SAMPLERD,
                        )
                        async with (
                            compat.far_end_endings(
                                SAMPLERD,
                                'the step stream',
                                _silent_end,
                            ),
                            ss._running(),
                        ):
                            yield ss
            await ctx.cancel()


def _silent_end(err: BaseException) -> bool:
    """The step stream ended without a word (samplerd stopping), as
    feedbus reports it."""
    from feedbus import SubscriptionDropped

    return (
        isinstance(err, SubscriptionDropped)
        and err.reason == 'ended'
        and err.stats is None
    )
