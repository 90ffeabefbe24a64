"""
Processes and signals: waiting for a process of this host to exit,
killing one, a daemon root's SIGTERM handler, this process's memory.
Plain trio and the OS; nothing here depends on tractor.

"""

from __future__ import annotations

import os
import signal
from collections.abc import Iterable

import trio


async def wait_pid_exit(pid: int, poll_s: float = 0.1) -> None:
    """Return once process ``pid`` of this host has exited (a zombie
    counts as exited): on a pidfd where there is one, else by polling."""
    fd: int | None = None
    if hasattr(os, 'pidfd_open'):
        try:
            fd = os.pidfd_open(pid)
        except ProcessLookupError:
            return
        except OSError:
            fd = None
    if fd is not None:
        try:
            await trio.lowlevel.wait_readable(fd)
        finally:
            os.close(fd)
        return
    while True:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        except PermissionError:
            pass
        await trio.sleep(poll_s)


async def hard_kill(proc: trio.Process) -> None:
    """SIGKILL ``proc`` (if it still runs) and reap it, whatever
    cancellation is under way."""
    with trio.CancelScope(shield=True):
        if proc.returncode is None:
            proc.kill()
        await proc.wait()


async def cancel_on_signals(
    cancel_scope: trio.CancelScope,
    signals: Iterable[int] = (signal.SIGTERM,),
    *,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Cancel ``cancel_scope`` (a daemon root's tree) when one of ``signals``
    arrives.  (*a5: a SIGTERMed root orphans its subactors*; a root that
    cancels its tree on SIGTERM stops them in order.)

    The signals keep arriving here until this task is cancelled: a second
    Ctrl-C (a user pressing it again while the tree stops, or a terminal
    sending it to the whole process group) or SIGTERM is absorbed instead
    of falling back to the default action (SIGTERM: the process dies at
    once, orphaning children mid-teardown) or to trio's
    ``KeyboardInterrupt``, which would cut the orderly teardown short."""
    from . import compat  # for tractor's log tree; compat imports this module

    log = compat.get_logger('proc', 'tractor_services')
    with trio.open_signal_receiver(*signals) as received:
        task_status.started()
        async for signum in received:
            name = signal.Signals(signum).name
            if not cancel_scope.cancel_called:
                log.warning(f'received {name}: tearing the tree down')
                cancel_scope.cancel()
            else:
                log.info(f'received {name} again: already stopping')


def rss_bytes() -> int | None:
    """This process's resident set size (Linux), else ``None``."""
    try:
        with open('/proc/self/statm') as f:
            return int(f.read().split()[1]) * os.sysconf('SC_PAGE_SIZE')
    except (OSError, ValueError, IndexError):
        return None
