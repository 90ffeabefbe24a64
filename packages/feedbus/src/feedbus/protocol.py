"""
The plumbing of feedbus' stream protocol, for building a protocol of your
own on it (tractor-sampler's sample streams are built this way).

- the control messages a subscriber sends (:data:`CtlMsg`, one tagged
  union: :class:`Ready`, :class:`Pause`, :class:`Resume`,
  :class:`Subscribe`, :class:`Unsubscribe`, :class:`SetRate`,
  :class:`GetStats`) and :func:`decode_ctl`, which validates one;
- the producer's replies (:class:`Ack`, :class:`Error`, :func:`decode_reply`)
  and :class:`Dropped`, the last message of a subscription the producer
  ended (tag :data:`DROPPED_TAG`);
- :class:`StreamReaders`: many local readers of one stream, with requests
  and their replies on the same stream (``feedbus.Feed`` is one);
- :class:`Outbox`: the bounded queue that drops (and counts) its oldest
  message, each subscriber's outbox and each local reader's buffer.

Data messages travel as msgpack bytes: :mod:`feedbus.wire`.

"""

from ._bus import Outbox as Outbox
from ._ctl import DROPPED_TAG as DROPPED_TAG
from ._ctl import Ack as Ack
from ._ctl import CtlMsg as CtlMsg
from ._ctl import Dropped as Dropped
from ._ctl import Error as Error
from ._ctl import GetStats as GetStats
from ._ctl import Pause as Pause
from ._ctl import Ready as Ready
from ._ctl import ReplyMsg as ReplyMsg
from ._ctl import Resume as Resume
from ._ctl import SetRate as SetRate
from ._ctl import Subscribe as Subscribe
from ._ctl import Unsubscribe as Unsubscribe
from ._ctl import decode_ctl as decode_ctl
from ._ctl import decode_reply as decode_reply
from ._readers import StreamReaders as StreamReaders

__all__ = [
    'DROPPED_TAG',
    'Ack',
    'CtlMsg',
    'Dropped',
    'Error',
    'GetStats',
    'Outbox',
    'Pause',
    'Ready',
    'ReplyMsg',
    'Resume',
    'SetRate',
    'StreamReaders',
    'Subscribe',
    'Unsubscribe',
    'decode_ctl',
    'decode_reply',
]
