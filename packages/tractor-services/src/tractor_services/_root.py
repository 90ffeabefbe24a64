"""
Root daemons and find-or-spawn.

A *service root* is the root actor of a tree: it hosts the registry at a
known address and a :class:`ServiceMngr`.  Any actor, in its tree or in
another program pointed at the same registry address, can find a service
by name or have the root's manager spawn it.

"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager as acm
from contextlib import contextmanager
from typing import Any

import trio

from . import _join, compat
from ._addr import (
    check_bind_host,
    check_registry_host,
    is_loopback,
    resolve_registry_addr,
)
from ._errors import (
    NoServiceRoot,
    PeerDisconnected,
    RegistryInUse,
    ServiceError,
    ServiceNotFound,
    only_cancelled,
)
from ._mngr import ServiceMngr, _holder, open_service_mngr
from ._proc import cancel_on_signals
from ._remote import RemoteServiceMngr, new_token, resolve_token, write_token_file

log = compat.get_logger('root', 'tractor_services')


@acm
async def open_service_root(
    registry_addr: str | tuple[str, int] | None = None,
    *,
    name: str = 'service_root',
    loglevel: str | None = None,
    debug_mode: bool = False,
    enable_modules: list[str] | tuple[str, ...] = (),
    handle_signals: bool = True,
    service_host: str | None = None,
    token: str | None = None,
    allow_modules: list[str] | tuple[str, ...] = (),
) -> AsyncIterator[ServiceMngr]:
    """Start a root actor that hosts the registry at ``registry_addr`` (or
    ``$TRACTOR_REGISTRY_ADDR``, or tractor's default) and its manager.

    Every service the manager spawns binds and registers ``service_host``
    (default: the registry's host): a root on a routable address (not
    ``127.0.0.1``) makes its whole tree reachable from other hosts.  A
    wildcard registry or service host (``0.0.0.0``), or a registry host
    that is not this host's, is refused with :class:`AddressError`
    before anything starts.

    A root is *guarded* when it has a ``token`` (a shared secret: the
    argument, ``$TRACTOR_SERVICES_TOKEN`` or the file
    ``$TRACTOR_SERVICES_TOKEN_FILE`` names); one on a non-loopback address
    always is (it makes a random token when given none).  A guarded root
    starts or cancels a service for a peer only with its token, and only
    endpoints from its packages' modules plus ``allow_modules`` (and
    ``$TRACTOR_SERVICES_ALLOW_MODULES``); it writes the token to
    :func:`~tractor_services._remote.token_file` for clients on its own
    host (removed on exit).

    With ``handle_signals`` SIGTERM tears the tree down: services stop in
    reverse start order and the block exits normally.  Raises
    :class:`RegistryInUse` if a registry already answers there (use
    :func:`maybe_open_service_root` to attach instead).

    """
    if compat.current_actor() is not None:
        raise ServiceError(
            'open_service_root() starts a new root actor, but this process '
            'already runs one: use open_service_mngr() inside it'
        )
    addr = resolve_registry_addr(registry_addr)
    check_registry_host(addr)
    service_host = check_bind_host(
        addr[0] if service_host is None else service_host, 'service host'
    )
    token = resolve_token(token)
    if token is None and not (is_loopback(addr[0]) and is_loopback(service_host)):
        token = new_token()
    if await compat.registry_reachable(addr):
        raise RegistryInUse(
            f'a registry already answers at {addr[0]}:{addr[1]}: attach to it '
            'with maybe_open_service_root(), or pick another address'
        )
    async with open_service_mngr(
        registry_addr=addr,
        name=name,
        loglevel=loglevel,
        debug_mode=debug_mode,
        enable_modules=list(enable_modules),
        service_host=service_host,
        token=token,
        allow_modules=allow_modules,
    ) as mngr:
        if not compat.is_registry():
            raise RegistryInUse(f'another root took {addr[0]}:{addr[1]} first')
        with _token_file(mngr, addr, token), trio.CancelScope() as cs:
            if handle_signals:
                await mngr.tn.start(cancel_on_signals, cs)
            yield mngr


@contextmanager
def _token_file(
    mngr: ServiceMngr, addr: tuple[str, int], token: str | None
) -> Iterator[None]:
    """The root's token in its file for this host's clients, while it runs."""
    if token is None:
        yield
        return
    path = mngr.token_file = write_token_file(addr, token)
    log.info(f'the service root is guarded: its token is in {path}')
    try:
        yield
    finally:
        try:
            if path.read_text().strip() == token:
                path.unlink()
        except OSError:
            pass


@acm
async def open_root_mngr(
    registry_addr: str | tuple[str, int] | None = None,
    token: str | None = None,
    *,
    host: str | None = None,
) -> AsyncIterator[ServiceMngr | RemoteServiceMngr]:
    """The root's manager: the local one when this actor is the registry
    and has one open, else a :class:`RemoteServiceMngr` talking to the
    registry actor, sending ``token`` (default: see
    :func:`~tractor_services._remote.resolve_token`) to a guarded root.
    Needs a running tractor runtime.

    ``host`` picks the manager of another host that joined the registry
    (its label or its root's address; see ``_join``): its services run on
    that host.  By default the manager of this process's own joined host
    (``$TRACTOR_SERVICES_HOST``), else the registry root's."""
    addr = resolve_registry_addr(registry_addr)
    async with _open_mngr_of(await _joined_host(host, addr), addr, token) as mngr:
        yield mngr


async def _joined_host(
    host: str | None, addr: tuple[str, int]
) -> _join.HostInfo | None:
    """The joined host ``host`` names (default: our own joined host), or
    ``None`` for the registry's host; asks the registry only when needed."""
    if host is None and _join.own_host_label() is None:
        return None
    return await _join.resolve_host(host, addr)


@acm
async def _open_mngr_of(
    joined: _join.HostInfo | None,
    addr: tuple[str, int],
    token: str | None = None,
) -> AsyncIterator[ServiceMngr | RemoteServiceMngr]:
    """The manager of ``joined`` (a joined host), or the registry root's."""
    if joined is not None:
        if _join.local_label() == joined.label and _holder.mngr is not None:
            yield _holder.mngr
            return
        token = resolve_token(token, addr)
        async with compat.open_portal(joined.sockaddr) as portal:
            yield RemoteServiceMngr(portal, token)
        return
    if compat.is_registry() and _holder.mngr is not None:
        yield _holder.mngr
        return
    if not await compat.registry_reachable(addr):
        raise NoServiceRoot(
            f'no service root answers at {addr[0]}:{addr[1]}: start one with '
            'open_service_root() or maybe_open_service_root()'
        )
    token = resolve_token(token, addr)
    async with compat.open_portal(addr) as portal:
        yield RemoteServiceMngr(portal, token)


@acm
async def maybe_open_service_root(
    registry_addr: str | tuple[str, int] | None = None,
    *,
    name: str = 'service_root',
    client_name: str = 'service_client',
    loglevel: str | None = None,
    **root_kwargs: Any,
) -> AsyncIterator[ServiceMngr | RemoteServiceMngr]:
    """Attach to the service root at ``registry_addr`` if one runs there,
    else become it.  Yields the local :class:`ServiceMngr` when this
    process is the root, else a :class:`RemoteServiceMngr`; both have
    ``start_service``, ``cancel_service`` and ``list_services``."""
    addr = resolve_registry_addr(registry_addr)
    if compat.current_actor() is not None:
        async with open_root_mngr(addr) as mngr:
            yield mngr
        return
    if await compat.registry_reachable(addr):
        async with compat.open_root_actor(addr, client_name, loglevel=loglevel):
            async with open_root_mngr(addr) as mngr:
                yield mngr
        return
    async with open_service_root(
        addr, name=name, loglevel=loglevel, **root_kwargs
    ) as mngr:
        yield mngr


@acm
async def maybe_spawn_daemon(
    service_name: str,
    service_ep: Callable | str,
    *,
    registry_addr: str | tuple[str, int] | None = None,
    stop_on_exit: bool = False,
    host: str | None = None,
    **start_kwargs: Any,
) -> AsyncIterator[Any]:
    """Find ``service_name`` through the registry, or have the root's
    manager spawn it running ``service_ep``; wait for it and yield a
    portal to it.

    ``service_ep`` is a ``@tractor.context`` function, a ``partial`` of
    one, or its import path ``'pkg.mod:func'``.  ``start_kwargs`` go to
    ``start_service`` (``restart``, timeouts, ``loglevel``, ...).  The
    caller's exit leaves the daemon running unless ``stop_on_exit`` is
    true, in which case a daemon this call spawned is cancelled on exit
    (one that was already running is never stopped by us).  Runs in any
    actor, or boots a client root actor in a program that has none.

    ``host`` asks for the service on another host that joined the
    registry (its label or its root's address): it is looked up as
    ``<name>@<label>`` and spawned by that host's manager, on that host.
    Default: this process's own joined host (``$TRACTOR_SERVICES_HOST``,
    inside a joined root's tree), else the registry's host (plain names).
    Asking for a host that has not joined raises :class:`NoServiceRoot`.

    """
    addr = resolve_registry_addr(registry_addr)
    if compat.current_actor() is None:
        if not await compat.registry_reachable(addr):
            raise NoServiceRoot(
                f'no service root answers at {addr[0]}:{addr[1]}: start one '
                'with open_service_root() or maybe_open_service_root()'
            )
        async with compat.open_root_actor(addr, 'service_client'):
            async with maybe_spawn_daemon(
                service_name,
                service_ep,
                registry_addr=addr,
                stop_on_exit=stop_on_exit,
                host=host,
                **start_kwargs,
            ) as portal:
                yield portal
        return

    # The caller's block runs at most once: whatever happens in it, we never
    # go on to ask the root to spawn the service (a root that is stopping
    # would answer NoServiceMngr and hide the real cause).  ``body`` keeps
    # what the block raised, in case a portal's exit swallows it.
    body = _Body()
    found = False
    joined = await _joined_host(host, addr)
    label = None if joined is None else joined.label
    service_name = _join.qualify(service_name, label)
    async with compat.find_actor(service_name, addr) as portal:
        if portal is not None:
            found = True
            log.info(f'found running service {service_name!r}')
            async with body.watch():
                yield portal
    if found:
        body.reraise(service_name)
        return

    async with _open_mngr_of(joined, addr) as mngr:
        await mngr.start_service(service_name, service_ep, **start_kwargs)
        try:
            async with compat.wait_for_actor(service_name, addr) as portal:
                async with body.watch():
                    yield portal
            body.reraise(service_name)
        finally:
            if stop_on_exit:
                with trio.CancelScope(shield=True):
                    try:
                        await mngr.cancel_service(service_name)
                    except ServiceNotFound:
                        pass


class _Body:
    """What the caller's block raised, kept so that it reaches the caller
    even when a portal's exit swallows it (a5's ``open_portal`` cancels its
    nursery on exit, and that cancelled scope swallows a ``Cancelled`` that
    a5's own cancel relay let escape from the caller's block)."""

    def __init__(self) -> None:
        self.error: BaseException | None = None

    @acm
    async def watch(self) -> AsyncIterator[None]:
        try:
            yield
        except BaseException as err:
            self.error = err
            raise

    def reraise(self, name: str) -> None:
        """Raise what the block raised if it did not propagate."""
        err = self.error
        if err is None:
            return
        if only_cancelled(err):
            # no scope of the caller's owned it: the far end ended the session
            raise PeerDisconnected(
                f'service {name!r} ended the session from its side while the caller '
                'was in it (it stopped, or its root is shutting down)'
            ) from err
        raise err
