"""Fixtures for feedbus' tests: a free registry port per session and a
check that every test reaps what it spawned."""

from __future__ import annotations

import os
from pathlib import Path

from hypothesis import settings

from tractor_services.testing import (
    importable_by_subactors,  # fixtures: the pytest plugin
)

# subactors import this folder's endpoint modules by name
importable_by_subactors(Path(__file__).parent)

# Property tests draw the same examples on every run (derandomized: a run
# that passed passes again, on any machine); HYPOTHESIS_PROFILE=explore
# draws new ones each run, to search for failures.
settings.register_profile('repeatable', derandomize=True)
settings.register_profile('explore', derandomize=False)
settings.load_profile(os.environ.get('HYPOTHESIS_PROFILE', 'repeatable'))
