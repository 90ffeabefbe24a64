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

from collections.abc import Iterator

import pytest
from _hosts import HERE, Network, leftover_namespaces, unavailable
from _optin import ignore_unless_asked

MARKER = 'multihost: needs network namespaces (root); several hosts on a private bridge'


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line('markers', MARKER)


pytest_ignore_collect = ignore_unless_asked(
    HERE, 'TRACTOR_MULTIHOST', marker='multihost'
)


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
