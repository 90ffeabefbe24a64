"""
:class:`ServiceMngrAPI`: what the local :class:`~tractor_services.ServiceMngr`
and the :class:`~tractor_services.RemoteServiceMngr` (a root's manager
driven over IPC) have in common: the same method names, all coroutines.
Code handed "the root's manager" (``open_root_mngr()``,
``maybe_open_service_root()``) is typed with it and works with either.

"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    from ._mngr import ServiceInfo
    from ._policy import RestartPolicy


@runtime_checkable
class ServiceMngrAPI(Protocol):
    """A service manager, local or remote."""

    async def start_service(
        self,
        daemon_name: str,
        ctx_ep: Any,
        *,
        restart: RestartPolicy | str | dict | None = ...,
        requires: Any = ...,
        startup_timeout: float = ...,
        shutdown_timeout: float = ...,
        **start_actor_kwargs: Any,
    ) -> Any:
        """Spawn ``daemon_name`` running the context endpoint ``ctx_ep``
        (once per name) and supervise it; returns its started value."""
        ...

    async def cancel_service(self, name: str) -> ServiceInfo:
        """Stop ``name``; returns its final record once it is gone."""
        ...

    async def list_services(self, include_ended: bool = False) -> list[ServiceInfo]:
        """The running services in start order (and the ended ones)."""
        ...

    async def wait_running(
        self,
        name: str,
        *,
        not_pid: int | None = None,
        timeout: float | None = None,
    ) -> ServiceInfo:
        """Wait until ``name`` runs (in a process other than ``not_pid``)."""
        ...


#: the methods every manager has, all coroutines (tests check both classes)
API_METHODS: tuple[str, ...] = (
    'start_service',
    'cancel_service',
    'list_services',
    'wait_running',
)
