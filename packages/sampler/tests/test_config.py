"""``samplerd run --config``: the config file (checked before anything
starts, applied under the flags), boot topics, and systemd's readiness
protocol (docs/production.md)."""

from __future__ import annotations

import io
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path

import msgspec
import pytest
import trio
from test_cli import Proc, run_cli

from tractor_services.testing import free_port, wait_gone

REPO = Path(__file__).resolve().parents[3]
EXAMPLE = REPO / 'contrib' / 'samplerd.toml'
SAMPLERD = [sys.executable, '-m', 'tractor_sampler']


def check_config(*args: str) -> dict:
    """``samplerd run ... --check-config`` in this process: the effective
    settings it prints."""
    from tractor_sampler._cli import main

    out = io.StringIO()
    assert main(['run', *args, '--check-config'], out=out) == 0
    return json.loads(out.getvalue())


def test_the_example_file_is_applied():
    eff = check_config('--config', str(EXAMPLE))
    assert eff['config'] == str(EXAMPLE)
    assert (eff['host'], eff['port']) == ('127.0.0.1', 1616)
    assert eff['data_dir'] == '/var/lib/samplerd'
    assert (eff['store'], eff['record'], eff['linger']) == (True, False, 30.0)
    assert eff['feeds']['stale_after'] == 30.0
    assert eff['feeds']['group_members'] == 4096
    assert eff['feeds']['buffers'] == {
        '1.0': {'rows': 86400, 'history': 3600},
        '60.0': {'rows': 20160, 'history': 1440},
    }
    assert eff['restart']['samplerd'] == {
        'restart': 'transient',
        'max_restarts': 5,
        'within_s': 60.0,
        'backoff_s': 0.2,
        'backoff_factor': 2.0,
        'max_backoff_s': 5.0,
    }
    assert eff['restart']['feedd']['max_restarts'] == 3
    assert eff['backends'] == {
        'sim': {'topics': ['AAA', 'BBB'], 'config': {'tick_rate': 50.0, 'seed': 0}}
    }


def _page_block(lang: str) -> str:
    """The first ``lang`` code block of docs/production.md."""
    text = (REPO / 'docs' / 'production.md').read_text()
    start = text.index(f'```{lang}\n') + len(f'```{lang}\n')
    return text[start : text.index('```\n', start)]


def test_the_docs_show_the_example_file_and_unit_as_they_are():
    assert _page_block('toml') == EXAMPLE.read_text()
    assert _page_block('ini') == (REPO / 'contrib' / 'samplerd.service').read_text()


@pytest.mark.skipif(
    shutil.which('systemd-analyze') is None,
    reason='systemd-analyze (systemd) is not installed here: the unit is not checked',
)
def test_the_systemd_unit_is_one_systemd_accepts(tmp_path):
    """contrib/samplerd.service by ``systemd-analyze verify``: every key
    known and every value parsed (a bad one is only a warning there, so
    any output fails), its ExecStart pointed at this environment's
    samplerd.  (Running it needs systemd as PID 1: docs/production.md.)"""
    exe = Path(sys.executable).with_name('samplerd')
    assert exe.exists(), exe
    unit = (REPO / 'contrib' / 'samplerd.service').read_text()
    assert '/opt/samplerd/bin/samplerd ' in unit
    path = tmp_path / 'samplerd.service'
    path.write_text(unit.replace('/opt/samplerd/bin/samplerd ', f'{exe} '))
    res = subprocess.run(
        ['systemd-analyze', 'verify', str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert (res.returncode, res.stdout + res.stderr) == (0, '')


def test_every_key_of_the_schema_is_documented():
    import msgspec

    from tractor_sampler._config import Config, Feeds, RestartTable

    text = (REPO / 'docs' / 'production.md').read_text()
    tables = {'feeds', 'restart', 'backends'}
    for struct in (Config, Feeds, RestartTable):
        for f in msgspec.structs.fields(struct):
            if struct is Config and f.encode_name in tables:
                continue
            assert f'| `{f.encode_name}` |' in text, f.encode_name
    for table in ('[feeds]', '[restart.samplerd]', '[backends.NAME]'):
        assert f'`{table}`' in text, table


def test_keys_left_out_keep_the_defaults(tmp_path, monkeypatch):
    monkeypatch.delenv('TRACTOR_SAMPLER_LINGER_S', raising=False)
    monkeypatch.delenv('TRACTOR_REGISTRY_ADDR', raising=False)
    cfg = tmp_path / 'samplerd.toml'
    cfg.write_text('port = 7000\n[restart.stream]\nmax_restarts = 9\n')
    eff = check_config('--config', str(cfg))
    assert eff['port'] == 7000 and eff['host'] == '127.0.0.1'
    assert eff['linger'] == 30.0 and eff['store'] is True
    assert eff['feeds']['buffers'] == {
        '1.0': {'rows': 86400, 'history': 3600},
        '60.0': {'rows': 20160, 'history': 1440},
    }
    # the one key given, over the built-in stream policy's other fields
    assert eff['restart']['stream'] == {
        'restart': 'transient',
        'max_restarts': 9,
        'within_s': 60.0,
        'backoff_s': 0.5,
        'backoff_factor': 2.0,
        'max_backoff_s': 10.0,
    }
    assert eff['backends'] == {}


def test_flags_override_the_file(tmp_path):
    cfg = tmp_path / 'samplerd.toml'
    cfg.write_text(
        'host = "127.0.0.1"\nport = 7000\nlinger = 5\nloglevel = "info"\n'
        f'data_dir = "{tmp_path / "a"}"\nstore = false\n'
    )
    eff = check_config(
        '--config',
        str(cfg),
        '--port',
        '7001',
        '--linger',
        '0',
        '-l',
        'error',
        '--data-dir',
        str(tmp_path / 'b'),
        '--record',
    )
    assert eff['port'] == 7001 and eff['linger'] == 0.0 and eff['loglevel'] == 'error'
    assert eff['data_dir'] == str(tmp_path / 'b')
    assert eff['record'] is True
    assert eff['store'] is False  # from the file: no flag turns the store on
    # without the flags, the file's
    eff = check_config('--config', str(cfg))
    assert (eff['port'], eff['linger'], eff['loglevel']) == (7000, 5.0, 'info')
    assert eff['data_dir'] == str(tmp_path / 'a')


@pytest.mark.parametrize(
    'text, line',
    [
        ('prot = 1\n', 'prot: unknown key (known keys: allow_modules, '),
        ('port = "x"\n', "port: expected an integer, got 'x'"),
        ('port = 70000\n', 'port: 70000 is out of range (0 to 65535)'),
        (
            '[backends.sim]\ntick_rate = "fast"\n',
            "[backends.sim] tick_rate: expected a number, got 'fast'",
        ),
        ('[backends.sim]\ntickrate = 5\n', '[backends.sim] tickrate: unknown key'),
        (
            '[backends.sim]\ntopics = ["AAA"]\ntick_rate = -1\n',
            '[backends.sim]: tick_rate must be a finite number > 0, not -1',
        ),
        (
            '[backends.nope]\n',
            "[backends.nope]: no backend named 'nope' (installed: replay, sim)",
        ),
        (
            '[restart.samplerd]\nrestart = "always"\n',
            "[restart.samplerd] restart: 'always' is not one of 'permanent', "
            "'transient', 'temporary'",
        ),
        (
            '[restart.feedd]\nmax_restarts = -1\n',
            '[restart.feedd] max_restarts: -1 must be >= 0',
        ),
        (
            '[feeds.buffers]\n"1" = { rows = 2 }\n',
            '[feeds.buffers.1] rows: 2 must be an int >= 4',
        ),
        (
            '[feeds.buffers]\n"1" = { rowz = 2 }\n',
            '[feeds.buffers.1] rowz: unknown key',
        ),
        ('[feeds]\nplugins = [1]\n', '[feeds] plugins[0]: expected a string, got 1'),
        ('port = \n', 'not valid TOML: Invalid value (at line 1, column 8)'),
    ],
)
async def test_a_bad_file_is_one_line_naming_file_and_key_exit_2(tmp_path, text, line):
    cfg = tmp_path / 'samplerd.toml'
    cfg.write_text(text)
    res = await run_cli('run', '--config', str(cfg))
    err = res.stderr.decode()
    assert res.returncode == 2, err
    assert len(err.splitlines()) == 1 and 'Traceback' not in err, err
    assert err.startswith(f'samplerd: error: {cfg}: {line}'), err
    assert res.stdout == b''  # nothing started: no ready line


async def test_a_missing_file_is_one_line_exit_2(tmp_path):
    res = await run_cli('run', '--config', str(tmp_path / 'nope.toml'))
    assert res.returncode == 2
    assert (
        res.stderr.decode()
        == f'samplerd: error: {tmp_path / "nope.toml"}: no such file\n'
    )


def _topics(report: dict) -> dict:
    return {
        t: info
        for f in report['feeds']
        if f['backend'] == 'sim'
        for t, info in f['topics'].items()
    }


async def _ls(port: int) -> dict:
    res = await run_cli('--port', str(port), 'ls', '--json')
    assert res.returncode == 0, res.stderr.decode()
    return json.loads(res.stdout)


async def test_boot_topics_run_without_a_client_and_do_not_linger(tmp_path):
    port = free_port()
    cfg = tmp_path / 'samplerd.toml'
    cfg.write_text(
        f'port = {port}\nlinger = 0\nstore = false\n'
        '[feeds.buffers]\n"1" = { rows = 1000, history = 10 }\n"5" = 100\n'
        '[restart.samplerd]\nmax_restarts = 7\n'
        '[backends.sim]\ntopics = ["AAA"]\ntick_rate = 20.0\nseed = 3\n'
    )
    daemon = Proc('run', '--config', str(cfg))
    try:
        ready = await daemon.read_until(lambda line: 'ready' in line)
        assert f'registry 127.0.0.1:{port}' in ready
        assert ready.rstrip().endswith('boot topics sim/AAA'), ready
        report = await _ls(port)
        assert {s['name'] for s in report['services']} == {'samplerd', 'feedd.sim'}
        aaa = _topics(report)['AAA']
        assert aaa['state'] == 'up'
        assert aaa['config'] == {'tick_rate': 20.0, 'seed': 3}
        assert sorted(float(p) for p in aaa['buffers']) == [1.0, 5.0]
        # a topic a client opens goes with its client (linger 0) ...
        res = await run_cli('--port', str(port), 'watch', 'BBB', '--duration', '2')
        assert res.returncode == 0, res.stderr.decode()
        with trio.fail_after(60):
            while 'BBB' in _topics(await _ls(port)):
                await trio.sleep(0.2)
        # ... the boot topic, which no client holds, runs on
        assert _topics(await _ls(port))['AAA']['state'] == 'up'
        status = await daemon.stop(signal.SIGTERM)
    finally:
        if daemon.p.poll() is None:
            daemon.p.kill()
    assert status == 0, daemon.err
    assert not wait_gone(daemon.family), 'samplerd left processes behind'


async def test_boot_topics_come_back_after_their_feed_daemon_is_killed(tmp_path):
    port = free_port()
    cfg = tmp_path / 'samplerd.toml'
    cfg.write_text(
        f'port = {port}\nlinger = 0\nstore = false\n'
        '[backends.sim]\ntopics = ["AAA"]\ntick_rate = 20.0\n'
    )
    daemon = Proc('run', '--config', str(cfg))
    try:
        await daemon.read_until(lambda line: 'ready' in line)
        report = await _ls(port)
        [feedd] = [s for s in report['services'] if s['name'] == 'feedd.sim']
        os.kill(feedd['pid'], signal.SIGKILL)
        # the root's manager restarts it; the root attaches the topic again
        with trio.fail_after(120):
            while True:
                report = await _ls(port)
                pids = {s['name']: s['pid'] for s in report['services']}
                aaa = _topics(report).get('AAA')
                if (
                    pids.get('feedd.sim') not in (None, feedd['pid'])
                    and aaa is not None
                    and aaa['state'] == 'up'
                ):
                    break
                await trio.sleep(0.5)
        assert aaa['config'] == {'tick_rate': 20.0}
        daemon.remember_family()
        daemon.family.add(feedd['pid'])
        status = await daemon.stop(signal.SIGTERM)
    finally:
        if daemon.p.poll() is None:
            daemon.p.kill()
    assert status == 0, daemon.err
    assert not wait_gone(daemon.family), 'samplerd left processes behind'


async def test_a_boot_topic_stopped_on_request_stays_stopped(tmp_path):
    port = free_port()
    cfg = tmp_path / 'samplerd.toml'
    cfg.write_text(
        f'port = {port}\nstore = false\n[backends.sim]\ntopics = ["AAA", "BBB"]\n'
    )
    daemon = Proc('run', '--config', str(cfg))
    try:
        await daemon.read_until(lambda line: 'ready' in line)
        res = await run_cli('--port', str(port), 'stop', 'AAA', '--reason', 'maint')
        assert res.returncode == 0, res.stderr.decode()
        assert res.stdout.decode().strip() == 'sim/AAA: ended (maint)'
        with trio.fail_after(60):
            while 'AAA' in (topics := _topics(await _ls(port))):
                await trio.sleep(0.2)
        assert topics['BBB']['state'] == 'up'  # the other boot topic runs on
        # while BBB streams 200 more quotes (2 s at sim's 100/s, well past
        # the root's first re-attach at 0.5 s), AAA is not started again
        mark = topics['BBB']['quotes']
        with trio.fail_after(60):
            while (topics := _topics(await _ls(port)))['BBB']['quotes'] < mark + 200:
                assert 'AAA' not in topics
                await trio.sleep(0.2)
        assert 'AAA' not in topics
        status = await daemon.stop(signal.SIGTERM)
    finally:
        if daemon.p.poll() is None:
            daemon.p.kill()
    assert status == 0, daemon.err
    assert not wait_gone(daemon.family), 'samplerd left processes behind'


async def test_a_feed_daemon_a_client_starts_takes_the_roots_feeds_settings(tmp_path):
    """[feeds] buffers and group size reach the feed daemons the root's
    clients ask for (not only those of [backends]): the root's environment
    carries them to every daemon its manager spawns."""
    port = free_port()
    cfg = tmp_path / 'samplerd.toml'
    cfg.write_text(
        f'port = {port}\nstore = false\nlinger = 300\n'
        '[feeds]\ngroup_members = 8\n[feeds.buffers]\n"1" = [100, 10]\n'
    )
    daemon = Proc('run', '--config', str(cfg))
    try:
        await daemon.ready()
        # a client starts feedd.sim (no [backends] in the file) and leaves;
        # the topic lingers
        res = await run_cli(
            '--port', str(port), 'watch', 'AAA', '--duration', '1', '--table'
        )
        assert res.returncode == 0, res.stderr.decode()
        (feed,) = [f for f in (await _ls(port))['feeds'] if f['backend'] == 'sim']
        assert feed['pool']['slots'] == 8
        bufs = feed['topics']['AAA']['buffers']
        assert list(bufs) == ['1'] and bufs['1']['token']['size'] == 100
        daemon.remember_family()
        status = await daemon.stop(signal.SIGTERM)
    finally:
        daemon.kill()
    assert status == 0, daemon.err
    assert not wait_gone(daemon.family), 'samplerd left processes behind'


def test_the_roots_feeds_settings_are_what_a_feed_daemon_without_its_own_takes(
    tmp_path, monkeypatch
):
    from tractor_sampler._config import load_config, set_environment
    from tractor_sampler._feedd import (
        BUFFERS_ENV,
        GROUP_MEMBERS_ENV,
        STREAM_RESTART_ENV,
        root_defaults,
    )

    for name in (BUFFERS_ENV, GROUP_MEMBERS_ENV, STREAM_RESTART_ENV):
        monkeypatch.delenv(name, raising=False)
    assert root_defaults(None, None, None) == (None, 4096, None)  # built-in
    cfg = tmp_path / 'samplerd.toml'
    cfg.write_text(
        '[feeds]\ngroup_members = 8\nplugins = ["my_backend"]\n'
        '[feeds.buffers]\n"1" = [100, 10]\n[restart.stream]\nmax_restarts = 9\n'
    )
    monkeypatch.setenv('TRACTOR_SAMPLER_PLUGINS', 'other_backend')
    rc = load_config(str(cfg))
    with monkeypatch.context() as mp:
        for name in (BUFFERS_ENV, GROUP_MEMBERS_ENV, STREAM_RESTART_ENV):
            mp.setenv(name, '')  # (restored after: set_environment writes os.environ)
        set_environment(rc)
        buffers, members, restart = root_defaults(None, None, None)
        assert buffers == rc.buffers and members == 8
        assert restart['max_restarts'] == 9
        assert restart == msgspec.to_builtins(rc.policies['stream'])
        # a starter's own settings win
        assert root_defaults({'60.0': {'rows': 5}}, 2, {}) == (
            {'60.0': {'rows': 5}},
            2,
            {},
        )
        assert os.environ['TRACTOR_SAMPLER_PLUGINS'] == 'other_backend,my_backend'
        mp.setenv(GROUP_MEMBERS_ENV, 'many')
        with pytest.raises(
            ValueError, match=r'\$TRACTOR_SAMPLER_GROUP_MEMBERS: not JSON'
        ):
            root_defaults(None, None, None)


async def test_a_boot_topic_that_cannot_start_is_one_line(tmp_path):
    port = free_port()
    cfg = tmp_path / 'samplerd.toml'
    # the replay backend has no recording of ZZZ in this data directory
    cfg.write_text(
        f'port = {port}\ndata_dir = "{tmp_path}"\n[backends.replay]\ntopics = ["ZZZ"]\n'
    )
    daemon = Proc('run', '--config', str(cfg))
    try:
        with trio.fail_after(60):
            status = await trio.to_thread.run_sync(
                daemon.p.wait, abandon_on_cancel=True
            )
        err = daemon.p.stderr.read()
    finally:
        if daemon.p.poll() is None:
            daemon.p.kill()
    assert status == 2, err
    lines = [x for x in err.splitlines() if x.startswith('samplerd: error:')]
    assert len(lines) == 1 and 'Traceback' not in err, err
    assert lines[0].startswith(f'samplerd: error: {cfg}: [backends.replay]'), err


# --- systemd's readiness protocol --------------------------------------------------


def test_notify_socket_addresses():
    from tractor_sampler._sdnotify import notify_address

    assert notify_address('/run/systemd/notify') == '/run/systemd/notify'
    assert notify_address('@abc/def') == '\0abc/def'
    assert notify_address('') is None
    assert notify_address('vsock:2:1234') is None


@pytest.mark.parametrize('abstract', [False, True], ids=['path', 'abstract'])
async def test_run_tells_systemd_ready_then_stopping(tmp_path, monkeypatch, abstract):
    if abstract:
        name = f'@tractor-sampler-test-{os.getpid()}-{free_port()}'
        bind_to = '\0' + name[1:]
    else:
        name = bind_to = str(tmp_path / 'notify')
        if len(name) > 100:  # AF_UNIX path limit
            pytest.skip('temporary path too long for a unix socket')
    sock = trio.socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    with sock:
        await sock.bind(bind_to)
        monkeypatch.setenv('NOTIFY_SOCKET', name)
        port = free_port()
        daemon = Proc('run', '--port', str(port))
        try:
            with trio.fail_after(60):
                ready = (await sock.recv(4096)).decode().splitlines()
            assert ready[0] == 'READY=1'
            assert ready[1].startswith(
                f'STATUS=samplerd ready: registry 127.0.0.1:{port}'
            )
            # READY=1 is sent once the ready line is out
            await daemon.read_until(lambda line: 'ready' in line, timeout=10)
            daemon.remember_family()
            daemon.p.send_signal(signal.SIGTERM)
            with trio.fail_after(60):
                stopping = (await sock.recv(4096)).decode().splitlines()
            assert stopping[0] == 'STOPPING=1'
            with trio.fail_after(60):
                status = await trio.to_thread.run_sync(
                    daemon.p.wait, abandon_on_cancel=True
                )
            daemon.err = daemon.p.stderr.read()
        finally:
            if daemon.p.poll() is None:
                daemon.p.kill()
    assert status == 0, daemon.err
    assert not wait_gone(daemon.family), 'samplerd left processes behind'


async def test_without_notify_socket_nothing_is_sent(monkeypatch):
    from tractor_sampler._sdnotify import sd_notify

    monkeypatch.delenv('NOTIFY_SOCKET', raising=False)
    assert sd_notify('READY=1') is False
