"""
Services on a chosen host: roots that *join* another root's registry.

A tree spans hosts with one registry (the root on host a) and, on each
other host that runs services, a *joined root*: a non-registry root actor
with a service manager of its own, registered in a's registry.  Its
services run on its host, bind its service host, and register in a's
registry under *host-qualified* names, ``<name>@<label>`` (``feedd.sim@b``),
so that the same service on two hosts never collides; the registry's own
host keeps plain names.  The joined root itself registers as
``host_root@<label>``.

- :func:`open_join_root` (``samplerd run --host B --join A:P``) starts one:
  it asks a's root to accept it (a guarded root wants its token: the
  same token then guards the joined root), keeps that *join session* open
  for its life, and stops when a goes away.  When the session ends (b
  stops, dies, or its link is cut) a's root forgets the host and drops
  every ``...@<label>`` entry from its registry.
- ``maybe_spawn_daemon(..., host=...)`` and ``open_root_mngr(host=...)``
  send a request to the manager of that host: found through a's root's
  table of joined hosts (not by a registry name, which anyone could
  register), by label or by address.
- Inside a joined root's tree, ``$TRACTOR_SERVICES_HOST`` names its label,
  and the default host of every request is that host: a feed daemon there
  finds the samplerd of its own host.

See docs/multihost.md, "Services on a chosen host".

"""

from __future__ import annotations

import os
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager as acm
from dataclasses import dataclass
from typing import Any

import msgspec
import trio

from . import compat
from ._addr import (
    AddressError,
    check_bind_host,
    is_local_host,
    is_loopback,
    parse_addr,
    resolve_registry_addr,
)
from ._errors import NoServiceRoot, ServiceConflict

log = compat.get_logger('join', 'tractor_services')

#: environment variable naming the host label of a joined root's tree (its
#: services and their children inherit it)
HOST_ENV: str = 'TRACTOR_SERVICES_HOST'
#: a joined root registers as ``host_root@<label>``
HOST_ROOT: str = 'host_root'
#: the separator of a host-qualified name
SEP: str = '@'


# --- names ----------------------------------------------------------------------


def check_host_label(label: str) -> str:
    """A host label: non-empty, no ``@``, no whitespace or ``/``."""
    label = str(label)
    if not label or SEP in label or any(c.isspace() or c == '/' for c in label):
        raise ValueError(
            f'host label {label!r} is not usable: give a non-empty name without '
            "'@', '/' or spaces (e.g. b, or the host's address)"
        )
    return label


def qualify(name: str, host: str | None) -> str:
    """``name`` as registered on host ``host``: ``name@host``, or ``name``
    for ``None`` (the registry's own host).  Already qualified names are
    returned as they are."""
    if host is None or name.endswith(SEP + host):
        return name
    return f'{name}{SEP}{host}'


def split_name(name: str) -> tuple[str, str | None]:
    """``'feedd.sim@b'`` -> ``('feedd.sim', 'b')``; a plain name -> ``(name, None)``."""
    base, sep, host = name.rpartition(SEP)
    if not sep or not base:
        return name, None
    return base, host


def own_host_label() -> str | None:
    """The label of the joined root whose tree this process belongs to
    (``$TRACTOR_SERVICES_HOST``), or ``None`` in the registry's tree or a
    client program."""
    return os.environ.get(HOST_ENV) or None


# --- the registry root's table of joined hosts --------------------------------------


class HostInfo(msgspec.Struct, frozen=True, kw_only=True):
    """A joined host, as the registry root knows it (travels over IPC)."""

    label: str
    #: where its root listens (its manager answers there)
    sockaddr: tuple[str, int]
    pid: int
    #: :func:`tractor_services.host_id` of the joined root
    host_id: str
    joined_at: float


@dataclass(eq=False)
class _Joined:
    info: HostInfo


#: label -> the live join session (in the registry root only)
_joined: dict[str, _Joined] = {}


@compat.tractor.context
async def join_host(
    ctx: Any,
    label: str,
    sockaddr: list,
    pid: int,
    host_id: str,
    token: str | None = None,
) -> None:
    """(the registry root) Accept a joining root as host ``label`` for as
    long as this session lasts; on its end forget the host and drop the
    ``...@<label>`` entries left in the registry.  Refused with
    ``Unauthorized`` without the root's token, with ``ServiceConflict``
    when a live host already has that label."""
    from ._remote import check_token

    label = check_host_label(label)
    check_token(token, f'accept the joining host {label!r}')
    if not compat.is_registry():
        raise NoServiceRoot('this actor is not a registry: join the registry root')
    if label in _joined:
        held = _joined[label].info
        raise ServiceConflict(
            f'a host labelled {label!r} has joined already (root at '
            f'{held.sockaddr[0]}:{held.sockaddr[1]}, pid {held.pid}): pick another '
            'label, or stop that root first'
        )
    me = _Joined(
        HostInfo(
            label=label,
            sockaddr=parse_addr(sockaddr),
            pid=int(pid),
            host_id=str(host_id),
            joined_at=time.time(),
        )
    )
    _joined[label] = me
    log.info(f'host {label!r} joined from {sockaddr[0]}:{sockaddr[1]}')
    try:
        await ctx.started({'pid': os.getpid(), 'host_id': _host_id()})
        await compat.wait_connection_end(ctx)
    finally:
        if _joined.get(label) is me:
            del _joined[label]
            _drop_entries(label)
            log.info(f'host {label!r} left')


def _host_id() -> str:
    from ._host import host_id

    return host_id() or ''


def _drop_entries(label: str) -> None:
    """Drop every registry entry of host ``label`` (its root and services:
    a5 keeps the entry of an actor that could not unregister itself)."""
    actor = compat.current_actor()
    registry = getattr(actor, '_registry', None)
    if not registry:
        return
    for uid in [u for u in registry if split_name(u[0])[1] == label]:
        registry.pop(uid, None)


async def list_hosts() -> list[dict[str, Any]]:
    """(the registry root) The joined hosts."""
    return [msgspec.to_builtins(j.info) for j in _joined.values()]


async def joined_hosts(
    registry_addr: str | tuple[str, int] | None = None,
) -> list[HostInfo]:
    """The hosts joined to the registry root at ``registry_addr`` (needs a
    running runtime)."""
    addr = resolve_registry_addr(registry_addr)
    actor = compat.current_actor()
    if actor is not None and actor.is_arbiter and compat._is_own_addr(actor, addr):
        return msgspec.convert(await list_hosts(), list[HostInfo])  # we are it
    with trio.fail_after(compat.REGISTRY_TIMEOUT_S):
        async with compat.open_portal(addr) as portal:
            try:
                raw = await portal.run(list_hosts)
            except compat.RemoteActorError as err:
                if compat.remote_error_type(err) == 'ModuleNotExposed':
                    return []  # a root with no service manager has no hosts
                raise
    return msgspec.convert(raw, list[HostInfo])


async def resolve_host(
    host: str | None, registry_addr: tuple[str, int]
) -> HostInfo | None:
    """The joined host ``host`` names (its label, or its root's address),
    ``None`` for the registry's own host (``None``, the registry's address,
    or no host joined under that name but the registry's).  Default
    (``host=None``): this process's own joined host, if any.
    :class:`NoServiceRoot` for a host that has not joined."""
    if host is None:
        host = own_host_label()
        if host is None:
            return None
    if host == registry_addr[0] or (
        is_loopback(host) and is_loopback(registry_addr[0])
    ):
        return None
    hosts = await joined_hosts(registry_addr)
    for h in hosts:
        if h.label == host:
            return h
    for h in hosts:
        if h.sockaddr[0] == host:
            return h
    known = ', '.join(repr(h.label) for h in hosts) or 'none'
    raise NoServiceRoot(
        f'no root of host {host!r} has joined the registry at '
        f'{registry_addr[0]}:{registry_addr[1]} (joined: {known}): start one there '
        f'with `samplerd run --host <its address> --join {registry_addr[0]}:{registry_addr[1]}`'
    )


# --- the joining side -------------------------------------------------------------------

#: set in a joined root's own process: its label (its manager is local)
_local_label: list[str | None] = [None]


def local_label() -> str | None:
    """This process's label when it *is* a joined root, else ``None``."""
    return _local_label[0]


@acm
async def open_join_root(
    registry_addr: str | tuple[str, int],
    *,
    host: str,
    label: str | None = None,
    loglevel: str | None = None,
    debug_mode: bool = False,
    token: str | None = None,
    allow_modules: list[str] | tuple[str, ...] = (),
    handle_signals: bool = True,
) -> AsyncIterator[Any]:
    """Run a root on this host that joins the registry at ``registry_addr``
    as host ``label`` (default: ``host``), with a service manager of its
    own; yields the manager.

    It binds ``host`` (an address of this host the registry's host can
    reach), as do its services, which register in that registry as
    ``<name>@<label>``.  The registry's root must accept the join: a
    guarded one wants its token (``token``, ``$TRACTOR_SERVICES_TOKEN``,
    ``$TRACTOR_SERVICES_TOKEN_FILE`` or its token file on this host), else
    :class:`~tractor_services.Unauthorized`; the same token then guards
    this root's manager.  Refused before anything starts: a wildcard or
    foreign ``host``, a bad label, no registry answering.  When the
    registry's root goes away, the block is cancelled and
    :class:`~tractor_services.PeerGone` raised (the tree cannot be found without it)."""
    from ._host import host_id
    from ._mngr import open_service_mngr
    from ._proc import cancel_on_signals
    from ._remote import _local_error, resolve_token

    if compat.current_actor() is not None:
        raise NoServiceRoot(
            'open_join_root() starts a new root actor, but this process runs one already'
        )
    addr = resolve_registry_addr(registry_addr)
    check_bind_host(addr[0], 'registry host')
    host = check_bind_host(host, 'host')
    if not is_local_host(host):
        raise AddressError(
            f'--host {host}: not an address of this host (a joined root binds '
            "its own host's address)"
        )
    if is_loopback(host) and not is_loopback(addr[0]):
        raise AddressError(
            f'--host {host} is loopback, but the registry at {addr[0]}:{addr[1]} is '
            "on another host: give this host an address the registry's host reaches"
        )
    label = check_host_label(label if label is not None else host)
    if label == addr[0] or (is_loopback(label) and is_loopback(addr[0])):
        raise ValueError(
            f"host label {label!r} names the registry's own host: give this host a "
            'label of its own (--label)'
        )
    if not await compat.registry_reachable(addr):
        raise NoServiceRoot(
            f'no service root answers at {addr[0]}:{addr[1]}: start it first '
            '(`samplerd run --host <its address>`)'
        )
    token = resolve_token(token, addr)
    previous = os.environ.get(HOST_ENV)
    os.environ[HOST_ENV] = label  # its services and their children inherit it
    _local_label[0] = label
    entered = False
    try:
        async with compat.open_root_actor(
            addr,
            qualify(HOST_ROOT, label),
            loglevel=loglevel,
            debug_mode=debug_mode,
            bind_host=host,
        ) as actor:
            async with compat.open_portal(addr) as reg:
                try:
                    async with compat.open_context(
                        reg,
                        join_host,
                        label=label,
                        sockaddr=list(actor.accept_addr),
                        pid=os.getpid(),
                        host_id=host_id() or '',
                        token=token,
                    ) as (ctx, first):
                        async with (
                            compat.raise_on_peer_exit(
                                first['pid'],
                                'the registry root',
                                reg,
                            ),
                            open_service_mngr(
                                registry_addr=addr,
                                service_host=host,
                                token=token,
                                allow_modules=allow_modules,
                                host_label=label,
                            ) as mngr,
                        ):
                            with trio.CancelScope() as cs:
                                if handle_signals:
                                    await mngr.tn.start(cancel_on_signals, cs)
                                entered = True
                                yield mngr
                        await ctx.cancel()
                except Exception as exc:
                    err = compat.unwrap_error(exc)
                    if entered or compat.remote_error_type(err) is None:
                        raise
                    local = _local_error(err)
                    if local is err:
                        raise
                    raise local from None
    finally:
        _local_label[0] = None
        if previous is None:
            os.environ.pop(HOST_ENV, None)
        else:
            os.environ[HOST_ENV] = previous


__all__ = [
    'HOST_ENV',
    'HOST_ROOT',
    'HostInfo',
    'check_host_label',
    'joined_hosts',
    'local_label',
    'open_join_root',
    'own_host_label',
    'qualify',
    'resolve_host',
    'split_name',
]
