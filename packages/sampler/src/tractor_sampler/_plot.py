"""
A picture of a topic: candlesticks over volume bars, drawn to a PNG with
matplotlib's Agg renderer (no display, no pyplot state), for
``samplerd chart TOPIC --period 60 -o bars.png`` (docs/cli.md).

The bars come from a running feed daemon's buffer (attached read-only by
its token, as ``samplerd ls`` reports it: nothing is subscribed, nothing
started) or from the bar store (:func:`~tractor_sampler._export.read_bars`)
when no daemon runs that topic, or when asked.

matplotlib is an optional extra: ``pip install 'tractor-sampler[chart]'``
(:data:`EXTRA_HINT`).
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

EXTRA_HINT = "pip install 'tractor-sampler[chart]'"
#: the picture's size in pixels when none is asked for
DEFAULT_SIZE: tuple[int, int] = (1200, 700)
#: the most bars drawn when no number is asked for
DEFAULT_BARS: int = 120
DPI = 100
UP, DOWN = '#26a69a', '#ef5350'


class PlotUnavailable(RuntimeError):
    """matplotlib is not installed."""


def require_matplotlib() -> None:
    """Raise :class:`PlotUnavailable` (one line naming the extra) when
    matplotlib cannot be imported."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise PlotUnavailable(f'charts need matplotlib: {EXTRA_HINT}') from None


def parse_size(text: str) -> tuple[int, int]:
    """``'1200x700'`` as ``(1200, 700)`` pixels; ``ValueError`` naming the
    problem otherwise."""
    w, sep, h = text.lower().partition('x')
    try:
        size = (int(w), int(h))
    except ValueError:
        size = (0, 0)
    if not sep or not (100 <= size[0] <= 10000 and 100 <= size[1] <= 10000):
        raise ValueError(
            f'--size {text!r}: give WIDTHxHEIGHT in pixels, each from 100 to 10000 '
            '(e.g. 1200x700)'
        )
    return size


@dataclass(frozen=True)
class Chart:
    """What :func:`draw_bars` drew: ``candles`` and ``volume_bars`` are
    counted from the figure's artists (one body and one wick per candle),
    ``size`` is the picture's in pixels."""

    path: str
    bars: int  # the bars given, with finite prices
    candles: int
    wicks: int
    volume_bars: int
    size: tuple[int, int]


def draw_bars(
    bars: np.ndarray,
    path: str | os.PathLike[str],
    *,
    title: str = '',
    size: tuple[int, int] = DEFAULT_SIZE,
) -> Chart:
    """Draw ``bars`` (a structured array with ``time``, ``open``, ``high``,
    ``low``, ``close``, ``volume``, oldest first) as candlesticks over
    volume bars into the PNG ``path``, ``size`` pixels.  Bars whose prices
    are not finite (rows never written) are left out.  ``ValueError`` when
    no bar is left; ``OSError`` when the file cannot be written."""
    require_matplotlib()
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.collections import LineCollection, PolyCollection
    from matplotlib.figure import Figure

    px = ('open', 'high', 'low', 'close')
    ok = np.ones(len(bars), dtype=bool)
    for f in px:
        ok &= np.isfinite(bars[f].astype(float))
    bars = bars[ok]
    n = len(bars)
    if not n:
        raise ValueError('no bars to draw')
    o, h, lo, c = (bars[f].astype(float) for f in px)
    v = bars['volume'].astype(float)
    x = np.arange(n, dtype=float)
    up = c >= o
    colours = np.where(up, UP, DOWN)

    w, ht = size
    fig = Figure(figsize=(w / DPI, ht / DPI), dpi=DPI)
    FigureCanvasAgg(fig)
    gs = fig.add_gridspec(2, 1, height_ratios=(3, 1), hspace=0.05)
    ax = fig.add_subplot(gs[0])
    axv = fig.add_subplot(gs[1], sharex=ax)

    wicks = LineCollection(
        [((xi, li), (xi, hi)) for xi, li, hi in zip(x, lo, h, strict=True)],
        colors=colours,
        linewidths=1.0,
    )
    half = 0.35
    b0 = np.minimum(o, c)
    b1 = _body_top(np.maximum(o, c), b0, h, lo)
    bodies = PolyCollection(
        [
            ((xi - half, y0), (xi - half, y1), (xi + half, y1), (xi + half, y0))
            for xi, y0, y1 in zip(x, b0, b1, strict=True)
        ],
        facecolors=colours,
        edgecolors=colours,
    )
    ax.add_collection(wicks)
    ax.add_collection(bodies)
    ax.set_xlim(-1, n)
    span = float(np.max(h) - np.min(lo))
    pad = span * 0.05 if span > 0 else max(abs(float(np.max(h))) * 0.001, 1e-6)
    ax.set_ylim(float(np.min(lo)) - pad, float(np.max(h)) + pad)
    ax.grid(True, alpha=0.3)
    ax.tick_params(labelbottom=False)
    if title:
        ax.set_title(title)
    vol = axv.bar(x, v, width=2 * half, color=colours)
    axv.set_ylabel('volume')
    axv.grid(True, alpha=0.3)
    ticks = x[:: max(1, math.ceil(n / max(2, w // 160)))]  # labels that fit
    axv.set_xticks(ticks)
    axv.set_xticklabels([_time_label(float(bars['time'][int(i)])) for i in ticks])
    axv.set_xlabel('time (UTC)')
    fig.savefig(os.fspath(path), format='png', dpi=DPI)
    return Chart(
        path=os.fspath(path),
        bars=n,
        candles=len(bodies.get_paths()),
        wicks=len(wicks.get_segments()),
        volume_bars=len(vol.patches),
        size=(w, ht),
    )


def _body_top(
    top: np.ndarray, bottom: np.ndarray, h: np.ndarray, lo: np.ndarray
) -> np.ndarray:
    """A body at least a sliver tall, so a bar with open == close still
    shows (a doji): a thousandth of the chart's range."""
    span = float(np.max(h) - np.min(lo)) or max(abs(float(np.max(h))) * 0.01, 1e-6)
    return np.maximum(top, bottom + span / 1000)


def _time_label(t: float) -> str:
    return time.strftime('%H:%M:%S', time.gmtime(t)) if math.isfinite(t) else ''


# --- where the bars come from ---------------------------------------------------


async def bars_from_daemon(
    topic: str,
    period_s: float,
    backend: str,
    registry_addr: tuple[str, int],
) -> np.ndarray | None:
    """A copy of ``topic``'s ``period_s`` buffer on the running feed
    daemon of ``backend`` (this host's), or ``None`` when no feed daemon
    there runs the topic.  ``ValueError`` when it runs it without a buffer
    of that period.  Needs a tractor runtime (a client root)."""
    from ._introspect import introspect
    from .shm import attach_shm_array

    tree = await introspect(registry_addr, parts=('feeds',))
    for f in tree.feeds or []:
        if f.backend != backend or f.host is not None:
            continue
        t = f.topics.get(topic)
        if t is None:
            return None
        buf = t.buffers.get(float(period_s))
        if buf is None:
            have = ', '.join(f'{p:g}' for p in sorted(t.buffers)) or 'none'
            raise ValueError(
                f'{topic} on the running feed daemon has no {period_s:g} s bars '
                f'(it keeps {have} s): pick one of those, or --from-store'
            )
        shm = attach_shm_array(buf.token, readonly=True)
        try:
            return np.array(shm.array, copy=True)
        finally:
            shm.close()
    return None


def bars_from_store(
    topic: str,
    period_s: float,
    backend: str,
    *,
    start: Any = None,
    end: Any = None,
    data_dir: str | None = None,
) -> np.ndarray:
    """``topic``'s bars in the bar store (``read_bars``)."""
    from ._export import read_bars

    return read_bars(
        topic, period_s, backend=backend, start=start, end=end, data_dir=data_dir
    )


__all__ = [
    'DEFAULT_BARS',
    'DEFAULT_SIZE',
    'EXTRA_HINT',
    'Chart',
    'PlotUnavailable',
    'bars_from_daemon',
    'bars_from_store',
    'draw_bars',
    'parse_size',
    'require_matplotlib',
]
