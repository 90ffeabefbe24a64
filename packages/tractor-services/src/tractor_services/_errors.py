'''
The errors tractor-services raises.  Each one says what went wrong and,
where there is one, what to do about it.

'''
from __future__ import annotations


class ServiceError(RuntimeError):
    '''Base class of every tractor-services error.'''


class NoServiceMngr(ServiceError):
    '''``get_service_mngr()`` was called before ``open_service_mngr()``.'''


class ServiceNotFound(ServiceError, KeyError):
    '''No service of that name is running.'''

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0]) if self.args else ''


class ServiceConflict(ServiceError, ValueError):
    '''A name already runs a different endpoint.'''


class ServiceStartupTimeout(ServiceError, TimeoutError):
    '''The endpoint did not call ``started()`` within the startup timeout.'''


class ServiceFailed(ServiceError):
    '''A service's endpoint raised, or its process died, before it started.'''


class MissingDependency(ServiceError):
    '''A service was started with ``requires=[...]`` naming a service that
    is not running (nor starting or restarting), or that stopped while the
    start waited for it.'''


class GaveUp(ServiceError):
    '''A service restarted more often than its policy's intensity allows.'''


class RegistryInUse(ServiceError, OSError):
    '''A registry already answers at the address a root was asked to bind.'''
