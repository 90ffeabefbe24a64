"""
The control protocol a subscriber speaks on its feed stream, and the
producer's replies.

Requests (subscriber -> producer) are one tagged union, ``CtlMsg``;
replies (producer -> subscriber) another, ``ReplyMsg``, plus
:class:`Dropped`, the last message of a subscription the producer ended.
Data travels as msgpack bytes (:mod:`feedbus._wire`).  Both are validated
on receipt; a malformed or unknown request gets an :class:`Error` reply
and the producer keeps serving.

"""

from __future__ import annotations

from typing import Any, Union

import msgspec


class _Ctl(msgspec.Struct, frozen=True, kw_only=True, tag_field='type'):
    id: int = 0  # echoed in the reply


class Ready(_Ctl, frozen=True, kw_only=True, tag='ready'):
    """The subscriber's stream is open: the producer may start sending."""


class Pause(_Ctl, frozen=True, kw_only=True, tag='pause'):
    """Stop delivering (the subscription is kept)."""


class Resume(_Ctl, frozen=True, kw_only=True, tag='resume'):
    """Deliver again after a pause."""


class Subscribe(_Ctl, frozen=True, kw_only=True, tag='subscribe'):
    topics: list[str]


class Unsubscribe(_Ctl, frozen=True, kw_only=True, tag='unsubscribe'):
    topics: list[str]


class SetRate(_Ctl, frozen=True, kw_only=True, tag='set_rate'):
    """Change a throttled subscriber's rate (Hz) without resubscribing."""

    rate: float


class GetStats(_Ctl, frozen=True, kw_only=True, tag='get_stats'):
    """Ask for this subscriber's counters."""


CtlMsg = Union[Ready, Pause, Resume, Subscribe, Unsubscribe, SetRate, GetStats]


class _Reply(msgspec.Struct, frozen=True, kw_only=True, tag_field='type'):
    pass


class Ack(_Reply, frozen=True, kw_only=True, tag='ack'):
    id: int
    cmd: str
    result: Any = None


class Error(_Reply, frozen=True, kw_only=True, tag='error'):
    id: int
    cmd: str | None
    error: str


class Dropped(_Reply, frozen=True, kw_only=True, tag='dropped'):
    """The producer's last message on a stream whose subscriber it removed:
    ``reason`` (see :data:`feedbus._errors.DROP_REASONS`), ``detail``, and
    the subscriber's final counters (a ``SubStats`` as a map).  Sent only
    once every send before it has finished: never cut, never followed by
    data."""

    reason: str
    detail: str
    stats: dict[str, Any] = {}


#: the tag of :class:`Dropped` on the wire (readers check it before any
#: protocol-specific decoding, so every stream built on ``open_sub`` has it)
DROPPED_TAG = 'dropped'

ReplyMsg = Union[Ack, Error]


def decode_ctl(obj: Any) -> CtlMsg:
    """A subscriber's request, validated; ``ValueError`` names the problem."""
    try:
        return msgspec.convert(obj, CtlMsg)  # type: ignore[arg-type]
    except msgspec.ValidationError as err:
        raise ValueError(f'malformed control message {obj!r}: {err}') from None


def decode_reply(obj: Any) -> Ack | Error:
    """A producer's reply to a request, validated."""
    try:
        return msgspec.convert(obj, ReplyMsg)  # type: ignore[arg-type]
    except msgspec.ValidationError as err:
        raise ValueError(f'malformed feed reply: {err}') from None
