"""The tick log (tractor_sampler._ticklog): framed records, a torn tail cut
on reopen, SIGKILL of the writer mid-stream, the reader's errors, and the
in-process recorder subscribed to a feed bus."""

from __future__ import annotations

import random
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import trio
import trio.lowlevel

from feedbus import FeedsBus
from tractor_sampler._ticklog import (
    TickLog,
    TickLogError,
    read_ticks,
    run_recorder,
    segments,
)


def _rec(seq: int) -> tuple[dict, list]:
    """What the writer writes for ``seq`` (the test checks it back)."""
    return {'n': seq, 'x': seq * 0.5}, [
        {'type': 'trade', 'price': float(seq), 'size': 1.0}
    ]


WRITER = textwrap.dedent(
    """
    import sys
    from tractor_sampler._ticklog import TickLog
    d = sys.argv[1]
    log = TickLog.open('AAA', directory=d, segment_bytes=200_000)
    seq = log.last_seq
    print('start', seq, flush=True)
    while True:
        for _ in range(50):
            seq += 1
            log.append(seq, 1.7e9 + seq * 1e-3, {'n': seq, 'x': seq * 0.5},
                       [{'type': 'trade', 'price': float(seq), 'size': 1.0}])
        log.flush()
        print('flushed', seq, flush=True)
    """
)


def _check_log(d: Path) -> int:
    """Every record intact and in sequence from 1; returns the last seq."""
    want = 1
    for r in read_ticks('AAA', directory=d):
        assert r.seq == want
        fields, ticks = _rec(want)
        assert r.fields == fields and r.ticks == ticks
        assert r.time == 1.7e9 + want * 1e-3
        want += 1
    return want - 1


async def test_sigkill_of_the_writer_mid_stream_leaves_every_surviving_record_intact_and_in_sequence(
    tmp_path,
):
    rng = random.Random(7)
    flushed = 0
    for _ in range(20):
        with trio.fail_after(60):
            proc = await trio.lowlevel.open_process(
                [sys.executable, '-c', WRITER, str(tmp_path)],
                stdout=subprocess.PIPE,
            )
            try:
                buf = b''
                want = rng.randint(1, 8)
                seen = 0
                start = None
                while seen < want:
                    chunk = await proc.stdout.receive_some(4096)
                    assert chunk, 'the writer ended early'
                    buf += chunk
                    *done, buf = buf.split(b'\n')
                    for line in done:
                        word, n = line.split()
                        if word == b'start':
                            start = int(n)
                        else:
                            seen += 1
                            flushed = int(n)
                # it writes on: killed somewhere mid-stream
                proc.send_signal(signal.SIGKILL)
            finally:
                proc.kill()
                await proc.wait()
                await proc.stdout.aclose()
        # it went on from where the last run's intact records ended
        assert start is not None and start <= flushed
        last = _check_log(tmp_path)
        # nothing flushed was lost (a kill loses at most what was not flushed)
        assert last >= flushed
        # and the writer reopens after the torn tail (cut), appending after it
        TickLog.open('AAA', directory=tmp_path).close()
        assert _check_log(tmp_path) == last
    assert len(segments(tmp_path)) > 1  # rolled over by size on the way


def test_a_torn_last_record_is_cut_on_reopen_and_appending_goes_on(tmp_path):
    with TickLog.open('AAA', directory=tmp_path) as w:
        for i in range(1, 11):
            w.append(i, 1.7e9 + i * 1e-3, *_rec(i))
    (seg,) = segments(tmp_path)
    data = seg.read_bytes()
    seg.write_bytes(data[:-3])  # half a record's payload
    assert _check_log(tmp_path) == 9  # a reader stops quietly at the torn tail
    w = TickLog.open('AAA', directory=tmp_path)
    assert w.last_seq == 9 and w.cut_bytes > 0
    w.append(10, 1.7e9 + 10e-3, *_rec(10))
    w.close()
    assert _check_log(tmp_path) == 10


def test_a_corrupt_older_segment_is_one_line_naming_the_file(tmp_path):
    with TickLog.open('AAA', directory=tmp_path, segment_bytes=2000) as w:
        for i in range(1, 101):
            w.append(i, 1.7e9 + i * 1e-3, *_rec(i))
    segs = segments(tmp_path)
    assert len(segs) > 2
    data = bytearray(segs[0].read_bytes())
    data[len(data) // 2] ^= 0xFF
    segs[0].write_bytes(bytes(data))
    with pytest.raises(TickLogError) as info:
        list(read_ticks('AAA', directory=tmp_path))
    msg = str(info.value)
    assert str(segs[0]) in msg and 'corrupt segment' in msg and '\n' not in msg


def test_a_log_of_another_topic_is_refused_naming_the_file(tmp_path):
    with TickLog.open('AAA', directory=tmp_path) as w:
        w.append(1, 1.7e9, *_rec(1))
    with pytest.raises(TickLogError, match="holds topic 'AAA', not 'BBB'"):
        list(read_ticks('BBB', directory=tmp_path))
    with pytest.raises(TickLogError, match="holds topic 'AAA', not 'BBB'"):
        TickLog.open('BBB', directory=tmp_path)


def test_reader_gives_the_records_between_times(tmp_path):
    with TickLog.open('AAA', directory=tmp_path) as w:
        for i in range(1, 101):
            w.append(i, 1000.0 + i, *_rec(i))
    got = [r.seq for r in read_ticks('AAA', 1010.0, 1020.0, directory=tmp_path)]
    assert got == list(range(10, 20))


async def test_the_recorder_subscribes_to_the_bus_and_flushes_every_quote(tmp_path):
    bus = FeedsBus()
    bus.add_topic('AAA')
    log = TickLog.open('AAA', directory=tmp_path)
    async with trio.open_nursery() as n:
        sub = await n.start(run_recorder, bus, 'AAA', log)
        assert sub in bus.get_subs('AAA')
        for i in range(1, 501):
            fields, ticks = _rec(i)
            bus.publish('AAA', fields, ticks)
            bus.publish('BBB', fields, ticks)  # another topic: not recorded
            if i % 100 == 0:
                await trio.lowlevel.checkpoint()
        with trio.fail_after(30):
            while sub.stats.delivered < 500:
                await trio.sleep(0.01)
        # flushed within the flush interval, with the recorder still running
        with trio.fail_after(30):
            while sum(1 for _ in read_ticks('AAA', directory=tmp_path)) < 500:
                await trio.sleep(0.05)
        n.cancel_scope.cancel()
    recs = list(read_ticks('AAA', directory=tmp_path))
    assert [r.seq for r in recs] == list(range(1, 501))
    assert recs[7].fields == _rec(8)[0] and recs[7].ticks == _rec(8)[1]
    assert sub.stats.dropped == 0
    assert sub not in bus.get_subs('AAA')


def test_a_segment_cut_in_its_header_is_read_as_empty_and_removed_on_reopen(tmp_path):
    with TickLog.open('AAA', directory=tmp_path) as w:
        w.append(1, 1.7e9 + 1e-3, *_rec(1))
    (seg,) = segments(tmp_path)
    torn = tmp_path / '29991231-0000.tlog'  # a writer killed while it began a segment
    torn.write_bytes(seg.read_bytes()[:12])
    assert _check_log(tmp_path) == 1
    w = TickLog.open('AAA', directory=tmp_path)
    assert w.last_seq == 1 and not torn.exists()
    w.close()


def test_damage_inside_the_newest_segment_is_refused_not_cut(tmp_path):
    with TickLog.open('AAA', directory=tmp_path) as w:
        for i in range(1, 21):
            w.append(i, 1.7e9 + i, *_rec(i))
    (seg,) = segments(tmp_path)
    data = bytearray(seg.read_bytes())
    data[len(data) // 2] ^= 0xFF
    seg.write_bytes(bytes(data))
    with pytest.raises(TickLogError, match='corrupt segment .*with data after it'):
        TickLog.open('AAA', directory=tmp_path)
    assert seg.read_bytes() == bytes(data)  # nothing cut
    with pytest.raises(TickLogError, match='corrupt segment'):
        list(read_ticks('AAA', directory=tmp_path))


def test_reopening_after_a_segment_begun_without_records_goes_on_from_the_last_record(
    tmp_path,
):
    with TickLog.open('AAA', directory=tmp_path, segment_bytes=2000) as w:
        for i in range(1, 31):
            w.append(i, 1.7e9 + i * 1e-3, *_rec(i))
        w.flush()
        # killed right after writing the new segment's header
        w._begin_segment(1.7e9 + 1)
        w._write(w._head())
    w = TickLog.open('AAA', directory=tmp_path)
    assert w.last_seq == 30
    w.append(31, 1.7e9 + 31e-3, *_rec(31))
    w.close()
    assert _check_log(tmp_path) == 31
