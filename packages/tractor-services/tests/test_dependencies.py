"""Declared dependencies: ``start_service(..., requires=[...])``."""

import os
import signal
from functools import partial

import pytest
import trio

from tractor_services import (
    MissingDependency,
    ServiceNotFound,
    open_service_mngr,
)
from tractor_services.testing import actor_pids

import services_endpoints as eps


def logged(name, log):
    return partial(eps.sleeper, log_path=str(log), tag=name)


async def test_dependents_stop_before_what_they_require_whatever_the_start_order(
    reg_addr, tmp_path
):
    log = tmp_path / 'order'
    async with open_service_mngr(registry_addr=reg_addr) as mngr:
        await mngr.start_service('base', logged('base', log))
        await mngr.start_service('app', logged('app', log), requires=['base'])
        await mngr.start_service('other', logged('other', log))
        # base goes and comes back: it now counts as started after app
        await mngr.cancel_service('base')
        await mngr.start_service('base', logged('base', log))
        assert [i.name for i in await mngr.list_services()] == ['app', 'other', 'base']
        assert mngr.info('app').requires == ('base',)
        assert mngr.stop_order() == ['other', 'app', 'base']
        log.write_text('')
    # reverse start order would have stopped base first, under app
    assert log.read_text().split() == ['other', 'app', 'base']


async def test_a_missing_dependency_fails_the_start_before_anything_spawns(reg_addr):
    async with open_service_mngr(registry_addr=reg_addr) as mngr:
        await mngr.start_service('there', eps.sleeper)
        with pytest.raises(
            MissingDependency,
            match=r"'app' requires 'nope', which is not running \(running: 'there'\)",
        ):
            await mngr.start_service('app', eps.sleeper, requires=['there', 'nope'])
        assert 'app' not in mngr and actor_pids('app') == []
        with pytest.raises(TypeError, match='list of service names'):
            await mngr.start_service('app', eps.sleeper, requires='there')
        with pytest.raises(ValueError, match='cannot require itself'):
            await mngr.start_service('app', eps.sleeper, requires=['app'])


async def test_a_start_waits_for_a_restarting_dependency(reg_addr):
    async with open_service_mngr(registry_addr=reg_addr) as mngr:
        pid, _ = await mngr.start_service('base', eps.sleeper, restart='permanent')
        os.kill(pid, signal.SIGKILL)
        with trio.fail_after(10):
            await mngr.wait_for('base', lambda i: i.state == 'restarting')
            await mngr.start_service('app', eps.sleeper, requires=['base'])
        base = mngr.info('base')
        assert base.state == 'running' and base.pid not in (None, pid)


async def test_a_dependency_restart_leaves_dependents_running_and_wait_running_tells(
    reg_addr,
):
    async with open_service_mngr(registry_addr=reg_addr) as mngr:
        pid, _ = await mngr.start_service('base', eps.sleeper, restart='permanent')
        app_pid, _ = await mngr.start_service('app', eps.sleeper, requires=['base'])
        os.kill(pid, signal.SIGKILL)
        with trio.fail_after(10):
            info = await mngr.wait_running('base', not_pid=pid)
        assert info.pid not in (None, pid) and info.restarts == 1
        app = mngr.info('app')
        assert app.state == 'running' and app.pid == app_pid and app.restarts == 0

        # stopped for good: a dependent waiting for it is told so at once
        async with trio.open_nursery() as tn:
            tn.start_soon(mngr.cancel_service, 'base')
            with (
                trio.fail_after(10),
                pytest.raises(
                    ServiceNotFound, match="'base' is not running and will not restart"
                ),
            ):
                await mngr.wait_running('base', not_pid=info.pid)
        with pytest.raises(TimeoutError):
            await mngr.wait_running('app', not_pid=app_pid, timeout=0.05)
