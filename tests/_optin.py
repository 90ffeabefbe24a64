"""Suites under ``tests/`` that run only when asked for (``chaos``,
``multihost``, ``docs``): the ``integration`` session, which collects
``tests/``, leaves them out.  A suite is asked for by a path into its
folder, its environment variable, or (if it has one) its marker in ``-m``.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest


def asked_for(
    config: pytest.Config, here: Path, env: str, marker: str | None = None
) -> bool:
    if os.environ.get(env):
        return True
    if marker is not None:
        markexpr = config.getoption('markexpr', '') or ''
        if marker in markexpr and f'not {marker}' not in markexpr:
            return True
    for arg in config.args:
        p = Path(arg.split('::')[0]).resolve()
        if p == here or here in p.parents:
            return True
    return False


def ignore_unless_asked(
    here: Path, env: str, marker: str | None = None
) -> Callable[[Path, pytest.Config], bool | None]:
    """A conftest's ``pytest_ignore_collect``: the folder's test modules
    are not collected unless the suite is asked for."""

    def pytest_ignore_collect(
        collection_path: Path, config: pytest.Config
    ) -> bool | None:
        if collection_path.name.startswith('test_') and not asked_for(
            config, here, env, marker
        ):
            return True
        return None

    return pytest_ignore_collect
