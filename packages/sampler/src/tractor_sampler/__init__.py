"""tractor-sampler: the ``samplerd`` daemon, stepping shared-memory OHLCV buffers on
wall-clock-aligned periods, and feed daemons that turn a backend's quotes into bars.
IPC endpoints: ``tractor_sampler.endpoints``; buffers in depth: ``tractor_sampler.shm``."""

# isort: skip_file
from tractor_services import compat as _compat  # noqa: F401  (tractor import guard)

from . import endpoints as endpoints, shm as shm

# feeds: a backend's topics (buffers read-only, quotes, status), from any actor or program
from ._feed import MarketFeed as MarketFeed, maybe_open_feedd as maybe_open_feedd
from ._feed import open_market_feed as open_market_feed
from ._feedd import FeedDaemon as FeedDaemon, feedd_name as feedd_name
from ._feedd import get_feed_daemon as get_feed_daemon

# samplerd: one incrementer steps every registered buffer; its step stream
from ._client import SAMPLERD as SAMPLERD, SampleStream as SampleStream
from ._client import maybe_open_samplerd as maybe_open_samplerd
from ._client import open_sample_stream as open_sample_stream
from ._client import spawn_samplerd as spawn_samplerd
from ._sampler import (
    Sampler as Sampler,
    get_sampler as get_sampler,
    open_sampler as open_sampler,
)

# bars: trades into the open bar, history prepended
from ._history import backfill as backfill, prepend_history as prepend_history
from ._ohlc import (
    OHLCWriter as OHLCWriter,
    sample_and_broadcast as sample_and_broadcast,
)
from ._schedule import MAX_PERIOD_S as MAX_PERIOD_S, MIN_PERIOD_S as MIN_PERIOD_S
from ._schedule import check_period as check_period

# messages: what the step and status streams carry
from ._msgs import NO_INDEX as NO_INDEX, Backfill as Backfill, FeedStatus as FeedStatus
from ._msgs import Info as Info, Step as Step

# introspection: typed records of a running tree
from ._introspect import introspect as introspect
from ._info import TreeInfo as TreeInfo, FeedInfo as FeedInfo, TopicInfo as TopicInfo
from ._info import BufferInfo as BufferInfo, SubscriberInfo as SubscriberInfo
from ._info import BarCounters as BarCounters, PeriodBarCounters as PeriodBarCounters
from ._info import SamplerInfo as SamplerInfo, BackendInfo as BackendInfo

# shared-memory buffers (groups, the control block and the rest: tractor_sampler.shm)
from .shm import (
    DEFAULT_DTYPE as DEFAULT_DTYPE,
    ShmArray as ShmArray,
    ShmToken as ShmToken,
)
from .shm import attach_shm_array as attach_shm_array, open_shm_array as open_shm_array

# backends: pluggy plugins
from ._plugins import DEFAULT_BACKEND as DEFAULT_BACKEND, Backend as Backend
from ._plugins import (
    BackendRegistry as BackendRegistry,
    registered_plugin as registered_plugin,
)
from ._plugins import get_backend as get_backend, get_backends as get_backends
from ._plugins import load_backends as load_backends
from .hookspecs import PROJECT as PROJECT, hookimpl as hookimpl

# the bar store: closed bars on disk (docs/storage.md), read back as arrays or frames
from ._datadir import DataDirError as DataDirError, data_dir as data_dir
from ._store import BarStore as BarStore, ParquetStore as ParquetStore
from ._store import StoreError as StoreError, open_store as open_store
from ._export import read_bars as read_bars
from ._store import compact as compact_store  # noqa: F401  (its public name)

# the tick log: recorded quotes (docs/storage.md), bars rebuilt from them offline
from ._ticklog import TickLog as TickLog, TickRecord as TickRecord
from ._ticklog import TickLogError as TickLogError, read_ticks as read_ticks
from ._rebuild import build_bars as build_bars

# topics start and stop on demand (docs/sampler.md, "Lingering, stop and stale")
from ._lifecycle import stop_topic as stop_topic

# errors: all are SamplerError
from ._errors import SamplerError as SamplerError, SamplerRefused as SamplerRefused
from ._errors import NotRunning as NotRunning, NoSampler as NoSampler
from ._errors import NoFeedDaemon as NoFeedDaemon, AlreadyRunning as AlreadyRunning
from ._errors import PluginError as PluginError, UnknownBackend as UnknownBackend
from .shm import ShmOverrun as ShmOverrun

# the spec's names, importable but not advertised (register_with_sampler: see _deprecated)
from ._schedule import _default_delay_s as _default_delay_s  # noqa: F401

__version__ = '0.1.0'
# old names: importable, with a DeprecationWarning, for one release
from ._deprecated import module_getattr as __getattr__  # noqa: E402, F401
