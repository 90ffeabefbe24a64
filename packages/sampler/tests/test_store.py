"""The bar store: closed bars kept on disk across runs, the seeding of a
new topic from it, and its failures that leave the live feed running."""

from __future__ import annotations

import os

import numpy as np
import pytest
import trio

from tractor_sampler import open_market_feed
from tractor_sampler._datadir import ENV_VAR, DataDirError, data_dir
from tractor_sampler._plugins import load_stores
from tractor_sampler._store import (
    FLUSH_ENV,
    STORE_ENV,
    StoreWriter,
    join_stored,
    open_store,
)
from tractor_sampler.shm import DEFAULT_DTYPE
from tractor_services import open_service_root


@pytest.fixture(autouse=True)
def store_on(monkeypatch):
    """The conftest turns the store off for other tests."""
    monkeypatch.delenv(STORE_ENV, raising=False)


pa = pytest.importorskip(
    'pyarrow',
    reason="the bar store needs the store extra: pip install 'tractor-sampler[store]'",
)

BUFS = {1.0: (256, 60)}
FAST = {'tick_rate': 100, 'trade_prob': 0.5}
FIELDS = ['time', 'open', 'high', 'low', 'close', 'volume']


def bars(t0: float, n: int, p: float = 1.0) -> np.ndarray:
    b = np.zeros(n, dtype=DEFAULT_DTYPE)
    b['time'] = t0 + p * np.arange(n)
    b['open'] = b['high'] = b['low'] = b['close'] = 100 + np.arange(n)
    b['volume'] = 1
    return b


class FakeShm:
    """What StoreWriter.collect reads of a buffer: its rows (the last one
    the open bar) and its token."""

    class token:  # noqa: N801 - a stand-in for ShmToken's fields
        origin = 0.0
        stamp = 'open'

    def __init__(self, rows: np.ndarray) -> None:
        self.array = rows
        self.dtype = rows.dtype

    def __len__(self) -> int:
        return len(self.array)


class FakeTopic:
    def __init__(self, shm: FakeShm, p: float = 1.0) -> None:
        self.shms = {p: shm}


async def wait_until(pred, timeout=30, poll=0.05):
    with trio.fail_after(timeout):
        while not pred():
            await trio.sleep(poll)


# --- the data directory ---------------------------------------------------


def test_data_dir_resolves_argument_then_env_then_xdg(tmp_path, monkeypatch):
    monkeypatch.delenv(ENV_VAR, raising=False)
    monkeypatch.setenv('XDG_DATA_HOME', str(tmp_path / 'xdg'))
    assert data_dir() == tmp_path / 'xdg' / 'tractor-sampler'
    monkeypatch.setenv(ENV_VAR, str(tmp_path / 'env'))
    assert data_dir() == tmp_path / 'env'
    assert data_dir(tmp_path / 'arg') == tmp_path / 'arg'
    assert (tmp_path / 'arg').is_dir()


def test_a_data_dir_that_cannot_be_written_is_one_line_naming_it(tmp_path):
    f = tmp_path / 'file'
    f.write_text('x')
    with pytest.raises(DataDirError, match=f'{f}/sub: cannot be created') as exc:
        data_dir(f / 'sub')
    assert '\n' not in str(exc.value)
    with pytest.raises(DataDirError, match='is not a directory'):
        data_dir(f)


# --- the Parquet store ----------------------------------------------------


def test_parquet_store_is_registered_through_the_hook():
    assert 'parquet' in load_stores()


def test_writes_append_files_and_reads_join_them(tmp_path):
    s = open_store(tmp_path)
    s.write('sim', 'AAA', 1.0, bars(100, 5))
    s.write('sim', 'AAA', 1.0, bars(105, 5))
    got = s.read('sim', 'AAA', 1.0)
    assert list(got['time']) == list(range(100, 110))
    assert list(s.read('sim', 'AAA', 1.0, last=3)['time']) == [107, 108, 109]
    assert list(s.read('sim', 'AAA', 1.0, start=103, end=106)['time']) == [
        103,
        104,
        105,
    ]
    assert len(list(s.dataset('sim', 'AAA', 1.0).glob('*.parquet'))) == 2
    assert not s.read('sim', 'AAA', 60.0).size


def test_a_stored_file_is_never_overwritten_and_a_later_write_of_a_time_wins(
    tmp_path,
):
    s = open_store(tmp_path)
    s.write('sim', 'AAA', 1.0, bars(100, 5))
    (first,) = s.files('sim', 'AAA', 1.0)
    data = first.read_bytes()
    w = StoreWriter(s, 'sim')
    other = bars(100, 5)
    other['close'] = 0  # same span again, other values (a correction)
    w.write([('AAA', 1.0, other)])
    assert w.failures == 0 and len(s.files('sim', 'AAA', 1.0)) == 2
    assert first.read_bytes() == data  # the first file as it was
    got = s.read('sim', 'AAA', 1.0)
    assert list(got['time']) == list(range(100, 105))  # each time once
    assert (got['close'] == 0).all()  # the latest write's bars


def test_the_writer_never_hands_over_the_open_bar(tmp_path):
    s = open_store(tmp_path)
    w = StoreWriter(s, 'sim')
    buf = FakeShm(bars(100, 5))
    topics = {'AAA': FakeTopic(buf)}
    w.write(w.collect(topics))
    buf.array['close'][-1] = 7  # the open bar changes: still not stored
    w.write(w.collect(topics))
    got = s.read('sim', 'AAA', 1.0)
    assert list(got['time']) == [100, 101, 102, 103] and w.rewrites == 0


def test_a_corrupt_file_is_named_once_and_skipped(tmp_path, caplog):
    s = open_store(tmp_path)
    s.write('sim', 'AAA', 1.0, bars(100, 5))
    s.write('sim', 'AAA', 1.0, bars(105, 5))
    bad = sorted(s.dataset('sim', 'AAA', 1.0).glob('*.parquet'))[0]
    bad.write_bytes(b'garbage, not parquet' * 10)
    assert list(s.read('sim', 'AAA', 1.0)['time']) == list(range(105, 110))
    s.read('sim', 'AAA', 1.0)
    lines = [r.getMessage() for r in caplog.records if 'corrupt' in r.getMessage()]
    assert len(lines) == 1 and str(bad) in lines[0]


def test_failed_writes_are_counted_and_retried(tmp_path):
    s = open_store(tmp_path)
    w = StoreWriter(s, 'sim')
    # the topic's dataset dir cannot be made: a regular file is in the way
    (tmp_path / 'bars').write_text('in the way')
    w.write([('AAA', 1.0, bars(100, 5))])
    assert w.failures == 1 and 'write failed' in w.last_error
    assert ('AAA', 1.0) not in w.upto  # not marked stored: retried
    (tmp_path / 'bars').unlink()
    w.write([('AAA', 1.0, bars(100, 5))])
    assert w.upto[('AAA', 1.0)] == 104 and w.bars == 5


def test_join_stored_has_no_gap_and_no_overlap():
    stored = bars(100, 5)
    fetched = bars(103, 2)  # overlaps: dropped
    fetched = np.concatenate([fetched, bars(107, 3)])  # a hole at 105, 106
    out = join_stored(stored, fetched, 1.0)
    assert list(out['time']) == list(range(100, 110))
    assert (out['close'][5:7] == stored['close'][-1]).all()


# --- across runs ------------------------------------------------------------


async def test_restart_seeds_from_the_store_and_fills_only_the_gap(
    other_addr, tmp_path, monkeypatch
):
    monkeypatch.setenv(ENV_VAR, str(tmp_path))
    monkeypatch.setenv(FLUSH_ENV, '0.5')
    async with open_service_root(other_addr):
        async with open_market_feed(['AAA'], config=FAST, buffers=BUFS) as feed:
            shm = feed.buffer('AAA', 1.0)
            n0 = len(shm)
            await wait_until(lambda: len(shm) >= n0 + 4)
            before = shm.array[:-2].copy()  # closed and settled
    stored = open_store(tmp_path).read('sim', 'AAA', 1.0)
    assert len(stored) and np.allclose(np.diff(stored['time']), 1.0)
    last_stored = stored['time'][-1]
    # a few seconds pass with nothing running: the gap to fill
    await trio.sleep(3)
    async with open_service_root(other_addr):
        async with open_market_feed(['AAA'], config=FAST, buffers=BUFS) as feed:
            rows = feed.buffer('AAA', 1.0).array
    # one bar per second, no gap and no overlap
    assert np.allclose(np.diff(rows['time']), 1.0)
    # the bars of the first run are the same bars
    live = before[before['time'] >= before['time'][-1] - 10]
    idx = np.searchsorted(rows['time'], live['time'])
    for f in FIELDS:
        assert np.array_equal(rows[f][idx], live[f], equal_nan=True), f
    # the gap after the last stored bar is filled up to the open bar
    assert rows['time'][-1] >= last_stored + 3


async def test_the_live_feed_runs_on_when_the_store_fails_and_ls_counts_it(
    other_addr, tmp_path, monkeypatch
):
    from tractor_sampler import introspect
    from tractor_sampler._cli import render_ls

    # every write fails: a regular file where the datasets' directory goes
    (tmp_path / 'bars').write_text('in the way')
    monkeypatch.setenv(ENV_VAR, str(tmp_path))
    monkeypatch.setenv(FLUSH_ENV, '0.2')
    async with open_service_root(other_addr):
        async with open_market_feed(['AAA'], config=FAST, buffers=BUFS) as feed:
            shm = feed.buffer('AAA', 1.0)
            info = None
            with trio.fail_after(30):
                while info is None or not info.store.get('failures'):
                    await trio.sleep(0.2)
                    info = await feed.info()
            n0 = len(shm)
            await wait_until(lambda: len(shm) >= n0 + 2)  # bars go on
            info = await feed.info()
            assert info.topics['AAA'].state == 'up'
            assert info.store['bars'] == 0
            assert 'write failed' in info.store['last_error']
            assert str(tmp_path / 'bars') in info.store['last_error']
            report = await introspect(other_addr)
            text = render_ls(report)
            assert 'failed writes (retried)' in text and 'write failed' in text


def test_a_full_disk_is_one_line_naming_the_file_and_retried(tmp_path):
    import subprocess

    mnt = tmp_path / 'small'
    mnt.mkdir()
    if subprocess.run(
        ['mount', '-t', 'tmpfs', '-o', 'size=64k', 'tmpfs', str(mnt)]
    ).returncode:
        pytest.skip('cannot mount a small tmpfs here (needs root)')
    try:
        s = open_store(mnt)
        w = StoreWriter(s, 'sim')
        # fill the disk, then write
        fd = os.open(mnt / 'filler', os.O_WRONLY | os.O_CREAT)
        try:
            while True:
                os.write(fd, b'\0' * 4096)
        except OSError:
            pass
        finally:
            os.close(fd)
        w.write([('AAA', 1.0, bars(100, 500))])
        assert w.failures == 1 and w.upto == {}
        assert 'No space left on device' in w.last_error
        assert str(s.dataset('sim', 'AAA', 1.0)) in w.last_error
        assert '\n' not in w.last_error
        assert not list(s.dataset('sim', 'AAA', 1.0).glob('*.tmp'))  # no torn file
        (mnt / 'filler').unlink()
        w.write([('AAA', 1.0, bars(100, 500))])  # retried: written now
        assert w.failures == 1 and w.bars == 500
    finally:
        subprocess.run(['umount', str(mnt)])


def test_without_pyarrow_the_store_is_off_and_says_so_once(
    tmp_path, monkeypatch, caplog
):
    import sys

    from tractor_sampler import _store

    monkeypatch.setitem(sys.modules, 'pyarrow', None)
    monkeypatch.setattr(_store, '_said_off', False)
    assert open_store(tmp_path) is None
    assert open_store(tmp_path) is None
    lines = [
        r.getMessage() for r in caplog.records if 'bar store off' in r.getMessage()
    ]
    assert len(lines) == 1 and 'tractor-sampler[store]' in lines[0]


def test_run_refuses_a_data_dir_it_cannot_use_before_anything_starts(tmp_path, capsys):
    from tractor_sampler._cli import main

    f = tmp_path / 'file'
    f.write_text('x')
    assert main(['run', '--port', '1', '--data-dir', str(f / 'sub')]) == 1
    err = capsys.readouterr().err
    assert err.count('\n') == 1 and f'--data-dir: data directory {f}/sub' in err
