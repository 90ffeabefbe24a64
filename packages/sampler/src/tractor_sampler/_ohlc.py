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
  are never changed;
- a trade for a bar more than :data:`MAX_AHEAD_BARS` past the last row
  (samplerd no longer steps the buffer, or is far behind) is dropped and
  counted in ``unplaced_trades``.

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
#: trades for a bar up to this many bars past the last row are held until
#: samplerd opens it (a step late by up to that much); later ones are counted
#: in ``unplaced_trades`` and dropped, so a buffer nobody steps any more
#: cannot make the writer hoard trades
MAX_AHEAD_BARS = 2


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
        for _, _, shm in self._bufs:
            if list(shm.dtype.names or ()) != names:
                raise ValueError('all buffers of one writer must share a dtype')
        self._pos = {f: names.index(f) for f in _FIELDS if f in names}
        self._idx = tuple(self._pos.get(f, 0) for f in _FIELDS)
        # per period: (window end, the last row as a list, its time, its bar number in µs units)
        self._cur: dict[float, tuple[Any, list, float, int]] = {}
        self._pending: dict[float, list[tuple[float, float, float, float | None]]] = {}
        self._traded: dict[float, float] = {}  # period -> time of the bar a trade reached
        self.trades = 0
        self.late_trades = 0
        #: trades for a bar more than MAX_AHEAD_BARS past the last row (none
        #: while samplerd steps the buffer): dropped and counted
        self.unplaced_trades = 0

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
                trades.append((t, tick['price'], tick.get('size', 0.0), tick.get('volume')))
        if not trades:
            return 0
        self.trades += len(trades)
        pending = self._pending
        for p, p_us, shm in self._bufs:
            held = pending.get(p) if pending else None
            self._apply(p, p_us, shm, held + trades if held else trades)
        return len(trades)

    def _apply(
        self,
        p: float,
        p_us: int,
        shm: ShmArray,
        trades: list[tuple[float, float, float, float | None]],
    ) -> None:
        # the writer is the only writer of the last row's OHLCV (samplerd
        # only appends), so it keeps that row here and reads shared memory
        # again only when samplerd appended a new one
        window = shm._window
        last = window[1]
        cur = self._cur.get(p)
        if cur is not None and cur[0] == last:
            _, row, bar_t, bar_k = cur
        else:
            if last <= window[0]:  # no bar yet: wait for one
                self._pending[p] = trades
                return
            row = list(shm._rows[last - 1].item())
            bar_t = row[self._idx[0]]
            bar_k = round(bar_t * 1e6) // p_us
            self._cur[p] = (last, row, bar_t, bar_k)
        i_time, i_open, i_high, i_low, i_close, i_vol = self._idx
        high, low, close, vol = row[i_high], row[i_low], row[i_close], row[i_vol]
        open_ = row[i_open]
        fresh = vol == 0 and self._traded.get(p) != bar_t
        sum_volume = self.volume == 'sum'
        later = None
        n = 0
        for t, price, size, bar_vol in trades:
            k = round(t * 1e6) // p_us
            if k != bar_k:
                if k > bar_k:
                    if k - bar_k > MAX_AHEAD_BARS:
                        # no step will open that bar soon (the buffer is set
                        # aside, or far behind): count it, do not hoard it
                        self.unplaced_trades += 1
                        continue
                    if later is None:
                        later = []
                    later.append((t, price, size, bar_vol))
                    continue
                self.late_trades += 1
            if fresh and n == 0:
                open_ = high = low = price
            else:
                if price > high:
                    high = price
                if price < low:
                    low = price
            close = price
            vol = vol + size if sum_volume or bar_vol is None else bar_vol
            n += 1
        if later:
            self._pending[p] = later
        elif self._pending:
            self._pending.pop(p, None)
        if n:
            row[i_open], row[i_high], row[i_low], row[i_close], row[i_vol] = open_, high, low, close, vol
            shm._rows[last - 1] = tuple(row)
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
                    self._cur.pop(p, None)
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
