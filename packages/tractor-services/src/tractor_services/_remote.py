"""
The service manager over IPC.

Every actor with an open :class:`ServiceMngr` exposes the functions below
(``open_service_mngr`` enables this module on it), and
:class:`RemoteServiceMngr` calls them through a portal, so another actor
or another program drives a root's manager with the same API as a local
one.  Endpoints travel by their import path (``'pkg.mod:func'``); the
root must be able to import them.

A guarded manager (one with a token: every root on a non-loopback
address, or one given a token) refuses to start or cancel a service for
a peer that does not send its token, and starts only endpoints from the
modules it allows (see :func:`check_remote_start`).  The token is a
shared secret, like Jupyter's: ``$TRACTOR_SERVICES_TOKEN``, a file named
by ``$TRACTOR_SERVICES_TOKEN_FILE``, or the file the root writes for its
own host's clients (:func:`token_file`).

"""

from __future__ import annotations

import builtins
import hmac
import os
import secrets
import tempfile
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import msgspec

from . import _errors, compat
from ._addr import fn_path, resolve_fn_path
from ._mngr import ServiceInfo, _check_requires, get_service_mngr, resolve_endpoint
from ._policy import RestartPolicy

# --- the token and the modules a guarded root allows ---------------------------

#: environment variable holding the token itself
TOKEN_ENV: str = 'TRACTOR_SERVICES_TOKEN'
#: environment variable naming a file that holds the token
TOKEN_FILE_ENV: str = 'TRACTOR_SERVICES_TOKEN_FILE'
#: environment variable: more modules (comma-separated) a guarded root
#: spawns endpoints from, besides its own packages'
ALLOW_MODULES_ENV: str = 'TRACTOR_SERVICES_ALLOW_MODULES'
#: the packages whose endpoints every root spawns on request
OWN_PACKAGES: tuple[str, ...] = ('tractor_services', 'feedbus', 'tractor_sampler')


class Unauthorized(_errors.ServiceError, PermissionError):
    """A guarded root refused a remote request: no token or a wrong one,
    or an endpoint from a module it does not allow."""


def token_file(registry_addr: tuple[str, int]) -> Path:
    """Where a root writes its token for clients on its own host (only
    its user can read it): ``$XDG_RUNTIME_DIR`` (else the temp folder)
    ``/tractor-services-<uid>/<host>_<port>.token``."""
    base = os.environ.get('XDG_RUNTIME_DIR') or tempfile.gettempdir()
    host, port = registry_addr
    return Path(base) / f'tractor-services-{os.getuid()}' / f'{host}_{port}.token'


def _read_token(path: str | os.PathLike) -> str:
    try:
        token = Path(path).read_text().strip()
    except OSError as err:
        raise Unauthorized(
            f'cannot read the token file {path}: {err.strerror}'
        ) from None
    if not token:
        raise Unauthorized(f'the token file {path} is empty')
    return token


def resolve_token(
    token: str | None = None, registry_addr: tuple[str, int] | None = None
) -> str | None:
    """The token to use: ``token``, else ``$TRACTOR_SERVICES_TOKEN``, else
    the file ``$TRACTOR_SERVICES_TOKEN_FILE`` names, else the file the root
    at ``registry_addr`` wrote on this host (if any), else ``None``."""
    if token:
        return token
    if env := os.environ.get(TOKEN_ENV):
        return env
    if path := os.environ.get(TOKEN_FILE_ENV):
        return _read_token(path)
    if registry_addr is not None:
        local = token_file(registry_addr)
        if local.is_file():
            return _read_token(local)
    return None


def new_token() -> str:
    """A fresh random token (32 bytes, URL-safe)."""
    return secrets.token_urlsafe(32)


def write_token_file(registry_addr: tuple[str, int], token: str) -> Path:
    """Write ``token`` where this host's clients of the root at
    ``registry_addr`` find it, readable by this user only."""
    path = token_file(registry_addr)
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    tmp = path.with_suffix('.tmp')
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, 'w') as f:
        f.write(token + '\n')
    os.replace(tmp, path)
    return path


def allowed_modules(extra: Any = ()) -> tuple[str, ...]:
    """The module prefixes a guarded root spawns endpoints from: its own
    packages', ``extra`` and ``$TRACTOR_SERVICES_ALLOW_MODULES``."""
    env = [m.strip() for m in os.environ.get(ALLOW_MODULES_ENV, '').split(',')]
    return tuple(dict.fromkeys([*OWN_PACKAGES, *extra, *(m for m in env if m)]))


def _module_allowed(module: str, allowed: tuple[str, ...]) -> bool:
    return any(module == a or module.startswith(a + '.') for a in allowed)


def check_token(given: str | None, what: str) -> None:
    """(in the manager's actor) Refuse ``what`` unless ``given`` is the
    manager's token (the manager is unguarded without one)."""
    mngr = get_service_mngr()
    expected = mngr.token
    if expected is None:
        return
    if given is None:
        raise Unauthorized(
            f'the service root refuses to {what}: no token given; set ${TOKEN_ENV} '
            f"(or ${TOKEN_FILE_ENV}) to the root's token"
        )
    if not hmac.compare_digest(given.encode(), expected.encode()):
        raise Unauthorized(f'the service root refuses to {what}: wrong token')


def check_remote_start(endpoint: str, token: str | None) -> None:
    """(in the manager's actor) A guarded manager starts, for a peer, only
    an endpoint from a module it allows, and only with its token."""
    check_token(token, f'start {endpoint!r}')
    mngr = get_service_mngr()
    if mngr.token is None:
        return
    module = endpoint.partition(':')[0]
    if not _module_allowed(module, mngr.allowed_modules):
        raise Unauthorized(
            f'the service root refuses to start {endpoint!r}: module {module!r} is '
            f'not among those it allows ({", ".join(mngr.allowed_modules)}); the '
            f'operator lists more with ${ALLOW_MODULES_ENV} or allow_modules='
        )


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
    token: str | None = None  # the root's shared secret (a guarded root needs it)


async def start_service(**request: Any) -> dict[str, Any]:
    """(runs in the manager's actor) Start a service from a peer's
    :class:`StartRequest`; returns its started value and record."""
    try:
        req = msgspec.convert(request, StartRequest)
    except msgspec.ValidationError as err:
        raise ValueError(
            f'malformed start request {dict(request, token="...")!r}: {err}'
        ) from None
    # before anything is imported: a refused module is never loaded
    check_remote_start(req.endpoint, req.token)
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


async def cancel_service(name: str, token: str | None = None) -> dict[str, Any]:
    check_token(token, f'cancel {name!r}')
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
    if name == 'Unauthorized':
        return Unauthorized(compat.remote_error_message(err))
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

    def __init__(self, portal: compat.Portal, token: str | None = None):
        self.portal = portal
        #: sent with every request that changes something (see
        #: :func:`resolve_token`)
        self.token = token

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
            token=self.token,
        )
        reply = await self._run(start_service, **msgspec.to_builtins(req))
        return reply['first']

    async def cancel_service(self, name: str) -> ServiceInfo:
        info = await self._run(cancel_service, name=name, token=self.token)
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
