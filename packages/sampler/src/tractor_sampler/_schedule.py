"""
When steps happen: absolute deadlines aligned to each period's wall-clock
boundaries, from trio's clock.

Step ``k`` of a period ``p`` is due at wall-clock time ``k * p`` (so a 60 s
bar starts on the minute, a 1 s bar on the second).  Wall-clock time is
read once, to map it onto trio's clock; every deadline is then computed
from ``k`` (never by adding sleeps), so steps cannot drift, and the mock
clock drives the whole schedule in tests.

Late steps: a step taken after its deadline is simply late (its lateness
is recorded).  When the loop was stalled past one or more later
deadlines, the missed steps are caught up at once, in order, each with
its own step time (its boundary), so there is one row per boundary; when
more than ``max_catchup`` steps of one period were missed, the older ones
are skipped (counted in ``stats.skipped``): stepping jumps to the newest
``max_catchup`` + 1 boundaries, up to the current one, and the first row
after the jump marks the gap (see ``StepPlan.step`` and ``Step.gap``).

Clock jumps: trio's clock does not count time the machine was suspended,
and NTP (or a person) can step the wall clock.  So the mapping of trio's
clock onto the wall clock is not taken once: it is read again whenever the
loop wakes, which is at least every ``clock_check_s`` (1 s).  A change of
more than ``CLOCK_JUMP_S`` (10 ms; NTP slews far slower) is a jump,
counted in ``stats.clock_jumps`` (the largest in ``max_clock_jump_s``).
It is handled by the same rule as a stall: a forward jump (or a suspend)
makes the boundaries passed meanwhile due, caught up or skipped as above;
after a backward jump the next step waits for its boundary on the new
wall clock (rows never go back in time).  Smaller changes (slewing) are
absorbed silently.

Timer wake-ups: an event loop's timer fires up to a millisecond or two
late when the process was idle.  With ``spin_s`` (samplerd uses 2 ms) the
loop wakes that much before each deadline and yields to other tasks
until it has passed, which keeps steps within microseconds of their
boundaries for at most ``spin_s`` of CPU per step.

Periods: any multiple of 0.1 s from ``MIN_PERIOD_S`` (0.1 s) to
``MAX_PERIOD_S`` (one day).

"""

from __future__ import annotations

import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import trio

#: the default sampling period (seconds)
_default_delay_s: float = 1.0
MIN_PERIOD_S: float = 0.1
MAX_PERIOD_S: float = 86400.0
#: missed steps of one period caught up at once before older ones are skipped
MAX_CATCHUP: int = 1000
#: a change of the wall clock against trio's clock larger than this is a jump
CLOCK_JUMP_S: float = 0.010
#: the loop re-reads the wall clock at least this often
CLOCK_CHECK_S: float = 1.0


def check_period(period_s: object) -> float:
    """``period_s`` as a float, or a ``ValueError`` saying what is wrong."""
    if isinstance(period_s, bool) or not isinstance(period_s, (int, float)):
        raise ValueError(f'period {period_s!r} is not a number of seconds')
    p = float(period_s)
    if math.isnan(p) or p <= 0:
        raise ValueError(f'period {period_s!r} must be a positive number of seconds')
    if not MIN_PERIOD_S <= p <= MAX_PERIOD_S:
        raise ValueError(
            f'period {period_s!r} is out of range: periods run from '
            f'{MIN_PERIOD_S} s to {MAX_PERIOD_S:.0f} s'
        )
    tenths = round(p * 10)
    if abs(tenths - p * 10) > 1e-6:
        raise ValueError(f'period {period_s!r} is not a multiple of {MIN_PERIOD_S} s')
    return tenths / 10


def bar_time(tenths: int, k: int, origin: int = 0) -> float:
    """Bar ``k``'s start for a period of ``tenths`` tenths of a second
    whose boundaries lie ``origin`` tenths past its multiples: the float
    nearest ``(k * tenths + origin) / 10`` (what samplerd writes)."""
    return (k * tenths + origin) / 10


def bar_of(t: float, tenths: int, origin: int = 0) -> int:
    """The bar number ``k`` with ``bar_time(k) <= t < bar_time(k + 1)``
    (``t`` finite)."""
    k = math.floor((t * 10 - origin) / tenths)
    if (k * tenths + origin) / 10 > t:
        k -= 1
    elif ((k + 1) * tenths + origin) / 10 <= t:
        k += 1
    return k


STAMPS = ('open', 'close')


def check_origin(origin_s: object) -> float:
    """``origin_s`` (seconds past each period's multiples where its bars
    start) as a float, or a ``ValueError`` saying what is wrong."""
    if isinstance(origin_s, bool) or not isinstance(origin_s, (int, float)):
        raise ValueError(f'origin {origin_s!r} is not a number of seconds')
    o = float(origin_s)
    if not (math.isfinite(o) and 0 <= o < MAX_PERIOD_S):
        raise ValueError(
            f'origin {origin_s!r} must be from 0 to {MAX_PERIOD_S:.0f} s (excluded)'
        )
    tenths = round(o * 10)
    if abs(tenths - o * 10) > 1e-6:
        raise ValueError(f'origin {origin_s!r} is not a multiple of {MIN_PERIOD_S} s')
    return tenths / 10


def check_stamp(stamp: object) -> str:
    """``'open'`` or ``'close'``, or a ``ValueError``."""
    if stamp not in STAMPS:
        raise ValueError(
            f"stamp {stamp!r} must be 'open' (a row's time is its bar's start) or 'close' (its end)"
        )
    return stamp  # type: ignore[return-value]


class Grid:
    """Where one buffer's bars lie: period ``tenths``, boundaries at
    ``origin + k * period`` (``origin`` in tenths, reduced below the
    period), rows stamped with their bar's start (``'open'``) or end
    (``'close'``).  Bar ``k`` spans ``[start(k), start(k + 1))``; its row's
    time is ``row_time(k)``."""

    __slots__ = ('tenths', 'origin', 'close', 'p')

    def __init__(
        self, period_s: float, origin_s: float = 0.0, stamp: str = 'open'
    ) -> None:
        self.p = check_period(period_s)
        self.tenths = round(self.p * 10)
        self.origin = round(check_origin(origin_s) * 10) % self.tenths
        self.close = int(check_stamp(stamp) == 'close')

    @classmethod
    def of(cls, period_s: float, token: object) -> Grid:
        """The grid of a buffer of ``period_s`` from its token's
        ``origin`` and ``stamp`` (defaults for objects without them)."""
        return cls(
            period_s, getattr(token, 'origin', 0.0), getattr(token, 'stamp', 'open')
        )

    def start(self, k: int) -> float:
        return (k * self.tenths + self.origin) / 10

    def bar_of(self, t: float) -> int:
        """The bar a trade at ``t`` is in."""
        return bar_of(t, self.tenths, self.origin)

    def row_time(self, k: int) -> float:
        return ((k + self.close) * self.tenths + self.origin) / 10

    def row_bar(self, t: float) -> int:
        """The bar of the row whose time is ``t`` (on the grid)."""
        return bar_of(t, self.tenths, self.origin) - self.close


@dataclass
class StepStats:
    steps: int = 0
    late: int = 0  # steps taken more than 1 ms after their deadline
    caught_up: int = 0  # steps taken at once after a stall
    skipped: int = 0  # missed steps dropped beyond MAX_CATCHUP
    max_lateness_s: float = 0.0
    lateness_s: list[float] = field(default_factory=list)  # recent, for benchmarks
    clock_jumps: int = 0  # wall-clock jumps against trio's clock (> CLOCK_JUMP_S)
    max_clock_jump_s: float = 0.0  # the largest, signed


OnStep = Callable[[float, float], Awaitable[None]]


class Schedule:
    """The deadlines of every registered period; one :meth:`run` task steps
    them all."""

    def __init__(
        self,
        wall: Callable[[], float] = time.time,
        *,
        max_catchup: int = MAX_CATCHUP,
        keep_lateness: int = 0,
        spin_s: float = 0.0,
        clock_check_s: float = CLOCK_CHECK_S,
    ) -> None:
        self._wall = wall
        self.clock_check_s = clock_check_s
        self._offset: float | None = None  # wall - trio
        # (period, origin in tenths) -> index k of its next step: a period
        # has one lane per origin its buffers use (see Grid)
        self._next: dict[tuple[float, int], int] = {}
        self._changed = trio.Event()
        self.max_catchup = max_catchup
        self.keep_lateness = keep_lateness
        if not 0 <= spin_s < 0.1:
            raise ValueError(f'spin_s={spin_s!r} must be from 0 to 0.1 s')
        self.spin_s = spin_s
        self.stats = StepStats()

    @property
    def periods(self) -> list[float]:
        return sorted({p for p, _ in self._next})

    @property
    def lanes(self) -> list[tuple[float, float]]:
        """``(period, origin)`` of every lane stepped."""
        return sorted((p, o / 10) for p, o in self._next)

    @staticmethod
    def _lane(period_s: float, origin_s: float = 0.0) -> tuple[float, int]:
        g = Grid(period_s, origin_s)
        return g.p, g.origin

    def _sync(self) -> float:
        if self._offset is None:
            self._offset = self._wall() - trio.current_time()
        return self._offset

    def reanchor(self) -> float:
        """Map trio's clock onto the wall clock afresh; a change larger than
        :data:`CLOCK_JUMP_S` is counted as a jump.  Returns the change."""
        offset = self._wall() - trio.current_time()
        old = self._offset
        self._offset = offset
        if old is None:
            return 0.0
        delta = offset - old
        if abs(delta) > CLOCK_JUMP_S:
            self.stats.clock_jumps += 1
            if abs(delta) > abs(self.stats.max_clock_jump_s):
                self.stats.max_clock_jump_s = delta
        return delta

    def wall_now(self) -> float:
        return trio.current_time() + self._sync()

    @staticmethod
    def step_time(period: float, k: int, origin: int = 0) -> float:
        """Wall time of step ``k`` (of the lane ``origin`` tenths past the
        period's multiples): computed in tenths of a second, so a 0.2 s
        period's steps are 0.2, 0.4, 0.6 (not 0.6000000000000001)."""
        return bar_time(round(period * 10), k, origin)

    def deadline(self, period: float, k: int, origin: int = 0) -> float:
        """trio time of step ``k`` of ``period`` (lane ``origin``, tenths)."""
        return self.step_time(period, k, origin) - self._sync()

    def add(self, period_s: float, origin_s: float = 0.0) -> float:
        """Start stepping ``period_s`` on the boundaries ``origin_s`` past
        its multiples (a lane), from the next one."""
        lane = self._lane(period_s, origin_s)
        if lane not in self._next:
            p, o = lane
            self._next[lane] = bar_of(self.wall_now(), round(p * 10), o) + 1
            self._changed.set()
        return lane[0]

    def remove(self, period_s: float, origin_s: float | None = None) -> None:
        """Stop stepping a lane of ``period_s`` (every lane when
        ``origin_s`` is None)."""
        if origin_s is None:
            p = check_period(period_s)
            for lane in [lane for lane in self._next if lane[0] == p]:
                del self._next[lane]
        else:
            self._next.pop(self._lane(period_s, origin_s), None)
        self._changed.set()

    def next_step(self, period_s: float, origin_s: float = 0.0) -> tuple[int, float]:
        """(index, wall time) of ``period_s``'s next step (on the lane
        ``origin_s``)."""
        p, o = lane = self._lane(period_s, origin_s)
        k = self._next[lane]
        return k, self.step_time(p, k, o)

    async def run(
        self,
        on_step: OnStep,
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Forever: sleep until the earliest deadline, then call
        ``on_step(period, step_wall_time)`` for every step due, shorter
        periods first, missed ones caught up in order."""
        task_status.started()
        while True:
            self._changed = trio.Event()
            if not self._next:
                await self._changed.wait()
                continue
            self.reanchor()  # every wake-up: a suspend or a clock step shows here
            due_at = min(self.deadline(p, k, o) for (p, o), k in self._next.items())
            now = trio.current_time()
            if now < due_at - self.spin_s:
                # sleep until the deadline (or the next clock check), or
                # until the set of periods changes: then recompute
                with trio.move_on_at(
                    min(due_at - self.spin_s, now + self.clock_check_s)
                ):
                    await self._changed.wait()
                continue
            # timers wake ~1 ms late on an idle machine: with spin_s, wake
            # that much early and yield to other tasks until the deadline
            while trio.current_time() < due_at:
                await trio.lowlevel.checkpoint()
            await self._step_due(on_step)

    async def _step_due(self, on_step: OnStep) -> None:
        now = trio.current_time()
        for lane in sorted(self._next):
            p, o = lane
            k = self._next.get(lane)
            if k is None or self.deadline(p, k, o) > now:
                continue
            last = bar_of(now + self._sync(), round(p * 10), o)
            missed = last - k  # steps beyond the first that are also due
            if missed > self.max_catchup:
                self.stats.skipped += missed - self.max_catchup
                k = last - self.max_catchup
            for i, kk in enumerate(range(k, last + 1)):
                lateness = trio.current_time() - self.deadline(p, kk, o)
                self._record(lateness, caught_up=i > 0)
                self._next[lane] = kk + 1
                await on_step(p, self.step_time(p, kk, o))
                if lane not in self._next:  # removed by on_step
                    break

    def _record(self, lateness: float, caught_up: bool) -> None:
        s = self.stats
        s.steps += 1
        if caught_up:
            s.caught_up += 1
        if lateness > 1e-3:
            s.late += 1
        s.max_lateness_s = max(s.max_lateness_s, lateness)
        if self.keep_lateness:
            s.lateness_s.append(lateness)
            if len(s.lateness_s) > self.keep_lateness:
                del s.lateness_s[0]
