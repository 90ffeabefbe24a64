"""Fixtures for feedbus' tests: a free registry port per session and a
check that every test reaps what it spawned."""

from __future__ import annotations

from pathlib import Path

from tractor_services.testing import (
    importable_by_subactors,  # fixtures: the pytest plugin
)

# subactors import this folder's endpoint modules by name
importable_by_subactors(Path(__file__).parent)
