'''
Fixtures for tractor-services' tests: a free registry port per session,
and checks that every test leaves no child process behind.
'''
from __future__ import annotations

import os
import socket
import sys
from pathlib import Path

import psutil
import pytest

HERE = Path(__file__).parent
# subactors import the endpoints module by name: let them find it
os.environ['PYTHONPATH'] = os.pathsep.join(
    p for p in (str(HERE), os.environ.get('PYTHONPATH', '')) if p
)
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


@pytest.fixture(scope='session')
def reg_addr() -> tuple[str, int]:
    '''A registry address on a free random port, for this test session.'''
    return ('127.0.0.1', _free_port())


@pytest.fixture
def other_addr() -> tuple[str, int]:
    '''A second free address, for tests that run their own root daemon.'''
    return ('127.0.0.1', _free_port())


def _children() -> set[int]:
    return {p.pid for p in psutil.Process().children(recursive=True)}


def _wait_gone(pids: set[int], timeout: float = 10.0) -> set[int]:
    alive = [psutil.Process(p) for p in pids if psutil.pid_exists(p)]
    _, still = psutil.wait_procs(alive, timeout=timeout)
    return {p.pid for p in still}


@pytest.fixture(autouse=True)
def no_leaked_children():
    '''Every test reaps what it spawned.'''
    before = _children()
    yield
    leaked = _wait_gone(_children() - before)
    for pid in leaked:
        psutil.Process(pid).kill()
    assert not leaked, f'test left child processes behind: {sorted(leaked)}'


def pytest_sessionfinish(session, exitstatus):
    leaked = _wait_gone(_children())
    if leaked:
        for pid in leaked:
            psutil.Process(pid).kill()
        session.exitstatus = 1
        print(f'\nthe test session left child processes behind: {sorted(leaked)}')
