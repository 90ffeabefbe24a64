"""Trades into bars: the buffer equals an independent numpy aggregation,
and the consistency rule with samplerd's steps holds."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tractor_sampler import open_shm_array
from tractor_sampler._ohlc import OHLCWriter
from tractor_sampler.shm import step_many

T0 = 1_699_999_980.0  # on every boundary used here (a multiple of 60)


def seed(shm, close=100.0):
    row = np.zeros(1, dtype=shm.dtype)
    row['index'], row['time'] = 0, T0
    row['open'] = row['high'] = row['low'] = row['close'] = close
    shm.push(row)


def reference(trades, period, n_bars, first_close=100.0):
    """OHLCV per bar computed independently: group by floor(t / period)."""
    out = np.zeros(
        n_bars,
        dtype=[
            ('open', 'f8'),
            ('high', 'f8'),
            ('low', 'f8'),
            ('close', 'f8'),
            ('volume', 'f8'),
        ],
    )
    times = np.array([t for t, _, _ in trades])
    prices = np.array([p for _, p, _ in trades])
    sizes = np.array([s for _, _, s in trades])
    # bars by integer microseconds since T0
    us = np.round(times * 1e6).astype(np.int64) - round(T0 * 1e6)
    bars = us // round(period * 1e6) if len(trades) else np.array([], int)
    prev = first_close
    for b in range(n_bars):
        sel = bars == b
        if sel.any():
            pr = prices[sel]
            out[b] = (pr[0], pr.max(), pr.min(), pr[-1], sizes[sel].sum())
            prev = pr[-1]
        else:
            out[b] = (prev, prev, prev, prev, 0.0)
    return out


trade = st.tuples(
    st.floats(0, 0.999),  # when in its bar (fraction)
    st.floats(1, 1000, allow_nan=False),  # price
    st.floats(0.001, 50, allow_nan=False),  # size
)


@settings(max_examples=150, deadline=None)
@given(
    period=st.sampled_from([0.1, 1.0, 60.0]),
    bars=st.lists(st.lists(trade, max_size=6), min_size=1, max_size=8),
    late_step=st.lists(st.booleans(), min_size=8, max_size=8),
)
def test_buffer_equals_reference_aggregation(period, bars, late_step):
    trades = []
    for b, in_bar in enumerate(bars):
        for frac, price, size in sorted(in_bar):
            trades.append((T0 + (b + frac) * period, round(price, 4), round(size, 4)))
    with open_shm_array(64, start=0) as shm:
        seed(shm)
        writer = OHLCWriter({period: shm})
        i = 0
        for b in range(len(bars)):
            boundary = T0 + b * period
            if b > 0:
                # samplerd's step sometimes lands after the bar's first trades
                # (they are held until the writer sees the step)
                if late_step[b % 8]:
                    while i < len(trades) and trades[i][0] < boundary + period * 0.2:
                        t, p, s = trades[i]
                        writer.write(
                            [{'type': 'trade', 'price': p, 'size': s, 'time': t}]
                        )
                        i += 1
                step_many([shm], period)
                writer.on_step(period)
            while i < len(trades) and trades[i][0] < boundary + period:
                t, p, s = trades[i]
                writer.write([{'type': 'trade', 'price': p, 'size': s, 'time': t}])
                i += 1
        got = shm.array
        ref = reference(trades, period, len(bars))
        assert writer.pending == 0 and writer.late_trades == 0
        assert list(got['index']) == list(range(len(bars)))
        assert np.allclose(got['time'], T0 + np.arange(len(bars)) * period)
        for f in ('open', 'high', 'low', 'close', 'volume'):
            assert np.allclose(got[f], ref[f]), f


def test_quotes_and_non_clearing_ticks_do_not_touch_bars():
    with open_shm_array(8, start=0) as shm:
        seed(shm)
        w = OHLCWriter({1.0: shm})
        assert (
            w.write(
                [
                    {'type': 'bid', 'price': 1.0, 'size': 3},
                    {'type': 'ask', 'price': 2.0},
                ],
                now=T0,
            )
            == 0
        )
        assert tuple(shm.array[-1])[2:] == (100.0, 100.0, 100.0, 100.0, 0.0)


def trade(t, price=101.0, size=1.0, **kw):
    return {'type': 'trade', 'price': price, 'size': size, 'time': t, **kw}


def ohlcv(row):
    return tuple(float(x) for x in tuple(row)[2:])


def test_late_trade_corrects_its_closed_bar_and_is_counted():
    with open_shm_array(8, start=0) as shm:
        seed(shm)
        w = OHLCWriter({1.0: shm})
        w.write([trade(T0 + 0.2, 100.0, 1)])
        step_many([shm], 1.0, T0 + 1)
        step_many([shm], 1.0, T0 + 2)
        w.on_step(1.0)
        w.write([trade(T0 + 0.5, 90.0, 2)])  # bar 0 has closed
        assert w.late_trades == 1 and w.stats()['corrected'] >= 1
        assert ohlcv(shm.array[0]) == (100.0, 100.0, 90.0, 90.0, 3.0)
        # the empty bars after it carry its new close
        assert (
            ohlcv(shm.array[1]) == ohlcv(shm.array[2]) == (90.0, 90.0, 90.0, 90.0, 0.0)
        )
        # and the rows that changed are reported, once, by their index
        assert w.take_corrections() == [(1.0, 0, 2)]
        assert w.take_corrections() == []


def test_held_trades_land_in_their_own_bars_after_a_catch_up():
    """Issue #10.1: trades at T0+1.2 and T0+2.05, then two steps delivered
    at once: each bar holds its own trade."""
    with open_shm_array(8, start=0) as shm:
        seed(shm)
        w = OHLCWriter({1.0: shm})
        w.write([trade(T0 + 1.2, 101.0, 1.0)])
        w.write([trade(T0 + 2.05, 102.0, 2.0)])
        assert w.pending == 2 and w.stats()['held'] == 2
        step_many([shm], 1.0, T0 + 1)
        step_many([shm], 1.0, T0 + 2)
        w.on_step(1.0)
        w.on_step(1.0)
        assert w.pending == 0 and w.unplaced_trades == 0
        assert ohlcv(shm.array[1]) == (101.0, 101.0, 101.0, 101.0, 1.0)
        assert ohlcv(shm.array[2]) == (102.0, 102.0, 102.0, 102.0, 2.0)


def test_a_trade_just_before_a_boundary_is_in_the_bar_before_it():
    """Issue #10.5: floored, not rounded to the microsecond."""
    with open_shm_array(8, start=0) as shm:
        seed(shm)
        w = OHLCWriter({1.0: shm})
        before = float(np.nextafter(T0 + 1, -np.inf))
        w.write([trade(before, 99.0, 1.0)])
        step_many([shm], 1.0, T0 + 1)
        w.on_step(1.0)
        w.write([trade(T0 + 1, 98.0, 1.0)])
        assert ohlcv(shm.array[0])[3:] == (99.0, 1.0)
        assert ohlcv(shm.array[1]) == (98.0, 98.0, 98.0, 98.0, 1.0)
        assert w.late_trades == 0 and w.pending == 0


def test_a_clock_ahead_loses_no_trade_every_buffer_alike():
    """Issue #10.3: trades several bars ahead of the last row are held in
    every buffer and placed when their bars open, not dropped."""
    with open_shm_array(64, start=0) as s1, open_shm_array(8, start=0) as s60:
        seed(s1)
        seed(s60)
        w = OHLCWriter({1.0: s1, 60.0: s60})
        for i in range(10):  # stamped 2.5 s ahead of the bar that is open
            w.write([trade(T0 + 2.5 + i * 0.1, 100.0 + i, 1.0)])
        assert w.unplaced_trades == 0
        for k in range(1, 4):
            step_many([s1], 1.0, T0 + k)
            w.on_step(1.0)
        assert w.pending == 0 and w.unplaced_trades == 0
        assert s1.array['volume'].tolist() == [0.0, 0.0, 5.0, 5.0]
        assert s60.array['volume'].tolist() == [10.0]


def test_cumulative_volume_is_right_in_every_buffer():
    """Issue #10.4: a backend's running total, trades of 5, 3 then 2."""
    with open_shm_array(8, start=0) as s1, open_shm_array(8, start=0) as s60:
        seed(s1)
        seed(s60)
        w = OHLCWriter({1.0: s1, 60.0: s60}, volume='cumulative')
        w.write([trade(T0 + 0.1, 101.0, 5.0, volume=1005.0)])
        step_many([s1], 1.0, T0 + 1)
        w.write([trade(T0 + 1.1, 102.0, 3.0, volume=1008.0)])
        step_many([s1], 1.0, T0 + 2)
        w.write([trade(T0 + 2.1, 103.0, 2.0, volume=1010.0)])
        assert s1.array['volume'].tolist() == [5.0, 3.0, 2.0]
        assert s60.array['volume'].tolist() == [10.0]
        # a late trade adds to its own bar, it overwrites nothing
        w.write([trade(T0 + 0.5, 100.0, 1.0, volume=1011.0)])
        assert s1.array['volume'].tolist() == [6.0, 3.0, 2.0]
        assert s60.array['volume'].tolist() == [11.0]
        # a lower total is a new session: that trade counts its own size
        w.write([trade(T0 + 2.2, 103.0, 4.0, volume=4.0)])
        assert s1.array['volume'].tolist() == [6.0, 3.0, 6.0]


def test_volume_mode_comes_from_the_backends_symbol_info():
    from tractor_sampler._ohlc import volume_mode

    assert volume_mode(None) == 'sum' and volume_mode({}) == 'sum'
    assert volume_mode({'volume': 'cumulative'}) == 'cumulative'
    with pytest.raises(ValueError, match='volume'):
        volume_mode({'volume': 'quote'})


def test_unplaceable_trades_are_counted():
    with open_shm_array(16, start=0) as shm:
        seed(shm)
        w = OHLCWriter({1.0: shm}, max_ahead_s=60.0, max_held=5)
        w.write([trade(T0 - 5)])  # before the first live bar (history is the backend's)
        w.write([trade(float('nan'))])
        w.write([trade(T0 + 3600)])  # far beyond the hold horizon
        assert w.unplaced_trades == 3 and w.pending == 0
        for i in range(8):  # more than max_held held: the rest counted
            w.write([trade(T0 + 5 + i * 0.01)])
        assert w.pending == 5 and w.unplaced_trades == 6
        # a bar skipped by a jump has no row
        w2 = OHLCWriter({1.0: shm})
        st = w2.stats()
        step_many([shm], 1.0, T0 + 10)  # rows for bars 1..9 were never made
        w2.on_step(1.0)
        w2.write([trade(T0 + 4.5)])
        assert w2.stats()['unplaced'] == st['unplaced'] + 1


def test_writer_refuses_bad_buffers():
    with open_shm_array(8) as shm:
        with pytest.raises(ValueError, match='must be one of'):
            OHLCWriter({1.0: shm}, volume='max')
        with pytest.raises(ValueError, match="'quote' was removed"):
            OHLCWriter({1.0: shm}, volume='quote')
        with pytest.raises(ValueError, match='multiple of 0.1'):
            OHLCWriter({0.25: shm})
    with open_shm_array(
        8, dtype=[('index', 'i8'), ('time', 'f8'), ('close', 'f8')]
    ) as shm:
        with pytest.raises(ValueError, match='lacks fields'):
            OHLCWriter({1.0: shm})


# --- composite bars ------------------------------------------------------------


def aggregate(rows, traded):
    """The composite bar of source ``rows`` (those with ``traded`` True),
    computed here: open of the first, extremes, close of the last, sum."""
    sel = rows[np.asarray(traded, bool)]
    if not len(sel):
        return None
    return (
        float(sel['open'][0]),
        float(sel['high'].max()),
        float(sel['low'].min()),
        float(sel['close'][-1]),
        float(sel['volume'].sum()),
    )


def test_a_composite_buffer_is_built_from_its_sources_bars_never_from_trades():
    with open_shm_array(64, start=0) as s1, open_shm_array(16, start=0) as s5:
        seed(s1), seed(s5)
        w = OHLCWriter({1.0: s1, 5.0: s5}, composite={5.0: 1.0})

        def trade(t, px, sz=1.0):
            return {'type': 'trade', 'price': px, 'size': sz, 'time': T0 + t}

        w.write([trade(0.2, 101.0), trade(0.7, 99.0, 2.0)])
        assert ohlcv(s5.array[-1]) == (101.0, 101.0, 99.0, 99.0, 3.0)
        for _ in range(2):  # seconds 1 and 2: no trade in 1, one in 2
            step_many([s1], 1.0)
            w.on_step(1.0)
        w.write([trade(2.5, 104.0, 4.0)])
        assert ohlcv(s5.array[-1]) == (101.0, 104.0, 99.0, 104.0, 7.0)
        # a late trade corrects 1 s bar 1 and, through it, the open 5 s bar
        w.write([trade(1.1, 97.0)])
        assert (
            ohlcv(s5.array[-1])
            == aggregate(s1.array, [1, 1, 1])
            == (101.0, 104.0, 97.0, 104.0, 8.0)
        )
        # the 5 s bar closes; 1 s bars 3..5; a late trade for second 4
        # corrects the closed 5 s bar (broadcast like any correction)
        for _ in range(3):
            step_many([s1], 1.0)
            w.on_step(1.0)
        step_many([s5], 5.0)
        w.on_step(5.0)
        w.take_corrections()
        w.write([trade(4.5, 110.0)])
        assert (
            ohlcv(s5.array[0])
            == aggregate(s1.array[:5], [1, 1, 1, 0, 1])
            == (101.0, 110.0, 97.0, 110.0, 9.0)
        )
        # the open 5 s bar (no trade yet) carries the corrected close
        assert ohlcv(s5.array[1]) == (110.0,) * 4 + (0.0,)
        assert w.take_corrections() == [(1.0, 4, 5), (5.0, 0, 1)]
        st = w.stats()['by_period']
        assert (
            st['5.0']['from'] == 1.0
            and st['5.0']['placed'] == 0
            and st['1.0']['placed'] == 5
        )


def test_a_composite_bar_whose_row_comes_after_its_sources_is_built_then():
    """samplerd steps the 1 s buffer into the next 5 s bar (and trades go
    there) before the 5 s step arrives: the 5 s row is built from the 1 s
    bars when it appears."""
    with open_shm_array(64, start=0) as s1, open_shm_array(16, start=0) as s5:
        seed(s1), seed(s5)
        w = OHLCWriter({1.0: s1, 5.0: s5}, composite={5.0: 1.0})
        for _ in range(6):
            step_many([s1], 1.0)
        w.on_step(1.0)
        w.write([{'type': 'trade', 'price': 120.0, 'size': 2.0, 'time': T0 + 5.5}])
        assert ohlcv(s5.array[-1]) == (100.0,) * 4 + (0.0,)  # bar 0: no trade
        step_many([s5], 5.0)
        w.on_step(5.0)
        assert ohlcv(s5.array[-1]) == (120.0, 120.0, 120.0, 120.0, 2.0)


def test_composite_buffers_are_checked():
    with (
        open_shm_array(16, start=0) as s1,
        open_shm_array(16, start=0) as s2,
        open_shm_array(16, start=0) as s3,
    ):
        for bad, match in (
            ({60.0: 1.0}, 'no composite buffer of 60'),
            ({1.5: 1.0}, 'no composite buffer of 1.5'),
            ({2.0: 0.5}, 'no source buffer'),
            ({3.0: 2.0}, 'whole multiple'),
            ({1.0: 2.0}, 'whole multiple'),
        ):
            with pytest.raises(ValueError, match=match):
                OHLCWriter({1.0: s1, 2.0: s2, 3.0: s3}, composite=bad)
        # a chain: 2 s from 1 s is fine, but then nothing is built from 2 s
        with pytest.raises(ValueError, match='itself composite'):
            OHLCWriter({1.0: s1, 2.0: s2, 4.0: s3}, composite={2.0: 1.0, 4.0: 2.0})


def test_skip_partial_writes_no_trade_into_a_bar_the_feed_joined_mid_way():
    with (
        open_shm_array(16, start=0) as s1,
        open_shm_array(16, start=0) as s3,
        open_shm_array(16, start=0) as whole,
    ):
        for shm in (s1, s3, whole):
            seed(shm)
        w = OHLCWriter({1.0: s1, 3.0: s3})
        w.skip_partial(T0 + 0.5, [1.0, 3.0])  # joined half a second in
        trades = [
            {'type': 'trade', 'price': 101.0, 'size': 1.0, 'time': T0 + 0.6},
            {'type': 'trade', 'price': 102.0, 'size': 2.0, 'time': T0 + 1.2},
        ]
        w.write(trades[:1])
        step_many([s1], 1.0, T0 + 1.0)
        w.on_step(1.0)
        w.write(trades[1:])
        # 1 s: the partial bar stays flat; the next one is whole
        assert s1.array[['close', 'volume']].tolist() == [(100.0, 0.0), (102.0, 2.0)]
        # 3 s: its first bar holds T0 + 0.5 too: both trades left out
        assert s3.array[['close', 'volume']].tolist() == [(100.0, 0.0)]
        assert w.stats()['by_period']['1.0']['unplaced'] == 1
        assert w.stats()['by_period']['3.0']['unplaced'] == 2
        # a feed that starts exactly on a boundary has a whole first bar
        w2 = OHLCWriter({1.0: whole})
        w2.skip_partial(T0)
        w2.write(trades[:1])
        assert whole.array[['close', 'volume']].tolist() == [(101.0, 1.0)]
        assert w2.stats()['unplaced'] == 0
