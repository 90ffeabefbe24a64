"""The simulated backend: deterministic, paced, well-formed quotes and
history."""

from __future__ import annotations

import math

import numpy as np
import pytest
import trio

from tractor_sampler.backends import sim
from tractor_sampler.shm import DEFAULT_DTYPE


async def take(n: int, symbols: list[str], **config) -> list[dict]:
    out = []
    async for batch in sim.stream_quotes(symbols, **config):
        out.append(batch)
        if len(out) == n:
            break
    return out


async def test_same_seed_same_quotes(autojump_clock):
    kw = {'anchored': False, 'clock': trio.current_time}
    a = await take(200, ['A', 'B'], seed=7, **kw)
    b = await take(200, ['A', 'B'], seed=7, **kw)
    c = await take(200, ['A', 'B'], seed=8, **kw)
    assert untimed(a) == untimed(b)
    assert untimed(a) != untimed(c)
    # the times are the clock's, the same offsets from each run's start
    ta, tb = (np.array([x['A']['time'] for x in r]) for r in (a, b))
    assert np.allclose(ta - ta[0], tb - tb[0])


def untimed(batches: list[dict]) -> list[dict]:
    """The batches without their (run-dependent) times."""
    return [
        {
            s: {
                **{k: v for k, v in q.items() if k not in ('time', 'ticks')},
                'ticks': [
                    {k: v for k, v in t.items() if k != 'time'} for t in q['ticks']
                ],
            }
            for s, q in x.items()
        }
        for x in batches
    ]


async def test_symbol_stream_does_not_depend_on_other_symbols(autojump_clock):
    a = await take(50, ['A'], seed=1, anchored=False, clock=trio.current_time)
    ab = await take(50, ['B', 'A'], seed=1, anchored=False, clock=trio.current_time)
    assert [x['A']['bid'] for x in a] == [x['A']['bid'] for x in ab]


@pytest.mark.parametrize('rate', [10.0, 250.0])
async def test_rate_on_absolute_deadlines(autojump_clock, rate):
    n = 500
    t0 = trio.current_time()
    batches = await take(n, ['A', 'B'], tick_rate=rate)
    elapsed = trio.current_time() - t0
    # the first batch comes at once, the n-th (n - 1) intervals later
    assert elapsed == pytest.approx((n - 1) / rate, rel=1e-9)
    assert all(set(b) == {'A', 'B'} for b in batches)


async def test_quote_fields_and_tick_types(autojump_clock):
    batches = await take(300, ['A'], trade_prob=0.5)
    types = set()
    for b in batches:
        q = b['A']
        assert {
            'last',
            'bid',
            'ask',
            'bsize',
            'asize',
            'volume',
            'time',
            'ticks',
        } <= set(q)
        assert q['bid'] < q['ask']
        assert q['bsize'] > 0 and q['asize'] > 0
        for t in q['ticks']:
            types.add(t['type'])
            assert t['price'] > 0 and t['size'] > 0
            if t['type'] == 'trade':
                assert t['price'] in (q['bid'], q['ask'])
                assert t['time'] == q['time']
                assert q['last'] == t['price']
    assert types == {'bid', 'ask', 'bsize', 'asize', 'trade'}


async def test_times_follow_the_wall_clock(autojump_clock):
    import time

    before = time.time()
    batches = await take(20, ['A'], tick_rate=10.0)
    times = [b['A']['time'] for b in batches]
    assert times[0] >= before - 1
    assert np.allclose(np.diff(times), 0.1)


async def test_trade_frequency_matches_trade_prob(autojump_clock):
    n = 4000
    batches = await take(n, ['A'], trade_prob=0.1, tick_rate=1000.0)
    trades = sum(any(t['type'] == 'trade' for t in b['A']['ticks']) for b in batches)
    # binomial: sd = sqrt(n p (1-p)) = 19; allow 5 sd
    assert abs(trades - 0.1 * n) < 5 * math.sqrt(n * 0.1 * 0.9)


async def test_zero_and_full_trade_prob(autojump_clock):
    none = await take(100, ['A'], trade_prob=0.0)
    every = await take(100, ['A'], trade_prob=1.0)
    assert not any(t['type'] == 'trade' for b in none for t in b['A']['ticks'])
    assert all(any(t['type'] == 'trade' for t in b['A']['ticks']) for b in every)
    assert every[-1]['A']['volume'] == sum(
        t['size'] for b in every for t in b['A']['ticks'] if t['type'] == 'trade'
    )


async def test_slow_consumer_far_behind_restarts_schedule(autojump_clock):
    stream = sim.stream_quotes(['A'], tick_rate=10.0)
    await stream.__anext__()
    await trio.sleep(5.0)  # far more than MAX_LAG_S behind
    t0 = trio.current_time()
    await stream.__anext__()
    await stream.__anext__()
    assert trio.current_time() - t0 == pytest.approx(0.1)
    await stream.aclose()  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    'kwargs, exc',
    [
        ({'tick_rate': 0}, ValueError),
        ({'tick_rate': -1.0}, ValueError),
        ({'tick_rate': math.inf}, ValueError),
        ({'tick_rate': 'fast'}, TypeError),
        ({'trade_prob': 1.5}, ValueError),
        ({'trade_prob': -0.1}, ValueError),
        ({'start_price': 0}, ValueError),
        ({'tick_size': 0}, ValueError),
        ({'start_price': 0.001, 'tick_size': 0.01}, ValueError),
    ],
)
def test_stream_config_is_validated_on_call(kwargs, exc):
    with pytest.raises(exc):
        sim.stream_quotes(['A'], **kwargs)


@pytest.mark.parametrize(
    'symbols, exc',
    [
        ('AAPL', TypeError),
        ([], ValueError),
        (['A', 'A'], ValueError),
        ([''], ValueError),
        ([' '], ValueError),
        (['AAA,BBB'], ValueError),
        (['AAA BBB'], ValueError),
        (['A' * 33], ValueError),
    ],
)
def test_symbols_are_validated(symbols, exc):
    with pytest.raises(exc):
        sim.stream_quotes(symbols)


@pytest.mark.parametrize('symbol', [' ', 'AAA,BBB', 'A\tB', ''])
async def test_a_mistyped_symbol_is_refused_by_every_hook(symbol):
    with pytest.raises(ValueError, match='bad symbol'):
        await sim.symbol_info(symbol)
    with pytest.raises(ValueError, match='bad symbol'):
        await sim.history(symbol, 1.0, 1_700_000_000.0, 10)


def test_symbols_of_real_venues_pass():
    assert sim.stream_quotes(['AAA', 'BTC/USD', 'ES.F', 'eur_usd', 'X:Y-Z']) is not None


@pytest.mark.parametrize('period', [0.5, 1.0, 60.0, 3600.0])
async def test_history_shape_alignment_and_ohlc(period):
    end = 1_700_000_123.25
    bars = await sim.history('A', period, end, 500)
    assert bars.dtype == DEFAULT_DTYPE
    assert len(bars) == 500
    t = bars['time']
    assert np.allclose(np.diff(t), period)
    assert np.allclose(np.round(t / period), t / period)  # on boundaries
    assert t[-1] + period <= end < t[-1] + 2 * period
    assert (bars['low'] <= np.minimum(bars['open'], bars['close'])).all()
    assert (bars['high'] >= np.maximum(bars['open'], bars['close'])).all()
    assert (bars['low'] > 0).all() and (bars['volume'] >= 0).all()
    assert np.array_equal(bars['open'][1:], bars['close'][:-1])
    assert np.array_equal(bars['index'], np.arange(500))


async def test_history_is_deterministic_and_pages_agree():
    end = 1_700_000_000.0
    a = await sim.history('A', 60, end, 300)
    b = await sim.history('A', 60, end, 300)
    assert np.array_equal(a, b)
    # an earlier page overlaps the same bars exactly
    page = await sim.history('A', 60, end - 100 * 60, 300)
    fields = ['time', 'open', 'high', 'low', 'close', 'volume']
    assert np.array_equal(page[fields][100:], a[fields][:200])
    other = await sim.history('A', 60, end, 300, seed=1)
    assert not np.array_equal(a['close'], other['close'])
    sym_b = await sim.history('B', 60, end, 300)
    assert not np.array_equal(a['close'], sym_b['close'])


async def test_history_end_on_a_boundary_and_empty():
    bars = await sim.history('A', 60, 6000.0, 3)
    assert list(bars['time']) == [5820.0, 5880.0, 5940.0]
    assert len(await sim.history('A', 60, 6000.0, 0)) == 0


@pytest.mark.parametrize(
    'args, exc',
    [
        (('A', 0, 1e9, 10), ValueError),
        (('A', 60, 1e9, -1), ValueError),
        (('A', 60, 1e9, 1.5), ValueError),
        (('A', 60, math.nan, 10), ValueError),
        (('', 60, 1e9, 10), ValueError),
    ],
)
async def test_history_args_are_validated(args, exc):
    with pytest.raises(exc):
        await sim.history(*args)


async def test_history_fits_prepend_history():
    from tractor_sampler import prepend_history
    from tractor_sampler.shm import open_shm_array

    bars = await sim.history('A', 1.0, 1000.0, 10)
    with open_shm_array(64) as shm:
        start, end = prepend_history(shm, bars, 1.0)
        assert end - start == 10
        assert np.array_equal(shm.array['close'], bars['close'])


async def test_the_stream_starts_where_history_ends_and_periods_agree():
    t0 = 1_700_000_040.0  # on a minute boundary
    [first] = await take(1, ['A', 'B'], seed=3, clock=lambda: t0)
    for sym in ('A', 'B'):
        [bar] = await sim.history(sym, 1.0, t0, 1, seed=3)
        mid = (first[sym]['bid'] + first[sym]['ask']) / 2
        assert abs(mid - bar['close']) <= 0.03  # within the spread of the last close
    # 1 s and 1 min bars open and close on one path
    minute = await sim.history('A', 60.0, t0, 3)
    seconds = await sim.history('A', 1.0, t0, 180)
    assert np.array_equal(minute['open'], seconds['open'][::60])
    assert minute['close'][-1] == seconds['close'][-1]
    # anchored=False starts at start_price exactly
    [plain] = await take(1, ['A'], anchored=False, start_price=50.0, clock=lambda: t0)
    assert abs((plain['A']['bid'] + plain['A']['ask']) / 2 - 50.0) <= 0.03


async def test_symbol_info():
    info = await sim.symbol_info('A', tick_size=0.25)
    assert info == {
        'symbol': 'A',
        'tick_size': 0.25,
        'lot_size': 1.0,
        'asset_type': 'sim',
    }
    with pytest.raises(ValueError):
        await sim.symbol_info('')
