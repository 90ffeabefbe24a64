"""The feed daemon and open_market_feed(), across real actors."""

import numpy as np
import pytest
import trio
import trio.testing

from feedbus import Quote
from tractor_sampler import (
    Backfill,
    FeedStatus,
    feedd_name,
    maybe_open_samplerd,
    open_market_feed,
    open_sample_stream,
)
from tractor_sampler.endpoints import sampler_info
from tractor_services import ServiceError, ServiceFailed, open_service_root
from tractor_services.testing import actor_pids

# small buffers and history keep the tests quick
BUFS = {1.0: (256, 30), 60.0: (64, 10)}
FAST = {'tick_rate': 100, 'trade_prob': 0.5}


async def wait_until(pred, timeout=20, poll=0.02):
    with trio.fail_after(timeout):
        while not pred():
            await trio.sleep(poll)


async def next_status(reader, timeout=20):
    with trio.fail_after(timeout):
        return await reader.receive()


async def test_open_feed_attaches_backfilled_buffers_read_only_and_streams(other_addr):
    async with open_service_root(other_addr) as mngr:
        async with open_market_feed(['AAA', 'BBB'], config=FAST, buffers=BUFS) as feed:
            assert {n: s.state for n, s in feed.first_status.items()} == {
                'AAA': 'up',
                'BBB': 'up',
            }
            for topic in ('AAA', 'BBB'):
                for p, (_, hist) in BUFS.items():
                    shm = feed.buffer(topic, p)
                    assert shm.readonly
                    rows = shm.array
                    # the history, then the open bar on the period's boundary
                    assert len(rows) >= hist + 1
                    assert np.allclose(np.diff(rows['time']), p)
                    assert list(rows['index']) == list(range(len(rows)))
                    assert rows['time'][-1] % p == 0
                    with pytest.raises(PermissionError):
                        shm.push(rows[-1:])
            with pytest.raises(KeyError, match='no topic'):
                feed.buffer('CCC')
            with pytest.raises(KeyError, match='no 5 s buffer'):
                feed.buffer('AAA', 5)

            # quotes of both topics, numbered per topic
            seqs: dict[str, list[int]] = {'AAA': [], 'BBB': []}
            with trio.fail_after(20):
                async for q in feed:
                    assert isinstance(q, Quote)
                    seqs[q.topic].append(q.seq)
                    if min(len(s) for s in seqs.values()) >= 20:
                        break
            for s in seqs.values():
                assert s == list(range(s[0], s[0] + len(s)))

            # samplerd steps the 1 s buffer, the daemon folds trades into it
            shm = feed.buffer('AAA', 1.0)
            n0 = len(shm)
            await wait_until(lambda: len(shm) >= n0 + 2)
            await wait_until(lambda: shm.array['volume'][-1] > 0)
            last = shm.array[-1]
            assert last['low'] <= min(last['open'], last['close'])
            assert last['high'] >= max(last['open'], last['close'])

            info = await feed.info()
            t = info.topics['AAA']
            assert info.backend == 'sim' and t.state == 'up'
            assert t.quotes >= 20 and t.trades > 0
            # 30 bars fetched, plus a flat one per boundary that passed while
            # they were fetched (_fill_to: history meets the open bar)
            assert 30 <= t.buffers[1.0].history <= 35
            [sub] = t.subscribers
            assert sub.rate is None and sub.delivered >= 20 and sub.dropped == 0

        names = [s.name for s in await mngr.list_services()]
        assert names == ['samplerd', feedd_name('sim')]
        assert len(actor_pids(feedd_name('sim'))) == 1


async def test_backfill_events_reach_step_subscribers(other_addr):
    async with open_service_root(other_addr):
        async with (
            open_sample_stream(1.0) as steps,
            open_market_feed(['AAA'], buffers=BUFS) as feed,
        ):
            seen = set()
            with trio.fail_after(20):
                async for msg in steps:
                    if isinstance(msg, Backfill) and msg.topic == 'AAA':
                        seen.add(msg.timeframe)
                        if seen == set(BUFS):
                            break
            rows = feed.buffer('AAA', 60.0).array
            assert rows['index'][0] == 0 and len(rows) >= 11


async def test_clients_share_one_daemon_and_one_set_of_buffers(other_addr):
    async with open_service_root(other_addr):
        async with (
            open_market_feed(['AAA'], buffers=BUFS) as a,
            open_market_feed(['AAA'], tick_throttle=10) as b,
        ):
            assert a.buffer('AAA').token == b.buffer('AAA').token
            # the second client's settings do not restart the daemon
            assert len(actor_pids(feedd_name('sim'))) == 1
            with trio.fail_after(20):
                frame = await b.quotes.receive()
            assert 'AAA' in frame.topics
            info = await a.info()
            assert sorted(s.rate or 0 for s in info.topics['AAA'].subscribers) == [
                0,
                10.0,
            ]
        async with maybe_open_samplerd() as portal:
            i = await portal.run(sampler_info)
        # the daemon keeps its topics (and their registrations) after clients leave
        assert i['buffers'] == {1.0: 1, 60.0: 1}


async def test_unknown_backend_is_a_clear_error(other_addr):
    async with open_service_root(other_addr) as mngr:
        with pytest.raises(
            ServiceFailed, match=r"no backend named 'nope' \(installed: replay, sim\)"
        ):
            async with open_market_feed(['AAA'], backend='nope'):
                pass
        assert feedd_name('nope') not in mngr


async def test_bad_buffers_are_refused_naming_the_buffer_before_anything_starts(
    other_addr,
):
    bad = {1.0: 256, 60.0: {'rows': 64, 'from': 5.0}}
    # no root at the address: refused before a client root boots or asks
    with pytest.raises(ValueError, match=r'buffers\[60.0\]: from=5 names no buffer'):
        async with open_market_feed(['AAA'], buffers=bad, registry_addr=other_addr):
            pass
    async with open_service_root(other_addr) as mngr:
        with pytest.raises(ValueError, match=r'buffers\[1.0\]: rows=2 must be an int'):
            async with open_market_feed(['AAA'], buffers={1.0: 2}):
                pass
        # neither samplerd nor a feed daemon was spawned for it
        assert [s.name for s in await mngr.list_services()] == []


def test_buffers_travel_in_their_checked_dict_form():
    from tractor_sampler._feed import buffers_msg
    from tractor_sampler._feedd import check_buffers

    spec = {1: (100, 10), 3: {'rows': 50, 'from': 1, 'stamp': 'close'}}
    msg = buffers_msg(spec)
    assert msg == {
        '1.0': {'rows': 100, 'history': 10},
        '3.0': {'rows': 50, 'history': 0, 'from': 1.0, 'stamp': 'close'},
    }
    # the daemon's check gives back the same specs, options and all
    assert check_buffers(msg) == check_buffers(spec)
    assert buffers_msg(check_buffers(spec)) == msg


async def test_unknown_symbol_is_refused_and_the_daemon_serves_on(other_addr):
    async with open_service_root(other_addr):
        kw = {'backend': 'picky', 'plugins': ['flaky_backends'], 'buffers': BUFS}
        with pytest.raises(ValueError, match="refused symbol 'Z'.*try A or B"):
            async with open_market_feed(['Z'], **kw):
                pass
        async with open_market_feed(['A'], **kw) as feed:
            assert feed.first_status['A'].state == 'up'
            with trio.fail_after(20):
                await feed.quotes.receive()


async def test_a_refused_config_starts_nothing_and_does_not_stick(other_addr):
    async with open_service_root(other_addr):
        with pytest.raises(
            ValueError,
            match="refused to stream 'AAA' with config {'tick_rate': 0}.*tick_rate must be",
        ):
            async with open_market_feed(['AAA'], config={'tick_rate': 0}, buffers=BUFS):
                pass
        # the daemon serves on, and the next client's (default) config is used
        async with open_market_feed(['AAA']) as feed:
            info = await feed.info()
            assert info.topics['AAA'].config == {}
            # a different config for a running topic is refused; none shares it
            with pytest.raises(
                ValueError, match="already runs with config {}, not {'seed': 3}"
            ):
                async with open_market_feed(['AAA'], config={'seed': 3}):
                    pass
            async with open_market_feed(['AAA'], config={}) as again:
                assert again.buffer('AAA').token == feed.buffer('AAA').token


async def test_a_failing_stream_is_reported_and_restarted_others_untouched(other_addr):
    policy = {'restart': 'transient', 'max_restarts': 2, 'within_s': 60.0}
    async with open_service_root(other_addr):
        async with (
            open_market_feed(['ok'], buffers=BUFS, config=FAST) as healthy,
            open_market_feed(
                ['fail1', 'fine'],
                backend='flaky',
                plugins=['flaky_backends'],
                buffers=BUFS,
                config={'tick_rate': 50, 'fail_after': 10},
                restart=policy,
            ) as flaky,
            flaky.status.open_reader() as reports,
        ):
            got = []
            while not (got and got[-1].state == 'failed'):
                st = await next_status(reports)
                assert isinstance(st, FeedStatus)
                if st.topic == 'fail1':
                    got.append(st)
            assert [s.state for s in got] == [
                'restarting',
                'up',
                'restarting',
                'up',
                'failed',
            ]
            assert 'BackendBroke: the venue hung up after 10 quotes' in got[0].error
            assert 'gave up after 2 restarts' in got[-1].error
            assert [s.restarts for s in got] == [1, 1, 2, 2, 2]

            # the other topic of the same backend, and the other backend, stream on
            info = await flaky.info()
            assert info.topics['fine'].state == 'up'
            assert 'fail1' not in info.topics  # torn down; a new client restarts it
            for feed, topic in ((flaky, 'fine'), (healthy, 'ok')):
                with trio.fail_after(20):
                    async with feed.quotes.open_reader() as r:
                        q = await r.receive()
                        while q.topic != topic:
                            q = await r.receive()
            assert (await healthy.info()).topics['ok'].restarts == 0


async def test_open_feed_without_a_service_root_says_how_to_start_one(reg_addr):
    with pytest.raises(ServiceError, match='samplerd'):
        async with open_market_feed(['AAA'], registry_addr=reg_addr):
            pass


def test_topics_are_checked():
    from tractor_sampler._feedd import check_buffers, check_topics

    with pytest.raises(TypeError, match='list of symbol names'):
        check_topics('AAA')
    with pytest.raises(ValueError, match='duplicate'):
        check_topics(['A', 'A'])
    with pytest.raises(ValueError, match='no topics'):
        check_topics([])
    with pytest.raises(ValueError, match=r'history=99 must be'):
        check_buffers({1: (100, 99)})
    assert check_buffers({1: 100}) == {1.0: (100, 0)}


async def test_a_killed_feed_daemon_ends_its_feeds_and_is_restarted(other_addr):
    import os
    import signal

    from tractor_services import PeerGone

    async with open_service_root(other_addr) as mngr:
        with pytest.raises(PeerGone, match='the feed daemon feedd.sim'):
            async with open_market_feed(['AAA'], buffers=BUFS) as feed:
                await feed.quotes.receive()
                os.kill((await feed.info()).pid, signal.SIGKILL)
                with trio.fail_after(10):
                    async for _ in feed:
                        pass
        # the root's manager restarts it (transient); a new feed works
        with trio.fail_after(20):
            info = await mngr.wait_for(
                feedd_name('sim'),
                lambda i: i.state == 'running' and i.restarts == 1,
            )
        assert 'killed by signal 9' in info.last_error
        async with open_market_feed(['AAA']) as feed:
            with trio.fail_after(20):
                await feed.quotes.receive()


def assert_contiguous(rows, p):
    """index +1 per row, times one period apart and on the boundaries."""
    assert list(np.diff(rows['index'])) == [1] * (len(rows) - 1)
    assert np.allclose(np.diff(rows['time']), p)
    assert np.allclose(np.round(rows['time'] / p) * p, rows['time'])


async def test_samplerd_killed_comes_back_and_topics_return_up_with_contiguous_bars(
    other_addr,
):
    import os
    import signal

    async with open_service_root(other_addr) as mngr:
        async with (
            open_market_feed(['AAA'], config=FAST, buffers=BUFS) as feed,
            feed.status.open_reader() as reports,
        ):
            feedd_pid = (await feed.info()).pid
            pid = mngr.info('samplerd').pid
            os.kill(pid, signal.SIGKILL)
            st = await next_status(reports)
            while st.state != 'restarting':
                st = await next_status(reports)
            assert f'samplerd (pid {pid}) went away' in st.error
            # the root's manager restarts samplerd by itself; the feed daemon
            # registers the buffers with it again
            while st.state != 'up':
                st = await next_status(reports)
            back = mngr.info('samplerd')
            assert back.state == 'running' and back.pid != pid and back.restarts == 1
            # and samplerd steps them again, on from where they were
            shm = feed.buffer('AAA', 1.0)
            n0 = len(shm)
            await wait_until(lambda: len(shm) >= n0 + 2)
            for p in BUFS:
                assert_contiguous(feed.buffer('AAA', p).array, p)
            info = await feed.info()
            assert info.pid == feedd_pid and info.topics['AAA'].sampler_restarts == 1
            assert info.topics['AAA'].state == 'up'
            # the feed daemon was not restarted
            d = mngr.info(feedd_name('sim'))
            assert d.state == 'running' and d.restarts == 0 and d.last_error is None


async def test_samplerd_stopped_gracefully_topics_report_failed_and_feedd_does_not_crash(
    other_addr,
):
    async with open_service_root(other_addr) as mngr:
        async with (
            open_market_feed(['AAA'], buffers=BUFS) as feed,
            feed.status.open_reader() as reports,
        ):
            assert mngr.info(feedd_name('sim')).requires == ('samplerd',)
            await mngr.cancel_service('samplerd')
            st = await next_status(reports)
            while st.state != 'failed':
                st = await next_status(reports)
            assert (
                'samplerd (pid' in st.error and 'nothing steps the buffers' in st.error
            )
            assert 'will not restart' in st.error
            # the feed daemon serves on: not crashed, not restarted
            d = mngr.info(feedd_name('sim'))
            assert d.state == 'running' and d.restarts == 0 and d.last_error is None
            assert (await feed.info()).topics == {}
        # the next client that asks starts samplerd and the topic afresh
        async with open_market_feed(['AAA'], buffers=BUFS) as feed:
            assert feed.first_status['AAA'].state == 'up'
        assert mngr.info(feedd_name('sim')).restarts == 0


async def test_root_sigterm_stops_the_feed_daemon_before_samplerd_whatever_the_start_order(
    other_addr,
):
    import os
    import signal

    async with open_service_root(other_addr) as mngr:
        async with open_market_feed(['AAA'], buffers=BUFS):
            pass
        # samplerd stops and is started again lazily: now it started last
        await mngr.cancel_service('samplerd')
        async with open_market_feed(['AAA'], buffers=BUFS) as feed:
            assert feed.first_status['AAA'].state == 'up'
        assert [s.name for s in await mngr.list_services()] == [
            feedd_name('sim'),
            'samplerd',
        ]
        mngr._history.clear()
        os.kill(
            os.getpid(), signal.SIGTERM
        )  # the root daemon's own handler tears it down
        with trio.fail_after(30):
            await trio.sleep_forever()
    ended = await mngr.list_services(include_ended=True)
    assert [(i.name, i.state) for i in ended] == [
        (feedd_name('sim'), 'stopped'),
        ('samplerd', 'stopped'),
    ]
    assert all(i.last_error is None and i.restarts == 0 for i in ended)


async def test_a_request_during_the_daemons_startup_waits_for_it():
    from tractor_sampler import _feedd

    got = []

    async def client():
        got.append(await _feedd.wait_feed_daemon(timeout=5))

    daemon = object()
    async with trio.open_nursery() as tn:
        tn.start_soon(client)
        await trio.testing.wait_all_tasks_blocked()
        assert got == []  # registered by name, not serving yet: it waits
        _feedd._holder.daemon = daemon  # type: ignore[assignment]
        _feedd._holder.ready.set()
    try:
        assert got == [daemon]
    finally:
        _feedd._holder.daemon = None
        _feedd._holder.ready = trio.Event()


def test_history_that_ends_early_is_continued_flat_to_the_open_bar():
    import numpy as np

    from tractor_sampler import DEFAULT_DTYPE
    from tractor_sampler._feedd import _fill_to

    bars = np.zeros(3, dtype=DEFAULT_DTYPE)
    bars['time'] = [100.0, 101.0, 102.0]
    bars['close'] = [1.0, 2.0, 3.0]
    # fetching took a while: the open bar is now at 106, history ended at 102
    out = _fill_to(bars, 106.0, 1.0)
    assert list(out['time']) == [100.0, 101.0, 102.0, 103.0, 104.0, 105.0]
    assert list(out['close'][3:]) == [3.0] * 3 and list(out['open'][3:]) == [3.0] * 3
    assert list(out['volume'][3:]) == [0.0] * 3
    assert _fill_to(bars, 103.0, 1.0) is bars  # meets it already


def test_samplerd_loss_is_recognised_inside_a5s_error_groups():
    import tractor

    from tractor_sampler._feedd import SamplerGone, samplerd_lost
    from tractor_services import PeerGone

    gone = SamplerGone('the step stream from samplerd ended')
    cc = tractor.ContextCancelled('register_with_sampler was remotely cancelled')
    # what a5 raises when samplerd stops gracefully under a topic
    assert samplerd_lost(trio.MultiError([cc, gone])) is cc
    peer = PeerGone('samplerd (pid 1) exited')
    assert samplerd_lost(trio.MultiError([gone, peer])) is peer
    assert samplerd_lost(gone) is gone
    # anything else is a real error: not taken for samplerd's absence
    assert samplerd_lost(trio.MultiError([cc, ValueError('bug')])) is None
    assert samplerd_lost(KeyError('x')) is None


def test_missed_bars_are_filled_on_the_boundaries_up_to_the_open_bar():
    from tractor_sampler import DEFAULT_DTYPE, open_shm_array
    from tractor_sampler._feedd import fill_missed_bars

    with open_shm_array(size=16) as shm:
        row = np.zeros(1, dtype=DEFAULT_DTYPE)
        row['index'], row['time'] = 7, 120.0
        row['open'] = row['high'] = row['low'] = row['close'] = 5.0
        row['volume'] = 3.0
        shm.push(row)
        # samplerd was away from 121 to 124.5: rows for 121..124
        assert fill_missed_bars(shm, 1.0, 124.5) == 4
        rows = shm.array
        assert list(rows['index']) == [7, 8, 9, 10, 11]
        assert list(rows['time']) == [120.0, 121.0, 122.0, 123.0, 124.0]
        assert (
            list(rows['close'][1:]) == [5.0] * 4
            and list(rows['volume'][1:]) == [0.0] * 4
        )
        assert fill_missed_bars(shm, 1.0, 124.9) == 0  # up to date
        # never more rows than there is room for
        room = shm.size - shm.last
        assert fill_missed_bars(shm, 1.0, 1000.0) == room > 0 and shm.last == shm.size


async def test_a_broken_plugin_does_not_stop_the_sim_feed(other_addr):
    async with open_service_root(other_addr):
        async with open_market_feed(
            ['AAA'], config=FAST, buffers=BUFS, plugins=['raising_plugin']
        ) as feed:
            assert feed.first_status['AAA'].state == 'up'
            with trio.fail_after(20):
                async for q in feed:
                    assert q.topic == 'AAA'
                    break


async def test_history_breaking_the_contract_refuses_the_topic_naming_it(
    other_addr,
):
    # (more in test_backend_output.py: the daemon serves its other topics on)
    async with open_service_root(other_addr):
        with pytest.raises(ValueError, match=r"backend 'matrix': history\('AAA', 1, "):
            async with open_market_feed(
                ['AAA'],
                backend='matrix',
                config=FAST,
                buffers=BUFS,
                plugins=['matrix_history'],
            ):
                pass
