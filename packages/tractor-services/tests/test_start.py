"""start_service / cancel_service and bad input."""

from functools import partial

import psutil
import pytest
import trio

from tractor_services import (
    ServiceConflict,
    ServiceFailed,
    ServiceNotFound,
    ServiceStartupTimeout,
    open_service_mngr,
)
from tractor_services.testing import actor_pids, wait_pid_gone

import services_endpoints as eps


async def test_started_value_comes_back(reg_addr):
    async with open_service_mngr(registry_addr=reg_addr) as mngr:
        pid, value = await mngr.start_service(
            'svc', partial(eps.sleeper, value={'a': 1})
        )
        assert value == {'a': 1}
        info = mngr.info('svc')
        assert info.pid == pid and info.state == 'running'
        assert info.endpoint == 'services_endpoints:sleeper'
        assert info.uid[0] == 'svc' and info.started_at is not None


async def test_plain_endpoint_and_enable_modules_default(reg_addr):
    async with open_service_mngr(registry_addr=reg_addr) as mngr:
        pid, value = await mngr.start_service('svc', eps.sleeper)
        assert value is None
        # the endpoint's module was enabled in the child: RPC into it works
        assert await mngr.portal('svc').run(eps.ping) == 'pong'


async def test_ten_concurrent_starts_make_one_process(reg_addr):
    results = []

    async def start():
        results.append(await mngr.start_service('single', eps.sleeper))

    async with open_service_mngr(registry_addr=reg_addr) as mngr:
        async with trio.open_nursery() as tn:
            for _ in range(10):
                tn.start_soon(start)
        assert len(results) == 10
        assert len({pid for pid, _ in results}) == 1
        assert actor_pids('single') == [results[0][0]]
        assert [i.name for i in await mngr.list_services()] == ['single']


async def test_start_running_name_returns_running_one(reg_addr):
    async with open_service_mngr(registry_addr=reg_addr) as mngr:
        first = await mngr.start_service('svc', eps.sleeper)
        again = await mngr.start_service('svc', eps.sleeper)
        assert again == first
        assert len(actor_pids('svc')) == 1


async def test_cancel_service_reaps_process_and_entry(reg_addr):
    async with open_service_mngr(registry_addr=reg_addr) as mngr:
        pid, _ = await mngr.start_service('svc', eps.sleeper)
        info = await mngr.cancel_service('svc')
        assert info.state == 'stopped'
        assert 'svc' not in mngr
        assert (
            not psutil.pid_exists(pid)
            or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
        )
        assert actor_pids('svc') == []
        # the name can be started again
        await mngr.start_service('svc', eps.sleeper)


async def test_cancel_unknown_name_is_clear_and_harmless(reg_addr):
    async with open_service_mngr(registry_addr=reg_addr) as mngr:
        await mngr.start_service('known', eps.sleeper)
        with pytest.raises(ServiceNotFound, match="'nope'.*running: 'known'"):
            await mngr.cancel_service('nope')
        assert mngr.info('known').state == 'running'


async def test_positional_partial_args_are_an_error(reg_addr):
    async with open_service_mngr(registry_addr=reg_addr) as mngr:
        with pytest.raises(TypeError, match='positional arguments'):
            await mngr.start_service('svc', partial(eps.sleeper, 1))
        assert await mngr.list_services() == []


async def test_non_context_endpoint_is_an_error(reg_addr):
    async with open_service_mngr(registry_addr=reg_addr) as mngr:
        with pytest.raises(TypeError, match='not a tractor context endpoint'):
            await mngr.start_service('svc', eps.ping)
        await mngr.start_service('ok', eps.sleeper)


async def test_name_reused_with_other_endpoint_conflicts(reg_addr):
    async with open_service_mngr(registry_addr=reg_addr) as mngr:
        await mngr.start_service('svc', eps.sleeper)
        with pytest.raises(
            ServiceConflict, match='already runs endpoint services_endpoints:sleeper'
        ):
            await mngr.start_service('svc', eps.other_sleeper)
        assert mngr.info('svc').state == 'running'


@pytest.mark.parametrize(
    'restart',
    [
        {'restart': 'sometimes'},
        {'restart': 'permanent', 'max_restarts': -1},
        {'restart': 'permanent', 'within_s': 0},
        {'restart': 'permanent', 'within_s': float('nan')},
        {'restart': 'permanent', 'backoff_s': -1},
        'forever',
    ],
)
async def test_nonsense_restart_policy_is_an_error(reg_addr, restart):
    async with open_service_mngr(registry_addr=reg_addr) as mngr:
        with pytest.raises(ValueError, match='RestartPolicy'):
            await mngr.start_service('svc', eps.sleeper, restart=restart)
        assert actor_pids('svc') == []


@pytest.mark.parametrize('kw', [{'startup_timeout': 0}, {'shutdown_timeout': -1}])
async def test_nonsense_timeouts_are_an_error(reg_addr, kw):
    async with open_service_mngr(registry_addr=reg_addr) as mngr:
        with pytest.raises(ValueError, match='positive number of seconds'):
            await mngr.start_service('svc', eps.sleeper, **kw)


async def test_unknown_start_actor_kwarg_is_an_error(reg_addr):
    async with open_service_mngr(registry_addr=reg_addr) as mngr:
        with pytest.raises(TypeError, match='unknown start_actor arguments'):
            await mngr.start_service('svc', eps.sleeper, colour='red')


async def test_endpoint_raising_after_start_is_recorded_and_removed(reg_addr):
    async with open_service_mngr(registry_addr=reg_addr) as mngr:
        pid = await mngr.start_service(
            'bad', partial(eps.fail_after_start, msg='kaboom')
        )
        with trio.fail_after(10):
            info = await mngr.wait_for('bad', lambda i: i.state == 'failed')
        assert 'bad' not in mngr
        assert info.last_error == 'ValueError: kaboom'
        assert 'fail_after_start' in info.last_traceback
        await wait_pid_gone(pid)
        # the manager keeps serving
        await mngr.start_service('good', eps.sleeper)
        assert [i.name for i in await mngr.list_services()] == ['good']
        assert [i.name for i in await mngr.list_services(include_ended=True)] == [
            'bad',
            'good',
        ]


async def test_endpoint_raising_before_start_fails_the_start(reg_addr):
    async with open_service_mngr(registry_addr=reg_addr) as mngr:
        with pytest.raises(
            ServiceFailed,
            match="'early'.*failed to start: RuntimeError: cannot start: bad config",
        ):
            await mngr.start_service('early', eps.fail_before_start)
        assert 'early' not in mngr
        assert mngr.info('early').state == 'failed'
        assert actor_pids('early') == []
        await mngr.start_service('good', eps.sleeper)


async def test_startup_timeout_fails_and_leaves_no_process(reg_addr):
    async with open_service_mngr(registry_addr=reg_addr) as mngr:
        with pytest.raises(
            ServiceStartupTimeout, match=r'did not call started\(\) within 1.5 s'
        ):
            await mngr.start_service('slow', eps.never_starts, startup_timeout=1.5)
        assert 'slow' not in mngr
        assert actor_pids('slow') == []
        await mngr.start_service('good', eps.sleeper)
