'''Helpers for tractor-services' tests: find and wait on actor processes.'''
from __future__ import annotations

import psutil
import trio


def actor_pids(name: str) -> list[int]:
    '''Live subactor processes of ours spawned under ``name``.'''
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


async def wait_pid_gone(pid: int, timeout: float = 10.0) -> None:
    with trio.fail_after(timeout):
        while psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
            await trio.sleep(0.02)
