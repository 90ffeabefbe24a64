"""Every ending is told: when the root daemon is stopped (Ctrl-C,
SIGTERM) or killed (SIGKILL), an attached ``open_market_feed`` /
``open_sample_stream`` block raises a PeerGone naming the daemon that went
(a5 alone let it end silently), and ``samplerd watch`` prints one line and
exits non-zero.  The client's own ending (``--duration``) is still quiet."""

from __future__ import annotations

import signal
import sys

import pytest
import trio
from test_cli import PROGRAMS, Proc, run_cli

from tractor_services.testing import free_port, wait_gone


async def _daemon() -> tuple[Proc, int]:
    port = free_port()
    daemon = Proc('--port', str(port), '-l', 'warning')
    await daemon.read_until(lambda line: 'ready' in line)
    return daemon, port


class Client(Proc):
    """A client program (not the samplerd command) read line by line."""

    def __init__(self, *argv: str) -> None:
        import subprocess

        self.p = subprocess.Popen(
            [sys.executable, *argv],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines = []
        self.family = set()


@pytest.mark.parametrize(
    'what, sig, daemon_name',
    [
        ('feed', signal.SIGINT, 'feedd.sim'),
        ('feed', signal.SIGKILL, 'feedd.sim'),
        ('samples', signal.SIGTERM, 'samplerd'),
        ('samples', signal.SIGKILL, 'samplerd'),
    ],
)
async def test_a_stopped_or_killed_root_ends_attached_blocks_with_peer_gone(
    what, sig, daemon_name
):
    daemon, port = await _daemon()
    client = Client(str(PROGRAMS / 'ending_client.py'), '127.0.0.1', str(port), what)
    try:
        await client.read_until(lambda line: line.strip() == 'attached')
        daemon.remember_family()
        daemon.p.send_signal(sig)
        with trio.fail_after(30):
            status = await trio.to_thread.run_sync(
                client.p.wait, abandon_on_cancel=True
            )
        out = client.p.stdout.read()
        err = client.p.stderr.read()
    finally:
        for p in (client.p, daemon.p):
            if p.poll() is None:
                p.kill()
        daemon.p.wait()
    assert not wait_gone(daemon.family), 'the daemon left processes behind'
    assert 'ended silently' not in out
    assert status == 2, f'status {status}\nstdout:\n{out}\nstderr:\n{err}'
    [line] = [ln for ln in out.splitlines() if ln.startswith('ended by ')]
    assert line.startswith(('ended by DaemonStopped: ', 'ended by PeerGone: ')), line
    assert daemon_name in line, line


async def test_watch_says_the_daemon_stopped_in_one_line_and_exits_1():
    daemon, port = await _daemon()
    watch = Proc('--port', str(port), 'watch', 'AAA', '--fps', '2')
    try:
        await watch.read_until(lambda line: line.startswith('AAA@sim'))
        daemon.remember_family()
        watch.remember_family()
        assert await daemon.stop(signal.SIGTERM) == 0
        with trio.fail_after(30):
            status = await trio.to_thread.run_sync(watch.p.wait, abandon_on_cancel=True)
        err = watch.p.stderr.read().strip()
    finally:
        for p in (watch.p, daemon.p):
            if p.poll() is None:
                p.kill()
    assert not wait_gone(daemon.family | watch.family)
    assert status == 1, err
    assert len(err.splitlines()) == 1, err
    assert err.startswith("samplerd: error: actor 'feedd.sim' ended the context "), err


async def test_watch_ending_by_its_own_duration_is_quiet_and_exits_0():
    daemon, port = await _daemon()
    try:
        res = await run_cli(
            '--port', str(port), 'watch', 'AAA', '--fps', '2', '--duration', '3'
        )
        stopped = await daemon.stop(signal.SIGTERM)
    finally:
        if daemon.p.poll() is None:
            daemon.p.kill()
    assert not wait_gone(daemon.family)
    assert stopped == 0, daemon.err
    assert res.returncode == 0, res.stderr.decode()
    assert res.stderr.decode() == ''


async def test_ctrl_c_while_the_feed_daemon_spawns_stops_cleanly():
    """a5 waited 3 s for the half-spawned child it never asked to stop,
    then logged #ZOMBIE_LORD_IS_HERE and killed it."""
    import psutil

    demo = Proc('demo', '--topics', 'AAA')
    try:
        with trio.fail_after(60):  # until the feed daemon's process exists
            while True:
                demo.remember_family()
                try:
                    kids = psutil.Process(demo.p.pid).children()
                    if any('feedd.sim' in ' '.join(k.cmdline()) for k in kids):
                        break
                except psutil.NoSuchProcess:
                    raise AssertionError(
                        f'demo ended early: {demo.p.stderr.read()}'
                    ) from None
                await trio.sleep(0.005)
        demo.remember_family()
        status = await demo.stop(signal.SIGINT)
    finally:
        if demo.p.poll() is None:
            demo.p.kill()
    assert not wait_gone(demo.family)
    assert status == 0, demo.err
    assert 'ZOMBIE' not in demo.err, demo.err
    assert 'Traceback' not in demo.err, demo.err
