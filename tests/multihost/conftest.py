"""Multi-host tests (issue #13): several "hosts" as network, pid and mount
namespaces on a private bridge (see ``_hosts.py``).

They run only when asked for: ``pytest -m multihost tests/multihost``
(``uv run nox -s multihost``), a path into this folder, or
``TRACTOR_MULTIHOST=1``; the ``integration`` session, which collects
``tests/``, leaves them out.  Where namespaces cannot be made (not root,
no ``ip``/``unshare``/``nsenter``, no CAP_SYS_ADMIN) every test is
skipped with a reason naming what is missing.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from _hosts import HERE, Network, leftover_namespaces, unavailable

MARKER = 'multihost: needs network namespaces (root); several hosts on a private bridge'


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line('markers', MARKER)


def _asked_for(config: pytest.Config) -> bool:
    if os.environ.get('TRACTOR_MULTIHOST'):
        return True
    markexpr = config.getoption('markexpr', '') or ''
    if 'multihost' in markexpr and 'not multihost' not in markexpr:
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


@pytest.fixture(scope='session')
def namespaces_ok() -> None:
    reason = unavailable()
    if reason:
        pytest.skip(f'multi-host tests need network namespaces: {reason}')


@pytest.fixture
def net(namespaces_ok: None) -> Iterator[Network]:
    """Hosts ``a`` (10.213.7.1) and ``b`` (10.213.7.2); removed after the
    test, failed or not, and checked gone."""
    with Network(('a', 'b')) as network:
        yield network
    left = leftover_namespaces()
    assert not left, f'namespaces left behind: {left}'
