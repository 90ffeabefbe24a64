"""The example backend plugin (examples/sampler-backend-example) works as a
third-party distribution: installed (not editable) into a fresh virtual
environment next to the three packages, it is found through its entry
point, streams (directly, and through a feed daemon that `samplerd` spawns
for it), passes its own tests there, and ``TRACTOR_SAMPLER_PLUGINS`` can
leave it out."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / 'examples' / 'sampler-backend-example'
DIST = 'tractor-sampler-sine 0.1.0'
INSTALL_TIMEOUT = 900  # a cold cache downloads and builds everything


def _find_uv() -> str | None:
    uv = shutil.which('uv')
    if uv:
        return uv
    try:
        from uv import find_uv_bin
    except ImportError:
        return None
    try:
        return find_uv_bin()
    except FileNotFoundError:
        return None


def _run(
    args: list[str], *, env: dict[str, str], timeout: float
) -> subprocess.CompletedProcess:
    """Run a command in its own process group; on timeout kill the whole
    group (pytest's actors included), so nothing is left behind."""
    proc = subprocess.Popen(
        args,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        pytest.fail(
            f'{args[:3]} timed out after {timeout} s:\n{out[-3000:]}\n{err[-3000:]}'
        )
    return subprocess.CompletedProcess(args, proc.returncode, out, err)


def _clean_env(**extra: str) -> dict[str, str]:
    """The environment without anything pointing at the dev environment."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k
        not in ('VIRTUAL_ENV', 'PYTHONPATH', 'PYTHONHOME', 'TRACTOR_SAMPLER_PLUGINS')
    }
    env.update(extra)
    return env


@pytest.fixture(scope='module')
def venv_python(tmp_path_factory) -> Iterator[str]:
    """A fresh venv holding the three packages and the example, all built
    and installed as wheels (removed afterwards: it is ~100 MB)."""
    uv = _find_uv()
    if uv is None:
        pytest.skip('needs uv to build a clean environment')
    venv = tmp_path_factory.mktemp('plugin') / 'venv'
    env = _clean_env(UV_COMPILE_BYTECODE='1')
    proc = _run(
        [uv, 'venv', '--python', sys.executable, str(venv)], env=env, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    python = str(
        venv / ('Scripts/python.exe' if sys.platform == 'win32' else 'bin/python')
    )
    proc = _run(
        [
            uv,
            'pip',
            'install',
            '--python',
            python,
            '--overrides',
            str(ROOT / 'overrides.txt'),
            # the root's workspace sources would install the packages'
            # in-repo dependencies editable; use the published metadata
            '--no-sources',
            f'{ROOT / "packages" / "tractor-services"}[tractor]',
            str(ROOT / 'packages' / 'feedbus'),
            str(ROOT / 'packages' / 'sampler'),
            f'{EXAMPLE}[test]',
        ],
        env=env,
        timeout=INSTALL_TIMEOUT,
    )
    assert proc.returncode == 0, proc.stderr[-5000:]
    yield python
    shutil.rmtree(venv, ignore_errors=True)


def _python(python: str, code: str, *, timeout: float = 120, **env: str) -> str:
    proc = _run(
        [python, '-c', textwrap.dedent(code)], env=_clean_env(**env), timeout=timeout
    )
    assert proc.returncode == 0, proc.stderr[-5000:]
    return proc.stdout


LIST = """
    import importlib.metadata, json
    import tractor_sampler, sampler_sine
    print(json.dumps({
        'backends': tractor_sampler.load_backends().list(),
        'entry_points': [
            [ep.name, ep.value, ep.dist.name, ep.dist.version]
            for ep in importlib.metadata.entry_points(group='tractor_sampler')
        ],
        'file': sampler_sine.__file__,
        'direct_urls': {
            name: json.loads(importlib.metadata.distribution(name).read_text('direct_url.json'))
            for name in ('tractor-services', 'feedbus', 'tractor-sampler', 'tractor-sampler-sine')
        },
    }))
"""


def test_found_through_its_entry_point(venv_python):
    out = json.loads(_python(venv_python, LIST))
    backends = {b['name']: b for b in out['backends']}
    assert set(backends) == {'sim', 'replay', 'sine'}
    assert backends['sine'] == {
        'name': 'sine',
        'version': '0.1.0',
        'dist': DIST,
        'history': True,
        'symbol_info': True,
    }
    assert backends['sim']['dist'] == 'builtin'
    assert out['entry_points'] == [
        ['sine', 'sampler_sine', 'tractor-sampler-sine', '0.1.0']
    ]
    # installed as wheels into the venv, not imported from the source tree
    venv = Path(venv_python).parent.parent
    assert Path(out['file']).is_relative_to(venv), out['file']
    editable = [
        n for n, u in out['direct_urls'].items() if u['dir_info'].get('editable')
    ]
    assert not editable, f'installed editable: {editable}'


def test_plugins_env_var_leaves_it_out(venv_python):
    out = json.loads(_python(venv_python, LIST, TRACTOR_SAMPLER_PLUGINS=''))
    assert [b['name'] for b in out['backends']] == ['replay', 'sim']
    out = json.loads(_python(venv_python, LIST, TRACTOR_SAMPLER_PLUGINS='sine'))
    assert [b['name'] for b in out['backends']] == ['replay', 'sim', 'sine']


STREAM = """
    import json
    import trio
    from tractor_sampler import get_backend

    async def main():
        n = 0
        async for batch in get_backend('sine').stream_quotes(['sin.a'], tick_rate=100):
            print(json.dumps(batch), flush=True)
            n += 1
            if n == 12:
                break

    trio.run(main)
"""


def test_streams_the_sine(venv_python):
    batches = [json.loads(line) for line in _python(venv_python, STREAM).splitlines()]
    assert len(batches) == 12
    quotes = [b['sin.a'] for b in batches]
    assert all(list(b) == ['sin.a'] for b in batches)
    for q in quotes:
        assert {
            'last',
            'bid',
            'ask',
            'bsize',
            'asize',
            'volume',
            'time',
            'ticks',
        } <= set(q)
        # the defaults: base 100, amplitude 1, on a 0.01 tick grid
        assert 99.0 - 0.02 <= q['bid'] < q['ask'] <= 101.0 + 0.02
        assert abs(q['last'] - 100.0) <= 1.0 + 0.02
        assert {'bid', 'ask'} <= {t['type'] for t in q['ticks']}
    # paced at 100 a second, in wall-clock epoch seconds
    times = [q['time'] for q in quotes]
    assert times == sorted(times) and 0.05 <= times[-1] - times[0] <= 1.0
    assert abs(times[0] - time.time()) < 60
    trades = [t for q in quotes for t in q['ticks'] if t['type'] == 'trade']
    assert trades and quotes[-1]['volume'] == sum(t['size'] for t in trades)

    # the mid price is the symbol's wave at the quote's time
    code = f"""
        import json, sampler_sine
        wave = sampler_sine.Wave()
        print(json.dumps([float(wave.price('sin.a', t)) for t in {times!r}]))
    """
    expected = json.loads(_python(venv_python, code))
    for q, price in zip(quotes, expected, strict=True):
        assert abs((q['bid'] + q['ask']) / 2 - price) <= 0.006


def test_example_tests_pass_there(venv_python):
    proc = _run(
        [
            venv_python,
            '-m',
            'pytest',
            str(EXAMPLE / 'tests'),
            '-q',
            '-p',
            'no:cacheprovider',
        ],
        env=_clean_env(),
        timeout=600,
    )
    assert proc.returncode == 0, (proc.stdout[-5000:], proc.stderr[-3000:])
    summary = proc.stdout.strip().splitlines()[-1]
    assert (
        ' passed' in summary and 'failed' not in summary and 'skipped' not in summary
    ), summary


def test_samplerd_streams_it_through_its_feed_daemon(venv_python):
    """In the clean environment: the root daemon (`samplerd run`), then
    `samplerd watch sin.a --backend sine`, which has the root spawn the
    sine feed daemon from the installed plugin and shows its bars."""
    import socket

    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        port = str(s.getsockname()[1])
    bindir = Path(venv_python).parent
    env = _clean_env()
    daemon = subprocess.Popen(
        [str(bindir / 'samplerd'), 'run', '--port', port],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        ready = daemon.stdout.readline()
        assert ready.startswith(f'samplerd ready: registry 127.0.0.1:{port}'), (
            daemon.stderr.read()
        )
        watch = _run(
            [
                str(bindir / 'samplerd'),
                'watch',
                'sin.a',
                '--backend',
                'sine',
                '--port',
                port,
                '--duration',
                '4',
                '--rows',
                '3',
                '--fps',
                '2',
            ],
            env=env,
            timeout=120,
        )
        assert watch.returncode == 0, watch.stderr[-3000:]
        frames = [
            line
            for line in watch.stdout.splitlines()
            if line.startswith('sin.a@sine  last ')
        ]
        assert frames and any(' state up ' in f for f in frames)
        ls = _run(
            [str(bindir / 'samplerd'), 'ls', 'feeds', '--json', '--port', port],
            env=env,
            timeout=120,
        )
        [feed] = json.loads(ls.stdout)['feeds']
        assert (feed['backend'], feed['dist']) == ('sine', DIST)
        assert feed['topics']['sin.a']['quotes'] > 0
        daemon.send_signal(signal.SIGTERM)
        assert daemon.wait(timeout=60) == 0
    finally:
        if daemon.poll() is None:
            os.killpg(daemon.pid, signal.SIGKILL)
            daemon.wait()
