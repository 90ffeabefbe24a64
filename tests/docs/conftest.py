"""The docs-commands test's pytest wiring.

It runs only when asked for: ``uv run nox -s docs-commands``, ``pytest
tests/docs`` or ``TRACTOR_DOCS_COMMANDS=1`` (the ``integration`` session,
which collects ``tests/``, leaves it out: it installs from the network and
takes minutes).  The blocks and commands it skipped (with their reasons) are
listed at the end of the run.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from _doccmd import SKIPPED, fixed_ports
from _optin import ignore_unless_asked

HERE = Path(__file__).resolve().parent


pytest_ignore_collect = ignore_unless_asked(HERE, 'TRACTOR_DOCS_COMMANDS')


@pytest.fixture
def no_leaked_children():
    """The per-test checks of leftover child processes (tractor-services'
    plugin's and tests/conftest.py's), off here: pages run at the same
    time, so a process of this session belongs to whichever page started
    it, not to the test running when it is seen (those checks would kill
    another page's install).  Each page stops its own process groups
    (background commands with SIGTERM, then SIGKILL of what is left), and
    the plugin's check at the session's end still fails a run that left
    anything alive."""
    yield


@pytest.fixture
def nothing_left_behind():
    """Off here, as :func:`no_leaked_children`."""
    yield


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The pages with fixed ports first: they run one at a time in their
    tests while the others run in a pool started by the first test (their
    tests only wait for their results)."""
    page_of = {
        id(item): item.callspec.params['page']
        for item in items
        if getattr(item, 'originalname', '') == 'test_page'
    }
    items.sort(key=lambda it: id(it) in page_of and not fixed_ports(page_of[id(it)]))


def pytest_terminal_summary(terminalreporter) -> None:
    if SKIPPED:
        terminalreporter.section('docs commands not run')
        for where, reason in SKIPPED:
            terminalreporter.write_line(f'{where}: {reason}')
