"""Loading backend plugins: every failure names the distribution."""

from __future__ import annotations

import os
import re
import sys
import types
from pathlib import Path

import pytest
import trio

from tractor_sampler import _plugins, hookspecs
from tractor_sampler._plugins import (
    Backend,
    BackendRegistry,
    PluginError,
    UnknownBackend,
    load_backends,
    registered_plugin,
)
from tractor_sampler.hookspecs import hookimpl

DOCS = Path(__file__).resolve().parents[3] / 'docs' / 'hooks.md'
ENV = 'TRACTOR_SAMPLER_TEST_PLUGINS'  # never the real variable


async def _quotes(symbols, **config):
    yield {s: {'last': 1.0} for s in symbols}


async def _history(symbol, period_s, end_time, count, **config):
    raise NotImplementedError


def backend_module(
    modname: str, *names: str, hook: str = 'tractor_sampler_register_backends'
) -> types.ModuleType:
    """A plugin module registering ``names`` through ``hook``."""
    mod = types.ModuleType(modname)

    def register_backends(register):
        for n in names:
            register(n, stream_quotes=_quotes, history=_history)

    register_backends.__name__ = hook
    setattr(mod, hook, hookimpl(register_backends))
    return mod


class FakeDist:
    def __init__(self, name: str, version: str) -> None:
        self.name = name
        self.version = version


class FakeEntryPoint:
    """What ``importlib.metadata`` gives: ``.name``, ``.load()``, ``.dist``."""

    def __init__(
        self,
        name: str,
        plugin: object,
        dist: str = 'acme-feeds',
        version: str = '1.2.3',
    ) -> None:
        self.name = name
        self._plugin = plugin
        self.dist = FakeDist(dist, version)

    def load(self) -> object:
        if isinstance(self._plugin, BaseException):
            raise self._plugin
        return self._plugin


@pytest.fixture
def register_plugin():
    """Registers a plugin module in the process registry for one test."""
    with registered_plugin(backend_module('tmp_plugin', 'tmp-backend')) as registry:
        yield registry


@pytest.fixture(autouse=True)
def _no_env(monkeypatch):
    monkeypatch.delenv(ENV, raising=False)


def load(*eps, **kw) -> BackendRegistry:
    return load_backends(env=ENV, entry_points=list(eps), **kw)


def test_builtin_sim_is_there_by_default():
    reg = load()
    assert 'sim' in reg
    sim = reg.get('sim')
    assert isinstance(sim, Backend)
    assert (
        sim.dist == 'builtin'
        and sim.history is not None
        and sim.symbol_info is not None
    )
    from tractor_sampler import __version__

    assert reg.list() == [
        {
            'name': 'replay',  # the replay backend, built in too
            'version': __version__,
            'dist': 'builtin',
            'history': False,
            'symbol_info': True,
        },
        {
            'name': 'sim',
            'version': __version__,
            'dist': 'builtin',
            'history': True,
            'symbol_info': True,
        },
    ]
    assert _plugins.DEFAULT_BACKEND == 'sim'


def test_the_real_entry_points_load():
    # whatever is installed in this environment loads without error
    assert 'sim' in load_backends(env=ENV)


def test_a_plugin_registers_several_backends_with_its_dist_version():
    reg = load(FakeEntryPoint('acme', backend_module('acme_mod', 'acme-a', 'acme-b')))
    assert sorted(reg) == ['acme-a', 'acme-b', 'replay', 'sim']
    assert reg['acme-a'].dist == 'acme-feeds 1.2.3'
    assert reg['acme-a'].version == '1.2.3'
    assert reg['acme-b'].symbol_info is None
    assert reg.plugins == {
        'sim': 'builtin',
        'replay': 'builtin',
        'acme': 'acme-feeds 1.2.3',
    }


def test_register_version_overrides_the_dist_version():
    mod = types.ModuleType('v_mod')

    @hookimpl
    def tractor_sampler_register_backends(register):
        register('v', stream_quotes=_quotes, version='9.9')

    mod.tractor_sampler_register_backends = tractor_sampler_register_backends  # type: ignore[attr-defined]
    assert load(FakeEntryPoint('v', mod)).get('v').version == '9.9'


def test_import_error_names_the_distribution():
    ep = FakeEntryPoint(
        'broken',
        ImportError("No module named 'acme_sdk'"),
        dist='acme-broken',
        version='0.4',
    )
    with pytest.raises(
        PluginError,
        match=r"acme-broken 0\.4: entry point 'broken' failed to import: ImportError: No module named 'acme_sdk'",
    ):
        load(ep)


def test_hook_argument_not_in_spec_names_the_distribution():
    mod = types.ModuleType('badarg')

    @hookimpl
    def tractor_sampler_register_backends(register, loop):
        pass

    mod.tractor_sampler_register_backends = tractor_sampler_register_backends  # type: ignore[attr-defined]
    with pytest.raises(
        PluginError,
        match=r"(?s)acme-feeds 1\.2\.3: plugin 'badarg' implements a hook wrongly.*loop",
    ):
        load(FakeEntryPoint('badarg', mod))


@pytest.mark.parametrize('marked', [True, False])
def test_misspelled_hook_names_the_distribution(marked):
    mod = types.ModuleType('typo')

    def tractor_sampler_register_backend(register):
        pass

    fn = (
        hookimpl(tractor_sampler_register_backend)
        if marked
        else tractor_sampler_register_backend
    )
    mod.tractor_sampler_register_backend = fn  # type: ignore[attr-defined]
    with pytest.raises(
        PluginError,
        match=r"(?s)typo-dist 2\.0: plugin 'typo' has an unknown hook.*tractor_sampler_register_backend",
    ):
        load(
            FakeEntryPoint('ok', backend_module('ok_mod', 'ok')),
            FakeEntryPoint('typo', mod, dist='typo-dist', version='2.0'),
        )


def test_duplicate_backend_name_names_both_distributions():
    a = FakeEntryPoint('a', backend_module('a_mod', 'feed'), dist='dist-a', version='1')
    b = FakeEntryPoint('b', backend_module('b_mod', 'feed'), dist='dist-b', version='2')
    with pytest.raises(
        PluginError, match=r"'feed' is registered twice: by dist-a 1 and by dist-b 2"
    ):
        load(a, b)


def test_plugin_cannot_take_a_builtin_name():
    with pytest.raises(
        PluginError, match=r"'sim' is registered twice: by builtin and by dist-x 1"
    ):
        load(
            FakeEntryPoint(
                'x', backend_module('x_mod', 'sim'), dist='dist-x', version='1'
            )
        )


def test_duplicate_plugin_name_names_both_distributions():
    a = FakeEntryPoint(
        'same', backend_module('a_mod', 'fa'), dist='dist-a', version='1'
    )
    b = FakeEntryPoint(
        'same', backend_module('b_mod', 'fb'), dist='dist-b', version='2'
    )
    with pytest.raises(
        PluginError, match=r"dist-b 2: plugin name 'same' is already taken by dist-a 1"
    ):
        load(a, b)


def test_bad_register_call_and_raising_hook_name_the_distribution():
    bad = types.ModuleType('bad')

    @hookimpl
    def tractor_sampler_register_backends(register):
        register('nope', stream_quotes='not callable')

    bad.tractor_sampler_register_backends = tractor_sampler_register_backends  # type: ignore[attr-defined]
    with pytest.raises(
        PluginError,
        match=r"dist-bad 3: plugin 'bad': backend 'nope': stream_quotes is not callable",
    ):
        load(FakeEntryPoint('bad', bad, dist='dist-bad', version='3'))

    boom = types.ModuleType('boom')

    @hookimpl
    def tractor_sampler_register_backends(register):  # noqa: F811
        raise RuntimeError('kaboom')

    boom.tractor_sampler_register_backends = tractor_sampler_register_backends  # type: ignore[attr-defined]
    with pytest.raises(
        PluginError, match=r"dist-boom 3: plugin 'boom': .*RuntimeError: kaboom"
    ):
        load(FakeEntryPoint('boom', boom, dist='dist-boom', version='3'))


def test_env_var_restricts_which_plugins_load(monkeypatch):
    eps = [
        FakeEntryPoint('a', backend_module('a_mod', 'fa'), dist='dist-a'),
        FakeEntryPoint('b', backend_module('b_mod', 'fb'), dist='dist-b'),
        # never loaded when filtered out, so its import error does not matter
        FakeEntryPoint('c', ImportError('broken'), dist='dist-c'),
    ]
    monkeypatch.setenv(ENV, ' b , a')
    assert sorted(load(*eps)) == ['fa', 'fb', 'replay', 'sim']
    monkeypatch.setenv(ENV, 'b')
    assert sorted(load(*eps)) == ['fb', 'replay', 'sim']
    monkeypatch.setenv(ENV, '')
    assert sorted(load(*eps)) == ['replay', 'sim']  # built-ins always load
    monkeypatch.setenv(ENV, 'b,zzz')
    with pytest.raises(PluginError, match=r'not installed: zzz \(installed: a, b, c\)'):
        load(*eps)
    monkeypatch.delenv(ENV)
    with pytest.raises(PluginError, match='dist-c'):
        load(*eps)


def test_default_env_var_name():
    assert _plugins.ENV_VAR == 'TRACTOR_SAMPLER_PLUGINS'


def test_unknown_backend_lists_the_installed_ones():
    reg = load(FakeEntryPoint('a', backend_module('a_mod', 'fa')))
    with pytest.raises(UnknownBackend) as info:
        reg.get('nasdaq')
    assert isinstance(info.value, KeyError)
    assert str(info.value) == "no backend named 'nasdaq' (installed: fa, replay, sim)"
    with pytest.raises(KeyError, match='nasdaq'):
        reg['nasdaq']
    assert reg.get('nasdaq', None) is None


def test_extra_plugins_and_the_fixture(register_plugin):
    assert 'tmp-backend' in register_plugin
    assert register_plugin['tmp-backend'].dist == 'extra'
    assert _plugins.get_backend('tmp-backend') is register_plugin['tmp-backend']
    assert _plugins.get_backend().name == 'sim'


def test_fixture_registration_ends_with_the_test():
    assert 'tmp-backend' not in _plugins.get_backends()


def test_one_string_names_everything():
    assert hookspecs.PROJECT == 'tractor_sampler'
    assert hookspecs.hookimpl.project_name == hookspecs.PROJECT
    assert hookspecs.hookspec.project_name == hookspecs.PROJECT
    assert hookspecs.HOOK_PREFIX == 'tractor_sampler_'
    assert all(h.startswith(hookspecs.HOOK_PREFIX) for h in _hooks())


def _hooks() -> list[str]:
    return [
        name
        for name, obj in vars(hookspecs).items()
        if callable(obj) and hasattr(obj, f'{hookspecs.PROJECT}_spec')
    ]


def test_docs_have_a_heading_per_hook():
    headings = set(re.findall(r'^## `?(\w+)`?\s*$', DOCS.read_text(), re.M))
    hooks = _hooks()
    assert hooks == [
        'tractor_sampler_register_backends',
        'tractor_sampler_register_stores',
    ]
    missing = set(hooks) - headings
    assert not missing, (
        f'docs/hooks.md lacks a "## <hook>" heading for {sorted(missing)}'
    )


def test_a_broken_plugin_is_left_out_and_the_rest_works_when_not_strict():
    good = FakeEntryPoint('good', backend_module('good_mod', 'good-backend'))
    broken = FakeEntryPoint(
        'bad', ImportError('no module named venue_sdk'), dist='bad-feeds'
    )
    with pytest.raises(PluginError, match='bad-feeds'):
        load(good, broken)  # strict by default: the first failure is raised
    reg = load(good, broken, strict=False)
    assert 'good-backend' in reg and 'sim' in reg
    assert list(reg.broken) == ['bad']
    assert 'bad-feeds' in reg.broken['bad'] and 'venue_sdk' in reg.broken['bad']
    [entry] = [i for i in reg.info() if i.error is not None]
    assert entry.name == 'bad' and 'venue_sdk' in entry.error
    # asking for a backend it may have provided says why it is missing
    with pytest.raises(KeyError, match='broken plugins left out: .*venue_sdk'):
        reg['bad-backend']


def test_a_plugin_whose_register_hook_raises_leaves_nothing_half_registered():
    def explode(register):
        register('half', stream_quotes=_quotes)
        raise RuntimeError('venue down')

    mod = types.ModuleType('explodes')
    explode.__name__ = 'tractor_sampler_register_backends'
    mod.tractor_sampler_register_backends = hookimpl(explode)
    reg = load(FakeEntryPoint('explodes', mod), strict=False)
    assert 'half' not in reg and 'sim' in reg
    assert 'venue down' in reg.broken['explodes']


async def test_ls_backends_lists_a_broken_plugin_in_one_line_and_the_rest():
    env = {**os.environ, _plugins.ENV_VAR: 'not-installed-anywhere'}
    with trio.fail_after(60):
        res = await trio.run_process(
            [sys.executable, '-m', 'tractor_sampler', 'ls', 'backends'],
            capture_stdout=True,
            capture_stderr=True,
            check=False,
            env=env,
        )
    out = res.stdout.decode()
    assert res.returncode == 0, res.stderr.decode()
    assert 'sim' in out
    [line] = [ln for ln in out.splitlines() if 'BROKEN' in ln]
    assert "'not-installed-anywhere'" in line and 'not installed' in line
    assert 'Traceback' not in res.stderr.decode()
