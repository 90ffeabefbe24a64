"""Addresses across hosts (issue #13, item 1), on one host: the loopback
network is a /8, so ``127.0.0.x`` stand in for the addresses of several
interfaces.  The cross-host cases proper are in tests/multihost/."""

import signal

import pytest
import trio
from test_root import _start_daemon

from tractor_services import ServiceNotFound, compat, open_service_root
from tractor_services._addr import (
    BIND_HOST_ENV,
    AddressError,
    UnreachableService,
    check_reachable,
    client_bind_host,
    route_host,
)
from tractor_services.testing import free_port

import services_endpoints as eps

#: TEST-NET-1 (RFC 5737): an address no host here has
NOT_OURS = '192.0.2.1'


def test_wildcard_bind_addresses_are_refused():
    for host in ('0.0.0.0', '::', ''):
        with pytest.raises(AddressError, match='wildcard'):
            client_bind_host(('127.0.0.1', 1616), host)


def test_wildcard_bind_host_env_is_refused(monkeypatch):
    monkeypatch.setenv(BIND_HOST_ENV, '0.0.0.0')
    with pytest.raises(AddressError, match=BIND_HOST_ENV):
        client_bind_host(('127.0.0.1', 1616))


def test_client_binds_the_route_to_the_registry(monkeypatch):
    monkeypatch.delenv(BIND_HOST_ENV, raising=False)
    assert route_host(('127.0.0.1', 1616)) == '127.0.0.1'
    assert client_bind_host(('127.0.0.1', 1616)) == '127.0.0.1'
    monkeypatch.setenv(BIND_HOST_ENV, '127.0.0.9')
    assert client_bind_host(('127.0.0.1', 1616)) == '127.0.0.9'
    assert client_bind_host(('127.0.0.1', 1616), '127.0.0.8') == '127.0.0.8'


def test_loopback_registration_from_another_host_says_how_to_start_the_root():
    with pytest.raises(UnreachableService, match=r'samplerd run --host'):
        check_reachable('feedd', ('127.0.0.1', 4000), (NOT_OURS, 1616))
    # on this host, or with a routable registration, the address is handed on
    assert check_reachable('feedd', ('127.0.0.1', 4000), ('127.0.0.1', 1616)) == (
        '127.0.0.1',
        4000,
    )
    assert check_reachable('feedd', ('10.0.0.7', 4000), (NOT_OURS, 1616)) == (
        '10.0.0.7',
        4000,
    )


@pytest.mark.parametrize('host', ['0.0.0.0', NOT_OURS])
async def test_service_root_refuses_a_registry_host_it_cannot_serve(host):
    with pytest.raises(AddressError, match=host):
        async with open_service_root((host, free_port())):
            pytest.fail('the root started')
    assert compat.current_actor() is None


async def test_service_root_refuses_a_wildcard_service_host(other_addr):
    with pytest.raises(AddressError, match='service host'):
        async with open_service_root(other_addr, service_host='0.0.0.0'):
            pytest.fail('the root started')


async def test_services_bind_and_register_the_registry_host():
    addr = ('127.0.0.3', free_port('127.0.0.3'))
    async with open_service_root(addr) as mngr:
        await mngr.start_service('svc', eps.sleeper)
        with trio.fail_after(30):
            where = await compat.find_actor_addr('svc', addr)
        # a5's default would have been 127.0.0.1
        assert where is not None and where[0] == '127.0.0.3'
        assert mngr.service_host == '127.0.0.3'


async def test_services_bind_the_service_host_given(other_addr):
    async with open_service_root(other_addr, service_host='127.0.0.4') as mngr:
        await mngr.start_service('svc', eps.sleeper)
        with trio.fail_after(30):
            where = await compat.find_actor_addr('svc', other_addr)
        assert where is not None and where[0] == '127.0.0.4'
        # and it is reachable there
        async with compat.find_actor('svc', other_addr) as portal:
            assert portal is not None
            assert await portal.run(eps.ping) == 'pong'


async def test_client_root_binds_and_registers_the_host_given(other_addr, monkeypatch):
    proc, _ = await _start_daemon(other_addr)
    try:
        with trio.fail_after(60):
            async with compat.open_root_actor(
                other_addr, 'addr_client', bind_host='127.0.0.5'
            ) as actor:
                assert actor.accept_addr[0] == '127.0.0.5'
                where = await compat.find_actor_addr('addr_client', other_addr)
                assert where == tuple(actor.accept_addr)
            monkeypatch.setenv(BIND_HOST_ENV, '127.0.0.6')
            async with compat.open_root_actor(other_addr, 'env_client') as actor:
                assert actor.accept_addr[0] == '127.0.0.6'
    finally:
        proc.send_signal(signal.SIGTERM)
        with trio.fail_after(30):
            await proc.wait()


async def test_a_registry_looks_names_up_in_the_registry_it_is_given(other_addr):
    """a5's lookup from an actor that is a registry answered from its own
    registry, whatever address it was given: a program with a registry of
    its own never saw another one's services."""
    own = ('127.0.0.1', free_port())
    proc, ready = await _start_daemon(other_addr)
    try:
        async with open_service_root(own) as mngr:
            await mngr.start_service('ours_only', eps.sleeper)
            with trio.fail_after(30):
                # the other registry's service, found there
                alpha = await compat.find_actor_addr('alpha', other_addr)
                assert alpha is not None
                async with compat.find_actor('alpha', other_addr) as portal:
                    assert portal is not None
                # our own service is not in the other registry ...
                assert await compat.find_actor_addr('ours_only', other_addr) is None
                # ... but in ours, and theirs is not
                assert await compat.find_actor_addr('ours_only', own) is not None
                assert await compat.find_actor_addr('alpha', own) is None
    finally:
        proc.send_signal(signal.SIGTERM)
        with trio.fail_after(30):
            await proc.wait()


async def test_wait_for_actor_has_a_deadline(other_addr):
    async with open_service_root(other_addr):
        with pytest.raises(ServiceNotFound, match='within'):
            async with compat.wait_for_actor('nobody', other_addr, timeout=0.5):
                pytest.fail('found nobody')
