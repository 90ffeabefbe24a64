'''
Writing trades into bars, in the feed daemon, next to samplerd stepping
the same buffers.

Who writes what: samplerd only ever *appends* rows, one per period
boundary, with that boundary's time (seeded O=H=L=C=previous close,
volume 0); the feed daemon's :class:`OHLCWriter` updates the OHLCV of rows
already there, the open bar and, for late trades, closed ones.

The rule, for every trade whatever its time (see docs/reliability.md):

- Bar ``k`` of a period ``p`` is the row whose time is ``B(k)``, the float
  nearest ``k*p`` (what samplerd writes); a trade at time ``t`` (the tick's
  ``'time'``, else its arrival time) belongs to bar ``k`` when
  ``B(k) <= t < B(k+1)``: floored, never rounded.
- Its bar is the open (last) row: the trade updates it.
- Its bar has closed but is still in the buffer: the trade updates that
  bar (a *correction*; counted in ``late``), empty bars after it take its
  new close, and the changed rows are reported by :meth:`take_corrections`
  so the feed daemon broadcasts them (views redraw, as after a backfill).
- Its bar is not open yet (the trade is ahead of the last row: samplerd
  has not stepped yet, is stalled, or the backend's clock is ahead of
  ours): the trade is held (counted in ``held``) and placed when a row for
  its bar appears, in arrival order.
- It cannot be placed (counted in ``unplaced``): its bar is older than the
  writer's first live bar (history is the backend's) or has left the
  buffer, its bar was skipped when samplerd jumped over a long stall,
  its time is not a finite number, or it is more than ``max_ahead_s``
  ahead of the last row or beyond ``max_held`` held trades (nobody steps
  the buffer: the writer does not hoard).

Open and close are the first and last trades of a bar in arrival order
(kdb+'s ``first``/``last`` over a tickerplant table); high and low the
extremes; volume the sum of the trades' sizes.  With ``volume='cumulative'``
(a backend whose ticks carry a running total in ``'volume'``, chosen
through its ``symbol_info``: ``{'volume': 'cumulative'}``) each trade's
size is the increase of that total since the previous trade, so every
period's bars sum correctly; a total lower than the previous one is a
reset (a new session) and that trade counts its own ``'size'``.

Every counter is per buffer (period) and summed per topic in
:meth:`OHLCWriter.stats`, which the feed daemon's ``info()`` (and
``samplerd ls``) shows.

'''
from __future__ import annotations

import math
import time
from collections.abc import AsyncIterable, Callable, Iterable
from dataclasses import asdict, dataclass
from typing import Any, Literal

import trio

from feedbus import CLEARING_TICK_TYPES, FeedsBus, get_feed_bus
from tractor_services import compat

from ._schedule import bar_of, bar_time, check_period
from .shm import ShmArray

log = compat.get_logger('ohlc', 'tractor_sampler')

_FIELDS = ('time', 'open', 'high', 'low', 'close', 'volume')
#: the volume modes: sizes summed, or increases of the backend's running total
VOLUME_MODES = ('sum', 'cumulative')
#: a trade more than this far ahead of a buffer's last row is not held
MAX_AHEAD_S: float = 3600.0
#: at most this many trades are held per buffer (nobody steps it?): more
#: are counted in ``unplaced`` and dropped
MAX_HELD: int = 20_000

Trade = tuple[float, float, float]  # (time, price, size)


def volume_mode(symbol_info: dict[str, Any] | None) -> str:
    '''The volume mode a backend chose in its ``symbol_info`` (key
    ``'volume'``), ``'sum'`` when it says nothing; ``ValueError`` naming a
    bad one.'''
    mode = (symbol_info or {}).get('volume', 'sum')
    if mode not in VOLUME_MODES:
        raise ValueError(
            f"symbol_info volume={mode!r} must be one of {VOLUME_MODES}: 'sum' adds the "
            "trades' sizes, 'cumulative' takes the increase of the ticks' running total"
        )
    return mode


@dataclass
class BarStats:
    '''Counters of one buffer's trades (see the module docstring).'''
    placed: int = 0  # trades written into a bar
    late: int = 0  # arrived after their bar closed: the closed bar corrected
    held: int = 0  # arrived before their bar opened: held, then placed
    corrected: int = 0  # closed rows the writer changed (late trades, held trades after a catch-up, carried closes)
    unplaced: int = 0  # in no bar: too old, skipped by a jump, bad time, or too far ahead


class _Bars:
    '''The writer's state for one buffer.'''

    def __init__(self, period: float, shm: ShmArray) -> None:
        self.p = period
        self.tenths = round(period * 10)
        self.shm = shm
        self.rows = shm.rows  # fetched once: the hot path indexes them
        self.win = shm.window
        self.times = self.rows['time']  # a view: no copy
        self.origin: int | None = None  # bar number of the first live row
        self.traded: set[int] = set()  # bars that got a trade
        self.seen = 0  # window end the writer has settled up to
        self.last_k = 0  # bar number of the last row (when seen > 0)
        self.held: list[Trade] = []
        self.held_k = 0  # the earliest bar a held trade is for
        self.dirty: list[int] | None = None  # [lo, hi) rows changed after they closed
        # cached at each settle (the hot path reads no shared memory but the
        # window): the open bar's time span, its row as a list, the first
        # placeable bar, the hold horizon
        self.open_lo = self.open_hi = math.inf
        self.open_row: list | None = None
        self.first = -1
        self.first_k = 0
        self.horizon = 0.0
        self.stats = BarStats()

    def find(self, k: int, first: int, last: int) -> int:
        '''The row of bar ``k`` (``last_k - k`` rows back when no jump lies
        between), or -1 when no row has that bar (skipped by a jump).'''
        times = self.times
        want = bar_time(self.tenths, k)
        pos = last - 1 - (self.last_k - k)
        if pos >= first and times[pos] == want:
            return pos
        lo, hi = max(pos, first), last
        while lo < hi:  # a jump lies between: the row is later than pos
            mid = (lo + hi) // 2
            if times[mid] < want:
                lo = mid + 1
            else:
                hi = mid
        return lo if lo < last and times[lo] == want else -1


class OHLCWriter:
    '''Writes one topic's clearing ticks into the bars of each of its
    buffers (one per period), by the rule in the module docstring.'''

    def __init__(
        self,
        shms_by_period: dict[float, ShmArray],
        *,
        clearing: Iterable[str] = CLEARING_TICK_TYPES,
        volume: Literal['sum', 'cumulative'] = 'sum',
        wall: Callable[[], float] = time.time,
        max_ahead_s: float = MAX_AHEAD_S,
        max_held: int = MAX_HELD,
    ) -> None:
        if volume == 'quote':
            raise ValueError(
                "volume='quote' was removed (it wrote one value into every period's "
                "bar): use 'cumulative' for a backend that sends a running total"
            )
        if volume not in VOLUME_MODES:
            raise ValueError(f'volume={volume!r} must be one of {VOLUME_MODES}')
        self.clearing = frozenset(clearing)
        self.volume = volume
        self.max_ahead_s = float(max_ahead_s)
        self.max_held = int(max_held)
        self._wall = wall
        self._bufs: list[_Bars] = []
        for p, shm in shms_by_period.items():
            p = check_period(p)
            if shm.readonly:
                raise PermissionError(f'shm buffer {shm.name!r} is read-only: the writer needs it writable')
            missing = [f for f in _FIELDS if f not in (shm.dtype.names or ())]
            if missing:
                raise ValueError(f'shm buffer {shm.name!r} lacks fields {missing}')
            self._bufs.append(_Bars(p, shm))
        names = list(self._bufs[0].shm.dtype.names or ()) if self._bufs else []
        for b in self._bufs:
            if list(b.shm.dtype.names or ()) != names:
                raise ValueError('all buffers of one writer must share a dtype')
        self._pos = {f: names.index(f) for f in _FIELDS if f in names}
        self._idx = tuple(self._pos.get(f, 0) for f in _FIELDS)
        self._cum: float | None = None  # the running total, volume='cumulative'
        for b in self._bufs:  # the open bar now is the first live one
            self._settle(b)
        self.trades = 0
        #: correction broadcasts samplerd refused (see broadcast_corrections)
        self.corrections_lost = 0
        #: clearing ticks whose time is not a finite number (in no bar)
        self.bad_times = 0

    # --- the hot path ------------------------------------------------------

    def write(self, ticks: Iterable[dict[str, Any]] | None, now: float | None = None) -> int:
        '''Fold the clearing ticks among ``ticks`` into the buffers; returns
        how many there were.'''
        if not ticks:
            return 0
        clearing = self.clearing
        cumulative = self.volume == 'cumulative'
        trades: list[Trade] = []
        for tick in ticks:
            if tick.get('type') not in clearing:
                continue
            t = tick.get('time')
            if t is None:
                t = now if now is not None else self._wall()
            size = tick.get('size', 0.0) or 0.0
            if cumulative:
                total = tick.get('volume')
                if total is not None:
                    if self._cum is not None and total >= self._cum:
                        size = total - self._cum
                    self._cum = total
            try:
                t = float(t)
            except (TypeError, ValueError):
                t = math.nan
            if not math.isfinite(t):
                self.bad_times += 1
                for b in self._bufs:
                    b.stats.unplaced += 1
                continue
            trades.append((t, tick['price'], size))
        self.trades += len(trades)
        if trades:
            for b in self._bufs:
                self._apply(b, trades)
        return len(trades)

    def _settle(self, b: _Bars) -> tuple[int, int] | None:
        '''Catch up with rows samplerd appended since the last look: empty
        ones take the close before them (samplerd may have copied it before
        the last trade of that bar was written), then held trades whose bar
        now has a row are placed.  Returns the window, None while empty.'''
        first, last = b.win.tolist()
        if last <= first:
            return None
        if b.origin is None or last != b.seen:
            k = bar_of(float(b.times[last - 1]), b.tenths)
            start = b.seen
            b.seen, b.last_k = last, k
            b.open_lo, b.open_hi = bar_time(b.tenths, k), bar_time(b.tenths, k + 1)
            b.horizon = b.open_lo + self.max_ahead_s
            b.open_row = None
            if b.origin is None:
                b.origin = k
            else:
                self._carry(b, max(start, first + 1) - 1, last)
        if first != b.first:  # history was prepended (or the first look)
            b.first = first
            b.first_k = max(b.origin, bar_of(float(b.times[first]), b.tenths))
        if b.held and b.held_k <= b.last_k:
            held, b.held = b.held, []
            self._place(b, held, first, last, arrived=False)
        return first, last

    def _apply(self, b: _Bars, trades: list[Trade]) -> None:
        win = self._settle(b)
        if win is None:  # no bar yet: hold
            self._hold(b, trades, count=True)
            return
        self._place(b, trades, *win, arrived=True)

    def _hold(self, b: _Bars, trades: list[Trade], count: bool) -> None:
        room = self.max_held - len(b.held)
        if room < len(trades):
            b.stats.unplaced += len(trades) - max(room, 0)
            trades = trades[:max(room, 0)]
        if not trades:
            return
        if count:
            b.stats.held += len(trades)
        k = min(bar_of(t, b.tenths) for t, _, _ in trades)
        b.held_k = k if not b.held else min(b.held_k, k)
        b.held.extend(trades)

    def _place(self, b: _Bars, trades: list[Trade], first: int, last: int, arrived: bool) -> None:
        '''Fold ``trades`` (arrival order) into their bars; hold those
        ahead of the last row.'''
        tenths, last_k = b.tenths, b.last_k
        rows = b.rows
        i_time, i_open, i_high, i_low, i_close, i_vol = self._idx
        first_k, horizon, open_lo, open_hi = b.first_k, b.horizon, b.open_lo, b.open_hi
        mods: dict[int, list] = {}
        ahead: list[Trade] = []
        traded = b.traded
        st = b.stats
        open_pos = last - 1
        if b.open_row is not None:
            mods[open_pos] = b.open_row
        placed = st.placed
        for trade in trades:
            t, price, size = trade
            if open_lo <= t < open_hi:  # the common case: the open bar
                k, pos = last_k, open_pos
            else:
                k = bar_of(t, tenths)
                if k > last_k:
                    if t > horizon:
                        st.unplaced += 1
                    else:
                        ahead.append(trade)
                    continue
                pos = open_pos if k == last_k else -1
            if pos < 0:  # a closed bar
                if k < first_k:
                    st.unplaced += 1
                    continue
                pos = b.find(k, first, last)
                if pos < 0:
                    st.unplaced += 1
                    continue
                if arrived:
                    st.late += 1
            row = mods.get(pos)
            if row is None:
                row = mods[pos] = list(rows[pos].item())
            if k not in traded:
                traded.add(k)
                row[i_open] = row[i_high] = row[i_low] = row[i_close] = price
                row[i_vol] = size
            else:
                if price > row[i_high]:
                    row[i_high] = price
                if price < row[i_low]:
                    row[i_low] = price
                row[i_close] = price
                row[i_vol] += size
            st.placed += 1
        if ahead:
            self._hold(b, ahead, count=arrived)
        if not mods:
            return
        closed = []
        for pos, row in mods.items():
            if pos < open_pos:
                rows[pos] = tuple(row)
                closed.append(pos)
            elif row is not b.open_row or st.placed != placed:
                rows[pos] = tuple(row)
                b.open_row = row
        if closed:
            closed.sort()
            st.corrected += len(closed)
            self._dirty(b, closed[0], closed[-1] + 1)
            # empty bars after a corrected one carry its new close
            for pos in closed:
                self._carry(b, pos, last)

    def _carry(self, b: _Bars, pos: int, last: int) -> None:
        '''Rows after ``pos`` up to the next traded one (or the end) that
        got no trade take the close before them.'''
        rows, tenths, traded = b.rows, b.tenths, b.traded
        i_time, i_open, i_high, i_low, i_close, i_vol = self._idx
        close = rows[pos]['close']
        open_pos = last - 1
        if pos + 1 < last:
            b.open_row = None  # the open row may change here
        for q in range(pos + 1, last):
            row = list(rows[q].item())
            if bar_of(row[i_time], tenths) in traded:
                break
            if (
                row[i_open] == row[i_high] == row[i_low] == row[i_close] == close
                or (close != close and row[i_close] != row[i_close])  # both NaN
            ) and row[i_vol] == 0:
                continue
            row[i_open] = row[i_high] = row[i_low] = row[i_close] = close
            row[i_vol] = 0.0
            rows[q] = tuple(row)
            if q < open_pos:
                b.stats.corrected += 1
                self._dirty(b, q, q + 1)

    @staticmethod
    def _dirty(b: _Bars, lo: int, hi: int) -> None:
        if b.dirty is None:
            b.dirty = [lo, hi]
        else:
            b.dirty[0] = min(b.dirty[0], lo)
            b.dirty[1] = max(b.dirty[1], hi)

    # --- steps and corrections ------------------------------------------------

    def on_step(self, period_s: float | None = None) -> None:
        '''samplerd appended rows to ``period_s``'s buffer (every buffer
        when ``None``): settle them (see :meth:`_settle`).'''
        p = None if period_s is None else check_period(period_s)
        for b in self._bufs:
            if p is None or b.p == p:
                self._settle(b)

    def take_corrections(self) -> list[tuple[float, int, int]]:
        '''``(period, start_index, end_index)`` (end exclusive, the rows'
        ``index`` field) of the closed rows changed since the last call.'''
        out = []
        for b in self._bufs:
            if b.dirty is None:
                continue
            lo, hi = b.dirty
            b.dirty = None
            idx = b.rows['index']
            out.append((b.p, int(idx[lo]), int(idx[hi - 1]) + 1))
        return out

    @property
    def pending(self) -> int:
        '''Trades held for bars samplerd has not opened yet.'''
        return sum(len(b.held) for b in self._bufs)

    @property
    def late_trades(self) -> int:
        return sum(b.stats.late for b in self._bufs)

    @property
    def unplaced_trades(self) -> int:
        return sum(b.stats.unplaced for b in self._bufs)

    def stats(self) -> dict[str, Any]:
        '''The counters: totals over the buffers and ``by_period``.'''
        by = {repr(b.p): {**asdict(b.stats), 'pending': len(b.held)} for b in self._bufs}
        tot = {k: sum(v[k] for v in by.values()) for k in ('placed', 'late', 'held', 'corrected', 'unplaced', 'pending')}
        return {
            'trades': self.trades, 'volume': self.volume, **tot,
            'bad_times': self.bad_times, 'corrections_lost': self.corrections_lost,
            'by_period': by,
        }


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


async def broadcast_corrections(writer: OHLCWriter, stream: Any, topic: str) -> int:
    '''Tell every subscriber, through a sample stream (from
    :func:`open_sample_stream`), which closed rows of ``topic``'s buffers
    the writer corrected since the last call: a
    :class:`~tractor_sampler.Backfill` with ``reason='correction'`` per
    buffer, so views redraw those rows.  The feed daemon calls it after
    each step it folds in.  Returns how many it sent; a refusal from
    samplerd is logged (the rows stay corrected, only the redraw is lost).'''
    from ._client import SamplerError
    from ._msgs import Backfill

    sent = 0
    for p, start, end in writer.take_corrections():
        try:
            await stream.broadcast(Backfill(
                topic=topic, timeframe=p, start_index=start, end_index=end, reason='correction',
            ))
        except SamplerError as err:
            writer.corrections_lost += 1
            log.warning(f'{topic}: corrected {p:g} s rows [{start}, {end}) not broadcast: {err}')
            continue
        sent += 1
    return sent
