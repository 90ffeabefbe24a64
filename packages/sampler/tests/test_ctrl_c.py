"""Ctrl-C as a terminal delivers it: SIGINT to the whole foreground process
group (the command and every subactor it spawned), and again and again, as
a user presses it while the command stops.  ``samplerd demo``, ``run`` and
``watch`` end with exit status 0, print no traceback and leave no process
behind, whenever the repeated Ctrl-C lands: while the tree is torn down,
after ``trio.run`` returned, while the interpreter exits."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import psutil
import pytest
import trio

from tractor_services.testing import free_port, wait_gone

SAMPLERD = [sys.executable, '-m', 'tractor_sampler']
RUNS = 3  # each stop is a race against the teardown: repeat it
REPEAT_S = 0.005  # Ctrl-C "pressed" again every 5 ms until the command ends


class Session:
    """A samplerd command in a session (and process group) of its own, as
    the foreground job of a terminal is."""

    def __init__(self, *args: str) -> None:
        self.p = subprocess.Popen(
            [*SAMPLERD, *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        self.pgid = self.p.pid
        self.family: set[int] = {self.p.pid}

    async def ready(self, timeout: float = 90) -> str:
        with trio.fail_after(timeout):
            while True:
                line = await trio.to_thread.run_sync(
                    self.p.stdout.readline, abandon_on_cancel=True
                )
                if not line:
                    raise AssertionError(
                        f'{self.p.args} ended (status {self.p.wait()}) before its '
                        f'ready line; stderr:\n{self.p.stderr.read()}'
                    )
                if line.startswith('samplerd ready:'):
                    return line

    def group(self) -> set[int]:
        """The processes of its process group still running (zombies, which
        their parent is about to reap, not counted)."""
        found = set()
        for proc in psutil.process_iter(['pid', 'status']):
            try:
                if (
                    os.getpgid(proc.pid) == self.pgid
                    and proc.info['status'] != psutil.STATUS_ZOMBIE
                ):
                    found.add(proc.pid)
            except (ProcessLookupError, psutil.Error):
                pass
        return found

    async def ctrl_c_until_it_ends(self, timeout: float = 60) -> int:
        """SIGINT to the whole group, repeated until the command exits;
        returns its status (negative: the signal that killed it)."""
        self.family |= self.group()
        got: dict[str, str] = {}

        async def drain(name: str, f) -> None:  # or a chatty command blocks
            got[name] = await trio.to_thread.run_sync(f.read, abandon_on_cancel=True)

        with trio.fail_after(timeout):
            async with trio.open_nursery() as tn:
                tn.start_soon(drain, 'out', self.p.stdout)
                tn.start_soon(drain, 'err', self.p.stderr)
                while self.p.poll() is None:
                    try:
                        os.killpg(self.pgid, signal.SIGINT)
                    except ProcessLookupError:  # the whole group is gone
                        break
                    await trio.sleep(REPEAT_S)
            status = await trio.to_thread.run_sync(self.p.wait, abandon_on_cancel=True)
        self.out, self.err = got['out'], got['err']
        return status

    def kill(self) -> None:
        try:
            os.killpg(self.pgid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.p.wait()


async def stopped_by_repeated_ctrl_c(sess: Session, first_line=None) -> None:
    """Wait for ``sess`` to run (its ready line, or ``first_line`` of its
    output), then Ctrl-C it again and again: status 0, no traceback,
    nothing of it left."""
    try:
        if first_line is None:
            await sess.ready()
        else:
            with trio.fail_after(90):
                line = await trio.to_thread.run_sync(
                    sess.p.stdout.readline, abandon_on_cancel=True
                )
            assert first_line(line), (line, sess.p.stderr.read())
        status = await sess.ctrl_c_until_it_ends()
    finally:
        if sess.p.poll() is None:
            sess.kill()
    assert status == 0, f'status {status}; stderr:\n{sess.err}'
    assert 'Traceback' not in sess.err, sess.err
    assert not wait_gone(sess.family, timeout=30), 'processes left behind'
    assert not sess.group(), 'processes of its group left behind'


@pytest.mark.parametrize('run', range(RUNS))
async def test_demo_exits_0_on_ctrl_c_pressed_again_and_again(run):
    await stopped_by_repeated_ctrl_c(
        Session('demo', '--topics', 'AAA', '--fps', '1', '--duration', '300')
    )


@pytest.mark.parametrize('run', range(RUNS))
async def test_run_exits_0_on_ctrl_c_pressed_again_and_again(run):
    await stopped_by_repeated_ctrl_c(Session('run', '--port', str(free_port())))


async def test_watch_exits_0_on_ctrl_c_pressed_again_and_again():
    port = str(free_port())
    root = Session('run', '--port', port)
    try:
        await root.ready()
        for _ in range(RUNS):
            # watch prints no ready line: its first frame says it runs
            await stopped_by_repeated_ctrl_c(
                Session('watch', 'AAA', '--port', port, '--fps', '1'),
                first_line=lambda line: line.startswith('AAA@sim'),
            )
    finally:
        if root.p.poll() is None:
            root.p.send_signal(signal.SIGINT)
            try:
                root.p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                root.kill()
    assert not wait_gone(root.family | root.group(), timeout=30)


#: a process whose stop scope gets a Ctrl-C, then another one while the
#: block's (shielded) teardown runs, then one after the block ended
_STOP_SCOPE = """
import os, signal, trio
from tractor_sampler._cli import _stop_on_signals

async def main():
    async with _stop_on_signals() as cs:
        try:
            os.kill(os.getpid(), signal.SIGINT)
            await trio.sleep_forever()
        finally:
            with trio.CancelScope(shield=True):
                os.kill(os.getpid(), signal.SIGINT)  # the teardown goes on
                for _ in range(10):
                    await trio.lowlevel.checkpoint()
    assert cs.cancel_called
    os.kill(os.getpid(), signal.SIGINT)  # ignored from now on
    await trio.lowlevel.checkpoint()
    print('stopped', signal.getsignal(signal.SIGINT) is signal.SIG_IGN)

trio.run(main)
"""

#: a stop scope that ends on its own gives SIGINT back to trio
_SCOPE_ENDS = """
import signal, trio
from tractor_sampler._cli import _stop_on_signals

async def main():
    before = signal.getsignal(signal.SIGINT)
    async with _stop_on_signals():
        await trio.lowlevel.checkpoint()
    print('restored', signal.getsignal(signal.SIGINT) is before)

trio.run(main)
"""


def test_ctrl_c_again_while_the_stop_scope_tears_down_is_absorbed():
    """The first Ctrl-C cancels the scope; one pressed while its block
    still tears down (no matter how long) is absorbed, not raised as
    ``KeyboardInterrupt`` into the teardown, and so is one after."""
    done = subprocess.run(
        [sys.executable, '-c', _STOP_SCOPE], capture_output=True, text=True, timeout=60
    )
    assert (done.returncode, done.stdout) == (0, 'stopped True\n'), done.stderr
    assert 'Traceback' not in done.stderr, done.stderr


def test_a_stop_scope_ending_on_its_own_puts_the_signal_handlers_back():
    done = subprocess.run(
        [sys.executable, '-c', _SCOPE_ENDS], capture_output=True, text=True, timeout=60
    )
    assert (done.returncode, done.stdout) == (0, 'restored True\n'), done.stderr
