"""History prepended before the window, and the backfill event."""

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


def test_history_in_another_dtype_is_copied_by_field_name():
    # reordered fields plus one the buffer lacks: matched by name, not position
    other = np.dtype(
        [
            ('close', 'f8'),
            ('time', 'f8'),
            ('vwap', 'f8'),
            ('open', 'f8'),
            ('high', 'f8'),
            ('low', 'f8'),
            ('volume', 'f8'),
            ('index', 'i8'),
        ]
    )
    with open_shm_array(32) as shm:
        live = np.zeros(1, dtype=shm.dtype)
        live['index'], live['time'] = 10, T0
        shm.push(live)
        src = np.zeros(3, dtype=other)
        src['time'] = T0 - 60.0 * np.arange(3, 0, -1)
        src['close'], src['open'], src['vwap'], src['volume'] = (
            [1, 2, 3],
            [4, 5, 6],
            99,
            7,
        )
        prepend_history(shm, src, 60.0)
        got = shm.array[:3]
        assert list(got['close']) == [1, 2, 3] and list(got['open']) == [4, 5, 6]
        assert list(got['time']) == list(src['time']) and set(got['volume']) == {7}
        with pytest.raises(ValueError, match='no time field'):
            prepend_history(shm, np.zeros(2, dtype=[('close', 'f8')]), 60.0)


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
            async with (
                open_sample_stream(0.1) as listener,
                open_sample_stream(0.1) as writer,
            ):
                start, end = await backfill(
                    writer, shm, bars(shm, 10, T0, 60.0), topic='btc', period_s=60.0
                )
                with trio.fail_after(10):
                    async for msg in listener:
                        if isinstance(msg, Backfill):
                            break
        assert msg == Backfill(
            topic='btc', timeframe=60.0, start_index=490, end_index=500
        )
        assert (start, end) == (490, 500)
