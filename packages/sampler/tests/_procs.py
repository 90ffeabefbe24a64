"""A samplerd process run as a user runs it, for the tests that start one:
its output read line by line, a stop that cannot hang the test, its
family remembered to check that nothing outlives it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Sequence
from typing import Any

import psutil
import trio

SAMPLERD = [sys.executable, '-m', 'tractor_sampler']


class Proc:
    """A samplerd command (``argv``: another program) whose stdout is read
    line by line, its family remembered to check that nothing outlives it."""

    def __init__(self, *args: str, argv: Sequence[str] | None = None) -> None:
        self.p = subprocess.Popen(
            [*SAMPLERD, *args] if argv is None else list(argv),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines: list[str] = []
        self.family: set[int] = set()

    async def read_until(self, pred, timeout: float = 60) -> str:
        """Lines until one satisfies ``pred`` (read in a thread: Popen's
        pipe is a blocking file)."""
        with trio.fail_after(timeout):
            while True:
                line = await trio.to_thread.run_sync(
                    self.p.stdout.readline, abandon_on_cancel=True
                )
                if not line:
                    raise AssertionError(
                        f'{self.p.args} ended (status {self.p.wait()}) before the '
                        f'expected output; stderr:\n{self.p.stderr.read()[-3000:]}'
                    )
                self.lines.append(line)
                self.remember_family()
                if pred(line):
                    return line

    def remember_family(self) -> None:
        try:
            self.family |= {
                c.pid for c in psutil.Process(self.p.pid).children(recursive=True)
            }
        except psutil.NoSuchProcess:
            pass

    async def ready(self, timeout: float = 60) -> str:
        """Its ready line (``samplerd ready: ...``)."""
        return await self.read_until(lambda line: 'ready' in line, timeout)

    async def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> int:
        """Send ``sig`` and wait for the exit, reading its output meanwhile
        (a chatty command must not block on a full pipe); a command still
        running after ``timeout`` s fails the test with what it printed to
        stderr, it and its children killed (never a hung test)."""
        self.remember_family()
        self.p.send_signal(sig)
        out: list[str] = []
        err: list[str] = []
        try:
            with trio.fail_after(timeout):
                async with trio.open_nursery() as tn:
                    tn.start_soon(_drain, self.p.stdout, out)
                    tn.start_soon(_drain, self.p.stderr, err)
                status = await trio.to_thread.run_sync(
                    self.p.wait, abandon_on_cancel=True
                )
        except trio.TooSlowError:
            self.remember_family()
            for pid in {self.p.pid, *self.family}:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            self.p.wait()
            raise AssertionError(
                f'{self.p.args[2:]} still ran {timeout:g} s after signal {sig}; '
                f'stderr:\n{"".join(err)}'
            ) from None
        self.lines += out
        self.err = ''.join(err)
        return status

    def kill(self) -> None:
        """SIGKILL it (if it still runs) and reap it."""
        if self.p.poll() is None:
            self.p.kill()
            self.p.wait()


async def _drain(f: Any, into: list[str]) -> None:
    """Lines of ``f`` into ``into`` until its end (in a thread, abandoned
    if cancelled: a pipe file blocks)."""

    def read() -> None:
        for line in f:
            into.append(line)

    await trio.to_thread.run_sync(read, abandon_on_cancel=True)
