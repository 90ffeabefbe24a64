"""Topics start and stop on demand: a topic lingers after its last client
leaves, then stops and gives its slots back; a client coming back within
the linger keeps it; ``stop_topic`` ends one topic's feeds with the reason;
a topic without quotes is ``stale``, then ``up`` again."""

import pytest
import trio

from tractor_sampler import (
    FeedStatus,
    maybe_open_feedd,
    open_market_feed,
    stop_topic,
)
from tractor_sampler._introspect import query_feed
from tractor_services import open_service_root

BUFS = {1.0: (256, 30), 60.0: (64, 10)}
FAST = {'tick_rate': 100, 'trade_prob': 0.5}


async def info_when(portal, pred, timeout=30, poll=0.05):
    """The feed daemon's info once ``pred`` holds for it."""
    with trio.fail_after(timeout):
        while True:
            info = await query_feed(portal)
            if pred(info):
                return info
            await trio.sleep(poll)


async def status_when(reader, pred, timeout=30):
    with trio.fail_after(timeout):
        while True:
            st = await reader.receive()
            if isinstance(st, FeedStatus) and pred(st):
                return st


async def test_last_client_leaving_stops_the_topic_after_its_linger_and_frees_its_slots(
    other_addr,
):
    async with (
        open_service_root(other_addr),
        maybe_open_feedd(buffers=BUFS, linger=0.5) as portal,
    ):
        async with open_market_feed(['AAA'], config=FAST) as feed:
            assert feed.first_status['AAA'].state == 'up'
            held = await query_feed(portal)
            assert held.pool['used'] == len(BUFS)
        # its last (only) client left: gone after the linger, slots free
        # (given back as its teardown ends, just after it leaves the list)
        await info_when(portal, lambda i: 'AAA' not in i.topics and not i.pool['used'])
        # a new client starts it afresh
        async with open_market_feed(['AAA'], config=FAST) as again:
            assert again.first_status['AAA'].state == 'up'
            assert (await query_feed(portal)).pool['used'] == len(BUFS)


async def test_a_client_back_within_the_linger_keeps_the_topic_and_its_buffers(
    other_addr,
):
    linger = 2.0
    async with (
        open_service_root(other_addr),
        maybe_open_feedd(buffers=BUFS, linger=linger) as portal,
    ):
        async with open_market_feed(['AAA'], config=FAST) as feed:
            token = feed.buffer('AAA').token
            started_at = (await query_feed(portal)).topics['AAA'].started_at
        async with open_market_feed(['AAA'], config=FAST) as back:
            assert back.buffer('AAA').token == token
            # well past the first client's linger (samplerd stepped the
            # 1 s buffer more than that many times): still the same topic
            shm = back.buffer('AAA')
            n0 = len(shm)
            with trio.fail_after(30):
                while len(shm) < n0 + linger + 2:
                    await trio.sleep(0.05)
            info = await query_feed(portal)
            assert info.topics['AAA'].state == 'up'
            assert info.topics['AAA'].started_at == started_at
            assert info.topics['AAA'].buffers[1.0].token == token


async def test_a_feedbus_only_subscriber_keeps_the_topic_past_the_linger_and_its_leaving_stops_it(
    other_addr,
):
    """A client reading the quote stream through ``feedbus.open_feed`` on
    the feed daemon alone (no feed of its own) is one of the topic's
    clients: the topic runs past the linger while it reads, and stops a
    linger after it leaves."""
    import feedbus

    linger = 1.0
    subscribed, leave = trio.Event(), trio.Event()
    got: list[int] = []

    async def bus_only(portal) -> None:
        async with feedbus.open_feed(portal, ['AAA']) as quotes:
            subscribed.set()
            async with trio.open_nursery() as n:

                async def read() -> None:
                    async for q in quotes:
                        if getattr(q, 'topic', None) == 'AAA':
                            got.append(q.seq)

                n.start_soon(read)
                await leave.wait()
                n.cancel_scope.cancel()

    async with (
        open_service_root(other_addr),
        maybe_open_feedd(buffers=BUFS, linger=linger) as portal,
        trio.open_nursery() as tn,
    ):
        async with open_market_feed(['AAA'], config=FAST):
            started_at = (await query_feed(portal)).topics['AAA'].started_at
            tn.start_soon(bus_only, portal)
            with trio.fail_after(30):
                await subscribed.wait()
        # the feed left; the bus subscriber reads on, well past the
        # linger (samplerd stepped the buffers more than that many s)
        s0 = sum((await query_feed(portal)).steps.values())
        info = await info_when(
            portal,
            lambda i: 'AAA' not in i.topics or sum(i.steps.values()) >= s0 + linger + 3,
        )
        assert 'AAA' in info.topics, 'the topic stopped under its bus subscriber'
        assert info.topics['AAA'].state == 'up'
        assert info.topics['AAA'].started_at == started_at
        n0 = len(got)
        with trio.fail_after(30):
            while len(got) == n0:  # quotes still coming
                await trio.sleep(0.05)
        leave.set()
        # it left: the topic stops after the linger, its slots free
        await info_when(portal, lambda i: 'AAA' not in i.topics and not i.pool['used'])


async def test_stop_topic_ends_its_clients_feeds_with_the_reason_others_untouched(
    other_addr,
):
    async with open_service_root(other_addr) as _:
        async with (
            open_market_feed(['AAA'], buffers=BUFS, config=FAST) as a,
            open_market_feed(['BBB'], buffers=BUFS, config=FAST) as b,
            a.status.open_reader() as reports,
        ):
            st = await stop_topic('AAA', registry_addr=other_addr, reason='maintenance')
            assert (st.topic, st.state, st.error) == ('AAA', 'ended', 'maintenance')
            got = await status_when(reports, lambda s: s.topic == 'AAA')
            assert (got.state, got.error) == ('ended', 'maintenance')
            # its quote iteration ends (after what it held), no hang
            with trio.fail_after(30):
                async for _q in a:
                    pass
            # the other topic streams on
            with trio.fail_after(30):
                async with b.quotes.open_reader() as r:
                    q = await r.receive()
            assert q.topic == 'BBB'
            info = await b.info()
            assert 'AAA' not in info.topics and info.topics['BBB'].state == 'up'
            assert info.pool['used'] == len(BUFS)  # AAA's slots given back
            with pytest.raises(
                ValueError, match="topic 'AAA' does not run in feedd.sim"
            ):
                await stop_topic('AAA', registry_addr=other_addr)
        with pytest.raises(ValueError, match='no feed daemon feedd.nope runs'):
            await stop_topic('AAA', 'nope', registry_addr=other_addr)


async def test_a_topic_without_quotes_is_stale_then_up_again(other_addr):
    async with open_service_root(other_addr):
        async with (
            open_market_feed(
                ['AAA'],
                backend='pausing',
                plugins=['pausing_backends'],
                buffers=BUFS,
                config={'tick_rate': 50, 'pause_after': 20, 'pause_s': 4.0},
                stale_after=1.0,
            ) as feed,
            feed.status.open_reader() as reports,
        ):
            stale = await status_when(reports, lambda s: s.state == 'stale')
            assert 'no quote for' in stale.error and 'stale_after=1 s' in stale.error
            assert (await feed.info()).topics['AAA'].state == 'stale'
            back = await status_when(reports, lambda s: s.state != 'stale')
            assert back.state == 'up' and back.error is None
            with trio.fail_after(30):
                async with feed.quotes.open_reader() as r:
                    assert (await r.receive()).topic == 'AAA'


async def test_bad_linger_and_stale_after_are_refused_in_one_line():
    with pytest.raises(
        ValueError, match=r'linger=-1\.0 must be a number of seconds >= 0'
    ):
        async with open_market_feed(['AAA'], linger=-1):
            pass
    with pytest.raises(ValueError, match=r"stale_after='x' must be a number"):
        async with open_market_feed(['AAA'], stale_after='x'):
            pass


async def _ls_topics(port: int) -> dict:
    import json

    from test_cli import run_cli

    res = await run_cli('--port', str(port), 'ls', '--json')
    assert res.returncode == 0, res.stderr.decode()
    feeds = json.loads(res.stdout).get('feeds') or []
    return {t: v for f in feeds for t, v in (f.get('topics') or {}).items()}


async def test_samplerd_stop_and_run_linger_through_the_command():
    import signal

    from test_cli import Proc, run_cli

    from tractor_services.testing import free_port, wait_gone

    port = free_port()
    daemon = Proc('--port', str(port), '-l', 'warning', 'run', '--linger', '0.5')
    watch = None
    try:
        await daemon.read_until(lambda line: 'ready' in line)
        res = await run_cli('--port', str(port), 'stop', 'AAA')
        assert res.returncode == 1
        assert (
            res.stderr.decode()
            .strip()
            .startswith('samplerd: error: no feed daemon feedd.sim runs at')
        )
        watch = Proc('--port', str(port), 'watch', 'AAA', '--fps', '2')
        await watch.read_until(lambda line: 'AAA' in line)
        with trio.fail_after(60):
            while 'AAA' not in await _ls_topics(port):
                await trio.sleep(0.2)
        res = await run_cli(
            '--port', str(port), 'stop', 'AAA', '--reason', 'maintenance'
        )
        assert res.returncode == 0, res.stderr.decode()
        assert res.stdout.decode().strip() == 'sim/AAA: ended (maintenance)'
        assert 'AAA' not in await _ls_topics(port)
        res = await run_cli('--port', str(port), 'stop', 'AAA')
        assert res.returncode == 1
        assert res.stderr.decode().strip() == (
            "samplerd: error: topic 'AAA' does not run in feedd.sim"
        )
        # a client again, then none: the topic stops after run's --linger
        await watch.stop(signal.SIGINT)
        watch = Proc('--port', str(port), 'watch', 'BBB', '--fps', '2')
        with trio.fail_after(60):
            while 'BBB' not in await _ls_topics(port):
                await trio.sleep(0.2)
        await watch.stop(signal.SIGINT)
        with trio.fail_after(60):
            while 'BBB' in await _ls_topics(port):
                await trio.sleep(0.2)
        assert await daemon.stop(signal.SIGINT) == 0
    finally:
        for proc in (watch, daemon):
            if proc is not None and proc.p.poll() is None:
                proc.p.kill()
                proc.p.wait()
    assert not wait_gone(daemon.family), 'the daemon left processes behind'


async def test_a_stopped_topic_has_its_closed_bars_flushed_to_the_store(
    other_addr, tmp_path, monkeypatch
):
    pytest.importorskip('pyarrow', reason='the bar store needs the store extra')
    from tractor_sampler import open_store
    from tractor_sampler._datadir import ENV_VAR
    from tractor_sampler._store import FLUSH_ENV, STORE_ENV

    monkeypatch.delenv(STORE_ENV, raising=False)  # the conftest turns it off
    monkeypatch.setenv(ENV_VAR, str(tmp_path))
    monkeypatch.setenv(FLUSH_ENV, '3600')  # no periodic flush meanwhile
    async with open_service_root(other_addr):
        async with open_market_feed(['AAA'], buffers=BUFS, config=FAST) as feed:
            shm = feed.buffer('AAA', 1.0)
            n0 = len(shm)
            with trio.fail_after(30):
                while len(shm) < n0 + 3:
                    await trio.sleep(0.05)
            closed = shm.array[:-1].copy()
            nothing = open_store(tmp_path).read('sim', 'AAA', 1.0)
            assert nothing is None or not len(nothing)  # not flushed yet
            await stop_topic('AAA', registry_addr=other_addr)
        # flushed by the stop, before the daemon's own flush at its end
        stored = open_store(tmp_path).read('sim', 'AAA', 1.0)
        assert stored is not None and len(stored)
        assert stored['time'][-1] >= closed['time'][-1]
