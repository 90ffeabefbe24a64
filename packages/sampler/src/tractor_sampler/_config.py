"""
``samplerd run --config samplerd.toml``: the config file of a root daemon
(docs/production.md, "The config file").

The file sets everything ``samplerd run``'s flags set (under the flag's
name, dashes as underscores: ``port``, ``data_dir``, ``metrics_port``...)
plus what has no flag: the feed daemons' buffers, group size, stale
watch and plugin modules (``[feeds]``), the restart policies of samplerd,
the feed daemons and their quote streams (``[restart.*]``), and per
backend the topics the root starts at boot and their config
(``[backends.NAME]``).  Flags given on the command line override the
file; the file overrides the environment variables, which override the
built-in defaults.

The whole file is checked before anything starts: a key the schema does
not know, a value of the wrong type or out of range, a missing file or
bad TOML is one :class:`ConfigError` line naming the file and the key
(``samplerd.toml: [backends.sim] tick_rate: expected a number, got
'fast'``), which ``samplerd`` prints and exits with status 2.

Boot topics (:func:`open_boot_topics`): the root holds each backend's
topics open as a client of its feed daemon for as long as it runs, so
they never linger away; when the feed daemon dies the root's manager
restarts it and the root attaches the topics again.
"""

from __future__ import annotations

import argparse
import inspect
import os
import re
import sys
import types
import typing
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager as acm
from dataclasses import dataclass, field
from typing import Any, Literal

import msgspec
import trio

from tractor_services import RestartPolicy, compat

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - 3.10
    import tomli as tomllib

log = compat.get_logger('config', 'tractor_sampler')


class ConfigError(ValueError):
    """The config file cannot be used: one line naming the file and key."""


# --- the schema ---------------------------------------------------------------


class _Table(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    pass


class Feeds(_Table):
    """``[feeds]``: the feed daemons the root starts (those of the
    backends named under ``[backends]``)."""

    #: seconds without a quote before a topic is reported ``stale`` (every
    #: feed daemon of this root; 0: never)
    stale_after: float | None = None
    #: member slots of each shared-memory group of buffers
    group_members: int | None = None
    #: plugin modules the feed daemons also load (backends not installed
    #: as entry points)
    plugins: list[str] = []
    #: the buffers of every topic, by period in seconds (``"1"``, ``"60"``)
    buffers: dict[str, Any] | None = None


class RestartTable(_Table):
    """``[restart.samplerd]`` / ``feedd`` / ``stream``: the fields of a
    :class:`~tractor_services.RestartPolicy`; those left out keep the
    built-in policy's."""

    restart: Literal['permanent', 'transient', 'temporary'] | None = None
    max_restarts: int | None = None
    within_s: float | None = None
    backoff_s: float | None = None
    backoff_factor: float | None = None
    max_backoff_s: float | None = None


class Restarts(_Table):
    samplerd: RestartTable | None = None
    feedd: RestartTable | None = None
    stream: RestartTable | None = None


class BufferTable(_Table):
    """One period's buffer in its table form (see ``check_buffers``)."""

    rows: int
    history: int = 0
    from_: float | None = msgspec.field(default=None, name='from')
    origin: float | None = None
    stamp: Literal['open', 'close'] | None = None
    skip_first_partial: bool | None = None


class Config(_Table):
    """The whole file; :func:`load_config` checks and returns it."""

    host: str | None = None
    port: int | None = None
    loglevel: str | None = None
    pdb: bool | None = None
    data_dir: str | None = None
    store: bool | None = None
    record: bool | None = None
    linger: float | None = None
    upstream: str | None = None
    join: str | None = None
    label: str | None = None
    metrics_port: int | None = None
    metrics_host: str | None = None
    #: a file holding the root's token (``$TRACTOR_SERVICES_TOKEN_FILE``)
    token_file: str | None = None
    #: more modules a guarded root spawns endpoints from
    #: (``$TRACTOR_SERVICES_ALLOW_MODULES``)
    allow_modules: list[str] = []
    feeds: Feeds = msgspec.field(default_factory=Feeds)
    restart: Restarts = msgspec.field(default_factory=Restarts)
    #: backend name -> its table: ``topics`` plus the backend's config
    backends: dict[str, dict[str, Any]] = {}


#: the keys ``samplerd run``'s flags also set: key -> (args attribute, how
#: a flag that was not given looks)
FLAG_KEYS: dict[str, tuple[str, Any]] = {
    'host': ('host', None),
    'port': ('port', None),
    'loglevel': ('loglevel', None),
    'pdb': ('pdb', False),
    'data_dir': ('data_dir', None),
    'record': ('record', False),
    'linger': ('linger', None),
    'upstream': ('upstream', None),
    'join': ('join', None),
    'label': ('label', None),
    'metrics_port': ('metrics_port', None),
    'metrics_host': ('metrics_host', None),
}


@dataclass
class BackendSection:
    """``[backends.NAME]``: its boot topics and the config they start with."""

    name: str
    topics: list[str] = field(default_factory=list)
    config: dict[str, Any] = field(default_factory=dict)


@dataclass
class RunConfig:
    """A checked config file: what :func:`apply_config` did not put into
    the flags' namespace."""

    path: str
    raw: Config
    #: the buffers' checked IPC form (None: the built-in default)
    buffers: dict[str, Any] | None
    policies: dict[str, RestartPolicy]
    backends: list[BackendSection]


# --- wording msgspec's errors as one line ---------------------------------------

_TYPE_WORDS = {
    'int': 'an integer',
    'float': 'a number',
    'str': 'a string',
    'bool': 'true or false',
    'array': 'a list',
    'object': 'a table',
}


def _where(path: list[Any]) -> str:
    """``['backends', 'sim', 'tick_rate']`` -> ``[backends.sim] tick_rate``."""
    parts: list[str] = []
    for p in path:
        if isinstance(p, int):
            if parts:
                parts[-1] += f'[{p}]'
            continue
        s = str(p)
        parts.append(s if re.fullmatch(r'[A-Za-z0-9_-]+', s) else repr(s))
    if not parts:
        return '(top level)'
    if len(parts) == 1:
        return parts[0]
    return f'[{".".join(parts[:-1])}] {parts[-1]}'


def _expected(types: str) -> str:
    words = [
        _TYPE_WORDS.get(t.strip(), t.strip())
        for t in types.split('|')
        if t.strip() != 'null'
    ]
    return ' or '.join(words)


def _value_at(data: Any, path: list[Any]) -> Any:
    for p in path:
        try:
            data = data[p]
        except (KeyError, IndexError, TypeError):
            return None
    return data


def _show(value: Any) -> str:
    if isinstance(value, bool):
        return 'true' if value else 'false'
    if isinstance(value, dict):
        return 'a table'
    if isinstance(value, list):
        return 'a list'
    return repr(value)


def _convert(
    data: Any, type_: Any, path: list[Any], file: str, known: Any = None
) -> Any:
    """``msgspec.convert(data, type_)``; its error reworded as one
    :class:`ConfigError` line naming ``file`` and the key's path (``path``
    is where ``data`` sits in the file)."""
    try:
        return msgspec.convert(data, type_)
    except msgspec.ValidationError as err:
        raise _reword(
            err, data, path, file, type_ if known is None else known
        ) from None


def _fields_of(type_: Any) -> list[str]:
    if isinstance(type_, type) and issubclass(type_, msgspec.Struct):
        return [f.encode_name for f in msgspec.structs.fields(type_)]
    return []


def _reword(
    err: msgspec.ValidationError, data: Any, path: list[Any], file: str, type_: Any
) -> ConfigError:
    text = str(err)
    sub: list[Any] = []
    m = re.search(r' - at `\$(.*)`$', text)
    if m:
        text = text[: m.start()]
        for name, idx in re.findall(r'\.([^.\[]+)|\[(\d+)\]', m.group(1)):
            sub.append(int(idx) if idx else name)
    full = path + sub
    unknown = re.match(r'Object contains unknown field `(.+)`$', text)
    if unknown:
        key = unknown.group(1)
        t = type_
        for name in sub:  # the struct type of that table, for its keys
            t = _field_type(t, name)
        known = sorted(_fields_of(t))
        hint = f' (known keys: {", ".join(known)})' if known else ''
        return ConfigError(f'{file}: {_where(full + [key])}: unknown key{hint}')
    missing = re.match(r'Object missing required field `(.+)`$', text)
    if missing:
        return ConfigError(
            f'{file}: {_where(full)}: the table needs the key {missing.group(1)!r}'
        )
    expected = re.match(r'Expected `(.+)`, got `(.+)`$', text)
    value = _value_at(data, sub)
    if expected:
        return ConfigError(
            f'{file}: {_where(full)}: expected {_expected(expected.group(1))}, '
            f'got {_show(value)}'
        )
    enum = re.match(r'Invalid enum value (.+)$', text)
    if enum:
        choices = _choices(type_, sub)
        return ConfigError(
            f'{file}: {_where(full)}: {enum.group(1)} is not one of {choices}'
            if choices
            else f'{file}: {_where(full)}: {enum.group(1)} is not allowed'
        )
    text = re.sub(r'^RestartPolicy: ', '', text)
    return ConfigError(f'{file}: {_where(full)}: {text[:1].lower() + text[1:]}')


def _field_type(t: Any, name: Any) -> Any:
    if isinstance(t, type) and issubclass(t, msgspec.Struct):
        hints = typing.get_type_hints(t)
        for f in msgspec.structs.fields(t):
            if f.encode_name == name:
                t = hints.get(f.name, Any)
                break
        else:
            return Any
    # X | None -> X
    args = [a for a in typing.get_args(t) if a is not type(None)]
    if typing.get_origin(t) in (typing.Union, types.UnionType) and len(args) == 1:
        return args[0]
    return t


def _choices(type_: Any, sub: list[Any]) -> str:
    t = type_
    for name in sub:
        t = _field_type(t, name)
    lits = typing.get_args(t) if typing.get_origin(t) is Literal else ()
    return ', '.join(repr(v) for v in lits)


# --- loading ------------------------------------------------------------------


def read_toml(path: str) -> dict[str, Any]:
    """The file's TOML, or one :class:`ConfigError` line."""
    try:
        with open(path, 'rb') as f:
            return tomllib.load(f)
    except FileNotFoundError:
        raise ConfigError(f'{path}: no such file') from None
    except IsADirectoryError:
        raise ConfigError(f'{path}: is a directory, not a config file') from None
    except OSError as err:
        raise ConfigError(f'{path}: cannot be read ({err.strerror or err})') from None
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f'{path}: not valid TOML: {err}') from None
    except UnicodeDecodeError as err:
        raise ConfigError(f'{path}: not valid TOML: {err.reason}') from None


def load_config(path: str) -> RunConfig:
    """Read and check the config file at ``path`` (every key and value,
    the backends it names and their config): a :class:`RunConfig`, or one
    :class:`ConfigError` line."""
    data = read_toml(path)
    cfg = _convert(data, Config, [], path)
    _check_values(cfg, path)
    return RunConfig(
        path=path,
        raw=cfg,
        buffers=_buffers(cfg.feeds.buffers, path),
        policies=_policies(cfg.restart, path),
        backends=_backends(data.get('backends', {}), cfg, path),
    )


def _check_values(cfg: Config, path: str) -> None:
    """The ranges a type cannot say."""
    from ._lifecycle import check_seconds
    from ._pool import check_group_members

    for key in ('port', 'metrics_port'):
        v = getattr(cfg, key)
        if v is not None and not 0 <= v <= 65535:
            raise ConfigError(f'{path}: {key}: {v} is out of range (0 to 65535)')
    for where, v in (
        ('linger', cfg.linger),
        ('[feeds] stale_after', cfg.feeds.stale_after),
    ):
        if v is not None:
            try:
                check_seconds(v, where.split()[-1])
            except ValueError:
                raise ConfigError(
                    f'{path}: {where}: {v!r} must be a number of seconds >= 0'
                ) from None
    if cfg.feeds.group_members is not None:
        try:
            check_group_members(cfg.feeds.group_members)
        except ValueError:
            raise ConfigError(
                f'{path}: [feeds] group_members: {cfg.feeds.group_members} must be '
                'in [1, 1048576]'
            ) from None
    for key in ('host', 'upstream', 'join', 'label', 'loglevel', 'data_dir'):
        v = getattr(cfg, key)
        if v is not None and not v.strip():
            raise ConfigError(f'{path}: {key}: must not be empty')
    for i, m in enumerate(cfg.allow_modules):
        if not m:
            raise ConfigError(f'{path}: allow_modules[{i}]: must not be empty')
    for i, m in enumerate(cfg.feeds.plugins):
        if not m:
            raise ConfigError(f'{path}: [feeds] plugins[{i}]: must not be empty')


def _buffers(raw: dict[str, Any] | None, path: str) -> dict[str, Any] | None:
    """``[feeds.buffers]`` checked as the feed daemon checks it; its IPC form."""
    if raw is None:
        return None
    from ._feed import buffers_msg

    spec: dict[float, Any] = {}
    keys: dict[float, str] = {}
    for key, value in raw.items():
        where = ['feeds', 'buffers', key]
        try:
            period = float(key)
        except ValueError:
            raise ConfigError(
                f'{path}: {_where(where)}: the key is a period in seconds '
                '(e.g. "1", "60")'
            ) from None
        if isinstance(value, dict):
            t = _convert(value, BufferTable, where, path)
            value = {k: v for k, v in msgspec.to_builtins(t).items() if v is not None}
        else:
            _convert(value, int | tuple[int, int], where, path)
        spec[period] = value
        keys[period] = key
    if not spec:
        raise ConfigError(
            f'{path}: [feeds.buffers]: empty: leave the table out for the defaults'
        )
    try:
        return buffers_msg(spec)
    except ValueError as err:
        # 'buffers[60.0]: rows=2 must be ...' -> '[feeds.buffers.60] rows: 2 must be ...'
        m = re.match(r'buffers\[([^\]]+)\]: (?:(\w+)=)?(.*)$', str(err))
        if m is None:
            raise ConfigError(f'{path}: [feeds.buffers]: {err}') from None
        try:
            key = keys.get(float(m.group(1)), m.group(1))
        except ValueError:
            key = m.group(1)
        where = ['feeds', 'buffers', key] + ([m.group(2)] if m.group(2) else [])
        raise ConfigError(f'{path}: {_where(where)}: {m.group(3)}') from None


#: the built-in policies the tables modify
def _default_policies() -> dict[str, RestartPolicy]:
    from ._client import SAMPLERD_POLICY
    from ._feed import FEEDD_POLICY
    from ._feedd import DEFAULT_STREAM_POLICY

    return {
        'samplerd': SAMPLERD_POLICY,
        'feedd': FEEDD_POLICY,
        'stream': DEFAULT_STREAM_POLICY,
    }


def _policies(restarts: Restarts, path: str) -> dict[str, RestartPolicy]:
    out = _default_policies()
    for name in out:
        table = getattr(restarts, name)
        if table is None:
            continue
        given = {
            k: v for k, v in msgspec.structs.asdict(table).items() if v is not None
        }
        merged = {**msgspec.structs.asdict(out[name]), **given}
        try:
            out[name] = RestartPolicy(**merged)
        except (TypeError, ValueError) as err:
            text = re.sub(r'^RestartPolicy: ', '', str(err))
            m = re.match(r'(\w+)=(.*)$', text)
            where = _where(['restart', name, m.group(1)]) if m else f'[restart.{name}]'
            raise ConfigError(f'{path}: {where}: {m.group(2) if m else text}') from None
    return out


def _backends(raw: dict[str, Any], cfg: Config, path: str) -> list[BackendSection]:
    """``[backends.NAME]``: the backend installed (or among ``[feeds]
    plugins``), its ``topics`` a list of distinct names, and the rest
    its config: keys its ``stream_quotes`` takes, of their types, and
    values it accepts (it is called to check them, as the feed daemon
    would, when there are topics to call it with)."""
    if not raw:
        return []
    from ._feedd import _with_relay, check_topics

    out = []
    registry = None
    for name, table in raw.items():
        if registry is None or name == 'relay':
            registry = _load_registry(name, cfg.feeds.plugins, path, _with_relay)
        try:
            be = registry[name]
        except KeyError as err:
            raise ConfigError(f'{path}: [backends.{name}]: {err}') from None
        table = dict(table)
        topics = table.pop('topics', [])
        topics = _convert(topics, list[str], ['backends', name, 'topics'], path)
        if topics:
            try:
                topics = check_topics(topics)
            except (TypeError, ValueError) as err:
                raise ConfigError(f'{path}: [backends.{name}] topics: {err}') from None
        config = _backend_config(be, table, ['backends', name], path)
        if topics:
            _try_stream_quotes(be, topics, config, name, path)
        out.append(BackendSection(name, topics, config))
    return out


def _load_registry(name: str, plugins: list[str], path: str, with_relay: Any) -> Any:
    import importlib

    from ._plugins import load_backends

    extra = []
    for mod in with_relay(name, plugins):
        try:
            extra.append(importlib.import_module(mod))
        except ImportError as err:
            raise ConfigError(
                f'{path}: [feeds] plugins: module {mod!r} does not import: {err}'
            ) from None
    return load_backends(extra=extra, strict=False)


def _backend_config(
    be: Any, table: dict[str, Any], where: list[Any], path: str
) -> dict[str, Any]:
    """The backend's config, each key checked against ``stream_quotes``'s
    keyword parameters and their annotated types."""
    fn = be.stream_quotes
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):
        return table
    params = list(sig.parameters.values())
    if any(p.kind is p.VAR_KEYWORD for p in params):
        return table  # it takes anything: its own check, at start
    try:
        hints = typing.get_type_hints(fn)
    except Exception:
        hints = {}
    fields = []
    for p in params[1:]:  # the first is the symbols
        if p.kind not in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD):
            continue
        t = hints.get(p.name, Any)
        if not _file_type(t):
            continue  # not something a file can hold (a callable, a clock)
        default = p.default if p.default is not p.empty else msgspec.NODEFAULT
        fields.append((p.name, t, default))
    struct = msgspec.defstruct(
        f'{be.name}_config', fields, kw_only=True, forbid_unknown_fields=True
    )
    _convert(table, struct, where, path)
    return table


def _file_type(t: Any) -> bool:
    """Can a TOML value be converted to ``t``?"""
    try:
        info = msgspec.inspect.type_info(t)
    except Exception:
        return False
    parts = info.types if isinstance(info, msgspec.inspect.UnionType) else (info,)
    return not any(isinstance(p, msgspec.inspect.CustomType) for p in parts)


def _try_stream_quotes(
    be: Any, topics: list[str], config: dict[str, Any], name: str, path: str
) -> None:
    """Check the values as the feed daemon would: a backend whose
    ``stream_quotes`` is a plain function checks its arguments when called
    (the built-in ones do) and returns the stream, which is never started
    here (an async generator object that is never iterated runs nothing)."""
    fn = be.stream_quotes
    if inspect.iscoroutinefunction(fn) or inspect.isasyncgenfunction(fn):
        return
    try:
        stream = fn(list(topics), **config)
    except (TypeError, ValueError) as err:
        raise ConfigError(f'{path}: [backends.{name}]: {err}') from None
    except Exception as err:  # the backend's own error: named, one line
        raise ConfigError(
            f'{path}: [backends.{name}]: {type(err).__name__}: {err}'
        ) from None
    close = getattr(stream, 'close', None)
    if inspect.iscoroutine(stream) and close is not None:
        close()


# --- applying it --------------------------------------------------------------


def apply_config(args: argparse.Namespace) -> RunConfig | None:
    """Load ``args.config`` (if given) and put its flag keys into ``args``
    where the flag was not given (flags override the file); set the
    settings that have no flag in this process's environment, which the
    services it spawns inherit.  One :class:`ConfigError` line when the
    file is bad.  ``None`` without a config file."""
    path = getattr(args, 'config', None)
    if path is None:
        return None
    rc = load_config(path)
    cfg = rc.raw
    for key, (attr, unset) in FLAG_KEYS.items():
        value = getattr(cfg, key)
        if value is not None and getattr(args, attr, unset) in (unset, None):
            setattr(args, attr, value)
    if cfg.store is False and not getattr(args, 'no_store', False):
        args.no_store = True
    if (
        cfg.metrics_port is not None
        and getattr(args, 'metrics_port', None) == cfg.metrics_port
    ):
        _require_metrics(path)
    args.run_config = rc
    return rc


def _require_metrics(path: str) -> None:
    """``metrics_port`` from the file: prometheus_client (the ``metrics``
    extra) must be installed, as ``--metrics-port`` checks for the flag."""
    from ._metrics import MetricsUnavailable, require_prometheus

    try:
        require_prometheus()
    except MetricsUnavailable as err:
        raise ConfigError(f'{path}: metrics_port: {err}') from None


def set_environment(rc: RunConfig | None) -> None:
    """The settings without a flag, in this root's environment (every
    daemon its manager spawns inherits them, the feed daemons its clients
    ask for included): ``[feeds]`` (stale_after, buffers, group_members,
    plugins), ``[restart.stream]``, ``token_file``, ``allow_modules``."""
    if rc is None:
        return
    from tractor_services._remote import ALLOW_MODULES_ENV, TOKEN_FILE_ENV

    from ._feedd import BUFFERS_ENV, GROUP_MEMBERS_ENV, STREAM_RESTART_ENV
    from ._lifecycle import STALE_AFTER_ENV
    from ._plugins import ENV_VAR as PLUGINS_ENV

    cfg = rc.raw
    if cfg.feeds.stale_after is not None:
        os.environ[STALE_AFTER_ENV] = repr(float(cfg.feeds.stale_after))
    if rc.buffers is not None:
        os.environ[BUFFERS_ENV] = msgspec.json.encode(rc.buffers).decode()
    if cfg.feeds.group_members is not None:
        os.environ[GROUP_MEMBERS_ENV] = str(cfg.feeds.group_members)
    if cfg.restart.stream is not None:
        os.environ[STREAM_RESTART_ENV] = msgspec.json.encode(
            msgspec.to_builtins(rc.policies['stream'])
        ).decode()
    _add_to_list_env(PLUGINS_ENV, cfg.feeds.plugins)
    if cfg.token_file is not None and not os.environ.get(TOKEN_FILE_ENV):
        os.environ[TOKEN_FILE_ENV] = cfg.token_file
    _add_to_list_env(ALLOW_MODULES_ENV, cfg.allow_modules)


def _add_to_list_env(name: str, items: list[str]) -> None:
    """``items`` appended to the comma-separated list in ``$name``."""
    if items:
        have = [m for m in os.environ.get(name, '').split(',') if m]
        os.environ[name] = ','.join(have + [m for m in items if m not in have])


def effective_settings(
    args: argparse.Namespace, rc: RunConfig | None
) -> dict[str, Any]:
    """What ``samplerd run`` would run with (``--check-config``): the flags
    over the file over the environment over the defaults."""
    from tractor_services import default_registry_addr

    from ._datadir import resolve_data_dir
    from ._feedd import DEFAULT_BUFFERS
    from ._lifecycle import (
        DEFAULT_LINGER_S,
        DEFAULT_STALE_AFTER_S,
        LINGER_ENV,
        STALE_AFTER_ENV,
        setting,
    )
    from ._pool import DEFAULT_GROUP_MEMBERS

    host, port = default_registry_addr()
    cfg = rc.raw if rc is not None else Config()
    stale = cfg.feeds.stale_after
    buffers = (
        rc.buffers
        if rc is not None and rc.buffers is not None
        else {
            repr(p): {'rows': r, 'history': h} for p, (r, h) in DEFAULT_BUFFERS.items()
        }
    )
    policies = rc.policies if rc is not None else _default_policies()
    return {
        'config': getattr(args, 'config', None),
        'host': args.host or host,
        'port': args.port if args.port is not None else port,
        'loglevel': args.loglevel,
        'pdb': bool(args.pdb),
        'data_dir': str(resolve_data_dir(getattr(args, 'data_dir', None)).absolute()),
        'store': not getattr(args, 'no_store', False),
        'record': bool(getattr(args, 'record', False)),
        'linger': setting(
            getattr(args, 'linger', None), LINGER_ENV, DEFAULT_LINGER_S, 'linger'
        ),
        'upstream': getattr(args, 'upstream', None),
        'join': getattr(args, 'join', None),
        'label': getattr(args, 'label', None),
        'metrics_port': getattr(args, 'metrics_port', None),
        'metrics_host': getattr(args, 'metrics_host', None),
        'token_file': cfg.token_file,
        'allow_modules': list(cfg.allow_modules),
        'feeds': {
            'stale_after': setting(
                stale, STALE_AFTER_ENV, DEFAULT_STALE_AFTER_S, 'stale_after'
            ),
            'group_members': cfg.feeds.group_members or DEFAULT_GROUP_MEMBERS,
            'plugins': list(cfg.feeds.plugins),
            'buffers': buffers,
        },
        'restart': {k: msgspec.to_builtins(v) for k, v in policies.items()},
        'backends': {
            b.name: {'topics': b.topics, 'config': b.config}
            for b in (rc.backends if rc is not None else [])
        },
    }


# --- boot topics --------------------------------------------------------------

#: seconds between attempts to attach boot topics again (doubling, capped)
REATTACH_S = (0.5, 10.0)


@acm
async def open_boot_topics(
    rc: RunConfig | None,
    registry_addr: tuple[str, int],
    loglevel: str | None = None,
) -> AsyncIterator[list[str]]:
    """Start the boot topics of ``rc`` (``[backends.NAME] topics``) and
    hold them for as long as the block runs: the root is a client of each
    of their feed daemons, so they never linger away.  Yields their names
    (``backend/topic``) once every one is up; a topic that cannot start
    (an unknown symbol, a config its backend refuses) raises one
    ``ValueError`` line before that.  When a feed daemon dies (its restart
    policy brings it back) or a topic's stream policy gives up, its topics
    are attached again, backing off from :data:`REATTACH_S`; a topic stopped
    on request (``samplerd stop``) stays stopped."""
    sections = [b for b in (rc.backends if rc is not None else []) if b.topics]
    if not sections:
        yield []
        return
    assert rc is not None
    async with trio.open_nursery() as tn:
        for b in sections:
            await tn.start(_hold_backend, rc, b, registry_addr, loglevel)
        yield [f'{b.name}/{t}' for b in sections for t in b.topics]
        tn.cancel_scope.cancel()


class _Reattach(Exception):
    pass


async def _hold_backend(
    rc: RunConfig,
    b: BackendSection,
    addr: tuple[str, int],
    loglevel: str | None,
    task_status: Any = trio.TASK_STATUS_IGNORED,
) -> None:
    from tractor_services import PeerDisconnected, PeerGone, ServiceError

    from ._feed import StatusStream, _refusals_as_value_errors, maybe_open_feedd
    from ._feedd import attach_feed, feedd_name
    from ._msgs import FeedStatus

    topics = list(b.topics)
    first = True
    wait = REATTACH_S[0]
    what = f'the feed daemon {feedd_name(b.name)}'
    while topics:
        try:
            async with (
                maybe_open_feedd(
                    b.name,
                    registry_addr=addr,
                    buffers=_periods(rc.buffers),
                    restart=rc.policies['stream'],
                    plugins=rc.raw.feeds.plugins,
                    loglevel=loglevel,
                    group_members=rc.raw.feeds.group_members,
                    daemon_restart=rc.policies['feedd'],
                ) as portal,
                _refusals_as_value_errors() as entering,
                compat.open_context(
                    portal,
                    attach_feed,
                    topics=topics,
                    config=dict(b.config) or None,
                ) as (ctx, started),
            ):
                entering.done = True
                async with (
                    compat.raise_on_peer_exit(started['pid'], what, portal),
                    compat.open_drained_stream(ctx) as sstream,
                ):
                    status = StatusStream(
                        stream=sstream, buffer=256, heartbeat_s=None, peer_what=what
                    )
                    async with status._running(), status.open_reader() as reports:
                        if first:
                            first = False
                            task_status.started()
                        else:
                            log.warning(
                                f'boot topics of {b.name} attached again: '
                                f'{", ".join(topics)}'
                            )
                        wait = REATTACH_S[0]
                        async for st in reports:
                            if not isinstance(st, FeedStatus):
                                continue
                            if st.state == 'ended' and st.topic in topics:
                                log.warning(
                                    f'boot topic {b.name}/{st.topic} ended '
                                    f'({st.error}): not started again until '
                                    'the root restarts'
                                )
                                topics.remove(st.topic)
                                if not topics:
                                    break
                            elif st.state == 'failed':
                                raise _Reattach(f'{st.topic} failed: {st.error}')
                        else:
                            raise _Reattach(f'{what} ended the status stream')
                await ctx.cancel()
                return  # every boot topic of the backend stopped on request
        except (_Reattach, PeerGone, PeerDisconnected, ServiceError, ValueError) as err:
            if first:
                if isinstance(err, ValueError):
                    raise ValueError(f'[backends.{b.name}] topics: {err}') from None
                raise
            log.warning(
                f'boot topics of {b.name}: {err}; attaching them again in {wait:g} s'
            )
        except BaseException as exc:
            inner = compat.unwrap_error(exc)
            if first or not isinstance(inner, (PeerGone, PeerDisconnected)):
                raise
            log.warning(
                f'boot topics of {b.name}: {inner}; attaching them again in {wait:g} s'
            )
        await trio.sleep(wait)
        wait = min(wait * 2, REATTACH_S[1])


def _periods(msg: dict[str, Any] | None) -> dict[float, Any] | None:
    """The buffers' IPC form back as ``{period: table}`` (what
    ``maybe_open_feedd`` takes)."""
    if msg is None:
        return None
    return {float(p): spec for p, spec in msg.items()}


__all__ = [
    'Config',
    'ConfigError',
    'RunConfig',
    'apply_config',
    'effective_settings',
    'load_config',
    'open_boot_topics',
    'set_environment',
]
