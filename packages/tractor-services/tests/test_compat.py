"""The tractor adapter's work-arounds of a5's gaps."""

import pytest
import trio

from tractor_services import ActorDied, compat, open_service_mngr
from tractor_services._addr import parse_addr, resolve_fn_path

import services_endpoints as eps


async def test_slow_consumer_neither_kills_context_nor_blocks_connection(reg_addr):
    """a5 with backpressure=False kills the context on the first overrun,
    and with backpressure=True blocks the whole connection: the adapter's
    stream does neither, and counts what it drops."""
    async with open_service_mngr(registry_addr=reg_addr) as mngr:
        sa = await compat.start_actor(
            mngr.an, 'producer', enable_modules=['services_endpoints']
        )
        try:
            async with compat.open_context(sa.portal, eps.streamer, count=3000) as (
                ctx,
                _,
            ):
                async with compat.open_stream(ctx, maxlen=100) as stream:
                    got = [await stream.receive()]
                    # while we lag, the same connection still answers RPC at once
                    with trio.fail_after(5):
                        assert await sa.portal.run(eps.ping) == 'pong'
                    async for msg in stream:
                        got.append(msg)
                        await trio.sleep(0.001)  # a slow consumer
                        if msg == 'end':
                            break
                    assert got[-1] == 'end'
                    assert stream.stats.received == 3001
                    assert stream.stats.dropped == 3001 - len(got)
                    assert stream.stats.dropped > 0
                    # order is kept among what was delivered
                    ints = [m for m in got if m != 'end']
                    assert ints == sorted(ints)
                await ctx.cancel()
        finally:
            await compat.cancel_actor(sa, 5)


async def test_context_on_dead_peer_raises_instead_of_hanging(reg_addr):
    import os
    import signal

    async with open_service_mngr(registry_addr=reg_addr) as mngr:
        sa = await compat.start_actor(
            mngr.an, 'doomed', enable_modules=['services_endpoints']
        )
        try:
            with trio.fail_after(10):
                with pytest.raises(ActorDied, match='killed by signal 9'):
                    async with trio.open_nursery() as tn:
                        tn.start_soon(compat.watch_process, sa)
                        async with compat.open_context(sa.portal, eps.sleeper) as (
                            ctx,
                            (pid, _),
                        ):
                            os.kill(pid, signal.SIGKILL)
                            await ctx.result()  # a5 alone would wait here forever
        finally:
            await compat.cancel_actor(sa, 5)
            await compat.unregister_actor(sa.uid, reg_addr)


def test_parse_addr_errors():
    assert parse_addr('10.0.0.1:99') == ('10.0.0.1', 99)
    assert parse_addr(['h', '5']) == ('h', 5)
    with pytest.raises(ValueError, match='host:port'):
        parse_addr('nohost')
    with pytest.raises(ValueError, match='not a number'):
        parse_addr('h:xx')
    with pytest.raises(ValueError, match='out of range'):
        parse_addr('h:70000')


def test_resolve_fn_path_errors():
    assert resolve_fn_path('services_endpoints:sleeper') is eps.sleeper
    with pytest.raises(ValueError, match='package.module:function'):
        resolve_fn_path('services_endpoints.sleeper')
    with pytest.raises(ImportError, match='cannot import'):
        resolve_fn_path('no_such_module_xyz:f')
    with pytest.raises(AttributeError, match='has no'):
        resolve_fn_path('services_endpoints:nope')


async def test_callers_own_unbound_local_error_is_not_masked(reg_addr):
    async with open_service_mngr(registry_addr=reg_addr) as mngr:
        sa = await compat.start_actor(
            mngr.an, 'peer', enable_modules=['services_endpoints']
        )
        try:
            with pytest.raises(UnboundLocalError):
                async with compat.open_context(sa.portal, eps.sleeper):
                    print(never_bound)  # noqa: F821
                    never_bound = 1  # noqa: F841
        finally:
            await compat.cancel_actor(sa, 5)
