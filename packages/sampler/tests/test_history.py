'''History prepended before the window, and the backfill event.'''
import numpy as np
import pytest
import trio

from tractor_sampler import (
    Backfill,
    backfill,
    open_sample_stream,
    open_shm_array,
    prepend_history,
)
from tractor_services import open_service_root

T0 = 1_699_999_980.0


def bars(shm, n, end_time, period):
    out = np.zeros(n, dtype=shm.dtype)
    out['time'] = end_time - period * np.arange(n, 0, -1)
    out['close'] = out['open'] = out['high'] = out['low'] = np.arange(n) + 1.0
    return out


def test_prepend_numbers_rows_backwards_and_keeps_order():
    with open_shm_array(32) as shm:
        live = np.zeros(1, dtype=shm.dtype)
        live['index'], live['time'] = 1000, T0
        shm.push(live)
        start, end = prepend_history(shm, bars(shm, 5, T0, 60.0), 60.0)
        assert (start, end) == (995, 1000)
        assert list(shm.array['index']) == list(range(995, 1001))
        assert np.allclose(np.diff(shm.array['time']), 60.0)


def test_history_must_meet_the_buffer():
    with open_shm_array(32) as shm:
        live = np.zeros(1, dtype=shm.dtype)
        live['time'] = T0
        shm.push(live)
        with pytest.raises(ValueError, match='one 60.0 s period apart'):
            prepend_history(shm, bars(shm, 3, T0 - 120, 60.0), 60.0)
        gappy = bars(shm, 3, T0, 60.0)
        gappy['time'][0] -= 7
        with pytest.raises(ValueError, match='not one per'):
            prepend_history(shm, gappy, 60.0)
        with pytest.raises(ValueError, match='no history'):
            prepend_history(shm, bars(shm, 0, T0, 60.0), 60.0)


async def test_backfill_prepends_and_every_subscriber_hears(other_addr):
    async with open_service_root(other_addr):
        with open_shm_array(64) as shm:
            live = np.zeros(1, dtype=shm.dtype)
            live['index'], live['time'] = 500, T0
            shm.push(live)
            async with open_sample_stream(0.1) as listener, open_sample_stream(0.1) as writer:
                start, end = await backfill(writer, shm, bars(shm, 10, T0, 60.0), topic='btc', period_s=60.0)
                with trio.fail_after(10):
                    async for msg in listener:
                        if isinstance(msg, Backfill):
                            break
        assert msg == Backfill(topic='btc', timeframe=60.0, start_index=490, end_index=500)
        assert (start, end) == (490, 500)
