"""The samplerd command, run as a user runs it: in subprocesses."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import trio
from _procs import SAMPLERD, Proc

from tractor_services.testing import free_port, wait_gone

PROGRAMS = Path(__file__).parent / 'programs'


async def run_cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    with trio.fail_after(timeout):
        return await trio.run_process(
            [*SAMPLERD, *args], capture_stdout=True, capture_stderr=True, check=False
        )


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def bar_rows(frame_lines: list[str]) -> list[list[str]]:
    """The bar rows of a rendered view: time, then five numbers."""
    rows = []
    for line in frame_lines:
        parts = line.split()
        if len(parts) == 6 and parts[0].count(':') == 2:
            try:
                [float(x) for x in parts[1:]]
            except ValueError:
                continue
            rows.append(parts)
    return rows


async def test_demo_shows_bars_and_exits_0_on_sigint_leaving_nothing():
    demo = Proc(
        'demo', '--topics', 'AAA', '--tick-rate', '50', '--rows', '5', '--fps', '4'
    )
    try:
        ready = await demo.read_until(lambda line: line.startswith('samplerd ready:'))
        assert 'feed AAA on sim' in ready
        # frames keep coming, each with the topic's header and its bars
        # (structure only: the simulated price level drifts with the date)
        header = await demo.read_until(
            lambda line: (
                line.startswith('AAA@sim  last ') and _is_number(line.split()[2])
            )
        )
        assert float(header.split()[2]) > 0
        frame = []
        while len(bar_rows(frame)) < 5:
            frame.append(await demo.read_until(lambda line: True))
        rows = bar_rows(frame)
        times = [r[0] for r in rows]
        assert times == sorted(times) and len(set(times)) == len(times)
        for _, o, h, lo, c, _v in rows:
            assert (
                float(lo)
                <= min(float(o), float(c))
                <= max(float(o), float(c))
                <= float(h)
            )
        assert any(float(r[5]) > 0 for r in rows)  # trades reached the bars
        assert len(demo.family) >= 2  # samplerd and the feed daemon
        status = await demo.stop(signal.SIGINT)
    finally:
        if demo.p.poll() is None:
            demo.p.kill()
    assert status == 0, demo.err
    assert 'Traceback' not in demo.err, demo.err
    assert not wait_gone(demo.family), 'samplerd left processes behind'


def test_demo_duration_counts_from_the_first_frame():
    """A --duration shorter than starting the feed (a feed daemon spawned,
    history fetched) still shows the ready line and a frame: the time
    counts from the first frame, not from the command's start."""
    proc = subprocess.run(
        [*SAMPLERD, 'demo', '--topics', 'AAA', '--rows', '2', '--duration', '0.01'],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines and lines[0].startswith('samplerd ready:'), proc.stdout
    assert any(line.startswith('AAA@sim  last ') for line in lines), proc.stdout
    assert 'ERROR' not in proc.stderr, proc.stderr


async def test_two_programs_read_one_topic_of_one_running_samplerd():
    port = free_port()
    daemon = Proc('--port', str(port), '-l', 'warning')
    try:
        ready = await daemon.read_until(lambda line: 'ready' in line)
        assert f'registry 127.0.0.1:{port}' in ready
        clients = [
            [
                sys.executable,
                str(PROGRAMS / 'feed_client.py'),
                '127.0.0.1',
                str(port),
                'AAA',
                '30',
            ]
            for _ in range(2)
        ]
        results = []
        async with trio.open_nursery() as tn:

            async def run(cmd):
                with trio.fail_after(90):
                    res = await trio.run_process(
                        cmd, capture_stdout=True, capture_stderr=True, check=False
                    )
                assert res.returncode == 0, res.stderr.decode()
                results.append(json.loads(res.stdout.decode().strip().splitlines()[-1]))

            for cmd in clients:
                tn.start_soon(run, cmd)
        a, b = results
        # one feed daemon, one set of buffers, one numbering of the quotes
        assert a['daemon_pid'] == b['daemon_pid']
        assert a['buffers'] == b['buffers'] and set(a['buffers']) == {'1.0', '60.0'}
        for r in (a, b):
            assert r['seqs'] == list(range(r['seqs'][0], r['seqs'][0] + 30))
        assert abs(a['last_bar_time'] - b['last_bar_time']) <= 5

        # ls sees the services, the feed and its topic; the clients have left
        res = await run_cli('--port', str(port), 'ls', '--json')
        assert res.returncode == 0, res.stderr.decode()
        report = json.loads(res.stdout)
        assert {s['name']: s['state'] for s in report['services']} == {
            'samplerd': 'running',
            'feedd.sim': 'running',
        }
        [feed] = report['feeds']
        assert feed['backend'] == 'sim' and feed['topics']['AAA']['state'] == 'up'
        assert feed['topics']['AAA']['subscribers'] == []
        assert report['samplerd']['buffers'] == {'1': 1, '60': 1}
        assert [b['name'] for b in report['backends']] == ['replay', 'sim']
        text = await run_cli('--port', str(port), 'ls')
        assert 'feedd.sim' in text.stdout.decode() and 'AAA' in text.stdout.decode()
        # refusals are one line, with exit status 1, and the daemon serves on
        for args, expected in (
            (['--backend', 'nope'], "no backend named 'nope' (installed: replay, sim)"),
            (
                ['--backend', 'x', '--plugin', 'no_such_module'],
                "plugin module 'no_such_module' failed to import",
            ),
        ):
            bad = await run_cli(
                '--port', str(port), 'watch', 'AAA', *args, '--duration', '3'
            )
            err = bad.stderr.decode().strip()
            assert bad.returncode == 1 and len(err.splitlines()) == 1, err
            assert err.startswith('samplerd: error: ') and expected in err, err
        status = await daemon.stop(signal.SIGTERM)
    finally:
        if daemon.p.poll() is None:
            daemon.p.kill()
    assert status == 0, daemon.err
    assert not wait_gone(daemon.family), 'samplerd left processes behind'


async def test_ls_backends_needs_no_daemon_and_lists_versions():
    from tractor_sampler import __version__

    res = await run_cli('ls', 'backends', '--json')
    assert res.returncode == 0, res.stderr.decode()
    replay, sim = json.loads(res.stdout)['backends']
    assert (replay['name'], replay['dist']) == ('replay', 'builtin')
    assert (sim['name'], sim['version'], sim['dist']) == ('sim', __version__, 'builtin')


async def test_ls_backends_shows_the_registry_address_given():
    """`ls backends` asks no daemon: its registry line is the address the
    other commands would use when one is given ($TRACTOR_REGISTRY_ADDR,
    --port), and `-` when none is (it used to be `-` always)."""
    env = {k: v for k, v in os.environ.items() if k != 'TRACTOR_REGISTRY_ADDR'}

    async def first_line(*args: str, **extra: str) -> str:
        with trio.fail_after(60):
            res = await trio.run_process(
                [*SAMPLERD, 'ls', 'backends', *args],
                capture_stdout=True,
                capture_stderr=True,
                check=False,
                env={**env, **extra},
            )
        assert res.returncode == 0, res.stderr.decode()
        return res.stdout.decode().splitlines()[0]

    assert await first_line() == 'registry -'
    assert (
        await first_line(TRACTOR_REGISTRY_ADDR='10.1.2.3:4567')
        == 'registry 10.1.2.3:4567'
    )
    assert await first_line('--port', '7777') == 'registry 127.0.0.1:7777'


@pytest.mark.parametrize(
    'args, message',
    [
        *(
            (
                cmd,
                'no samplerd answers at 127.0.0.1:{port}: start one with `samplerd run`',
            )
            for cmd in (['ls'], ['watch', 'AAA'], ['stop', 'AAA'])
        ),
        (
            ['watch', 'AAA', '--period', '5'],
            '--period 5: the feed daemons keep 1 s and 60 s bars',
        ),
        (['watch', 'AAA', '--duration', '0'], '--duration 0.0 must be > 0'),
        (['demo', '--fps', '0'], '--fps 0 must be in (0, 60]'),
        (['watch', 'AAA', '--rows', '0'], '--rows 0 must be >= 1'),
    ],
)
async def test_errors_are_one_line_and_exit_1(args, message):
    port = free_port()
    res = await run_cli('--port', str(port), *args)
    err = res.stderr.decode()
    assert res.returncode == 1
    assert err.strip() == f'samplerd: error: {message.format(port=port)}'


async def test_flags_follow_pikerd_and_work_after_the_command():
    res = await run_cli('--help')
    out = res.stdout.decode()
    for flag in ('-l LEVEL, --loglevel LEVEL', '--pdb', '--host HOST', '--port PORT'):
        assert flag in out
    for cmd in ('run', 'ls', 'watch', 'demo'):
        assert cmd in out
    port = free_port()
    res = await run_cli('ls', '--port', str(port), '-l', 'error')
    assert f'127.0.0.1:{port}' in res.stderr.decode()


def test_console_script_is_declared():
    from importlib.metadata import entry_points

    [ep] = [e for e in entry_points(group='console_scripts') if e.name == 'samplerd']
    assert ep.value == 'tractor_sampler._cli:main'
    assert os.path.exists(Path(sys.executable).parent / 'samplerd')


async def test_a_reader_that_goes_away_ends_ls_quietly():
    # `samplerd ls backends | head -0`: the pipe is closed before it writes
    read_fd, write_fd = os.pipe()
    os.close(read_fd)
    try:
        with trio.fail_after(60):
            res = await trio.run_process(
                [*SAMPLERD, 'ls', 'backends'],
                stdout=write_fd,
                capture_stderr=True,
                check=False,
            )
    finally:
        os.close(write_fd)
    assert res.returncode == 128 + signal.SIGPIPE
    assert res.stderr.decode() == ''


@pytest.mark.parametrize(
    'args',
    [
        ('--port', '-5', 'ls'),
        ('--port=-5', 'ls'),
        ('ls', '--port', '-5'),
        ('ls', '--port=-5'),
        ('--port', '70000', 'ls'),
        ('--port', 'http', 'ls'),
    ],
)
async def test_a_bad_port_is_refused_in_one_line(args):
    res = await run_cli(*args)
    err = res.stderr.decode()
    assert res.returncode == 2
    assert '--port: ' in err and 'Traceback' not in err, err
    if '-5' in ''.join(args):  # argparse must not take -5 for an option
        assert '-5 is out of range (0 to 65535)' in err, err


@pytest.mark.parametrize(
    'args, message',
    [
        (('watch', ' '), "topic: bad topic ' ': topics are non-empty strings"),
        (('watch', 'AAA,BBB'), "topic: bad topic 'AAA,BBB': a comma in the name"),
        (('watch', ' AAA'), "topic: bad topic ' AAA': blanks around the name"),
        (('demo', '--topics', ' , '), "--topics ' , ': no symbol given"),
        (('demo', '--topics', 'AAA;BBB'), "--topics: bad symbol 'AAA;BBB'"),
    ],
)
async def test_a_mistyped_symbol_is_one_line_before_anything_starts(args, message):
    # no daemon runs at the port: the symbol is refused before any is asked
    res = await run_cli('--port', str(free_port()), *args)
    err = res.stderr.decode().strip()
    assert res.returncode == 1 and len(err.splitlines()) == 1, err
    assert err.startswith(f'samplerd: error: {message}'), err


async def test_a_reader_that_goes_away_ends_ls_and_watch_of_a_running_tree():
    """`samplerd ls | head -0` and `samplerd watch AAA | head -1` against
    a running daemon, with real pipes: SIGPIPE's status, nothing on
    stderr."""
    port = str(free_port())
    daemon = Proc('--port', port)
    try:
        await daemon.read_until(lambda line: 'ready' in line)
        # ls: the pipe is closed before it writes
        read_fd, write_fd = os.pipe()
        os.close(read_fd)
        try:
            with trio.fail_after(60):
                res = await trio.run_process(
                    [*SAMPLERD, '--port', port, 'ls'],
                    stdout=write_fd,
                    capture_stderr=True,
                    check=False,
                )
        finally:
            os.close(write_fd)
        assert res.returncode == 128 + signal.SIGPIPE, res.stderr.decode()
        assert res.stderr.decode() == ''

        # watch: the reader takes one line, then goes away while frames come
        read_fd, write_fd = os.pipe()
        reader = os.fdopen(read_fd, 'rb')
        try:
            async with trio.open_nursery() as tn:
                done = trio.Event()
                result = {}

                async def watch():
                    result['res'] = await trio.run_process(
                        [*SAMPLERD, '--port', port, 'watch', 'AAA', '--fps', '20'],
                        stdout=write_fd,
                        capture_stderr=True,
                        check=False,
                    )
                    done.set()

                tn.start_soon(watch)
                with trio.fail_after(60):
                    first = await trio.to_thread.run_sync(
                        reader.readline, abandon_on_cancel=True
                    )
                assert first.strip(), first  # a frame began
                reader.close()
                with trio.fail_after(60):
                    await done.wait()
        finally:
            os.close(write_fd)
            if not reader.closed:
                reader.close()
        res = result['res']
        assert res.returncode == 128 + signal.SIGPIPE, res.stderr.decode()
        assert res.stderr.decode() == ''
        status = await daemon.stop(signal.SIGTERM)
    finally:
        if daemon.p.poll() is None:
            daemon.p.kill()
    assert status == 0, daemon.err
    assert not wait_gone(daemon.family), 'samplerd left processes behind'


def test_ls_fits_the_terminal_and_json_stays_whole(tmp_path):
    """A backend with a 300-character name: into a pipe its cell is cut at
    CELL_MAX; on a terminal 70 columns wide every row fits it; --json has
    the whole name."""
    from tractor_sampler._cli import CELL_MAX

    name = 'L' * 300
    (tmp_path / 'longname.py').write_text(
        'from tractor_sampler.backends import sim\n'
        'from tractor_sampler.hookspecs import hookimpl\n'
        '@hookimpl\n'
        'def tractor_sampler_register_backends(register):\n'
        f'    register({name!r}, stream_quotes=sim.stream_quotes)\n'
    )
    info = tmp_path / 'longname-1.0.dist-info'
    info.mkdir()
    (info / 'METADATA').write_text(
        'Metadata-Version: 2.1\nName: longname\nVersion: 1.0\n'
    )
    (info / 'entry_points.txt').write_text('[tractor_sampler]\nlongname = longname\n')
    env = {
        **os.environ,
        'PYTHONPATH': os.pathsep.join(
            [str(tmp_path), os.environ.get('PYTHONPATH', '')]
        ),
    }
    env.pop('COLUMNS', None)
    cmd = [*SAMPLERD, 'ls', 'backends']
    piped = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=60)
    assert piped.returncode == 0, piped.stderr
    [row] = [ln for ln in piped.stdout.splitlines() if 'LLL' in ln]
    assert 'L' * (CELL_MAX - 1) + '…' in row and 'L' * CELL_MAX not in row

    js = subprocess.run(
        [*cmd, '--json'], capture_output=True, text=True, env=env, timeout=60
    )
    assert name in [b['name'] for b in json.loads(js.stdout)['backends']]

    out = _run_in_terminal(cmd, env, columns=70)
    rows = [ln for ln in out.splitlines() if ln.strip()]
    assert any('LLL' in ln and '…' in ln for ln in rows), out
    assert max(len(ln) for ln in rows) <= 70, out


def _run_in_terminal(cmd: list[str], env: dict[str, str], columns: int) -> str:
    """``cmd``'s output on a pseudo-terminal ``columns`` wide."""
    import fcntl
    import pty
    import struct
    import termios

    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack('HHHH', 40, columns, 0, 0))
    try:
        proc = subprocess.Popen(
            cmd, stdout=slave, stderr=subprocess.DEVNULL, env=env, close_fds=True
        )
        os.close(slave)
        chunks = []
        while True:
            try:
                data = os.read(master, 65536)
            except OSError:  # EIO: the terminal's other end closed
                break
            if not data:
                break
            chunks.append(data)
        assert proc.wait(timeout=60) == 0
    finally:
        os.close(master)
    return b''.join(chunks).decode().replace('\r\n', '\n')


def test_a_long_value_does_not_widen_every_ls_row():
    from tractor_sampler._cli import CELL_MAX, _table

    lines = _table([('A' * 5000, 'up', 1), ('BBB', 'up', 2)], ('topic', 'state', 'n'))
    assert max(len(line) for line in lines) <= CELL_MAX + 20
    assert lines[1].startswith('A' * (CELL_MAX - 1) + '…')
    assert lines[2].split() == ['BBB', 'up', '2']
