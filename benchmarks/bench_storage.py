"""Benchmark: the storage paths (bar store, tick log, replay).

Bar store (this block): the cost of storing closed 1 s bars for 1,000
topics, as the feed daemon's writer does it: every flush interval, per
topic, the closed bars since the last flush are copied out of the topic's
buffer (``StoreWriter.collect``, on the trio thread) and appended as one
Parquet file (``ParquetStore.write``, in a worker thread).  Reported per
flush interval (1, 10, 60 s of bars per write): the writer thread's time
per topic and per bar, the collect time per topic (the only part on the
feed path), the share of one core it takes at 1 s bars for 1,000 topics,
and the files per day it makes.  Then compaction: one dataset's day of 1 s
bars written every 60 s, merged as the writer does it, then the closed day
into one file.

Other engineers add their own blocks (the tick log, replay) below theirs.

    python benchmarks/bench_storage.py            # 1,000 topics
    python benchmarks/bench_storage.py --quick    # 100 topics
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

# --- the bar store ------------------------------------------------------------


class _FakeShm:
    """What StoreWriter.collect reads of a buffer (the array, its token)."""

    class token:  # noqa: N801 - a stand-in for ShmToken's fields
        origin = 0.0
        stamp = 'open'

    def __init__(self, rows: np.ndarray) -> None:
        self.array = rows
        self.dtype = rows.dtype

    def __len__(self) -> int:
        return len(self.array)


class _FakeTopic:
    def __init__(self, shm: _FakeShm) -> None:
        self.shms = {1.0: shm}


def bench_bar_store(
    topics: int, flushes: list[int], rounds: int = 3
) -> list[dict[str, Any]]:
    from tractor_sampler._store import ParquetStore, StoreWriter
    from tractor_sampler.shm import DEFAULT_DTYPE

    out = []
    for per_flush in flushes:
        root = Path(tempfile.mkdtemp(prefix='bench_store_'))
        try:
            store = ParquetStore(root)
            w = StoreWriter(store, 'sim')
            t0 = 1_700_000_000.0
            # a buffer as the feed daemon's, half full (12 h of 1 s bars)
            # and stored (remembered, not written) before the timed flushes: each flush looks back over
            # the recheck window (600 s) for corrected bars
            pre = 43_200
            n = pre + per_flush * (rounds + 1) + 1
            rows = np.zeros(n, dtype=DEFAULT_DTYPE)
            rows['time'] = t0 + np.arange(n)
            rows['close'] = 100 + np.random.default_rng(0).standard_normal(n).cumsum()
            rows['open'] = rows['high'] = rows['low'] = rows['close']
            shms = [_FakeShm(rows[: pre + 1]) for _ in range(topics)]
            tops = {f'T{i:05d}': _FakeTopic(s) for i, s in enumerate(shms)}
            for name in tops:  # as if stored (seeded from the store)
                w.remember(name, 1.0, rows[:pre])
            collect_s = write_s = 0.0
            bars = 0
            for r in range(rounds):
                end = pre + per_flush * (r + 1) + 1  # the last row is the open bar
                for s in shms:
                    s.array = rows[:end]
                a = time.perf_counter()
                batch = w.collect(tops)
                b = time.perf_counter()
                w.write(batch)
                c = time.perf_counter()
                collect_s += b - a
                write_s += c - b
                bars = w.bars  # written: new bars (no corrections here)
            assert w.failures == 0, w.last_error
            writes = topics * rounds
            out.append(
                {
                    'bars_per_write': per_flush,
                    'topics': topics,
                    'write_us_per_topic': 1e6 * write_s / writes,
                    'write_us_per_bar': 1e6 * write_s / bars,
                    'collect_us_per_topic': 1e6 * collect_s / writes,
                    # at 1 s bars, one flush per `per_flush` seconds
                    'core_share_1000_topics': (write_s + collect_s)
                    / writes
                    * 1000
                    / per_flush,
                    'files_per_day_1000_topics': 1000 * 86400 // per_flush,
                }
            )
        finally:
            shutil.rmtree(root, ignore_errors=True)
    return out


def bench_compaction(flush_s: int = 60, max_small: int = 64) -> dict[str, Any]:
    """One dataset's day of 1 s bars written every ``flush_s`` seconds, the
    writer compacting as it does live (the current day's small files past
    ``max_small``), then the closed day merged into one file: the time all
    the day's merges take, the closed day's merge alone, and the files left
    per day."""
    from tractor_sampler._store import ParquetStore, StoreWriter
    from tractor_sampler.shm import DEFAULT_DTYPE

    root = Path(tempfile.mkdtemp(prefix='bench_compact_'))
    try:
        store = ParquetStore(root)
        # a day is closed 660 s after it ended (the flush and the recheck
        # window), as in the feed daemon
        w = StoreWriter(store, 'sim', max_small=max_small, settle_s=660.0)
        t0 = 1_700_006_400.0  # a UTC midnight
        n = 86_400
        rows = np.zeros(n, dtype=DEFAULT_DTYPE)
        rows['time'] = t0 + np.arange(n)
        rows['close'] = 100 + np.random.default_rng(0).standard_normal(n).cumsum()
        rows['open'] = rows['high'] = rows['low'] = rows['close']
        intraday = 0.0
        for i in range(0, n, flush_s):
            w.write([('T', 1.0, rows[i : i + flush_s])])
            a = time.perf_counter()
            w.compact_due(now=t0 + i + flush_s)
            intraday += time.perf_counter() - a
        left_open = len(store.files('sim', 'T', 1.0))
        a = time.perf_counter()
        st = store.compact('sim', 'T', 1.0, now=t0 + n + 3600)
        closed = time.perf_counter() - a
        got = store.read('sim', 'T', 1.0)
        assert len(got) == n and (got['close'] == rows['close']).all()
        return {
            'flush_s': flush_s,
            'files_written': n // flush_s,
            'intraday_s': intraday,
            'files_before_close': left_open,
            'close_inputs': st.inputs,
            'close_s': closed,
            'files_after': len(store.files('sim', 'T', 1.0)),
            'day_bytes': sum(f.stat().st_size for f in store.files('sim', 'T', 1.0)),
            # a day of merges for 1,000 topics, as a share of one core
            'core_share_1000_topics': (intraday + closed) * 1000 / 86400,
        }
    finally:
        shutil.rmtree(root, ignore_errors=True)


def print_compaction(r: dict[str, Any]) -> None:
    print(
        f'compaction: a day of 1 s bars, a file every {r["flush_s"]} s '
        f'({r["files_written"]:,} files)'
    )
    print(
        f'  merges during the day: {r["intraday_s"]:.2f} s in all, '
        f"{r['files_before_close']} files at the day's end"
    )
    print(
        f'  the closed day ({r["close_inputs"]} files) into one: {r["close_s"]:.2f} s, '
        f'{r["files_after"]} file of {r["day_bytes"] / 1e6:.1f} MB'
    )
    print(f'  share of a core, 1,000 topics: {r["core_share_1000_topics"]:.2%}')


def print_bar_store(results: list[dict[str, Any]]) -> None:
    print(
        'bar store: Parquet, 1 s bars, one file per topic per flush '
        '(new bars and corrections in the last 600 s)'
    )
    print(
        f'{"bars/write":>10} {"topics":>7} {"write us/topic":>15} {"write us/bar":>13} '
        f'{"collect us/topic":>17} {"core @1000":>11} {"files/day @1000":>16}'
    )
    for r in results:
        print(
            f'{r["bars_per_write"]:>10} {r["topics"]:>7} {r["write_us_per_topic"]:>15.0f} '
            f'{r["write_us_per_bar"]:>13.1f} {r["collect_us_per_topic"]:>17.1f} '
            f'{r["core_share_1000_topics"]:>10.1%} {r["files_per_day_1000_topics"]:>16,}'
        )


def main_bar_store(args: argparse.Namespace) -> None:
    topics = 100 if args.quick else 1000
    print_bar_store(bench_bar_store(topics, [1, 10, 60]))
    print_compaction(bench_compaction())


# --- end of the bar store block -------------------------------------------------


# --- the tick log and replay ------------------------------------------------------
#
# 1. The feed daemon's maximum publish rate: sim quotes (4 book ticks, a
#    trade one time in ten) through FeedsBus.publish with no subscriber:
#    what the recorder has to keep up with.
# 2. The same with the tick recorder subscribed (run_recorder: decode the
#    bus's encoded quote, frame, batch, write): quotes/s from the first
#    publish until the last record is flushed, the bytes per record, and
#    whether the recorder dropped any.  Published in bursts of 64 with a
#    checkpoint between, as the sim backend does.
# 3. Replay as fast as possible (speed='max'): records of a tick log read,
#    CRC-checked, decoded, re-stamped and yielded per second.


def _quotes(n: int) -> list[tuple[dict[str, Any], list[dict[str, Any]]]]:
    import random

    rng = random.Random(1)
    out = []
    for i in range(n):
        bid, ask = 100.0 + rng.random(), 100.02 + rng.random()
        ticks = [
            {'type': 'bid', 'price': bid, 'size': 10.0},
            {'type': 'bsize', 'price': bid, 'size': 10.0},
            {'type': 'ask', 'price': ask, 'size': 12.0},
            {'type': 'asize', 'price': ask, 'size': 12.0},
        ]
        if i % 10 == 0:
            ticks.append(
                {'type': 'trade', 'price': ask, 'size': 3.0, 'time': 1.7e9 + i}
            )
        fields = {
            'last': ask,
            'bid': bid,
            'ask': ask,
            'bsize': 10.0,
            'asize': 12.0,
            'volume': float(i),
            'time': 1.7e9 + i,
        }
        out.append((fields, ticks))
    return out


def bench_tick_log(n: int) -> dict[str, Any]:
    import trio

    from feedbus import FeedsBus
    from tractor_sampler._ticklog import TickLog, run_recorder
    from tractor_sampler.backends import replay

    quotes = _quotes(n)
    root = Path(tempfile.mkdtemp(prefix='bench_ticklog_'))
    out: dict[str, Any] = {'quotes': n}
    try:

        async def publish_only() -> float:
            bus = FeedsBus()
            t0 = time.perf_counter()
            for i, (f, tk) in enumerate(quotes):
                bus.publish('AAA', f, tk)
                if i % 64 == 63:
                    await trio.lowlevel.checkpoint()
            return time.perf_counter() - t0

        async def recorded() -> tuple[float, int, int]:
            bus = FeedsBus()
            log = TickLog.open('AAA', directory=root / 'log')
            async with trio.open_nursery() as nursery:
                sub = await nursery.start(run_recorder, bus, 'AAA', log)
                t0 = time.perf_counter()
                for i, (f, tk) in enumerate(quotes):
                    bus.publish('AAA', f, tk)
                    if i % 64 == 63:
                        await trio.lowlevel.checkpoint()
                while sub.stats.delivered + sub.stats.dropped < n:
                    await trio.sleep(0.001)
                log.flush()
                dt = time.perf_counter() - t0
                nursery.cancel_scope.cancel()
            return dt, log.bytes, sub.stats.dropped

        async def replayed() -> float:
            t0 = time.perf_counter()
            k = 0
            async for _ in replay.stream_quotes(
                ['AAA'], path=str(root / 'log'), speed='max', stop=True
            ):
                k += 1
            assert k == n - out['dropped'], (k, n)
            return time.perf_counter() - t0

        out['publish_per_s'] = n / trio.run(publish_only)
        dt, nbytes, dropped = trio.run(recorded)
        out['dropped'] = dropped
        out['recorded_per_s'] = n / dt
        out['bytes_per_record'] = nbytes / max(1, n - dropped)
        out['replay_per_s'] = (n - dropped) / trio.run(replayed)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return out


def print_tick_log(r: dict[str, Any]) -> None:
    print(
        f'tick log and replay: {r["quotes"]:,} sim quotes (4 book ticks, a trade in ten)'
    )
    print(
        f"  publish alone (the feed daemon's maximum rate): {r['publish_per_s']:>10,.0f} quotes/s"
    )
    print(
        f'  publish + recorder, until flushed:               {r["recorded_per_s"]:>10,.0f} quotes/s '
        f'({r["bytes_per_record"]:.0f} B/record, {r["dropped"]} dropped)'
    )
    print(
        f'  replay, speed=max:                               {r["replay_per_s"]:>10,.0f} quotes/s'
    )


def main_tick_log(args: argparse.Namespace) -> None:
    print_tick_log(bench_tick_log(20_000 if args.quick else 200_000))


# --- end of the tick log block ------------------------------------------------------


if __name__ == '__main__':
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--quick', action='store_true', help='a small run')
    args = parser.parse_args()
    main_bar_store(args)
    main_tick_log(args)
