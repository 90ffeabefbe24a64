"""Benchmark: the storage paths of issue #14.

Bar store (this block): the cost of storing closed 1 s bars for 1,000
topics, as the feed daemon's writer does it: every flush interval, per
topic, the closed bars since the last flush are copied out of the topic's
buffer (``StoreWriter.collect``, on the trio thread) and appended as one
Parquet file (``ParquetStore.write``, in a worker thread).  Reported per
flush interval (1, 10, 60 s of bars per write): the writer thread's time
per topic and per bar, the collect time per topic (the only part on the
feed path), the share of one core it takes at 1 s bars for 1,000 topics,
and the files per day it makes.

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
            n = per_flush * (rounds + 1) + 1
            rows = np.zeros(n, dtype=DEFAULT_DTYPE)
            rows['time'] = t0 + np.arange(n)
            rows['close'] = 100 + np.random.default_rng(0).standard_normal(n).cumsum()
            rows['open'] = rows['high'] = rows['low'] = rows['close']
            shms = [_FakeShm(rows[:1]) for _ in range(topics)]
            tops = {f'T{i:05d}': _FakeTopic(s) for i, s in enumerate(shms)}
            collect_s = write_s = 0.0
            bars = 0
            for r in range(rounds):
                end = per_flush * (r + 1) + 1  # the last row is the open bar
                for s in shms:
                    s.array = rows[:end]
                a = time.perf_counter()
                batch = w.collect(tops)
                b = time.perf_counter()
                w.write(batch)
                c = time.perf_counter()
                collect_s += b - a
                write_s += c - b
                bars += sum(len(x[2]) for x in batch)
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


def print_bar_store(results: list[dict[str, Any]]) -> None:
    print('bar store: Parquet, 1 s bars, one file per topic per flush')
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


# --- end of the bar store block -------------------------------------------------


if __name__ == '__main__':
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--quick', action='store_true', help='a small run')
    main_bar_store(parser.parse_args())
