"""
The live view of ``samplerd watch`` and ``samplerd demo``: a feed's topics
redrawn in the terminal (or printed frame after frame when stdout is not
one).
"""

from __future__ import annotations

import argparse
import math
import time
from collections import deque
from collections.abc import Sequence
from typing import Any, TextIO

import trio

from ._feed import MarketFeed


def _table(rows: Sequence[Sequence[Any]], head: Sequence[str]) -> list[str]:
    cells = [[str(c) for c in head]] + [[str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(head))]
    return [
        '  '.join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()
        for r in cells
    ]


class LiveView:
    """Renders a feed's topics: the last bars of one period, last price,
    ticks/s (over the last few seconds), subscribers and state."""

    def __init__(self, feed: MarketFeed, period: float, rows: int) -> None:
        self.feed = feed
        self.period = period
        self.rows = rows
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

    def render(self) -> str:
        lines = []
        for topic in self.feed.topics:
            shm = self.feed.buffer(topic, self.period)
            bars = shm.array[-self.rows :]
            last = self.last.get(topic)
            lines.append(
                f'{topic}@{self.feed.backend}  last {last if last is not None else "-"}  '
                f'ticks/s {self.rate(topic):.0f}  subscribers {self.subs.get(topic, "?")}  '
                f'state {self.state.get(topic, "?")}  [{self.period:g} s bars, {len(shm)} in buffer]'
            )
            rows = []
            for b in bars:
                rows.append(
                    (
                        time.strftime('%H:%M:%S', time.localtime(float(b['time']))),
                        *(_px(b[f]) for f in ('open', 'high', 'low', 'close')),
                        f'{float(b["volume"]):g}',
                    )
                )
            lines += [
                '  ' + r
                for r in _table(
                    rows, ('time', 'open', 'high', 'low', 'close', 'volume')
                )
            ]
            lines.append('')
        return '\n'.join(lines)


def _px(v: Any) -> str:
    v = float(v)
    return '-' if math.isnan(v) else f'{v:.2f}'


async def live_view(
    feed: MarketFeed,
    args: argparse.Namespace,
    out: TextIO,
) -> None:
    tty = out.isatty()
    fps = args.fps or (4.0 if tty else 1.0)
    view = LiveView(feed, args.period, args.rows)
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
        next_t = trio.current_time()
        while True:
            text = view.render()
            if tty:
                out.write('\x1b[H\x1b[2J' + text + '\n')
            else:
                out.write(text + '\n')
            out.flush()
            next_t += interval
            await trio.sleep_until(next_t)
