"""The bar store writer's rewrite and compaction counters reach what
``samplerd ls`` shows and what the metrics export (the feed daemon's store
info)."""

from __future__ import annotations

import msgspec
import numpy as np
import pytest

from tractor_sampler._cli import _store_lines
from tractor_sampler._feedd import _store_info
from tractor_sampler._info import TreeInfo
from tractor_sampler._store import DAY_S, STORE_ENV, StoreWriter, open_store
from tractor_sampler.shm import DEFAULT_DTYPE

pytest.importorskip(
    'pyarrow',
    reason="the bar store needs the store extra: pip install 'tractor-sampler[store]'",
)

D0 = 20_422 * DAY_S  # a UTC midnight


@pytest.fixture(autouse=True)
def store_on(monkeypatch):
    """The conftest turns the store off for other tests."""
    monkeypatch.delenv(STORE_ENV, raising=False)


def _bars(t0: float, n: int) -> np.ndarray:
    b = np.zeros(n, dtype=DEFAULT_DTYPE)
    b['time'] = t0 + np.arange(n)
    b['open'] = b['high'] = b['low'] = b['close'] = 100.0
    b['volume'] = 1
    return b


def _writer(tmp_path) -> StoreWriter:
    """A writer that rewrote one corrected bar and compacted its files."""
    w = StoreWriter(open_store(tmp_path), 'sim', max_small=4, settle_s=0.0)
    for i in range(6):
        w.write([('AAA', 1.0, _bars(D0 + 3600 + 10 * i, 10))])
    fixed = _bars(D0 + 3650, 10)
    w.write([('AAA', 1.0, fixed)])  # upto: nothing new, not a rewrite yet
    fixed['close'][3] = 101.0  # a late trade changed a stored bar
    w.write([('AAA', 1.0, fixed)])
    w.compact_due(now=D0 + 7200)
    assert w.rewrites == 1 and w.compacted and w.merged_files
    return w


def _tree(store: dict) -> TreeInfo:
    return msgspec.convert(
        {
            'registry': '127.0.0.1:1',
            'feeds': [{'backend': 'sim', 'pid': 1, 'time': 0.0, 'store': store}],
        },
        TreeInfo,
    )


def test_ls_shows_the_stores_rewrites_and_compactions(tmp_path):
    w = _writer(tmp_path)
    w.compact_failures = 2
    info = _tree(_store_info(w)).feeds[0].store
    assert info['rewrites'] == 1 and info['compact_failures'] == 2
    text = '\n'.join(_store_lines(info))
    assert '1 bars rewritten (late corrections)' in text
    assert (
        f'{w.compacted} files compacted into {w.merged_files}, '
        '2 failed compactions (retried)'
    ) in text


def test_the_metrics_export_the_stores_rewrites_and_compactions(tmp_path):
    pytest.importorskip(
        'prometheus_client', reason='needs the metrics extra (prometheus-client)'
    )
    from tractor_sampler._metrics import Monotonic, families

    w = _writer(tmp_path)
    w.compact_failures = 2
    got = {
        s.name: s.value
        for f in families(_tree(_store_info(w)), Monotonic())
        for s in f.samples
        if s.name.startswith('samplerd_store_')
    }
    assert got['samplerd_store_rewrites_total'] == 1
    assert got['samplerd_store_compacted_total'] == w.compacted
    assert got['samplerd_store_merged_files_total'] == w.merged_files
    assert got['samplerd_store_compact_failures_total'] == 2
