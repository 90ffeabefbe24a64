'''The bar options of issue #10's "Beyond" part (NautilusTrader's
TimeBarAggregator options), per buffer: composite buffers built by the
feed daemon (``buffers={3.0: {'rows': n, 'from': 1.0}}``).'''
from __future__ import annotations

import math

import numpy as np
import pytest
import trio

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


@pytest.mark.parametrize(('spec', 'match'), [
    ({1: 100, 60: {'rows': 50, 'from': 5}}, r'from=5 names no buffer'),
    ({1: 100, 2.5: {'rows': 50, 'from': 1}}, r'whole multiple'),
    ({1: 100, 0.5: {'rows': 50, 'from': 1}}, r'whole multiple'),
    ({1: 100, 5: {'rows': 50, 'from': 1}, 60: {'rows': 50, 'from': 5}}, r'itself composite'),
    ({1: 100, 60: {'rows': 50, 'from': 'x'}}, r'buffers\[60.0\]: from: period'),
    ({1: 100, 60: {'rows': 50, 'form': 1}}, r"not \['form'\]"),
    ({1: 100, 60: {'history': 5}}, r'must have rows'),
])
def test_a_bad_composite_spec_is_refused_naming_it(spec, match):
    with pytest.raises(ValueError, match=match):
        check_buffers(spec)


def aggregate(rows: np.ndarray) -> tuple | None:
    '''The composite of source ``rows``: over those that traded (the
    simulated venue trades sizes >= 1).'''
    sel = rows[rows['volume'] > 0]
    if not len(sel):
        return None
    return (float(sel['open'][0]), float(sel['high'].max()), float(sel['low'].min()),
            float(sel['close'][-1]), float(sel['volume'].sum()))


async def stable_snapshot(shms: dict) -> dict:
    '''Copies of the buffers the feed daemon writes in another process:
    taken until two in a row agree (no write landed between).'''
    with trio.fail_after(10):
        while True:
            a = {p: shm.array.copy() for p, shm in shms.items()}
            b = {p: shm.array.copy() for p, shm in shms.items()}
            if all(len(a[p]) == len(b[p]) and (a[p] == b[p]).all() for p in a):
                return a
            await trio.sleep(0.01)


async def test_the_feed_daemon_builds_a_composite_buffer_from_its_source(other_addr):
    buffers = {1.0: 256, 3.0: {'rows': 64, 'from': 1.0}}
    async with open_service_root(other_addr):
        async with open_market_feed(['AAA'], config=FAST, buffers=buffers) as feed:
            shms = feed.buffers['AAA']
            one, three = shms[1.0], shms[3.0]
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
