"""
What a backend's output must look like, checked the same way by the
conformance kit (:mod:`tractor_sampler.testing`, in a backend's own tests)
and by the feed daemon (on every live call, so a backend that breaks its
contract is named, with the hook, instead of failing deep inside numpy).
Each problem is one :class:`BarsProblem` whose message says how to fix
the backend.

"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from .shm import DEFAULT_DTYPE

_BARS_EXAMPLE = 'np.zeros(count, dtype=tractor_sampler.shm.DEFAULT_DTYPE), filled in'


class BarsProblem(ValueError):
    """The bars a backend's ``history`` returned break the contract."""


def check_bars(
    bars: Any,
    call: str,
    period: float,
    end_time: float,
    *,
    count: int | None = None,
    exact_end: bool = True,
) -> float:
    """Check ``bars`` (what ``call`` returned, for ``period`` s bars ending
    at or before ``end_time``): a 1-d numpy structured array with the
    fields of ``DEFAULT_DTYPE``, numeric, exactly ``count`` bars (if
    given), oldest first, one per period on the period's boundaries,
    finite, O/H/L/C consistent, volume >= 0, none ending after
    ``end_time`` and (``exact_end``) the last ending at the last boundary
    before it.  Returns that boundary (where the open bar starts); raises
    :class:`BarsProblem` naming the first problem."""
    example = _BARS_EXAMPLE
    if not isinstance(bars, np.ndarray) or bars.dtype.names is None:
        raise BarsProblem(
            f'{call} returned {type(bars).__name__}'
            + (f' of dtype {bars.dtype}' if isinstance(bars, np.ndarray) else '')
            + f'; return a numpy structured array: {example}.'
        )
    names = bars.dtype.names
    assert DEFAULT_DTYPE.names is not None
    missing = [f for f in DEFAULT_DTYPE.names if f not in names]
    if missing:
        raise BarsProblem(
            f'{call} returned bars without the fields {missing} (it has '
            f'{list(names)}); return the fields of DEFAULT_DTYPE: {example}.'
        )
    not_numeric = [f for f in DEFAULT_DTYPE.names if bars.dtype[f].kind not in 'iuf']
    if not_numeric:
        raise BarsProblem(
            f'{call}: fields {not_numeric} are not numeric '
            f'({[str(bars.dtype[f]) for f in not_numeric]}); use the dtypes of '
            f'DEFAULT_DTYPE: {example}.'
        )
    if bars.ndim != 1 or (count is not None and len(bars) != count):
        raise BarsProblem(
            f'{call} returned {bars.shape} bars; return a 1-d array of exactly '
            f'count={count} bars: the latest complete ones ending '
            f'at or before end_time, oldest first (fill gaps with flat bars).'
        )
    times = bars['time'].astype(float)
    if not np.isfinite(times).all():
        raise BarsProblem(
            f"{call}: 'time' holds non-finite values; give each bar its start in epoch seconds."
        )
    if len(times) > 1:
        steps = np.diff(times)
        bad = np.flatnonzero(np.abs(steps - period) > 1e-6)
        if len(bad):
            i = int(bad[0])
            order = 'oldest first, ' if steps[i] <= 0 else ''
            raise BarsProblem(
                f'{call}: bar #{i + 1} starts {steps[i]:g} s after bar #{i} '
                f'({float(times[i])!r} -> {float(times[i + 1])!r}); bars must be {order}one per '
                f'period, each starting exactly {period:g} s after the previous '
                f'(fill gaps with flat bars: O=H=L=C=previous close, volume 0).'
            )
    off = np.abs(times / period - np.round(times / period))
    bad = np.flatnonzero(off > 1e-6)
    if len(bad):
        i = int(bad[0])
        raise BarsProblem(
            f'{call}: bar #{i} starts at {float(times[i])!r}, not on a {period:g} s '
            f'period boundary; bar times must be multiples of the period '
            f'(e.g. math.floor(t / period_s) * period_s), as samplerd steps '
            f'the buffers on wall-clock boundaries.'
        )
    open_bar = math.floor(end_time / period + 1e-9) * period
    if len(times):
        last_end = float(times[-1]) + period
        if last_end > end_time + 1e-6:
            raise BarsProblem(
                f'{call}: the last bar (at {float(times[-1])!r}) ends at {last_end!r}, '
                f'after end_time; return only bars that end at or before end_time '
                f"(the bar in progress is the feed daemon's)."
            )
        if abs(last_end - open_bar) > 1e-6:
            raise BarsProblem(
                f'{call}: the last bar (at {float(times[-1])!r}) ends at {last_end!r}, '
                f'not at the last period boundary before end_time ({open_bar!r}), '
                f"where the feed daemon's open bar starts: it prepends history "
                f'right before that bar, so end with the last complete bar '
                f'(starting at {open_bar - period!r}; fill quiet periods with flat '
                f'bars: O=H=L=C=previous close, volume 0).'
            )
    for f in ('open', 'high', 'low', 'close', 'volume'):
        col = bars[f].astype(float)
        if not np.isfinite(col).all():
            i = int(np.flatnonzero(~np.isfinite(col))[0])
            raise BarsProblem(
                f'{call}: bar #{i} has {f} = {float(col[i])!r}; give every bar finite prices and volume.'
            )
    o, h, lo, c, v = (
        bars[f].astype(float) for f in ('open', 'high', 'low', 'close', 'volume')
    )
    for what, bad_rows in (
        ('low > min(open, close)', lo > np.minimum(o, c)),
        ('high < max(open, close)', h < np.maximum(o, c)),
        ('volume < 0', v < 0),
    ):
        if bad_rows.any():
            i = int(np.flatnonzero(bad_rows)[0])
            raise BarsProblem(
                f'{call}: bar #{i} has {what} (open={float(o[i])!r}, high={float(h[i])!r}, '
                f'low={float(lo[i])!r}, close={float(c[i])!r}, volume={float(v[i])!r}); the low must be '
                f'the lowest price of the bar, the high the highest, the volume '
                f'the size traded (>= 0).'
            )
    return open_bar
