"""compat.open_context tells endings apart: a cancel that the far end
provoked (its actor stopped) raises DaemonStopped naming it (a5 with the
old adapter ended the block silently), while the caller's own
cancellation propagates as itself."""

from __future__ import annotations

import pytest
import trio

from tractor_services import DaemonStopped, PeerGone, compat, open_service_mngr


@compat.context
async def hold(ctx) -> None:
    """(An endpoint.)  Started, then holds until cancelled."""
    await ctx.started(None)
    await trio.sleep_forever()


async def test_far_end_stopping_raises_daemon_stopped_naming_it(reg_addr):
    async with open_service_mngr(registry_addr=reg_addr) as mngr:
        sa = await compat.start_actor(
            mngr.an, 'holder', enable_modules=['test_compat_endings']
        )
        try:
            with trio.fail_after(30):
                with pytest.raises(DaemonStopped, match="actor 'holder'") as info:
                    async with compat.open_context(sa.portal, hold) as (ctx, _):
                        # the far end's actor is cancelled (as its daemon stopping does)
                        await mngr.tn.start(_cancel_soon, sa)
                        await trio.sleep_forever()
                    raise AssertionError('the block ended silently')
            assert isinstance(info.value, PeerGone)
        finally:
            await compat.cancel_actor(sa, 5)


async def _cancel_soon(sa, task_status=trio.TASK_STATUS_IGNORED) -> None:
    task_status.started()
    await sa.portal.cancel_actor()


async def test_the_callers_own_cancellation_propagates_as_itself(reg_addr):
    async with open_service_mngr(registry_addr=reg_addr) as mngr:
        sa = await compat.start_actor(
            mngr.an, 'holder2', enable_modules=['test_compat_endings']
        )
        try:
            with trio.fail_after(30):
                with trio.CancelScope() as cs:
                    async with compat.open_context(sa.portal, hold):
                        cs.cancel()
                        await trio.sleep_forever()
                assert cs.cancelled_caught
                # the far end serves on
                async with compat.open_context(sa.portal, hold) as (ctx, _):
                    await ctx.cancel()
        finally:
            await compat.cancel_actor(sa, 5)
