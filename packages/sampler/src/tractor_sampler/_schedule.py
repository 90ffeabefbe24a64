'''
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

'''
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
    '''``period_s`` as a float, or a ``ValueError`` saying what is wrong.'''
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


def bar_time(tenths: int, k: int) -> float:
    '''Bar ``k``'s time for a period of ``tenths`` tenths of a second: the
    float nearest ``k * tenths / 10`` (what samplerd writes).'''
    return k * tenths / 10


def bar_of(t: float, tenths: int) -> int:
    '''The bar number ``k`` with ``bar_time(k) <= t < bar_time(k + 1)``
    (``t`` finite).'''
    k = math.floor(t * 10 / tenths)
    if k * tenths / 10 > t:
        k -= 1
    elif (k + 1) * tenths / 10 <= t:
        k += 1
    return k


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
    '''The deadlines of every registered period; one :meth:`run` task steps
    them all.'''

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
        self._next: dict[float, int] = {}  # period -> index k of its next step
        self._changed = trio.Event()
        self.max_catchup = max_catchup
        self.keep_lateness = keep_lateness
        if not 0 <= spin_s < 0.1:
            raise ValueError(f'spin_s={spin_s!r} must be from 0 to 0.1 s')
        self.spin_s = spin_s
        self.stats = StepStats()

    @property
    def periods(self) -> list[float]:
        return sorted(self._next)

    def _sync(self) -> float:
        if self._offset is None:
            self._offset = self._wall() - trio.current_time()
        return self._offset

    def reanchor(self) -> float:
        '''Map trio's clock onto the wall clock afresh; a change larger than
        :data:`CLOCK_JUMP_S` is counted as a jump.  Returns the change.'''
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
    def step_time(period: float, k: int) -> float:
        '''Wall time of step ``k``: computed in tenths of a second, so a
        0.2 s period's steps are 0.2, 0.4, 0.6 (not 0.6000000000000001).'''
        return bar_time(round(period * 10), k)

    def deadline(self, period: float, k: int) -> float:
        '''trio time of step ``k`` of ``period``.'''
        return self.step_time(period, k) - self._sync()

    def add(self, period_s: float) -> float:
        '''Start stepping ``period_s`` from its next wall-clock boundary.'''
        p = check_period(period_s)
        if p not in self._next:
            self._next[p] = bar_of(self.wall_now(), round(p * 10)) + 1
            self._changed.set()
        return p

    def remove(self, period_s: float) -> None:
        self._next.pop(check_period(period_s), None)
        self._changed.set()

    def next_step(self, period_s: float) -> tuple[int, float]:
        '''(index, wall time) of ``period_s``'s next step.'''
        p = check_period(period_s)
        k = self._next[p]
        return k, self.step_time(p, k)

    async def run(
        self,
        on_step: OnStep,
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        '''Forever: sleep until the earliest deadline, then call
        ``on_step(period, step_wall_time)`` for every step due, shorter
        periods first, missed ones caught up in order.'''
        task_status.started()
        while True:
            self._changed = trio.Event()
            if not self._next:
                await self._changed.wait()
                continue
            self.reanchor()  # every wake-up: a suspend or a clock step shows here
            due_at = min(self.deadline(p, k) for p, k in self._next.items())
            now = trio.current_time()
            if now < due_at - self.spin_s:
                # sleep until the deadline (or the next clock check), or
                # until the set of periods changes: then recompute
                with trio.move_on_at(min(due_at - self.spin_s, now + self.clock_check_s)):
                    await self._changed.wait()
                continue
            # timers wake ~1 ms late on an idle machine: with spin_s, wake
            # that much early and yield to other tasks until the deadline
            while trio.current_time() < due_at:
                await trio.lowlevel.checkpoint()
            await self._step_due(on_step)

    async def _step_due(self, on_step: OnStep) -> None:
        now = trio.current_time()
        for p in sorted(self._next):
            k = self._next.get(p)
            if k is None or self.deadline(p, k) > now:
                continue
            last = bar_of(now + self._sync(), round(p * 10))
            missed = last - k  # steps beyond the first that are also due
            if missed > self.max_catchup:
                self.stats.skipped += missed - self.max_catchup
                k = last - self.max_catchup
            for i, kk in enumerate(range(k, last + 1)):
                lateness = trio.current_time() - self.deadline(p, kk)
                self._record(lateness, caught_up=i > 0)
                self._next[p] = kk + 1
                await on_step(p, self.step_time(p, kk))
                if p not in self._next:  # removed by on_step
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
