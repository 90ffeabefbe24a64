"""The chaos suite's pytest wiring (the harness is ``_harness.py``).

The suite runs only when asked for: ``uv run nox -s chaos``, ``pytest
tests/chaos`` or ``TRACTOR_CHAOS=1`` (the ``integration`` session, which
collects ``tests/``, leaves it out).  ``CHAOS_FIGURES=1`` writes the
measured figures to ``docs/reliability-figures.json`` and into the
generated section of ``docs/reliability.md``.
"""

from __future__ import annotations

import json
import os
from typing import Any

import pytest
from _harness import (
    BEGIN,
    END,
    FIGURES,
    FIGURES_ENV,
    FIGURES_JSON,
    HERE,
    RELIABILITY_MD,
    render_figures,
)
from _optin import ignore_unless_asked

# --- only when asked for -------------------------------------------------------


pytest_ignore_collect = ignore_unless_asked(HERE, 'TRACTOR_CHAOS')


@pytest.fixture(autouse=True)
def nothing_left_behind():
    """(overrides tests/conftest.py's) The tree outlives single tests here:
    the phases check processes and segments themselves, and the module's
    fixture checks that nothing is left once the tree is stopped."""
    yield


@pytest.fixture(autouse=True)
def no_leaked_children():
    """(overrides tractor_services.testing's, a pytest plugin) The daemons
    the root restarts during a phase are the tree's, not leaks of that
    test: killing them after each test would be a fault of its own.  The
    module's fixture checks the whole tree once it is stopped."""
    yield


# --- the figures ------------------------------------------------------------------


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not FIGURES:
        return
    terminalreporter.section('chaos figures')
    terminalreporter.write_line(render_figures(FIGURES))
    if os.environ.get(FIGURES_ENV):
        FIGURES_JSON.write_text(json.dumps(FIGURES, indent=2, default=str) + '\n')
        text = (
            RELIABILITY_MD.read_text() if RELIABILITY_MD.exists() else '# Reliability\n'
        )
        if BEGIN in text and END in text:
            head, rest = text.split(BEGIN, 1)
            _, tail = rest.split(END, 1)
            text = head + render_figures(FIGURES) + tail
        else:
            text = text.rstrip('\n') + '\n\n' + render_figures(FIGURES) + '\n'
        RELIABILITY_MD.write_text(text)
        terminalreporter.write_line(
            f'figures written to {FIGURES_JSON} and {RELIABILITY_MD}'
        )
