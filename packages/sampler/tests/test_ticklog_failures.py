"""Tick log writes that fail (a full disk, EIO): the writer keeps every
record queued and cuts a torn batch before writing it again, the recorder
keeps the feed running (counts, retries with backoff, says so once and
again when it recovers, drops only what its outbox cannot hold, counted),
and the log that survives is intact and in sequence."""

from __future__ import annotations

import errno
import functools
import os
import random
import types

import pytest
import trio

from feedbus import FeedsBus
from tractor_sampler import _ticklog
from tractor_sampler._ticklog import (
    TickLog,
    read_ticks,
    recorder_info,
    run_recorder,
    segments,
)


def _rec(seq: int) -> tuple[dict, list]:
    return {'n': seq}, [{'type': 'trade', 'price': float(seq), 'size': 1.0}]


class FailingOS(types.SimpleNamespace):
    """``os`` as the tick log sees it, whose writes fail with ENOSPC while
    ``full`` (after writing ``part`` bytes of the first call, if given:
    a write cut short), or at random calls with probability ``p``."""

    def __init__(self, rng: random.Random | None = None, p: float = 0.0) -> None:
        super().__init__()
        self.full = False
        self.part = 0
        self.rng, self.p = rng, p
        self.failed = 0

    def __getattr__(self, name: str):
        return getattr(os, name)

    def _fail(self) -> None:
        if self.full or (self.rng is not None and self.rng.random() < self.p):
            self.failed += 1
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    def write(self, fd, data):
        if self.full and self.part:
            n, self.part = self.part, 0
            return os.write(fd, bytes(data[:n]))  # cut short; the next call fails
        if self.rng is not None and self.rng.random() < self.p:
            os.write(fd, bytes(data[: len(data) // 2]))  # half, then the failure
            self.failed += 1
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self._fail()
        return os.write(fd, data)

    def open(self, *a, **kw):
        self._fail()
        return os.open(*a, **kw)

    def ftruncate(self, fd, n):
        self._fail()
        return os.ftruncate(fd, n)


def _intact(d, seqs=None) -> list[int]:
    """The log's sequence numbers, every record checked whole; ``seqs``:
    they must be exactly these."""
    got = []
    for r in read_ticks('AAA', directory=d):
        fields, ticks = _rec(r.seq)
        assert r.fields == fields and r.ticks == ticks
        got.append(r.seq)
    assert got == sorted(set(got)), 'out of sequence or twice'
    if seqs is not None:
        assert got == list(seqs)
    return got


def test_a_write_cut_short_by_a_full_disk_is_cut_and_written_again_whole(
    tmp_path, monkeypatch
):
    fos = FailingOS()
    monkeypatch.setattr(_ticklog, 'os', fos)
    w = TickLog.open('AAA', directory=tmp_path)
    for i in range(1, 11):
        w.append(i, 1000.0 + i, *_rec(i))
    w.flush()
    for i in range(11, 21):
        w.append(i, 1000.0 + i, *_rec(i))
    fos.full, fos.part = True, 50  # 50 bytes land, then ENOSPC
    with pytest.raises(OSError) as info:
        w.flush()
    assert info.value.errno == errno.ENOSPC
    assert w.pending_records == 10 and w.written == 10
    # a reader meanwhile: the torn tail of the newest segment is not read
    _intact(tmp_path, range(1, 11))
    with pytest.raises(OSError):
        w.flush()  # still full: nothing changes
    fos.full = False
    w.append(21, 1021.0, *_rec(21))
    w.close()
    assert w.pending_records == 0 and w.written == 21
    _intact(tmp_path, range(1, 22))
    assert TickLog.open('AAA', directory=tmp_path).cut_bytes == 0  # nothing torn


def test_random_write_failures_across_segments_leave_every_record_once(
    tmp_path, monkeypatch
):
    """Failures at random calls (creating a segment, writing half a batch,
    cutting it back) while the log rolls over many segments: retried
    flushes end with every record once, in sequence."""
    rng = random.Random(14)
    fos = FailingOS(rng, p=0.3)
    monkeypatch.setattr(_ticklog, 'os', fos)
    w = TickLog.open('AAA', directory=tmp_path, segment_bytes=2000)
    seq = 0
    for _ in range(60):
        for _ in range(rng.randrange(1, 12)):
            seq += 1
            w.append(seq, 1000.0 + seq, *_rec(seq))
        try:
            w.flush()
        except OSError:
            pass
    fos.p = 0.0
    w.close()
    assert fos.failed > 20
    assert len(segments(tmp_path)) > 5
    _intact(tmp_path, range(1, seq + 1))
    w = TickLog.open('AAA', directory=tmp_path)
    assert w.last_seq == seq and w.cut_bytes == 0


async def _until(cond, timeout: float = 30) -> None:
    with trio.fail_after(timeout):
        while not cond():
            await trio.sleep(0.005)


async def test_the_recorder_survives_a_full_disk_counts_drops_and_recovers(
    tmp_path, monkeypatch, caplog
):
    fos = FailingOS()
    monkeypatch.setattr(_ticklog, 'os', fos)
    monkeypatch.setattr(_ticklog, 'RECORDER_OUTBOX', 50)
    bus = FeedsBus()
    bus.add_topic('AAA')
    log = TickLog.open('AAA', directory=tmp_path)
    seq = 0

    def publish(n: int) -> None:
        nonlocal seq
        for _ in range(n):
            seq += 1
            bus.publish('AAA', *_rec(seq))

    async with trio.open_nursery() as n:
        sub = await n.start(
            functools.partial(run_recorder, flush_s=0.01, retry_max_s=0.05),
            bus,
            'AAA',
            log,
        )

        def info() -> dict:
            return recorder_info(bus.get_subs('AAA'))

        publish(30)
        await _until(lambda: info()['records'] == 30)
        fos.full, fos.part = True, 40  # the disk fills in the middle of a write
        publish(10)
        await _until(lambda: info()['failures'] >= 1)
        assert info()['failing_since'] is not None
        assert 'No space left on device' in info()['last_error']
        assert str(tmp_path) in info()['last_error']
        # the feed goes on: the bus publishes; 50 quotes are held at most
        publish(200)
        await _until(lambda: info()['failures'] >= 4)  # retried, with backoff
        dropped = info()['dropped']
        assert dropped == 160 and info()['pending'] == 50
        assert info()['records'] == 30
        fos.full = False
        await _until(lambda: info()['failing_since'] is None)
        publish(20)
        await _until(lambda: info()['records'] + info()['dropped'] == seq)
        n.cancel_scope.cancel()
    assert sub.stats.dropped == dropped  # drops only while writes failed
    got = _intact(tmp_path)
    assert len(got) == seq - dropped and got[-1] == seq
    assert got[:40] == list(range(1, 41))  # the failed write, whole, in order
    # said once when it began, once when it ended: each one line
    said = [
        r.getMessage() for r in caplog.records if 'tick log of AAA' in r.getMessage()
    ]
    assert len(said) == 2, said
    assert 'cannot be written (No space left on device)' in said[0]
    assert str(tmp_path) in said[0]
    assert 'is written again' in said[1] and f'{dropped} quotes dropped' in said[1]
    assert all('\n' not in s for s in said)
    assert not [r for r in caplog.records if 'fell behind' in r.getMessage()]


async def test_a_recorder_ended_while_writes_fail_counts_what_it_could_not_write(
    tmp_path, monkeypatch
):
    fos = FailingOS()
    monkeypatch.setattr(_ticklog, 'os', fos)
    bus = FeedsBus()
    bus.add_topic('AAA')
    log = TickLog.open('AAA', directory=tmp_path)
    async with trio.open_nursery() as n:
        sub = await n.start(
            functools.partial(run_recorder, flush_s=0.01, retry_max_s=0.05),
            bus,
            'AAA',
            log,
        )
        for i in range(1, 11):
            bus.publish('AAA', *_rec(i))
        await _until(lambda: recorder_info([sub])['records'] == 10)
        fos.full = True
        for i in range(11, 21):
            bus.publish('AAA', *_rec(i))
        await _until(lambda: recorder_info(bus.get_subs('AAA'))['failures'] >= 1)
        for i in range(21, 26):
            bus.publish('AAA', *_rec(i))
        n.cancel_scope.cancel()  # the recorder ends; nothing escapes it
    info = recorder_info([sub])
    assert info['records'] == 10 and info['pending'] == 15
    assert sub.stats.dropped == 15  # the quotes it could not write, counted
    _intact(tmp_path, range(1, 11))


# --- through the feed daemon: a real full disk (a small tmpfs) ---------------


@pytest.fixture
def small_disk(tmp_path, monkeypatch):
    """A 16 MB tmpfs as the data directory (room for the log, ~30 kB/s,
    once the filler is gone); needs root (CI runs as root)."""
    import subprocess

    mnt = tmp_path / 'small'
    mnt.mkdir()
    if subprocess.run(
        ['mount', '-t', 'tmpfs', '-o', 'size=16m', 'tmpfs', str(mnt)],
        capture_output=True,
    ).returncode:
        pytest.skip('cannot mount a small tmpfs here (needs root)')
    monkeypatch.setenv('TRACTOR_SAMPLER_DATA_DIR', str(mnt))
    try:
        yield mnt
    finally:
        if subprocess.run(['umount', str(mnt)], capture_output=True).returncode:
            subprocess.run(['umount', '-l', str(mnt)])


def _fill(mnt) -> None:
    fd = os.open(mnt / 'filler', os.O_WRONLY | os.O_CREAT)
    try:
        while True:
            os.write(fd, b'\0' * 4096)
    except OSError as err:
        assert err.errno == errno.ENOSPC
    finally:
        os.close(fd)


async def test_a_full_disk_leaves_the_feed_daemon_serving_ls_shows_it_and_it_recovers(
    other_addr, small_disk
):
    from tractor_sampler import introspect, open_market_feed
    from tractor_sampler._cli import render_ls
    from tractor_services import open_service_root

    async with open_service_root(other_addr):
        async with open_market_feed(
            ['AAA'],
            config={'tick_rate': 100, 'trade_prob': 0.5},
            buffers={1.0: (256, 30)},
            record=True,
        ) as feed:

            async def until(cond, timeout: float = 60) -> tuple:
                with trio.fail_after(timeout):
                    while True:
                        t = (await feed.info()).topics['AAA']
                        if cond(t, t.ticklog):
                            return t, t.ticklog
                        await trio.sleep(0.1)

            await until(lambda t, tl: tl.get('records', 0) > 0)
            _fill(small_disk)
            t, tl = await until(lambda t, tl: tl['failures'] >= 1)
            assert tl['failing_since'] is not None
            assert 'No space left on device' in tl['last_error']
            assert str(small_disk) in tl['last_error']
            # the feed serves on: quotes published, bars built
            q0, shm = t.quotes, feed.buffer('AAA', 1.0)
            n0 = len(shm)
            await until(lambda t, tl: t.quotes >= q0 + 100 and t.state == 'up')
            with trio.fail_after(60):
                while len(shm) < n0 + 1:
                    await trio.sleep(0.1)
            text = render_ls(await introspect(other_addr))
            line = next(x for x in text.splitlines() if 'tick log of AAA' in x)
            assert 'FAILING' in line and 'No space left on device' in line
            (small_disk / 'filler').unlink()
            # retried with backoff (up to 30 s apart): it writes again
            t, tl = await until(lambda t, tl: tl['failing_since'] is None, 120)
            assert tl['dropped'] == 0  # held in memory meanwhile
            r0 = tl['records']
            await until(lambda t, tl: tl['records'] > r0)
            text = render_ls(await introspect(other_addr))
            line = next(x for x in text.splitlines() if 'tick log of AAA' in x)
            assert 'FAILING' not in line and 'failed writes (retried)' in line
    # every record intact and in sequence, none lost
    seqs = [r.seq for r in read_ticks('AAA', data_dir=small_disk)]
    assert len(seqs) > 200
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))


def test_the_metrics_export_the_tick_logs_failed_writes():
    pytest.importorskip(
        'prometheus_client', reason='needs the metrics extra (prometheus-client)'
    )
    import msgspec

    from tractor_sampler._info import TreeInfo
    from tractor_sampler._metrics import Monotonic, families

    topic = {
        'state': 'up',
        'subscribers': [{'delivered': 90, 'dropped': 7, 'peer': 'ticklog'}],
        'ticklog': {'records': 80, 'dropped': 7, 'failures': 3},
    }
    tree = msgspec.convert(
        {
            'registry': '127.0.0.1:1',
            'feeds': [
                {'backend': 'sim', 'pid': 1, 'time': 0.0, 'topics': {'AAA': topic}}
            ],
        },
        TreeInfo,
    )
    got = {
        s.name: s.value
        for f in families(tree, Monotonic())
        for s in f.samples
        if s.name.startswith('samplerd_ticklog_')
    }
    assert got['samplerd_ticklog_failures_total'] == 3
    assert got['samplerd_ticklog_dropped_total'] == 7
    assert got['samplerd_ticklog_records_total'] == 80  # written, not handed over
