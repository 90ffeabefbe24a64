"""Shared helpers for ``benchmarks/bench_*.py``: statistics, markdown tables
and writing a benchmark's figures into its marked section of
``docs/benchmarks.md``.

Each benchmark owns one section, delimited by HTML comments::

    <!-- bench:KEY:start -->
    ...generated, replaced on every run...
    <!-- bench:KEY:end -->

:func:`write_section` replaces what lies between the markers and leaves the
rest of the file alone; if the markers are absent it appends them under a
``## TITLE`` heading (and creates the file, with its heading and intro, if
it does not exist).
"""

from __future__ import annotations

import datetime as _dt
import math
import os
import platform
import re
import statistics
import textwrap
from collections.abc import Iterable, Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / 'docs' / 'benchmarks.md'

INTRO = """\
# Benchmarks

Every figure below is a median (with the 90th percentile) measured on the
machine named under its table, and every ratio is against a baseline
measured in the same run, interleaved with it, so the ratios carry over
between machines better than the absolute times do.  Rerun them all with
`uv run nox -s bench`; each `benchmarks/bench_*.py` rewrites its own section.
"""


# --- statistics -------------------------------------------------------------


def median(samples: Sequence[float]) -> float:
    return statistics.median(samples)


def p90(samples: Sequence[float]) -> float:
    """90th percentile, nearest-rank (an observed sample, never interpolated)."""
    return percentile(samples, 90)


def percentile(samples: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0-100), nearest-rank (an observed sample)."""
    ordered = sorted(samples)
    return ordered[min(max(math.ceil(q / 100 * len(ordered)) - 1, 0), len(ordered) - 1)]


def ms(seconds: float) -> str:
    return f'{seconds * 1e3:.1f} ms'


# --- markdown ---------------------------------------------------------------


def md_table(headers: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    """A GitHub/MyST pipe table."""
    lines = [
        '| ' + ' | '.join(headers) + ' |',
        '|' + '|'.join('---' for _ in headers) + '|',
    ]
    lines += ['| ' + ' | '.join(str(c) for c in row) + ' |' for row in rows]
    return '\n'.join(lines)


def text_table(headers: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    """The same table aligned for a terminal."""
    cells = [list(map(str, headers)), *([str(c) for c in r] for r in rows)]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    out = ['  '.join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in cells]
    out.insert(1, '  '.join('-' * w for w in widths))
    return '\n'.join(out)


def wrap(paragraph: str, width: int = 76) -> str:
    """One markdown paragraph, filled (never breaking inside a word)."""
    return textwrap.fill(
        paragraph, width, break_long_words=False, break_on_hyphens=False
    )


def machine_line(**versions: str) -> str:
    """Where and with what the figures were measured, and when (UTC)."""
    parts = [
        platform.platform(),
        f'{os.cpu_count()} CPUs',
        f'Python {platform.python_version()}',
        *(f'{name} {v}' for name, v in versions.items()),
    ]
    when = _dt.datetime.now(_dt.timezone.utc).strftime('%Y-%m-%d %H:%M UTC')
    return f'Measured on {", ".join(parts)}; {when}.'


# --- docs/benchmarks.md -----------------------------------------------------


def _markers(key: str) -> tuple[str, str]:
    return f'<!-- bench:{key}:start -->', f'<!-- bench:{key}:end -->'


def write_section(key: str, title: str, body: str, path: Path = DOC) -> Path:
    """Replace section ``key`` of ``path`` with ``body`` (created if absent)."""
    start, end = _markers(key)
    block = f'{start}\n{body.strip()}\n{end}'
    text = path.read_text() if path.exists() else INTRO
    pattern = re.compile(re.escape(start) + r'.*?' + re.escape(end), re.DOTALL)
    if pattern.search(text):
        text = pattern.sub(lambda _: block, text, count=1)
    else:
        text = f'{text.rstrip()}\n\n## {title}\n\n{block}\n'
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text if text.endswith('\n') else text + '\n')
    return path
