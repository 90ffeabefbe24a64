"""
The service manager over IPC.

Every actor with an open :class:`ServiceMngr` exposes the functions below
(``open_service_mngr`` enables this module on it), and
:class:`RemoteServiceMngr` calls them through a portal, so another actor
or another program drives a root's manager with the same API as a local
one.  Endpoints travel by their import path (``'pkg.mod:func'``); the
root must be able to import them.

"""

from __future__ import annotations

import builtins
from collections.abc import Callable
from functools import partial
from typing import Any

import msgspec

from . import _errors, compat
from ._addr import fn_path, resolve_fn_path
from ._mngr import ServiceInfo, _check_requires, get_service_mngr, resolve_endpoint
from ._policy import RestartPolicy


class StartRequest(msgspec.Struct, frozen=True, kw_only=True):
    """What a peer sends to have a root's manager start a service."""

    name: str
    endpoint: str  # 'pkg.mod:func', a @tractor.context function
    kwargs: dict[str, Any] = {}
    start_actor_kwargs: dict[str, Any] = {}
    restart: RestartPolicy | None = None
    requires: list[str] = []
    startup_timeout: float | None = None
    shutdown_timeout: float | None = None


async def start_service(**request: Any) -> dict[str, Any]:
    """(runs in the manager's actor) Start a service from a peer's
    :class:`StartRequest`; returns its started value and record."""
    try:
        req = msgspec.convert(request, StartRequest)
    except msgspec.ValidationError as err:
        raise ValueError(f'malformed start request {request!r}: {err}') from None
    fn = resolve_fn_path(req.endpoint)
    timeouts = {
        k: v
        for k, v in (
            ('startup_timeout', req.startup_timeout),
            ('shutdown_timeout', req.shutdown_timeout),
        )
        if v is not None
    }
    if 'bind_addr' in req.start_actor_kwargs:
        req.start_actor_kwargs['bind_addr'] = tuple(req.start_actor_kwargs['bind_addr'])
    mngr = get_service_mngr()
    first = await mngr.start_service(
        req.name,
        partial(fn, **req.kwargs),
        restart=req.restart,
        requires=req.requires,
        **timeouts,
        **req.start_actor_kwargs,
    )
    return {'first': first, 'info': msgspec.to_builtins(mngr.info(req.name))}


async def cancel_service(name: str) -> dict[str, Any]:
    return msgspec.to_builtins(await get_service_mngr().cancel_service(name))


async def list_services(include_ended: bool = False) -> list[dict[str, Any]]:
    return msgspec.to_builtins(await get_service_mngr().list_services(include_ended))


async def wait_running(
    name: str,
    not_pid: int | None = None,
    timeout: float | None = None,
) -> dict[str, Any]:
    # "not coming back" is an answer, not a failure: returned, so that a5
    # does not log the call as a crash
    try:
        info = await get_service_mngr().wait_running(
            name, not_pid=not_pid, timeout=timeout
        )
    except (_errors.ServiceNotFound, TimeoutError) as err:
        return {'error': type(err).__name__, 'message': str(err)}
    return {'info': msgspec.to_builtins(info)}


def _local_error(err: BaseException) -> BaseException:
    """Rebuild a peer's tractor-services (or builtin) error locally so
    callers catch the same types as with a local manager."""
    name = compat.remote_error_type(err)
    cls = getattr(_errors, name or '', None)
    if not (isinstance(cls, type) and issubclass(cls, _errors.ServiceError)):
        cls = getattr(
            builtins, name or '', None
        )  # the manager's own errors, or a builtin
    if isinstance(cls, type) and issubclass(cls, Exception) and name != 'Exception':
        return cls(compat.remote_error_message(err))
    return err


class RemoteServiceMngr:
    """A peer's :class:`ServiceMngr`, driven over a portal to its actor."""

    def __init__(self, portal: compat.Portal):
        self.portal = portal

    async def start_service(
        self,
        daemon_name: str,
        ctx_ep: Callable | str,
        *,
        restart: RestartPolicy | str | dict | None = None,
        requires: list[str] | tuple[str, ...] = (),
        startup_timeout: float | None = None,
        shutdown_timeout: float | None = None,
        **start_actor_kwargs: Any,
    ) -> Any:
        """As :meth:`ServiceMngr.start_service`; ``ctx_ep`` may also be an
        import path ``'pkg.mod:func'``."""
        from ._policy import as_policy

        kwargs: dict[str, Any]
        if isinstance(ctx_ep, str):
            endpoint, kwargs = ctx_ep, {}
        else:
            fn, kwargs = resolve_endpoint(ctx_ep)
            endpoint = fn_path(fn)
        req = StartRequest(
            name=daemon_name,
            endpoint=endpoint,
            kwargs=kwargs,
            start_actor_kwargs=start_actor_kwargs,
            restart=None if restart is None else as_policy(restart),
            requires=list(_check_requires(daemon_name, requires)),
            startup_timeout=startup_timeout,
            shutdown_timeout=shutdown_timeout,
        )
        reply = await self._run(start_service, **msgspec.to_builtins(req))
        return reply['first']

    async def cancel_service(self, name: str) -> ServiceInfo:
        info = await self._run(cancel_service, name=name)
        return msgspec.convert(info, ServiceInfo)

    async def wait_running(
        self,
        name: str,
        *,
        not_pid: int | None = None,
        timeout: float | None = None,
    ) -> ServiceInfo:
        """As :meth:`ServiceMngr.wait_running` (the wait happens in the
        manager's actor)."""
        reply = await self._run(
            wait_running, name=name, not_pid=not_pid, timeout=timeout
        )
        if 'error' in reply:
            cls = (
                TimeoutError
                if reply['error'] == 'TimeoutError'
                else _errors.ServiceNotFound
            )
            raise cls(reply['message'])
        return msgspec.convert(reply['info'], ServiceInfo)

    async def list_services(self, include_ended: bool = False) -> list[ServiceInfo]:
        infos = await self._run(list_services, include_ended=include_ended)
        return msgspec.convert(infos, list[ServiceInfo])

    async def _run(self, fn: Callable, **kwargs: Any) -> Any:
        try:
            return await self.portal.run(fn, **kwargs)
        except compat.RemoteActorError as err:
            if compat.remote_error_type(err) == 'ModuleNotExposed':
                raise _errors.NoServiceMngr(
                    f'the actor {self.portal.channel.uid} runs no service manager: '
                    'it must enter open_service_mngr() (open_service_root() does)'
                ) from err
            local = _local_error(err)
            if local is err:
                raise
            raise local from err
