"""
Addresses: where the registry is, and how an endpoint is named across
processes.

"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable
from typing import Any

#: environment variable read for the default registry address (``host:port``)
REGISTRY_ENV: str = 'TRACTOR_REGISTRY_ADDR'
_FALLBACK_REGISTRY: tuple[str, int] = ('127.0.0.1', 1616)


# --- the registry address -----------------------------------------------------


def parse_addr(addr: str | tuple[str, int] | list) -> tuple[str, int]:
    """``'host:port'`` or ``(host, port)`` -> ``(host, port)``."""
    host: Any
    raw_port: Any
    if isinstance(addr, str):
        host, sep, raw_port = addr.rpartition(':')
        if not sep or not host:
            raise ValueError(f'registry address {addr!r} is not of the form host:port')
    else:
        host, raw_port = addr
    try:
        port = int(raw_port)
    except (TypeError, ValueError):
        raise ValueError(f'registry port {raw_port!r} is not a number') from None
    if not 0 <= port < 65536:
        raise ValueError(f'registry port {port} is out of range')
    return (str(host), port)


def default_registry_addr() -> tuple[str, int]:
    """The registry address: ``$TRACTOR_REGISTRY_ADDR`` or tractor's default."""
    env = os.environ.get(REGISTRY_ENV)
    return parse_addr(env) if env else _FALLBACK_REGISTRY


def resolve_registry_addr(
    addr: str | tuple[str, int] | None = None,
) -> tuple[str, int]:
    """The given address, else the running actor's, else the default."""
    from . import compat  # compat re-exports this module's names

    if addr is not None:
        return parse_addr(addr)
    running = compat.runtime_registry_addr()
    if running is not None:
        return parse_addr(running)
    return default_registry_addr()


# --- endpoint paths -------------------------------------------------------------


def fn_path(fn: Callable) -> str:
    """``'pkg.mod:func'``: how an endpoint is named across processes."""
    return f'{fn.__module__}:{fn.__qualname__}'


def resolve_fn_path(path: str) -> Callable:
    """``'pkg.mod:func'`` -> the function, with a clear error."""
    mod_name, sep, qualname = path.partition(':')
    if not sep or not mod_name or not qualname:
        raise ValueError(
            f'endpoint {path!r} is not of the form "package.module:function"'
        )
    try:
        obj: Any = importlib.import_module(mod_name)
    except ImportError as err:
        raise ImportError(
            f'endpoint {path!r}: cannot import {mod_name!r}: {err}'
        ) from err
    for part in qualname.split('.'):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise AttributeError(
                f'endpoint {path!r}: {mod_name!r} has no {qualname!r}'
            ) from None
    return obj
