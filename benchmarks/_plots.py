"""Plots for ``benchmarks/bench_*.py``: figures a benchmark draws next to
its tables in ``docs/benchmarks.md`` (PNG under ``docs/img/``).

matplotlib is optional: the bench session installs it (``nox -s bench``);
a benchmark run without it prints its tables, keeps the old picture and
says so (:func:`save_curves` returns ``None``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
IMG = ROOT / 'docs' / 'img'


def save_curves(
    name: str,
    x: Sequence[float],
    curves: Mapping[str, Sequence[float]],
    *,
    title: str,
    xlabel: str,
    ylabel: str,
    styles: Mapping[str, str] | None = None,
    note: str = '',
) -> Path | None:
    """Draw ``curves`` (label -> y for each ``x``) on log-log axes into
    ``docs/img/<name>.png``; returns the path, or ``None`` without
    matplotlib.  ``styles`` maps a label to a matplotlib format string
    (e.g. ``'k--'`` for a limit); ``note`` goes under the axes."""
    try:
        import matplotlib

        matplotlib.use('Agg')  # files only, no display
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    styles = styles or {}
    fig, ax = plt.subplots(figsize=(7.5, 4.8), dpi=110)
    try:
        for label, ys in curves.items():
            ax.plot(x, ys, styles.get(label, 'o-'), label=label, markersize=4)
        ax.set_xscale('log')
        ax.set_yscale('log')
        ax.set_xticks(list(x), [f'{v:,.0f}' for v in x])
        ax.minorticks_off()
        ax.set_title(title)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.grid(True, which='major', alpha=0.3)
        ax.legend(fontsize='small')
        if note:
            fig.text(0.01, 0.01, note, fontsize='x-small', alpha=0.7)
        fig.tight_layout(rect=(0, 0.04 if note else 0, 1, 1))
        IMG.mkdir(parents=True, exist_ok=True)
        path = IMG / f'{name}.png'
        # no timestamps in the file: a rerun with the same figures is the same file
        fig.savefig(path, metadata={'Software': None})
    finally:
        plt.close(fig)
    return path
