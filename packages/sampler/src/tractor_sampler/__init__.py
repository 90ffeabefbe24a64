'''
tractor-sampler: the ``samplerd`` daemon, stepping shared-memory OHLCV
buffers on wall-clock-aligned periods and broadcasting each step to its
subscribers.

'''
from tractor_services import compat as _compat  # noqa: F401  (tractor import guard)

from ._client import (
    SAMPLERD,
    SamplerError,
    SampleStream,
    maybe_open_samplerd,
    open_sample_stream,
    spawn_samplerd,
)
from ._feed import Feed, StatusStream, maybe_open_feedd, open_feed
from ._feedd import (
    DEFAULT_BUFFERS,
    FEEDD_PREFIX,
    FeedDaemon,
    attach_feed,
    feed_info,
    feedd,
    feedd_name,
    get_feed_daemon,
)
from ._history import backfill, prepend_history
from ._msgs import NO_INDEX, Backfill, FeedStatus, Info, Step
from ._ohlc import OHLCWriter, sample_and_broadcast
from ._errors import AlreadyRunning, NoFeedDaemon, NoSampler, NotRunning, SamplerGone, SamplerRefused
from ._plugins import (
    DEFAULT_BACKEND,
    Backend,
    BackendRegistry,
    PluginError,
    UnknownBackend,
    get_backend,
    get_backends,
    load_backends,
    registered_plugin,
)
from ._sampler import (
    Sampler,
    get_sampler,
    open_sampler,
    register_with_sampler,
    sampler_info,
    samplerd,
)
from ._schedule import MAX_PERIOD_S, MIN_PERIOD_S, _default_delay_s, check_period
from .hookspecs import PROJECT, hookimpl
from .shm import (
    DEFAULT_DTYPE,
    ShmArray,
    ShmGroup,
    ShmOverrun,
    ShmToken,
    attach_shm_array,
    attach_shm_group,
    open_shm_array,
    open_shm_group,
)

__version__ = '0.1.0'

__all__ = [
    'DEFAULT_BUFFERS',
    'FEEDD_PREFIX',
    'Feed',
    'FeedDaemon',
    'FeedStatus',
    'StatusStream',
    'attach_feed',
    'feed_info',
    'feedd',
    'feedd_name',
    'get_feed_daemon',
    'maybe_open_feedd',
    'open_feed',
    'DEFAULT_BACKEND',
    'PROJECT',
    'Backend',
    'BackendRegistry',
    'PluginError',
    'UnknownBackend',
    'get_backend',
    'get_backends',
    'hookimpl',
    'load_backends',
    'registered_plugin',
    'DEFAULT_DTYPE',
    'MAX_PERIOD_S',
    'MIN_PERIOD_S',
    'NO_INDEX',
    'SAMPLERD',
    'Backfill',
    'Info',
    'OHLCWriter',
    'SampleStream',
    'Sampler',
    'SamplerError',
    'ShmArray',
    'ShmGroup',
    'ShmOverrun',
    'ShmToken',
    'Step',
    '_default_delay_s',
    'attach_shm_array',
    'backfill',
    'attach_shm_group',
    'check_period',
    'get_sampler',
    'maybe_open_samplerd',
    'open_sample_stream',
    'open_sampler',
    'open_shm_array',
    'open_shm_group',
    'prepend_history',
    'register_with_sampler',
    'sample_and_broadcast',
    'sampler_info',
    'samplerd',
    'spawn_samplerd',
]
