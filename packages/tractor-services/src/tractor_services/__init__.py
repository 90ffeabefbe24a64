"""
tractor-services: supervised daemon services for the tractor actor runtime.

``open_service_root()`` starts a root daemon (registry + manager);
``ServiceMngr.start_service()`` spawns a daemon subactor and supervises a
context on it by an OTP-style :class:`RestartPolicy`;
``maybe_spawn_daemon()`` finds a service by name from any actor or
program, or has the root spawn it.  See docs/services.md.

"""
# isort: skip_file
# (grouped by what a reader looks for, not alphabetically)

# --- getting a manager --------------------------------------------------------
# in a root daemon: open_service_root(); attach-or-become the root:
# maybe_open_service_root(); the root's manager from any actor:
# open_root_mngr(); this actor's own: open_service_mngr() (creates it) and
# get_service_mngr() (the one already open).
from ._root import open_service_root as open_service_root
from ._root import maybe_open_service_root as maybe_open_service_root
from ._root import open_root_mngr as open_root_mngr
from ._mngr import open_service_mngr as open_service_mngr
from ._mngr import get_service_mngr as get_service_mngr

# --- managers and what they report -----------------------------------------------
from ._api import ServiceMngrAPI as ServiceMngrAPI
from ._mngr import ServiceMngr as ServiceMngr
from ._remote import RemoteServiceMngr as RemoteServiceMngr
from ._mngr import ServiceInfo as ServiceInfo

# --- finding or spawning a service by name -----------------------------------------
from ._root import maybe_spawn_daemon as maybe_spawn_daemon

# --- services on a chosen host: roots that join another root's registry ------------
from ._join import open_join_root as open_join_root
from ._join import joined_hosts as joined_hosts
from ._join import qualify as qualify
from ._join import HostInfo as HostInfo

# --- restarts -------------------------------------------------------------------------
from ._policy import RestartPolicy as RestartPolicy
from ._policy import RestartIntensity as RestartIntensity
from ._supervise import supervise as supervise
from ._supervise import Supervision as Supervision

# --- errors (every one a TractorServicesError) ----------------------------------------
from ._errors import TractorServicesError as TractorServicesError
from ._errors import ServiceError as ServiceError
from ._errors import NoServiceMngr as NoServiceMngr
from ._errors import NoServiceRoot as NoServiceRoot
from ._errors import ServiceNotFound as ServiceNotFound
from ._errors import ServiceConflict as ServiceConflict
from ._errors import ServiceStartupTimeout as ServiceStartupTimeout
from ._errors import ServiceFailed as ServiceFailed
from ._errors import MissingDependency as MissingDependency
from ._errors import GaveUp as GaveUp
from ._errors import RegistryInUse as RegistryInUse
from ._errors import PeerDisconnected as PeerDisconnected
from ._errors import ActorDied as ActorDied
from ._errors import PeerGone as PeerGone
from ._errors import DaemonStopped as DaemonStopped
from ._errors import RegistryUnreachable as RegistryUnreachable
from ._remote import Unauthorized as Unauthorized
from ._errors import describe_error as describe_error
from ._errors import error_leaves as error_leaves
from ._errors import one_peer_gone as one_peer_gone

# --- addresses ---------------------------------------------------------------------------
from ._addr import default_registry_addr as default_registry_addr
from ._addr import parse_addr as parse_addr
from ._addr import resolve_registry_addr as resolve_registry_addr
from ._addr import is_loopback as is_loopback
from ._addr import AddressError as AddressError
from ._addr import UnreachableService as UnreachableService
from ._host import host_id as host_id  # same id: we share /dev/shm

# --- a bounded queue that never blocks its sender ----------------------------------------------
from ._queue import DropOldestQueue as DropOldestQueue

# --- daemon processes -------------------------------------------------------------------------
from ._proc import cancel_on_signals as cancel_on_signals

# --- public modules: the tractor adapter, argument checks, pytest fixtures ------------------
# (``tractor_services.testing`` is imported on its own: it needs pytest)
from . import compat as compat
from . import checks as checks

__version__ = '0.1.0'
