'''feedbus across real actors: subscribe, throttle, control, failures.'''
from functools import partial

import feedbus_endpoints as fe
import pytest
import trio

from feedbus import Feed, FeedError, Frame, Quote, maybe_open_feed, open_feed
from tractor_services import compat, open_service_mngr


async def start_producer(mngr, topics=('a', 'b'), hz=200.0, trade_every=5):
    await mngr.start_service('prod', partial(fe.producer, topics=list(topics), hz=hz, trade_every=trade_every))
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
        with pytest.raises(compat.RemoteActorError, match=r"unknown topic\(s\) \['zzz'\]"):
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
            for bad in ({'type': 'explode', 'id': 901}, {'type': 'set_rate', 'rate': 'fast', 'id': 902}, [1, 2, 3]):
                await feed.stream.send(bad)
            with trio.fail_after(10):
                errors = await feed.wait_errors(3)
            texts = [e.error for e in errors]
            assert [e.id for e in errors] == [901, 902, 0]
            assert "malformed control message {'type': 'explode'" in texts[0]
            assert 'rate' in texts[1] and 'malformed control message [1, 2, 3]' in texts[2]
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
