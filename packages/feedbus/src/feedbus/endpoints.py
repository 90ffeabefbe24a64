"""
feedbus' IPC endpoints: the functions a subscriber calls on a producer's
portal.  :func:`feedbus.open_feed` calls them for you; name them
yourself only for a client of your own (a raw tractor client, another
language's, a test).

- :func:`open_feed_stream`: the context endpoint (``@compat.context``)
  that subscribes the calling actor to topics, streams quotes or frames,
  and serves the control protocol (:mod:`feedbus.protocol`);
- :func:`producer_pid`: the producer's process id, which a subscriber on
  the same host watches so that a dead producer ends its feeds.

"""

from ._producer import open_feed_stream as open_feed_stream
from ._producer import producer_pid as producer_pid

__all__ = ['open_feed_stream', 'producer_pid']
