"""Memory stays bounded: a5 keeps an entry in ``actor._contexts`` for every
``Portal.run`` and every cancel request, on both ends, and one stream in
``portal._streams`` per caller-side stream; the adapter drops them.

One feed daemon, a client root in this process: 5,000 RPCs and 2,000
feedbus subscribe/leave cycles on the daemon's producer endpoint, then the
bookkeeping on both ends is back where it started and the daemon's
resident memory grew by less than a leak of 2 KB per call would make it."""

from __future__ import annotations

from multiprocessing import resource_tracker

import trio

import feedbus
from tractor_sampler import open_market_feed
from tractor_sampler.endpoints import feed_info
from tractor_services import compat, open_service_root

# attaching shared memory starts the stdlib's resource tracker, a child that
# lives until we exit: start it now, so the leak check does not count it
resource_tracker.ensure_running()

N_RPCS = 5_000
N_CYCLES = 2_000
#: allowed growth of the daemon's RSS: a 2 KB/call leak over the 7,000
#: calls and cycles would add 14 MB (a5 alone adds ~20 MB)
RSS_BOUND = 6 * 2**20
#: entries that may be in flight when counting (the counting call's own)
ENTRIES_BOUND = 3


async def _counts(portal) -> tuple[dict, dict]:
    far = await portal.run(compat.runtime_counts)
    near = compat.local_runtime_counts()
    return far, {**near, 'streams': len(portal._streams)}


async def _rpcs(portal, n: int) -> None:
    for _ in range(n):
        await portal.run(feed_info)


async def _cycles(portal, n: int) -> None:
    for _ in range(n):
        async with feedbus.open_feed(portal, ['AAA']):
            pass


async def test_rpcs_and_subscribe_cycles_leave_no_bookkeeping_behind(free_addr):
    with trio.fail_after(600):
        async with open_service_root(free_addr, name='mem_root', handle_signals=False):
            async with open_market_feed(
                ['AAA'],
                registry_addr=free_addr,
                config={'tick_rate': 2.0, 'seed': 0},
            ) as feed:
                portal = feed.portal
                # warm up (allocator arenas, caches, imports)
                await _rpcs(portal, 300)
                await _cycles(portal, 100)
                far0, near0 = await _counts(portal)

                await _rpcs(portal, N_RPCS)
                far1, near1 = await _counts(portal)
                await _cycles(portal, N_CYCLES)
                far2, near2 = await _counts(portal)

    for far, near, what in ((far1, near1, 'RPCs'), (far2, near2, 'subscribe cycles')):
        assert far['contexts'] - far0['contexts'] <= ENTRIES_BOUND, (what, far0, far)
        assert near['contexts'] - near0['contexts'] <= ENTRIES_BOUND, (
            what,
            near0,
            near,
        )
        assert near['streams'] - near0['streams'] <= ENTRIES_BOUND, (what, near0, near)
    if far0['rss'] is not None:
        grown = far2['rss'] - far0['rss']
        assert grown < RSS_BOUND, (
            f'the feed daemon grew by {grown / 2**20:.1f} MB over {N_RPCS} RPCs '
            f'and {N_CYCLES} subscribe cycles ({far0["rss"]} -> {far1["rss"]} -> {far2["rss"]})'
        )
