"""The package's public names, pinned: adding or removing one is a
decision (update this list, the docs and the changelog together)."""

from __future__ import annotations

import types
import warnings

import pytest

import tractor_sampler

PUBLIC = sorted(
    """
    AlreadyRunning Backend BackendInfo BackendRegistry Backfill BarCounters BufferInfo
    DEFAULT_BACKEND DEFAULT_DTYPE FeedDaemon FeedInfo FeedStatus Info MAX_PERIOD_S
    MIN_PERIOD_S MarketFeed NO_INDEX NoFeedDaemon NoSampler NotRunning OHLCWriter PROJECT
    PeriodBarCounters PluginError SAMPLERD SampleStream Sampler SamplerError SamplerInfo
    SamplerRefused ShmArray ShmOverrun ShmToken Step SubscriberInfo TopicInfo TreeInfo
    UnknownBackend attach_shm_array backfill check_period feedd_name get_backend
    get_backends get_feed_daemon get_sampler hookimpl introspect load_backends
    maybe_open_feedd maybe_open_samplerd open_market_feed open_sample_stream open_sampler
    open_shm_array prepend_history registered_plugin sample_and_broadcast spawn_samplerd
    BarStore DataDirError ParquetStore StoreError compact_store data_dir open_store
    read_bars
    TickLog TickLogError TickRecord build_bars read_ticks
    stop_topic
""".split()
)

NAMESPACES = {'endpoints', 'hookspecs', 'shm'}

ENDPOINTS = [
    'attach_feed',
    'feed_info',
    'feedd',
    'register_with_sampler',
    'sampler_info',
    'samplerd',
    'stream_bars',
]


def _advertised(mod: types.ModuleType) -> tuple[list[str], set[str]]:
    names = [n for n in dir(mod) if not n.startswith('_')]
    modules = {n for n in names if isinstance(getattr(mod, n), types.ModuleType)}
    return sorted(set(names) - modules), modules


def test_the_public_names_are_pinned():
    names, modules = _advertised(tractor_sampler)
    assert names == PUBLIC
    assert modules <= NAMESPACES | {'backends', 'testing'}  # subpackages once imported
    assert NAMESPACES <= modules


def test_ipc_endpoints_live_in_their_own_namespace():
    from tractor_sampler import endpoints

    assert sorted(endpoints.__all__) == ENDPOINTS
    for name in ENDPOINTS:
        assert callable(getattr(endpoints, name))
        assert name not in PUBLIC


def test_the_specs_names_are_importable_but_not_advertised():
    from tractor_sampler import _default_delay_s, register_with_sampler

    assert _default_delay_s == 1.0
    assert register_with_sampler is tractor_sampler.endpoints.register_with_sampler
    assert 'register_with_sampler' not in dir(tractor_sampler)


@pytest.mark.parametrize(
    'old, new',
    [
        ('open_feed', 'open_market_feed'),
        ('Feed', 'MarketFeed'),
    ],
)
def test_the_old_feed_names_are_deprecated_aliases(old, new):
    with pytest.warns(
        DeprecationWarning,
        match=f'tractor_sampler.{old} is deprecated: use tractor_sampler.{new}',
    ):
        obj = getattr(tractor_sampler, old)
    assert obj is getattr(tractor_sampler, new)
    assert old not in dir(tractor_sampler)


def test_moved_endpoints_still_import_from_the_top_with_a_warning():
    with pytest.warns(
        DeprecationWarning, match='use tractor_sampler.endpoints.sampler_info'
    ):
        from tractor_sampler import sampler_info
    assert sampler_info is tractor_sampler.endpoints.sampler_info


def test_new_names_do_not_warn():
    with warnings.catch_warnings():
        warnings.simplefilter('error')
        from tractor_sampler import MarketFeed, introspect, open_market_feed  # noqa: F401


def test_an_unknown_name_is_an_attribute_error():
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        tractor_sampler.nope  # noqa: B018


def test_every_error_is_a_sampler_error_and_keeps_its_builtin_base():
    T = tractor_sampler
    assert issubclass(T.NoSampler, T.NotRunning) and issubclass(
        T.NoFeedDaemon, T.NotRunning
    )
    for err, builtin in [
        (T.NotRunning, RuntimeError),
        (T.AlreadyRunning, RuntimeError),
        (T.SamplerRefused, RuntimeError),
        (T.PluginError, Exception),
        (T.UnknownBackend, KeyError),
    ]:
        assert issubclass(err, T.SamplerError) and issubclass(err, builtin), err


def test_missing_singletons_raise_named_errors():
    with pytest.raises(
        tractor_sampler.NoSampler, match='no Sampler runs in this actor'
    ):
        tractor_sampler.get_sampler()
    with pytest.raises(
        tractor_sampler.NoFeedDaemon, match='no feed daemon runs in this actor'
    ):
        tractor_sampler.get_feed_daemon()


async def test_a_second_sampler_in_one_actor_is_refused():
    async with tractor_sampler.open_sampler():
        with pytest.raises(tractor_sampler.AlreadyRunning):
            async with tractor_sampler.open_sampler():
                pass


def test_one_config_filter_serves_the_feed_daemon_and_the_conformance_kit():
    from tractor_sampler import _feedd, _plugins, testing

    assert not hasattr(testing, '_accepted') and not hasattr(_feedd, '_config_for')
    assert testing.config_for is _plugins.config_for is _feedd.config_for

    def history(symbol, period_s, end, count, *, seed=0): ...
    def loose(symbol, **kw): ...

    cfg = {'seed': 1, 'tick_rate': 5}
    assert _plugins.config_for(history, cfg) == {'seed': 1}
    assert _plugins.config_for(loose, cfg) == cfg


def test_feed_status_state_is_validated_on_receipt():
    import msgspec

    from tractor_sampler import FeedStatus

    ok = msgspec.convert({'type': 'status', 'topic': 'A', 'state': 'up'}, FeedStatus)
    assert ok.state == 'up'
    with pytest.raises(msgspec.ValidationError):
        msgspec.convert(
            {'type': 'status', 'topic': 'A', 'state': 'sideways'}, FeedStatus
        )
