"""Broken, stalled and churning subscribers across real actors."""

import os
import signal
from functools import partial

import feedbus_endpoints as fe
import trio

from feedbus import open_feed
from tractor_services import open_service_mngr


async def wait_until(pred, timeout=20.0, poll=0.02):
    """Wait (bounded) for a condition another process makes true."""
    with trio.fail_after(timeout):
        while not await pred():
            await trio.sleep(poll)


async def subs_on(prod, topic) -> list[dict]:
    return (await prod.run(fe.bus_report)).get(topic, [])


async def progress(mngr, name, more: int) -> None:
    """``name``'s subscriber reads ``more`` messages beyond now."""
    portal = mngr.portal(name)
    start = await portal.run(fe.received)

    async def moved():
        return await portal.run(fe.received) >= start + more

    await wait_until(moved)


async def test_sigkilled_subscriber_is_removed_others_keep_flowing(reg_addr):
    async with open_service_mngr(registry_addr=reg_addr) as mngr:
        await mngr.start_service('prod', partial(fe.producer, topics=['a'], hz=300))
        prod = mngr.portal('prod')
        pids = {}
        for name, rate in (('s1', None), ('s2', 20), ('s3', None)):
            pids[name] = await mngr.start_service(
                name,
                partial(
                    fe.subscriber,
                    producer_name='prod',
                    topics=['a'],
                    tick_throttle=rate,
                ),
            )

        async def three():
            return len(await subs_on(prod, 'a')) == 3

        await wait_until(three)

        os.kill(pids['s1'], signal.SIGKILL)

        async def two():
            return len(await subs_on(prod, 'a')) == 2

        await wait_until(two)
        await progress(mngr, 's2', 10)
        await progress(mngr, 's3', 100)


async def test_stalled_subscriber_does_not_slow_others_and_is_dropped(reg_addr):
    async with open_service_mngr(registry_addr=reg_addr) as mngr:
        # large quotes fill the stalled peer's socket buffers quickly
        await mngr.start_service(
            'prod', partial(fe.producer, topics=['a'], hz=500, pad=8000)
        )
        prod = mngr.portal('prod')
        pids = {}
        for name in ('stuck', 'ok'):
            pids[name] = await mngr.start_service(
                name,
                partial(  # the stall rule is the TCP path's (a ring reader just lags)
                    fe.subscriber,
                    producer_name='prod',
                    topics=['a'],
                    stall_timeout=1.0,
                    ring=False,
                ),
            )

        async def both():
            return len(await subs_on(prod, 'a')) == 2

        await wait_until(both)

        os.kill(pids['stuck'], signal.SIGSTOP)
        try:
            # the healthy one keeps reading all along
            await progress(mngr, 'ok', 500)

            async def dropped():
                return len(await subs_on(prod, 'a')) == 1

            await wait_until(dropped, timeout=60)
            await progress(mngr, 'ok', 200)
        finally:
            os.kill(pids['stuck'], signal.SIGCONT)


async def test_subscribe_unsubscribe_cycles_during_broadcasts(reg_addr):
    async with open_service_mngr(registry_addr=reg_addr) as mngr:
        await mngr.start_service(
            'prod', partial(fe.producer, topics=['a', 'b'], hz=1000)
        )
        prod = mngr.portal('prod')
        seen_a = []
        seen_b = []
        async with open_feed(prod, ['a', 'b']) as feed, trio.open_nursery() as tn:

            async def record():
                async for q in feed:
                    (seen_a if q.topic == 'a' else seen_b).append(q.seq)

            tn.start_soon(record)
            with trio.fail_after(120):
                for _ in range(200):
                    await feed.unsubscribe(['b'])
                    await feed.subscribe(['b'])
            report = await prod.run(fe.bus_report)
            assert len(report['a']) == 1 and len(report['b']) == 1  # no leaked subs
            tn.cancel_scope.cancel()
        # no duplicates, order kept (b has gaps while unsubscribed)
        assert seen_a == sorted(set(seen_a)) and seen_a
        assert seen_b == sorted(set(seen_b))
        assert seen_a == list(range(seen_a[0], seen_a[-1] + 1))  # a lost nothing

        # whole feeds opened and closed concurrently leave nothing behind
        async def churn():
            for _ in range(10):
                async with open_feed(prod, ['a']):
                    pass

        async with trio.open_nursery() as tn:
            for _ in range(4):
                tn.start_soon(churn)

        async def empty():
            return (await prod.run(fe.bus_report)) == {}

        await wait_until(empty)


async def test_a_sigkilled_producer_ends_its_feeds_at_once(reg_addr):
    from tractor_services import PeerGone, compat

    async with open_service_mngr(registry_addr=reg_addr) as mngr:
        pid = await mngr.start_service(
            'prod', partial(fe.producer, topics=['a'], hz=200)
        )
        # a connection of our own (as another program has): a5 would leave
        # it looking connected, and its receivers waiting, for ever
        async with compat.find_actor('prod', mngr.registry_addr) as portal:
            with trio.fail_after(20):
                try:
                    async with open_feed(portal, ['a']) as feed:
                        await feed.receive()
                        os.kill(pid, signal.SIGKILL)
                        async for _ in feed:
                            pass
                except PeerGone as err:
                    assert f'the feed producer (pid {pid}) exited' in str(err)
                else:
                    raise AssertionError('the feed ended without an error')


async def test_a_stalled_subscriber_is_told_why_and_its_connection_keeps_serving(
    reg_addr,
):
    """Feeds A (1 s stall timeout) and B (a long one) share one connection;
    the subscriber's process is stopped for a few seconds.  A ends with
    SubscriptionDropped('stalled') and readable final counters; B keeps
    its full rate; a new feed on the same portal works."""
    async with open_service_mngr(registry_addr=reg_addr) as mngr:
        # large quotes fill the stopped peer's socket buffers quickly
        await mngr.start_service(
            'prod', partial(fe.producer, topics=['a', 'b'], hz=200, pad=8000)
        )
        prod = mngr.portal('prod')
        pid = await mngr.start_service(
            'sub', partial(fe.two_feeds, producer_name='prod')
        )
        sub = mngr.portal('sub')

        async def report():
            return await sub.run(fe.two_feeds_report)

        async def flowing():
            r = await report()
            return r['a'] > 3 and r['b'] > 20

        await wait_until(flowing)

        os.kill(pid, signal.SIGSTOP)
        try:

            async def a_removed():
                return not (await subs_on(prod, 'a'))

            await wait_until(a_removed, timeout=60)
        finally:
            os.kill(pid, signal.SIGCONT)

        async def a_ended():
            r = await report()
            return r['a_error'] is not None and r['new_feed'] == 3

        await wait_until(a_ended, timeout=60)
        r = await report()
        assert r['a_reason'] == 'stalled', r['a_error']
        assert 'stalled' in r['a_error'] and 'stall_timeout=1 s' in r['a_error']
        assert r['a_stats']['reason'] == 'stalled' and r['a_stats'][
            'removed'
        ].startswith('stalled')
        assert r['a_stats']['delivered'] > 0

        # B, on the same connection, keeps its rate: over a window, it
        # receives what the producer publishes in (a sub-window of) it
        r0 = await report()
        p0 = await prod.run(fe.published, topic='b')

        async def window():
            return await prod.run(fe.published, topic='b') >= p0 + 600

        await wait_until(window, timeout=60)
        p1 = await prod.run(fe.published, topic='b')
        r1 = await report()
        assert r1['b'] - r0['b'] >= 0.95 * (p1 - p0), (r0, r1, p0, p1)
        b_subs = await subs_on(prod, 'b')
        assert len(b_subs) == 1 and b_subs[0]['removed'] is None
