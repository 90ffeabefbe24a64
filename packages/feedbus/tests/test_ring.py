"""The shared-memory quote ring: local subscribers read each quote from
one ring per producer (feedbus._ring), see their gaps, learn of a dead
producer, and no segment outlives the producer on any exit path."""

from __future__ import annotations

import os
import signal
from functools import partial
from pathlib import Path

import feedbus_endpoints as fe
import msgspec
import pytest
import tractor
import trio

from feedbus import Frame, Quote, SubscriptionDropped, _ring, get_feed_bus, open_feed
from tractor_services import compat, open_service_mngr, resolve_registry_addr

SHM = Path('/dev/shm')
pytestmark = pytest.mark.skipif(not SHM.is_dir(), reason='needs /dev/shm')

# this session's ring segments carry a prefix of their own (inherited by
# the actors it spawns), so the check below sees exactly ours
PREFIX = os.environ.setdefault(_ring.KEY_PREFIX_ENV, f'feedbus_t{os.getpid()}_')


def rings() -> set[str]:
    return {p.name for p in SHM.iterdir() if p.name.startswith(PREFIX)}


@pytest.fixture(autouse=True)
def no_leaked_rings():
    before = rings()
    yield
    leaked = rings() - before
    for name in leaked:
        (SHM / name).unlink(missing_ok=True)
    assert not leaked, f'test left ring segments behind: {sorted(leaked)}'


async def wait_until(pred, timeout=30.0, poll=0.02):
    """Wait (bounded) for a condition another process makes true."""
    with trio.fail_after(timeout):
        while not await pred():
            await trio.sleep(poll)


# --- endpoints (subactors import this module by name) ------------------------------


@tractor.context
async def ring_producer(
    ctx: tractor.Context,
    topics: list[str],
    per_ms: int = 1,
    pad: int = 0,
    ring_bytes: int = _ring.RING_BYTES,
    trade_every: int = 0,
) -> None:
    """Publish ``per_ms`` quotes per topic every millisecond into a ring
    of ``ring_bytes``; with ``trade_every``, every such quote (its ``n`` a
    multiple) carries a trade tick holding ``n``, the others a bid."""
    bus = get_feed_bus()
    bus.ring_bytes = ring_bytes
    for t in topics:
        bus.add_topic(t)

    async def produce() -> None:
        n = 0
        while True:
            for _ in range(per_ms):
                n += 1
                tick = (
                    {'type': 'trade', 'n': n}
                    if trade_every and n % trade_every == 0
                    else {'type': 'bid'}
                )
                for t in topics:
                    bus.publish(t, {'n': n, 'pad': 'x' * pad}, [tick])
            await trio.sleep(0.001)

    async with trio.open_nursery() as tn:
        tn.start_soon(produce)
        await ctx.started(os.getpid())
        await trio.sleep_forever()


async def bus_report() -> dict[str, list[dict]]:
    """(in the producer) Each topic's subscribers' counters."""
    return {
        t: [msgspec.to_builtins(sub.stats) for sub in subs]
        for t, subs in get_feed_bus().subs_items()
    }


async def published(topic: str) -> int:
    """(in the producer) The last sequence number published on ``topic``."""
    return get_feed_bus()._seq.get(topic, 0)


_received = {'msgs': 0}


async def received() -> int:
    """(in a subscriber) How many messages it has read so far."""
    return _received['msgs']


@tractor.context
async def ring_subscriber(ctx: tractor.Context, producer_name: str) -> None:
    """A ring subscriber that counts what it reads (``fe.received``)."""
    async with compat.find_actor(producer_name, resolve_registry_addr()) as portal:
        async with open_feed(portal, ['a']) as feed:
            assert feed.ring
            await ctx.started(os.getpid())
            async for _ in feed:
                _received['msgs'] += 1


# --- tests --------------------------------------------------------------------------


async def test_many_subscribers_read_every_quote_in_order(reg_addr):
    """Eight local subscribers (two throttled) on one producer: each reads
    through the ring, every quote of its topics in order, no gap; the
    producer's one ring serves them all, and lists them."""
    async with open_service_mngr(registry_addr=reg_addr) as mngr:
        await mngr.start_service(
            'prod', partial(fe.producer, topics=['a', 'b'], hz=300)
        )
        portal = mngr.portal('prod')
        got: dict[int, list] = {}
        feeds = []
        before = rings()
        listed = trio.Event()

        async def sub(i: int, task_status=trio.TASK_STATUS_IGNORED) -> None:
            rate = 20 if i >= 6 else None
            async with open_feed(portal, ['a', 'b'], tick_throttle=rate) as feed:
                assert feed.ring
                feeds.append(feed)
                task_status.started()
                await listed.wait()  # (its reader buffers meanwhile)
                out = got[i] = []
                async for msg in feed:
                    out.append(msg)
                    if len(out) == (200 if rate is None else 10):
                        break
                stats = await feed.stats()
                assert stats.ring and stats.gaps == 0 and stats.dropped == 0
                assert stats.delivered >= len(out)

        with trio.fail_after(60):
            async with trio.open_nursery() as tn:
                for i in range(8):
                    await tn.start(sub, i)
                report = await portal.run(fe.bus_report)
                assert len(report['a']) == 8
                assert all(s['ring'] for s in report['a'])
                assert len(rings() - before) == 1  # one ring for all
                listed.set()
        for i, msgs in got.items():
            if i < 6:
                assert all(isinstance(m, Quote) for m in msgs)
                for topic in ('a', 'b'):
                    seqs = [m.seq for m in msgs if m.topic == topic]
                    assert seqs == list(range(seqs[0], seqs[0] + len(seqs))), i
            else:
                assert all(isinstance(m, Frame) for m in msgs)
                for topic in ('a', 'b'):
                    tfs = [f.topics[topic] for f in msgs if topic in f.topics]
                    for prev, nxt in zip(tfs, tfs[1:], strict=False):
                        assert nxt.first_seq == prev.last_seq + 1  # nothing lost

        # the last reader gone, the ring is unlinked (the producer lives on)
        async def unlinked():
            return not (rings() - before)

        await wait_until(unlinked)


async def test_a_slow_throttled_ring_subscriber_gets_every_trade(reg_addr):
    """A throttled ring subscriber whose consumer is slow, on a producer
    publishing far faster than its rate (thousands of quotes per frame,
    many times its reader buffer): churn is conflated, but every trade
    tick reaches it, in order (the backlog waits in the ring, never
    dropped from its queue), and nothing is counted lost."""
    async with open_service_mngr(registry_addr=reg_addr) as mngr:
        await mngr.start_service(
            'prod', partial(ring_producer, topics=['a'], per_ms=20, trade_every=7)
        )
        portal = mngr.portal('prod')
        trades: list[int] = []
        frames = 0
        async with open_feed(portal, ['a'], tick_throttle=10, buffer=64) as feed:
            assert feed.ring
            with trio.fail_after(60):
                async for frame in feed:
                    tf = frame.topics.get('a')
                    if tf is not None:
                        trades += [t['n'] for t in tf.ticks_by_type.get('trade', [])]
                    frames += 1
                    if frames >= 12 and len(trades) > 500:
                        break
                    await trio.sleep(0.03)  # a slow consumer (its own work)
            stats = await feed.stats()
        assert stats.gaps == 0
        assert trades == list(range(trades[0], trades[-1] + 1, 7))
        assert stats.dropped == 0


async def test_ring_false_takes_the_stream(reg_addr):
    async with open_service_mngr(registry_addr=reg_addr) as mngr:
        await mngr.start_service('prod', partial(fe.producer, topics=['a'], hz=300))
        portal = mngr.portal('prod')
        async with open_feed(portal, ['a'], ring=False) as feed:
            assert not feed.ring
            with trio.fail_after(20):
                await feed.receive()
            assert not (await feed.stats()).ring
            assert not rings()
        with pytest.raises(ValueError, match='ring='):
            async with open_feed(portal, ['a'], ring='yes'):
                pass


async def test_a_stalled_reader_gets_a_counted_gap_the_others_do_not(reg_addr):
    """A subscriber stopped (SIGSTOP) while the producer writes more than
    its ring holds finds a gap when it runs again: counted in its stats
    (as the producer lists them), its subscription kept; the other one
    reads on all along without a gap."""
    async with open_service_mngr(registry_addr=reg_addr) as mngr:
        await mngr.start_service(
            'prod',
            partial(ring_producer, topics=['a'], per_ms=2, pad=200, ring_bytes=65536),
        )
        prod = mngr.portal('prod')
        pids = {}
        for name in ('stuck', 'ok'):
            pids[name] = await mngr.start_service(
                name, partial(ring_subscriber, producer_name='prod')
            )

        async def both_reading():
            subs = (await prod.run(bus_report)).get('a', [])
            return len(subs) == 2 and all(s['delivered'] > 0 for s in subs)

        await wait_until(both_reading)
        os.kill(pids['stuck'], signal.SIGSTOP)
        try:
            p0 = await prod.run(published, topic='a')

            async def lapped():  # well over 64 KiB of records written since
                return await prod.run(published, topic='a') > p0 + 1000

            await wait_until(lapped)
            ok = mngr.portal('ok')
            r0 = await ok.run(received)
            await wait_until(lambda: _more(ok, r0 + 200))
        finally:
            os.kill(pids['stuck'], signal.SIGCONT)

        async def one_gap():
            subs = (await prod.run(bus_report)).get('a', [])
            return len(subs) == 2 and any(s['gaps'] for s in subs)

        await wait_until(one_gap)
        subs = (await prod.run(bus_report))['a']
        assert sorted(s['gaps'] > 0 for s in subs) == [False, True]
        stuck = next(s for s in subs if s['gaps'])
        assert stuck['removed'] is None and stuck['dropped'] > 0


async def _more(portal, n: int) -> bool:
    return await portal.run(received) >= n


async def test_a_sigkilled_producers_ring_reader_gets_a_clear_error(reg_addr):
    """Even unwatched (``watch_producer=False``), a ring subscriber of a
    SIGKILLed producer ends with SubscriptionDropped within a bounded time,
    and the ring is unlinked (by the producer's resource tracker)."""
    async with open_service_mngr(registry_addr=reg_addr) as mngr:
        pid = await mngr.start_service(
            'prod', partial(fe.producer, topics=['a'], hz=200)
        )
        async with compat.find_actor('prod', mngr.registry_addr) as portal:
            names = []
            with trio.fail_after(30):
                with pytest.raises(SubscriptionDropped, match='ring') as info:
                    async with open_feed(portal, ['a'], watch_producer=False) as feed:
                        assert feed.ring
                        await feed.receive()
                        names = rings()
                        os.kill(pid, signal.SIGKILL)
                        async for _ in feed:
                            pass
            assert info.value.reason == 'broken'
            assert names

            async def gone():
                return not (names & rings())

            await wait_until(gone)
            compat.mark_disconnected(portal.channel)


@pytest.mark.parametrize('how', ['cancelled', 'sigterm'])
async def test_the_ring_is_unlinked_when_the_producer_stops(reg_addr, how):
    """A producer cancelled (or sent SIGTERM) while a ring subscriber
    reads unlinks its ring; the subscriber gets a clear error."""
    async with open_service_mngr(registry_addr=reg_addr) as mngr:
        pid = await mngr.start_service(
            'prod', partial(fe.producer, topics=['a'], hz=200)
        )
        portal = mngr.portal('prod')
        with trio.fail_after(30):
            try:
                async with open_feed(portal, ['a']) as feed:
                    assert feed.ring
                    await feed.receive()
                    names = rings()
                    assert names
                    if how == 'cancelled':
                        await mngr.cancel_service('prod')
                    else:
                        os.kill(pid, signal.SIGTERM)
                    async for _ in feed:
                        pass
            except Exception as err:  # noqa: BLE001 - any clear error will do
                assert (
                    'exited' in str(err) or 'dropped' in str(err) or 'ring' in str(err)
                ), repr(err)

            async def gone():
                return not (set(names) & rings())

            await wait_until(gone)


def test_ring_token_round_trips():
    tok = _ring.RingToken(name='x', cap=4096, start=8, start_count=1, slot=3)
    assert msgspec.convert(msgspec.to_builtins(tok), _ring.RingToken) == tok


async def test_a_lapped_reader_counts_its_gap_and_warns_once(caplog):
    """In one process: a reader that falls more than the ring behind
    jumps to the newest record, counts one gap and logs one warning for
    it, then counts the quotes of its topic it lost (by their sequence
    numbers); a reader that kept up sees every quote; the writer never
    waited for either."""
    from feedbus import Quote
    from feedbus._wire import pack

    decode = msgspec.msgpack.Decoder(Quote).decode
    writer = _ring.RingWriter(4096)
    tid = _ring.topic_id('a')
    seq = 0

    def publish(n: int) -> None:
        nonlocal seq
        for _ in range(n):
            seq += 1
            writer.write(tid, pack(Quote(topic='a', seq=seq, fields={'n': seq})))

    slow = _ring.RingReader(writer.token(writer.claim_slot()), {'a'}, decode)
    fast = _ring.RingReader(writer.token(writer.claim_slot()), {'a'}, decode)
    seen = []
    try:
        publish(1)
        assert [q.seq for q in await slow.read()] == [1]
        seen += [q.seq for q in await fast.read()]
        with caplog.at_level('WARNING'):
            for _ in range(20):  # 20 x 10 records: far more than 4 KiB
                publish(10)
                seen += [q.seq for q in await fast.read()]
            assert slow._take() == []  # lapped: nothing torn is delivered
            publish(1)
            got = await slow.read()
        assert [q.seq for q in got] == [seq]
        assert slow.gaps == 1 and slow.dropped == seq - 2  # 2 .. seq - 1 lost
        gap_logs = [
            r for r in caplog.records if 'fell behind the quote ring' in r.message
        ]
        assert len(gap_logs) == 1
        publish(3)
        assert [q.seq for q in await slow.read()] == [seq - 2, seq - 1, seq]
        assert seen == list(range(1, 202)) and fast.gaps == 0
    finally:
        slow.close()
        fast.close()
        writer.close()


def test_feedbus_ring_env_sets_the_default(monkeypatch):
    """``$FEEDBUS_RING=0`` turns the ring off by default; another value is
    refused in one line naming it."""
    from feedbus._client import ring_default

    monkeypatch.delenv('FEEDBUS_RING', raising=False)
    assert ring_default() is True
    monkeypatch.setenv('FEEDBUS_RING', '0')
    assert ring_default() is False
    monkeypatch.setenv('FEEDBUS_RING', 'yes')
    with pytest.raises(ValueError, match='FEEDBUS_RING'):
        ring_default()


# --- mappings and memory of a subscribing process -----------------------------------


def ring_maps() -> list[str]:
    """Lines of this process's memory map that name one of this session's
    rings (mapped, or mapped and since unlinked: ``... (deleted)``)."""
    with open('/proc/self/maps') as f:
        return [line for line in f if PREFIX in line]


async def test_a_subscriber_whose_producer_restarts_keeps_only_the_live_ring_mapped(
    reg_addr,
):
    """A subscriber whose producer is restarted 20 times (cancelled, or
    SIGKILLed) maps each new ring while it reads it and unmaps it when
    its feed ends: it never holds more than the live ring, and ends with
    none (a dead ring kept mapped would grow the subscriber by the
    ring's size at every restart)."""
    async with open_service_mngr(registry_addr=reg_addr) as mngr:
        for i in range(20):
            pid = await mngr.start_service(
                'prod', partial(fe.producer, topics=['a'], hz=500)
            )
            portal = mngr.portal('prod')
            with trio.fail_after(60):
                try:
                    async with open_feed(portal, ['a']) as feed:
                        assert feed.ring
                        for _ in range(20):  # the ring's pages in use
                            await feed.receive()
                        live = feed.ring_token.name
                        mapped = ring_maps()
                        assert mapped and all(live in line for line in mapped), mapped
                        if i % 2:
                            os.kill(pid, signal.SIGKILL)
                        else:
                            await mngr.cancel_service('prod')
                        async for _ in feed:
                            pass
                except Exception:  # noqa: BLE001 - how it ends: tested above
                    pass
            assert ring_maps() == [], f'restart {i}: a dead ring is still mapped'
            if i % 2:
                with trio.fail_after(30):
                    await mngr.cancel_service('prod')

                async def unlinked(name: str = live) -> bool:
                    return name not in rings()  # (by the killed one's tracker)

                await wait_until(unlinked)


async def test_in_one_process_closing_readers_unmaps_every_ring():
    """Readers of 20 rings in turn (two on each, reading it, then the
    writer closing it under them): each ring is unmapped once its last
    reader closes, whatever they read."""
    from feedbus._wire import pack

    decode = msgspec.msgpack.Decoder(Quote).decode
    decode_many = msgspec.msgpack.Decoder(list[Quote]).decode
    tid = _ring.topic_id('a')
    for _ in range(20):
        writer = _ring.RingWriter(4096)
        readers = [
            _ring.RingReader(
                writer.token(writer.claim_slot()), {'a'}, decode, decode_many
            )
            for _ in range(2)
        ]
        try:
            for seq in range(1, 201):  # the writer wraps a few times
                writer.write(tid, pack(Quote(topic='a', seq=seq, fields={'n': seq})))
                if seq % 7 == 0:
                    for r in readers:
                        await r.read()
            name = writer.name
            writer.close()
            for r in readers:
                with trio.fail_after(10), pytest.raises(_ring.RingGone):
                    while True:
                        await r.read()
        finally:
            for r in readers:
                r.close()
            writer.close()
        assert not [line for line in ring_maps() if name in line]
    assert ring_maps() == []


async def test_a_processs_only_reader_keeps_no_decoded_quotes():
    """Decoded quotes are kept for a process's other readers of the same
    ring only: alone, a reader keeps none (that cache was ~30 MB of sim
    quotes per subscribing process); with a second reader, each record is
    decoded once for both; the second gone, the cache goes too."""
    from feedbus._wire import pack

    decode = msgspec.msgpack.Decoder(Quote).decode
    decode_many = msgspec.msgpack.Decoder(list[Quote]).decode
    writer = _ring.RingWriter(1 << 16)
    tid = _ring.topic_id('a')
    seq = 0

    def publish(n: int) -> None:
        nonlocal seq
        for _ in range(n):
            seq += 1
            writer.write(tid, pack(Quote(topic='a', seq=seq, fields={'n': seq})))

    def reader() -> _ring.RingReader:
        return _ring.RingReader(
            writer.token(writer.claim_slot()), {'a'}, decode, decode_many
        )

    one = reader()
    two = None
    try:
        publish(100)
        assert [q.seq for q in await one.read()] == list(range(1, 101))
        assert one._att.decoded == {}
        two = reader()
        publish(10)
        got_one = await one.read()
        got_two = await two.read()
        assert [q.seq for q in got_two] == list(range(101, 111))
        assert all(a is b for a, b in zip(got_one, got_two, strict=True))
        two.close()
        two = None
        assert one._att.decoded == {}
        publish(5)
        assert [q.seq for q in await one.read()] == list(range(111, 116))
        assert one._att.decoded == {}
    finally:
        one.close()
        if two is not None:
            two.close()
        writer.close()
