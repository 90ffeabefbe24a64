"""
The errors tractor-services raises, in one module.  Each one says what
went wrong and, where there is one, what to do about it.

Every one of them is a :class:`TractorServicesError`.  Two families hang
off it:

- :class:`ServiceError` (a ``RuntimeError``): the service manager refused
  or could not do what it was asked;
- :class:`PeerDisconnected` (a ``ConnectionError``): the actor at the far
  end of a context or stream went away (:class:`ActorDied`,
  :class:`PeerGone`, :class:`DaemonStopped`), and
  :class:`RegistryUnreachable`: what answers at a registry address is no
  working registry.

:func:`describe_error` is the one-line form of any error (a remote one
by the type and message it had in its own actor) that logs and records
use.

"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator

import trio

if sys.version_info < (3, 11):  # pragma: no cover
    from exceptiongroup import BaseExceptionGroup


class TractorServicesError(Exception):
    """Base class of every error tractor-services raises."""


# --- the service manager ----------------------------------------------------


class ServiceError(TractorServicesError, RuntimeError):
    """Base class of the service manager's errors."""


class NoServiceMngr(ServiceError):
    """No service manager is open in this actor: ``get_service_mngr()``
    was called before ``open_service_mngr()``, or the manager is shutting
    down, or (over IPC) the actor asked runs none."""


class ServiceNotFound(ServiceError, KeyError):
    """No service of that name is running."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0]) if self.args else ''


class ServiceConflict(ServiceError, ValueError):
    """A name already runs a different endpoint."""


class ServiceStartupTimeout(ServiceError, TimeoutError):
    """The endpoint did not call ``started()`` within the startup timeout."""


class ServiceFailed(ServiceError):
    """A service's endpoint raised, or its process died, before it started."""


class MissingDependency(ServiceError):
    """A service was started with ``requires=[...]`` naming a service that
    is not running (nor starting or restarting), or that stopped while the
    start waited for it."""


class GaveUp(ServiceError):
    """A service restarted more often than its policy's intensity allows."""


class RegistryInUse(ServiceError, OSError):
    """A registry already answers at the address a root was asked to bind."""


class NoServiceRoot(ServiceError):
    """No service root answers at the registry address: start one with
    ``open_service_root()`` or ``maybe_open_service_root()``."""


# --- peers and the registry --------------------------------------------------


class PeerDisconnected(TractorServicesError, ConnectionError):
    """The IPC peer of a context or stream went away."""


class ActorDied(PeerDisconnected):
    """A spawned actor's process exited while we were supervising it."""

    def __init__(self, uid: tuple[str, str], pid: int, returncode: int | None):
        self.uid = uid
        self.pid = pid
        self.returncode = returncode
        how = (
            f'killed by signal {-returncode}'
            if returncode is not None and returncode < 0
            else f'exited with status {returncode}'
        )
        super().__init__(f'actor {uid[0]!r} (pid {pid}) {how}')


class PeerGone(PeerDisconnected):
    """A peer actor on this host (one we did not spawn) exited while we
    were talking to it."""


class DaemonStopped(PeerGone):
    """The far end of a context ended it on its own while we were
    attached: its actor was cancelled (its daemon stopped by Ctrl-C or
    SIGTERM, or its root killed and the tree torn down), or another actor
    cancelled that task there.  ``peer`` names the far end."""

    def __init__(self, peer: str, what: str) -> None:
        self.peer = peer
        super().__init__(
            f'{peer} ended {what} on its side: the daemon stopped (or another actor cancelled it)'
        )


class RegistryUnreachable(TractorServicesError, ConnectionError):
    """Something is at the registry address, but no working tractor
    registry: it answered otherwise, or not at all in time (a frozen
    process).  The message names the address and what answered there."""


# --- describing and sorting errors --------------------------------------------


def describe_error(err: BaseException) -> str:
    """``'ValueError: kaboom'``: an error in one line, for logs and
    records.  A remote error (tractor's ``RemoteActorError``) is told by
    the type and message it had in the actor that raised it."""
    from . import compat  # compat imports this module: resolved at call time

    rtype = compat.remote_error_type(err)
    if rtype:
        return f'{rtype}: {compat.remote_error_message(err)}'
    text = str(err)
    return f'{type(err).__name__}: {text}' if text else type(err).__name__


def error_leaves(exc: BaseException) -> list[BaseException]:
    """The errors inside ``exc``, exception groups flattened."""
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for e in exc.exceptions for leaf in error_leaves(e)]
    return [exc]


def only_cancelled(exc: BaseException) -> bool:
    """Is ``exc`` a ``trio.Cancelled``, or a group of nothing else?"""
    return all(isinstance(e, trio.Cancelled) for e in error_leaves(exc))


@contextlib.contextmanager
def one_peer_gone() -> Iterator[None]:
    """Several watchers of one peer (its process, its connection, the
    heartbeats of each stream) may notice it gone at once: out of this
    block comes one :class:`PeerGone` (the first), not a group of them.
    A group holding anything else (besides cancellations) goes out as is."""
    try:
        yield
    except BaseExceptionGroup as group:
        leaves = error_leaves(group)
        gone = [e for e in leaves if isinstance(e, PeerGone)]
        if gone and all(isinstance(e, (PeerGone, trio.Cancelled)) for e in leaves):
            raise gone[0] from group
        raise
