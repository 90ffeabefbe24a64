"""The feed daemon's buffers in shared-memory groups (one per buffer spec,
member slots per topic): the pool on its own, then many topics on one
daemon across real actors."""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import pytest
import trio

from tractor_sampler import _feed, maybe_open_samplerd, open_market_feed
from tractor_sampler._pool import BufferPool, GroupKey, NoShmSpace
from tractor_sampler.endpoints import sampler_info
from tractor_sampler.shm import KEY_PREFIX_ENV
from tractor_services import open_service_root

BUFS = {1.0: (256, 30), 60.0: (64, 10)}
SLOW = {'tick_rate': 5, 'trade_prob': 0.5}


async def wait_until(pred, timeout=30, poll=0.05):
    with trio.fail_after(timeout):
        while not await pred():
            await trio.sleep(poll)


def shm_fds(pid: int) -> list[str]:
    """The /dev/shm files of this test session that ``pid`` holds open."""
    prefix = os.environ[KEY_PREFIX_ENV]
    out = []
    for fd in os.listdir(f'/proc/{pid}/fd'):
        try:
            target = os.readlink(f'/proc/{pid}/fd/{fd}')
        except OSError:
            continue
        if target.startswith(f'/dev/shm/{prefix}'):
            out.append(target)
    return out


# --- the pool -----------------------------------------------------------------


def test_pool_fills_one_group_per_spec_before_making_another():
    pool = BufferPool(4)
    try:
        one = [pool.take(GroupKey(1.0, 32)) for _ in range(6)]
        sixty = [pool.take(GroupKey(60.0, 32)) for _ in range(2)]
        other_rows = pool.take(GroupKey(1.0, 64))
        names = [s.token.shm_name for s in one]
        # 4 slots per group: the fifth topic opens a second group
        assert names[:4] == [names[0]] * 4 and names[4:] == [names[4]] * 2
        assert names[0] != names[4]
        assert [s.token.member for s in one] == [0, 1, 2, 3, 0, 1]
        # another period, another row count: groups of their own
        assert sixty[0].token.shm_name not in names
        assert other_rows.token.shm_name not in names + [sixty[0].token.shm_name]
        assert pool.stats() == {'groups': 4, 'slots': 16, 'used': 9, 'refused': 0}
    finally:
        pool.close()


def test_a_slot_given_back_is_empty_its_pages_released_and_reused():
    pool = BufferPool(4)
    try:
        a = pool.take(GroupKey(1.0, 8192))
        b = pool.take(GroupKey(1.0, 8192))
        path = Path('/dev/shm') / a.token.shm_name
        blocks0 = os.stat(path).st_blocks
        rows = np.zeros(4000, dtype=a.dtype)
        rows['index'] = np.arange(4000)
        rows['close'] = 1.0
        a.push(rows)
        a.mark_live(7, True)
        grown = os.stat(path).st_blocks
        assert grown > blocks0  # tmpfs allocated the touched pages only
        pool.give_back(a)
        assert os.stat(path).st_blocks < grown  # given back to the system
        c = pool.take(GroupKey(1.0, 8192))
        assert (c.token.shm_name, c.token.member) == (
            a.token.shm_name,
            a.token.member,
        )
        # an empty window at the middle, no marks of the old topic
        assert len(c) == 0 and c.first == 4096
        assert c.token.first_live is None
        assert b.token.member == 1
    finally:
        pool.close()


def test_too_little_free_space_is_one_clear_refusal_before_any_slot():
    pool = BufferPool(4, free_space=lambda: 1_000_000)
    try:
        need = pool.touch_bytes(86_400, 3600)
        assert need == (3600 + 43_200) * 56
        with pytest.raises(NoShmSpace) as err:
            pool.check_space(need, "topic 'AAA' of backend 'sim'")
        msg = str(err.value)
        assert '\n' not in msg
        assert msg.startswith("topic 'AAA' of backend 'sim': /dev/shm has 1.0 MB free")
        assert 'can touch 2.6 MB' in msg
        assert isinstance(err.value, ValueError)
        assert pool.stats() == {'groups': 0, 'slots': 0, 'used': 0, 'refused': 1}
        pool.check_space(999_999, 'fits')  # no error
    finally:
        pool.close()


def test_buffers_seeded_bars_ago_are_filled_to_the_open_bar_before_registering():
    """A daemon busy starting thousands of topics may register a buffer
    more bars after seeding it than samplerd aligns by itself: the rows of
    the boundaries that passed are filled first, so no gap opens."""
    import time

    from tractor_sampler._feedd import _fill_to_now

    pool = BufferPool(8)
    try:
        now = time.time()
        shms = [pool.take(GroupKey(1.0, 64)) for _ in range(3)]
        for i, shm in enumerate(shms):
            row = np.zeros(1, dtype=shm.dtype)
            row['index'] = 10 * i
            row['time'] = math.floor(now) - 6  # seeded six bars ago
            row['close'] = 100.0 + i
            shm.push(row)
        n = _fill_to_now({1.0: shms})
        assert n >= 3 * 6
        for i, shm in enumerate(shms):
            rows = shm.array
            assert rows['time'][-1] >= math.floor(now)
            assert list(np.diff(rows['time'])) == [1.0] * (len(rows) - 1)
            assert list(rows['index']) == list(range(10 * i, 10 * i + len(rows)))
            assert (rows['close'] == 100.0 + i).all() and (rows['volume'] == 0).all()
    finally:
        pool.close()


# --- the daemon's step fold ---------------------------------------------------


class FakeWriter:
    """Counts the steps it is given; ``held`` says it still has work."""

    def __init__(self, held: bool = False) -> None:
        self.steps: list[float] = []
        self.held = held
        self.on_trades = None
        self.has_corrections = False

    def on_step(self, period_s=None):
        self.steps.append(period_s)

    def needs_step(self, period_s):
        return self.held


class FakeSteps:
    def __init__(self, msgs):
        self.msgs = list(msgs)

    def __aiter__(self):
        return self

    async def __anext__(self):
        await trio.lowlevel.checkpoint()
        if not self.msgs:
            raise StopAsyncIteration
        return self.msgs.pop(0)


async def test_a_step_settles_only_the_writers_with_work_not_every_topic():
    from tractor_sampler import Step
    from tractor_sampler._errors import SamplerGone
    from tractor_sampler._feedd import FeedDaemon, Topic
    from tractor_sampler._plugins import load_backends

    async with trio.open_nursery() as tn:
        d = FeedDaemon(load_backends()['sim'], tn, buffers={1.0: 64, 60.0: 16})
        topics = []
        for i in range(1000):
            t = Topic(name=f'T{i}', shms={1.0: None, 60.0: None}, writer=FakeWriter())
            t.writer.on_trades = d._work_marker(t)
            d.topics[t.name] = t
            topics.append(t)
        topics[7].writer.held = True  # trades held for a bar not open yet
        for i in (3, 7, 500):
            topics[i].writer.on_trades()  # what a write with trades does
        steps = [Step(period_s=1.0, index=k, time=100.0 + k) for k in range(3)]
        with pytest.raises(SamplerGone):
            await d._fold_steps(FakeSteps(steps))
        # the first step settles the three with trades, later ones only the
        # one still holding trades; nobody else is looked at
        assert {i: t.writer.steps for i, t in enumerate(topics) if t.writer.steps} == {
            3: [1.0],
            7: [1.0, 1.0, 1.0],
            500: [1.0],
        }
        assert d.steps == {1.0: 3}
        # their 60 s bars are settled at the next 60 s step
        assert {t.name for t in d._work[60.0]} == {'T3', 'T7', 'T500'}
        tn.cancel_scope.cancel()


# --- many topics on one daemon ------------------------------------------------


async def test_many_topics_share_one_group_per_period_one_registration_few_fds(
    other_addr,
):
    n, slots = 64, 32
    topics = [f'T{i:03d}' for i in range(n)]
    async with open_service_root(other_addr) as mngr:
        async with open_market_feed(
            topics, config=SLOW, buffers=BUFS, group_members=slots
        ) as feed:
            groups = {
                p: {feed.buffer(t, p).token.shm_name for t in topics} for p in BUFS
            }
            # 64 topics in 32-slot groups: two groups per period
            assert {p: len(g) for p, g in groups.items()} == {1.0: 2, 60.0: 2}
            assert not groups[1.0] & groups[60.0]
            members = {
                (feed.buffer(t, 1.0).token.shm_name, feed.buffer(t, 1.0).token.member)
                for t in topics
            }
            assert len(members) == n  # a slot each
            info = await feed.info()
            assert info.pool == {'groups': 4, 'slots': 128, 'used': 128, 'refused': 0}
            # one registration with samplerd for the daemon, one step
            # stream subscriber per period, every buffer stepped
            assert info.sampler_registrations == 1
            async with maybe_open_samplerd() as portal:
                si = await portal.run(sampler_info)
            assert si['buffers'] == {1.0: n, 60.0: n}
            assert sorted(si['subscribers'].values()) == [1, 1]
            # the client attached each group once
            assert sorted(_feed._attached_groups) == sorted(groups[1.0] | groups[60.0])
            # file descriptors: O(groups), not O(topics) (8 segments; a
            # buffer of its own per topic and period would be 256 segments)
            segments = 2 * 4
            names = groups[1.0] | groups[60.0]
            ours = {f'/dev/shm/{n}' for n in names} | {
                f'/dev/shm/{n}_ctl' for n in names
            }
            for pid in (os.getpid(), info.pid, mngr.info('samplerd').pid):
                # (this test process may hold other tests' segments: ours only)
                fds = [f for f in shm_fds(pid) if f in ours]
                assert len(set(fds)) == segments, pid
                assert len(fds) <= 3 * segments, pid
            # and samplerd steps them all: every topic gets its next 1 s row
            shm = feed.buffer(topics[-1], 1.0)
            n0 = len(shm)

            async def stepped():
                return len(shm) >= n0 + 2

            await wait_until(stepped)
            for t in topics:
                rows = feed.buffer(t, 1.0).array
                assert list(np.diff(rows['index'])) == [1] * (len(rows) - 1)
        assert _feed._attached_groups == {}  # released with the feed


async def test_a_topic_that_ends_frees_its_slot_and_the_next_topic_reuses_it(
    other_addr,
):
    async with open_service_root(other_addr):
        async with (
            open_market_feed(
                ['fine', 'fail1'],
                backend='flaky',
                plugins=['flaky_backends'],
                buffers=BUFS,
                config={'tick_rate': 50, 'fail_after': 5},
                restart={'restart': 'temporary'},
                group_members=4,
            ) as flaky,
        ):
            gone = {p: flaky.buffer('fail1', p).token for p in BUFS}

            async def freed():
                info = await flaky.info()
                return 'fail1' not in info.topics and info.pool['used'] == 2

            await wait_until(freed)
            async with open_market_feed(
                ['next'], backend='flaky', buffers=BUFS
            ) as again:
                info = await again.info()
                assert info.pool == {'groups': 2, 'slots': 8, 'used': 4, 'refused': 0}
                for p, old in gone.items():
                    new = again.buffer('next', p)
                    assert (new.token.shm_name, new.token.member) == (
                        old.shm_name,
                        old.member,
                    )
                    # the new topic's rows only: its history and open bar
                    rows = new.array
                    assert list(rows['index']) == list(range(len(rows)))
                    assert new.token.first_live in (BUFS[p][1], BUFS[p][1] + 1)


async def test_samplerd_restart_with_many_topics_keeps_every_topics_bars_contiguous(
    other_addr,
):
    import signal

    n = 40
    topics = [f'R{i:02d}' for i in range(n)]
    async with open_service_root(other_addr) as mngr:
        async with open_market_feed(
            topics, config=SLOW, buffers=BUFS, group_members=16
        ) as feed:
            pid = mngr.info('samplerd').pid
            os.kill(pid, signal.SIGKILL)

            async def all_back():
                info = await feed.info()
                return (
                    all(
                        t.sampler_restarts == 1 and t.state == 'up'
                        for t in info.topics.values()
                    )
                    and len(info.topics) == n
                )

            await wait_until(all_back, timeout=60)
            info = await feed.info()
            # registered again once for all the topics
            assert info.sampler_registrations == 2
            assert mngr.info('samplerd').pid != pid
            shm = feed.buffer(topics[0], 1.0)
            n0 = len(shm)

            async def stepped():
                return len(shm) >= n0 + 2

            await wait_until(stepped)
            for t in topics:
                for p in BUFS:
                    rows = feed.buffer(t, p).array
                    assert list(np.diff(rows['index'])) == [1] * (len(rows) - 1), t
                    assert np.allclose(np.diff(rows['time']), p), t
            async with maybe_open_samplerd() as portal:
                si = await portal.run(sampler_info)
            assert si['buffers'] == {1.0: n, 60.0: n}


async def test_a_topic_too_big_for_dev_shm_is_refused_in_one_line(other_addr):
    huge = {1.0: (2 * 10**9, 0)}  # 56 GB of live rows: more than /dev/shm
    free = os.statvfs('/dev/shm')
    assert free.f_bavail * free.f_frsize < 10**9 * 56
    async with open_service_root(other_addr):
        with pytest.raises(ValueError) as err:
            async with open_market_feed(['AAA'], buffers=huge):
                pass
        msg = str(err.value)
        assert "topic 'AAA' of backend 'sim': /dev/shm has" in msg
        assert 'can touch 56000.0 MB: refused' in msg
        assert '\n' not in msg
