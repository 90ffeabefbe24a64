"""
Test helpers for code built on tractor-services, and its pytest plugin.

Installed, tractor-services registers this module with pytest (a
``pytest11`` entry point named ``tractor_services``), so every test
session in an environment that has it gets:

- ``reg_addr`` (a free registry address for the session) and
  ``other_addr`` (a fresh one per test), so tests never share tractor's
  default port 1616;
- ``no_leaked_children`` (autouse): every test reaps the processes it
  spawned; leftovers are killed, then fail it; and at the session's end,
  a check that nothing it spawned is still alive.

The process checks need ``psutil`` (the ``testing`` extra brings it, with
pytest and pytest-trio); without it they are off, said in one line after
collection only when the collected tests use this plugin's fixtures (a
session that merely has tractor-services installed, such as a backend
plugin's tests with tractor-sampler's conformance kit, hears nothing of
it).  ``-p no:tractor_services`` turns the plugin off.

Other helpers: :func:`importable_by_subactors` (call it from a
``conftest.py`` for a folder of test endpoints), :func:`free_port`,
:func:`wait_gone`, :func:`actor_pids`, :func:`pid_alive`,
:func:`wait_pid_gone`.

"""

from __future__ import annotations

import os
import socket
import sys
from typing import Any

import pytest
import trio

try:
    import psutil
except ImportError:  # pragma: no cover - the `testing` extra brings it
    psutil = None  # type: ignore[assignment]

_NO_PSUTIL = (
    'tractor-services: psutil is not installed: no check for leaked child processes'
    " (pip install 'tractor-services[testing]')"
)
#: the fixtures whose use says a session tests actor trees with this plugin
_OURS = ('reg_addr', 'other_addr')


def pytest_report_collectionfinish(config: Any, items: list[Any]) -> str | None:
    """Without psutil, say once that the leak check is off, and only to a
    session whose tests use this plugin's fixtures: it is the check they
    would expect; other sessions did not ask for it."""
    if psutil is not None:
        return None
    if any(
        name in _OURS for item in items for name in getattr(item, 'fixturenames', ())
    ):
        return _NO_PSUTIL
    return None


def importable_by_subactors(path: str | os.PathLike) -> None:
    """Let this process and the actors it spawns import modules from
    ``path`` (subactors import endpoints by module name, and inherit the
    environment)."""
    path = str(path)
    os.environ['PYTHONPATH'] = os.pathsep.join(
        p for p in (path, os.environ.get('PYTHONPATH', '')) if p
    )
    if path not in sys.path:
        sys.path.insert(0, path)


def free_port(host: str = '127.0.0.1') -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


@pytest.fixture(scope='session')
def reg_addr() -> tuple[str, int]:
    """A registry address on a free random port, for this test session."""
    return ('127.0.0.1', free_port())


@pytest.fixture
def other_addr() -> tuple[str, int]:
    """A second free address, for tests that run their own root daemon."""
    return ('127.0.0.1', free_port())


def _ours(p: Any) -> bool:
    """Not the stdlib's resource tracker (it lives until the interpreter
    exits, by design)."""
    try:
        return not any('resource_tracker' in a for a in p.cmdline())
    except psutil.Error:
        return False


def children() -> set[int]:
    return {p.pid for p in psutil.Process().children(recursive=True) if _ours(p)}


def wait_gone(pids: set[int], timeout: float = 10.0) -> set[int]:
    """Wait for ``pids`` to exit; returns those still alive."""
    alive = [psutil.Process(p) for p in pids if psutil.pid_exists(p)]
    _, still = psutil.wait_procs(alive, timeout=timeout)
    return {p.pid for p in still}


@pytest.fixture(autouse=True)
def no_leaked_children():
    """Every test reaps what it spawned (leftovers are killed, then fail it)."""
    if psutil is None:
        yield
        return
    before = children()
    yield
    leaked = wait_gone(children() - before)
    for pid in leaked:
        psutil.Process(pid).kill()
    assert not leaked, f'test left child processes behind: {sorted(leaked)}'


def pytest_sessionfinish(session: Any, exitstatus: int) -> None:
    """Fail the session if anything it spawned is still alive at its end."""
    if psutil is None:
        return
    leaked = wait_gone(children())
    if leaked:
        session.exitstatus = 1
        print(f'\nthe test session left child processes behind: {sorted(leaked)}')


def actor_pids(name: str) -> list[int]:
    """Live subactor processes of ours spawned under ``name``."""
    pids = []
    for p in psutil.Process().children(recursive=True):
        try:
            cmd = p.cmdline()
            if p.status() == psutil.STATUS_ZOMBIE:
                continue
        except psutil.NoSuchProcess:
            continue
        if 'tractor._child' in cmd and any(f"('{name}'," in a for a in cmd):
            pids.append(p.pid)
    return pids


def pid_alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


async def wait_pid_gone(pid: int, timeout: float = 10.0) -> None:
    with trio.fail_after(timeout):
        while pid_alive(pid):
            await trio.sleep(0.02)
