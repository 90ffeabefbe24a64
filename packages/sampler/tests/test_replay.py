"""Recording live (open_market_feed(record=True)), bars built offline from
the tick log (build_bars), and the replay backend."""

from __future__ import annotations

import numpy as np
import pytest
import trio

from tractor_sampler import open_market_feed
from tractor_sampler._rebuild import build_bars
from tractor_sampler._ticklog import read_ticks, topic_dir
from tractor_services import open_service_root

BUFS = {1.0: (256, 30)}
FAST = {'tick_rate': 100, 'trade_prob': 0.5}


@pytest.fixture
def data_dir(tmp_path, monkeypatch):
    monkeypatch.setenv('TRACTOR_SAMPLER_DATA_DIR', str(tmp_path))
    return tmp_path


async def test_bars_built_offline_from_a_live_recording_equal_the_live_buffers_closed_rows(
    other_addr, data_dir
):
    async with open_service_root(other_addr):
        async with open_market_feed(
            ['AAA'], config=FAST, buffers=BUFS, record=True
        ) as feed:
            shm = feed.buffer('AAA', 1.0)
            # wait until the log holds quotes over at least 5 whole bars
            with trio.fail_after(60):
                while True:
                    times = [r.time for r in read_ticks('AAA', data_dir=data_dir)]
                    if times and times[-1] - times[0] >= 6.5:
                        break
                    await trio.sleep(0.2)
            live = shm.array.copy()
    first, last = times[0], times[-1]
    recs = list(read_ticks('AAA', data_dir=data_dir))
    # recorded in sequence, with the feed's trades in them
    seqs = [r.seq for r in recs]
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))
    assert any(t['type'] == 'trade' for r in recs for t in r.ticks)
    off = build_bars('AAA', 1.0, data_dir=data_dir)
    # the bars the log covers whole: after the first record's, before the last's
    lo, hi = np.floor(first) + 1, np.floor(last)
    want = live[(live['time'] >= lo) & (live['time'] < hi)]
    got = off[(off['time'] >= lo) & (off['time'] < hi)]
    assert len(want) >= 4 and len(got) == len(want)
    for f in ('time', 'open', 'high', 'low', 'close', 'volume'):
        assert list(got[f]) == list(want[f]), f
