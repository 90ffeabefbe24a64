"""
The IPC endpoints of tractor-sampler: the functions the daemons serve to
other actors, for code that talks to samplerd or a feed daemon directly
(``portal.run(...)``, ``portal.open_context(...)``, or a service manager's
``start_service``).  Programs normally use :func:`~tractor_sampler.open_market_feed`,
:func:`~tractor_sampler.open_sample_stream` and
:func:`~tractor_sampler.introspect`, which call these.

samplerd (service name ``samplerd``):

- :func:`samplerd`: its root ``@tractor.context`` (the service manager runs it);
- :func:`register_with_sampler`: ``@tractor.context`` that registers buffers
  by token per period and streams the steps;
- :func:`sampler_info`: what it runs, a :class:`~tractor_sampler.SamplerInfo`
  in its IPC form (a map: rebuild it with ``msgspec.convert``).

a feed daemon (service name ``feedd.<backend>``):

- :func:`feedd`: its root ``@tractor.context``;
- :func:`attach_feed`: ``@tractor.context`` that starts topics and streams
  their status reports;
- :func:`feed_info`: its topics, a :class:`~tractor_sampler.FeedInfo` in its
  IPC form;
- :func:`stream_bars`: ``@tractor.context`` that streams running topics'
  buffers to a client on another host (a snapshot, then every change).

"""

from ._feedd import attach_feed as attach_feed
from ._feedd import feed_info as feed_info
from ._feedd import feedd as feedd
from ._remote import stream_bars as stream_bars
from ._sampler import register_with_sampler as register_with_sampler
from ._sampler import sampler_info as sampler_info
from ._sampler import samplerd as samplerd

__all__ = [
    'attach_feed',
    'feed_info',
    'feedd',
    'register_with_sampler',
    'sampler_info',
    'samplerd',
    'stream_bars',
]
