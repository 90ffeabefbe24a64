'''Fixtures for feedbus' tests: a free registry port per session and a
check that every test reaps what it spawned.'''
from __future__ import annotations

import os
import sys
from pathlib import Path

from tractor_services.testing import (  # noqa: F401
    no_leaked_children,
    other_addr,
    pytest_sessionfinish,
    reg_addr,
)

HERE = Path(__file__).parent
# subactors import the endpoints module by name: let them find it
os.environ['PYTHONPATH'] = os.pathsep.join(
    p for p in (str(HERE), os.environ.get('PYTHONPATH', '')) if p
)
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))
