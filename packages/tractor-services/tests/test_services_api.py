"""The package's public names, pinned: a change here is an API change
(say so in the changelog), not an accident of an import."""

from __future__ import annotations

import inspect

import tractor_services
from tractor_services import RemoteServiceMngr, ServiceMngr, ServiceMngrAPI
from tractor_services._api import API_METHODS

PUBLIC = {
    # getting a manager
    'open_service_root',
    'maybe_open_service_root',
    'open_root_mngr',
    'open_service_mngr',
    'get_service_mngr',
    # managers and what they report
    'ServiceMngrAPI',
    'ServiceMngr',
    'RemoteServiceMngr',
    'ServiceInfo',
    # finding or spawning a service by name
    'maybe_spawn_daemon',
    # services on a chosen host
    'open_join_root',
    'joined_hosts',
    'qualify',
    'HostInfo',
    # restarts
    'RestartPolicy',
    'RestartIntensity',
    'supervise',
    'Supervision',
    # errors
    'TractorServicesError',
    'ServiceError',
    'NoServiceMngr',
    'NoServiceRoot',
    'ServiceNotFound',
    'ServiceConflict',
    'ServiceStartupTimeout',
    'ServiceFailed',
    'MissingDependency',
    'GaveUp',
    'RegistryInUse',
    'PeerDisconnected',
    'ActorDied',
    'PeerGone',
    'DaemonStopped',
    'RegistryUnreachable',
    'AddressError',
    'UnreachableService',
    'Unauthorized',
    'describe_error',
    'error_leaves',
    'one_peer_gone',
    # addresses
    'default_registry_addr',
    'parse_addr',
    'resolve_registry_addr',
    'host_id',
    'is_loopback',
    # a bounded queue
    'DropOldestQueue',
    # daemon processes
    'cancel_on_signals',
    # public modules
    'compat',
    'checks',
}


def test_the_public_names_are_pinned():
    # (pytest's assertion rewriting of its plugin's package adds '@...' names)
    names = {
        n for n in dir(tractor_services) if n.isidentifier() and not n.startswith('_')
    }
    names.discard('testing')  # a submodule, present once the pytest plugin imported it
    assert names == PUBLIC


def test_every_error_has_the_one_base_class():
    errors = [getattr(tractor_services, n) for n in PUBLIC]
    errors = [e for e in errors if isinstance(e, type) and issubclass(e, BaseException)]
    assert len(errors) == 19
    assert all(issubclass(e, tractor_services.TractorServicesError) for e in errors)


def test_both_managers_have_the_protocols_methods_alike():
    """Same names, all coroutines, same parameters: code given either
    manager calls one API (no sync/async split, no second name)."""
    for name in API_METHODS:
        local, remote = getattr(ServiceMngr, name), getattr(RemoteServiceMngr, name)
        assert inspect.iscoroutinefunction(local), name
        assert inspect.iscoroutinefunction(remote), name
        want = list(inspect.signature(getattr(ServiceMngrAPI, name)).parameters)
        assert list(inspect.signature(local).parameters) == want, name
        assert list(inspect.signature(remote).parameters) == want, name
    assert {
        n for n, v in vars(ServiceMngrAPI).items() if inspect.iscoroutinefunction(v)
    } == set(API_METHODS)
