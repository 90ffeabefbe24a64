"""Root daemons, other programs, find-or-spawn."""

import json
import signal
import subprocess
import sys
from pathlib import Path

import psutil
import pytest
import trio

from tractor_services import (
    RegistryInUse,
    RemoteServiceMngr,
    ServiceError,
    ServiceMngr,
    ServiceNotFound,
    compat,
    default_registry_addr,
    maybe_open_service_root,
    maybe_spawn_daemon,
    open_service_root,
)
from tractor_services._addr import REGISTRY_ENV
from tractor_services.testing import wait_pid_gone

import services_endpoints as eps

PROGRAMS = Path(__file__).parent / 'programs'


async def run_program(*args, timeout: float = 60) -> dict:
    proc = await trio.run_process(
        [sys.executable, str(PROGRAMS / args[0]), *map(str, args[1:])],
        capture_stdout=True,
        capture_stderr=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr.decode()[-3000:]
    return json.loads(proc.stdout.decode().strip().splitlines()[-1])


async def test_other_program_asks_root_to_spawn_then_finds_it(other_addr):
    host, port = other_addr
    async with open_service_root(other_addr) as mngr:
        with trio.fail_after(60):
            out = await run_program('client.py', host, port, 'from_client')
        assert out['pong'] == 'pong' and out['uid'][0] == 'from_client'
        # the root spawned it and keeps it: the client's exit did not stop it
        info = mngr.info('from_client')
        assert info.state == 'running' and list(info.uid) == out['uid']
        # a second run finds the running one instead of spawning again
        with trio.fail_after(60):
            again = await run_program('client.py', host, port, 'from_client')
        assert again['uid'] == out['uid']


async def _start_daemon(addr):
    proc = await trio.lowlevel.open_process(
        [sys.executable, str(PROGRAMS / 'daemon.py'), addr[0], str(addr[1])],
        stdout=subprocess.PIPE,
    )
    buf = b''
    with trio.fail_after(60):
        while b'\n' not in buf:
            chunk = await proc.stdout.receive_some()
            assert chunk, 'daemon exited before it was ready'
            buf += chunk
    return proc, json.loads(buf.split(b'\n')[0])


async def test_root_daemon_sigterm_tears_tree_down(other_addr):
    proc, ready = await _start_daemon(other_addr)
    pids = list(ready['services'].values())
    assert all(psutil.pid_exists(p) for p in pids)
    proc.send_signal(signal.SIGTERM)
    with trio.fail_after(30):
        rest = b''
        while chunk := await proc.stdout.receive_some():
            rest += chunk
        assert await proc.wait() == 0
    assert b'"stopped": true' in rest
    for pid in pids:
        await wait_pid_gone(pid)


async def test_root_daemon_sigkill_leaves_no_orphans(other_addr):
    proc, ready = await _start_daemon(other_addr)
    pids = list(ready['services'].values())
    proc.kill()
    await proc.wait()
    await proc.stdout.aclose()
    # the children learn of their parent's death and go (grace period 3 s)
    for pid in pids:
        await wait_pid_gone(pid, timeout=20)


async def test_open_service_root_refuses_a_taken_address(other_addr):
    async with open_service_root(other_addr):
        pass
    async with compat.open_root_actor(other_addr, 'squatter'):
        # we are in a runtime now, so this is refused for that reason first
        with pytest.raises(ServiceError, match='already runs one'):
            async with open_service_root(other_addr):
                pass


async def test_open_service_root_refuses_when_registry_answers(other_addr):
    proc, _ = await _start_daemon(other_addr)
    try:
        with pytest.raises(RegistryInUse, match='maybe_open_service_root'):
            async with open_service_root(other_addr):
                pass
    finally:
        proc.send_signal(signal.SIGTERM)
        with trio.fail_after(30):
            await proc.wait()


async def test_maybe_open_service_root_attaches_to_running_root(other_addr):
    proc, ready = await _start_daemon(other_addr)
    try:
        async with maybe_open_service_root(other_addr) as mngr:
            assert isinstance(mngr, RemoteServiceMngr)
            names = [i.name for i in await mngr.list_services()]
            assert names == ['alpha', 'beta', 'stuck']
            pid, value = await mngr.start_service('remote_started', eps.sleeper)
            assert psutil.pid_exists(pid)
            with pytest.raises(ServiceNotFound, match="'nope'"):
                await mngr.cancel_service('nope')
            info = await mngr.cancel_service('remote_started')
            assert info.state == 'stopped'
            await wait_pid_gone(pid)
    finally:
        proc.send_signal(signal.SIGTERM)
        with trio.fail_after(30):
            await proc.wait()


async def test_maybe_open_service_root_becomes_root_when_none(other_addr):
    async with maybe_open_service_root(other_addr) as mngr:
        assert isinstance(mngr, ServiceMngr)
        assert compat.is_registry()


async def test_maybe_spawn_daemon_from_a_subactor_and_stop_on_exit(other_addr):
    async with open_service_root(other_addr) as mngr:
        async with maybe_spawn_daemon('kept', eps.sleeper) as portal:
            assert await portal.run(eps.ping) == 'pong'
        assert 'kept' in mngr
        async with maybe_spawn_daemon(
            'dropped', eps.sleeper, stop_on_exit=True
        ) as portal:
            pid = mngr.info('dropped').pid
        assert 'dropped' not in mngr
        await wait_pid_gone(pid)
        # one that already ran is never stopped by a caller that found it
        async with maybe_spawn_daemon('kept', eps.sleeper, stop_on_exit=True):
            pass
        assert 'kept' in mngr


async def test_maybe_spawn_daemon_without_root_is_clear(other_addr):
    with pytest.raises(ServiceError, match='no service root answers'):
        async with maybe_spawn_daemon('x', eps.sleeper, registry_addr=other_addr):
            pass


async def test_registry_address_from_environment(monkeypatch, other_addr):
    monkeypatch.setenv(REGISTRY_ENV, f'{other_addr[0]}:{other_addr[1]}')
    assert default_registry_addr() == other_addr
    async with open_service_root() as mngr:
        assert mngr.registry_addr == other_addr
    monkeypatch.setenv(REGISTRY_ENV, 'nonsense')
    with pytest.raises(ValueError, match='host:port'):
        default_registry_addr()


async def test_registry_without_service_manager_is_clear(other_addr):

    async with compat.open_root_actor(other_addr, 'plain_registry'):
        async with compat.open_actor_nursery() as an:
            # a subactor asks the registry (which runs no manager) for services
            portal = await an.start_actor(
                'asker', enable_modules=['services_endpoints']
            )
            try:
                reply = await portal.run(eps.ask_root_for_services)
            finally:
                await portal.cancel_actor()
    assert 'runs no service manager' in reply


async def test_list_services_is_a_coroutine_on_the_local_manager_too(other_addr):
    async with maybe_open_service_root(other_addr) as mngr:
        assert not isinstance(mngr, RemoteServiceMngr)
        await mngr.start_service('one', eps.sleeper)
        assert [i.name for i in await mngr.list_services()] == ['one']


@pytest.mark.parametrize('raised', ['error', 'stray_cancel'])
async def test_maybe_spawn_daemon_never_spawns_on_the_way_out(
    other_addr, monkeypatch, raised
):
    """The caller's block raised and the found portal's exit swallowed it (as
    a5's open_portal does with a Cancelled its own relay let escape): the
    cause reaches the caller, and the root is not asked to spawn anything."""
    from contextlib import asynccontextmanager

    from tractor_services import PeerDisconnected, _root

    @asynccontextmanager
    async def swallowing_find_actor(name, addr):
        try:
            yield object()  # a portal to a running service
        except BaseException:
            pass

    asked = []
    real_root_mngr = _root.open_root_mngr

    def spy(*args, **kwargs):
        asked.append(args)
        return real_root_mngr(*args, **kwargs)

    monkeypatch.setattr(compat, 'find_actor', swallowing_find_actor)
    monkeypatch.setattr(_root, 'open_root_mngr', spy)
    async with open_service_root(other_addr) as mngr:
        if raised == 'error':
            with pytest.raises(ValueError, match='the real cause'):
                async with maybe_spawn_daemon('svc', eps.sleeper):
                    raise ValueError('the real cause')
        else:
            with pytest.raises(
                PeerDisconnected, match="service 'svc' ended the session from its side"
            ):
                async with maybe_spawn_daemon('svc', eps.sleeper):
                    raise trio.Cancelled._create()
        assert asked == [] and 'svc' not in mngr
