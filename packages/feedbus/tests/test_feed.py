"""feedbus across real actors: subscribe, throttle, control, failures."""

from functools import partial

import feedbus_endpoints as fe
import pytest
import trio

from feedbus import Feed, FeedError, Frame, Quote, maybe_open_feed, open_feed
from tractor_services import compat, open_service_mngr


async def start_producer(mngr, topics=('a', 'b'), hz=200.0, trade_every=5):
    await mngr.start_service(
        'prod',
        partial(fe.producer, topics=list(topics), hz=hz, trade_every=trade_every),
    )
    return mngr.portal('prod')


async def take(feed: Feed, n: int) -> list:
    out = []
    with trio.fail_after(20):
        async for msg in feed:
            out.append(msg)
            if len(out) == n:
                return out
    return out


async def test_subscribe_gets_initial_quotes_then_ordered_seq(reg_addr):
    async with open_service_mngr(registry_addr=reg_addr) as mngr:
        portal = await start_producer(mngr)
        async with open_feed(portal, ['a', 'b']) as feed:
            assert set(feed.first_quotes) == {'a', 'b'}
            msgs = await take(feed, 60)
        assert all(isinstance(m, Quote) for m in msgs)
        for topic in ('a', 'b'):
            seqs = [m.seq for m in msgs if m.topic == topic]
            assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))  # no gap, no dup


async def test_unknown_topic_and_bad_rate_are_clear_errors(reg_addr):
    async with open_service_mngr(registry_addr=reg_addr) as mngr:
        portal = await start_producer(mngr)
        with pytest.raises(
            compat.RemoteActorError, match=r"unknown topic\(s\) \['zzz'\]"
        ):
            async with open_feed(portal, ['a', 'zzz']):
                pass
        with pytest.raises(ValueError, match='tick_throttle'):
            async with open_feed(portal, ['a'], tick_throttle=0):
                pass
        # the producer keeps serving
        async with open_feed(portal, ['a']) as feed:
            await take(feed, 3)


async def test_throttled_feed_delivers_frames_losing_nothing(reg_addr):
    async with open_service_mngr(registry_addr=reg_addr) as mngr:
        portal = await start_producer(mngr, topics=('a',), hz=400, trade_every=7)
        async with open_feed(portal, ['a'], tick_throttle=20) as feed:
            frames = await take(feed, 15)
            stats = await feed.stats()
        assert all(isinstance(f, Frame) for f in frames)
        assert [f.seq for f in frames] == list(range(frames[0].seq, frames[0].seq + 15))
        tfs = [f.topics['a'] for f in frames]
        # consecutive frames cover contiguous quote sequence ranges
        for prev, nxt in zip(tfs, tfs[1:], strict=False):
            assert nxt.first_seq == prev.last_seq + 1
        assert sum(tf.n_quotes for tf in tfs) == tfs[-1].last_seq - tfs[0].first_seq + 1
        assert any(f.has_clearing for f in frames)
        assert stats.conflated > 0 and stats.dropped == 0


async def test_pause_resume_one_message_per_stream(reg_addr):
    async with open_service_mngr(registry_addr=reg_addr) as mngr:
        portal = await start_producer(mngr, topics=('a', 'b', 'c'))
        async with open_feed(portal, ['a', 'b', 'c']) as feed:
            await take(feed, 5)
            before = (await feed.stats()).requests
            await feed.pause()
            after = await feed.stats()
            # one pause message for three topics (plus the stats request)
            assert after.requests == before + 2
            delivered = after.delivered
            paused = await feed.stats()
            assert paused.delivered == delivered  # nothing flows while paused
            await feed.resume()
            with trio.fail_after(20):
                while (await feed.stats()).delivered <= delivered:
                    await feed.receive()  # delivery goes on


async def test_subscribe_unsubscribe_and_rate_change_without_resubscribing(reg_addr):
    async with open_service_mngr(registry_addr=reg_addr) as mngr:
        portal = await start_producer(mngr, topics=('a', 'b'))
        async with open_feed(portal, ['a'], tick_throttle=10) as feed:
            latest = await feed.subscribe(['b'])
            assert set(latest) == {'b'}
            frames = await take(feed, 4)
            assert any('b' in f.topics for f in frames)
            await feed.set_rate(40)
            assert feed.rate == 40
            await feed.unsubscribe(['a'])
            with pytest.raises(FeedError, match='unknown topic'):
                await feed.subscribe(['nope'])
            with pytest.raises(ValueError, match='tick_throttle'):
                await feed.set_rate(-1)
        async with open_feed(portal, ['a']) as unthrottled:
            with pytest.raises(FeedError, match='not throttled'):
                await unthrottled.set_rate(5)


async def test_malformed_control_messages_get_error_replies(reg_addr):
    async with open_service_mngr(registry_addr=reg_addr) as mngr:
        portal = await start_producer(mngr)
        async with open_feed(portal, ['a']) as feed:
            for bad in (
                {'type': 'explode', 'id': 901},
                {'type': 'set_rate', 'rate': 'fast', 'id': 902},
                [1, 2, 3],
            ):
                await feed.stream.send(bad)
            with trio.fail_after(10):
                errors = await feed.wait_errors(3)
            texts = [e.error for e in errors]
            assert [e.id for e in errors] == [901, 902, 0]
            assert "malformed control message {'type': 'explode'" in texts[0]
            assert (
                'rate' in texts[1] and 'malformed control message [1, 2, 3]' in texts[2]
            )
            # the producer keeps serving this subscriber
            await take(feed, 3)
            stats = await feed.stats()
            assert stats.requests == 5 and stats.removed is None


async def test_many_local_readers_share_one_feed(reg_addr):
    async with open_service_mngr(registry_addr=reg_addr) as mngr:
        portal = await start_producer(mngr, topics=('a',))
        seen = {}

        async def reader(i, feed):
            async with feed.open_reader() as rx:
                seen[i] = [(await rx.receive()).seq for _ in range(10)]

        async with open_feed(portal, ['a']) as feed, trio.open_nursery() as tn:
            for i in range(3):
                tn.start_soon(reader, i, feed)
        assert len(seen) == 3 and all(len(v) == 10 for v in seen.values())


async def test_maybe_open_feed_shares_per_key(reg_addr):
    async with open_service_mngr(registry_addr=reg_addr) as mngr:
        portal = await start_producer(mngr)
        async with maybe_open_feed(portal, ['a', 'b']) as f1:
            async with maybe_open_feed(portal, ['b', 'a']) as f2:
                assert f2 is f1
            async with maybe_open_feed(portal, ['a']) as f3:
                assert f3 is not f1
            await take(f1, 2)
        async with maybe_open_feed(portal, ['a', 'b']) as f4:
            assert f4 is not f1  # closed when its last user left, opened afresh


async def test_rc_ui_and_rate_reach_the_producer(reg_addr):
    async with open_service_mngr(registry_addr=reg_addr) as mngr:
        portal = await start_producer(mngr, topics=('a', 'b'))
        async with open_feed(portal, ['a'], allow_remote_ctl_ui=True, tick_throttle=15):
            async with open_feed(portal, ['b']) as plain:
                await take(plain, 1)  # both subscriptions are in place
                report = await portal.run(fe.bus_report)
        assert [(s['rc_ui'], s['rate']) for s in report['a']] == [(True, 15.0)]
        assert [(s['rc_ui'], s['rate']) for s in report['b']] == [(False, None)]


@pytest.mark.parametrize(
    'kwargs, name',
    [
        ({'topics': 5}, 'topics'),
        ({'topics': [['AAA']]}, 'topics'),
        ({'topics': 'a'}, 'topics'),
        ({'topics': ['a'], 'stall_timeout': 'soon'}, 'stall_timeout'),
        ({'topics': ['a'], 'clearing': 5}, 'clearing'),
        ({'topics': ['a'], 'clearing': [5]}, 'clearing'),
        ({'topics': ['a'], 'outbox_size': 0}, 'outbox_size'),
        ({'topics': ['a'], 'batch': 'yes'}, 'batch'),
        ({'topics': ['a'], 'tick_throttle': 'fast'}, 'tick_throttle'),
    ],
)
async def test_bad_arguments_are_refused_before_anything_starts(reg_addr, kwargs, name):
    from feedbus.endpoints import open_feed_stream

    async with open_service_mngr(registry_addr=reg_addr) as mngr:
        portal = await start_producer(mngr)
        # the endpoint refuses them before started(): the block never runs
        entered = False
        with (
            trio.fail_after(30),
            pytest.raises(compat.RemoteActorError, match=f'{name}=') as err,
        ):
            async with compat.open_context(portal, open_feed_stream, **kwargs):
                entered = True
        assert not entered
        assert compat.remote_error_type(err.value) == 'ValueError'
        # open_feed refuses them here, before it sends anything
        topics = kwargs.pop('topics')
        with trio.fail_after(30), pytest.raises(ValueError, match=f'{name}='):
            async with open_feed(portal, topics, **kwargs):
                pass
        # the producer serves on
        async with open_feed(portal, ['a']) as feed:
            await take(feed, 2)
            assert (await portal.run(fe.bus_report)).keys() == {'a'}


async def test_clearing_empty_means_no_clearing_ticks(reg_addr):
    async with open_service_mngr(registry_addr=reg_addr) as mngr:
        portal = await start_producer(mngr, topics=('a',), hz=200, trade_every=2)
        async with open_feed(portal, ['a'], tick_throttle=20, clearing=[]) as feed:
            frames = await take(feed, 6)
        assert any('trade' in f.topics['a'].ticks_by_type for f in frames)
        assert not any(f.has_clearing for f in frames)


async def test_a_subscription_the_producer_ends_is_an_error_with_final_counters(
    reg_addr,
):
    from feedbus import SubscriptionDropped

    async with open_service_mngr(registry_addr=reg_addr) as mngr:
        portal = await start_producer(mngr, topics=('a',))
        # a reader raises once it reaches the end
        with pytest.raises(SubscriptionDropped) as err:
            async with open_feed(portal, ['a']) as feed:
                await take(feed, 2)
                assert (
                    await portal.run(fe.end_subs, topic='a', why='maintenance at noon')
                    == 1
                )
                with trio.fail_after(20):
                    async for _ in feed:
                        pass
        assert err.value.reason == 'ended' and 'maintenance at noon' in str(err.value)
        stats = await feed.stats()  # the final counters, no request
        assert stats.removed == 'maintenance at noon' and stats.reason == 'ended'
        assert stats == err.value.stats and stats.delivered >= 2
        with pytest.raises(SubscriptionDropped):
            await feed.pause()

        # a block that does not read raises it at its exit
        with pytest.raises(SubscriptionDropped, match='closing time'):
            async with open_feed(portal, ['a']) as feed:
                await take(feed, 1)
                await portal.run(fe.end_subs, topic='a', why='closing time')
                with trio.fail_after(20):
                    while feed.dropped is None:
                        await trio.sleep(0.01)


async def test_nothing_arrives_after_pause_returns(reg_addr):
    async with open_service_mngr(registry_addr=reg_addr) as mngr:
        # churn only: the throttler holds each frame for a full period
        portal = await start_producer(mngr, topics=('a',), hz=200, trade_every=0)
        async with open_feed(portal, ['a'], tick_throttle=2) as feed:
            await take(feed, 1)
            await feed.pause()
            received = feed.received
            await trio.sleep(2.0)  # the window: four periods, in which nothing may come
            assert feed.received == received
            await feed.resume()
            await take(feed, 1)
