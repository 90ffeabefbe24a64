"""
History: prepend past bars before a buffer's window and tell every
subscriber which rows changed.

"""

from __future__ import annotations

from typing import Any

import numpy as np

from ._schedule import check_period
from .shm import ShmArray


def prepend_history(
    shm: ShmArray, bars: np.ndarray, period_s: float
) -> tuple[int, int]:
    """Prepend ``bars`` (the buffer's dtype, oldest first, one per period,
    ending right before the buffer's first row) and number their
    ``index`` field to continue backwards from it.  Returns the changed
    index range ``(start_index, end_index)`` (end exclusive)."""
    p = check_period(period_s)
    bars = np.asarray(bars)
    if bars.dtype != shm.dtype:
        # by field name (``astype`` would match fields by position): extra
        # fields are dropped, missing ones stay zero
        names = bars.dtype.names or ()
        if 'time' not in names:
            raise ValueError(
                f'history bars of dtype {bars.dtype} do not fit buffer {shm.name!r}: no time field'
            )
        conv = np.zeros(len(bars), dtype=shm.dtype)
        try:
            for f in shm.dtype.names or ():
                if f in names:
                    conv[f] = bars[f]
        except (TypeError, ValueError) as err:
            raise ValueError(
                f'history bars of dtype {bars.dtype} do not fit buffer {shm.name!r}: {err}'
            ) from None
        bars = conv
    if not len(bars):
        raise ValueError('no history bars given')
    times = bars['time']
    if len(bars) > 1 and not np.allclose(np.diff(times), p):
        raise ValueError(f'history bars are not one per {p} s period, oldest first')
    bars = bars.copy()
    if len(shm):
        head = shm.array[0]
        if abs(times[-1] + p - head['time']) > 1e-6:
            raise ValueError(
                f"history ends at {times[-1]} but the buffer's first bar is at "
                f'{head["time"]}: they must be one {p} s period apart'
            )
        end_index = int(head['index'])
    else:
        end_index = len(bars)
    bars['index'] = np.arange(end_index - len(bars), end_index)
    shm.push(bars, prepend=True)
    return end_index - len(bars), end_index


async def backfill(
    stream: Any,
    shm: ShmArray,
    bars: np.ndarray,
    *,
    topic: str,
    period_s: float,
) -> tuple[int, int]:
    """Prepend ``bars`` to ``shm`` and broadcast the backfill event through
    a sample stream (from :func:`open_sample_stream`)."""
    start, end = prepend_history(shm, bars, period_s)
    await stream.backfilled(topic, period_s, start, end)
    return start, end
