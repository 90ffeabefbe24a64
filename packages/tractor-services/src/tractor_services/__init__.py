'''
tractor-services: supervised daemon services for the tractor actor runtime.

``open_service_mngr()`` makes this actor's one :class:`ServiceMngr`
(booting a root actor if none runs); ``ServiceMngr.start_service()``
spawns a daemon subactor and supervises a context opened on its portal,
restarting it by an OTP-style policy.  ``open_service_root()`` starts a
root daemon with a registry; ``maybe_spawn_daemon()`` finds a service by
name from any actor or program, or has the root spawn it.

'''
from . import compat
from ._errors import (
    GaveUp,
    MissingDependency,
    NoServiceMngr,
    RegistryInUse,
    ServiceConflict,
    ServiceError,
    ServiceFailed,
    ServiceNotFound,
    ServiceStartupTimeout,
)
from ._mngr import (
    ServiceInfo,
    ServiceMngr,
    get_service_mngr,
    open_service_mngr,
)
from ._policy import RestartIntensity, RestartPolicy
from ._remote import RemoteServiceMngr
from ._root import (
    maybe_open_service_root,
    maybe_spawn_daemon,
    open_root_mngr,
    open_service_root,
)
from .compat import ActorDied, PeerDisconnected, PeerGone, default_registry_addr

__version__ = '0.1.0'

__all__ = [
    'ActorDied',
    'GaveUp',
    'MissingDependency',
    'NoServiceMngr',
    'PeerDisconnected',
    'PeerGone',
    'RegistryInUse',
    'RemoteServiceMngr',
    'RestartIntensity',
    'RestartPolicy',
    'ServiceConflict',
    'ServiceError',
    'ServiceFailed',
    'ServiceInfo',
    'ServiceMngr',
    'ServiceNotFound',
    'ServiceStartupTimeout',
    'compat',
    'default_registry_addr',
    'get_service_mngr',
    'maybe_open_service_root',
    'maybe_spawn_daemon',
    'open_root_mngr',
    'open_service_mngr',
    'open_service_root',
]
