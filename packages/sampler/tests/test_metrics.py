"""Prometheus metrics: ``samplerd run --metrics-port N`` scraped over HTTP
as Prometheus does, and the counters' rule across restarts."""

from __future__ import annotations

import signal
import subprocess
import sys
import tempfile
import urllib.request

import msgspec
import psutil
import pytest
import trio

from tractor_sampler import open_market_feed
from tractor_sampler._cli import main
from tractor_sampler._info import TreeInfo
from tractor_services.testing import free_port, wait_gone

prometheus_client = pytest.importorskip(
    'prometheus_client', reason='needs the metrics extra (prometheus-client)'
)
from prometheus_client.parser import text_string_to_metric_families  # noqa: E402

from tractor_sampler._metrics import Monotonic, families  # noqa: E402

SAMPLERD = [sys.executable, '-m', 'tractor_sampler']


class Daemon:
    """``samplerd run`` in a subprocess, its stdout read line by line."""

    def __init__(self, *args: str) -> None:
        # stderr to a file: nothing reads it while the daemon runs (a full
        # pipe would block its logging), and a failure shows all of it
        self.err = tempfile.TemporaryFile(mode='w+')
        self.p = subprocess.Popen(
            [*SAMPLERD, 'run', *args],
            stdout=subprocess.PIPE,
            stderr=self.err,
            text=True,
        )
        self.family: set[int] = set()

    def stderr(self) -> str:
        self.err.seek(0)
        return self.err.read()

    async def read_until(self, text: str, timeout: float = 60) -> str:
        with trio.fail_after(timeout):
            while True:
                line = await trio.to_thread.run_sync(
                    self.p.stdout.readline, abandon_on_cancel=True
                )
                if not line:
                    raise AssertionError(
                        f'samplerd ended (status {self.p.wait()}); stderr:\n'
                        f'{self.stderr()}'
                    )
                if text in line:
                    return line

    def remember_family(self) -> None:
        try:
            self.family |= {
                c.pid for c in psutil.Process(self.p.pid).children(recursive=True)
            }
        except psutil.NoSuchProcess:
            pass

    async def stop(self, timeout: float = 60) -> tuple[int, str]:
        """SIGTERM, then its exit status and stderr.  A root that does not
        exit within ``timeout`` is killed (its family too) and the test
        fails with its stderr (the wait is abandoned, not hung on)."""
        self.remember_family()
        self.p.send_signal(signal.SIGTERM)
        try:
            with trio.fail_after(timeout):
                status = await trio.to_thread.run_sync(
                    self.p.wait, abandon_on_cancel=True
                )
        except trio.TooSlowError:
            self.kill()
            raise AssertionError(
                f'samplerd did not exit {timeout:g} s after SIGTERM; stderr:\n'
                f'{self.stderr()}'
            ) from None
        return status, self.stderr()

    def kill(self) -> None:
        """SIGKILL the root and what it spawned (nothing left behind)."""
        self.remember_family()
        for pid in (self.p.pid, *self.family):
            try:
                psutil.Process(pid).kill()
            except psutil.NoSuchProcess:
                pass
        self.p.wait()


def scrape(url: str) -> dict[str, object]:
    """The metric families served at ``url``, by name (as Prometheus reads
    them: counters without ``_total``)."""
    with urllib.request.urlopen(url, timeout=10) as resp:
        assert resp.status == 200
        ctype = resp.headers['Content-Type']
        assert ctype.startswith('text/plain'), ctype
        text = resp.read().decode()
    return {f.name: f for f in text_string_to_metric_families(text)}


def samples(fams: dict, name: str, **labels: str) -> list:
    """The samples of family ``name`` whose labels include ``labels``."""
    fam = fams.get(name)
    if fam is None:
        return []
    return [
        s for s in fam.samples if all(s.labels.get(k) == v for k, v in labels.items())
    ]


def value(fams: dict, sample: str, family: str | None = None, **labels: str) -> float:
    fam = family or sample
    found = [s.value for s in samples(fams, fam, **labels) if s.name == sample]
    return found[0] if found else -1.0


async def test_a_root_with_metrics_port_serves_the_tree_to_a_scrape():
    port, mport = free_port(), free_port()
    daemon = Daemon('--port', str(port), '--metrics-port', str(mport), '-l', 'warning')
    addr = ('127.0.0.1', port)
    url = f'http://127.0.0.1:{mport}/metrics'
    try:
        line = await daemon.read_until('samplerd metrics:')
        assert line.strip() == f'samplerd metrics: {url}'
        await daemon.read_until('samplerd ready:')
        daemon.remember_family()
        async with open_market_feed(
            ['AAA'], 'sim', registry_addr=addr, config={'tick_rate': 50, 'seed': 1}
        ):
            daemon.remember_family()
            # snapshots are taken every second: scrape until they show the feed
            with trio.fail_after(60):
                while True:
                    fams = await trio.to_thread.run_sync(scrape, url)
                    topic = {'backend': 'sim', 'host': '', 'topic': 'AAA'}
                    if (
                        value(fams, 'samplerd_topic_quotes_total', 'samplerd_topic_quotes', **topic) > 0
                        and samples(fams, 'samplerd_subscriber_delivered', **topic)
                        and value(fams, 'samplerd_step_lateness_seconds_count', 'samplerd_step_lateness_seconds') > 0
                        and value(fams, 'samplerd_topic_state', state='up', **topic) == 1
                    ):  # fmt: skip
                        break
                    await trio.sleep(0.2)
        # types, as Prometheus reads them
        types = {
            'samplerd_service_state': 'gauge',
            'samplerd_service_restarts': 'counter',
            'samplerd_topic_state': 'gauge',
            'samplerd_topic_quotes': 'counter',
            'samplerd_topic_trades': 'counter',
            'samplerd_topic_late_trades': 'counter',
            'samplerd_topic_held_trades': 'counter',
            'samplerd_topic_subscribers': 'gauge',
            'samplerd_subscriber_delivered': 'counter',
            'samplerd_subscriber_dropped': 'counter',
            'samplerd_subscriber_overruns': 'counter',
            'samplerd_subscriber_throttle_hz': 'gauge',
            'samplerd_steps': 'counter',
            'samplerd_step_lateness_seconds': 'histogram',
            'samplerd_metrics_snapshot_age_seconds': 'gauge',
            'samplerd_metrics_refresh_errors': 'counter',
        }
        assert {n: fams[n].type for n in types if n in fams} == types
        # services: one state set to 1 each, the feed daemon running
        states = samples(fams, 'samplerd_service_state', service='feedd.sim')
        assert {s.labels['state'] for s in states} >= {'running', 'failed'}
        assert [s.labels['state'] for s in states if s.value == 1] == ['running']
        assert value(fams, 'samplerd_service_state', service='samplerd', state='running') == 1  # fmt: skip
        assert {s.labels['service'] for s in samples(fams, 'samplerd_service_restarts')} >= {'samplerd', 'feedd.sim', 'metrics'}  # fmt: skip
        # the topic and its subscriber (this test's feed: its actor's name)
        [sub] = samples(fams, 'samplerd_subscriber_delivered', **topic)
        assert set(sub.labels) == {'backend', 'host', 'topic', 'subscriber'}
        assert sub.labels['subscriber'].split('/')[0] == 'feed_client'
        assert sub.value > 0
        trades = value(fams, 'samplerd_topic_trades_total', 'samplerd_topic_trades', **topic)  # fmt: skip
        assert trades >= 0
        # samplerd's step lateness: cumulative buckets up to +Inf == count
        buckets = [
            s
            for s in samples(fams, 'samplerd_step_lateness_seconds')
            if s.name.endswith('_bucket')
        ]
        les = [s.labels['le'] for s in buckets]
        assert les[-1] == '+Inf' and len(les) >= 10
        counts = [s.value for s in buckets]
        assert counts == sorted(counts)
        count = value(fams, 'samplerd_step_lateness_seconds_count', 'samplerd_step_lateness_seconds')  # fmt: skip
        assert counts[-1] == count > 0
        assert value(fams, 'samplerd_steps_total', 'samplerd_steps', period='1') > 0
        assert 0 <= value(fams, 'samplerd_metrics_snapshot_age_seconds') < 30
        status, err = await daemon.stop()
    finally:
        if daemon.p.poll() is None:
            daemon.kill()
    assert status == 0, err
    assert 'Traceback' not in err, err
    assert not wait_gone(daemon.family), 'samplerd left processes behind'


def _tree(pid: int, quotes: int, delivered: int, started_at: float = 1.0) -> TreeInfo:
    """What introspection reports of one feed daemon (pid) with topic AAA
    and one subscriber."""
    return msgspec.convert(
        {
            'registry': '127.0.0.1:1',
            'services': [
                {
                    'name': 'feedd.sim',
                    'kind': 'actor',
                    'endpoint': 'x',
                    'state': 'running',
                    'restarts': 0 if pid == 1 else 1,
                }
            ],
            'feeds': [
                {
                    'backend': 'sim',
                    'pid': pid,
                    'time': 0.0,
                    'topics': {
                        'AAA': {
                            'state': 'up',
                            'started_at': started_at,
                            'quotes': quotes,
                            'trades': quotes // 2,
                            'subscribers': [
                                {'delivered': delivered, 'peer': 'client/1234'}
                            ],
                        }
                    },
                    'store': {'bars': quotes, 'writes': 1, 'failures': 0},
                }
            ],
        },
        TreeInfo,
    )


def _values(fams: list) -> dict[tuple, float]:
    return {
        (s.name, *sorted(s.labels.items())): s.value for f in fams for s in f.samples
    }


def test_counters_do_not_go_backwards_when_a_feed_daemon_restarts():
    mono = Monotonic()
    key = ('samplerd_topic_quotes_total', ('backend', 'sim'), ('host', ''), ('topic', 'AAA'))  # fmt: skip
    before = _values(families(_tree(pid=1, quotes=500, delivered=400), mono))
    assert before[key] == 500
    # restarted (a new pid): it counts from 0 again, already past 500 once
    # more by the next snapshot; the exported totals go on from 500
    after = _values(families(_tree(pid=2, quotes=600, delivered=10), mono))
    assert after[key] == 1100
    for name, v in before.items():
        if name[0].endswith('_total'):
            assert after.get(name, v) >= v, name
    # a topic stopped and started again in the same daemon: a new start time
    again = _values(
        families(_tree(pid=2, quotes=5, delivered=10, started_at=9.0), mono)
    )
    assert again[key] == 1105
    # a count that went down in the same epoch (a reset we could not see)
    down = _values(families(_tree(pid=2, quotes=3, delivered=10, started_at=9.0), mono))
    assert down[key] == 1108


def test_without_prometheus_client_metrics_port_is_refused_in_one_line(
    monkeypatch, capsys
):
    monkeypatch.setitem(sys.modules, 'prometheus_client', None)  # import fails
    with pytest.raises(SystemExit) as exc:
        main(['run', '--port', str(free_port()), '--metrics-port', '9100'])
    assert exc.value.code == 1
    err = capsys.readouterr().err.strip()
    assert err.splitlines() == [
        'samplerd: error: --metrics-port: metrics need prometheus_client: '
        "pip install 'tractor-sampler[metrics]'"
    ]


def test_metrics_host_without_metrics_port_is_refused_in_one_line(capsys):
    assert main(['run', '--port', str(free_port()), '--metrics-host', '0.0.0.0']) == 1
    err = capsys.readouterr().err.strip()
    assert err == 'samplerd: error: --metrics-host needs --metrics-port'
