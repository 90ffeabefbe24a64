"""The live view of ``samplerd watch`` and ``demo``: the chart and the table
rendered from a fixed buffer of rows, then the demo drawn in a real terminal
(tmux, 80x24 and 200x50, and resized) and checked against the bars its
feed daemon's buffer holds."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager as acm
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import psutil
import pytest
import trio
from rich.cells import cell_len

from tractor_sampler._view import (
    EIGHTHS,
    GLYPHS,
    ChartLayout,
    Header,
    LiveView,
    chart,
    fit_bars,
    fmt_price,
    fmt_volume,
    header,
    price_decimals,
    tick_decimals,
    topic_lines,
)
from tractor_sampler.shm import def_ohlcv_dtype
from tractor_services.testing import wait_gone

# (upper, lower) half-row states of a candle cell, from its glyph
HALVES = {g: k for k, g in GLYPHS.items()}


def rows(*bars: tuple[float, float, float, float, float], t0: float = 1_700_000_000.0):
    """A buffer of 1 s bars: (open, high, low, close, volume) each."""
    a = np.zeros(len(bars), dtype=def_ohlcv_dtype)
    for i, (o, h, lo, c, v) in enumerate(bars):
        a[i] = (i, t0 + i, o, h, lo, c, v)
    return a


def columns(lines, n: int) -> list[list[str]]:
    """The glyphs of the ``n`` candle columns (bars are one column with a
    space between, right-aligned before the labels): per bar, top to
    bottom."""
    plain = [line.plain for line in lines]
    # the time axis ends where the last bar's column is
    end = len(plain[-1])
    return [[p[end - 1 - 2 * (n - 1 - i)] for p in plain] for i in range(n)]


# prices 0..9 on 5 price lines (10 half rows): a price is its half row
BUF = rows(
    (2, 7, 1, 5, 10),  # up: body 2..5, wick 1..7
    (5, 9, 0, 3, 20),  # down: body 3..5, wick 0..9
    (4, 4, 4, 4, 40),  # flat: one half row
    (6, 8, 6, 8, 0),  # up, no volume
)


def test_candle_bodies_span_open_to_close_and_wicks_high_to_low():
    lay = ChartLayout.of(8)
    assert (lay.price_rows, lay.volume_rows, lay.axis) == (5, 2, True)
    lines = chart(BUF, width=40, lines=8, decimals=0)
    assert len(lines) == 8
    for col, bar in zip(columns(lines, len(BUF)), BUF, strict=True):
        # half rows from the bottom: body 'b', wick 'w', empty ' '
        halves = []
        for glyph in reversed(col[: lay.price_rows]):
            upper, lower = HALVES[glyph]
            halves += [lower, upper]
        o, h, lo, c = (int(bar[f]) for f in ('open', 'high', 'low', 'close'))
        body = [i for i, s in enumerate(halves) if s == 'b']
        drawn = [i for i, s in enumerate(halves) if s != ' ']
        assert body == list(range(min(o, c), max(o, c) + 1)), (bar, halves)
        assert drawn == list(range(lo, h + 1)), (bar, halves)


def test_volume_bars_are_proportional_to_the_largest_shown():
    lay = ChartLayout.of(8)
    lines = chart(BUF, width=40, lines=8, decimals=0)
    vol_lines = slice(lay.price_rows, lay.price_rows + lay.volume_rows)
    heights = []
    for col in columns(lines, len(BUF)):
        heights.append(sum(EIGHTHS.index(g) for g in col[vol_lines]))
    # 2 lines: 16 eighths for the largest (40); 10 and 20 in proportion
    assert heights == [4, 8, 16, 0]


def test_labels_and_time_axis_name_the_bars_shown():
    lay = ChartLayout.of(8)
    lines = [line.plain for line in chart(BUF, width=40, lines=8, decimals=2)]
    assert lines[0].split()[-1] == '9.00'  # the highest high
    assert lines[lay.price_rows - 1].split()[-1] == '0.00'  # the lowest low
    assert lines[lay.price_rows].split()[-1] == '40'  # the largest volume
    # 4 bars are narrower than two times: the last one, ending under it
    t = [time.strftime('%H:%M:%S', time.localtime(x)) for x in BUF['time']]
    assert lines[-1].split() == [t[-1]]
    assert len(lines[-1]) == len(lines[1].rstrip())  # the last bar's column
    more = rows(*[(1, 2, 0, 1, 1)] * 12)
    t = [time.strftime('%H:%M:%S', time.localtime(x)) for x in more['time']]
    axis = chart(more, width=40, lines=8, decimals=2)[-1].plain
    assert axis.split() == [t[0], t[-1]] and len(axis) == 40 - len(' 2.00')


@pytest.mark.parametrize('width', [10, 23, 80, 200])
def test_as_many_bars_as_the_width_holds_and_no_line_wider(width):
    buf = rows(
        *[(100 + i % 7, 101 + i % 7, 99 + i % 7, 100.5 + i % 7, i) for i in range(300)]
    )
    shown, label_w = fit_bars(buf, width, 2)
    assert len(shown) == (width - label_w + 1) // 2
    assert np.array_equal(shown, buf[-len(shown) :])  # the last ones
    lines = chart(buf, width, 12, 2)
    assert len(lines) == 12 and all(cell_len(x.plain) <= width for x in lines)
    # --rows caps the count
    assert len(fit_bars(buf, width, 2, most=3)[0]) == min(3, len(shown))


def test_a_bar_without_prices_is_not_drawn():
    buf = rows((1, 2, 0, 1, 1), (np.nan, np.nan, np.nan, np.nan, 0))
    assert len(fit_bars(buf, 80, 0)[0]) == 1
    assert [x.plain for x in chart(buf[1:], 80, 4, 0)][0] == 'no bars yet'


def _header(**kw) -> Header:
    base = dict(
        topic='AAA',
        backend='sim',
        last=106.36,
        rate=46.0,
        subscribers=1,
        state='up',
        period=1.0,
        in_buffer=3603,
        decimals=2,
    )
    return Header(**{**base, **kw})


@pytest.mark.parametrize('width', [12, 20, 40, 60, 79, 80, 81, 100, 200])
@pytest.mark.parametrize('topic', ['AAA', 'EURUSD.FX', 'X' * 300])
def test_the_header_never_wraps(width, topic):
    text = header(_header(topic=topic, last=123456.789, rate=12345), width).plain
    assert cell_len(text) <= width, text


def test_the_header_at_80_columns_keeps_every_figure():
    text = header(_header(), 80).plain
    assert text.startswith('AAA@sim  last 106.36  ticks/s 46  subscribers 1  state up')
    assert cell_len(text) <= 80
    narrow = header(_header(), 40).plain
    assert narrow == 'AAA@sim  last 106.36  46/s  subs 1  up'


def test_decimals_come_from_the_tick_size():
    assert tick_decimals(0.00001) == 5
    assert tick_decimals(0.01) == 2
    assert tick_decimals(0.25) == 2
    assert tick_decimals(5) == 0
    assert tick_decimals(None) is None and tick_decimals(0) is None
    # without a tick size: what the prices need, at least 2
    assert price_decimals(None, [0.73727, 0.7373]) == 5
    assert price_decimals(None, [100.0]) == 2
    assert fmt_price(0.73727, 5) == '0.73727'
    assert fmt_volume(12_500) == '12.5k'


class FakeShm:
    def __init__(self, array):
        self.array = array

    def __len__(self):
        return len(self.array)


def fake_feed(buffers: dict, tick_size: float | None = 0.01):
    return SimpleNamespace(
        topics=list(buffers),
        backend='sim',
        first_status={t: SimpleNamespace(state='up') for t in buffers},
        symbol_info={t: {'tick_size': tick_size} for t in buffers},
        buffer=lambda topic, period: FakeShm(buffers[topic]),
    )


def fx_rows(n=200):
    return rows(*[(0.73715, 0.73727, 0.73711, 0.73725, 3) for i in range(n)])


def test_a_pair_with_tick_size_0_00001_shows_5_decimals_everywhere():
    feed = fake_feed({'EURUSD': fx_rows()}, tick_size=0.00001)
    view = LiveView(feed, 1.0, rows=3)
    view.last['EURUSD'] = 0.73727
    plain = view.render().splitlines()
    assert plain[0].startswith('EURUSD@sim  last 0.73727  ')
    assert plain[2].split()[1:5] == ['0.73715', '0.73727', '0.73711', '0.73725']
    frame = [x.plain for x in LiveView(feed, 1.0).frame(80, 24)]
    assert frame[1].split()[-1] == '0.73727'  # the chart's highest high


def test_frames_fit_80x24_with_the_ready_line_and_two_topics():
    ready = (
        'samplerd ready: registry 127.0.0.1:39815, root pid 31260, samplerd pid '
        '31264, feed AAA, BBB on sim'
    )
    buf = rows(*[(100, 101, 99, 100.5, 5)] * 100)
    feed = fake_feed({'AAA': buf, 'BBB': buf})
    for as_table in (False, True):
        view = LiveView(feed, 1.0, as_table=as_table)
        frame = [x.plain for x in view.frame(80, 24, [ready])]
        assert len(frame) <= 23 and all(cell_len(x) <= 80 for x in frame)
        assert ''.join(frame[:2]) == ready  # folded, whole
        heads = [i for i, x in enumerate(frame) if '@sim  last ' in x]
        assert len(heads) == 2
        if as_table:  # the column head and whole rows under each header
            share = topic_lines(24, 2, 2)
            for i in heads:
                assert frame[i + 1].split() == [
                    'time',
                    'open',
                    'high',
                    'low',
                    'close',
                    'volume',
                ]
                body = frame[i + 2 : i + share]
                assert len(body) == share - 2 and all(len(r.split()) == 6 for r in body)


# --- in a real terminal ------------------------------------------------------------

TMUX = shutil.which('tmux')
needs_tmux = pytest.mark.skipif(TMUX is None, reason='tmux is not installed')

READ_BARS = """
import json, sys
import trio
from tractor_sampler import open_market_feed

async def main(port, topics):
    async with open_market_feed(
        topics, 'sim', registry_addr=('127.0.0.1', port),
        config={'tick_rate': 50.0, 'seed': 0},
    ) as feed:
        out = {}
        for t in topics:
            a = feed.buffer(t, 1.0).array[-400:]
            out[t] = [[float(r[f]) for f in ('time', 'open', 'high', 'low', 'close', 'volume')] for r in a]
    print(json.dumps(out), flush=True)

if __name__ == '__main__':
    trio.run(main, int(sys.argv[1]), sys.argv[2].split(','))
"""


class Terminal:
    """A tmux server of its own (its own socket) with one session running
    a command; the pane stays after the command ends, to read its status."""

    def __init__(self, tmp: Path, width: int, height: int) -> None:
        self.sock = f'samplerd-view-{uuid.uuid4().hex[:8]}'
        self.conf = tmp / 'tmux.conf'
        self.conf.write_text('set -g remain-on-exit on\nset -g status off\n')
        self.size = (width, height)
        self.family: set[int] = set()
        self.last_words = ''

    def tmux(self, *args: str) -> str:
        # the server's environment is the first client's: without COLUMNS
        # and LINES (set under pytest), which would fix the view's size
        env = {k: v for k, v in os.environ.items() if k not in ('COLUMNS', 'LINES')}
        res = subprocess.run(
            [TMUX, '-L', self.sock, '-f', str(self.conf), *args],
            capture_output=True,
            text=True,
            check=True,
            env=env,
        )
        return res.stdout

    def start(self, *cmd: str) -> None:
        w, h = self.size
        self.tmux(
            'new-session', '-d', '-s', 'view', '-x', str(w), '-y', str(h),
            ' '.join(cmd),
        )  # fmt: skip
        pids = self.tmux('display-message', '-p', '-t', 'view', '#{pane_pid} #{pid}')
        self.pid, self.server_pid = map(int, pids.split())

    def remember_family(self) -> None:
        try:
            p = psutil.Process(self.pid)
            self.family |= {p.pid} | {c.pid for c in p.children(recursive=True)}
        except psutil.NoSuchProcess:
            pass

    def capture(self) -> list[str]:
        self.remember_family()
        return self.tmux('capture-pane', '-p', '-t', 'view').splitlines()

    def resize(self, width: int, height: int) -> None:
        self.size = (width, height)
        self.tmux('resize-window', '-t', 'view', '-x', str(width), '-y', str(height))

    def dead_status(self) -> int | None:
        """The command's exit status once it ended (-1: ended by a signal),
        else None.

        tmux marks a pane dead when its pty closes, which a process ending
        does before its parent can reap it, so a dead pane may have no
        status yet.  And a tmux linked with libutempter (Debian's and
        Ubuntu's) runs its utempter helper when the pty closes, with
        SIGCHLD set to the default meanwhile: a command exiting in that
        window is never reaped, its status never known (tmux issue #311),
        and the pane's ``#{pane_dead_status}`` stays empty as if a signal
        had ended it.  So while the command's process is still there (a
        zombie tmux has not reaped), the status is not known yet: poke the
        server with SIGCHLD so that it reaps the process, and answer None.
        (tmux 3.3 has no ``#{pane_dead_signal}``: no status once the
        process is reaped means a signal ended it.)"""
        fmt = '#{pane_dead} #{pane_dead_status}'
        dead, *status = self.tmux('display-message', '-p', '-t', 'view', fmt).split()
        if dead != '1':
            return None
        if status:
            return int(status[0])
        if self._not_reaped():
            os.kill(self.server_pid, signal.SIGCHLD)
            return None
        _, *status = self.tmux('display-message', '-p', '-t', 'view', fmt).split()
        return int(status[0]) if status else -1

    def _not_reaped(self) -> bool:
        try:
            return psutil.Process(self.pid).ppid() == self.server_pid
        except psutil.NoSuchProcess:
            return False

    def kill(self) -> None:
        """Stop the command (Ctrl-C, so that it cleans up) if it still
        runs, then the server."""
        try:
            if self.dead_status() is None:
                self.tmux('send-keys', '-t', 'view', 'C-c')
                psutil.wait_procs([psutil.Process(self.pid)], timeout=30)
        except (subprocess.CalledProcessError, psutil.Error, AttributeError):
            pass
        subprocess.run([TMUX, '-L', self.sock, 'kill-server'], capture_output=True)


async def stable_frame(term: Terminal, pred, timeout: float = 120) -> list[str]:
    """The pane's text once a frame satisfying ``pred`` is on it, the same
    in two captures in a row (not caught half drawn)."""
    before = None
    with trio.fail_after(timeout):
        while True:
            if term.dead_status() is not None:
                raise AssertionError(
                    f'the demo ended early ({term.dead_status()}):\n'
                    + '\n'.join(
                        term.tmux('capture-pane', '-p', '-S', '-200').splitlines()
                    )
                )
            lines = term.capture()
            if lines == before and pred(lines):
                return lines
            before = lines
            await trio.sleep(0.2)


def headers(lines: list[str]) -> list[int]:
    return [i for i, x in enumerate(lines) if x.startswith(('AAA@sim', 'BBB@sim'))]


def ready_port(lines: list[str]) -> int:
    text = ''.join(lines)  # the ready line, folded to the width
    assert text.startswith('samplerd ready: registry 127.0.0.1:'), lines
    return int(text.split('127.0.0.1:')[1].split(',')[0])


def parse_chart(block: list[str], share: int) -> dict:
    """One topic's chart as drawn: candle count, times, price labels."""
    lay = ChartLayout.of(share - 1)
    price = block[1 : 1 + lay.price_rows]
    axis = block[share - 1]
    first, last = axis.split()
    end = len(axis.rstrip())  # the last bar's column ends the axis
    start = len(axis) - len(axis.lstrip())  # the first bar's column
    cols = range(start, end, 2)
    drawn = [c for c in cols if any(len(p) > c and p[c] != ' ' for p in price)]
    return {
        'n': len(cols),
        'drawn': len(drawn),
        'first': first,
        'last': last,
        'hi': float(price[0].split()[-1]),
        'lo': float(price[-1].split()[-1]),
        'top_used': any(c != ' ' for c in price[0][start:end]),
        'bottom_used': any(c != ' ' for c in price[-1][start:end]),
        'vol': block[1 + lay.price_rows].split()[-1] if lay.volume_rows else None,
    }


async def read_bars(tmp: Path, port: int) -> dict[str, list[list[float]]]:
    script = tmp / 'read_bars.py'
    script.write_text(READ_BARS)
    with trio.fail_after(90):
        res = await trio.run_process(
            [sys.executable, str(script), str(port), 'AAA,BBB'],
            capture_stdout=True,
            capture_stderr=True,
            check=False,
        )
    assert res.returncode == 0, res.stderr.decode()
    return json.loads(res.stdout.decode().splitlines()[-1])


def check_against_buffer(drawn: dict, bars: list[list[float]]) -> None:
    """What a topic's chart shows is what its buffer holds: the bars from
    the first to the last time drawn, one candle each, every one drawn;
    the highest and lowest labels those of the closed bars, or of the last
    (still open when drawn: its high only grew since, its low only fell)."""
    hms = [time.strftime('%H:%M:%S', time.localtime(b[0])) for b in bars]
    j = len(hms) - 1 - hms[::-1].index(drawn['last'])
    window = bars[j - drawn['n'] + 1 : j + 1]
    assert hms[j - drawn['n'] + 1] == drawn['first']
    assert drawn['drawn'] == drawn['n'] == len(window)
    assert [b[0] - window[0][0] for b in window] == [
        float(i) for i in range(len(window))
    ]
    closed, open_ = window[:-1], window[-1]
    hi_closed = max(b[2] for b in closed)
    lo_closed = min(b[3] for b in closed)
    eps = 1e-6
    assert hi_closed - eps <= drawn['hi'] <= max(hi_closed, open_[2]) + eps
    assert min(lo_closed, open_[3]) - eps <= drawn['lo'] <= lo_closed + eps
    assert drawn['top_used'] and drawn['bottom_used']
    vol_closed = max(b[5] for b in closed)
    try:
        vol = float(drawn['vol'])
    except (TypeError, ValueError):  # none drawn, or 12.5k: not compared
        return
    assert vol_closed - eps <= vol <= max(vol_closed, open_[5]) + eps


async def stop_demo(term: Terminal) -> int:
    term.tmux('send-keys', '-t', 'view', 'C-c')
    with trio.fail_after(60):
        while (status := term.dead_status()) is None:
            term.remember_family()
            await trio.sleep(0.2)
    if status != 0:  # what it printed last, for the failure's report
        term.last_words = term.tmux('capture-pane', '-p', '-S', '-50', '-t', 'view')
    return status


def the_demo(*extra: str) -> list[str]:
    return [
        sys.executable, '-m', 'tractor_sampler', 'demo', '--seed', '0',
        '--fps', '0.5', '--duration', '300', *extra,
    ]  # fmt: skip


def frame_ok(width: int, height: int):
    def pred(lines: list[str]) -> bool:
        heads = headers(lines)
        if len(heads) != 2 or not lines or not lines[0].startswith('samplerd ready'):
            return False
        # a whole chart under each header, its time axis drawn
        share = heads[1] - heads[0]
        return (
            len(lines) > heads[1] + share - 1
            and lines[heads[1] + share - 1].count(':') == 4
        )

    return pred


def check_frame(lines: list[str], width: int, height: int) -> tuple[list[dict], int]:
    assert len(lines) <= height
    assert all(cell_len(x) <= width for x in lines), [cell_len(x) for x in lines]
    heads = headers(lines)
    assert [lines[i].split('@')[0] for i in heads] == ['AAA', 'BBB']
    # the ready line (folded to the width) is above them, whole
    ready = ''.join(lines[: heads[0]])
    assert ready.startswith('samplerd ready: registry 127.0.0.1:')
    assert ready.endswith('feed AAA, BBB on sim')
    share = heads[1] - heads[0]
    assert share == topic_lines(height, 2, heads[0])
    return [parse_chart(lines[i : i + share], share) for i in heads], ready_port(
        lines[: heads[0]]
    )


@acm
async def demo_in_terminal(
    tmp_path: Path, width: int, height: int, *args: str
) -> AsyncIterator[Terminal]:
    """The demo (with ``args``) in a real terminal of that size; stopped by
    Ctrl-C after the block: exit status 0 and nothing of it left."""
    term = Terminal(tmp_path, width, height)
    try:
        term.start(*the_demo(*args))
        yield term
        status = await stop_demo(term)
    finally:
        term.remember_family()
        term.kill()
    assert status == 0, term.last_words
    assert not wait_gone(term.family), 'the demo left processes behind'


@needs_tmux
@pytest.mark.parametrize('size', [(80, 24), (200, 50)], ids=['80x24', '200x50'])
async def test_demo_draws_its_chart_fitted_to_a_real_terminal(tmp_path, size):
    width, height = size
    async with demo_in_terminal(tmp_path, width, height) as term:
        lines = await stable_frame(term, frame_ok(width, height))
        charts, port = check_frame(lines, width, height)
        bars = await read_bars(tmp_path, port)
        for drawn, topic in zip(charts, ('AAA', 'BBB'), strict=True):
            # as many bars as the width holds (the buffer has an hour)
            assert drawn['n'] >= (width - 12) // 2
            check_against_buffer(drawn, bars[topic])


@needs_tmux
async def test_demo_follows_a_resize_of_its_terminal(tmp_path):
    async with demo_in_terminal(tmp_path, 80, 24) as term:
        lines = await stable_frame(term, frame_ok(80, 24))
        narrow, _ = check_frame(lines, 80, 24)
        term.resize(200, 50)
        lines = await stable_frame(
            term, lambda x: frame_ok(200, 50)(x) and headers(x)[1] > 20
        )
        wide, port = check_frame(lines, 200, 50)
        assert wide[0]['n'] > narrow[0]['n']
        check_against_buffer(wide[0], (await read_bars(tmp_path, port))['AAA'])
        term.resize(60, 20)
        lines = await stable_frame(
            term, lambda x: frame_ok(60, 20)(x) and headers(x)[1] < 15
        )
        check_frame(lines, 60, 20)


@needs_tmux
async def test_demo_table_fits_80x24_with_nothing_cut_off(tmp_path):
    def table_ok(lines: list[str]) -> bool:
        heads = headers(lines)
        return len(heads) == 2 and len(lines) > heads[1] + 2

    async with demo_in_terminal(tmp_path, 80, 24, '--table') as term:
        lines = await stable_frame(term, table_ok)
        assert all(cell_len(x) <= 80 for x in lines) and len(lines) <= 24
        heads = headers(lines)
        assert ''.join(lines[: heads[0]]).endswith('feed AAA, BBB on sim')
        share = topic_lines(24, 2, heads[0])
        assert heads[1] - heads[0] == share
        for i in heads:
            assert lines[i].split()[1:2] == ['last']
            assert lines[i + 1].split() == [
                'time',
                'open',
                'high',
                'low',
                'close',
                'volume',
            ]
            body = lines[i + 2 : i + share]
            assert len(body) == share - 2
            for r in body:  # whole rows: time, four prices (2 decimals), volume
                t, *px, v = r.split()
                assert t.count(':') == 2 and len(px) == 4
                assert all(len(p.split('.')[1]) == 2 for p in px)


async def test_not_a_terminal_prints_plain_tables(tmp_path):
    """stdout a pipe: frames are the plain table, no escape codes."""
    with trio.fail_after(120):
        res = await trio.run_process(
            [*the_demo()[:-2], '--duration', '8', '--topics', 'AAA', '--rows', '3'],
            capture_stdout=True,
            capture_stderr=True,
            check=False,
        )
    out = res.stdout.decode()
    assert res.returncode == 0, res.stderr.decode()
    assert '\x1b' not in out
    lines = out.splitlines()
    assert lines[0].startswith('samplerd ready:')
    assert lines[1].startswith('AAA@sim  last ')
    assert lines[2].split() == ['time', 'open', 'high', 'low', 'close', 'volume']
    assert len(lines[3].split()) == 6
