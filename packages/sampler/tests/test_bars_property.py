"""Bars are right whatever the clock does (issue #10), as a property:
samplerd's stepping (the real Sampler and Schedule under trio's mock
clock, no actors) and the feed daemon's writer, driven by random trade
times (behind, on, one float step either side of boundaries, ahead),
random stalls of the step loop and random step delivery delays (and
dropped step messages), compared bar by bar with a plain resampler
written here.  With ``composite`` the longer period's buffer is built
from the shorter one's bars: each of its bars must equal the aggregate of
its source bars (those the plain resampler gave trades).  Each buffer
also gets a random ``origin`` (bars starting that far past the period's
multiples) and ``stamp`` (rows stamped with their bar's start or end),
and may skip its first, partial, bar (``skip_partial``: the feed starts
mid-bar; those trades are counted unplaced, the bar stays flat)."""

from __future__ import annotations

import bisect
import math

import numpy as np
import trio
import trio.testing
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st

from tractor_sampler import open_shm_array
from tractor_sampler._ohlc import OHLCWriter
from tractor_sampler._sampler import Sampler

#: the wall clock at trio time 0: on no boundary
W0 = 1_700_000_000.37
SEED = 100.0


#: the origin (tenths of a second past the multiples) of each period's bars
ORIGIN: dict[float, int] = {}


def boundary(p: float, k: int) -> float:
    """Bar k's start as the docs define it: the float nearest
    origin + k * p."""
    return (k * round(p * 10) + ORIGIN.get(p, 0)) / 10


def bar_at(p: float, t: float) -> int:
    """The bar whose [start, next start) holds t."""
    k = math.floor((t - ORIGIN.get(p, 0) / 10) / p)
    while boundary(p, k) > t:
        k -= 1
    while boundary(p, k + 1) <= t:
        k += 1
    return k


class Reference:
    """The plain resampler: every trade, in arrival order, into the bar
    whose [time, next time) holds its time."""

    def __init__(self, p: float, k_lo: int, k_hi: int) -> None:
        self.p = p
        self.k_lo = k_lo
        self.edges = [boundary(p, k) for k in range(k_lo, k_hi + 2)]
        self.bars: dict[int, list[tuple[float, float]]] = {}

    def bar(self, t: float) -> int:
        return self.k_lo + bisect.bisect_right(self.edges, t) - 1

    def add(self, t: float, price: float, size: float) -> None:
        self.bars.setdefault(self.bar(t), []).append((price, size))


# one trade: which bar relative to the open one at arrival, where in it
trade_st = st.tuples(
    st.floats(0.0, 0.7),  # wait before it, in shortest periods
    st.integers(-3, 3),  # bar relative to the arrival's bar
    st.sampled_from(['on', 'before', 'after', 'inside']),
    st.floats(0.0, 0.999),  # where inside
    st.integers(1, 200),  # price
    st.integers(0, 9),  # size (0 is a trade too)
)
stall_st = st.tuples(
    st.integers(1, 40),  # before the step with this number
    st.sampled_from([0.3, 1.1, 2.5, 7.0, 30.0, 30.0]),  # how long, in shortest periods
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    periods=st.sampled_from([(0.1, 1.0), (0.3, 1.5), (1.0, 5.0), (1.0, 60.0)]),
    trades=st.lists(trade_st, max_size=60),
    stalls=st.lists(stall_st, max_size=4),
    delays=st.lists(st.floats(0.0, 1.5), min_size=1, max_size=8),
    drops=st.lists(st.booleans(), min_size=1, max_size=5),
    max_catchup=st.integers(2, 12),
    tail=st.floats(0, 40),
    jumps=st.lists(
        st.tuples(st.floats(0, 30), st.sampled_from([-5.0, -0.5, 0.5, 3.0, 40.0])),
        max_size=2,
    ),
    composite=st.booleans(),
    origin=st.sampled_from([0.0, 0.0, 0.2, 0.3, 30.0, 59.9]),
    stamps=st.tuples(
        st.sampled_from(['open', 'close']), st.sampled_from(['open', 'close'])
    ),
    skips=st.tuples(st.booleans(), st.booleans()),
)
@example(  # its end falls on a boundary (W0 + 5.13 s): checked off it
    periods=(0.1, 1.0),
    trades=[],
    stalls=[],
    delays=[0.0],
    drops=[False],
    max_catchup=2,
    tail=0.3,
    jumps=[],
    composite=False,
    origin=0.0,
    stamps=('open', 'open'),
    skips=(False, False),
)
def test_bars_equal_a_plain_resampler_whatever_the_clock(
    periods,
    trades,
    stalls,
    delays,
    drops,
    max_catchup,
    tail,
    jumps,
    composite,
    origin,
    stamps,
    skips,
):
    p1 = periods[0]
    skipped = {p for p, skip in zip(periods, skips, strict=True) if skip}
    stamp = dict(zip(periods, stamps, strict=True))
    ORIGIN.clear()
    ORIGIN.update({p: round(origin * 10) % round(p * 10) for p in periods})
    if composite and (ORIGIN[periods[1]] - ORIGIN[p1]) % round(p1 * 10):
        composite = False  # its bars would not start on source boundaries

    def row_time(p: float, k: int) -> float:
        return boundary(p, k + (stamp[p] == 'close'))

    stall_at = {n: d * p1 for n, d in stalls}
    sent: list[tuple[float, float, float]] = []  # (time, price, size), arrival order
    offset = [W0]  # the wall clock, which NTP (or a suspend) may step

    def wall() -> float:
        return trio.current_time() + offset[0]

    async def step_the_wall_clock() -> None:
        for at, by in sorted(jumps):
            await trio.sleep_until(at * p1)
            offset[0] += by * p1

    async def main() -> None:
        sampler = Sampler(wall=wall, spin_s=0)
        sampler.schedule.max_catchup = max_catchup
        shms = {
            p: open_shm_array(4096, start=0, origin=origin, stamp=stamp[p])
            for p in periods
        }
        try:
            for p, shm in shms.items():  # the open bar, as the feed daemon seeds it
                row = np.zeros(1, dtype=shm.dtype)
                row['time'] = row_time(p, bar_at(p, W0))
                row['open'] = row['high'] = row['low'] = row['close'] = SEED
                shm.push(row)
                sampler.add_buffer(p, shm.token)
            writer = OHLCWriter(shms, composite={periods[1]: p1} if composite else None)
            # the feed starts at W0, mid-bar: those buffers skip that bar
            writer.skip_partial(W0, skipped)
            tx, rx = trio.open_memory_channel(math.inf)
            n = [0]
            quiet = [False]
            orig = sampler._step

            async def step(p: float, t: float) -> None:
                n[0] += 1
                stall = stall_at.get(n[0])
                if stall and not quiet[0]:
                    await trio.sleep(stall)  # the loop stalls: later deadlines pass
                await orig(p, t)
                tx.send_nowait(p)

            sampler._step = step  # type: ignore[method-assign]

            async def deliver() -> None:
                i = 0
                async for p in rx:
                    i += 1
                    await trio.sleep(delays[i % len(delays)] * p1)
                    if not drops[i % len(drops)]:  # some step messages are lost
                        writer.on_step(p)

            async with trio.open_nursery() as tn:
                await tn.start(sampler.increment_ohlc_buffer)
                tn.start_soon(deliver)
                tn.start_soon(step_the_wall_clock)
                for wait, dk, where, frac, price, size in trades:
                    await trio.sleep(wait * p1)
                    now = wall()
                    k = bar_at(p1, now) + dk
                    t = {
                        'on': boundary(p1, k),
                        'before': float(np.nextafter(boundary(p1, k), -np.inf)),
                        'after': float(np.nextafter(boundary(p1, k), np.inf)),
                        'inside': boundary(p1, k) + frac * p1,
                    }[where]
                    writer.write(
                        [
                            {
                                'type': 'trade',
                                'price': float(price),
                                'size': float(size),
                                'time': t,
                            }
                        ],
                        now,
                    )
                    sent.append((t, float(price), float(size)))
                await trio.sleep(tail * p1)  # stalls may still come
                quiet[0] = True
                await trio.sleep(2 * max(periods) + 31 * p1)
                # the check runs halfway between two tenths of a second, on
                # no boundary of any period (bars start on tenths): at a
                # boundary itself, whether its step ran yet is trio's order
                # of two tasks due at the same instant
                await trio.sleep(((0.5 - (wall() * 10) % 1) % 1) / 10)
                tn.cancel_scope.cancel()
            writer.on_step()  # the last step messages
            check(sampler, writer, shms, wall())
        finally:
            for p, shm in shms.items():
                if sampler._refs.get((p, shm.token.shm_name, 0)):
                    sampler.remove_buffer((p, shm.token.shm_name, 0))
                shm.destroy()

    def check(sampler: Sampler, writer: OHLCWriter, shms: dict, now: float) -> None:
        stats = writer.stats()['by_period']
        src_bars: dict[int, list] = {}  # the source's bars that are in its buffer
        for p, shm in shms.items():
            rows = shm.array
            times = rows['time']
            close = stamp[p] == 'close'
            ks = [bar_at(p, t) - close for t in times]
            # times on boundaries, one row per boundary except at a marked gap
            assert all(t == row_time(p, k) for t, k in zip(times, ks, strict=True)), p
            assert list(np.diff(rows['index'])) == [1] * (len(rows) - 1)
            gaps = int((np.diff(ks) > 1).sum())
            assert all(d >= 1 for d in np.diff(ks))
            assert gaps == sampler.gaps.get(p, 0)
            assert sum(d - 1 for d in np.diff(ks)) == sampler.gap_bars.get(p, 0)
            # caught up to the current boundary
            assert ks[-1] == bar_at(p, now)
            ref = Reference(p, ks[0] - 10, ks[-1] + 10)
            for t, price, size in sent:
                ref.add(t, price, size)
            have = set(ks)
            built = composite and p != p1
            if built:  # a composite bar is its source bars, each whole
                r = round(p * 10) // round(p1 * 10)
                shift = (ORIGIN[p] - ORIGIN[p1]) // round(p1 * 10)
                ref.bars = {}
                for k1, bar in sorted(src_bars.items()):
                    ref.bars.setdefault((k1 - shift) // r, []).extend(bar)
            # a skipped partial bar gets no trade (W0 is on no boundary)
            dropped = len(ref.bars.pop(bar_at(p, W0), [])) if p in skipped else 0
            if composite and not built:
                src_bars.update({k: v for k, v in ref.bars.items() if k in have})
            prev = SEED
            placed = 0
            for i, k in enumerate(ks):
                got = tuple(
                    float(rows[f][i])
                    for f in ('open', 'high', 'low', 'close', 'volume')
                )
                bar = ref.bars.get(k)
                if bar:
                    prices = [pr for pr, _ in bar]
                    want = (
                        prices[0],
                        max(prices),
                        min(prices),
                        prices[-1],
                        float(sum(s for _, s in bar)),
                    )
                    placed += len(bar)
                else:
                    want = (prev, prev, prev, prev, 0.0)
                assert got == want, (p, i, k, got, want)
                prev = want[3]
            ahead = sum(len(v) for kk, v in ref.bars.items() if kk > ks[-1])
            lost = dropped + sum(
                len(v) for kk, v in ref.bars.items() if kk <= ks[-1] and kk not in have
            )
            s = stats[repr(p)]
            if built:  # no trade goes into it: nothing to count
                assert s['from'] == p1
                assert (
                    s['placed'],
                    s['held'],
                    s['late'],
                    s['unplaced'],
                    s['pending'],
                ) == (0,) * 5
                event('a composite buffer')
                continue
            assert s['placed'] == placed
            assert s['pending'] == ahead
            assert s['unplaced'] == lost
            assert placed + ahead + lost == len(sent)
            for name in ('late', 'held', 'corrected', 'unplaced', 'pending'):
                if s[name]:
                    event(f'some trades {name}')
            if gaps:
                event('rows jumped a gap')
        if origin:
            event('bars off the multiples (origin)')
        if skipped:
            event('a partial first bar skipped')
        if 'close' in stamps:
            event('rows stamped on close')
        if sampler.schedule.stats.clock_jumps:
            event('the wall clock jumped')
        assert sampler.schedule.stats.clock_jumps <= len(jumps)

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
