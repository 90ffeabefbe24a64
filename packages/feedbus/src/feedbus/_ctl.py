'''
The control protocol a subscriber speaks on its feed stream, and the
producer's replies.

Requests (subscriber -> producer) are one tagged union, ``CtlMsg``;
replies and batched deliveries (producer -> subscriber) another,
``ReplyMsg``.  Both are validated on receipt; a malformed or unknown
request gets an :class:`Error` reply and the producer keeps serving.

'''
from __future__ import annotations

from typing import Any, Union

import msgspec

from ._msgs import Frame, Quote


class _Ctl(msgspec.Struct, frozen=True, kw_only=True, tag_field='type'):
    id: int = 0  # echoed in the reply


class Ready(_Ctl, frozen=True, kw_only=True, tag='ready'):
    '''The subscriber's stream is open: the producer may start sending.'''


class Pause(_Ctl, frozen=True, kw_only=True, tag='pause'):
    '''Stop delivering (the subscription is kept).'''


class Resume(_Ctl, frozen=True, kw_only=True, tag='resume'):
    '''Deliver again after a pause.'''


class Subscribe(_Ctl, frozen=True, kw_only=True, tag='subscribe'):
    topics: list[str]


class Unsubscribe(_Ctl, frozen=True, kw_only=True, tag='unsubscribe'):
    topics: list[str]


class SetRate(_Ctl, frozen=True, kw_only=True, tag='set_rate'):
    '''Change a throttled subscriber's rate (Hz) without resubscribing.'''
    rate: float


class GetStats(_Ctl, frozen=True, kw_only=True, tag='get_stats'):
    '''Ask for this subscriber's counters.'''


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


class Batch(_Reply, frozen=True, kw_only=True, tag='batch'):
    '''Quotes a lagging subscriber had queued, delivered in one message.'''
    quotes: list[Quote]


ReplyMsg = Union[Ack, Error, Batch]
Incoming = Union[Quote, Frame, Ack, Error, Batch]


def decode_ctl(obj: Any) -> CtlMsg:
    '''A subscriber's request, validated; ``ValueError`` names the problem.'''
    try:
        return msgspec.convert(obj, CtlMsg)  # type: ignore[arg-type]
    except msgspec.ValidationError as err:
        raise ValueError(f'malformed control message {obj!r}: {err}') from None


def decode_incoming(obj: Any) -> Quote | Frame | Ack | Error | Batch:
    '''Anything a producer sends, validated.'''
    try:
        return msgspec.convert(obj, Incoming)  # type: ignore[arg-type]
    except msgspec.ValidationError as err:
        raise ValueError(f'malformed feed message: {err}') from None
