"""Fixtures for tractor-sampler's tests: a free registry port per session,
a check that every test reaps what it spawned, and one that it leaves no
shared-memory segment behind."""

from __future__ import annotations

import os
from multiprocessing import resource_tracker
from pathlib import Path

import pytest
from hypothesis import settings

from tractor_sampler.shm import KEY_PREFIX_ENV
from tractor_sampler.testing import (  # autouse: the data dirs temporary
    own_data_dir,  # noqa: F401
    session_data_dir,  # noqa: F401
)
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

# The stdlib resource tracker is a child process started on first use of
# shared memory and alive until we exit: start it now, so the per-test
# child-process check does not count it as a leak.
resource_tracker.ensure_running()

SHM_DIR = Path('/dev/shm')
# Segments this session creates (here, in child scripts, in subactors) are
# named with a prefix of its own, so the leak check below never mistakes a
# concurrent test run's segments for ours (nor unlinks them).
SHM_PREFIX = f'tsamp_t{os.getpid()}_'
os.environ[KEY_PREFIX_ENV] = SHM_PREFIX
os.environ['FEEDBUS_SHM_PREFIX'] = SHM_PREFIX  # feedbus' quote rings, checked alike


def shm_segments() -> set[str]:
    """This session's segments now in ``/dev/shm``."""
    if not SHM_DIR.is_dir():  # not Linux: nothing to check
        return set()
    return {p.name for p in SHM_DIR.iterdir() if p.name.startswith(SHM_PREFIX)}


_keys = iter(range(1 << 30))


@pytest.fixture
def shm_key() -> str:
    """A fresh segment name under this session's prefix."""
    return f'{SHM_PREFIX}k{next(_keys)}'


@pytest.fixture(autouse=True)
def no_leaked_shm():
    """Every test leaves no shared-memory segment of this session behind."""
    before = shm_segments()
    yield
    leaked = shm_segments() - before
    for name in leaked:  # don't let one failure cascade into the next tests
        try:
            (SHM_DIR / name).unlink()
        except FileNotFoundError:
            pass
    assert not leaked, f'test left shared-memory segments behind: {sorted(leaked)}'
