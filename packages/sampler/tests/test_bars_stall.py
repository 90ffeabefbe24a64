"""Bars are right across samplerd stalls, with real actors (issue #10):
samplerd is SIGSTOPped for 1.1 s and then 3 s mid-stream while the
simulated backend trades on; afterwards every bar of the 1 s and 2 s
buffers equals the trades the subscriber saw, resampled here."""

from __future__ import annotations

import bisect
import math
import os
import signal

import trio

from feedbus import Quote
from tractor_sampler import open_market_feed
from tractor_services import open_service_root
from tractor_services.testing import actor_pids

BUFS = {1.0: (512, 0), 2.0: (256, 0)}
#: a fast stream, every quote a trade, from a seeded simulated venue
CONFIG = {'tick_rate': 40, 'trade_prob': 1.0, 'seed': 7}


def boundary(p: float, k: int) -> float:
    return k * round(p * 10) / 10


def bar_of(p: float, t: float) -> int:
    k = math.floor(t / p)
    edges = [boundary(p, k + d) for d in (-1, 0, 1, 2)]
    return k - 1 + bisect.bisect_right(edges, t) - 1


async def test_bars_match_the_trades_across_samplerd_stalls(other_addr):
    trades: list[
        tuple[float, float, float]
    ] = []  # (time, price, size), in arrival order
    seqs: list[int] = []
    async with open_service_root(other_addr):
        async with open_market_feed(['AAA'], config=CONFIG, buffers=BUFS) as feed:
            shms = {p: feed.buffer('AAA', p) for p in BUFS}
            (pid,) = actor_pids('samplerd')

            async def record(task_status=trio.TASK_STATUS_IGNORED):
                task_status.started()
                async for q in feed:
                    assert isinstance(q, Quote)
                    seqs.append(q.seq)
                    for tick in q.ticks:
                        if tick.get('type') == 'trade':
                            trades.append(
                                (
                                    float(tick['time']),
                                    float(tick['price']),
                                    float(tick['size']),
                                )
                            )

            async def rows_past(t: float) -> None:
                """Wait until samplerd's steps have made the 1 s bar after
                ``t`` (and the writer folded trades into it)."""
                with trio.fail_after(30):
                    while not (len(shms[1.0]) and shms[1.0].array['time'][-1] > t + 1):
                        await trio.sleep(0.05)

            async with trio.open_nursery() as tn:
                await tn.start(record)
                with trio.fail_after(30):
                    while len(trades) < 20:
                        await trio.sleep(0.05)
                for stall_s in (1.1, 3.0):
                    os.kill(pid, signal.SIGSTOP)
                    try:
                        await trio.sleep(stall_s)  # the stall itself: the test's input
                    finally:
                        os.kill(pid, signal.SIGCONT)
                    await rows_past(trades[-1][0])
                # quiet until every bar compared below is closed and settled
                cut = trades[-1][0]
                await rows_past(cut + max(BUFS))
                tn.cancel_scope.cancel()
            info = await feed.info()
            snapshot = {p: shm.array.copy() for p, shm in shms.items()}
    bars = info.topics['AAA'].bars

    # no quote was lost on its way to us: we saw every trade after the first
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))
    # the stalls held trades for bars samplerd had not opened, and none was lost
    assert bars.held > 0 and bars.unplaced == 0
    for p, rows in snapshot.items():
        ks = [bar_of(p, t) for t in rows['time']]
        assert list(rows['time']) == [boundary(p, k) for k in ks]  # on boundaries
        assert ks == list(range(ks[0], ks[0] + len(ks)))  # one row per boundary
        assert list(rows['index']) == list(
            range(rows['index'][0], rows['index'][0] + len(rows))
        )
        by_bar: dict[int, list[tuple[float, float]]] = {}
        for t, price, size in trades:
            by_bar.setdefault(bar_of(p, t), []).append((price, size))
        # bars we saw whole: after the one our first trade fell in, up to
        # the one before the last trade we recorded
        first_k, last_k = bar_of(p, trades[0][0]) + 1, bar_of(p, cut) - 1
        compared = 0
        prev = None
        for i, k in enumerate(ks):
            got = tuple(
                float(rows[f][i]) for f in ('open', 'high', 'low', 'close', 'volume')
            )
            if first_k <= k <= last_k:
                bar = by_bar.get(k)
                if bar:
                    prices = [pr for pr, _ in bar]
                    want = (
                        prices[0],
                        max(prices),
                        min(prices),
                        prices[-1],
                        sum(s for _, s in bar),
                    )
                else:
                    want = (prev, prev, prev, prev, 0.0)
                assert got[:4] == want[:4] and math.isclose(got[4], want[4]), (
                    p,
                    k,
                    got,
                    want,
                )
                compared += 1
            prev = got[3]
        assert compared >= (last_k - first_k + 1) > 0
