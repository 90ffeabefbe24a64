"""
samplerd's messages: one tagged union for what it streams to subscribers
(``SampleMsg``) and one for what a registered client may ask of it
(``SamplerReq``).  Frozen, keyword-only msgspec structs, validated on
receipt; fields are only ever added with defaults.

"""

from __future__ import annotations

from typing import Any, Literal, Union

import msgspec

#: the step index broadcast before any buffer of the period is registered
NO_INDEX: int = -1


class _Msg(msgspec.Struct, frozen=True, kw_only=True, tag_field='type'):
    pass


class Step(_Msg, frozen=True, kw_only=True, tag='step'):
    """Every buffer of ``period_s`` got a new row: ``index`` is that row's
    ``index`` field (the same across a period's buffers that were stepped in
    lock-step; ``NO_INDEX`` when none is registered), ``time`` the step's
    wall-clock time (a boundary of the period: a multiple of it plus the
    origin of the buffers stepped, 0 by default).  ``gap`` is the number of
    boundaries with no row before this one: samplerd was stalled (or the
    wall clock jumped) longer than it catches up (``MAX_CATCHUP`` steps), so
    the row's time jumps ``gap + 1`` periods past the row before it."""

    period_s: float
    index: int
    time: float
    info: dict[str, Any] | None = None
    gap: int = 0


class Backfill(_Msg, frozen=True, kw_only=True, tag='backfill'):
    """History was prepended to ``topic``'s ``timeframe`` buffer: rows
    ``start_index`` up to (excluding) ``end_index`` changed, so views of that
    topic and timeframe over that range should redraw.  The typed form of
    piker's ``{'backfilling': (topic, timeframe)}``.  ``reason`` is
    ``'history'`` for prepended history and ``'correction'`` when late
    trades changed closed bars in that range (see docs/reliability.md)."""

    topic: str
    timeframe: float
    start_index: int
    end_index: int
    reason: str = 'history'


class Info(_Msg, frozen=True, kw_only=True, tag='info'):
    """Any other message a client asked samplerd to broadcast."""

    info: dict[str, Any]


SampleMsg = Union[Step, Backfill, Info]


#: the states of one topic in a feed daemon
FeedState = Literal['starting', 'up', 'stale', 'restarting', 'failed', 'ended']


class FeedStatus(_Msg, frozen=True, kw_only=True, tag='status'):
    """A feed daemon's report on one topic, sent to the topic's
    subscribers whenever it changes: ``'up'`` (the backend's quote stream
    runs), ``'restarting'`` (it raised or ended, ``error`` says how, and the
    daemon's restart policy restarts it), ``'failed'`` (it raised and the
    policy gave up: no more quotes) or ``'ended'`` (it ended normally and
    is not restarted, or was stopped: ``samplerd stop``, or no client for
    its linger period; ``error`` says why).  ``'stale'``: the quote stream
    runs but sent nothing for the daemon's ``stale_after`` seconds; ``up``
    again at its next quote.  ``restarts`` counts the restarts so far."""

    topic: str
    state: FeedState
    restarts: int = 0
    error: str | None = None
    time: float = 0.0


class BroadcastReq(_Msg, frozen=True, kw_only=True, tag='broadcast'):
    """Ask samplerd to send ``msg`` to every subscriber of ``period_s``
    (every period when ``None``)."""

    msg: Backfill | Info
    period_s: float | None = None
    id: int = 0


class GroupMembers(msgspec.Struct, frozen=True, kw_only=True):
    """Members of one shm group in a request: the group's token (any
    member's, IPC form) once, and the member numbers."""

    token: dict[str, Any]
    members: list[int]


class AddBuffersReq(_Msg, frozen=True, kw_only=True, tag='add_buffers'):
    """Ask samplerd to step more buffers for this registration (a feed
    daemon registers once and adds its topics' buffers as they start):
    ``buffers`` maps a period (its ``repr``) to the tokens (IPC form) of
    the buffers to step every period, ``groups`` to members of shm groups
    (a token per group, not per member: a batch of thousands stays small).
    All or none: a token that does not attach is an :class:`Error` and
    nothing of the request is added.  The :class:`Ack`'s ``reached`` is
    how many were added; the registration's step stream carries the steps
    of their periods from then on."""

    buffers: dict[str, list[dict[str, Any]]] = {}
    groups: dict[str, list[GroupMembers]] = {}
    id: int = 0


class RemoveBuffersReq(_Msg, frozen=True, kw_only=True, tag='remove_buffers'):
    """Ask samplerd to stop stepping buffers this registration added
    (``buffers`` as in :class:`AddBuffersReq`; ones it does not hold are
    ignored).  Once acked, samplerd never writes them again: their slots
    may be reused.  The :class:`Ack`'s ``reached`` is how many it removed."""

    buffers: dict[str, list[dict[str, Any]]] = {}
    groups: dict[str, list[GroupMembers]] = {}
    id: int = 0


class Ack(_Msg, frozen=True, kw_only=True, tag='ack'):
    id: int
    reached: int = 0  # subscribers the broadcast reached


class Error(_Msg, frozen=True, kw_only=True, tag='error'):
    id: int
    error: str


SamplerReq = Union[BroadcastReq, AddBuffersReq, RemoveBuffersReq]
SamplerReply = Union[Step, Backfill, Info, Ack, Error]


def decode_sample_msg(obj: Any) -> Step | Backfill | Info | Ack | Error:
    try:
        return msgspec.convert(obj, SamplerReply)  # type: ignore[arg-type]
    except msgspec.ValidationError as err:
        raise ValueError(f'malformed sampler message: {err}') from None


def decode_request(obj: Any) -> BroadcastReq | AddBuffersReq | RemoveBuffersReq:
    if isinstance(obj, dict) and 'type' not in obj:
        obj = {**obj, 'type': 'broadcast'}  # the untagged form of old clients
    try:
        return msgspec.convert(obj, SamplerReq)  # type: ignore[arg-type]
    except msgspec.ValidationError as err:
        raise ValueError(f'malformed sampler request {obj!r}: {err}') from None
