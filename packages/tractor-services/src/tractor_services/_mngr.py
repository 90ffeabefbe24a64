"""
``ServiceMngr``: one per actor, it spawns daemon subactors and supervises
a context opened on each one's portal.

"""

from __future__ import annotations

import inspect
import math
import os
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from contextlib import asynccontextmanager as acm
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Literal

import msgspec
import trio

from . import compat
from ._addr import fn_path, resolve_registry_addr
from ._errors import (
    GaveUp,
    MissingDependency,
    NoServiceMngr,
    PeerDisconnected,
    ServiceConflict,
    ServiceFailed,
    ServiceNotFound,
    ServiceStartupTimeout,
    describe_error,
)
from ._join import qualify
from ._policy import RestartPolicy, as_policy
from ._supervise import Supervision, supervise
from .checks import check_positive

log = compat.get_logger('mngr', 'tractor_services')

State = Literal['starting', 'running', 'restarting', 'stopping', 'stopped', 'failed']
Kind = Literal['actor', 'ctx', 'task']

#: default seconds an endpoint has to call ``started()``
STARTUP_TIMEOUT_S: float = 30.0
#: default seconds a service has to stop gracefully before it is killed
SHUTDOWN_TIMEOUT_S: float = 5.0
#: seconds beyond its shutdown timeout a cancelled actor service gets to be
#: killed and reaped before its stop is reported as stuck
KILL_GRACE_S: float = 10.0
#: how many ended services introspection remembers
HISTORY_LEN: int = 100


class ServiceInfo(msgspec.Struct, frozen=True, kw_only=True):
    """What introspection tells of one service (travels over IPC)."""

    name: str
    kind: Kind
    endpoint: str
    state: State
    uid: tuple[str, str] | None = None
    pid: int | None = None
    started_at: float | None = None  # wall-clock (time.time()) of the last start
    restarts: int = 0
    last_error: str | None = None
    last_traceback: str | None = None
    policy: RestartPolicy = RestartPolicy()
    #: the services it requires (stopped after it, see ``start_service``)
    requires: tuple[str, ...] = ()


@dataclass(eq=False)
class _Service:
    name: str
    kind: Kind
    endpoint: str
    target: Any  # the context function or the task function
    kwargs: dict[str, Any]
    policy: RestartPolicy
    startup_timeout: float
    shutdown_timeout: float
    start_kwargs: dict[str, Any] = field(default_factory=dict)
    requires: tuple[str, ...] = ()
    portal: compat.Portal | None = None  # for 'ctx' services: the portal we were given
    state: State = 'starting'
    spawned: compat.SpawnedActor | None = None
    started_at: float | None = None
    restarts: int = 0
    last_error: str | None = None
    last_traceback: str | None = None
    first: Any = None
    stopping: bool = False
    cs: trio.CancelScope = field(default_factory=trio.CancelScope)
    done: trio.Event = field(default_factory=trio.Event)

    def info(self) -> ServiceInfo:
        sa = self.spawned
        alive = sa is not None and sa.proc.returncode is None
        return ServiceInfo(
            name=self.name,
            kind=self.kind,
            endpoint=self.endpoint,
            state=self.state,
            uid=sa.uid
            if alive and sa
            else (tuple(self.portal.channel.uid) if self.portal is not None else None),
            pid=sa.pid if alive and sa else None,
            started_at=self.started_at,
            restarts=self.restarts,
            last_error=self.last_error,
            last_traceback=self.last_traceback,
            policy=self.policy,
            requires=self.requires,
        )


def resolve_endpoint(ctx_ep: Any) -> tuple[Callable, dict[str, Any]]:
    """Split a ``@tractor.context`` function, or a ``functools.partial`` of
    one, into the function and its keyword arguments."""
    kwargs: dict[str, Any] = {}
    fn = ctx_ep
    while isinstance(fn, partial):
        if fn.args:
            raise TypeError(
                f'endpoint partial {ctx_ep!r} has positional arguments {fn.args!r}: '
                "pass the endpoint's arguments as keywords, e.g. "
                'partial(ep, name=value)'
            )
        kwargs = {**(fn.keywords or {}), **kwargs}
        fn = fn.func
    if not compat.is_context_fn(fn):
        raise TypeError(
            f'{ctx_ep!r} is not a tractor context endpoint: decorate it with '
            '@tractor.context (an async function taking `ctx` that calls '
            '`await ctx.started(...)`)'
        )
    return fn, kwargs


def _takes_task_status(fn: Callable) -> bool:
    try:
        return 'task_status' in inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False


class ServiceMngr:
    """Spawns and supervises this actor's daemon services.

    Get it with :func:`open_service_mngr` (which creates it) or
    :func:`get_service_mngr`.  ``an`` is its actor nursery and ``tn`` the
    task nursery its supervision tasks live in; each service's actor is
    spawned in a nursery of its own inside ``tn`` so that cancelling one
    reaps exactly that process.

    """

    def __init__(
        self,
        an: compat.ActorNursery,
        tn: trio.Nursery,
        registry_addr: tuple[str, int],
        service_host: str | None = None,
        host_label: str | None = None,
    ):
        self.an = an
        self.tn = tn
        self.registry_addr = registry_addr
        #: the address every service this manager spawns binds and
        #: registers (``None``: tractor's default, 127.0.0.1)
        self.service_host = service_host
        #: the label of a joined root's host (``None``: the registry's own
        #: host): its services' names are qualified ``<name>@<label>``,
        #: whether a caller gives the plain or the qualified name (see
        #: ``_join``)
        self.host_label = host_label
        #: the shared secret a peer must send to start or cancel a service
        #: (``None``: unguarded; see ``_remote``)
        self.token: str | None = None
        #: module prefixes a guarded manager spawns endpoints from for peers
        self.allowed_modules: tuple[str, ...] = ()
        #: where a guarded root wrote its token for this host's clients
        self.token_file: Path | None = None
        self._services: dict[str, _Service] = {}
        self._order: list[str] = []  # start order, for reverse-order shutdown
        self._locks: dict[str, trio.Lock] = {}
        self._history: deque[ServiceInfo] = deque(maxlen=HISTORY_LEN)
        self._changed = trio.Event()
        self._closing = False

    # --- introspection ------------------------------------------------------

    def _q(self, name: str) -> str:
        """``name`` as this manager's services are named (host-qualified
        on a joined host)."""
        return name if self.host_label is None else qualify(name, self.host_label)

    def __contains__(self, name: str) -> bool:
        return self._q(name) in self._services

    async def list_services(self, include_ended: bool = False) -> list[ServiceInfo]:
        """Running services in start order; with ``include_ended`` also the
        most recent ended ones (stopped or failed), oldest first.  A
        coroutine, as on :class:`RemoteServiceMngr`."""
        await trio.lowlevel.checkpoint()
        return self._list(include_ended)

    def _list(self, include_ended: bool = False) -> list[ServiceInfo]:
        live = [self._services[n].info() for n in self._order if n in self._services]
        return [*self._history, *live] if include_ended else live

    def info(self, name: str, include_ended: bool = True) -> ServiceInfo:
        """A running service's record, else (``include_ended``) its latest
        ended one."""
        name = self._q(name)
        svc = self._services.get(name)
        if svc is not None:
            return svc.info()
        if include_ended:
            for info in reversed(self._history):
                if info.name == name:
                    return info
        raise self._not_found(name)

    def portal(self, name: str) -> Any:
        """The portal to a running actor service."""
        svc = self._get(self._q(name))
        if svc.spawned is not None:
            return svc.spawned.portal
        if svc.portal is not None:
            return svc.portal
        raise ServiceNotFound(f'service {name!r} is a local task: it has no portal')

    async def wait_for(
        self,
        name: str,
        predicate: Callable[[ServiceInfo], bool],
    ) -> ServiceInfo:
        """Wait until ``name``'s record satisfies ``predicate``."""
        name = self._q(name)
        while True:
            changed = self._changed
            try:
                info = self.info(name)
            except ServiceNotFound:
                info = None
            if info is not None and predicate(info):
                return info
            await changed.wait()

    async def wait_running(
        self,
        name: str,
        *,
        not_pid: int | None = None,
        timeout: float | None = None,
    ) -> ServiceInfo:
        """Wait until ``name`` runs (in a process other than ``not_pid``,
        when given) and return its record.

        This is how a dependent learns that a service it requires is back:
        it notices the loss itself (its stream ends, the peer's process
        exits), then waits here with the pid it lost.  Raises
        :class:`ServiceNotFound` as soon as ``name`` is not going to run
        again (it is not running, starting or restarting: it was stopped,
        failed or gave up), and ``TimeoutError`` after ``timeout`` seconds."""
        name = self._q(name)
        with trio.move_on_after(math.inf if timeout is None else timeout):
            while True:
                changed = self._changed
                svc = self._services.get(name)
                if svc is None or svc.state == 'stopping' or svc.stopping:
                    try:
                        last = self.info(name)
                        why = f' (it is {last.state}' + (
                            f': {last.last_error})' if last.last_error else ')'
                        )
                    except ServiceNotFound:
                        why = ''
                    raise ServiceNotFound(
                        f'service {name!r} is not running and will not restart{why}'
                    )
                if svc.state == 'running':
                    info = svc.info()
                    if (
                        not_pid is None
                        or info.pid not in (None, not_pid)
                        or svc.kind != 'actor'
                    ):
                        return info
                await changed.wait()
        raise TimeoutError(f'service {name!r} did not run again within {timeout} s')

    def _not_found(self, name: str) -> ServiceNotFound:
        known = ', '.join(repr(n) for n in self._order) or 'none'
        return ServiceNotFound(
            f'no service named {name!r} is running (running: {known})'
        )

    def _get(self, name: str) -> _Service:
        try:
            return self._services[name]
        except KeyError:
            raise self._not_found(name) from None

    def _notify(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    def _set_state(self, svc: _Service, state: State) -> None:
        svc.state = state
        self._notify()

    # --- starting -----------------------------------------------------------

    def _lock(self, name: str) -> trio.Lock:
        # one lock per name for the manager's life: never re-created per call
        lock = self._locks.get(name)
        if lock is None:
            lock = self._locks[name] = trio.Lock()
        return lock

    def _reuse(self, name: str, endpoint: str) -> _Service | None:
        svc = self._services.get(name)
        if svc is None:
            return None
        if svc.endpoint != endpoint:
            raise ServiceConflict(
                f'service {name!r} already runs endpoint {svc.endpoint}; '
                f'it cannot also run {endpoint}: pick another name'
            )
        return svc

    def _check_open(self) -> None:
        if self._closing:
            raise NoServiceMngr('the service manager is shutting down')

    async def _await_requires(
        self, name: str, requires: tuple[str, ...], timeout: float
    ) -> None:
        """Return once every service in ``requires`` runs; one that is
        starting or restarting is waited for (up to ``timeout``), one that is
        not there at all fails the start at once."""
        with trio.move_on_after(timeout) as cs:
            for dep in requires:
                while True:
                    changed = self._changed
                    svc = self._services.get(dep)
                    if svc is None or svc.stopping:
                        known = ', '.join(repr(n) for n in self._order) or 'none'
                        raise MissingDependency(
                            f'service {name!r} requires {dep!r}, which is not running '
                            f'(running: {known}): start {dep!r} first'
                        )
                    if svc.state == 'running':
                        break
                    await changed.wait()
        if cs.cancelled_caught:
            raise MissingDependency(
                f'service {name!r} requires {list(requires)!r}, which did not run '
                f'within {timeout} s'
            )

    async def start_service(
        self,
        daemon_name: str,
        ctx_ep: Any,
        *,
        restart: RestartPolicy | str | dict | None = None,
        requires: Iterable[str] = (),
        startup_timeout: float = STARTUP_TIMEOUT_S,
        shutdown_timeout: float = SHUTDOWN_TIMEOUT_S,
        **start_actor_kwargs: Any,
    ) -> Any:
        """Spawn ``daemon_name`` as a subactor and supervise ``ctx_ep`` (a
        ``@tractor.context`` function or a ``partial`` of one whose keywords
        are its arguments) opened on its portal.  Returns the value the
        endpoint passed to ``started()``.

        A name that already runs returns its started value without a
        second process; concurrent starts of one name spawn once.
        ``start_actor_kwargs`` go to tractor's ``start_actor``
        (``enable_modules`` defaults to the endpoint's module, ``loglevel``,
        ``bind_addr``, ``debug_mode``).

        ``requires`` names services this one depends on.  They must run
        already: one that is starting or restarting is waited for (within
        ``startup_timeout``), one that is not there fails the start with
        :class:`MissingDependency` before anything is spawned.  Shutdown
        then stops this service before them, whatever the start order.  A
        required service's restart does not restart this one: it learns
        of the loss itself and waits with :meth:`wait_running`.

        """
        fn, kwargs = resolve_endpoint(ctx_ep)
        unknown = set(start_actor_kwargs) - {
            'enable_modules',
            'loglevel',
            'bind_addr',
            'debug_mode',
        }
        if unknown:
            raise TypeError(
                f'start_service() got unknown start_actor arguments: {sorted(unknown)}'
            )
        mods = list(start_actor_kwargs.pop('enable_modules', None) or [])
        if fn.__module__ not in mods:
            mods.insert(0, fn.__module__)
        start_actor_kwargs['enable_modules'] = mods
        svc = self._new_service(
            'actor',
            daemon_name,
            fn,
            kwargs,
            restart=restart,
            requires=requires,
            startup_timeout=startup_timeout,
            shutdown_timeout=shutdown_timeout,
            start_kwargs=start_actor_kwargs,
        )
        return await self._start(svc, self._run_actor)

    async def start_service_ctx(
        self,
        name: str,
        portal: compat.Portal,
        ctx_fn: Any,
        *,
        restart: RestartPolicy | str | dict | None = None,
        requires: Iterable[str] = (),
        startup_timeout: float = STARTUP_TIMEOUT_S,
        shutdown_timeout: float = SHUTDOWN_TIMEOUT_S,
        **kwargs: Any,
    ) -> Any:
        """Supervise a context opened with ``ctx_fn(**kwargs)`` on a portal
        that someone else spawned.  Cancelling it cancels the context, not
        the actor.  Returns the started value.  ``requires`` as for
        :meth:`start_service`."""
        fn, pkw = resolve_endpoint(ctx_fn)
        svc = self._new_service(
            'ctx',
            name,
            fn,
            {**pkw, **kwargs},
            restart=restart,
            requires=requires,
            startup_timeout=startup_timeout,
            shutdown_timeout=shutdown_timeout,
            portal=portal,
        )
        return await self._start(svc, self._run_ctx)

    async def start_service_task(
        self,
        name: str,
        fn: Callable[..., Awaitable[Any]],
        *,
        restart: RestartPolicy | str | dict | None = None,
        requires: Iterable[str] = (),
        startup_timeout: float = STARTUP_TIMEOUT_S,
        shutdown_timeout: float = SHUTDOWN_TIMEOUT_S,
        **kwargs: Any,
    ) -> Any:
        """Run the local async function ``fn(**kwargs)`` as a supervised
        service.  If ``fn`` takes ``task_status``, the value it passes to
        ``task_status.started()`` is returned; otherwise ``None`` once it
        is scheduled.  ``requires`` as for :meth:`start_service`.  A task
        still running ``shutdown_timeout`` s after its cancel (it shields
        itself) is named in an error line; a task cannot be killed, so the
        stop goes on waiting for it."""
        if isinstance(fn, partial):
            kwargs = {**(fn.keywords or {}), **kwargs}
            if fn.args:
                raise TypeError(
                    f'task partial {fn!r} has positional arguments: pass keywords'
                )
            fn = fn.func
        if not inspect.iscoroutinefunction(fn):
            raise TypeError(f'{fn!r} is not an async function')
        svc = self._new_service(
            'task',
            name,
            fn,
            kwargs,
            restart=restart,
            requires=requires,
            startup_timeout=startup_timeout,
            shutdown_timeout=shutdown_timeout,
        )
        return await self._start(svc, self._run_task)

    def _new_service(
        self,
        kind: Kind,
        name: str,
        fn: Callable,
        kwargs: dict[str, Any],
        *,
        restart: RestartPolicy | str | dict | None,
        requires: Iterable[str],
        startup_timeout: float,
        shutdown_timeout: float,
        **fields: Any,
    ) -> _Service:
        """The preamble of every ``start_*``: check the arguments they
        share (nothing has started yet) and make the service's record."""
        policy = as_policy(restart)
        name = self._q(name)
        deps = _check_requires(
            name, [self._q(d) for d in _check_requires(name, requires)]
        )
        check_positive('startup_timeout', startup_timeout, unit='seconds')
        check_positive('shutdown_timeout', shutdown_timeout, unit='seconds')
        self._check_open()
        return _Service(
            name=name,
            kind=kind,
            endpoint=fn_path(fn),
            target=fn,
            kwargs=kwargs,
            policy=policy,
            startup_timeout=startup_timeout,
            shutdown_timeout=shutdown_timeout,
            requires=deps,
            **fields,
        )

    async def _start(self, svc: _Service, run_once: Callable) -> Any:
        """Start ``svc`` under supervision, once per name: a name that
        already runs the same endpoint returns its started value."""
        async with self._lock(svc.name):
            if (running := self._reuse(svc.name, svc.endpoint)) is not None:
                return running.first
            await self._await_requires(svc.name, svc.requires, svc.startup_timeout)
            self._services[svc.name] = svc
            self._order.append(svc.name)
            self._notify()
            try:
                return await self.tn.start(self._supervise, svc, run_once)
            except BaseException:
                # failed before started(): _supervise already recorded it
                self._forget(svc)
                raise

    # --- supervision --------------------------------------------------------

    async def _supervise(
        self,
        svc: _Service,
        run_once: Callable,
        task_status: trio.TaskStatus[Any] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Run ``svc`` and restart it by its policy (:func:`supervise`)
        until it ends, gives up or is cancelled; then remove its entry.
        A failure before the service ever started goes to the caller of
        ``start_*`` instead, and is not restarted."""
        final: State = 'stopped'

        async def once() -> None:
            try:
                await run_once(svc, None if svc.started_at else task_status)
            except Exception as err:
                if svc.started_at is None:
                    # never started: the caller of start_* gets it
                    self._record_error(svc, err)
                    if isinstance(err, (ServiceStartupTimeout, ServiceFailed)):
                        raise
                    raise ServiceFailed(
                        f'service {svc.name!r} ({svc.endpoint}) failed to start: '
                        f'{describe_error(err)}'
                    ) from err
                raise
            log.info(f'service {svc.name!r} returned')

        def on_state(sup: Supervision) -> None:
            if isinstance(sup.error, GaveUp):
                if isinstance(sup.error.__cause__, Exception):
                    self._record_error(svc, sup.error.__cause__)  # the last run's
                p = svc.policy
                gave_up = GaveUp(
                    f'service {svc.name!r} gave up: more than {p.max_restarts} '
                    f'restarts within {p.within_s} s (last: {svc.last_error})'
                )
                svc.last_error = f'GaveUp: {gave_up}'
                log.error(str(gave_up))
                return
            if sup.error is not None:
                self._record_error(svc, sup.error)
            if sup.state == 'restarting':
                svc.restarts += 1
                self._set_state(svc, 'restarting')
                log.warning(
                    f'restarting service {svc.name!r} (restart {svc.restarts}'
                    + (f', after {sup.backoff:.2f} s)' if sup.backoff else ')')
                )

        try:
            with svc.cs:
                try:
                    end = await supervise(
                        once,
                        svc.policy,
                        on_state=on_state,
                        stop=lambda: svc.stopping or self._closing,
                        fatal=lambda err: svc.started_at is None,
                    )
                except Exception:
                    final = 'failed'
                    raise
                final = end.state if end.state == 'failed' else 'stopped'
        finally:
            svc.state = final
            self._forget(svc)
        if svc.started_at is None:
            raise ServiceFailed(f'service {svc.name!r} was cancelled before it started')

    def _record_error(self, svc: _Service, err: BaseException) -> None:
        err = compat.unwrap_error(err)
        svc.last_error = describe_error(err)
        svc.last_traceback = compat.remote_traceback(err)
        log.error(
            f'service {svc.name!r} ({svc.endpoint}) failed: {svc.last_error}'
            + (
                f'\nremote traceback:\n{svc.last_traceback}'
                if svc.last_traceback
                else ''
            ),
        )
        self._notify()

    def _forget(self, svc: _Service) -> None:
        if self._services.get(svc.name) is svc:
            del self._services[svc.name]
            self._order.remove(svc.name)
            if svc.state not in ('stopped', 'failed'):
                svc.state = 'stopped'
            self._history.append(svc.info())
        svc.done.set()
        self._notify()

    def _spawn_kwargs(self, svc: _Service) -> dict[str, Any]:
        """``start_actor`` arguments of ``svc``: a service binds (and
        registers) an ephemeral port on :attr:`service_host` unless its
        start named a ``bind_addr`` of its own."""
        kwargs = dict(svc.start_kwargs)
        if kwargs.get('bind_addr') is None:
            kwargs['bind_addr'] = compat.service_bind_addr(self.service_host)
        return kwargs

    async def _run_actor(self, svc: _Service, status: trio.TaskStatus | None) -> Any:
        """One life of an actor service: spawn, open the context, hold it
        until it returns, fails, the process dies, or we are cancelled."""
        sa: compat.SpawnedActor | None = None
        error: Exception | None = None
        result: Any = None
        async with compat.open_actor_nursery() as an:
            # errors stay inside a5's nursery so it takes its quiet exit path
            try:
                with trio.CancelScope(
                    deadline=trio.current_time() + svc.startup_timeout,
                ) as startup:
                    sa = await compat.start_actor(
                        an, svc.name, **self._spawn_kwargs(svc)
                    )
                    svc.spawned = sa
                    self._notify()
                    async with trio.open_nursery() as tn:
                        tn.start_soon(compat.watch_process, sa)
                        async with compat.open_context(
                            sa.portal,
                            svc.target,
                            **svc.kwargs,
                        ) as (ctx, first):
                            startup.deadline = math.inf
                            self._started(svc, first, status)
                            result = await compat.context_result(ctx)
                        tn.cancel_scope.cancel()
                if startup.cancelled_caught:
                    error = ServiceStartupTimeout(
                        f'service {svc.name!r} ({svc.endpoint}) did not call '
                        f'started() within {svc.startup_timeout} s'
                    )
            except Exception as err:
                error = compat.unwrap_error(err)  # type: ignore[assignment]
            finally:
                if sa is not None:
                    await compat.cancel_actor(sa, svc.shutdown_timeout)
                    if sa.proc.returncode != 0:
                        # killed: it could not unregister itself (a5 keeps the entry)
                        await compat.unregister_actor(sa.uid, self.registry_addr)
        if error is not None:
            raise error
        return result

    async def _run_ctx(self, svc: _Service, status: trio.TaskStatus | None) -> Any:
        portal = svc.portal
        assert portal is not None, 'a context service runs on a spawned actor'

        async def _watch() -> None:
            await compat.wait_disconnected(portal)
            raise PeerDisconnected(
                f'peer {portal.channel.uid} of service {svc.name!r} went away'
            )

        with trio.CancelScope(
            deadline=trio.current_time() + svc.startup_timeout
        ) as startup:
            async with trio.open_nursery() as tn:
                tn.start_soon(_watch)
                async with compat.open_context(portal, svc.target, **svc.kwargs) as (
                    ctx,
                    first,
                ):
                    startup.deadline = math.inf
                    self._started(svc, first, status)
                    try:
                        result = await compat.context_result(ctx)
                    finally:
                        if svc.stopping and portal.channel.connected():
                            with (
                                trio.CancelScope(shield=True),
                                trio.move_on_after(svc.shutdown_timeout),
                            ):
                                await ctx.cancel()
                tn.cancel_scope.cancel()
            return result
        raise ServiceStartupTimeout(
            f'context service {svc.name!r} ({svc.endpoint}) did not call started() '
            f'within {svc.startup_timeout} s'
        )

    async def _run_task(self, svc: _Service, status: trio.TaskStatus | None) -> Any:
        fn = svc.target
        if _takes_task_status(fn):
            with trio.CancelScope(
                deadline=trio.current_time() + svc.startup_timeout
            ) as startup:
                async with trio.open_nursery() as tn:
                    first = await tn.start(partial(fn, **svc.kwargs))
                    startup.deadline = math.inf
                    self._started(svc, first, status)
            if startup.cancelled_caught:
                raise ServiceStartupTimeout(
                    f'task service {svc.name!r} did not call task_status.started() '
                    f'within {svc.startup_timeout} s'
                )
            return None
        self._started(svc, None, status)
        return await fn(**svc.kwargs)

    def _started(
        self, svc: _Service, first: Any, status: trio.TaskStatus | None
    ) -> None:
        if svc.started_at is None and svc.name in self._order:
            # order by when starting *finished*: a service that another one
            # started while starting up stops after it
            self._order.remove(svc.name)
            self._order.append(svc.name)
        svc.first = first
        svc.started_at = time.time()
        self._set_state(svc, 'running')
        log.info(f'service {svc.name!r} running ({svc.endpoint})')
        if status is not None:
            status.started(first)

    # --- stopping -----------------------------------------------------------

    async def cancel_service(self, name: str) -> ServiceInfo:
        """Stop ``name`` (gracefully, then by force after its shutdown
        timeout) and return once its process is reaped and its entry gone.
        Returns its final record."""
        name = self._q(name)
        svc = self._get(name)
        svc.stopping = True
        self._set_state(svc, 'stopping')
        svc.cs.cancel()
        with trio.CancelScope(shield=True):
            # an actor is killed once its shutdown timeout is over (then
            # reaped); a task cannot be: one that outlives its timeout (it
            # shields itself from the cancel) is named, not waited on silently
            grace = svc.shutdown_timeout + (KILL_GRACE_S if svc.kind == 'actor' else 0)
            with trio.move_on_after(grace):
                await svc.done.wait()
            if not svc.done.is_set():
                log.error(
                    f'service {name!r} ({svc.kind}) still runs {grace:g} s after '
                    'its cancel: waiting on (a task shielded from cancellation?)'
                )
                await svc.done.wait()
        return self.info(name)

    def stop_order(self) -> list[str]:
        """The order :meth:`_shutdown` stops the running services in:
        dependents before the services they require, otherwise reverse
        start order."""
        left = [n for n in self._order if n in self._services]
        out: list[str] = []
        while left:
            needed = {d for n in left for d in self._services[n].requires}
            free = [n for n in left if n not in needed] or left  # a cycle: start order
            out.append(free[-1])
            left.remove(free[-1])
        return out

    async def _shutdown(self) -> None:
        """Stop every service, one at a time: dependents before what they
        require, otherwise in reverse start order."""
        self._closing = True
        with trio.CancelScope(shield=True):
            while order := self.stop_order():
                await self.cancel_service(order[0])


def _check_requires(name: str, requires: Any) -> tuple[str, ...]:
    """``requires`` as a tuple of distinct service names, not ``name``."""
    if isinstance(requires, str) or not isinstance(requires, Iterable):
        raise TypeError(f'requires={requires!r} must be a list of service names')
    out: list[str] = []
    for dep in requires:
        if not isinstance(dep, str) or not dep:
            raise TypeError(f'requires: {dep!r} is not a service name')
        if dep == name:
            raise ValueError(f'service {name!r} cannot require itself')
        if dep not in out:
            out.append(dep)
    return tuple(out)


# --- the per-actor singleton ------------------------------------------------


@dataclass
class _Holder:
    """This actor's manager; reset when its outermost ``open_service_mngr``
    exits."""

    mngr: ServiceMngr | None = None
    opening: trio.Event | None = None  # set once an opener succeeded or failed
    pid: int = 0


_holder = _Holder()


def get_service_mngr() -> ServiceMngr:
    """This actor's :class:`ServiceMngr`.  Raises :class:`NoServiceMngr` if
    :func:`open_service_mngr` has not been entered."""
    mngr = _holder.mngr
    if mngr is None or _holder.pid != os.getpid():
        raise NoServiceMngr(
            'no service manager is open in this actor: enter '
            '`async with tractor_services.open_service_mngr():` first'
        )
    return mngr


@acm
async def open_service_mngr(
    *,
    registry_addr: str | tuple[str, int] | None = None,
    name: str = 'service_root',
    loglevel: str | None = None,
    debug_mode: bool = False,
    service_host: str | None = None,
    token: str | None = None,
    allow_modules: Iterable[str] = (),
    host_label: str | None = None,
    **root_kwargs: Any,
) -> AsyncIterator[ServiceMngr]:
    """Open (or re-enter) this actor's one :class:`ServiceMngr`.

    Every service it spawns binds and registers ``service_host`` (default:
    the address this actor itself is bound to: for a service root, the
    registry's host), so a root on a routable address has a tree that
    other hosts reach.  A wildcard is refused.

    With a ``token`` the manager is guarded: a peer must send it to start
    or cancel a service, and may start endpoints only from the modules
    ``_remote.allowed_modules(allow_modules)`` lists (its own code, in
    this actor, is not limited).

    ``host_label`` (a joined root's, see ``_join``) qualifies the names of
    its services: ``feedd.sim`` runs and registers as ``feedd.sim@<label>``.

    Nested entries, in this task or another, get the same instance; the
    outermost entry owns it and, on exit, stops every service (dependents
    before what they require, otherwise in reverse start order) and resets
    it so it can be opened afresh.  Outside a tractor runtime it boots a
    root actor first (``registry_addr``,
    ``name``, ``loglevel``, ``debug_mode`` configure it; inside a running
    runtime they are ignored).

    """
    if _holder.pid != os.getpid():
        _holder.__init__()  # type: ignore[misc]  # a new process has no manager
        _holder.pid = os.getpid()
    while _holder.mngr is None and _holder.opening is not None:
        await _holder.opening.wait()  # another task is opening it right now
    if _holder.mngr is not None:
        yield _holder.mngr
        return

    if service_host is not None:
        compat.service_bind_addr(
            service_host
        )  # refuse a wildcard before anything starts
    opening = _holder.opening = trio.Event()
    try:
        async with _maybe_open_root(
            registry_addr, name, loglevel, debug_mode, root_kwargs
        ):
            compat.quiet_runtime_logs()
            compat.expose_module('tractor_services._remote')
            compat.expose_module('tractor_services._join')
            reg_addr = resolve_registry_addr(registry_addr)
            async with compat.open_actor_nursery() as an, trio.open_nursery() as tn:
                mngr = ServiceMngr(
                    an, tn, reg_addr, service_host or compat.own_host(), host_label
                )
                if token is not None:
                    from ._remote import allowed_modules

                    mngr.token = token
                    mngr.allowed_modules = allowed_modules(allow_modules)
                _holder.mngr = mngr
                opening.set()
                try:
                    yield mngr
                finally:
                    try:
                        await mngr._shutdown()
                    finally:
                        tn.cancel_scope.cancel()
    finally:
        _holder.mngr = None
        _holder.opening = None
        opening.set()


@acm
async def _maybe_open_root(
    registry_addr: Any,
    name: str,
    loglevel: str | None,
    debug_mode: bool,
    root_kwargs: dict[str, Any],
) -> AsyncIterator[None]:
    if compat.current_actor() is not None:
        yield
        return
    addr = resolve_registry_addr(registry_addr)
    async with compat.open_root_actor(
        addr,
        name,
        loglevel=loglevel,
        debug_mode=debug_mode,
        **root_kwargs,
    ):
        yield
