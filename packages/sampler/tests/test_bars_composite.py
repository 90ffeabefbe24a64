"""Composite bars with real actors: samplerd (its own process) steps a
1 s buffer and a 3 s buffer built from it (``composite={3.0: 1.0}``) while
the simulated backend trades, and is SIGSTOPped for 1.5 s mid-stream;
every 3 s bar equals the aggregate of its 1 s bars, and the 1 s bars
equal the trades resampled."""

from __future__ import annotations

import math
import os
import signal
import time

import numpy as np
import trio
from bar_checks import aggregate

from tractor_sampler import open_sample_stream, open_shm_array
from tractor_sampler._msgs import Step
from tractor_sampler._ohlc import OHLCWriter
from tractor_sampler.backends.sim import stream_quotes
from tractor_services import open_service_root
from tractor_services.testing import actor_pids

FIELDS = ('open', 'high', 'low', 'close', 'volume')


async def test_every_composite_bar_equals_its_source_bars_with_samplerd_stepping(
    other_addr,
):
    trades: list[tuple[float, float, float]] = []
    now = time.time()
    shms = {p: open_shm_array(n, start=0) for p, n in ((1.0, 256), (3.0, 64))}
    try:
        for p, shm in shms.items():  # the open bars, as the feed daemon seeds them
            row = np.zeros(1, dtype=shm.dtype)
            row['time'] = math.floor(now / p + 1e-9) * p
            row['open'] = row['high'] = row['low'] = row['close'] = 100.0
            shm.push(row)
        writer = OHLCWriter(shms, composite={3.0: 1.0})
        async with open_service_root(other_addr):
            async with open_sample_stream(1.0, shms) as steps:
                (pid,) = actor_pids('samplerd')

                async def fold(task_status=trio.TASK_STATUS_IGNORED):
                    async with steps.open_reader() as rx:
                        task_status.started()
                        async for msg in rx:
                            if isinstance(msg, Step):
                                writer.on_step(msg.period_s)

                async def trade(task_status=trio.TASK_STATUS_IGNORED):
                    source = stream_quotes(
                        ['AAA'], tick_rate=40, trade_prob=1.0, seed=11, anchored=False
                    )
                    task_status.started()
                    async for batch in source:
                        ticks = batch['AAA'].get('ticks') or []
                        writer.write(ticks, time.time())
                        trades.extend(
                            (float(t['time']), float(t['price']), float(t['size']))
                            for t in ticks
                            if t['type'] == 'trade'
                        )

                async def rows_past(t: float) -> None:
                    with trio.fail_after(30):
                        while not (
                            shms[3.0].array['time'][-1] > t + 3
                            and shms[1.0].array['time'][-1] > t + 3
                        ):
                            await trio.sleep(0.05)

                async with trio.open_nursery() as tn:
                    await tn.start(fold)
                    await tn.start(trade)
                    await rows_past(time.time())
                    os.kill(pid, signal.SIGSTOP)
                    try:
                        await trio.sleep(1.5)  # the stall itself: the test's input
                    finally:
                        os.kill(pid, signal.SIGCONT)
                    await rows_past(time.time() + 3)
                    tn.cancel_scope.cancel()
                writer.on_step()  # the steps since the last message: settled
                snap = {p: shm.array.copy() for p, shm in shms.items()}
        stats = writer.stats()
    finally:
        for shm in shms.values():
            shm.destroy()

    one, three = snap[1.0], snap[3.0]
    assert stats['unplaced'] == 0 and stats['held'] > 0  # the stall held trades
    # the 1 s bars are the trades resampled (those whose bar is in the buffer)
    by_bar: dict[int, list] = {}
    for t, price, size in trades:
        by_bar.setdefault(math.floor(t), []).append((price, size))
    ks1 = [round(t) for t in one['time']]
    for i, k in enumerate(ks1[1:], 1):  # the first bar was partly before us
        bar = by_bar.get(k)
        if bar:
            prices = [pr for pr, _ in bar]
            want = (prices[0], max(prices), min(prices), prices[-1])
            assert tuple(float(one[f][i]) for f in FIELDS[:4]) == want, k
    # every 3 s bar is the aggregate of its 1 s bars
    compared = 0
    prev = 100.0
    for row in three:
        k = round(row['time'] / 3)
        got = tuple(float(row[f]) for f in FIELDS)
        src = one[(one['time'] >= 3 * k) & (one['time'] < 3 * k + 3)]
        want = aggregate(src)
        if want is None:
            want = (prev,) * 4 + (0.0,)
        assert got[:4] == want[:4] and math.isclose(got[4], want[4]), (k, got, want)
        prev = got[3]
        compared += want[4] > 0
    assert compared >= 3
