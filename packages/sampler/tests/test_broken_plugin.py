"""One broken backend plugin never blocks the rest: whether it raises on
import (``SystemExit`` included), its hook raises or is declared wrongly,
or it registers a malformed backend, and whether it comes as an installed
entry point or as a ``--plugin`` module, it is reported in one line (and
listed by ``samplerd ls backends``) while every other backend, ``ls`` of a
running tree and ``demo`` on ``sim`` work."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import trio

from tractor_sampler import open_market_feed
from tractor_sampler._plugins import UnknownBackend, load_backends
from tractor_services import open_service_root
from tractor_services.testing import free_port

SAMPLERD = [sys.executable, '-m', 'tractor_sampler']

HOOK = 'from tractor_sampler.hookspecs import hookimpl\n'

#: plugin module sources, each broken one way, and what its reason names
BROKEN = {
    'raises_on_import': (
        "raise RuntimeError('venue SDK not configured')\n",
        'RuntimeError: venue SDK not configured',
    ),
    'exits_on_import': (
        "import sys\nsys.exit('venue SDK missing')\n",
        'SystemExit: venue SDK missing',
    ),
    'hook_raises': (
        HOOK + '@hookimpl\ndef tractor_sampler_register_backends(register):\n'
        "    raise RuntimeError('venue down')\n",
        'tractor_sampler_register_backends raised RuntimeError: venue down',
    ),
    'hook_exits': (
        HOOK
        + 'import sys\n@hookimpl\ndef tractor_sampler_register_backends(register):\n'
        "    sys.exit('no licence')\n",
        'raised SystemExit: no licence',
    ),
    'malformed_backend': (
        HOOK + '@hookimpl\ndef tractor_sampler_register_backends(register):\n'
        "    register('mal', stream_quotes=42)\n",
        "backend 'mal': stream_quotes is not callable",
    ),
    'hook_wrong_args': (
        HOOK + '@hookimpl\ndef tractor_sampler_register_backends(register, venue):\n'
        '    pass\n',
        "implements a hook wrongly: Plugin 'hook_wrong_args'",
    ),
    'takes_sim': (
        HOOK + 'from tractor_sampler.backends import sim\n'
        '@hookimpl\ndef tractor_sampler_register_backends(register):\n'
        "    register('sim', stream_quotes=sim.stream_quotes)\n",
        "backend 'sim' is registered twice",
    ),
}


def _write_modules(folder: Path) -> None:
    for name, (source, _) in BROKEN.items():
        (folder / f'{name}.py').write_text(source)


def _entry_points(folder: Path, names: list[str]) -> None:
    """Installed distributions (a dist-info each, as pip makes them) whose
    ``tractor_sampler`` entry point is one of the broken modules."""
    for name in names:
        info = folder / f'{name}-1.0.dist-info'
        info.mkdir()
        (info / 'METADATA').write_text(
            f'Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n'
        )
        (info / 'entry_points.txt').write_text(f'[tractor_sampler]\n{name} = {name}\n')


def _start_daemon(port: str, env: dict[str, str]) -> subprocess.Popen:
    return subprocess.Popen(
        [*SAMPLERD, '--port', port],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


@pytest.fixture
def broken_modules(tmp_path, monkeypatch):
    _write_modules(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    return tmp_path


@pytest.mark.parametrize('name', sorted(BROKEN))
def test_a_broken_plugin_module_is_one_line_and_the_rest_loads(broken_modules, name):
    reg = load_backends(entry_points=[], modules=[name], strict=False)
    assert {'sim', 'replay'} <= set(reg)
    why = reg.broken[name]
    assert '\n' not in why and BROKEN[name][1] in why, why
    [row] = [b for b in reg.info() if b.error is not None]
    assert row.name == name and row.error == why
    with pytest.raises(UnknownBackend, match='broken plugins left out: .*' + name):
        reg['mal']


@pytest.mark.parametrize('name', sorted(BROKEN))
def test_a_broken_entry_point_is_one_line_and_the_rest_loads(broken_modules, name):
    from importlib.metadata import distributions

    _entry_points(broken_modules, [name])
    [dist] = [d for d in distributions(path=[str(broken_modules)]) if d.name == name]
    [ep] = dist.entry_points
    reg = load_backends(entry_points=[ep], strict=False)
    assert {'sim', 'replay'} <= set(reg)
    why = reg.broken[name]
    assert '\n' not in why and BROKEN[name][1] in why and f'{name} 1.0' in why, why


def test_a_module_that_is_not_there_says_where_it_was_looked_for():
    reg = load_backends(
        entry_points=[],
        modules=['no_such_plugin_module'],
        module_note=' in the feed daemon (pid 1)',
        strict=False,
    )
    assert reg.broken['no_such_plugin_module'] == (
        "plugin module 'no_such_plugin_module' failed to import in the feed daemon "
        "(pid 1): ModuleNotFoundError: No module named 'no_such_plugin_module'"
    )


async def test_the_sim_feed_serves_beside_a_plugin_module_raising_on_import(
    other_addr,
):
    async with open_service_root(other_addr):
        async with open_market_feed(['AAA'], plugins=['import_raising_plugin']) as feed:
            assert feed.first_status['AAA'].state == 'up'
            with trio.fail_after(30):
                async for q in feed:
                    assert q.topic == 'AAA'
                    break


async def test_demo_on_sim_runs_beside_a_broken_plugin_module(tmp_path):
    """``samplerd demo --plugin M`` where M raises on import: one line
    about M on stderr, the demo's bars, exit status 0."""
    with trio.fail_after(90):
        res = await trio.run_process(
            [
                *SAMPLERD,
                'demo',
                '--topics',
                'AAA',
                '--rows',
                '2',
                '--fps',
                '2',
                '--duration',
                '4',
                '--plugin',
                'import_raising_plugin',
            ],
            capture_stdout=True,
            capture_stderr=True,
            check=False,
        )
    out, err = res.stdout.decode(), res.stderr.decode()
    assert res.returncode == 0, err
    assert 'Traceback' not in err, err
    [line] = [ln for ln in err.splitlines() if 'import_raising_plugin' in ln]
    assert 'RuntimeError: the venue SDK is not configured' in line
    assert 'feed AAA on sim' in out and 'AAA@sim' in out


async def test_ls_and_watch_of_a_running_tree_beside_broken_entry_points(tmp_path):
    """Every broken kind installed as entry points at once, in the root,
    its feed daemon and the commands: ``ls`` lists the tree and a BROKEN
    row per plugin, ``watch`` on sim shows bars."""
    _write_modules(tmp_path)
    _entry_points(tmp_path, sorted(BROKEN))
    env = {
        **os.environ,
        'PYTHONPATH': os.pathsep.join(
            [str(tmp_path), os.environ.get('PYTHONPATH', '')]
        ),
    }
    port = str(free_port())
    daemon = _start_daemon(port, env)

    async def cli(*args: str) -> subprocess.CompletedProcess:
        with trio.fail_after(90):
            return await trio.run_process(
                [*SAMPLERD, '--port', port, *args],
                capture_stdout=True,
                capture_stderr=True,
                check=False,
                env=env,
            )

    try:
        with trio.fail_after(60):
            ready = await trio.to_thread.run_sync(
                daemon.stdout.readline, abandon_on_cancel=True
            )
        assert 'ready' in ready, daemon.stderr.read()
        watch = await cli(
            'watch', 'AAA', '--rows', '2', '--fps', '2', '--duration', '3'
        )
        assert watch.returncode == 0, watch.stderr.decode()
        assert 'AAA@sim' in watch.stdout.decode()

        ls = await cli('ls')
        out = ls.stdout.decode()
        assert ls.returncode == 0, ls.stderr.decode()
        assert 'feedd.sim' in out and 'samplerd' in out
        broken = [ln for ln in out.splitlines() if 'BROKEN plugin' in ln]
        assert sorted(ln.split("'")[1] for ln in broken) == sorted(BROKEN)
        for name, (_, why) in BROKEN.items():
            [line] = [ln for ln in broken if f"'{name}'" in ln]
            assert why in line, line
        # one line each on stderr, no traceback
        err = ls.stderr.decode()
        assert 'Traceback' not in err
        for name in BROKEN:
            assert len([ln for ln in err.splitlines() if f'{name} 1.0' in ln]) == 1, err

        js = await cli('ls', '--json')
        report = json.loads(js.stdout)
        errors = {b['name']: b.get('error') for b in report['backends']}
        assert errors['sim'] is None and set(BROKEN) <= set(errors)
    finally:
        daemon.send_signal(signal.SIGTERM)
        with trio.fail_after(30):
            status = await trio.to_thread.run_sync(daemon.wait, abandon_on_cancel=True)
        rest = daemon.stderr.read()
    assert status == 0, rest
    assert 'Traceback' not in rest, rest
