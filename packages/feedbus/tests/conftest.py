'''Fixtures for feedbus' tests: a free registry port per session and a
check that every test reaps what it spawned.'''
from __future__ import annotations

from pathlib import Path

from tractor_services.testing import (  # noqa: F401
    importable_by_subactors,
    no_leaked_children,
    other_addr,
    pytest_sessionfinish,
    reg_addr,
)

# subactors import this folder's endpoint modules by name
importable_by_subactors(Path(__file__).parent)
