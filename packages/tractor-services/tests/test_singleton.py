"""One ServiceMngr per actor: nested, other tasks, reopen, errors."""

import pytest
import trio

from tractor_services import NoServiceMngr, compat, get_service_mngr, open_service_mngr


async def test_get_before_open_raises_clear_error():
    with pytest.raises(NoServiceMngr, match='open_service_mngr'):
        get_service_mngr()


async def test_standalone_boots_root_actor_and_tears_it_down(reg_addr):
    assert compat.current_actor() is None
    async with open_service_mngr(registry_addr=reg_addr) as mngr:
        actor = compat.current_actor()
        assert actor is not None and actor.is_arbiter
        assert get_service_mngr() is mngr
    assert compat.current_actor() is None
    with pytest.raises(NoServiceMngr):
        get_service_mngr()


async def test_nested_same_task_yields_same_instance(reg_addr):
    async with open_service_mngr(registry_addr=reg_addr) as outer:
        async with open_service_mngr() as inner:
            assert inner is outer
        # leaving the nested entry does not close it
        assert get_service_mngr() is outer


async def test_other_task_gets_same_instance(reg_addr):
    seen = []

    async def other():
        async with open_service_mngr() as m:
            seen.append(m)

    async with open_service_mngr(registry_addr=reg_addr) as mngr:
        async with trio.open_nursery() as tn:
            tn.start_soon(other)
            tn.start_soon(other)
    assert seen == [mngr, mngr]


async def test_concurrent_first_opens_make_one_instance(reg_addr):
    """Two tasks entering at once inside a runtime get one manager."""
    seen = []
    release = trio.Event()

    async def opener():
        async with open_service_mngr() as m:
            seen.append(m)
            await release.wait()

    async with compat.open_root_actor(reg_addr, 'root'):
        async with trio.open_nursery() as tn:
            tn.start_soon(opener)
            tn.start_soon(opener)
            with trio.fail_after(10):
                while len(seen) < 2:
                    await trio.sleep(0.01)
            release.set()
    assert seen[0] is seen[1]


async def test_reopen_after_exit_gives_fresh_instance(reg_addr):
    async with open_service_mngr(registry_addr=reg_addr) as first:
        pass
    async with open_service_mngr(registry_addr=reg_addr) as second:
        assert second is not first
        assert get_service_mngr() is second


async def test_inside_running_runtime_uses_it(reg_addr):
    async with compat.open_root_actor(reg_addr, 'myroot') as actor:
        async with open_service_mngr() as mngr:
            assert compat.current_actor() is actor
            assert mngr.registry_addr == reg_addr
        # the runtime outlives the manager
        assert compat.current_actor() is actor
