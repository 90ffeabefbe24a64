"""A picture of a topic: ``samplerd chart`` from the bar store and from a
running feed daemon's buffer, and :func:`draw_bars`'s candles."""

from __future__ import annotations

import signal
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import psutil
import pytest
import trio

from tractor_sampler import open_market_feed
from tractor_sampler._cli import main
from tractor_sampler.shm import DEFAULT_DTYPE
from tractor_services.testing import free_port, wait_gone

pytest.importorskip('matplotlib', reason='needs the chart extra (matplotlib)')

from tractor_sampler._plot import bars_from_daemon, draw_bars  # noqa: E402

SAMPLERD = [sys.executable, '-m', 'tractor_sampler']
T0 = 1_700_000_040.0  # on a minute


def png_size(path: Path) -> tuple[int, int]:
    """(width, height) from a PNG's header, checking its signature and
    that matplotlib's reader decodes it to that shape."""
    import matplotlib.image as mpimg

    head = path.read_bytes()[:24]
    assert head[:8] == b'\x89PNG\r\n\x1a\n' and head[12:16] == b'IHDR', head
    w, h = struct.unpack('>II', head[16:24])
    assert mpimg.imread(path).shape[:2] == (h, w)
    return w, h


def some_bars(n: int, period: float = 60.0) -> np.ndarray:
    rng = np.random.default_rng(7)
    b = np.zeros(n, dtype=DEFAULT_DTYPE)
    b['index'] = np.arange(n)
    b['time'] = T0 + period * np.arange(n)
    c = 100 + np.cumsum(rng.normal(size=n))
    o = np.r_[100.0, c[:-1]]
    b['open'], b['close'] = o, c
    b['high'] = np.maximum(o, c) + rng.uniform(0, 1, n)
    b['low'] = np.minimum(o, c) - rng.uniform(0, 1, n)
    b['volume'] = rng.integers(0, 50, n)
    return b


def test_draw_bars_draws_one_candle_per_bar_at_the_asked_size(tmp_path):
    bars = some_bars(37)
    bars['open'][5] = bars['close'][5]  # a doji still shows as a candle
    chart = draw_bars(bars, tmp_path / 'b.png', size=(640, 480))
    assert chart.bars == chart.candles == chart.wicks == chart.volume_bars == 37
    assert png_size(tmp_path / 'b.png') == (640, 480)
    # rows never written (no price) are not drawn
    bars['close'][:3] = np.nan
    chart = draw_bars(bars, tmp_path / 'c.png')
    assert chart.candles == chart.volume_bars == 34
    assert png_size(tmp_path / 'c.png') == (1200, 700)


def test_chart_from_the_store_when_no_daemon_runs(tmp_path, monkeypatch, capsys):
    pytest.importorskip('pyarrow', reason='the bar store needs the store extra')
    from tractor_sampler._store import STORE_ENV, open_store

    monkeypatch.delenv(STORE_ENV, raising=False)
    bars = some_bars(50)
    open_store(tmp_path).write('sim', 'AAA', 60.0, bars)
    png = tmp_path / 'bars.png'
    common = ['--port', str(free_port()), '--data-dir', str(tmp_path)]
    assert main(['chart', 'AAA', '--period', '60', '-o', str(png), *common]) == 0
    out = capsys.readouterr().out.strip()
    assert out == (
        f'50 bars of AAA (60 s) from the bar store drawn to {png} (1200x700)'
    )
    assert png_size(png) == (1200, 700)
    # the last N, at another size
    assert (
        main(['chart', 'AAA', '-o', str(png), '--bars', '20', '--size', '800x500', *common])
        == 0
    )  # fmt: skip
    assert capsys.readouterr().out.startswith(
        '20 bars of AAA (60 s) from the bar store'
    )
    assert png_size(png) == (800, 500)
    # a period with nothing stored: one line
    assert main(['chart', 'AAA', '--period', '1', '-o', str(png), *common]) == 1
    err = capsys.readouterr().err.strip()
    assert err == 'samplerd: error: no bars of AAA (1 s) in the bar store'


def start_root(port: int) -> subprocess.Popen:
    """``samplerd run`` on ``port``, its ready line on stdout."""
    return subprocess.Popen(
        [*SAMPLERD, 'run', '--port', str(port), '-l', 'warning'],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


async def test_chart_from_a_running_daemon_draws_its_buffer(tmp_path):
    port = free_port()
    addr = ('127.0.0.1', port)
    daemon = start_root(port)
    family: set[int] = set()
    try:
        with trio.fail_after(60):
            line = await trio.to_thread.run_sync(
                daemon.stdout.readline, abandon_on_cancel=True
            )
        assert line.startswith('samplerd ready:'), line + daemon.stderr.read()
        async with open_market_feed(
            ['AAA'], 'sim', registry_addr=addr, config={'tick_rate': 50, 'seed': 3}
        ) as feed:
            family |= {
                c.pid for c in psutil.Process(daemon.pid).children(recursive=True)
            }
            buf = feed.buffer('AAA', 1.0)
            with trio.fail_after(60):  # a few 1 s bars
                while len(buf) < 4:
                    await trio.sleep(0.1)
            # the library: one candle per bar of the daemon's buffer
            bars = await bars_from_daemon('AAA', 1.0, 'sim', addr)
            assert bars is not None and len(bars) >= 4
            bars = bars[-60:]  # its history and live bars: the last of them
            finite = int(np.isfinite(bars['close']).sum())
            chart = draw_bars(bars, tmp_path / 'lib.png', size=(900, 600))
            assert chart.candles == chart.volume_bars == finite >= 4
            assert png_size(tmp_path / 'lib.png') == (900, 600)
            # the command, while the feed runs
            png = tmp_path / 'bars.png'
            with trio.fail_after(90):
                res = await trio.run_process(
                    [*SAMPLERD, 'chart', 'AAA', '--period', '1', '-o', str(png), '--port', str(port), '--bars', '50'],
                    capture_stdout=True,
                    capture_stderr=True,
                    check=False,
                )  # fmt: skip
            assert res.returncode == 0, res.stderr.decode()
            out = res.stdout.decode().strip()
            assert out == (
                f'50 bars of AAA (1 s) from the running feed daemon drawn to {png} '
                '(1200x700)'
            )
            assert png_size(png) == (1200, 700)
            # a period the daemon does not keep: one line naming those it does
            with trio.fail_after(90):
                bad = await trio.run_process(
                    [*SAMPLERD, 'chart', 'AAA', '--period', '5', '-o', str(png), '--port', str(port)],
                    capture_stdout=True,
                    capture_stderr=True,
                    check=False,
                )  # fmt: skip
            err = bad.stderr.decode().strip()
            assert bad.returncode == 1 and len(err.splitlines()) == 1, err
            assert 'has no 5 s bars (it keeps 1, 60 s)' in err, err
        daemon.send_signal(signal.SIGTERM)
        with trio.fail_after(30):
            status = await trio.to_thread.run_sync(daemon.wait, abandon_on_cancel=True)
    finally:
        if daemon.poll() is None:
            daemon.kill()
    assert status == 0, daemon.stderr.read()
    assert not wait_gone(family), 'samplerd left processes behind'


def test_without_matplotlib_chart_is_refused_in_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, 'matplotlib', None)  # import fails
    assert main(['chart', 'AAA', '-o', str(tmp_path / 'x.png')]) == 1
    err = capsys.readouterr().err.strip()
    assert err == (
        "samplerd: error: charts need matplotlib: pip install 'tractor-sampler[chart]'"
    )
    assert not (tmp_path / 'x.png').exists()
