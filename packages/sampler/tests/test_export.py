"""Reading the bar store back: read_bars() and `samplerd export`."""

from __future__ import annotations

import csv
import io

import numpy as np
import pytest

from tractor_sampler._cli import main
from tractor_sampler._export import read_bars
from tractor_sampler._store import STORE_ENV, open_store
from tractor_sampler.shm import DEFAULT_DTYPE

pa = pytest.importorskip(
    'pyarrow',
    reason="the bar store needs the store extra: pip install 'tractor-sampler[store]'",
)

T0 = 1_700_000_000.0


@pytest.fixture(autouse=True)
def stored(tmp_path, monkeypatch):
    monkeypatch.delenv(STORE_ENV, raising=False)
    b = np.zeros(10, dtype=DEFAULT_DTYPE)
    b['time'] = T0 + np.arange(10)
    b['open'] = b['high'] = b['low'] = b['close'] = 100 + np.arange(10)
    b['volume'] = 2
    s = open_store(tmp_path)
    s.write('sim', 'AAA', 1.0, b[:6])
    s.write('sim', 'AAA', 1.0, b[6:])
    return b


class FakeFeed:
    """A MarketFeed's buffer() for read_bars' live part."""

    def __init__(self, rows):
        self.rows = rows

    def buffer(self, topic, period):
        return type('B', (), {'array': self.rows})()


def test_read_bars_returns_stored_bars_in_the_buffer_dtype(tmp_path, stored):
    got = read_bars('AAA', 1.0, data_dir=tmp_path)
    assert got.dtype == DEFAULT_DTYPE
    assert list(got['time']) == list(stored['time'])
    assert list(got['index']) == list(range(10))
    got = read_bars('AAA', 1.0, data_dir=tmp_path, start=T0 + 2, end=T0 + 5)
    assert list(got['close']) == [102, 103, 104]


def test_read_bars_appends_the_live_bars_after_the_stored_ones(tmp_path, stored):
    live = np.zeros(5, dtype=DEFAULT_DTYPE)
    live['time'] = T0 + 8 + np.arange(5)  # two overlap the store
    live['close'] = -1
    got = read_bars('AAA', 1.0, data_dir=tmp_path, feed=FakeFeed(live))
    assert np.allclose(np.diff(got['time']), 1.0) and len(got) == 13
    assert list(got['close'][8:10]) == [108, 109]  # the stored ones kept
    assert (got['close'][10:] == -1).all()


def test_read_bars_refuses_bad_arguments_in_one_line(tmp_path):
    with pytest.raises(ValueError, match="start 'x' is neither"):
        read_bars('AAA', data_dir=tmp_path, start='x')
    with pytest.raises(ValueError, match='is not after start'):
        read_bars('AAA', data_dir=tmp_path, start=T0 + 5, end=T0)
    with pytest.raises(ValueError, match='frame='):
        read_bars('AAA', data_dir=tmp_path, frame='excel')


@pytest.mark.parametrize('kind', ['pandas', 'polars'])
def test_read_bars_as_a_frame(tmp_path, kind):
    pytest.importorskip(kind, reason=f'{kind} is not installed')
    df = read_bars('AAA', data_dir=tmp_path, frame=kind)
    assert list(df.columns) == ['time', 'open', 'high', 'low', 'close', 'volume']
    assert len(df) == 10


def test_export_csv_to_stdout(tmp_path, stored):
    out = io.StringIO()
    rc = main(
        [
            'export',
            'AAA',
            '--period',
            '1',
            '--start',
            str(T0 + 7),
            '--data-dir',
            str(tmp_path),
        ],
        out=out,
    )
    assert rc == 0
    rows = list(csv.reader(io.StringIO(out.getvalue())))
    assert rows[0] == ['time', 'open', 'high', 'low', 'close', 'volume']
    assert [float(r[0]) for r in rows[1:]] == [T0 + 7, T0 + 8, T0 + 9]


def test_export_parquet_to_a_file(tmp_path, stored):
    import pyarrow.parquet as pq

    f = tmp_path / 'out.parquet'
    out = io.StringIO()
    rc = main(
        [
            'export',
            'AAA',
            '--format',
            'parquet',
            '-o',
            str(f),
            '--data-dir',
            str(tmp_path),
        ],
        out=out,
    )
    assert rc == 0 and '10 bars of AAA' in out.getvalue()
    t = pq.read_table(f)
    assert t.column('close').to_pylist() == list(stored['close'])


def test_export_refusals_are_one_line(tmp_path, capsys):
    assert (
        main(['export', 'AAA', '--format', 'parquet', '--data-dir', str(tmp_path)]) == 1
    )
    err = capsys.readouterr().err
    assert err.count('\n') == 1 and 'needs a file' in err
    f = tmp_path / 'file'
    f.write_text('x')
    assert main(['export', 'AAA', '--data-dir', str(f / 'sub')]) == 1
    err = capsys.readouterr().err
    assert err.count('\n') == 1 and f'{f}/sub' in err and 'Traceback' not in err
