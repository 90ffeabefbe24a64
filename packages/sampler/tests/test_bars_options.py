"""The bar options of issue #10's "Beyond" part (NautilusTrader's
TimeBarAggregator options), per buffer: composite buffers built by the
feed daemon (``buffers={3.0: {'rows': n, 'from': 1.0}}``); bars stamped on
open or close and boundaries off the period's multiples (``origin``),
carried in the token and honoured by every reader of row times."""

from __future__ import annotations

import math

import numpy as np
import pytest
import trio
from bar_checks import aggregate

from tractor_sampler import open_market_feed
from tractor_sampler._feedd import BufferSpec, check_buffers, composite_of
from tractor_services import open_service_root

FIELDS = ('open', 'high', 'low', 'close', 'volume')
FAST = {'tick_rate': 100, 'trade_prob': 0.5}


# --- composite buffers through the feed daemon ------------------------------


def test_buffers_take_a_composite_spec():
    got = check_buffers({1: (100, 10), 60: {'rows': 50, 'history': 5, 'from': 1}})
    assert got == {1.0: (100, 10), 60.0: BufferSpec(50, 5, composite=1.0)}
    assert got[60.0] != (50, 5)  # not the plain form: it has an option
    rows, hist = got[60.0]
    assert (rows, hist) == (50, 5)
    assert composite_of(got) == {60.0: 1.0}
    assert check_buffers(got) == got  # checking twice keeps the options
    # the defaults are unchanged: no buffer is composite
    assert composite_of(check_buffers(None)) == {}
    assert check_buffers({1: 100}) == {1.0: (100, 0)}


@pytest.mark.parametrize(
    ('spec', 'match'),
    [
        ({1: 100, 60: {'rows': 50, 'from': 5}}, r'from=5 names no buffer'),
        ({1: 100, 2.5: {'rows': 50, 'from': 1}}, r'whole multiple'),
        ({1: 100, 0.5: {'rows': 50, 'from': 1}}, r'whole multiple'),
        (
            {1: 100, 5: {'rows': 50, 'from': 1}, 60: {'rows': 50, 'from': 5}},
            r'itself composite',
        ),
        ({1: 100, 60: {'rows': 50, 'from': 'x'}}, r'buffers\[60.0\]: from: period'),
        ({1: 100, 60: {'rows': 50, 'form': 1}}, r"not \['form'\]"),
        ({1: 100, 60: {'history': 5}}, r'must have rows'),
    ],
)
def test_a_bad_composite_spec_is_refused_naming_it(spec, match):
    with pytest.raises(ValueError, match=match):
        check_buffers(spec)


async def stable_snapshot(shms: dict) -> dict:
    """Copies of the buffers the feed daemon writes in another process:
    taken until two in a row agree (no write landed between)."""
    with trio.fail_after(10):
        while True:
            a = {p: shm.array.copy() for p, shm in shms.items()}
            b = {p: shm.array.copy() for p, shm in shms.items()}
            # by bytes: a flat bar with no history is NaN, never equal to itself
            if all(a[p].tobytes() == b[p].tobytes() for p in a):
                return a
            await trio.sleep(0.01)


async def test_the_feed_daemon_builds_a_composite_buffer_from_its_source(other_addr):
    buffers = {1.0: 256, 3.0: {'rows': 64, 'from': 1.0}}
    async with open_service_root(other_addr):
        async with open_market_feed(['AAA'], config=FAST, buffers=buffers) as feed:
            shms = feed.buffers['AAA']
            three = shms[3.0]
            # five closed 3 s bars after the first (partial) one
            with trio.fail_after(40):
                while len(three) < 7:
                    await trio.sleep(0.1)
            snap = await stable_snapshot(shms)
            info = await feed.info()
    by_period = info.topics['AAA'].bars.by_period
    assert by_period[3.0].from_period == 1.0 and by_period[3.0].placed == 0
    assert by_period[1.0].placed > 0
    s1, s3 = snap[1.0], snap[3.0]
    compared = 0
    prev = None
    for row in s3[1:-1]:  # closed bars after the first, partial, one
        t = float(row['time'])
        got = tuple(float(row[f]) for f in FIELDS)
        src = s1[(s1['time'] >= t) & (s1['time'] < t + 3.0)]
        assert len(src) == 3, t  # the source holds all of the bar
        want = aggregate(src)
        if want is None:  # no trade: flat at the close before it
            want = (prev,) * 4 + (0.0,)
        assert got[:4] == want[:4] and math.isclose(got[4], want[4]), (t, got, want)
        prev = got[3]
        compared += want[4] > 0
    assert compared >= 3


# --- bar stamps (open or close) and origins, per buffer ----------------------


def test_an_old_token_decodes_to_the_plain_grid():
    from tractor_sampler.shm import ShmToken

    old = {
        'shm_name': 'x',
        'shm_ctl_name': 'x_ctl',
        'dtype_descr': [['time', '<f8']],
        'size': 4,
    }
    tok = ShmToken.from_msg(old)
    assert (tok.origin, tok.stamp) == (0.0, 'open')
    new = ShmToken.from_msg({**old, 'origin': 30, 'stamp': 'close'})
    assert (new.origin, new.stamp) == (30.0, 'close') and ShmToken.from_msg(
        new.to_msg()
    ) == new
    with pytest.raises(ValueError, match="stamp 'end' must be 'open'"):
        ShmToken.from_msg({**old, 'stamp': 'end'})
    with pytest.raises(ValueError, match='not a multiple of 0.1'):
        ShmToken.from_msg({**old, 'origin': 0.05})


def seeded(shm, t: float, close: float = 100.0) -> None:
    row = np.zeros(1, dtype=shm.dtype)
    row['time'] = t
    row['open'] = row['high'] = row['low'] = row['close'] = close
    shm.push(row)


def test_steps_put_rows_on_each_buffers_own_grid():
    from tractor_sampler import open_shm_array
    from tractor_sampler.shm import StepPlan

    with (
        open_shm_array(16, start=0, stamp='close') as closed,
        open_shm_array(16, start=0, origin=30.0, stamp='close') as shifted,
    ):
        seeded(closed, 1260.0)  # bar 20 (1200-1260), stamped on its end
        seeded(shifted, 1290.0)  # bar 1230-1290 of the :30 grid, on its end
        StepPlan([closed]).step(60.0, 1260.0)  # the bar opening at 1260
        StepPlan([shifted]).step(60.0)  # the next boundary after its last row
        assert closed.array['time'].tolist() == [1260.0, 1320.0]
        assert shifted.array['time'].tolist() == [1290.0, 1350.0]
        plan = StepPlan([shifted])
        plan.step(60.0, 1530.0)  # three boundaries jumped: a marked gap
        assert shifted.array['time'][-1] == 1590.0 and plan.last_gap == 3


async def test_samplerd_steps_each_origin_on_its_own_boundaries(autojump_clock):
    from tractor_sampler import open_shm_array
    from tractor_sampler._sampler import Sampler

    w0 = 1_700_000_000.0 - 1_700_000_000.0 % 60 + 5.0  # 5 s past a minute
    sampler = Sampler(wall=lambda: trio.current_time() + w0, spin_s=0)
    steps: list[float] = []
    orig = sampler._step

    async def step(p, t):
        steps.append(t)
        await orig(p, t)

    sampler._step = step
    plain = open_shm_array(16, start=0)
    half = open_shm_array(16, start=0, origin=30.0, stamp='close')
    try:
        seeded(plain, w0 - 5.0)  # the bar from the minute
        seeded(half, w0 - 35.0 + 60.0)  # the bar from :30 before, stamped on close
        sampler.add_buffer(60.0, plain.token)
        sampler.add_buffer(60.0, half.token)
        assert sampler.schedule.lanes == [(60.0, 0.0), (60.0, 30.0)]
        async with trio.open_nursery() as tn:
            await tn.start(sampler.increment_ohlc_buffer)
            await trio.sleep(150)
            tn.cancel_scope.cancel()
        base = w0 - 5.0
        assert steps == [base + 30, base + 60, base + 90, base + 120, base + 150]
        assert plain.array['time'].tolist() == [base, base + 60, base + 120]
        # stamped on close: the bar opening at :30 is the row at :30 + 60
        assert half.array['time'].tolist() == [
            base + 30,
            base + 90,
            base + 150,
            base + 210,
        ]
        sampler.remove_buffer((60.0, half.token.shm_name, 0))
        assert sampler.schedule.lanes == [(60.0, 0.0)]  # its lane went with it
    finally:
        for shm in (plain, half):
            shm.destroy()


def test_the_writer_honours_the_grid():
    from tractor_sampler import open_shm_array
    from tractor_sampler._ohlc import OHLCWriter
    from tractor_sampler.shm import StepPlan

    def trade(t, price, size=1.0):
        return {'type': 'trade', 'price': price, 'size': size, 'time': t}

    with (
        open_shm_array(16, start=0, origin=30.0, stamp='close') as m1,
        open_shm_array(16, start=0, origin=30.0, stamp='close') as m3,
    ):
        seeded(m1, 90.0)  # bar 30-90
        seeded(m3, 210.0)  # bar 30-210: three of m1's
        w = OHLCWriter({60.0: m1, 180.0: m3}, composite={180.0: 60.0})
        w.write([trade(30.0, 101.0), trade(89.9, 99.0)])
        StepPlan([m1]).step(60.0, 90.0)
        w.on_step(60.0)
        w.write([trade(90.0, 104.0, 2.0), trade(50.0, 97.0)])  # one on time, one late
        assert m1.array[
            ['time', 'open', 'high', 'low', 'close', 'volume']
        ].tolist() == [
            (90.0, 101.0, 101.0, 97.0, 97.0, 3.0),
            (150.0, 104.0, 104.0, 104.0, 104.0, 2.0),
        ]
        assert m3.array[
            ['time', 'open', 'high', 'low', 'close', 'volume']
        ].tolist() == [
            (210.0, 101.0, 104.0, 97.0, 104.0, 5.0),
        ]
        assert w.stats()['late'] == 1 and w.stats()['unplaced'] == 0


def test_buffers_take_origin_and_stamp():
    got = check_buffers(
        {1: 100, 60: {'rows': 50, 'origin': 30, 'stamp': 'close', 'from': 1}}
    )
    assert got[60.0] == BufferSpec(50, 0, composite=1.0, origin=30.0, stamp='close')
    assert got[60.0].options == {'from': 1.0, 'origin': 30.0, 'stamp': 'close'}
    with pytest.raises(ValueError, match=r"buffers\[60.0\]: stamp 'end'"):
        check_buffers({60: {'rows': 50, 'stamp': 'end'}})
    with pytest.raises(ValueError, match=r"start on the source's boundaries"):
        check_buffers({1: 100, 60: {'rows': 50, 'origin': 0.5, 'from': 1}})


def test_filling_missed_bars_follows_the_grid():
    from tractor_sampler import open_shm_array
    from tractor_sampler._feedd import fill_missed_bars

    with open_shm_array(16, start=0, origin=30.0, stamp='close') as shm:
        seeded(shm, 90.0)
        # now is in the bar 270-330: rows for 90-150, 150-210, 210-270, 270-330
        assert fill_missed_bars(shm, 60.0, now=275.0) == 4
        assert shm.array['time'].tolist() == [90.0, 150.0, 210.0, 270.0, 330.0]


# --- the first live bar: partial when the topic starts mid-bar ---------------


def test_buffers_take_skip_first_partial():
    got = check_buffers({1: 100, 60: {'rows': 50, 'skip_first_partial': True}})
    assert got[60.0].skip_first_partial and not got[1.0].skip_first_partial
    assert got[60.0].options == {'skip_first_partial': True}
    assert check_buffers({60: got[60.0].to_msg()}) == {60.0: got[60.0]}
    with pytest.raises(ValueError, match=r'buffers\[60.0\]: skip_first_partial=1'):
        check_buffers({60: {'rows': 50, 'skip_first_partial': 1}})


async def test_the_feed_daemon_marks_the_partial_first_bar_and_can_skip_it(
    other_addr,
):
    buffers = {1.0: 256, 3.0: {'rows': 64, 'skip_first_partial': True}}
    async with open_service_root(other_addr):
        async with open_market_feed(['AAA'], config=FAST, buffers=buffers) as feed:
            shms = feed.buffers['AAA']
            with trio.fail_after(40):
                while len(shms[3.0]) < 5:
                    await trio.sleep(0.1)
            snap = await stable_snapshot(shms)
            info = await feed.info()
    for p, shm in shms.items():
        tok = shm.token
        # no history: the first live bar is the open bar seeded at the start,
        # or the one after it when a boundary passed while the topic
        # registered; the topic did not start exactly on a boundary
        first_row = int(snap[p]['index'][0])
        assert tok.first_live in (first_row, first_row + 1) and tok.first_partial, p
        assert tok.partial_index == tok.first_live
        assert info.topics['AAA'].buffers[p].token == tok
    s1, s3 = snap[1.0], snap[3.0]
    pos = int(np.flatnonzero(s3['index'] == shms[3.0].token.first_live)[0])
    first = s3[pos]
    # skipped: flat at the seed (no history: NaN), no volume
    assert first['volume'] == 0.0 and math.isnan(first['close'])
    span = (s1['time'] >= first['time']) & (s1['time'] < first['time'] + 3.0)
    dropped = info.topics['AAA'].bars.by_period[3.0].unplaced
    assert (dropped > 0) == (s1['volume'][span].sum() > 0)
    # the whole bars after it have every trade, as the 1 s bars do
    for row in s3[pos + 1 : -1]:
        t = float(row['time'])
        src = s1[(s1['time'] >= t) & (s1['time'] < t + 3.0)]
        assert len(src) == 3
        assert math.isclose(float(row['volume']), float(src['volume'].sum())), t
