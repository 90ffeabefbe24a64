"""
The live view of ``samplerd watch`` and ``samplerd demo``: a feed's topics,
redrawn in the terminal, or printed frame after frame when stdout is not
one.

On a terminal each topic gets an equal share of its height: one header
line (topic@backend, last price, ticks/s, subscribers, state) that never
wraps, then candlesticks over volume bars of the topic's last bars (as
many as the width holds) with the highest and lowest price and the largest
volume on the right and the first and last bar's time below.  ``--table``
shows the bars as a table instead, fitted the same way.  The size is read
again for every frame (and a resize, SIGWINCH, draws one at once), so the
view follows the terminal.  Drawing goes through rich (its colour
detection, its cursor controls); a frame starts with the lines given as
``head`` (the demo's ready line, with its registry port), so redrawing
never wipes them.  When stdout is not a terminal each frame is the plain
table (no escape codes), printed after the previous one.

Prices are shown with as many decimals as the symbol's tick size has
(``symbol_info``'s ``tick_size``: 0.00001 shows 5); a backend without one
gets as many as its prices need.
"""

from __future__ import annotations

import argparse
import math
import signal
import time
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any, TextIO

import numpy as np
import trio
from rich.console import Console
from rich.control import Control, ControlType
from rich.text import Text

from ._feed import MarketFeed

#: the most decimals a price is shown with
MAX_DECIMALS = 12
#: bars shown by the table when ``--rows`` is not given
TABLE_ROWS = 10

UP, DOWN, FLAT = 'green', 'red', 'default'
STATE_STYLE = {'up': 'green', 'starting': 'yellow', 'restarting': 'yellow'}


# --- numbers ---------------------------------------------------------------------


def tick_decimals(tick_size: Any) -> int | None:
    """The decimals of a tick size (0.01: 2, 0.00001: 5, 0.25: 2, 5: 0);
    None when it is missing or not a positive number."""
    try:
        tick = float(tick_size)
    except (TypeError, ValueError):
        return None
    if not (tick > 0 and math.isfinite(tick)):
        return None
    try:
        exp = Decimal(repr(tick)).normalize().as_tuple().exponent
    except InvalidOperation:
        return None
    return min(MAX_DECIMALS, max(0, -int(exp)))


def price_decimals(tick_size: Any, prices: Iterable[float] = ()) -> int:
    """Decimals to show a symbol's prices with: its tick size's; without
    one, as many as the given prices need (at least 2, at most 8)."""
    d = tick_decimals(tick_size)
    if d is not None:
        return d
    need = 2
    for v in prices:
        v = float(v)
        if not math.isfinite(v):
            continue
        while need < 8 and abs(round(v, need) - v) > 1e-9 * max(1.0, abs(v)):
            need += 1
    return need


def fmt_price(v: Any, decimals: int) -> str:
    v = float(v)
    return '-' if math.isnan(v) else f'{v:.{decimals}f}'


def fmt_volume(v: Any) -> str:
    """A volume in at most about 6 characters: 950, 12.5k, 3.1M."""
    v = float(v)
    if math.isnan(v):
        return '-'
    for div, unit in ((1e9, 'G'), (1e6, 'M'), (1e3, 'k')):
        if abs(v) >= 10 * div:
            return f'{v / div:.3g}{unit}'
    return f'{v:.5g}'


def bar_time(t: float) -> str:
    return time.strftime('%H:%M:%S', time.localtime(float(t)))


# --- the header ----------------------------------------------------------------


@dataclass
class Header:
    """What a topic's header line says."""

    topic: str
    backend: str
    last: float | None
    rate: float
    subscribers: int | None
    state: str
    period: float
    in_buffer: int
    decimals: int


def header(h: Header, width: int | None = None) -> Text:
    """The header line, at most ``width`` cells: the full wording if it
    fits, then shorter ones, then cut with ``…`` (the topic first)."""
    name = f'{h.topic}@{h.backend}'
    last = '-' if h.last is None else fmt_price(h.last, h.decimals)
    subs = '?' if h.subscribers is None else str(h.subscribers)
    rate = f'{h.rate:.0f}'
    state_style = STATE_STYLE.get(h.state, 'red')
    # each variant: (text, style) parts after the name
    variants = [
        [
            ('  last ', ''),
            (last, 'bold'),
            (f'  ticks/s {rate}  subscribers {subs}  state ', ''),
            (h.state, state_style),
            (f'  [{h.period:g} s bars, {h.in_buffer} in buffer]', 'dim'),
        ],
        [
            ('  last ', ''),
            (last, 'bold'),
            (f'  ticks/s {rate}  subscribers {subs}  state ', ''),
            (h.state, state_style),
            (f'  [{h.period:g} s bars]', 'dim'),
        ],
        [
            ('  last ', ''),
            (last, 'bold'),
            (f'  ticks/s {rate}  subs {subs}  ', ''),
            (h.state, state_style),
            (f'  [{h.period:g} s]', 'dim'),
        ],
        [
            ('  last ', ''),
            (last, 'bold'),
            (f'  ticks/s {rate}  subs {subs}  ', ''),
            (h.state, state_style),
        ],
        [
            ('  last ', ''),
            (last, 'bold'),
            (f'  {rate}/s  subs {subs}  ', ''),
            (h.state, state_style),
        ],
    ]

    def build(name_text: str, parts: list[tuple[str, str]]) -> Text:
        text = Text(name_text, style='bold cyan')
        for s, style in parts:
            text.append(s, style=style or None)
        return text

    for parts in variants:
        rest = sum(len(s) for s, _ in parts)
        if width is None or len(name) + rest <= width:
            return build(name, parts)
    assert width is not None
    parts = variants[-1]
    rest = sum(len(s) for s, _ in parts)
    if width - rest >= 8:  # the name cut, the figures whole
        return build(name[: width - rest - 1] + '…', parts)
    text = build(name, parts)
    text.truncate(width, overflow='ellipsis')
    return text


# --- the chart ------------------------------------------------------------------

# a cell of the price area holds two half rows, each empty (' '), part of a
# wick ('w') or of a body ('b'): the glyph for (upper, lower)
GLYPHS = {
    (' ', ' '): ' ',
    ('w', 'w'): '│',
    ('b', 'b'): '█',
    ('w', ' '): '╵',
    (' ', 'w'): '╷',
    ('b', ' '): '▀',
    (' ', 'b'): '▄',
    ('w', 'b'): '╽',
    ('b', 'w'): '╿',
}
#: volume bars in eighths of a cell
EIGHTHS = ' ▁▂▃▄▅▆▇█'


@dataclass
class ChartLayout:
    """How a topic's share of lines is used (header excluded)."""

    price_rows: int
    volume_rows: int
    axis: bool

    @classmethod
    def of(cls, lines: int) -> ChartLayout:
        """``lines`` below the header: one for the time axis when there
        are at least 3, about a quarter of the rest (if 4 or more) for volume."""
        axis = lines >= 3
        body = lines - axis
        volume = (body + 2) // 4 if body >= 4 else 0
        return cls(price_rows=max(0, body - volume), volume_rows=volume, axis=axis)


def topic_lines(height: int, n_topics: int, head_lines: int = 0) -> int:
    """Each topic's equal share of a terminal of ``height`` lines, below
    ``head_lines``, keeping the last line free (the cursor's, so that the
    final newline never scrolls the frame)."""
    return max(0, (height - 1 - head_lines) // max(1, n_topics))


def _valid(bars: np.ndarray) -> np.ndarray:
    """Bars with prices (a bar before its first trade has NaN)."""
    ok = ~(
        np.isnan(bars['open'])
        | np.isnan(bars['high'])
        | np.isnan(bars['low'])
        | np.isnan(bars['close'])
    )
    return bars[ok]


def fit_bars(
    bars: np.ndarray, width: int, decimals: int, most: int | None = None
) -> tuple[np.ndarray, int]:
    """The last bars that fit ``width`` (one column each, a space
    between, the labels' column on the right) and that column's width."""
    bars = _valid(bars)
    label_w = 1 + len(fmt_price(bars['close'][-1], decimals)) if len(bars) else 1
    shown = bars[:0]
    for _ in range(4):  # the labels depend on the bars shown, and back
        n = max(0, (width - label_w + 1) // 2)
        if most is not None:
            n = min(n, most)
        shown = bars[max(0, len(bars) - n) :] if n else bars[:0]
        if not len(shown):
            break
        need = 1 + max(
            len(fmt_price(shown['high'].max(), decimals)),
            len(fmt_price(shown['low'].min(), decimals)),
            len(fmt_volume(shown['volume'].max())),
        )
        if need <= label_w:
            break
        label_w = need
    return shown, label_w


def _style(bar: Any) -> str:
    o, c = float(bar['open']), float(bar['close'])
    return UP if c > o else DOWN if c < o else FLAT


def chart(
    bars: np.ndarray,
    width: int,
    lines: int,
    decimals: int,
    most: int | None = None,
) -> list[Text]:
    """A topic's last bars as ``lines`` lines of at most ``width`` cells:
    candlesticks (bodies open..close in blocks, wicks high..low in lines,
    at half a line's resolution) over volume bars (in eighths of a line,
    proportional to the largest shown), the highest high on the top line,
    the lowest low on the bottom price line and the largest volume on the
    top volume line, the first and last bar's time below."""
    lay = ChartLayout.of(lines)
    shown, label_w = fit_bars(bars, width, decimals, most)
    n = len(shown)
    out: list[Text] = []
    if n == 0 or lay.price_rows == 0:
        note = 'no bars yet' if n == 0 else ''
        return [Text(note[:width], style='dim')] + [Text() for _ in range(lines - 1)]
    chart_w = 2 * n - 1
    pad = ' ' * max(0, width - label_w - chart_w)
    hi, lo = float(shown['high'].max()), float(shown['low'].min())
    halves = 2 * lay.price_rows

    def y(v: float) -> int:
        if hi <= lo:
            return (halves - 1) // 2
        return int(round((float(v) - lo) / (hi - lo) * (halves - 1)))

    spans = []
    for b in shown:
        o, c = float(b['open']), float(b['close'])
        spans.append((y(b['low']), y(b['high']), y(min(o, c)), y(max(o, c)), _style(b)))

    def half(span: tuple, h: int) -> str:
        wlo, whi, blo, bhi, _ = span
        if blo <= h <= bhi:
            return 'b'
        if wlo <= h <= whi:
            return 'w'
        return ' '

    labels = {
        lay.price_rows - 1: fmt_price(hi, decimals),
        0: fmt_price(lo, decimals),
    }
    for r in range(lay.price_rows - 1, -1, -1):  # top line first
        line = Text(pad)
        for i, span in enumerate(spans):
            if i:
                line.append(' ')
            glyph = GLYPHS[half(span, 2 * r + 1), half(span, 2 * r)]
            line.append(glyph, style=span[4] if glyph != ' ' else None)
        label = labels.get(r, '')
        line.append(' ' + label.rjust(label_w - 1) if label else '')
        out.append(line)
    if lay.volume_rows:
        vmax = float(np.nanmax(shown['volume'])) if n else 0.0
        eighths = 8 * lay.volume_rows
        heights = []
        for b in shown:
            v = float(b['volume'])
            h8 = 0
            if vmax > 0 and v > 0:
                h8 = max(1, int(round(v / vmax * eighths)))
            heights.append((h8, _style(b)))
        for r in range(lay.volume_rows - 1, -1, -1):
            line = Text(pad)
            for i, (h8, style) in enumerate(heights):
                if i:
                    line.append(' ')
                fill = min(8, max(0, h8 - 8 * r))
                line.append(EIGHTHS[fill], style=f'{style} dim' if fill else None)
            if r == lay.volume_rows - 1:
                line.append(' ' + fmt_volume(vmax).rjust(label_w - 1), style='dim')
            out.append(line)
    if lay.axis:
        first, last = bar_time(shown['time'][0]), bar_time(shown['time'][-1])
        if n == 1 or chart_w < len(first) + len(last) + 1:
            axis = last  # ends under the last bar, even if wider than the chart
        else:
            axis = first + last.rjust(chart_w - len(first))
        out.append(Text(axis.rjust(len(pad) + chart_w), style='dim'))
    for line in out:
        line.truncate(width)
    return out


# --- the table --------------------------------------------------------------------

TABLE_HEAD = ('time', 'open', 'high', 'low', 'close', 'volume')


def _table(rows: Sequence[Sequence[Any]], head: Sequence[str]) -> list[str]:
    cells = [[str(c) for c in head]] + [[str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(head))]
    return [
        '  '.join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()
        for r in cells
    ]


def table(bars: np.ndarray, decimals: int) -> list[str]:
    """The bars as a table: time, open, high, low, close, volume, with a
    head line; indented by two spaces."""
    rows = [
        (
            bar_time(b['time']),
            *(fmt_price(b[f], decimals) for f in ('open', 'high', 'low', 'close')),
            f'{float(b["volume"]):g}',
        )
        for b in bars
    ]
    return ['  ' + r for r in _table(rows, TABLE_HEAD)]


# --- the view --------------------------------------------------------------------


class LiveView:
    """A feed's topics: the last bars of one period, last price, ticks/s
    (over the last few seconds), subscribers and state, as frames."""

    def __init__(
        self,
        feed: MarketFeed,
        period: float,
        rows: int | None = None,
        as_table: bool = False,
    ) -> None:
        self.feed = feed
        self.period = period
        self.rows = rows
        self.as_table = as_table
        self.last: dict[str, Any] = {}
        self.arrivals: dict[str, deque[tuple[float, int]]] = {
            t: deque() for t in feed.topics
        }
        self.subs: dict[str, int] = {}
        self.state = {t: s.state for t, s in feed.first_status.items()}

    def on_quote(self, msg: Any) -> None:
        now = time.monotonic()
        topics = msg.topics if hasattr(msg, 'topics') else {msg.topic: msg}
        for topic, q in topics.items():
            n = getattr(q, 'n_quotes', 1)
            last = q.fields.get('last')
            if last is not None:
                self.last[topic] = last
            self.arrivals[topic].append((now, n))

    def rate(self, topic: str, window: float = 3.0) -> float:
        now = time.monotonic()
        arr = self.arrivals[topic]
        while arr and now - arr[0][0] > window:
            arr.popleft()
        if not arr:
            return 0.0
        span = max(now - arr[0][0], 1e-3)
        return sum(n for _, n in arr) / max(span, min(window, 1.0))

    def decimals(self, topic: str, bars: np.ndarray) -> int:
        info = self.feed.symbol_info.get(topic) or {}
        prices = list(bars['close'][-20:]) if len(bars) else []
        return price_decimals(info.get('tick_size'), prices)

    def _topic(self, topic: str, n: int) -> tuple[Header, np.ndarray]:
        """``topic``'s header and its last ``n`` bars."""
        shm = self.feed.buffer(topic, self.period)
        bars = shm.array[-n:] if n > 0 else shm.array[:0]
        dec = self.decimals(topic, bars)
        return (
            Header(
                topic=topic,
                backend=self.feed.backend,
                last=self.last.get(topic),
                rate=self.rate(topic),
                subscribers=self.subs.get(topic),
                state=self.state.get(topic, '?'),
                period=self.period,
                in_buffer=len(shm),
                decimals=dec,
            ),
            bars,
        )

    def render(self) -> str:
        """The plain frame (stdout not a terminal): per topic its header,
        then the table of its last ``--rows`` bars, then a blank line."""
        lines: list[str] = []
        for topic in self.feed.topics:
            h, bars = self._topic(topic, self.rows or TABLE_ROWS)
            lines.append(header(h).plain)
            lines += table(bars, h.decimals)
            lines.append('')
        return '\n'.join(lines)

    def frame(self, width: int, height: int, head: Sequence[str] = ()) -> list[Text]:
        """A frame for a terminal of ``width`` x ``height``: ``head`` (folded
        to the width), then each topic in its share of the lines."""
        out = [Text(h[i : i + width]) for h in head for i in range(0, len(h), width)]
        share = topic_lines(height, len(self.feed.topics), len(out))
        for topic in self.feed.topics:
            if share < 1:
                break
            if self.as_table:
                n = max(0, min(self.rows or TABLE_ROWS, share - 2))
                h, bars = self._topic(topic, n)
                body = table(bars, h.decimals) if share >= 2 else []
                lines = [Text(s[:width]) for s in body]
            else:
                # enough bars for any width: what fits is chosen by chart()
                h, bars = self._topic(topic, max(1, width // 2 + 1))
                lines = chart(bars, width, share - 1, h.decimals, most=self.rows)
            out.append(header(h, width))
            out += lines[: share - 1]
            out += [Text() for _ in range(share - 1 - len(lines[: share - 1]))]
        return out


class _Screen:
    """Draws frames in place on a terminal through rich: every line of
    the frame erased and written again from the top left (the whole screen
    cleared first, and again after a resize), the cursor hidden meanwhile
    and left below the last frame at the end."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self.size: tuple[int, int] | None = None
        self.drawn = 0

    def draw(self, lines: Sequence[Text]) -> None:
        con = self.console
        size = tuple(con.size)
        with con:  # one write per frame
            if size != self.size:
                if self.size is None:
                    con.show_cursor(False)
                con.control(Control.clear())
                self.size = size  # type: ignore[assignment]
            for row, line in enumerate(lines):
                con.control(
                    Control.move_to(0, row), Control((ControlType.ERASE_IN_LINE, 2))
                )
                con.print(line, end='', no_wrap=True, overflow='crop', crop=True)
            for row in range(len(lines), self.drawn):  # what is left of the last
                con.control(
                    Control.move_to(0, row), Control((ControlType.ERASE_IN_LINE, 2))
                )
            # the cursor below the frame: a line printed meanwhile (a log
            # line on stderr) lands there, not inside the frame
            con.control(Control.move_to(0, len(lines)))
        self.drawn = len(lines)

    def close(self) -> None:
        if self.size is None:
            return
        # the cursor is below the frame (and below what was printed since)
        self.console.show_cursor(True)


async def live_view(
    feed: MarketFeed,
    args: argparse.Namespace,
    out: TextIO,
    head: Sequence[str] = (),
) -> None:
    """Show ``feed`` until cancelled: redrawn in place on a terminal (the
    ``head`` lines first in every frame), printed frame after frame
    otherwise."""
    tty = out.isatty()
    fps = args.fps or (4.0 if tty else 1.0)
    view = LiveView(feed, args.period, args.rows, getattr(args, 'table', False))
    async with trio.open_nursery() as tn:

        async def read_quotes() -> None:
            async for msg in feed:
                view.on_quote(msg)

        async def read_status() -> None:
            async for st in feed.status:
                view.state[st.topic] = st.state

        async def poll_info() -> None:
            while True:
                info = await feed.info()
                for t in feed.topics:
                    ti = info.topics.get(t)
                    view.subs[t] = len(ti.subscribers) if ti else 0
                await trio.sleep(1.0)

        tn.start_soon(read_quotes)
        tn.start_soon(read_status)
        tn.start_soon(poll_info)
        interval = 1.0 / fps
        if not tty:
            next_t = trio.current_time()
            while True:
                out.write(view.render() + '\n')
                out.flush()
                next_t += interval
                await trio.sleep_until(next_t)
        screen = _Screen(Console(file=out, highlight=False, emoji=False))
        resized = trio.Event()

        async def on_resize() -> None:
            nonlocal resized
            with trio.open_signal_receiver(signal.SIGWINCH) as sigs:
                async for _ in sigs:
                    resized.set()

        tn.start_soon(on_resize)
        try:
            while True:
                width, height = screen.console.size
                screen.draw(view.frame(width, height, head))
                with trio.move_on_after(interval):
                    await resized.wait()
                resized = trio.Event()
        finally:
            screen.close()
