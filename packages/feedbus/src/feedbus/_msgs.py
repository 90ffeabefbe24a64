"""
The feed protocol's messages.

Every message a producer streams to a subscriber is one member of the
``FeedMsg`` tagged union (tag field ``'type'``): frozen, keyword-only
``msgspec`` structs, decoded and validated on receipt with
:func:`decode_feed_msg`. New fields are only ever added with defaults, so
older peers keep decoding newer messages.

"""

from __future__ import annotations

from typing import Any, Union

import msgspec

__all__ = [
    'CLEARING_TICK_TYPES',
    'FeedMsg',
    'Frame',
    'Quote',
    'TopicFrame',
    'decode_feed_msg',
]

# Tick types that clear (print) at the venue. A throttled frame holding one
# of these goes out as soon as the rate allows; the OHLC writer folds only
# these into its bars. Shared default for both.
CLEARING_TICK_TYPES: frozenset[str] = frozenset(
    {'trade', 'utrade', 'dark_trade', 'dark_utrade'}
)


class _FeedMsgBase(
    msgspec.Struct,
    frozen=True,
    kw_only=True,
    tag_field='type',
):
    """
    Base of every member of the ``FeedMsg`` union. Subclasses repeat
    ``frozen=True, kw_only=True`` (msgspec inherits them, but mypy's
    dataclass transform wants them spelled out) and give a ``tag``.
    """


class Quote(_FeedMsgBase, frozen=True, kw_only=True, tag='quote'):
    """
    One quote update for one topic, as the producer emits it.

    ``seq`` counts from 1 per topic, assigned by the producer, so a consumer
    can detect gaps. ``fields`` holds the latest quote fields (``last``,
    ``bid``, ``ask``, ...); ``ticks`` the ticks behind this update, each a
    dict with at least a ``'type'`` key (``{'type': 'trade', 'price': 1.0,
    'size': 2.0}``).

    """

    topic: str
    seq: int
    fields: dict[str, Any]
    ticks: list[dict[str, Any]] = []


class TopicFrame(
    msgspec.Struct,
    frozen=True,
    kw_only=True,
):
    """
    One topic's share of a throttled :class:`Frame`.

    ``ticks``: every tick received for the topic during the period, in
    arrival order. ``ticks_by_type``: the same ticks as a FIFO list per tick
    type (take ``[-1]`` for the latest of a type). ``fields``: the latest
    fields seen (later quotes overwrite earlier keys). ``n_quotes``: how many
    input quotes were conflated into this frame; ``first_seq`` / ``last_seq``:
    the sequence numbers of the first and last of them.

    """

    ticks: list[dict[str, Any]]
    ticks_by_type: dict[str, list[dict[str, Any]]]
    fields: dict[str, Any]
    n_quotes: int
    first_seq: int
    last_seq: int


class Frame(_FeedMsgBase, frozen=True, kw_only=True, tag='frame'):
    """
    One throttled delivery: the quotes of one period, conflated per topic.

    ``seq`` counts frames per subscriber from 1. ``has_clearing`` says
    whether any topic's ticks include a clearing tick type.

    """

    seq: int
    topics: dict[str, TopicFrame]
    has_clearing: bool


FeedMsg = Union[Quote, Frame]


def decode_feed_msg(obj: Any) -> Quote | Frame:
    """
    Validate ``obj`` (a decoded mapping, or already a struct) as a member of
    the feed protocol and return the struct.

    Raises ``ValueError`` naming the problem when ``obj`` is not a valid
    feed message.

    """
    try:
        return msgspec.convert(obj, FeedMsg)
    except msgspec.ValidationError as err:
        raise ValueError(f'invalid feed message: {err}') from err
