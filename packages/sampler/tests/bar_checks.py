"""Reference computations the bar tests share (written plainly, apart from
the writer they check)."""

from __future__ import annotations

import numpy as np


def aggregate(rows: np.ndarray) -> tuple | None:
    """The composite of source ``rows``: over those that traded (the
    simulated venue trades sizes >= 1), ``None`` if none did."""
    sel = rows[rows['volume'] > 0]
    if not len(sel):
        return None
    return (
        float(sel['open'][0]),
        float(sel['high'].max()),
        float(sel['low'].min()),
        float(sel['close'][-1]),
        float(sel['volume'].sum()),
    )
