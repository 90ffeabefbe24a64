'''Trades into bars: the buffer equals an independent numpy aggregation,
and the consistency rule with samplerd's steps holds.'''
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
    '''OHLCV per bar computed independently: group by floor(t / period).'''
    out = np.zeros(n_bars, dtype=[('open', 'f8'), ('high', 'f8'), ('low', 'f8'), ('close', 'f8'), ('volume', 'f8')])
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
    st.floats(0, 0.999),              # when in its bar (fraction)
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
                        writer.write([{'type': 'trade', 'price': p, 'size': s, 'time': t}])
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
        assert w.write([{'type': 'bid', 'price': 1.0, 'size': 3}, {'type': 'ask', 'price': 2.0}], now=T0) == 0
        assert tuple(shm.array[-1])[2:] == (100.0, 100.0, 100.0, 100.0, 0.0)


def test_late_trade_goes_into_the_open_bar_and_is_counted():
    with open_shm_array(8, start=0) as shm:
        seed(shm)
        w = OHLCWriter({1.0: shm})
        step_many([shm], 1.0)
        w.on_step(1.0)
        w.write([{'type': 'trade', 'price': 90.0, 'size': 2, 'time': T0 + 0.5}])  # bar 0 has closed
        assert w.late_trades == 1
        assert tuple(shm.array[0])[2:] == (100.0, 100.0, 100.0, 100.0, 0.0)  # untouched
        assert tuple(shm.array[1])[2:] == (90.0, 90.0, 90.0, 90.0, 2.0)


def test_volume_from_the_backend():
    with open_shm_array(8, start=0) as shm:
        seed(shm)
        w = OHLCWriter({1.0: shm}, volume='quote')
        w.write([{'type': 'trade', 'price': 101.0, 'size': 2, 'volume': 500.0, 'time': T0 + 0.1}])
        w.write([{'type': 'trade', 'price': 102.0, 'size': 2, 'volume': 510.0, 'time': T0 + 0.2}])
        assert shm.array[-1]['volume'] == 510.0


def test_writer_refuses_bad_buffers():
    with open_shm_array(8) as shm:
        with pytest.raises(ValueError, match="'sum' or 'quote'"):
            OHLCWriter({1.0: shm}, volume='max')
        with pytest.raises(ValueError, match='multiple of 0.1'):
            OHLCWriter({0.25: shm})
    with open_shm_array(8, dtype=[('index', 'i8'), ('time', 'f8'), ('close', 'f8')]) as shm:
        with pytest.raises(ValueError, match='lacks fields'):
            OHLCWriter({1.0: shm})


def test_trades_far_past_the_last_bar_are_counted_not_hoarded():
    with open_shm_array(16) as shm:
        seed(shm)
        w = OHLCWriter({1.0: shm})
        tick = {'type': 'trade', 'price': 101.0, 'size': 1.0}
        # one bar ahead: held until samplerd opens it
        w.write([{**tick, 'time': T0 + 1.2}])
        assert w.pending == 1 and w.unplaced_trades == 0
        # ten bars ahead (nobody steps this buffer): counted and dropped, every time
        for _ in range(100):
            w.write([{**tick, 'time': T0 + 10.5}])
        assert w.pending == 1 and w.unplaced_trades == 100
        step_many([shm], 1.0)
        w.on_step(1.0)
        assert w.pending == 0 and shm.array['volume'][-1] == 1.0
