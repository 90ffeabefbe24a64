"""
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
  writer's first live bar (history is the backend's), or is a partial
  first live bar the buffer skips (:meth:`OHLCWriter.skip_partial`), or has
  left the buffer, its bar was skipped when samplerd jumped over a long stall,
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

Composite bars (``composite={60.0: 1.0}``): a buffer built from another
buffer's bars instead of from trades, like NautilusTrader's composite bar
types (``1-MINUTE-LAST-INTERNAL@1-SECOND-EXTERNAL``).  Bar ``k`` of the
composite period ``q`` (a whole multiple ``r`` of the source's ``p``) is
the aggregate of the source bars ``k*r`` to ``k*r + r - 1`` that got
trades: open of the first, high and low the extremes, close of the last,
volume the sum; with none it stays flat at the close before it.  Every
change of a source bar (its open bar, a correction, a held trade placed)
is carried into the composite bar that holds it, so the two buffers can
never disagree; the composite's open bar is kept incrementally (the
closed source bars' aggregate is cached), so a trade costs about what it
costs a buffer of its own.  A composite buffer counts no trades itself
(its ``stats()['by_period']`` entry says ``'from'``: the source period),
and its corrected rows are broadcast like any others.

Every counter is per buffer (period) and summed per topic in
:meth:`OHLCWriter.stats`, which the feed daemon's ``info()`` (and
``samplerd ls``) shows.

"""

from __future__ import annotations

import math
import time
from collections.abc import AsyncIterable, Callable, Iterable
from dataclasses import asdict, dataclass
from typing import Any, Literal

import trio

from feedbus import CLEARING_TICK_TYPES, FeedsBus, get_feed_bus
from tractor_services import compat

from ._schedule import Grid, check_period
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


#: how a writer takes trade volume (see :class:`OHLCWriter`)
VolumeMode = Literal['sum', 'cumulative']


def volume_mode(symbol_info: dict[str, Any] | None) -> VolumeMode:
    """The volume mode a backend chose in its ``symbol_info`` (key
    ``'volume'``), ``'sum'`` when it says nothing; ``ValueError`` naming a
    bad one."""
    mode = (symbol_info or {}).get('volume', 'sum')
    if mode not in VOLUME_MODES:
        raise ValueError(
            f"symbol_info volume={mode!r} must be one of {VOLUME_MODES}: 'sum' adds the "
            "trades' sizes, 'cumulative' takes the increase of the ticks' running total"
        )
    return 'cumulative' if mode == 'cumulative' else 'sum'


@dataclass
class BarStats:
    """Counters of one buffer's trades (see the module docstring)."""

    placed: int = 0  # trades written into a bar
    late: int = 0  # arrived after their bar closed: the closed bar corrected
    held: int = 0  # arrived before their bar opened: held, then placed
    corrected: int = 0  # closed rows the writer changed (late trades, held trades after a catch-up, carried closes)
    unplaced: int = (
        0  # in no bar: too old, skipped by a jump, bad time, or too far ahead
    )


class _Bars:
    """The writer's state for one buffer."""

    def __init__(self, period: float, shm: ShmArray) -> None:
        self.p = period
        self.tenths = round(period * 10)
        # where the bars lie (the token's origin and stamp): bar_of for
        # trades, row_bar/row_time for the rows' times
        self.grid = g = Grid.of(period, shm.token)
        self.bar_of, self.row_bar, self.row_time, self.start = (
            g.bar_of,
            g.row_bar,
            g.row_time,
            g.start,
        )
        self.shm = shm
        self.rows = shm.rows  # fetched once: the hot path indexes them
        self.win = shm.window
        self.times = self.rows['time']  # a view: no copy
        self.origin: int | None = None  # bar number of the first live row
        self.skip_to: int | None = None  # trades of bars before it are not written
        self.traded: set[int] = set()  # bars that got a trade
        self.seen = 0  # window end the writer has settled up to
        self.last_k = 0  # bar number of the last row (when seen > 0)
        self.held: list[Trade] = []
        self.held_k = 0  # the earliest bar a held trade is for
        self.dirty: list[int] | None = None  # [lo, hi) rows changed after they closed
        # composite bars (see the module docstring): the source buffer and
        # how many of its bars make one of ours; a source lists its targets
        self.src: _Bars | None = None
        self.ratio = 0
        self.shift = 0  # source bar of our bar 0 (origins may differ)
        self.targets: list[_Bars] = []
        # the aggregate of the source's traded bars [base_k * ratio,
        # base_upto) of our open bar base_k (None: none traded)
        self.base: list | None = None
        self.base_k: int | None = None
        self.base_upto = 0
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
        """The row of bar ``k`` (``last_k - k`` rows back when no jump lies
        between), or -1 when no row has that bar (skipped by a jump)."""
        times = self.times
        want = self.row_time(k)
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
    """Writes one topic's clearing ticks into the bars of each of its
    buffers (one per period), by the rule in the module docstring."""

    def __init__(
        self,
        shms_by_period: dict[float, ShmArray],
        *,
        clearing: Iterable[str] = CLEARING_TICK_TYPES,
        volume: VolumeMode = 'sum',
        wall: Callable[[], float] = time.time,
        max_ahead_s: float = MAX_AHEAD_S,
        max_held: int = MAX_HELD,
        composite: dict[float, float] | None = None,
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
                raise PermissionError(
                    f'shm buffer {shm.name!r} is read-only: the writer needs it writable'
                )
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
        self._link(composite or {})
        #: the buffers trades go into (the others are built from them)
        self._direct = [b for b in self._bufs if b.src is None]
        self._cum: float | None = None  # the running total, volume='cumulative'
        for b in self._bufs:  # the open bar now is the first live one
            self._settle(b)
        self.trades = 0
        #: correction broadcasts samplerd refused (see broadcast_corrections)
        self.corrections_lost = 0
        #: clearing ticks whose time is not a finite number (in no bar)
        self.bad_times = 0
        #: called (no arguments) after every write that had trades: the feed
        #: daemon then knows this writer has work at the next step (see
        #: :meth:`needs_step`) and settles only writers with work
        self.on_trades: Callable[[], None] | None = None

    # --- the hot path ------------------------------------------------------

    def write(
        self, ticks: Iterable[dict[str, Any]] | None, now: float | None = None
    ) -> int:
        """Fold the clearing ticks among ``ticks`` into the buffers; returns
        how many there were."""
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
                for b in self._direct:
                    b.stats.unplaced += 1
                continue
            trades.append((t, tick['price'], size))
        self.trades += len(trades)
        if trades:
            for b in self._direct:
                self._apply(b, trades)
            if self.on_trades is not None:
                self.on_trades()
        return len(trades)

    def _link(self, composite: dict[float, float]) -> None:
        """Tie each composite buffer to its source (checked: both are the
        writer's, the period a whole multiple of the source's, the source
        built from trades)."""
        if not isinstance(composite, dict):
            raise ValueError(
                f'composite={composite!r} must map periods to source periods'
            )
        by_p = {b.p: b for b in self._bufs}
        for q, p in composite.items():
            q, p = check_period(q), check_period(p)
            for what, per in (('composite', q), ('source', p)):
                if per not in by_p:
                    raise ValueError(
                        f'composite {q:g} s from {p:g} s: no {what} buffer of {per:g} s'
                    )
            c, s = by_p[q], by_p[p]
            if c.tenths <= s.tenths or c.tenths % s.tenths:
                raise ValueError(
                    f'composite {q:g} s from {p:g} s: the period must be a whole multiple '
                    'of the source period, and longer'
                )
            if p in composite:
                raise ValueError(
                    f'composite {q:g} s from {p:g} s: the source is itself composite'
                )
            if (c.grid.origin - s.grid.origin) % s.tenths:
                raise ValueError(
                    f'composite {q:g} s from {p:g} s: its bars must start on source bar '
                    f'boundaries (origins {c.grid.origin / 10:g} s and {s.grid.origin / 10:g} s)'
                )
            c.src, c.ratio = s, c.tenths // s.tenths
            # composite bar 0 starts at source bar `shift`
            c.shift = (c.grid.origin - s.grid.origin) // s.tenths
            s.targets.append(c)

    def _settle(self, b: _Bars) -> tuple[int, int] | None:
        """Catch up with rows samplerd appended since the last look: empty
        ones take the close before them (samplerd may have copied it before
        the last trade of that bar was written), then held trades whose bar
        now has a row are placed.  Returns the window, None while empty."""
        first, last = b.win.tolist()
        if last <= first:
            return None
        if b.origin is None or last != b.seen:
            k = b.row_bar(float(b.times[last - 1]))
            start = b.seen
            b.seen, b.last_k = last, k
            b.open_lo, b.open_hi = b.start(k), b.start(k + 1)
            b.horizon = b.open_lo + self.max_ahead_s
            b.open_row = None
            if b.origin is None:
                b.origin = k
                start = last - 1
            else:
                self._carry(b, max(start, first + 1) - 1, last)
            if first != b.first:  # history was prepended (or the first look)
                b.first = first
                b.first_k = self._first_k(b, first)
            if b.src is not None:  # new rows of a composite: from the source's
                for pos in range(max(start, first), last):
                    self._rebuild(b, b.row_bar(float(b.times[pos])), first, last)
        if first != b.first:  # history was prepended (or the first look)
            b.first = first
            b.first_k = self._first_k(b, first)
        if b.last_k < b.first_k:  # the open bar is skipped: no fast path
            b.open_lo = b.open_hi = math.inf
        if b.held and b.held_k <= b.last_k:
            held, b.held = b.held, []
            self._place(b, held, first, last, arrived=False)
        return first, last

    @staticmethod
    def _first_k(b: _Bars, first: int) -> int:
        """The first bar a trade may go into: the first live one, not
        history, nor a skipped partial bar (see :meth:`skip_partial`)."""
        assert b.origin is not None
        k = max(b.origin, b.row_bar(float(b.times[first])))
        return k if b.skip_to is None else max(k, b.skip_to)

    def skip_partial(self, t: float, periods: Iterable[float] | None = None) -> None:
        """From now on write no trade into a bar that started before ``t``
        (in the buffers of ``periods``; every buffer when ``None``), as
        NautilusTrader's ``skip_first_non_full_bar``: the feed started at
        ``t``, so the bar holding it, unless it starts exactly at ``t``,
        would hold only part of its trades.  That bar stays flat at the
        close before it, volume 0 (a composite's, too); its trades are
        counted ``unplaced``."""
        t = float(t)
        want = None if periods is None else {check_period(p) for p in periods}
        for b in self._bufs:
            if want is not None and b.p not in want:
                continue
            k = b.bar_of(t)
            k += b.start(k) != t  # a bar starting at t is whole
            b.skip_to = k if b.skip_to is None else max(b.skip_to, k)
            b.first = -1  # first_k again, at the next settle
            if b.seen:  # the open bar's bounds again (it may be skipped now)
                b.open_lo, b.open_hi = b.start(b.last_k), b.start(b.last_k + 1)
            self._settle(b)

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
            trades = trades[: max(room, 0)]
        if not trades:
            return
        if count:
            b.stats.held += len(trades)
        k = min(b.bar_of(t) for t, _, _ in trades)
        b.held_k = k if not b.held else min(b.held_k, k)
        b.held.extend(trades)

    def _place(
        self, b: _Bars, trades: list[Trade], first: int, last: int, arrived: bool
    ) -> None:
        """Fold ``trades`` (arrival order) into their bars; hold those
        ahead of the last row."""
        last_k, trade_bar = b.last_k, b.bar_of
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
                k = trade_bar(t)
                if k > last_k:
                    if t > horizon:
                        st.unplaced += 1
                    else:
                        ahead.append(trade)
                    continue
                if k < first_k:  # history, or a skipped partial bar
                    st.unplaced += 1
                    continue
                pos = open_pos if k == last_k else -1
            if pos < 0:  # a closed bar
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
        ks = None
        if b.targets and st.placed != placed:  # the source bars that changed
            times = b.times
            ks = {
                last_k if pos == open_pos else b.row_bar(float(times[pos]))
                for pos in mods
            }
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
        if ks:
            for c in b.targets:
                self._propagate(c, ks)

    # --- composite bars -------------------------------------------------------

    def _propagate(self, c: _Bars, ks: set[int]) -> None:
        """Source bars ``ks`` changed: rebuild the bars of composite ``c``
        that hold them (bars it has no row for yet are built when their
        row appears, in :meth:`_settle`)."""
        win = self._settle(c)
        if win is None:
            return
        s, r = c.src, c.ratio
        assert s is not None
        d = c.shift
        for kc in sorted({(k - d) // r for k in ks}):
            if kc == c.base_k and any(k < s.last_k and (k - d) // r == kc for k in ks):
                c.base_k = None  # a closed source bar of the open one changed
            self._rebuild(c, kc, *win)

    def _agg(self, s: _Bars, k_lo: int, k_hi: int, into: list | None) -> list | None:
        """Fold the traded source bars ``[k_lo, k_hi)`` (time order) into
        ``into`` (``[open, high, low, close, volume]`` or None)."""
        if k_hi <= k_lo or s.seen <= s.first:
            return into
        first, last = s.first, s.seen
        times = s.times[first:last]
        lo = first + int(times.searchsorted(s.row_time(k_lo)))
        hi = first + int(times.searchsorted(s.row_time(k_hi)))
        if lo >= hi:
            return into
        _, i_open, i_high, i_low, i_close, i_vol = self._idx
        traded, row_bar = s.traded, s.row_bar
        for pos in range(lo, hi):
            row = s.rows[pos].item()
            if row_bar(row[self._idx[0]]) not in traded:
                continue
            into = self._fold(
                into, row[i_open], row[i_high], row[i_low], row[i_close], row[i_vol]
            )
        return into

    @staticmethod
    def _fold(
        into: list | None, o: float, h: float, lo: float, c: float, v: float
    ) -> list:
        if into is None:
            return [o, h, lo, c, v]
        if h > into[1]:
            into[1] = h
        if lo < into[2]:
            into[2] = lo
        into[3] = c
        into[4] += v
        return into

    def _rebuild(self, c: _Bars, kc: int, first: int, last: int) -> None:
        """Composite bar ``kc``: the aggregate of its traded source bars.
        Its open bar adds the source's open bar to the cached aggregate of
        the closed ones; a closed bar is aggregated afresh (a correction)."""
        if kc > c.last_k or kc < c.first_k:
            return  # no row yet (built when it appears), or history
        s, r = c.src, c.ratio
        assert s is not None
        k_lo, k_hi = kc * r + c.shift, (kc + 1) * r + c.shift
        open_pos = last - 1
        if kc == c.last_k:
            pos = open_pos
            upto = max(k_lo, min(s.last_k, k_hi))  # the source's closed bars end here
            if c.base_k != kc or c.base_upto > upto:
                c.base = self._agg(s, k_lo, upto, None)
                c.base_k, c.base_upto = kc, upto
            elif c.base_upto < upto:
                c.base = self._agg(s, c.base_upto, upto, c.base)
                c.base_upto = upto
            agg = None if c.base is None else list(c.base)
            if k_lo <= s.last_k < k_hi and s.last_k in s.traded and s.seen > s.first:
                _, i_open, i_high, i_low, i_close, i_vol = self._idx
                srow = (
                    s.open_row if s.open_row is not None else s.rows[s.seen - 1].item()
                )
                agg = self._fold(
                    agg,
                    srow[i_open],
                    srow[i_high],
                    srow[i_low],
                    srow[i_close],
                    srow[i_vol],
                )
        else:
            pos = c.find(kc, first, last)
            if pos < 0:
                return  # skipped by a jump
            agg = self._agg(s, k_lo, k_hi, None)
        if agg is None:
            return  # no trade yet: flat at the close before it
        _, i_open, i_high, i_low, i_close, i_vol = self._idx
        row = (
            c.open_row
            if pos == open_pos and c.open_row is not None
            else list(c.rows[pos].item())
        )
        new = (agg[0], agg[1], agg[2], agg[3], agg[4])
        if (
            kc in c.traded
            and (row[i_open], row[i_high], row[i_low], row[i_close], row[i_vol]) == new
        ):
            return
        c.traded.add(kc)
        row[i_open], row[i_high], row[i_low], row[i_close], row[i_vol] = new
        c.rows[pos] = tuple(row)
        if pos == open_pos:
            c.open_row = row
        else:
            c.stats.corrected += 1
            self._dirty(c, pos, pos + 1)
            self._carry(c, pos, last)

    def _carry(self, b: _Bars, pos: int, last: int) -> None:
        """Rows after ``pos`` up to the next traded one (or the end) that
        got no trade take the close before them."""
        rows, row_bar, traded = b.rows, b.row_bar, b.traded
        i_time, i_open, i_high, i_low, i_close, i_vol = self._idx
        close = rows[pos]['close']
        open_pos = last - 1
        if pos + 1 < last:
            b.open_row = None  # the open row may change here
        for q in range(pos + 1, last):
            row = list(rows[q].item())
            if row_bar(row[i_time]) in traded:
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
        """samplerd appended rows to ``period_s``'s buffer (every buffer
        when ``None``): settle them (see :meth:`_settle`)."""
        p = None if period_s is None else check_period(period_s)
        for b in self._bufs:
            if p is None or b.p == p:
                self._settle(b)

    def needs_step(self, period_s: float) -> bool:
        """Whether :meth:`on_step` of ``period_s`` still has work after it
        ran: trades held for bars not open yet, or corrections not taken.
        A writer that got no trade since its last ``on_step`` and needs none
        may skip steps: the rows samplerd appends are already right (flat
        at a close nobody changed), and the next write settles them first."""
        p = check_period(period_s)
        return any((b.held or b.dirty is not None) for b in self._bufs if b.p == p)

    @property
    def has_corrections(self) -> bool:
        return any(b.dirty is not None for b in self._bufs)

    def take_corrections(self) -> list[tuple[float, int, int]]:
        """``(period, start_index, end_index)`` (end exclusive, the rows'
        ``index`` field) of the closed rows changed since the last call."""
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
        """Trades held for bars samplerd has not opened yet."""
        return sum(len(b.held) for b in self._bufs)

    @property
    def late_trades(self) -> int:
        return sum(b.stats.late for b in self._bufs)

    @property
    def unplaced_trades(self) -> int:
        return sum(b.stats.unplaced for b in self._bufs)

    def stats(self) -> dict[str, Any]:
        """The counters: totals over the buffers and ``by_period``."""
        by = {
            repr(b.p): {
                **asdict(b.stats),
                'pending': len(b.held),
                **({'from': b.src.p} if b.src else {}),
            }
            for b in self._bufs
        }
        tot = {
            k: sum(v[k] for v in by.values())
            for k in ('placed', 'late', 'held', 'corrected', 'unplaced', 'pending')
        }
        return {
            'trades': self.trades,
            'volume': self.volume,
            **tot,
            'bad_times': self.bad_times,
            'corrections_lost': self.corrections_lost,
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
    """The feed daemon's loop: for every ``{topic: quote}`` from the
    backend, fold its clearing ticks into the topic's bars, then publish the
    quote on the feed bus (throttled subscribers get it through their
    throttler).  A quote is a dict of fields with an optional ``'ticks'``
    list."""
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
    """Tell every subscriber, through a sample stream (from
    :func:`open_sample_stream`), which closed rows of ``topic``'s buffers
    the writer corrected since the last call: a
    :class:`~tractor_sampler.Backfill` with ``reason='correction'`` per
    buffer, so views redraw those rows.  The feed daemon calls it after
    each step it folds in.  Returns how many it sent; a refusal from
    samplerd is logged (the rows stay corrected, only the redraw is lost)."""
    from ._client import SamplerError
    from ._msgs import Backfill

    sent = 0
    for p, start, end in writer.take_corrections():
        try:
            await stream.broadcast(
                Backfill(
                    topic=topic,
                    timeframe=p,
                    start_index=start,
                    end_index=end,
                    reason='correction',
                )
            )
        except SamplerError as err:
            writer.corrections_lost += 1
            log.warning(
                f'{topic}: corrected {p:g} s rows [{start}, {end}) not broadcast: {err}'
            )
            continue
        sent += 1
    return sent
