"""
Loading backend plugins.

:func:`load_backends` makes a pluggy ``PluginManager`` for
:data:`~tractor_sampler.hookspecs.PROJECT`, registers the built-in
backends (``sim``), then the ``tractor_sampler`` entry points *one by one*,
runs ``check_pending()``, and calls every plugin's
``tractor_sampler_register_backends`` with a ``register`` callback of its
own, so every failure names the distribution at fault:

- the entry point fails to import (or load);
- a hook implementation takes an argument the spec does not have;
- a hook is misspelled (a ``tractor_sampler_*`` function, marked or not,
  that no spec declares);
- two plugins register the same backend name (both are named);
- ``register()`` is called with bad arguments, or the hook raises.

Plugin *modules* named by the user (``samplerd watch --plugin MODULE``,
``open_market_feed(plugins=[...])``) load through the same function
(``modules=``), so one that fails to import is reported like a broken entry
point.  "Fails" includes ``SystemExit`` (an SDK calling ``sys.exit()`` at
import); every reason is one line.

``TRACTOR_SAMPLER_PLUGINS`` (comma-separated entry-point names) restricts
which third-party plugins load; set and empty, none do.  The built-in
backends always load.  Naming a plugin that is not installed is an error.

"""

from __future__ import annotations

import builtins
import contextlib
import importlib.metadata
import inspect
import os
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from types import ModuleType
from typing import Any, TypeVar, overload

import msgspec
import pluggy

from tractor_services import compat

from . import hookspecs
from ._errors import PluginError, UnknownBackend
from ._info import BackendInfo
from .hookspecs import HOOK_PREFIX, PROJECT, History, StreamQuotes, SymbolInfo

log = compat.get_logger('plugins', 'tractor_sampler')

ENV_VAR = 'TRACTOR_SAMPLER_PLUGINS'
#: the backend everything uses unless told otherwise
DEFAULT_BACKEND = 'sim'
#: what :attr:`Backend.dist` says for backends shipped in this package
BUILTIN = 'builtin'

_T = TypeVar('_T')
_MISSING: Any = object()


def config_for(fn: Callable[..., Any], config: Mapping[str, Any]) -> dict[str, Any]:
    """``config`` limited to the keywords ``fn`` takes: one backend config
    is shared by ``stream_quotes`` (which gets it all), ``history`` and
    ``symbol_info`` (which get what they accept).  The feed daemon and the
    conformance kit both pass config through this one filter."""
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return dict(config)
    if any(p.kind is p.VAR_KEYWORD for p in params):
        return dict(config)
    names = {p.name for p in params}
    return {k: v for k, v in config.items() if k in names}


@dataclass(frozen=True)
class Backend:
    """One registered backend."""

    name: str
    stream_quotes: StreamQuotes
    history: History | None = None
    symbol_info: SymbolInfo | None = None
    #: the version given to ``register()``, else the distribution's
    version: str | None = None
    #: ``'<distribution> <version>'`` that registered it, or ``'builtin'``
    dist: str = BUILTIN


class BackendRegistry(Mapping[str, Backend]):
    """The loaded backends by name.  ``registry[name]`` and
    ``registry.get(name)`` raise :class:`UnknownBackend` (a ``KeyError``)
    listing the installed names; ``get(name, default)`` returns the
    default instead."""

    def __init__(
        self,
        backends: Mapping[str, Backend],
        plugins: Mapping[str, str],
        broken: Mapping[str, str] | None = None,
    ) -> None:
        self._backends = dict(backends)
        #: plugin name -> distribution label, for every plugin loaded
        self.plugins: dict[str, str] = dict(plugins)
        #: plugin name -> why it was left out (``load_backends(strict=False)``)
        self.broken: dict[str, str] = dict(broken or {})

    def __getitem__(self, name: str) -> Backend:
        try:
            return self._backends[name]
        except KeyError:
            raise UnknownBackend(name, self._backends, self.broken) from None

    def __iter__(self) -> Iterator[str]:
        return iter(self._backends)

    def __len__(self) -> int:
        return len(self._backends)

    @overload
    def get(self, name: str) -> Backend: ...

    @overload
    def get(self, name: str, default: Backend | _T) -> Backend | _T: ...

    def get(self, name: str, default: Any = _MISSING) -> Any:
        if default is _MISSING:
            return self[name]
        return self._backends.get(name, default)

    def info(self) -> builtins.list[BackendInfo]:
        """One :class:`~tractor_sampler.BackendInfo` per backend, sorted by
        name: ``name``, ``version``, ``dist`` and which optional parts it
        has."""
        return [
            BackendInfo(
                name=b.name,
                version=b.version,
                dist=b.dist,
                history=b.history is not None,
                symbol_info=b.symbol_info is not None,
            )
            for _, b in sorted(self._backends.items())
        ] + [
            BackendInfo(name=name, dist='', error=why)
            for name, why in sorted(self.broken.items())
        ]

    def list(self) -> builtins.list[dict[str, Any]]:
        """:meth:`info` as plain dicts (``error`` only for a broken plugin)."""
        out = [msgspec.to_builtins(i) for i in self.info()]
        for d in out:
            if d.get('error') is None:
                d.pop('error', None)
        return out

    def __repr__(self) -> str:
        return f'BackendRegistry({sorted(self._backends)})'


class _PluginManager(pluggy.PluginManager):
    """Also treats unmarked ``tractor_sampler_*`` functions as hook
    implementations (as pytest does for ``pytest_*``), so a misspelled,
    unmarked hook is reported by ``check_pending()`` instead of being
    silently ignored."""

    def parse_hookimpl_opts(self, plugin: Any, name: str) -> Any:
        opts = super().parse_hookimpl_opts(plugin, name)
        if opts is None and name.startswith(HOOK_PREFIX):
            method = getattr(plugin, name, None)
            if callable(method) and not isinstance(method, type):
                return {}
        return opts


def _builtin_plugins() -> list[tuple[str, Any]]:
    from .backends import replay, sim

    return [('sim', sim), ('replay', replay)]


def _dist_label(ep: Any) -> str:
    dist = getattr(ep, 'dist', None)
    if dist is None:
        return f'unknown distribution (entry point {ep.name!r})'
    version = getattr(dist, 'version', None)
    return f'{dist.name} {version}' if version else str(dist.name)


def _dist_version(ep: Any) -> str | None:
    dist = getattr(ep, 'dist', None)
    return getattr(dist, 'version', None) if dist is not None else None


def one_line(text: str) -> str:
    """``text`` on one line (pluggy's validation errors span three): a
    broken plugin is reported in one log line and one ``ls`` row."""
    return '; '.join(line.strip() for line in str(text).splitlines() if line.strip())


def describe_load_error(err: BaseException) -> str:
    """How a plugin failed to load, on one line: ``Type: message``."""
    text = one_line(str(err))
    return f'{type(err).__name__}: {text}' if text else type(err).__name__


#: what a plugin may raise while it loads or registers and still be left out
#: (the rest working): any error, and ``sys.exit()`` called by an SDK at
#: import; ``KeyboardInterrupt`` still stops the program
LOAD_ERRORS: tuple[type[BaseException], ...] = (Exception, SystemExit)


def _selected(env: str) -> set[str] | None:
    raw = os.environ.get(env)
    if raw is None:
        return None
    return {n.strip() for n in raw.split(',') if n.strip()}


def load_backends(
    *,
    env: str = ENV_VAR,
    entry_points: Iterable[Any] | None = None,
    extra: Iterable[Any] = (),
    modules: Iterable[str] = (),
    module_note: str = '',
    strict: bool = True,
) -> BackendRegistry:
    """Load every backend plugin and return the registry.

    With ``strict`` (the default) the first broken plugin raises
    :class:`PluginError` naming its distribution.  Without it (the
    daemons and the ``samplerd`` command) a broken plugin is left out,
    logged in one line and listed in the registry's ``broken`` (and by
    ``samplerd ls backends``), and every other backend works.

    ``entry_points`` replaces the installed ``tractor_sampler`` entry points
    (objects with ``.name``, ``.load()`` and ``.dist`` with ``.name`` and
    ``.version``); ``extra`` adds plugin objects (modules), each labelled
    ``'extra'``, never filtered by the environment variable (tests use it to
    register a plugin for one test).  ``modules`` are plugin modules to
    import by name (``--plugin``), each labelled ``module <name>``; one
    that fails to import is a broken plugin like any other (``module_note``
    is added to its reason: where it was imported)."""
    pm = _PluginManager(PROJECT)
    pm.add_hookspecs(hookspecs)
    #: plugin name -> (distribution label, distribution version)
    dists: dict[str, tuple[str, str | None]] = {}
    broken: dict[str, str] = {}

    def refuse(name: str, err: PluginError) -> None:
        """Strict: raise; else leave the plugin out, told once, in one line."""
        if strict:
            raise err
        why = broken[name] = one_line(str(err))
        if pm.has_plugin(name):
            pm.unregister(name=name)
        log.warning(f'backend plugin left out: {why}')

    def add(plugin: Any, name: str, label: str, version: str | None) -> None:
        try:
            _add(plugin, name, label, version)
        except PluginError as err:
            refuse(name, err)

    def _add(plugin: Any, name: str, label: str, version: str | None) -> None:
        if name in dists:
            raise PluginError(
                f'{label}: plugin name {name!r} is already taken by {dists[name][0]}'
            )
        try:
            pm.register(plugin, name=name)
        except pluggy.PluginValidationError as err:
            raise PluginError(
                f'{label}: plugin {name!r} implements a hook wrongly: {one_line(str(err))}'
            ) from err
        except LOAD_ERRORS as err:
            raise PluginError(
                f'{label}: plugin {name!r} failed to register: {describe_load_error(err)}'
            ) from err
        dists[name] = (label, version)

    for name, plugin in _builtin_plugins():
        add(plugin, name, BUILTIN, None)

    if entry_points is None:
        entry_points = importlib.metadata.entry_points(group=PROJECT)
    selected = _selected(env)
    eps = list(entry_points)
    if selected is not None:
        missing = selected - {ep.name for ep in eps}
        if missing:
            installed = ', '.join(sorted(ep.name for ep in eps)) or 'none'
            err = PluginError(
                f'{env} names plugins that are not installed: '
                f'{", ".join(sorted(missing))} (installed: {installed})'
            )
            for name in sorted(missing):
                refuse(name, err)
    for ep in eps:
        if selected is not None and ep.name not in selected:
            continue
        label = _dist_label(ep)
        try:
            plugin = ep.load()
        except LOAD_ERRORS as err:
            if not strict:
                _told_eps.add(_ep_key(ep))  # refuse() tells it
            failed = PluginError(
                f'{label}: entry point {ep.name!r} failed to import: '
                f'{describe_load_error(err)}'
            )
            failed.__cause__ = err
            refuse(ep.name, failed)
            continue
        add(plugin, ep.name, label, _dist_version(ep))

    for i, plugin in enumerate(extra):
        name = getattr(plugin, '__name__', None) or f'extra-{i}'
        add(plugin, name, 'extra', None)

    for path in modules:
        try:
            plugin = importlib.import_module(path)
        except LOAD_ERRORS as err:
            # the note says where it was looked for: for an ImportError
            note = module_note if isinstance(err, ImportError) else ''
            failed = PluginError(
                f'plugin module {path!r} failed to import{note}: '
                f'{describe_load_error(err)}'
            )
            failed.__cause__ = err
            refuse(path, failed)
            continue
        add(plugin, path, f'module {path}', None)

    while True:
        try:
            pm.check_pending()
            break
        except pluggy.PluginValidationError as err:
            pname = pm.get_name(err.plugin)
            label = (
                dists.get(pname, ('unknown distribution', None))[0]
                if pname
                else 'unknown distribution'
            )
            failed = PluginError(
                f'{label}: plugin {pname!r} has an unknown hook (misspelled?): {err}'
            )
            failed.__cause__ = err
            if strict or pname is None:
                raise failed from err
            refuse(pname, failed)

    backends: dict[str, Backend] = {}
    for impl in pm.hook.tractor_sampler_register_backends.get_hookimpls():
        label, dist_version = dists[impl.plugin_name]
        register = _make_register(backends, impl.plugin_name, label, dist_version)
        args = {'register': register}
        before = dict(backends)
        try:
            impl.function(**{a: args[a] for a in impl.argnames})
        except LOAD_ERRORS as err:
            failed = (
                err
                if isinstance(err, PluginError)
                else PluginError(
                    f'{label}: plugin {impl.plugin_name!r}: '
                    f'tractor_sampler_register_backends raised {describe_load_error(err)}'
                )
            )
            if failed is not err:
                failed.__cause__ = err
            backends.clear()  # what this plugin registered before it failed goes
            backends.update(before)
            refuse(impl.plugin_name, failed)

    return BackendRegistry(
        backends,
        {n: d[0] for n, d in dists.items() if n not in broken},
        broken,
    )


def _make_register(
    backends: dict[str, Backend],
    plugin_name: str,
    label: str,
    dist_version: str | None,
) -> Callable[..., None]:
    def register(
        name: str,
        *,
        stream_quotes: StreamQuotes,
        history: History | None = None,
        symbol_info: SymbolInfo | None = None,
        version: str | None = None,
    ) -> None:
        where = f'{label}: plugin {plugin_name!r}'
        if not isinstance(name, str) or not name:
            raise PluginError(f'{where} registered a backend with a bad name {name!r}')
        if not callable(stream_quotes):
            raise PluginError(
                f'{where}: backend {name!r}: stream_quotes is not callable'
            )
        for what, fn in (('history', history), ('symbol_info', symbol_info)):
            if fn is not None and not callable(fn):
                raise PluginError(f'{where}: backend {name!r}: {what} is not callable')
        if name in backends:
            raise PluginError(
                f'backend {name!r} is registered twice: by {backends[name].dist} '
                f'and by {label} (plugin {plugin_name!r})'
            )
        backends[name] = Backend(
            name=name,
            stream_quotes=stream_quotes,
            history=history,
            symbol_info=symbol_info,
            version=version if version is not None else dist_version,
            dist=label,
        )

    return register


# -- the process-wide registry ----------------------------------------------

_cached: BackendRegistry | None = None
_extra: list[Any] = []


def get_backends(*, refresh: bool = False) -> BackendRegistry:
    """The registry of this process, loaded on first use (plus any plugin
    :func:`registered_plugin` adds)."""
    global _cached
    if _cached is None or refresh:
        _cached = load_backends(extra=list(_extra), strict=False)
    return _cached


def get_backend(name: str = DEFAULT_BACKEND) -> Backend:
    """One backend of the process registry, by name (default ``'sim'``)."""
    return get_backends()[name]


@contextlib.contextmanager
def registered_plugin(*plugins: ModuleType | Any) -> Iterator[BackendRegistry]:
    """Register plugin objects (modules) in the process registry for the
    duration of the block (a test fixture's body), yielding the registry."""
    global _cached
    _extra.extend(plugins)
    _cached = None
    try:
        yield get_backends()
    finally:
        for p in plugins:
            _extra.remove(p)
        _cached = None


# -- bar stores (the tractor_sampler_register_stores hook) -----------------


def load_stores(
    *, entry_points: Iterable[Any] | None = None, extra: Iterable[Any] = ()
) -> dict[str, Callable[..., Any]]:
    """Every registered bar store factory by name: the built-in Parquet
    store (``tractor_sampler._store``) and those of the installed
    ``tractor_sampler`` entry points (plus ``extra`` plugin objects).  A
    plugin that fails to load or registers a taken name is left out and
    logged in one line (the store is optional: the feed runs without it)."""
    from . import _store

    pm = _PluginManager(PROJECT)
    pm.add_hookspecs(hookspecs)
    pm.register(_store, name='store:parquet')
    eps = (
        importlib.metadata.entry_points(group=PROJECT)
        if entry_points is None
        else entry_points
    )
    for ep in eps:
        try:
            plugin = ep.load()
        except LOAD_ERRORS as err:
            if _report_once(ep):  # else load_backends told it already
                log.warning(
                    f'store plugin {ep.name!r} left out: {describe_load_error(err)}'
                )
            continue
        try:
            pm.register(plugin, name=f'store:{ep.name}')
        except LOAD_ERRORS as err:
            log.warning(
                f'store plugin {ep.name!r} left out: {describe_load_error(err)}'
            )
    for i, plugin in enumerate(extra):
        pm.register(plugin, name=f'store:extra{i}')
    stores: dict[str, Callable[..., Any]] = {}
    for impl in pm.hook.tractor_sampler_register_stores.get_hookimpls():

        def register(
            name: str, factory: Callable[..., Any], _who: str = impl.plugin_name
        ) -> None:
            if not isinstance(name, str) or not name or not callable(factory):
                raise PluginError(f'{_who} registered a bad store {name!r}')
            if name in stores:
                raise PluginError(f'bar store {name!r} is registered twice ({_who})')
            stores[name] = factory

        try:
            impl.function(register=register)
        except LOAD_ERRORS as err:
            log.warning(
                f'store plugin {impl.plugin_name!r} left out: {describe_load_error(err)}'
            )
    return stores


#: entry points (name, value) whose import failure was logged in this
#: process: both loaders (backends, stores) import them, it is told once
_told_eps: set[tuple[str, str]] = set()


def _ep_key(ep: Any) -> tuple[str, str]:
    return (str(ep.name), str(getattr(ep, 'value', '')))


def _report_once(ep: Any) -> bool:
    """Whether ``ep``'s import failure is still to be told; marks it told."""
    key = _ep_key(ep)
    told = key in _told_eps
    _told_eps.add(key)
    return not told
