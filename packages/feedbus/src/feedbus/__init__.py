"""
feedbus: real-time feed subscriptions across tractor actors.

A producer actor publishes quotes per topic on its :class:`FeedsBus`
(``get_feed_bus()``); subscribers open :func:`open_feed` on its portal.
Every subscriber has its own bounded outbox and sender task, optionally a
throttler that delivers tick-framed :class:`Frame` s at a fixed rate; on
the producer's host, it reads a shared-memory quote ring and frames on its
own side instead (``open_feed(ring=False)``: the stream).  See
docs/feedbus.md.

"""

# isort: skip_file
# (grouped by what a reader looks for, not alphabetically)
from tractor_services import compat as _compat  # noqa: F401  (tractor import guard)

# --- subscribing --------------------------------------------------------------
from ._client import open_feed as open_feed
from ._client import maybe_open_feed as maybe_open_feed
from ._client import Feed as Feed

# --- producing: the bus -------------------------------------------------------
from ._bus import get_feed_bus as get_feed_bus
from ._bus import reset_feed_bus as reset_feed_bus
from ._bus import FeedsBus as FeedsBus
from ._bus import _FeedsBus as _FeedsBus  # the spec's name, not advertised
from ._producer import publish_from as publish_from
from ._bus import BadQuote as BadQuote

# --- producing: an endpoint of your own on the bus ------------------------------
from ._producer import open_sub as open_sub
from ._producer import pause_sub as pause_sub
from ._producer import resume_sub as resume_sub
from ._bus import Sub as Sub

# --- messages, throttling -------------------------------------------------------
from ._msgs import Quote as Quote
from ._msgs import Frame as Frame
from ._msgs import TopicFrame as TopicFrame
from ._msgs import decode_feed_msg as decode_feed_msg
from ._msgs import CLEARING_TICK_TYPES as CLEARING_TICK_TYPES
from ._throttle import Throttler as Throttler

# --- counters and limits ----------------------------------------------------------
from ._bus import SubStats as SubStats
from ._bus import OUTBOX_SIZE as OUTBOX_SIZE
from ._bus import STALL_TIMEOUT_S as STALL_TIMEOUT_S

# --- errors (every one a FeedError) ------------------------------------------------
from ._errors import FeedError as FeedError
from ._errors import SubscriptionDropped as SubscriptionDropped
from ._errors import DROP_REASONS as DROP_REASONS

# --- public modules: IPC endpoints, stream protocol plumbing, wire codec -----------
from . import endpoints as endpoints
from . import protocol as protocol
from . import wire as wire

# --- moved names (Outbox, CtlMsg, decode_ctl, StreamReaders, open_feed_stream):
# importable from here until feedbus 0.2, with a DeprecationWarning
from ._deprecated import module_getattr as __getattr__  # noqa: F401, E402

__version__ = '0.1.0'
