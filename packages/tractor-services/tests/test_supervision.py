"""Supervision: process death, restart policies, ordered shutdown."""

import logging
import os
import signal
from functools import partial

import pytest
import trio

from tractor_services import RestartPolicy, ServiceNotFound, compat, open_service_mngr
from tractor_services.testing import actor_pids, wait_pid_gone

import services_endpoints as eps


async def test_sigkilled_service_is_noticed_and_removed(reg_addr):
    async with open_service_mngr(registry_addr=reg_addr) as mngr:
        pid, _ = await mngr.start_service('victim', eps.sleeper)
        await mngr.start_service('bystander', eps.sleeper)
        os.kill(pid, signal.SIGKILL)
        # noticed promptly: no hang anywhere (bounded generously for a loaded box)
        with trio.fail_after(3):
            info = await mngr.wait_for('victim', lambda i: i.state == 'failed')
        assert (
            info.last_error
            == f"ActorDied: actor 'victim' (pid {pid}) killed by signal 9"
        )
        assert 'victim' not in mngr
        assert mngr.info('bystander').state == 'running'
        # its registry entry is gone too, so find-by-name cannot hand out a corpse
        assert await compat.find_actor_addr('victim', reg_addr) is None


async def test_permanent_service_comes_back_after_sigkill(reg_addr):
    async with open_service_mngr(registry_addr=reg_addr) as mngr:
        pid, _ = await mngr.start_service('perm', eps.sleeper, restart='permanent')
        os.kill(pid, signal.SIGKILL)
        with trio.fail_after(10):
            info = await mngr.wait_for(
                'perm', lambda i: i.restarts == 1 and i.state == 'running'
            )
        assert info.pid not in (None, pid)
        assert actor_pids('perm') == [info.pid]
        assert 'killed by signal 9' in info.last_error
        # and it serves: its portal answers
        assert await mngr.portal('perm').run(eps.ping) == 'pong'


async def test_service_that_keeps_dying_makes_manager_give_up(reg_addr, tmp_path):
    starts = tmp_path / 'starts'
    policy = RestartPolicy(restart='permanent', max_restarts=2, within_s=60)
    async with open_service_mngr(registry_addr=reg_addr) as mngr:
        await mngr.start_service(
            'crashy', partial(eps.dies_soon, counter_path=str(starts)), restart=policy
        )
        with trio.fail_after(20):
            info = await mngr.wait_for('crashy', lambda i: i.state == 'failed')
        assert info.last_error.startswith('GaveUp: ')
        assert 'more than 2 restarts within 60' in info.last_error
        assert 'exited with status 3' in info.last_error
        assert info.restarts == 2
        assert eps.counter(starts) == 3  # the first run and two restarts
        assert 'crashy' not in mngr
        assert actor_pids('crashy') == []
        await mngr.start_service('after', eps.sleeper)


async def test_transient_restarts_on_failure_not_on_return(reg_addr, tmp_path):
    runs = tmp_path / 'runs'
    async with open_service_mngr(registry_addr=reg_addr) as mngr:
        await mngr.start_service(
            'ret',
            partial(eps.returns_soon, counter_path=str(runs)),
            restart='transient',
        )
        with trio.fail_after(10):
            info = await mngr.wait_for('ret', lambda i: i.state == 'stopped')
        assert info.restarts == 0 and eps.counter(runs) == 1

        pid, _ = await mngr.start_service('crash', eps.sleeper, restart='transient')
        os.kill(pid, signal.SIGKILL)
        with trio.fail_after(10):
            info = await mngr.wait_for(
                'crash', lambda i: i.restarts == 1 and i.state == 'running'
            )


async def test_permanent_restarts_even_on_normal_return(reg_addr, tmp_path):
    runs = tmp_path / 'runs'
    policy = RestartPolicy(restart='permanent', max_restarts=1, within_s=60)
    async with open_service_mngr(registry_addr=reg_addr) as mngr:
        await mngr.start_service(
            'ret', partial(eps.returns_soon, counter_path=str(runs)), restart=policy
        )
        with trio.fail_after(10):
            info = await mngr.wait_for('ret', lambda i: i.state == 'failed')
        assert eps.counter(runs) == 2 and info.restarts == 1


async def test_services_stop_in_reverse_start_order(reg_addr, tmp_path):
    log = tmp_path / 'order'
    async with open_service_mngr(registry_addr=reg_addr) as mngr:
        for tag in ('a', 'b', 'c'):
            await mngr.start_service(
                tag, partial(eps.sleeper, log_path=str(log), tag=tag)
            )
    assert log.read_text().split() == ['c', 'b', 'a']


async def test_peer_cancelling_one_service_stops_only_it(reg_addr):
    async with open_service_mngr(registry_addr=reg_addr) as mngr:
        pid, _ = await mngr.start_service('target', eps.sleeper)
        await mngr.start_service('other', eps.sleeper)
        # some other peer (here a fresh connection) cancels the service's actor
        async with compat.find_actor('target', reg_addr) as portal:
            await portal.cancel_actor()
        with trio.fail_after(10):
            await mngr.wait_for('target', lambda i: i.state in ('stopped', 'failed'))
        await wait_pid_gone(pid)
        assert [i.name for i in await mngr.list_services()] == ['other']
        assert await mngr.portal('other').run(eps.ping) == 'pong'
        await mngr.start_service('third', eps.sleeper)


async def test_graceful_stop_times_out_into_hard_kill(reg_addr):
    """A service whose process ignores the cancel request is killed after
    its shutdown timeout, and cancel_service still returns."""
    async with open_service_mngr(registry_addr=reg_addr) as mngr:
        pid, _ = await mngr.start_service('stubborn', eps.sleeper, shutdown_timeout=0.5)
        os.kill(pid, signal.SIGSTOP)  # cannot answer anything now
        with trio.fail_after(10):
            info = await mngr.cancel_service('stubborn')
        assert info.state == 'stopped'
        await wait_pid_gone(pid)


async def test_task_service_started_value_and_clean_cancel(reg_addr):
    stopped = trio.Event()

    async def worker(x, task_status=trio.TASK_STATUS_IGNORED):
        try:
            task_status.started(x * 2)
            await trio.sleep_forever()
        finally:
            stopped.set()

    async with open_service_mngr(registry_addr=reg_addr) as mngr:
        assert await mngr.start_service_task('w', worker, x=21) == 42
        info = mngr.info('w')
        assert info.kind == 'task' and info.state == 'running' and info.pid is None
        with pytest.raises(ServiceNotFound, match='local task'):
            mngr.portal('w')
        info = await mngr.cancel_service('w')  # does not raise
        assert info.state == 'stopped' and stopped.is_set()


async def test_a_task_service_outliving_its_shutdown_timeout_is_named(reg_addr):
    """A task cannot be killed: one that shields itself from its cancel is
    named in an error line once its shutdown timeout is over, and its stop
    ends when the task does (not a silent wait)."""
    release = trio.Event()
    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)
            if 'still runs' in record.getMessage():
                release.set()

    async def stubborn():
        with trio.CancelScope(shield=True), trio.move_on_after(20):
            await release.wait()  # (without the error line: 20 s, then fail)

    logger = logging.getLogger('tractor_services')
    keep = Keep(logging.ERROR)
    logger.addHandler(keep)
    try:
        async with open_service_mngr(registry_addr=reg_addr) as mngr:
            await mngr.start_service_task('stubborn', stubborn, shutdown_timeout=0.2)
            with trio.fail_after(30):
                info = await mngr.cancel_service('stubborn')
    finally:
        logger.removeHandler(keep)
    assert info.state == 'stopped'
    assert [r.getMessage() for r in records if 'stubborn' in r.getMessage()] == [
        "service 'stubborn' (task) still runs 0.2 s after its cancel: waiting on "
        '(a task shielded from cancellation?)'
    ]


async def test_task_service_failure_is_recorded_and_restarted(reg_addr):
    runs = []

    async def flaky():
        runs.append(1)
        await trio.lowlevel.checkpoint()
        if len(runs) < 3:
            raise OSError('disk on fire')
        await trio.sleep_forever()

    async with open_service_mngr(registry_addr=reg_addr) as mngr:
        assert (
            await mngr.start_service_task('flaky', flaky, restart='transient') is None
        )
        with trio.fail_after(5):
            info = await mngr.wait_for('flaky', lambda i: i.restarts == 2)
        assert info.last_error == 'OSError: disk on fire'
        with pytest.raises(TypeError, match='not an async function'):
            await mngr.start_service_task('sync', print)


async def test_ctx_service_on_a_portal_we_did_not_spawn(reg_addr):
    async with open_service_mngr(registry_addr=reg_addr) as mngr:
        portal = await mngr.an.start_actor(
            'host', enable_modules=['services_endpoints']
        )
        try:
            pid, value = await mngr.start_service_ctx(
                'on_host', portal, eps.sleeper, value=7
            )
            assert value == 7
            assert mngr.info('on_host').kind == 'ctx'
            await mngr.cancel_service('on_host')
            # the context is gone but the actor we did not spawn still serves
            assert await portal.run(eps.ping) == 'pong'
        finally:
            await portal.cancel_actor()


async def test_services_outlive_the_thread_that_spawned_them(reg_addr, monkeypatch):
    """trio spawns children from worker threads that retire when idle; a
    child must die with its parent *process*, not with that thread."""
    import threading

    from trio._core import _thread_cache

    # the spawning thread must retire *after* the child installed its guard
    # (as it does in production, 10 s later), so not too soon
    monkeypatch.setattr(_thread_cache, 'IDLE_TIMEOUT', 1.0)
    async with open_service_mngr(registry_addr=reg_addr) as mngr:
        pid, _ = await mngr.start_service('long_lived', eps.sleeper)
        # wait until the worker thread that ran Popen has retired
        with trio.fail_after(10):
            while any(t.name.startswith('Trio thread') for t in threading.enumerate()):
                await trio.sleep(0.05)
        # and give a (wrongly) triggered parent-death handler time to act
        await trio.sleep(1.0)
        assert mngr.info('long_lived').state == 'running'
        assert mngr.info('long_lived').pid == pid
        assert await mngr.portal('long_lived').run(eps.ping) == 'pong'
