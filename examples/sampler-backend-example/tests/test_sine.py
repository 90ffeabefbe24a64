"""The sine backend: tractor-sampler's conformance kit, plus tests of its
own.  Run with the distribution installed (the kit finds the backend
through its entry point): ``python -m pytest tests``."""

from __future__ import annotations

import functools

import numpy as np
import pytest
import sampler_sine
import trio

from tractor_sampler.testing import BackendConformance


class TestSine(BackendConformance):
    """Every check the kit has: registration, stream shape and pacing,
    config errors, history and symbol info."""

    backend = 'sine'
    symbols = ['sin.a', 'sin.b']
    config = {'tick_rate': 200.0}


# -- the sine's own behaviour --------------------------------------------------

END = 1_700_000_000.0  # a fixed end time: the bars depend on nothing else
FIELDS = ['time', 'open', 'high', 'low', 'close', 'volume']


def history(*args, **config) -> np.ndarray:
    """``sampler_sine.history`` run to completion.  ``config`` may hold the
    wave's own ``period_s``: the bar's goes in ``args``."""
    return trio.run(functools.partial(sampler_sine.history, *args, **config))


def test_history_is_deterministic():
    a = history('sin.a', 60.0, END, 100)
    assert a.tobytes() == history('sin.a', 60.0, END, 100).tobytes()
    # a page ending 30 bars earlier agrees with it where they overlap
    page = history('sin.a', 60.0, END - 30 * 60.0, 100)
    for field in FIELDS:
        np.testing.assert_array_equal(page[field][30:], a[field][:70])
    # each symbol has its own phase; the wave's config changes the bars
    assert not np.array_equal(history('sin.b', 60.0, END, 100)['close'], a['close'])
    assert not np.array_equal(
        history('sin.a', 60.0, END, 100, period_s=600.0)['close'], a['close']
    )


def test_history_follows_the_wave():
    wave = sampler_sine.Wave(amplitude=2.0, period_s=30.0, base=50.0)
    bars = history('sin.a', 1.0, END, 90, amplitude=2.0, period_s=30.0, base=50.0)
    expected = np.round(wave.price('sin.a', bars['time']), 2)
    np.testing.assert_allclose(bars['open'], expected, atol=0.006)
    # bars chain: each opens at the previous close
    np.testing.assert_array_equal(bars['open'][1:], bars['close'][:-1])
    assert bars['low'].min() >= 48.0 - 0.01 and bars['high'].max() <= 52.0 + 0.01


def test_quotes_follow_the_wave():
    wave = sampler_sine.Wave()  # the defaults

    async def take(n: int) -> list[dict]:
        out = []
        async for batch in sampler_sine.stream_quotes(
            ['sin.a', 'sin.b'], tick_rate=500.0
        ):
            out.append(batch)
            if len(out) == n:
                return out
        raise AssertionError('the stream ended')

    batches = trio.run(take, 20)
    for sym in ('sin.a', 'sin.b'):
        quotes = [b[sym] for b in batches]
        for i, q in enumerate(quotes):
            mid = (q['bid'] + q['ask']) / 2
            assert abs(mid - wave.price(sym, q['time'])) <= 0.006
            trades = [t for t in q['ticks'] if t['type'] == 'trade']
            # a trade every TRADE_EVERY quotes, the first one included
            assert len(trades) == (i % sampler_sine.TRADE_EVERY == 0)
            if trades:
                assert trades[0]['price'] == q['last'] in (q['bid'], q['ask'])
        volumes = [q['volume'] for q in quotes]
        assert volumes == sorted(volumes) and volumes[-1] == 4.0


@pytest.mark.parametrize(
    'config',
    [
        {'tick_rate': 0},
        {'period_s': -1.0},
        {'amplitude': float('nan')},
        {'base': 1.0, 'amplitude': 1.0},
        {'colour': 'blue'},
    ],
)
def test_bad_config_raises_on_the_call(config):
    with pytest.raises((TypeError, ValueError)):
        sampler_sine.stream_quotes(['sin.a'], **config)
    with pytest.raises((TypeError, ValueError)):
        history('sin.a', 60.0, END, 10, **config)
