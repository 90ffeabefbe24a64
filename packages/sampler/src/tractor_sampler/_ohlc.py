'''
Writing trades into bars, in the feed daemon, next to samplerd stepping
the same buffers.

Who writes what: samplerd only ever *appends* a row at each period
boundary (seeded O=H=L=C=previous close, volume 0); the feed daemon's
:class:`OHLCWriter` only ever updates the *last* row.

The consistency rule (a trade never lands in a bar that has closed):

- a trade belongs to the bar ``[k*p, (k+1)*p)`` holding its time (the
  tick's ``'time'`` if it has one, else its arrival time);
- if that bar is the last row, the trade updates it;
- if samplerd has not opened that bar yet (the trade came a few
  milliseconds before the step), the trade is held and written when the
  writer sees the step (:meth:`OHLCWriter.on_step`), or by the next write
  that finds the bar open;
- if the bar has already closed (the trade is older than the last row),
  it goes into the open bar and is counted in ``late_trades``: closed bars
  are never changed.

When the writer sees a step and no trade has reached the new bar yet, it
re-seeds that bar from the closed bar's final close (samplerd may have
copied the close just before the closed bar's last trade was written).

The open of a bar is its first trade; high and low the extremes; close
the last trade; volume the sum of trade sizes (``volume='sum'``) or the
value the backend sends in the tick's ``'volume'`` (``volume='quote'``).

'''
from __future__ import annotations

import time
from collections.abc import AsyncIterable, Callable, Iterable
from typing import Any, Literal

import trio

from feedbus import CLEARING_TICK_TYPES, FeedsBus, get_feed_bus

from ._schedule import check_period
from .shm import ShmArray

_FIELDS = ('time', 'open', 'high', 'low', 'close', 'volume')


class OHLCWriter:
    '''Writes one topic's clearing ticks into the current row of each of
    its buffers (one per period).'''

    def __init__(
        self,
        shms_by_period: dict[float, ShmArray],
        *,
        clearing: Iterable[str] = CLEARING_TICK_TYPES,
        volume: Literal['sum', 'quote'] = 'sum',
        wall: Callable[[], float] = time.time,
    ) -> None:
        if volume not in ('sum', 'quote'):
            raise ValueError(f"volume={volume!r} must be 'sum' or 'quote'")
        self.clearing = frozenset(clearing)
        self.volume = volume
        self._wall = wall
        # (period, period in µs, buffer): bars are found in integer µs,
        # exact at epoch magnitudes (a float's ulp there is ~4e-7 s)
        self._bufs: list[tuple[float, int, ShmArray]] = []
        for p, shm in shms_by_period.items():
            p = check_period(p)
            if shm.readonly:
                raise PermissionError(f'shm buffer {shm.name!r} is read-only: the writer needs it writable')
            missing = [f for f in _FIELDS if f not in (shm.dtype.names or ())]
            if missing:
                raise ValueError(f'shm buffer {shm.name!r} lacks fields {missing}')
            self._bufs.append((p, round(p * 1e6), shm))
        names = list(self._bufs[0][2].dtype.names or ()) if self._bufs else []
        self._pos = {f: names.index(f) for f in _FIELDS if f in names}
        self._pending: dict[float, list[tuple[float, float, float, float | None]]] = {}
        self._traded: dict[float, float] = {}  # period -> time of the bar a trade reached
        self.trades = 0
        self.late_trades = 0

    # --- the hot path ------------------------------------------------------

    def write(self, ticks: Iterable[dict[str, Any]] | None, now: float | None = None) -> int:
        '''Fold the clearing ticks among ``ticks`` into the buffers; returns
        how many there were.'''
        if not ticks:
            return 0
        clearing = self.clearing
        trades = []
        for tick in ticks:
            if tick.get('type') in clearing:
                t = tick.get('time')
                if t is None:
                    t = now if now is not None else self._wall()
                trades.append((float(t), float(tick['price']), float(tick.get('size', 0.0)), tick.get('volume')))
        if not trades:
            return 0
        self.trades += len(trades)
        for p, p_us, shm in self._bufs:
            pending = self._pending.get(p)
            if pending:
                self._apply(p, p_us, shm, pending + trades)
            else:
                self._apply(p, p_us, shm, trades)
        return len(trades)

    def _apply(
        self,
        p: float,
        p_us: int,
        shm: ShmArray,
        trades: list[tuple[float, float, float, float | None]],
    ) -> None:
        rows = shm._rows
        first, last = shm._window.tolist()
        if last <= first:  # no bar yet: wait for one
            self._pending[p] = trades
            return
        row = list(rows[last - 1].item())
        pos = self._pos
        bar_t = row[pos['time']]
        bar_k = round(bar_t * 1e6) // p_us
        later = []
        fresh = self._traded.get(p) != bar_t and row[pos['volume']] == 0
        high, low, close = row[pos['high']], row[pos['low']], row[pos['close']]
        vol = row[pos['volume']]
        n = 0
        for t, price, size, bar_vol in trades:
            k = round(t * 1e6) // p_us
            if k > bar_k:
                later.append((t, price, size, bar_vol))
                continue
            if k < bar_k:
                self.late_trades += 1
            if fresh and n == 0:
                row[pos['open']] = high = low = price
            else:
                high = price if price > high else high
                low = price if price < low else low
            close = price
            vol = bar_vol if self.volume == 'quote' and bar_vol is not None else vol + size
            n += 1
        if later:
            self._pending[p] = later
        else:
            self._pending.pop(p, None)
        if n:
            row[pos['high']], row[pos['low']], row[pos['close']], row[pos['volume']] = high, low, close, vol
            rows[last - 1] = tuple(row)
            self._traded[p] = bar_t

    # --- steps ---------------------------------------------------------------

    def on_step(self, period_s: float) -> None:
        '''samplerd appended a row to ``period_s``'s buffer: re-seed it from
        the closed bar's final close if no trade reached it yet, then write
        the trades that were waiting for it.'''
        p = check_period(period_s)
        for bp, p_us, shm in self._bufs:
            if bp != p:
                continue
            rows = shm._rows
            first, last = shm._window.tolist()
            if last - first >= 2 and self._traded.get(p) != rows[last - 1]['time']:
                pos = self._pos
                prev_close = rows[last - 2]['close']
                row = list(rows[last - 1].item())
                if row[pos['volume']] == 0:
                    for f in ('open', 'high', 'low', 'close'):
                        row[pos[f]] = prev_close
                    rows[last - 1] = tuple(row)
            pending = self._pending.pop(p, None)
            if pending:
                self._apply(p, p_us, shm, pending)

    @property
    def pending(self) -> int:
        '''Trades held for a bar samplerd has not opened yet.'''
        return sum(len(v) for v in self._pending.values())


async def sample_and_broadcast(
    source: AsyncIterable[dict[str, dict[str, Any]]],
    writers: dict[str, OHLCWriter],
    bus: FeedsBus | None = None,
    *,
    wall: Callable[[], float] = time.time,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    '''The feed daemon's loop: for every ``{topic: quote}`` from the
    backend, fold its clearing ticks into the topic's bars, then publish the
    quote on the feed bus (throttled subscribers get it through their
    throttler).  A quote is a dict of fields with an optional ``'ticks'``
    list.'''
    bus = bus or get_feed_bus()
    task_status.started()
    async for batch in source:
        now = wall()
        for topic, quote in batch.items():
            fields = dict(quote)
            ticks = fields.pop('ticks', None) or []
            writer = writers.get(topic)
            if writer is not None:
                writer.write(ticks, now)
            bus.publish(topic, fields, ticks)
