"""The docs-commands test's pytest wiring.

It runs only when asked for: ``uv run nox -s docs-commands``, ``pytest
tests/docs`` or ``TRACTOR_DOCS_COMMANDS=1`` (the ``integration`` session,
which collects ``tests/``, leaves it out: it installs from the network and
takes minutes).  The blocks and commands it skipped (with their reasons) are
listed at the end of the run.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from _doccmd import SKIPPED

HERE = Path(__file__).resolve().parent


def _asked_for(config: pytest.Config) -> bool:
    if os.environ.get('TRACTOR_DOCS_COMMANDS'):
        return True
    for arg in config.args:
        p = Path(arg.split('::')[0]).resolve()
        if p == HERE or HERE in p.parents:
            return True
    return False


def pytest_ignore_collect(collection_path: Path, config: pytest.Config) -> bool | None:
    if collection_path.name.startswith('test_') and not _asked_for(config):
        return True
    return None


def pytest_terminal_summary(terminalreporter) -> None:
    if SKIPPED:
        terminalreporter.section('docs commands not run')
        for where, reason in SKIPPED:
            terminalreporter.write_line(f'{where}: {reason}')
