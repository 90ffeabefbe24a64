"""The step schedule under trio's mock clock: aligned, drift-free, late
steps by the documented rule."""

import math

import pytest
import trio
import trio.testing

from tractor_sampler._schedule import MAX_PERIOD_S, Schedule, check_period

#: a wall-clock start that is on no boundary
W0 = 1_700_000_000.37


def mock_wall():
    return lambda: trio.current_time() + W0


async def run_for(sched: Schedule, seconds: float, on_step) -> None:
    async with trio.open_nursery() as tn:
        await tn.start(sched.run, on_step)
        await trio.sleep(seconds)
        tn.cancel_scope.cancel()


async def test_one_hour_is_3600_second_steps_and_60_minute_steps(autojump_clock):
    sched = Schedule(wall=mock_wall())
    sched.add(1.0)
    sched.add(60.0)
    steps = {1.0: [], 60.0: []}

    async def on_step(period, t):
        steps[period].append((t, trio.current_time()))

    # end just before the 3601st second boundary after the start
    await run_for(sched, math.ceil(W0 + 3600) - W0 - 0.01, on_step)
    assert len(steps[1.0]) == 3600
    assert len(steps[60.0]) == 60
    for period, got in steps.items():
        times = [t for t, _ in got]
        # every step on its boundary, none skipped or doubled
        assert all(t % period == 0 for t in times)
        assert times == [times[0] + i * period for i in range(len(times))]
        # and taken exactly at its deadline: no drift after an hour
        assert all(now + W0 == pytest.approx(t, abs=1e-6) for t, now in got)
    assert sched.stats.late == 0 and sched.stats.caught_up == 0


async def test_first_step_waits_for_the_next_boundary(autojump_clock):
    sched = Schedule(wall=mock_wall())
    sched.add(60.0)
    got = []

    async def on_step(period, t):
        got.append(t)

    await run_for(sched, 61, on_step)
    assert got == [math.ceil(W0 / 60) * 60]


async def test_stalled_loop_catches_up_missed_steps_in_order(autojump_clock):
    sched = Schedule(wall=mock_wall())
    sched.add(1.0)
    got = []

    async def on_step(period, t):
        got.append((t, trio.current_time() + W0))
        if len(got) == 5:
            await trio.sleep(3.5)  # the loop stalls past three deadlines

    await run_for(sched, 10.9, on_step)
    times = [t for t, _ in got]
    assert times == [
        times[0] + i for i in range(len(times))
    ]  # contiguous, nothing doubled
    stalled_until = got[4][1] + 3.5
    caught = [
        (t, at) for t, at in got if t < stalled_until and at >= stalled_until - 1e-9
    ]
    # three steps are taken at once: the late one and two caught up
    assert len(caught) == 3 and sched.stats.caught_up == 2 and sched.stats.late == 3
    assert all(at == pytest.approx(stalled_until) for _, at in caught)  # taken at once
    assert got[-1][1] == pytest.approx(got[-1][0])  # back on the boundary afterwards


async def test_too_many_missed_steps_are_skipped_by_the_rule(autojump_clock):
    sched = Schedule(wall=mock_wall(), max_catchup=2)
    sched.add(1.0)
    got = []

    async def on_step(period, t):
        got.append(t)
        if len(got) == 1:
            await trio.sleep(10.2)

    await run_for(sched, 12, on_step)
    # ten steps were due after the stall: the newest one and the two
    # missed before it are taken, the seven older ones skipped
    assert sched.stats.skipped == 7 and sched.stats.caught_up == 2
    assert got[1:4] == [got[0] + 8, got[0] + 9, got[0] + 10]


async def test_periods_added_while_running_align_to_their_boundary(autojump_clock):
    sched = Schedule(wall=mock_wall())
    got = []

    async def on_step(period, t):
        got.append((period, t))

    async with trio.open_nursery() as tn:
        await tn.start(sched.run, on_step)
        await trio.sleep(5)
        sched.add(0.5)
        await trio.sleep(2)
        sched.remove(0.5)
        sched.add(2.0)
        await trio.sleep(4.1)
        tn.cancel_scope.cancel()
    halves = [t for p, t in got if p == 0.5]
    twos = [t for p, t in got if p == 2.0]
    assert len(halves) == 4 and all(t % 0.5 == 0 for t in halves)
    assert len(twos) == 2 and all(t % 2 == 0 for t in twos)


@pytest.mark.parametrize(
    'bad, match',
    [
        (0, 'positive'),
        (-1, 'positive'),
        (float('nan'), 'positive'),
        (0.05, 'out of range'),
        (MAX_PERIOD_S * 2, 'out of range'),
        (0.25, 'multiple of 0.1'),
        ('1', 'not a number'),
        (True, 'not a number'),
    ],
)
def test_bad_periods_are_refused(bad, match):
    with pytest.raises(ValueError, match=match):
        check_period(bad)


def test_good_periods():
    assert check_period(1) == 1.0
    assert check_period(0.1) == 0.1
    assert check_period(0.30000000000000004) == 0.3
    assert check_period(3600) == 3600.0


def test_spin_wakes_early_and_never_steps_before_the_boundary():
    """With spin_s the loop wakes before the deadline and yields until it
    has passed.  (A spinning task is never idle, so this runs on a mock
    clock that also advances with real time, 1000x.)"""
    got = []

    async def main():
        sched = Schedule(wall=mock_wall(), spin_s=0.002)
        sched.add(1.0)

        async def on_step(period, t):
            got.append((t, trio.current_time() + W0))

        await run_for(sched, 3.5, on_step)

    trio.run(main, clock=trio.testing.MockClock(rate=1000, autojump_threshold=0))
    assert len(got) >= 3  # real time also runs, so the window may hold one more
    # never before the boundary (how soon after depends on the machine's
    # load here, so the lateness it buys is measured by the benchmark)
    assert all(at >= t for t, at in got)


def test_spin_must_be_small():
    with pytest.raises(ValueError, match='spin_s'):
        Schedule(spin_s=0.5)


async def test_a_buffer_registered_after_a_boundary_is_aligned_to_the_open_bar(
    autojump_clock,
):
    import numpy as np

    from tractor_sampler import open_shm_array
    from tractor_sampler._sampler import Sampler

    sampler = Sampler(wall=mock_wall(), spin_s=0)  # no spinning under autojump
    wall = mock_wall()
    with open_shm_array(64) as shm, open_shm_array(64) as fresh:
        # a buffer filled two periods ago: its open bar has closed twice since
        open_bar = math.floor(wall())
        row = np.zeros(1, dtype=shm.dtype)
        row['index'], row['close'], row['volume'] = 7, 10.5, 3.0
        row['time'] = open_bar - 2
        shm.push(row)
        sampler.add_buffer(1.0, shm.token)
        rows = shm.array
        assert list(rows['time']) == [open_bar - 2, open_bar - 1, open_bar]
        assert list(rows['index']) == [7, 8, 9]
        assert set(rows['close']) == {10.5} and list(rows['volume']) == [3.0, 0.0, 0.0]
        assert sampler.aligned == 2
        # one filled on the open bar is left as it is
        row['time'] = open_bar
        fresh.push(row)
        sampler.add_buffer(1.0, fresh.token)
        assert len(fresh) == 1 and sampler.aligned == 2
        # and the next step lands both on the next boundary
        async with trio.open_nursery() as tn:
            await tn.start(sampler.increment_ohlc_buffer)
            await trio.sleep_until(trio.current_time() + 1.0)
            tn.cancel_scope.cancel()
        assert shm.array['time'][-1] == fresh.array['time'][-1] == open_bar + 1
        sampler.remove_buffer((1.0, shm.token.shm_name, 0))
        sampler.remove_buffer((1.0, fresh.token.shm_name, 0))


async def test_a_full_buffer_is_set_aside_and_the_others_keep_stepping(autojump_clock):
    import numpy as np

    from tractor_sampler import open_shm_array
    from tractor_sampler._sampler import Sampler

    sampler = Sampler(wall=mock_wall(), spin_s=0)
    open_bar = math.floor(mock_wall()())
    with open_shm_array(8, start=6) as small, open_shm_array(64) as big:
        for shm in (small, big):
            row = np.zeros(1, dtype=shm.dtype)
            row['time'], row['close'] = open_bar, 1.0
            shm.push(row)
            sampler.add_buffer(1.0, shm.token)
        async with trio.open_nursery() as tn:
            await tn.start(sampler.increment_ohlc_buffer)
            await trio.sleep_until(trio.current_time() + 5.0)
            tn.cancel_scope.cancel()
        # the small one filled after one step (rows 6 and 7) and was set aside;
        # the big one got every step
        assert len(small) == 2 and small.last == small.size
        assert len(big) == 6 and big.array['time'][-1] == open_bar + 5
        assert sampler.info()['set_aside'] == 1
        sampler.remove_buffer((1.0, small.token.shm_name, 0))
        sampler.remove_buffer((1.0, big.token.shm_name, 0))
        assert sampler.periods == []


async def test_a_forward_clock_jump_is_counted_and_caught_up_by_the_stall_rule(
    autojump_clock,
):
    """Issue #10.6: the wall clock steps 4.5 s ahead (NTP, or a suspend
    trio's clock did not count): the boundaries passed are caught up, each
    with its own time, within a clock check; the jump is counted."""
    offset = [W0]
    sched = Schedule(wall=lambda: trio.current_time() + offset[0])
    sched.add(1.0)
    got = []

    async def on_step(period, t):
        got.append((t, trio.current_time() + offset[0]))

    async with trio.open_nursery() as tn:
        await tn.start(sched.run, on_step)
        await trio.sleep(3.0)
        offset[0] += 4.5
        await trio.sleep(3.0)
        tn.cancel_scope.cancel()
    times = [t for t, _ in got]
    assert times == [times[0] + i for i in range(len(times))]  # one per boundary
    assert (
        sched.stats.clock_jumps == 1
        and sched.stats.max_clock_jump_s == pytest.approx(4.5)
    )
    assert sched.stats.caught_up >= 3
    # no step is taken before its boundary on the (new) wall clock
    assert all(at >= t - 1e-6 for t, at in got)


async def test_a_backward_clock_jump_waits_for_the_next_boundary(autojump_clock):
    offset = [W0]
    sched = Schedule(wall=lambda: trio.current_time() + offset[0])
    sched.add(1.0)
    got = []

    async def on_step(period, t):
        got.append((t, trio.current_time() + offset[0]))

    async with trio.open_nursery() as tn:
        await tn.start(sched.run, on_step)
        await trio.sleep(3.0)
        offset[0] -= 2.5
        await trio.sleep(5.0)
        tn.cancel_scope.cancel()
    times = [t for t, _ in got]
    # never a step twice or back in time; each on its boundary of the new clock
    assert times == [times[0] + i for i in range(len(times))]
    assert all(at >= t - 1e-6 for t, at in got)
    assert (
        sched.stats.clock_jumps == 1
        and sched.stats.max_clock_jump_s == pytest.approx(-2.5)
    )


async def test_slewing_is_absorbed_not_counted(autojump_clock):
    sched = Schedule(wall=lambda: trio.current_time() * (1 + 400e-6) + W0)  # 400 ppm
    sched.add(1.0)
    got = []

    async def on_step(period, t):
        got.append(t)

    await run_for(sched, 20.0, on_step)
    assert sched.stats.clock_jumps == 0
    assert got == [got[0] + i for i in range(len(got))]


async def test_after_a_stall_longer_than_the_catch_up_rows_jump_to_the_boundary_and_mark_it(
    autojump_clock,
):
    """Issue #10.2: a 2,000 s stall of a 1 s buffer: rows catch up the
    newest MAX_CATCHUP boundaries, end on the current one, and the jump
    is marked (Step.gap) and counted."""
    import numpy as np

    from tractor_sampler import open_shm_array
    from tractor_sampler._sampler import Sampler

    sampler = Sampler(wall=mock_wall(), spin_s=0)
    sampler.schedule.max_catchup = 50
    open_bar = math.floor(mock_wall()())
    steps = []
    orig = sampler.broadcast

    def broadcast(period_s, time_stamp=None, info=None, gap=0):
        steps.append((time_stamp, gap))
        return orig(period_s, time_stamp, info, gap)

    sampler.broadcast = broadcast
    stalled = [False]
    orig_step = sampler._step

    async def step(p, t):
        if not stalled[0] and t >= open_bar + 3:
            stalled[0] = True
            await trio.sleep(2000)
        await orig_step(p, t)

    sampler._step = step
    with open_shm_array(256, start=0) as shm:
        row = np.zeros(1, dtype=shm.dtype)
        row['time'], row['close'] = open_bar, 1.0
        shm.push(row)
        sampler.add_buffer(1.0, shm.token)
        async with trio.open_nursery() as tn:
            await tn.start(sampler.increment_ohlc_buffer)
            await trio.sleep_until(open_bar - W0 + 2010.5)
            tn.cancel_scope.cancel()
        times = shm.array['time']
        assert times[-1] == open_bar + 2010  # on the wall clock's open bar
        assert list(np.diff(shm.array['index'])) == [1] * (len(times) - 1)
        jumps = np.flatnonzero(np.diff(times) > 1)
        assert len(jumps) == 1
        gap = int(times[jumps[0] + 1] - times[jumps[0]]) - 1
        assert sampler.info()['gaps'] == {1.0: 1} and sampler.info()['gap_bars'] == {
            1.0: gap
        }
        assert [g for _, g in steps if g] == [gap]
        sampler.remove_buffer((1.0, shm.token.shm_name, 0))
