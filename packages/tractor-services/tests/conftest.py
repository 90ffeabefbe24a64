'''Fixtures for tractor-services' tests (shared with the other packages
through tractor_services.testing).'''
from __future__ import annotations

import os
import sys
from pathlib import Path

from tractor_services.testing import (  # noqa: F401
    children,
    no_leaked_children,
    other_addr,
    reg_addr,
    wait_gone,
)

HERE = Path(__file__).parent
# subactors import the endpoints module by name: let them find it
os.environ['PYTHONPATH'] = os.pathsep.join(
    p for p in (str(HERE), os.environ.get('PYTHONPATH', '')) if p
)
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))


def pytest_sessionfinish(session, exitstatus):
    leaked = wait_gone(children())
    if leaked:
        session.exitstatus = 1
        print(f'\nthe test session left child processes behind: {sorted(leaked)}')
