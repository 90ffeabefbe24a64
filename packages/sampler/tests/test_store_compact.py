"""The bar store's compaction (small files merged into one file per UTC day,
crash-safe) and late corrections written again (the latest write of a time
wins, before and after compaction)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import trio
from test_store import FakeShm, FakeTopic

from tractor_sampler._datadir import ENV_VAR
from tractor_sampler._store import (
    DAY_S,
    FLUSH_ENV,
    STORE_ENV,
    ParquetStore,
    StoreWriter,
    compact,
    open_store,
)
from tractor_sampler.shm import DEFAULT_DTYPE

pa = pytest.importorskip(
    'pyarrow',
    reason="the bar store needs the store extra: pip install 'tractor-sampler[store]'",
)

FIELDS = ['time', 'open', 'high', 'low', 'close', 'volume']
#: a UTC midnight (2025-11-30): day 0 of these tests
D0 = 20_422 * DAY_S


@pytest.fixture(autouse=True)
def store_on(monkeypatch):
    """The conftest turns the store off for other tests."""
    monkeypatch.delenv(STORE_ENV, raising=False)


def bars(t0: float, n: int, p: float = 1.0, price: float = 100.0) -> np.ndarray:
    b = np.zeros(n, dtype=DEFAULT_DTYPE)
    b['time'] = t0 + p * np.arange(n)
    # prices by time: bars of one time are equal whichever call made them
    b['open'] = b['high'] = b['low'] = b['close'] = price + b['time'] % 1000
    b['volume'] = 1
    return b


def same(a: np.ndarray, b: np.ndarray) -> bool:
    return len(a) == len(b) and all(
        np.array_equal(a[f], b[f], equal_nan=True) for f in FIELDS
    )


def names(s: ParquetStore) -> list[str]:
    return sorted(f.name for f in s.dataset('sim', 'AAA', 1.0).iterdir())


def day_files(s: ParquetStore) -> list[str]:
    return [n for n in names(s) if n.endswith('.day.parquet')]


def fill(s: ParquetStore) -> np.ndarray:
    """Small files over day 0 (from 23:00), midnight and day 1, one of them
    across midnight, and a correction of bars written before (other
    values for times already stored): what the dataset must read as."""
    t = D0 + DAY_S - 3600  # 23:00 of day 0
    for i in range(6):  # 6 files of 10 bars up to 23:01
        s.write('sim', 'AAA', 1.0, bars(t + 10 * i, 10))
    s.write('sim', 'AAA', 1.0, bars(D0 + DAY_S - 5, 10))  # 23:59:55 - 00:00:04
    s.write('sim', 'AAA', 1.0, bars(D0 + DAY_S + 5, 10))  # day 1
    fix = bars(t + 15, 3, price=500.0)  # a correction of three stored bars
    s.write('sim', 'AAA', 1.0, fix)
    want = np.concatenate(
        [bars(t, 60), bars(D0 + DAY_S - 5, 10), bars(D0 + DAY_S + 5, 10)]
    )
    want[15:18] = fix
    return want


# --- compaction -----------------------------------------------------------------


def test_a_closed_day_is_merged_into_one_file_and_reads_the_same(tmp_path):
    s = open_store(tmp_path)
    want = fill(s)
    assert same(s.read('sim', 'AAA', 1.0), want)
    # day 1 is the current day: day 0 is closed, day 1 has 2 small files
    st = s.compact('sim', 'AAA', 1.0, now=D0 + DAY_S + 3600)
    assert st.inputs == 8 and st.outputs == 2
    got = names(s)
    # day 0 in one file; the part of the file across midnight that is day
    # 1's is merged too (it was one file with day 0's bars), the other day
    # 1 file stays small
    assert len(day_files(s)) == 2 and len(got) == 3
    d0 = [n for n in day_files(s) if n.startswith(f'{D0 + DAY_S - 3600:.1f}-')]
    assert d0 and d0[0].split('_')[0] == f'{D0 + DAY_S - 3600:.1f}-{D0 + DAY_S - 1:.1f}'
    assert same(s.read('sim', 'AAA', 1.0), want)
    # nothing more is due
    assert s.compact('sim', 'AAA', 1.0, now=D0 + DAY_S + 3600).inputs == 0
    # once day 1 has closed too: one file per day
    s.compact('sim', 'AAA', 1.0, now=D0 + 2 * DAY_S + 3600)
    assert len(names(s)) == 2 and len(day_files(s)) == 2
    assert same(s.read('sim', 'AAA', 1.0), want)
    assert same(s.read('sim', 'AAA', 1.0, last=7), want[-7:])
    assert same(
        s.read('sim', 'AAA', 1.0, start=D0 + DAY_S - 10, end=D0 + DAY_S + 7),
        want[(want['time'] >= D0 + DAY_S - 10) & (want['time'] < D0 + DAY_S + 7)],
    )


def test_a_day_is_closed_only_settle_s_after_it_ended(tmp_path):
    s = open_store(tmp_path)
    fill(s)
    n = len(names(s))
    st = s.compact('sim', 'AAA', 1.0, now=D0 + DAY_S + 60, settle_s=600)
    assert st.inputs == 0 and len(names(s)) == n


def test_the_current_day_is_merged_past_max_small_files(tmp_path):
    s = open_store(tmp_path)
    t = D0 + 3600
    for i in range(5):
        s.write('sim', 'AAA', 1.0, bars(t + 10 * i, 10))
    now = D0 + 7200
    assert s.compact('sim', 'AAA', 1.0, now=now, max_small=5).inputs == 0
    s.write('sim', 'AAA', 1.0, bars(t + 50, 10))
    st = s.compact('sim', 'AAA', 1.0, now=now, max_small=5)
    assert st.inputs == 6 and st.outputs == 1 and len(names(s)) == 1
    # later small files are merged with the day's merged file next time
    for i in range(6):
        s.write('sim', 'AAA', 1.0, bars(t + 60 + 10 * i, 10))
    s.compact('sim', 'AAA', 1.0, now=now, max_small=5)
    assert len(names(s)) == 2  # the first merged file stays as it was
    assert same(s.read('sim', 'AAA', 1.0), bars(t, 120))
    for i in range(4 * 6):  # past 5 merged files: the day in one
        s.write('sim', 'AAA', 1.0, bars(t + 120 + 10 * i, 10))
        s.compact('sim', 'AAA', 1.0, now=now, max_small=5)
    assert len(day_files(s)) <= 5
    assert same(s.read('sim', 'AAA', 1.0), bars(t, 360))
    s.write('sim', 'AAA', 1.0, bars(t + 360, 10))
    s.compact('sim', 'AAA', 1.0, now=now, all_days=True)  # the current day too
    assert len(names(s)) == 1
    assert same(s.read('sim', 'AAA', 1.0), bars(t, 370))


def test_the_writer_compacts_the_datasets_it_writes(tmp_path):
    s = open_store(tmp_path)
    w = StoreWriter(s, 'sim', max_small=4, settle_s=0.0)
    now = D0 + 7200
    for i in range(10):
        w.write([('AAA', 1.0, bars(D0 + 3600 + 10 * i, 10))])
        w.compact_due(now=now)
    assert w.compact_failures == 0 and w.compacted
    assert len(names(s)) <= 5
    assert same(s.read('sim', 'AAA', 1.0), bars(D0 + 3600, 100))


def test_the_writer_spreads_compactions_over_flushes_by_its_time_budget(tmp_path):
    s = open_store(tmp_path)
    w = StoreWriter(s, 'sim', settle_s=0.0)
    for topic in ('AAA', 'BBB', 'CCC'):
        w.write([(topic, 1.0, bars(D0 + 3600, 10))])
        w.write([(topic, 1.0, bars(D0 + 3610, 10))])
    now = D0 + DAY_S + 3600  # the day of those bars has closed
    for left in (2, 1, 0):
        w.compact_due(now=now, budget_s=0.0)  # one dataset per call
        merged = [
            len(os.listdir(s.dataset('sim', t, 1.0))) == 1
            for t in ('AAA', 'BBB', 'CCC')
        ]
        assert merged.count(False) == left
    assert same(s.read('sim', 'BBB', 1.0), bars(D0 + 3600, 20))


def test_library_compact_merges_every_dataset_and_leaves_foreign_files(tmp_path):
    s = open_store(tmp_path)
    fill(s)
    for topic in ('BBB', 'C/D'):
        s.write('sim', topic, 60.0, bars(D0, 3, 60.0))
        s.write('sim', topic, 60.0, bars(D0 + 180, 3, 60.0))
    foreign = s.dataset('sim', 'BBB', 60.0) / 'mine.parquet'
    pa.parquet.write_table(pa.table({'time': [D0 - 60.0], 'close': [1.0]}), foreign)
    st = compact(tmp_path, now=D0 + 3 * DAY_S)
    assert st.datasets == 3 and st.outputs == 5  # AAA: 2 day files, then 1
    assert foreign.exists()  # not ours: never merged away (but read)
    assert len(s.read('sim', 'BBB', 60.0)) == 7
    assert len(os.listdir(s.dataset('sim', 'C/D', 60.0))) == 1
    # one topic, one period
    s.write('sim', 'BBB', 60.0, bars(D0 + 360, 3, 60.0))
    s.write('sim', 'AAA', 1.0, bars(D0 + 360, 3))
    st = compact(tmp_path, topic='BBB', period_s=60.0, now=D0 + 3 * DAY_S)
    assert st.datasets == 1


def test_a_file_that_cannot_be_written_leaves_the_dataset_as_it_was(tmp_path):
    s = open_store(tmp_path)
    want = fill(s)
    before = names(s)
    d = s.dataset('sim', 'AAA', 1.0)
    os.chmod(d, 0o555)
    try:
        if os.access(d, os.W_OK):
            pytest.skip('root ignores directory permissions')
        with pytest.raises(Exception, match='compaction failed') as exc:
            compact(tmp_path, now=D0 + 3 * DAY_S)
        assert str(d) in str(exc.value) and '\n' not in str(exc.value)
    finally:
        os.chmod(d, 0o755)
    assert names(s) == before and same(s.read('sim', 'AAA', 1.0), want)


def test_a_full_disk_fails_the_compaction_in_one_line_and_loses_nothing(tmp_path):
    mnt = tmp_path / 'small'
    mnt.mkdir()
    if subprocess.run(
        ['mount', '-t', 'tmpfs', '-o', 'size=256k', 'tmpfs', str(mnt)]
    ).returncode:
        pytest.skip('cannot mount a small tmpfs here (needs root)')
    try:
        s = open_store(mnt)
        want = fill(s)
        before = names(s)
        fd = os.open(mnt / 'filler', os.O_WRONLY | os.O_CREAT)
        try:
            while True:
                os.write(fd, b'\0' * 4096)
        except OSError:
            pass
        finally:
            os.close(fd)
        with pytest.raises(Exception, match='No space left on device') as exc:
            compact(mnt, now=D0 + 3 * DAY_S)
        msg = str(exc.value)
        assert 'compaction failed' in msg and str(s.dataset('sim', 'AAA', 1.0)) in msg
        assert '\n' not in msg
        assert names(s) == before  # no input gone, no torn file left
        assert same(ParquetStore(mnt).read('sim', 'AAA', 1.0), want)
        (mnt / 'filler').unlink()
        compact(mnt, now=D0 + 3 * DAY_S)  # room again: done
        assert len(day_files(s)) == 2 and len(names(s)) == 2
        assert same(ParquetStore(mnt).read('sim', 'AAA', 1.0), want)
    finally:
        subprocess.run(['umount', str(mnt)])


# --- crashes and readers in the middle of a compaction ------------------------------


class Crash(BaseException):
    """Stands for a kill -9: nothing after it runs (no except, no finally of
    the store catches a BaseException that is not an OSError)."""


STEPS = [
    ('written', 0),  # the first merged file written and fsynced, not renamed
    ('renamed', 0),  # the first merged file in place, the second not
    ('renamed', 1),  # both in place, no input deleted
    ('synced', 0),
    ('deleted', 0),  # one input deleted
    ('deleted', 4),  # half of them
    ('deleted', 7),  # all but the directory's fsync
]


@pytest.mark.parametrize(('step', 'nth'), STEPS)
def test_a_crash_at_any_step_of_a_compaction_leaves_every_bar_exactly_once(
    tmp_path, step, nth
):
    s = open_store(tmp_path)
    want = fill(s)
    seen = []

    def crash_at(name: str) -> None:
        seen.append(name)
        if name == step and seen.count(name) == nth + 1:
            raise Crash(name)

    s._step = crash_at
    with pytest.raises(Crash):
        s.compact('sim', 'AAA', 1.0, now=D0 + 3 * DAY_S)
    if step == 'written':  # the torn merge: a .tmp file, which readers ignore
        assert any(n.endswith('.tmp') for n in names(s))
    # what another process sees now: every bar once, the latest version
    after = ParquetStore(tmp_path)
    assert same(after.read('sim', 'AAA', 1.0), want)
    assert same(after.read('sim', 'AAA', 1.0, last=12), want[-12:])
    # the next compaction finishes the job
    after.compact('sim', 'AAA', 1.0, now=D0 + 3 * DAY_S)
    assert same(after.read('sim', 'AAA', 1.0), want)
    left = names(after)
    assert len(day_files(after)) == 2
    assert all(n.endswith('.day.parquet') or n.endswith('.tmp') for n in left)


def test_a_kill_9_in_the_middle_of_compactions_leaves_every_bar_exactly_once(tmp_path):
    """A real SIGKILL: a child process compacts, stopping at its k-th step
    until it is killed; the dataset then reads the same as before."""
    s = open_store(tmp_path)
    want = fill(s)
    child = textwrap.dedent(
        f"""
        import sys, time
        from pathlib import Path
        from tractor_sampler._store import ParquetStore
        k = int(sys.argv[1])
        s = ParquetStore(Path({str(tmp_path)!r}))
        n = 0
        def step(name):
            global n
            n += 1
            if n == k:
                print(name, flush=True)
                time.sleep(600)
        s._step = step
        s.compact('sim', 'AAA', 1.0, now={D0 + 3 * DAY_S!r})
        print('done', flush=True)
        """
    )
    for k in (1, 2, 3, 5, 7):
        want_files = names(ParquetStore(tmp_path))
        p = subprocess.Popen(
            [sys.executable, '-c', child, str(k)], stdout=subprocess.PIPE, text=True
        )
        try:
            line = p.stdout.readline().strip()
            p.kill()
        finally:
            p.wait(timeout=60)
            p.stdout.close()
        assert line and line != 'done', (k, want_files)
        assert same(ParquetStore(tmp_path).read('sim', 'AAA', 1.0), want), k
    ParquetStore(tmp_path).compact('sim', 'AAA', 1.0, now=D0 + 3 * DAY_S)
    assert same(ParquetStore(tmp_path).read('sim', 'AAA', 1.0), want)
    left = [n for n in names(ParquetStore(tmp_path)) if not n.endswith('.tmp')]
    assert len(left) == 2 and all(n.endswith('.day.parquet') for n in left)


def test_a_reader_during_a_compaction_sees_every_bar_exactly_once(tmp_path):
    s = open_store(tmp_path)
    want = fill(s)
    reader = ParquetStore(tmp_path)
    checks = []

    def read_now(name: str) -> None:  # a reader between any two steps
        checks.append(same(reader.read('sim', 'AAA', 1.0), want))

    s._step = read_now
    s.compact('sim', 'AAA', 1.0, now=D0 + 3 * DAY_S)
    assert len(checks) > 8 and all(checks)


def test_a_reader_whose_files_are_merged_away_while_it_reads_lists_again(tmp_path):
    s = open_store(tmp_path)
    want = fill(s)

    class Slow(ParquetStore):
        """Lists the files, then a compaction runs before it opens them."""

        ran = False

        def _scan(self, d):
            files = super()._scan(d)
            if not self.ran:
                self.ran = True
                s.compact('sim', 'AAA', 1.0, now=D0 + 3 * DAY_S)
            return files

    r = Slow(tmp_path)
    assert same(r.read('sim', 'AAA', 1.0), want)
    assert r.ran and len(names(s)) == 2 and not r.corrupt


# --- late corrections -----------------------------------------------------------------


# (the writer's view of a buffer and a topic: test_store's stand-ins)


def test_a_bar_corrected_after_it_was_stored_is_stored_again_and_read_once(tmp_path):
    s = open_store(tmp_path)
    w = StoreWriter(s, 'sim', recheck_s=30.0)
    rows = bars(D0 + 100, 61)  # 60 closed bars, the open one
    buf = FakeShm(rows[:11])
    topics = {'AAA': FakeTopic(buf)}
    w.write(w.collect(topics))
    assert w.bars == 10
    # a late trade corrects a stored bar; bars go on
    rows[5]['high'] = rows[5]['close'] = 250.0
    rows[5]['volume'] = 3.0
    buf.array = rows[:21]
    w.write(w.collect(topics))
    assert w.rewrites == 1 and w.bars == 21  # 10 new ones and the fix
    got = s.read('sim', 'AAA', 1.0)
    assert same(got, rows[:20])  # the corrected bar, and every time once
    assert np.all(np.diff(got['time']) > 0)
    # nothing changed: nothing written
    w.write(w.collect(topics))
    assert w.writes == 2
    # after compaction: the same
    s.compact('sim', 'AAA', 1.0, all_days=True)
    assert len(names(s)) == 1 and same(s.read('sim', 'AAA', 1.0), rows[:20])
    # a correction older than the recheck window is not stored again
    buf.array = rows[:61]
    w.write(w.collect(topics))
    rows[2]['close'] = 0.5  # 57 s before the newest stored bar
    rows[58]['close'] = 0.25  # within 30 s
    w.write(w.collect(topics))
    assert w.rewrites == 2
    got = s.read('sim', 'AAA', 1.0)
    assert got['close'][58] == 0.25 and got['close'][2] != 0.5


def test_seeding_remembers_the_stored_bars_so_only_corrections_are_rewritten(tmp_path):
    s = open_store(tmp_path)
    s.write('sim', 'AAA', 1.0, bars(D0 + 100, 20))
    w = StoreWriter(s, 'sim', recheck_s=600.0)
    stored, gap = w.seed('AAA', 1.0, now=D0 + 125.5, rows=50)
    assert gap == 5 and len(stored) == 20
    rows = np.concatenate([stored, bars(D0 + 120, 6, price=120)])
    rows[-10]['low'] = 1.0  # corrected after the restart
    w.write(w.collect({'AAA': FakeTopic(FakeShm(rows))}))
    assert w.rewrites == 1 and w.bars == 6  # the fix and the gap's 5 bars
    assert same(s.read('sim', 'AAA', 1.0), rows[:-1])


async def test_a_late_trade_after_its_bar_was_flushed_is_in_the_store_once(
    other_addr, tmp_path, monkeypatch
):
    """The ``late`` backend (late_backends.py) sends, for every other
    second k, a trade timed k + 0.7 only at k + 1.9; the writer flushes
    every 0.2 s, so bar k is stored before its late trade comes, and again
    after: the store reads the corrected bar, once, before and after
    compaction."""
    from tractor_sampler import open_market_feed, read_bars
    from tractor_services import open_service_root

    monkeypatch.setenv(ENV_VAR, str(tmp_path))
    monkeypatch.setenv(FLUSH_ENV, '0.2')
    s = ParquetStore(tmp_path)

    def rewritten() -> list[float]:
        """Times stored with volume 1 in one file and 3 in a later one."""
        firsts: dict[float, float] = {}
        out = []
        for f in s.files('late', 'AAA', 1.0):
            t = pa.parquet.read_table(f)
            for tm, v in zip(
                t.column('time').to_pylist(),
                t.column('volume').to_pylist(),
                strict=True,
            ):
                if firsts.get(tm) == 1.0 and v == 3.0:
                    out.append(tm)
                firsts.setdefault(tm, v)
        return out

    async with open_service_root(other_addr):
        async with open_market_feed(
            ['AAA'], backend='late', plugins=['late_backends'], buffers={1.0: (256, 0)}
        ):
            with trio.fail_after(90):
                while len(rewritten()) < 2:
                    await trio.sleep(0.2)
    fixed = rewritten()
    for phase in ('flushed', 'compacted'):
        got = read_bars('AAA', 1.0, backend='late', data_dir=tmp_path)
        assert np.all(np.diff(got['time']) > 0), phase  # every time once
        for t in fixed:
            (r,) = got[got['time'] == t]
            k = int(round(t))
            assert (r['open'], r['high'], r['low'], r['close'], r['volume']) == (
                100.0 + k % 50,
                200.0 + k % 50,
                100.0 + k % 50,
                200.0 + k % 50,
                3.0,
            ), phase
        compact(tmp_path, all_days=True)
        assert len(s.files('late', 'AAA', 1.0)) <= 2  # a day file, two at midnight
