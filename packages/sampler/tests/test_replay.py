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


# --- the replay backend ---------------------------------------------------------

from tractor_sampler._ticklog import TickLog  # noqa: E402
from tractor_sampler.backends import replay  # noqa: E402


def _write_log(directory, topic='AAA', n=50, t0=1000.0, dt=0.5):
    """A tick log of ``n`` quotes, each with a trade of size i."""
    with TickLog.open(topic, directory=directory) as w:
        for i in range(1, n + 1):
            t = t0 + (i - 1) * dt
            w.append(
                i,
                t,
                {'last': 100.0 + i, 'time': t},
                [
                    {'type': 'bid', 'price': 99.0 + i, 'size': 1.0},
                    {'type': 'trade', 'price': 100.0 + i, 'size': float(i), 'time': t},
                ],
            )


async def _collect(it, n=None):
    out = []
    async for batch in it:
        out.append(batch)
        if n is not None and len(out) == n:
            break
    return out


async def test_replay_keeps_the_recorded_pace_n_times_faster_with_times_restamped_to_now(
    tmp_path, autojump_clock
):
    _write_log(tmp_path / 'log', n=5, dt=1.0)
    wall = 5_000_000.0  # the "present" of this test's clock

    for speed, step in ((1.0, 1.0), (4, 0.25)):
        s0 = trio.current_time()
        got = []
        async for batch in replay.stream_quotes(
            ['AAA'],
            path=str(tmp_path / 'log'),
            speed=speed,
            stop=True,
            clock=lambda: wall + trio.current_time(),
        ):
            got.append((trio.current_time() - s0, batch['AAA']))
        assert [round(at, 6) for at, _ in got] == [i * step for i in range(5)]
        for at, q in got:
            (trade,) = [tk for tk in q['ticks'] if tk['type'] == 'trade']
            # re-stamped: the wall time it was due at, in the quote and its trade
            assert trade['time'] == q['time'] == pytest.approx(wall + s0 + at)
        assert [q['last'] for _, q in got] == [101.0, 102.0, 103.0, 104.0, 105.0]


async def test_replay_as_fast_as_possible_takes_no_time_and_yields_every_record(
    tmp_path, autojump_clock
):
    _write_log(tmp_path / 'log', n=300, dt=10.0)
    s0 = trio.current_time()
    got = await _collect(
        replay.stream_quotes(
            ['AAA'], path=str(tmp_path / 'log'), speed='max', stop=True
        )
    )
    assert trio.current_time() == s0
    assert [b['AAA']['last'] for b in got] == [100.0 + i for i in range(1, 301)]


async def test_replay_streams_a_csv_of_trades_and_quotes(tmp_path):
    f = tmp_path / 'ticks.csv'
    f.write_text(
        'time,symbol,type,price,size\n'
        '2026-01-02T10:00:00,AAA,trade,10.5,3\n'
        '2026-01-02T10:00:00.5,BBB,trade,99,1\n'
        '1767348001,AAA,bid,10.4,7\n'
        '1767348001.5,AAA,trade,10.6,2\n'
    )
    got = await _collect(
        replay.stream_quotes(['AAA'], path=str(f), speed='max', stop=True)
    )
    qs = [b['AAA'] for b in got]
    assert [q['ticks'][0]['type'] for q in qs] == ['trade', 'bid', 'trade']
    assert qs[0]['last'] == 10.5 and qs[0]['volume'] == 3.0
    assert qs[1]['bid'] == 10.4 and qs[1]['bsize'] == 7.0
    assert qs[2]['volume'] == 5.0


async def test_replay_streams_a_parquet_file(tmp_path):
    pa = pytest.importorskip(
        'pyarrow',
        reason="replaying Parquet needs the store extra: pip install 'tractor-sampler[store]'",
    )
    import pyarrow.parquet as pq

    f = tmp_path / 'ticks.parquet'
    pq.write_table(
        pa.table({'time': [1000.0, 1001.0], 'price': [1.5, 1.25], 'size': [1.0, 2.0]}),
        f,
    )
    got = await _collect(
        replay.stream_quotes(['AAA'], path=str(f), speed='max', stop=True)
    )
    assert [b['AAA']['ticks'][0]['price'] for b in got] == [1.5, 1.25]


def _refusal(**config) -> str:
    with pytest.raises(ValueError) as info:
        replay.stream_quotes(['AAA'], **config)
    msg = str(info.value)
    assert '\n' not in msg
    return msg


def test_bad_replay_input_is_one_line_naming_the_file_and_the_problem(
    tmp_path, monkeypatch
):
    missing = tmp_path / 'missing.csv'
    missing.write_text('timestamp,px,size\n1,2,3\n')
    msg = _refusal(path=str(missing))
    assert str(missing) in msg and "missing columns 'time', 'price'" in msg
    assert "rename 'timestamp' for 'time', 'px' for 'price'" in msg

    other = tmp_path / 'other.csv'
    other.write_text('time,price,symbol\n1,2,BBB\n')
    msg = _refusal(path=str(other))
    assert str(other) in msg and "no rows of topic 'AAA' (symbols: BBB)" in msg

    bad = tmp_path / 'bad.csv'
    bad.write_text('time,price\n1,2\n2,x\n')
    assert f'{bad}: line 3: bad value' in _refusal(path=str(bad))

    _write_log(tmp_path / 'bbb', topic='BBB', n=3)
    msg = _refusal(path=str(tmp_path / 'bbb'))
    assert str(tmp_path / 'bbb') in msg and "holds topic 'BBB', not 'AAA'" in msg

    _write_log(tmp_path / 'torn', n=3)
    from tractor_sampler._ticklog import segments

    TickLog(tmp_path / 'torn', 'AAA')  # (no write)
    (seg,) = segments(tmp_path / 'torn')
    data = bytearray(seg.read_bytes())
    data[20] ^= 0xFF  # inside the header record
    seg.write_bytes(bytes(data))
    msg = _refusal(path=str(seg))
    assert str(seg) in msg

    assert 'no tick log of' in _refusal(data_dir=str(tmp_path / 'nothing'))
    assert "speed='fast'" in _refusal(path=str(other), speed='fast')

    pq_file = tmp_path / 'x.parquet'
    pq_file.write_bytes(b'PAR1')
    monkeypatch.setitem(__import__('sys').modules, 'pyarrow', None)
    monkeypatch.setitem(__import__('sys').modules, 'pyarrow.parquet', None)
    msg = _refusal(path=str(pq_file))
    assert str(pq_file) in msg and 'needs pyarrow' in msg


async def test_a_replayed_log_makes_live_bars_through_the_feed_daemon(
    other_addr, data_dir
):
    _write_log(data_dir / 'ticks' / 'sim' / 'AAA', n=200, dt=0.01)
    total = sum(range(1, 201))
    async with open_service_root(other_addr):
        with pytest.raises(ValueError, match="replay file .*: missing column 'price'"):
            bad = data_dir / 'bad.csv'
            bad.write_text('time,size\n1,2\n')
            async with open_market_feed(
                ['AAA'], backend='replay', config={'path': str(bad)}
            ):
                pass
        async with open_market_feed(
            ['AAA'], backend='replay', config={'speed': 'max'}, buffers=BUFS
        ) as feed:
            assert feed.symbol_info['AAA']['asset_type'] == 'replay'
            shm = feed.buffer('AAA', 1.0)
            with trio.fail_after(60):
                while shm.array['volume'].sum() < total:
                    await trio.sleep(0.05)
            rows = shm.array
            assert rows['volume'].sum() == total
            # re-stamped to the present: in the live bars, not at t=1000
            assert rows['time'][rows['volume'] > 0].min() > 1e9


def test_samplerd_bars_writes_the_offline_bars_as_csv_and_refuses_a_missing_log(
    tmp_path, capsys
):
    import io

    from tractor_sampler._cli import main

    _write_log(tmp_path / 'ticks' / 'sim' / 'AAA', n=50, dt=0.5)
    out = io.StringIO()
    assert main(['bars', 'AAA', '--period', '2', '--data-dir', str(tmp_path)], out) == 0
    lines = out.getvalue().splitlines()
    assert lines[0] == 'time,open,high,low,close,volume'
    rows = [list(map(float, line.split(','))) for line in lines[1:]]
    want = build_bars('AAA', 2.0, data_dir=tmp_path)
    assert rows == [
        [float(r[c]) for c in ('time', 'open', 'high', 'low', 'close', 'volume')]
        for r in want
    ]
    # 2 s bars of trades every 0.5 s: 4 trades (sizes i..i+3) a bar
    assert rows[0][:2] == [1000.0, 101.0] and rows[0][5] == 1 + 2 + 3 + 4
    assert sum(r[5] for r in rows) == sum(range(1, 51))

    assert main(['bars', 'BBB', '--data-dir', str(tmp_path)], io.StringIO()) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("samplerd: error: no tick log of 'BBB' (sim) in ")
    assert '\n' not in err


async def test_a_root_with_record_set_records_every_topic_and_a_bad_data_dir_refuses_it(
    other_addr, data_dir, monkeypatch
):
    # what `samplerd run --record` sets in the root; its feed daemons inherit it
    monkeypatch.setenv('TRACTOR_SAMPLER_RECORD', '1')
    async with open_service_root(other_addr):
        async with open_market_feed(['AAA', 'BBB'], config=FAST, buffers=BUFS):
            with trio.fail_after(60):
                for topic in ('AAA', 'BBB'):
                    while not any(True for _ in read_ticks(topic, data_dir=data_dir)):
                        await trio.sleep(0.1)
        assert topic_dir('AAA', 'sim', data_dir).is_dir()
    monkeypatch.delenv('TRACTOR_SAMPLER_RECORD')
    # record=True with a data directory that is a file: one line, nothing starts
    not_a_dir = data_dir / 'file'
    not_a_dir.write_text('x')
    monkeypatch.setenv('TRACTOR_SAMPLER_DATA_DIR', str(not_a_dir))
    async with open_service_root(other_addr):
        with pytest.raises(ValueError) as info:
            async with open_market_feed(['CCC'], buffers=BUFS, record=True):
                pass
        assert f'data directory {not_a_dir}: exists and is not a directory' in str(
            info.value
        )
        with pytest.raises(ValueError, match="record='yes' must be True or False"):
            async with open_market_feed(['CCC'], record='yes'):
                pass


def test_samplerd_bars_store_appends_the_closed_bars_once(tmp_path, monkeypatch):
    import io

    pytest.importorskip(
        'pyarrow',
        reason="replaying Parquet needs the store extra: pip install 'tractor-sampler[store]'",
    )
    from tractor_sampler._cli import main
    from tractor_sampler._store import open_store

    monkeypatch.setenv('TRACTOR_SAMPLER_STORE', 'parquet')
    _write_log(tmp_path / 'ticks' / 'sim' / 'AAA', n=50, dt=0.5)
    args = ['bars', 'AAA', '--period', '2', '--data-dir', str(tmp_path), '--store']
    out = io.StringIO()
    assert main(args, out) == 0
    want = build_bars('AAA', 2.0, data_dir=tmp_path)[:-1]  # the closed ones
    assert out.getvalue() == f'{len(want)} bars of AAA (2 s) stored from its tick log\n'
    stored = open_store(tmp_path).read('sim', 'AAA', 2.0)
    for f in ('time', 'open', 'high', 'low', 'close', 'volume'):
        assert list(stored[f]) == list(want[f]), f
    out = io.StringIO()
    assert main(args, out) == 0  # again: nothing after the last stored bar
    assert out.getvalue().startswith('0 bars of AAA')
    assert len(open_store(tmp_path).read('sim', 'AAA', 2.0)) == len(want)
