"""Integration tests across packages: a free registry port per session and
checks that nothing is left behind (processes, shared memory)."""

from __future__ import annotations

import os
import socket

import psutil
import pytest

from tractor_sampler.shm import KEY_PREFIX_ENV
from tractor_sampler.testing import (  # autouse: the data dirs temporary
    own_data_dir,  # noqa: F401
    session_data_dir,  # noqa: F401
)

# Segments this session creates (in the programs it runs, and their actors)
# carry a prefix of its own, so the check below never counts another
# process's segments on this machine as ours.
SHM_PREFIX = f'tsamp_i{os.getpid()}_'
os.environ[KEY_PREFIX_ENV] = SHM_PREFIX
os.environ['FEEDBUS_SHM_PREFIX'] = SHM_PREFIX  # feedbus' quote rings, checked alike


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


@pytest.fixture
def free_addr() -> tuple[str, int]:
    return ('127.0.0.1', _free_port())


def _shm() -> set[str]:
    try:
        return {n for n in os.listdir('/dev/shm') if n.startswith(SHM_PREFIX)}
    except FileNotFoundError:  # not Linux
        return set()


@pytest.fixture(autouse=True)
def nothing_left_behind():
    before_pids = {p.pid for p in psutil.Process().children(recursive=True)}
    before_shm = _shm()
    yield
    new = [
        psutil.Process(p)
        for p in {p.pid for p in psutil.Process().children(recursive=True)}
        - before_pids
        if psutil.pid_exists(p)
    ]
    _, alive = psutil.wait_procs(new, timeout=10)
    for p in alive:
        p.kill()
    assert not alive, f'test left processes behind: {[p.pid for p in alive]}'
    leaked = _shm() - before_shm
    assert not leaked, f'test left shared memory behind: {sorted(leaked)}'
