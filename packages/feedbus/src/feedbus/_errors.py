"""
feedbus' errors.

:class:`FeedError` is the base of every error feedbus raises on the
subscriber's side; :class:`SubscriptionDropped` says that the producer
removed this subscriber, and why.

"""

from __future__ import annotations

from typing import Any

__all__ = ['DROP_REASONS', 'FeedError', 'SubscriptionDropped']

#: why a producer removes a subscriber (``SubscriptionDropped.reason``):
#: ``'stalled'``: a send to it made no progress for ``stall_timeout``;
#: ``'overrun'``: it left more control replies unread than the producer
#: keeps; ``'broken'``: its stream broke or closed; ``'ended'``: the
#: producer's own code ended the subscription (``FeedsBus.drop_sub``).
DROP_REASONS: frozenset[str] = frozenset({'stalled', 'overrun', 'broken', 'ended'})


class FeedError(RuntimeError):
    """A feedbus error on the subscriber's side: the producer refused a
    control request, or (subclasses) ended the subscription."""


class SubscriptionDropped(FeedError):
    """The producer removed this subscriber.

    ``reason`` is one of :data:`DROP_REASONS`, ``detail`` the producer's
    explanation, ``stats`` the subscriber's final counters (a
    :class:`feedbus.SubStats`, or its dict form when the caller has none).
    Readers of the feed raise it once the messages that arrived before it
    are read; the ``open_feed`` block raises it; ``feed.stats()`` then
    returns ``stats`` without asking the producer."""

    def __init__(self, reason: str, detail: str, stats: Any = None) -> None:
        super().__init__(f'the producer dropped this subscription ({reason}): {detail}')
        self.reason = reason
        self.detail = detail
        self.stats = stats
