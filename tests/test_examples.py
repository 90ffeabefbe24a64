"""The examples in examples/ run as documented (so the docs cannot rot)."""

import subprocess
import sys
from pathlib import Path

import psutil

ROOT = Path(__file__).parent.parent


def test_services_demo(free_addr):
    host, port = free_addr
    proc = subprocess.run(
        [
            sys.executable,
            str(ROOT / 'examples' / 'services_demo.py'),
            '--registry',
            f'{host}:{port}',
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    out = proc.stdout
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f'service root ready: registry at {host}:{port}' in out
    started, restarted = out.split('quotes was restarted by its permanent policy:')
    assert started.count(' running ') == 3
    quotes = next(
        line for line in restarted.splitlines() if line.strip().startswith('quotes')
    )
    assert quotes.split()[1:4][0] == 'running' and quotes.split()[3] == '1'
    assert 'killed by signal 9' in quotes
    stops = [
        line.split()[0]
        for line in out.splitlines()
        if line.strip().endswith(' stopped') and line.startswith('  ')
    ]
    assert stops == ['reports', 'orders', 'quotes']
    assert out.rstrip().endswith('all services stopped')
    # every actor pid the demo printed is gone
    pids = [
        int(tok)
        for line in out.splitlines()
        if line.startswith('  ') and len(line.split()) >= 4
        for tok in line.split()[2:3]
        if tok.isdigit()
    ]
    assert pids and not [
        p
        for p in pids
        if psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE
    ]


def test_feedbus_demo(free_addr):
    host, port = free_addr
    proc = subprocess.run(
        [
            sys.executable,
            str(ROOT / 'examples' / 'feedbus_demo.py'),
            '--registry',
            f'{host}:{port}',
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout
    assert "producer serves ['btc', 'eth']" in out
    frames = [line for line in out.splitlines() if line.startswith('frame ')]
    assert len(frames) == 6
    # frames cover contiguous sequence ranges: nothing lost between frames
    ranges = [
        tuple(map(int, line.split('(seq ')[1].split(')')[0].split('-')))
        for line in frames
    ]
    assert all(b[0] == a[1] + 1 for a, b in zip(ranges, ranges[1:], strict=False))
    assert 'paused after 100 quotes' in out and 'resumed' in out
    stats = {
        line.split(':')[0]: dict(kv.split('=') for kv in line.split(': ')[1].split())
        for line in out.splitlines()
        if line.startswith(('all:', 'frames:'))
    }
    # delivered: what reached the subscriber's side, which reads ahead of the
    # loop that stopped at 300 (the shared-memory ring on one host)
    assert int(stats['all']['delivered']) >= 300 and stats['all']['dropped'] == '0'
    assert int(stats['frames']['conflated']) > 0
    assert out.rstrip().endswith('done')


def test_sampler_feed(free_addr):
    host, port = free_addr
    proc = subprocess.run(
        [
            sys.executable,
            str(ROOT / 'examples' / 'sampler_feed.py'),
            '--registry',
            f'{host}:{port}',
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout.splitlines()
    assert out[0].startswith(
        'AAA: up, 1441 one-minute bars (backfilled), read-only=True'
    )
    assert out[2].startswith("quotes: {'AAA': ") and 'last AAA bid/ask' in out[2]
    bars = [line for line in out if line.startswith('  ') and ' o=' in line]
    assert len(bars) == 3
    assert 'services: feedd.sim, samplerd' in out and out[-1] == 'done'


def test_sampler_feed_shares_topics_already_running(free_addr):
    """With a `samplerd run` serving and BBB already open with the default
    config (a `samplerd watch` runs), the example attaches to
    both topics as they run: nothing is refused, no traceback (it used to
    ask for its own tick_rate, which the running BBB refused)."""
    host, port = free_addr
    script = Path(sys.executable).parent / 'samplerd'
    root = subprocess.Popen(
        [str(script), 'run', '--port', str(port), '--no-store'],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert root.stdout is not None
        ready = root.stdout.readline()  # blocks until the ready line (or exit)
        assert ready.startswith('samplerd ready:'), ready
        watch = subprocess.Popen(
            [str(script), 'watch', 'BBB', '--port', str(port)],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        try:
            assert watch.stdout is not None
            first = watch.stdout.readline()  # its first frame: BBB runs
            assert first.startswith('BBB@sim'), first
            proc = subprocess.run(
                [
                    sys.executable,
                    str(ROOT / 'examples' / 'sampler_feed.py'),
                    '--registry',
                    f'{host}:{port}',
                ],
                capture_output=True,
                text=True,
                timeout=120,
            )
        finally:
            watch.terminate()
            assert watch.wait(timeout=60) == 0
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert 'Traceback' not in proc.stderr
        assert proc.stdout.splitlines()[1].startswith('BBB: up, ')
        assert proc.stdout.rstrip().endswith('done')
    finally:
        root.terminate()
        assert root.wait(timeout=60) == 0


def test_readme_main_job_is_the_samplerd_demo():
    """The README's first command after installing runs the demo, which the
    console script serves (the demo itself is tested in tractor-sampler's
    tests/test_cli.py)."""
    readme = (ROOT / 'README.md').read_text()
    assert '$ uv run samplerd demo' in readme
    script = Path(sys.executable).parent / 'samplerd'
    proc = subprocess.run(
        [str(script), 'demo', '--duration', '3', '--rows', '3', '--topics', 'AAA'],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.startswith('samplerd ready: registry 127.0.0.1:')
    assert 'AAA@sim  last ' in proc.stdout
