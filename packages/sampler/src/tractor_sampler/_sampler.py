"""
The ``Sampler``: samplerd's singleton.  It holds the buffers registered
per period, steps them all from one incrementer task it owns, and
broadcasts each step to the subscribers of that period.

"""

from __future__ import annotations

import bisect
import os
import time
from collections import Counter, defaultdict
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager as acm
from dataclasses import dataclass
from typing import Any

import msgspec
import trio

from feedbus import FeedsBus, open_sub
from tractor_services import PeerDisconnected, compat
from tractor_services._heartbeat import check_heartbeat

from ._errors import AlreadyRunning, NoSampler
from ._info import SamplerInfo, to_wire
from ._msgs import (
    NO_INDEX,
    Ack,
    AddBuffersReq,
    Backfill,
    Error,
    Info,
    RemoveBuffersReq,
    Step,
    decode_request,
)
from ._schedule import Grid, Schedule, check_period
from .shm import (
    ShmArray,
    ShmGroup,
    ShmToken,
    StepPlan,
    attach_shm_array,
    attach_shm_group,
)

log = compat.get_logger('sampler', 'tractor_sampler')


#: samplerd wakes this much before each step and yields until it is due
SPIN_S: float = 0.002
#: a newly registered buffer at most this many bars behind the open bar is
#: brought up to it (see Sampler._align); further behind is left alone
MAX_ALIGN_ROWS: int = 3
#: upper bounds (seconds) of the buckets samplerd counts its steps'
#: lateness in (``SamplerInfo.lateness_buckets``: one count per bound, then
#: one for the steps later than the last), read by the Prometheus
#: histogram ``samplerd_step_lateness_seconds`` (docs/metrics.md)
LATENESS_BOUNDS_S: tuple[float, ...] = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)  # fmt: skip


def period_topic(period_s: float) -> str:
    return f'period:{check_period(period_s):g}'


class Sampler:
    """Buffers and subscribers per period, one incrementer.

    Get the running one with :func:`get_sampler` (inside samplerd)."""

    def __init__(
        self,
        wall: Callable[[], float] = time.time,
        keep_lateness: int = 0,
        spin_s: float = SPIN_S,
    ):
        self.schedule = Schedule(wall=wall, keep_lateness=keep_lateness, spin_s=spin_s)
        self.bus = FeedsBus()
        # period -> {shm name + member -> buffer}, with a count of registrations
        self._bufs: dict[float, dict[tuple[str, int], ShmArray]] = {}
        self._refs: Counter[tuple[float, str, int]] = Counter()
        self._groups: dict[str, ShmGroup] = {}
        # registered members per group: a group is closed with its last one
        self._group_users: Counter[str] = Counter()
        # per period, its buffers by lane (origin in tenths), worked out on
        # the first step after an add or a remove, not on every step
        self._lanes: dict[float, dict[int, dict[tuple[str, int], ShmArray]]] = {}
        # one plan per lane (period, origin in tenths): a period's buffers
        # whose bars start at other offsets are stepped on their own boundaries
        self._plans: dict[tuple[float, int], StepPlan] = {}
        self._listeners: Counter[float] = Counter()
        self.incrementers = 0  # how many incrementer tasks ever ran (one)
        self.steps: Counter[float] = Counter()
        #: rows appended to align newly registered buffers (see add_buffer)
        self.aligned = 0
        #: buffers no longer stepped because they filled up (or were closed),
        #: per period; they leave with their registration
        self._set_aside: defaultdict[float, dict[tuple[str, int], ShmArray]] = (
            defaultdict(dict)
        )
        self.set_aside = 0
        #: per period: steps whose rows jumped over boundaries after a long
        #: stall or clock jump (the row marks the gap: ``Step.gap``), and the
        #: boundaries jumped over in all
        self.gaps: Counter[float] = Counter()
        self.gap_bars: Counter[float] = Counter()
        #: rows not appended because a buffer was already at the step's time
        self.waited = 0
        #: steps per lateness bucket (LATENESS_BOUNDS_S, then the rest) and
        #: the sum of their lateness: the step lateness histogram
        self.lateness_buckets = [0] * (len(LATENESS_BOUNDS_S) + 1)
        self.lateness_sum_s = 0.0

    # --- registration -------------------------------------------------------

    @property
    def periods(self) -> list[float]:
        return self.schedule.periods

    def buffers(self, period_s: float) -> list[ShmArray]:
        return list(self._bufs.get(check_period(period_s), {}).values())

    def _attach(self, token: ShmToken) -> ShmArray:
        if token.members > 1:
            group = self._groups.get(token.shm_name)
            if group is None:
                group = self._groups[token.shm_name] = attach_shm_group(
                    token, readonly=False
                )
            return group[token.member]
        return attach_shm_array(token, readonly=False)

    def add_buffer(
        self, period_s: float, token: ShmToken | dict
    ) -> tuple[float, str, int]:
        """Step this buffer every ``period_s`` (attaching it writable); a
        buffer registered twice is stepped once.  Returns its key."""
        p = check_period(period_s)
        token = ShmToken.from_msg(token)
        key = (p, token.shm_name, token.member)
        bufs = self._bufs.setdefault(p, {})
        self.schedule.add(p, token.origin)
        if (token.shm_name, token.member) not in bufs:
            old = self._set_aside.get(p, {}).pop((token.shm_name, token.member), None)
            if old is not None and token.shm_name not in self._groups:
                old.close()  # set aside earlier: a fresh attachment replaces it
            shm = bufs[(token.shm_name, token.member)] = self._attach(token)
            self._drop_plans(p)
            self._align(shm, p)
        if not self._refs[key] and token.members > 1:
            self._group_users[token.shm_name] += 1
        self._refs[key] += 1
        return key

    def add_buffers(
        self, regs: list[tuple[float, ShmToken]]
    ) -> list[tuple[float, str, int]]:
        """:meth:`add_buffer` for each, all or none: when one fails (its
        token does not attach) the ones added before it are removed and the
        error raised."""
        keys: list[tuple[float, str, int]] = []
        try:
            for p, token in regs:
                keys.append(self.add_buffer(p, token))
        except BaseException:
            self.remove_buffers(keys)
            raise
        return keys

    def remove_buffers(self, keys: list[tuple[float, str, int]]) -> None:
        """:meth:`remove_buffer` for each; the periods' lanes are worked
        out once for all of them."""
        periods = set()
        for key in keys:
            self.remove_buffer(key, tidy=False)
            periods.add(key[0])
        for p in periods:
            self._maybe_drop_period(p)

    def _align(self, shm: ShmArray, p: float) -> int:
        """Bring a newly registered buffer up to the open bar: a buffer
        whose last row is up to :data:`MAX_ALIGN_ROWS` periods older than
        the bar the next step closes (its owner filled it just before a
        boundary passed) gets the missing rows now, as steps would have made
        them, so every later step lands on the right boundary.  Returns how
        many rows it appended."""
        if not len(shm) or 'time' not in (shm.dtype.names or ()):
            return 0
        grid = Grid.of(p, shm.token)
        _, next_t = self.schedule.next_step(p, shm.token.origin)
        last_t = grid.start(grid.row_bar(float(shm.last_row['time'])))
        missing = round((next_t - p - last_t) / p)
        if missing <= 0:
            return 0
        if missing > MAX_ALIGN_ROWS:
            log.warning(
                f'{shm.name}: its last bar is {missing} periods of {p} s behind the '
                'open bar: not aligned (its next row jumps to the boundary, a gap)'
            )
            return 0
        free = shm.size - shm.last
        n = min(missing, free)
        if n <= 0:
            return 0
        plan = StepPlan([shm])  # the rows steps would have made
        for _ in range(n):  # n <= MAX_ALIGN_ROWS
            plan.step(p)
        self.aligned += n
        log.info(f'{shm.name}: appended {n} row(s) to reach the open {p} s bar')
        return n

    def remove_buffer(self, key: tuple[float, str, int], tidy: bool = True) -> None:
        self._refs[key] -= 1
        if self._refs[key] > 0:
            return
        del self._refs[key]
        p, name, member = key
        shm = self._bufs.get(p, {}).pop((name, member), None)
        if shm is None:
            shm = self._set_aside.get(p, {}).pop((name, member), None)
        self._drop_plans(p)
        if name in self._groups:
            self._group_users[name] -= 1
            if self._group_users[name] <= 0:
                # its last registered member: unmap it (its owner may have
                # unlinked it already; the memory goes with our mapping)
                del self._group_users[name]
                self._groups.pop(name).close()
        elif shm is not None:
            shm.close()
        if tidy:
            self._maybe_drop_period(p)

    def listen(self, period_s: float) -> float:
        """Keep stepping ``period_s`` while someone subscribes to it, even
        with no buffer (broadcasts then carry ``NO_INDEX``)."""
        p = check_period(period_s)
        self._listeners[p] += 1
        self.schedule.add(p)
        return p

    def unlisten(self, period_s: float) -> None:
        p = check_period(period_s)
        self._listeners[p] -= 1
        self._maybe_drop_period(p)

    def _maybe_drop_period(self, p: float) -> None:
        if not self._bufs.get(p) and self._listeners[p] <= 0:
            self._bufs.pop(p, None)
            self._listeners.pop(p, None)
            self.schedule.remove(p)
            return
        # lanes of the period no buffer (nor, for origin 0, listener) uses
        used = {o for o, bufs in self._lanes_of(p).items() if bufs}
        if self._listeners[p] > 0:
            used.add(0)
        for lp, o in self.schedule.lanes:
            if lp == p and round(o * 10) not in used:
                self.schedule.remove(p, o)

    def _drop_plans(self, p: float) -> None:
        """The period's buffers changed: its step plans and lanes are
        worked out again at its next step."""
        for lane in [lane for lane in self._plans if lane[0] == p]:
            del self._plans[lane]
        self._lanes.pop(p, None)

    def _lanes_of(self, p: float) -> dict[int, dict[tuple[str, int], ShmArray]]:
        """The period's buffers by lane (origin in tenths), cached until
        its buffers change (see :meth:`_drop_plans`)."""
        lanes = self._lanes.get(p)
        if lanes is None:
            lanes = {}
            for key, shm in self._bufs.get(p, {}).items():
                o = Grid.of(p, shm.token).origin
                lanes.setdefault(o, {})[key] = shm
            self._lanes[p] = lanes
        return lanes

    def _lane_bufs(self, p: float, step_time: float) -> dict[tuple[str, int], ShmArray]:
        """The buffers of period ``p`` whose boundaries ``step_time`` is on."""
        if not self._bufs.get(p):
            return {}
        tenths = round(p * 10)
        o = round(step_time * 10) % tenths
        return self._lanes_of(p).get(o, {})

    # --- stepping -----------------------------------------------------------

    async def increment_ohlc_buffer(
        self,
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """The one incrementer: each step appends a row to every buffer of
        the period that is due, then broadcasts the step."""
        self.incrementers += 1
        await self.schedule.run(self._step, task_status=task_status)

    async def _step(self, period_s: float, step_time: float) -> None:
        """Append the row of boundary ``step_time`` to every buffer of the
        period, then broadcast the step (with the gap its rows jumped, if
        any)."""
        self._count_lateness(self.schedule.wall_now() - step_time)
        bufs = self._lane_bufs(period_s, step_time)
        lane = (period_s, round(step_time * 10) % round(period_s * 10))
        gap = 0
        if bufs:
            plan = self._plans.get(lane)
            if plan is None:
                plan = self._plans[lane] = StepPlan(list(bufs.values()))
            try:
                gap = self._step_plan(plan, period_s, step_time)
            except ValueError as err:  # an overrun or a closed buffer
                # step the others: set the culprits aside (they are not
                # stepped again until re-registered) and step once more
                bad = [
                    key
                    for key, shm in bufs.items()
                    if shm.closed or (len(shm) and shm.last >= shm.size)
                ]
                bufs = dict(bufs)  # a copy: the cached lane is dropped below
                for key in bad:
                    log.error(
                        f'shm buffer {key[0]!r} (period {period_s:g} s) is '
                        f'{"closed" if bufs[key].closed else "full"}: no longer stepped ({err})'
                    )
                    self._set_aside[period_s][key] = bufs.pop(key)
                    self._bufs[period_s].pop(key, None)
                    self.set_aside += 1
                if bad:
                    self._drop_plans(period_s)
                self._plans.pop(lane, None)
                if bad and bufs:
                    plan = self._plans[lane] = StepPlan(list(bufs.values()))
                    try:
                        gap = self._step_plan(plan, period_s, step_time)
                    except ValueError as err2:
                        log.error(f'stepping period {period_s} s failed: {err2}')
                elif not bad:
                    log.error(f'stepping period {period_s} s failed: {err}')
        self.steps[period_s] += 1
        self.broadcast(period_s, time_stamp=step_time, gap=gap)

    def _count_lateness(self, lateness_s: float) -> None:
        """One step's lateness (wall time past its boundary) into the
        histogram's buckets."""
        lateness_s = max(0.0, lateness_s)
        self.lateness_buckets[bisect.bisect_left(LATENESS_BOUNDS_S, lateness_s)] += 1
        self.lateness_sum_s += lateness_s

    def _step_plan(self, plan: StepPlan, period_s: float, step_time: float) -> int:
        """One step of ``plan`` at ``step_time``; counts and returns the gap
        (boundaries its rows jumped over)."""
        waited = plan.waited
        plan.step(period_s, step_time)
        self.waited += plan.waited - waited
        gap = plan.last_gap
        if gap:
            self.gaps[period_s] += 1
            self.gap_bars[period_s] += gap
            log.warning(
                f'period {period_s:g} s: rows jumped {gap} boundaries to {step_time} '
                '(a stall or clock jump longer than the catch-up): a gap'
            )
        return gap

    def _index(self, period_s: float, step_time: float | None = None) -> int:
        """The last index of the period's buffers (of the lane
        ``step_time`` is on, when given and a buffer is on it)."""
        bufs = self._lane_bufs(period_s, step_time) if step_time is not None else None
        for shm in (bufs or self._bufs.get(period_s, {})).values():
            if len(shm):
                return int(shm.last_row['index'])
        return NO_INDEX

    def broadcast(
        self,
        period_s: float,
        time_stamp: float | None = None,
        info: dict[str, Any] | None = None,
        gap: int = 0,
    ) -> int:
        """Send a :class:`Step` (the period's latest index and time, plus
        ``info``) to every subscriber of ``period_s``.  Never blocks;
        returns how many subscribers it reached.  Before any buffer of the
        period is registered the index is ``NO_INDEX`` (-1)."""
        p = check_period(period_s)
        msg = Step(
            period_s=p,
            index=self._index(p, time_stamp),
            time=self.schedule.wall_now() if time_stamp is None else time_stamp,
            info=info,
            gap=gap,
        )
        return self.bus.broadcast(period_topic(p), msg)

    def broadcast_all(self, msg: Backfill | Info, period_s: float | None = None) -> int:
        """Send ``msg`` to the subscribers of ``period_s``, or of every
        period (each subscriber once)."""
        if period_s is not None:
            return self.bus.broadcast(period_topic(period_s), msg)
        seen: set = set()
        n = 0
        for _topic, subs in self.bus.subs_items():
            for sub in subs - seen:
                try:
                    sub.send_chan.put(msg)
                    n += 1
                except trio.ClosedResourceError:  # dropped meanwhile
                    self.bus.forget_sub(sub)
            seen |= subs
        return n

    def info(self) -> dict[str, Any]:
        return {
            'pid': os.getpid(),
            'incrementers': self.incrementers,
            'periods': self.periods,
            'buffers': {p: len(b) for p, b in self._bufs.items()},
            'subscribers': {t: len(s) for t, s in self.bus.subs_items()},
            'steps': dict(self.steps),
            'late_steps': self.schedule.stats.late,
            'caught_up': self.schedule.stats.caught_up,
            'skipped': self.schedule.stats.skipped,
            'aligned': self.aligned,
            'set_aside': self.set_aside,
            **self.clock_info(),
        }

    def clock_info(self) -> dict[str, Any]:
        """The stepping counters for stalls and clock jumps (see
        docs/reliability.md, "Bars and clocks")."""
        st = self.schedule.stats
        return {
            'clock_jumps': st.clock_jumps,
            'max_clock_jump_s': st.max_clock_jump_s,
            'gaps': dict(self.gaps),
            'gap_bars': dict(self.gap_bars),
            'waited': self.waited,
            'lateness_bounds_s': list(LATENESS_BOUNDS_S),
            'lateness_buckets': list(self.lateness_buckets),
            'lateness_sum_s': self.lateness_sum_s,
        }


@dataclass
class _Holder:
    sampler: Sampler | None = None


_holder = _Holder()


def get_sampler() -> Sampler:
    """samplerd's :class:`Sampler`; a clear error anywhere else."""
    if _holder.sampler is None:
        raise NoSampler(
            'no Sampler runs in this actor: samplerd hosts it '
            '(start it with spawn_samplerd() or maybe_open_samplerd())'
        )
    return _holder.sampler


@acm
async def open_sampler(**kwargs: Any) -> AsyncIterator[Sampler]:
    """Make this actor's Sampler and run its one incrementer until exit."""
    if _holder.sampler is not None:
        raise AlreadyRunning('a Sampler already runs in this actor')
    sampler = _holder.sampler = Sampler(**kwargs)
    try:
        async with trio.open_nursery() as tn:
            await tn.start(sampler.increment_ohlc_buffer)
            yield sampler
            tn.cancel_scope.cancel()
    finally:
        _holder.sampler = None
        for group in sampler._groups.values():
            group.close()


@compat.context
async def samplerd(
    ctx: compat.Context, keep_lateness: int = 0, spin_s: float = SPIN_S
) -> None:
    """samplerd's root endpoint (supervised by the root's service
    manager): hosts the Sampler and its incrementer."""
    if (
        isinstance(keep_lateness, bool)
        or not isinstance(keep_lateness, int)
        or keep_lateness < 0
    ):
        raise ValueError(f'keep_lateness={keep_lateness!r} must be an int >= 0')
    if (
        isinstance(spin_s, bool)
        or not isinstance(spin_s, (int, float))
        or not 0 <= spin_s <= 0.1
    ):
        raise ValueError(f'spin_s={spin_s!r} must be a number of seconds in [0, 0.1]')
    compat.expose_module(__name__)
    async with open_sampler(keep_lateness=keep_lateness, spin_s=spin_s) as sampler:
        await ctx.started(os.getpid())
        del sampler
        await trio.sleep_forever()


async def sampler_info() -> dict[str, Any]:
    """(samplerd) What runs: incrementer count, periods, buffers,
    subscribers, steps, clock and gap counters: a
    :class:`~tractor_sampler.SamplerInfo` in its IPC form (validated
    against the struct here; ``introspect()`` rebuilds it)."""
    return to_wire(msgspec.convert(get_sampler().info(), SamplerInfo))


def _parse_shms(shms_by_period: Any) -> list[tuple[float, ShmToken]]:
    if shms_by_period is None:
        return []
    if not isinstance(shms_by_period, dict):
        raise ValueError(
            f'shms_by_period must map periods to tokens (or lists of them), not {shms_by_period!r}'
        )
    out = []
    for raw_p, toks in shms_by_period.items():
        try:
            p = check_period(float(raw_p))
        except (TypeError, ValueError) as err:
            raise ValueError(f'shms_by_period: {err}') from None
        for tok in toks if isinstance(toks, list) else [toks]:
            out.append((p, ShmToken.from_msg(tok)))
    return out


def _parse_req(req: AddBuffersReq | RemoveBuffersReq) -> list[tuple[float, ShmToken]]:
    """The tokens of an add or remove request: its ``buffers`` and the
    members of its ``groups``."""
    out = _parse_shms(req.buffers)
    for raw_p, entries in req.groups.items():
        try:
            p = check_period(float(raw_p))
        except (TypeError, ValueError) as err:
            raise ValueError(f'groups: {err}') from None
        for entry in entries:
            base = ShmToken.from_msg(entry.token)
            for m in entry.members:
                if isinstance(m, bool) or not isinstance(m, int):
                    raise ValueError(f'groups: member {m!r} is not an int')
                if not 0 <= m < base.members:
                    raise ValueError(
                        f'groups: {base.shm_name!r} has no member {m} '
                        f'(it has {base.members})'
                    )
                out.append((p, base.for_member(m)))
    return out


@compat.context
async def register_with_sampler(
    ctx: compat.Context,
    period_s: float | None = None,
    shms_by_period: dict[Any, Any] | None = None,
    open_index_stream: bool = True,
    sub_for_broadcasts: bool = True,
    heartbeat_s: float | None = None,
) -> None:
    """(samplerd) Register buffers by token per period, optionally stream
    the steps of ``period_s`` and of the registered periods, serve
    requests to broadcast to all, and unregister on exit.  ``heartbeat_s``:
    a registrant on another host asks for a heartbeat on the step stream
    after this long without a message (``tractor_services._heartbeat``)."""
    sampler = get_sampler()
    heartbeat_s = check_heartbeat(heartbeat_s)
    for name, flag in (
        ('open_index_stream', open_index_stream),
        ('sub_for_broadcasts', sub_for_broadcasts),
    ):
        if not isinstance(flag, bool):
            raise ValueError(f'{name}={flag!r} must be True or False')
    regs = _parse_shms(shms_by_period)
    try:
        listen = [check_period(period_s)] if period_s is not None else []
    except ValueError as err:
        raise ValueError(f'period_s: {err}') from None
    # this registration's buffers (a key added twice is removed twice)
    keys: Counter[tuple[float, str, int]] = Counter()
    listening: list[float] = []
    subscribed: set[float] = set()

    def serve(req: Any, sub: Any) -> int:
        """One request: a broadcast, or buffers added or removed."""
        if isinstance(req, AddBuffersReq):
            added = sampler.add_buffers(_parse_req(req))
            keys.update(added)
            if sub_for_broadcasts:
                for p in {k[0] for k in added} - subscribed:
                    sampler.bus.add_subs(period_topic(p), {sub})
                    subscribed.add(p)
            return len(added)
        if isinstance(req, RemoveBuffersReq):
            mine = []
            for p, token in _parse_req(req):
                key = (p, token.shm_name, token.member)
                if keys[key] > 0:
                    keys[key] -= 1
                    mine.append(key)
            sampler.remove_buffers(mine)
            return len(mine)
        return sampler.broadcast_all(req.msg, req.period_s)

    try:
        for p, token in regs:
            keys[sampler.add_buffer(p, token)] += 1
        for p in listen:
            listening.append(sampler.listen(p))
        periods = sorted({p for p, _ in regs} | set(listen))
        await ctx.started(
            {
                'periods': periods,
                'steps': {p: sampler.schedule.next_step(p)[1] for p in periods},
                'pid': os.getpid(),
            }
        )
        if not open_index_stream:
            await trio.sleep_forever()
        async with (
            compat.open_stream(ctx) as stream,
            open_sub(sampler.bus, stream, batch=False, heartbeat_s=heartbeat_s) as (
                sub,
                ready,
            ),
        ):
            if sub_for_broadcasts:
                for p in periods:
                    sampler.bus.add_subs(period_topic(p), {sub})
                    subscribed.add(p)
            ready.set()
            try:
                async for raw in stream:
                    try:
                        req = decode_request(raw)
                        reached = serve(req, sub)
                    except (ValueError, FileNotFoundError) as err:
                        rid = raw.get('id', 0) if isinstance(raw, dict) else 0
                        await stream.send(
                            msgspec.to_builtins(
                                Error(
                                    id=rid if isinstance(rid, int) else 0,
                                    error=str(err),
                                )
                            )
                        )
                        continue
                    await stream.send(
                        msgspec.to_builtins(Ack(id=req.id, reached=reached))
                    )
            except (
                PeerDisconnected,
                trio.BrokenResourceError,
                trio.ClosedResourceError,
            ):
                pass  # the registrant went away: unregister below
    finally:
        sampler.remove_buffers(list(keys.elements()))
        for p in listening:
            sampler.unlisten(p)
