"""
Addresses: where the registry is, which address an actor binds (so that
peers on other hosts can reach it), and how an endpoint is named across
processes.

Across hosts every actor registers the address it binds, so that address
must be one the other hosts can connect to: a service root started with
a routable registry host (``samplerd run --host 10.0.0.5``) has its
services bind that host too, and a client root binds the local address
that routes to the registry.  A wildcard (``0.0.0.0``, ``::``) is no
address a peer can connect to and is refused.  See docs/multihost.md.

"""

from __future__ import annotations

import importlib
import ipaddress
import os
import socket
from collections.abc import Callable
from typing import Any

from ._errors import TractorServicesError

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


# --- which address to bind ----------------------------------------------------

#: environment variable: the local address a client root binds (default:
#: the one that routes to the registry)
BIND_HOST_ENV: str = 'TRACTOR_BIND_HOST'

#: how to start a root that other hosts can reach, for error messages
ROOT_HINT: str = (
    'start the root on an address the other hosts can reach: '
    '`samplerd run --host <routable address>` '
    '(or open_service_root(registry_addr=(<routable address>, port)))'
)


class AddressError(TractorServicesError, ValueError):
    """An address that cannot work: a wildcard given as a bind address, a
    registry host that is not this host's, no route to the registry."""


class UnreachableService(TractorServicesError, ConnectionError):
    """The registry handed out an address that cannot be reached from
    here: a loopback address registered by an actor on another host (its
    root was started on ``127.0.0.1``)."""


def is_wildcard(host: str) -> bool:
    """Is ``host`` a wildcard bind address (``0.0.0.0``, ``::``, empty)?"""
    if host in ('', '*'):
        return True
    try:
        return ipaddress.ip_address(host).is_unspecified
    except ValueError:
        return False


def is_loopback(host: str) -> bool:
    """Is ``host`` a loopback address (``127.0.0.0/8``, ``::1``,
    ``localhost``)?"""
    if host == 'localhost':
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_bind_host(host: str, what: str = 'bind address') -> str:
    """``host`` when an actor can bind *and register* it; a wildcard is
    refused with :class:`AddressError` (an actor registers the address it
    binds, and no peer can connect to ``0.0.0.0``)."""
    host = str(host)
    if is_wildcard(host):
        raise AddressError(
            f'{what} {host!r} is a wildcard: every actor registers the address it '
            'binds, and peers cannot connect to a wildcard; give an address of '
            'this host that the others can reach (e.g. --host 10.0.0.5), or '
            '127.0.0.1 for this host alone'
        )
    return host


def is_local_host(host: str) -> bool:
    """Is ``host`` an address of this host (can a socket bind it)?"""
    try:
        infos = socket.getaddrinfo(host, 0, type=socket.SOCK_DGRAM)
    except OSError:
        return False
    for family, type_, proto, _, sockaddr in infos:
        with socket.socket(family, type_, proto) as sock:
            try:
                sock.bind(sockaddr)
            except OSError:
                continue
            return True
    return False


def route_host(addr: tuple[str, int]) -> str:
    """The local address this host's kernel uses to reach ``addr``: a UDP
    socket's ``connect`` picks the route and its source address without
    sending anything.  :class:`AddressError` when there is no route."""
    host, port = addr
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_DGRAM)
    except OSError as err:
        raise AddressError(f'registry host {host!r} does not resolve: {err}') from None
    last: OSError | None = None
    for family, type_, proto, _, sockaddr in infos:
        with socket.socket(family, type_, proto) as sock:
            try:
                sock.connect(sockaddr)
            except OSError as err:
                last = err
                continue
            return str(sock.getsockname()[0])
    raise AddressError(
        f'no route from this host to the registry at {host}:{port}: {last}'
    )


def client_bind_host(
    registry_addr: tuple[str, int], bind_host: str | None = None
) -> str:
    """The address a client root (one that is not the registry) binds and
    registers: ``bind_host``, else ``$TRACTOR_BIND_HOST``, else the local
    address that routes to the registry (``127.0.0.1`` for a registry on
    loopback, as before).  A wildcard is refused."""
    if bind_host is not None:
        return check_bind_host(bind_host, 'client bind address')
    env = os.environ.get(BIND_HOST_ENV)
    if env:
        return check_bind_host(env, f'${BIND_HOST_ENV}')
    return route_host(registry_addr)


def check_registry_host(addr: tuple[str, int]) -> None:
    """A root that becomes the registry binds ``addr``: refuse a wildcard
    and a host that is not this one's, in one line each, before anything
    starts."""
    host, port = addr
    check_bind_host(host, 'registry host')
    if not is_local_host(host):
        raise AddressError(
            f'cannot start a registry at {host}:{port}: {host} is not an address of '
            'this host (to use a registry on another host, start its root there '
            'and connect to it)'
        )


def check_reachable(
    name: str, sockaddr: tuple[str, int], registry_addr: tuple[str, int]
) -> tuple[str, int]:
    """``sockaddr`` as the registry at ``registry_addr`` handed it out for
    ``name``, unless it is a loopback address registered on another host:
    then :class:`UnreachableService` saying how to start the root."""
    reg_host = registry_addr[0]
    if (
        is_loopback(sockaddr[0])
        and not is_loopback(reg_host)
        and not is_local_host(reg_host)
    ):
        raise UnreachableService(
            f'{name!r} is registered at {sockaddr[0]}:{sockaddr[1]} in the registry '
            f'at {reg_host}:{registry_addr[1]}, a loopback address on that host, '
            f'unreachable from here: {ROOT_HINT}'
        )
    return sockaddr


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
