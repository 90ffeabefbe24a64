'''
feedbus: real-time feed subscriptions across tractor actors.

A producer actor publishes quotes per topic on its :class:`FeedsBus`
(``get_feed_bus()``); subscribers open :func:`open_feed` on its portal,
which runs the :func:`open_feed_stream` endpoint there.  Every subscriber
has its own bounded outbox and sender task, optionally a throttler that
delivers tick-framed :class:`Frame` s at a fixed rate.

'''
from tractor_services import compat as _compat  # noqa: F401  (tractor import guard)

from ._bus import (
    OUTBOX_SIZE,
    STALL_TIMEOUT_S,
    BadQuote,
    FeedsBus,
    Outbox,
    Sub,
    SubStats,
    _FeedsBus,
    get_feed_bus,
    reset_feed_bus,
)
from ._client import Feed, maybe_open_feed, open_feed
from ._ctl import CtlMsg, decode_ctl
from ._errors import DROP_REASONS, FeedError, SubscriptionDropped
from ._msgs import CLEARING_TICK_TYPES, Frame, Quote, TopicFrame, decode_feed_msg
from ._producer import open_feed_stream, open_sub, pause_sub, publish_from, resume_sub
from ._readers import StreamReaders
from ._throttle import Throttler

__version__ = '0.1.0'

__all__ = [
    'CLEARING_TICK_TYPES',
    'DROP_REASONS',
    'OUTBOX_SIZE',
    'STALL_TIMEOUT_S',
    'BadQuote',
    'CtlMsg',
    'Feed',
    'FeedError',
    'FeedsBus',
    'Frame',
    'Outbox',
    'Quote',
    'StreamReaders',
    'Sub',
    'SubStats',
    'SubscriptionDropped',
    'Throttler',
    'TopicFrame',
    '_FeedsBus',
    'decode_ctl',
    'decode_feed_msg',
    'get_feed_bus',
    'maybe_open_feed',
    'open_feed',
    'open_feed_stream',
    'open_sub',
    'pause_sub',
    'publish_from',
    'reset_feed_bus',
    'resume_sub',
]
