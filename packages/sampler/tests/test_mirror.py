"""The relay mirror (issue #13, item 4) on one host: a second root,
``samplerd run --upstream`` the first, whose feed daemon copies the first
one's topics into shared memory of its own.  (Across hosts:
tests/multihost/test_mirror.py.)  The mirror always takes its bars by
stream (``stream_bars``), on one host as on another, so nothing needs
forcing here."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import trio
from _procs import SAMPLERD, Proc

from feedbus import FeedsBus
from tractor_sampler._feedd import Topic
from tractor_sampler._mirror import (
    UPSTREAM_ENV,
    MirrorDaemon,
    _Seeded,
    parse_upstream,
    upstream_env,
)
from tractor_sampler._remote import _Tail
from tractor_sampler.shm import open_shm_array
from tractor_services.testing import free_port, wait_gone

PROGRAMS = Path(__file__).parent / 'programs'


def root(port: int, *extra: str) -> Proc:
    return Proc('run', '--port', str(port), '-l', 'warning', *extra)


def test_upstream_is_checked_in_one_line():
    assert parse_upstream('10.0.0.1:6161') == ('10.0.0.1', 6161)
    for bad, says in (
        ('10.0.0.1', 'must be HOST:PORT'),
        ('10.0.0.1:x', 'is not a port number'),
        ('10.0.0.1:0', 'out of range'),
        ('0.0.0.0:6161', 'wildcard'),
    ):
        with pytest.raises(ValueError, match=says):
            parse_upstream(bad)
    res = subprocess.run(
        [*SAMPLERD, 'run', '--port', str(free_port()), '--upstream', 'nowhere'],
        capture_output=True,
        text=True,
        timeout=60,
    )
    err = res.stderr.strip()
    assert res.returncode == 1 and len(err.splitlines()) == 1, err
    assert err == (
        "samplerd: error: --upstream: upstream 'nowhere' must be HOST:PORT "
        "(the upstream root's registry)"
    )
    port = free_port()
    res = subprocess.run(
        [*SAMPLERD, 'run', '--port', str(port), '--upstream', f'127.0.0.1:{port}'],
        capture_output=True,
        text=True,
        timeout=60,
    )
    err = res.stderr.strip()
    assert res.returncode == 1 and len(err.splitlines()) == 1, err
    assert f'--upstream 127.0.0.1:{port} is this root itself' in err


def test_upstream_env_is_set_for_the_block_only(monkeypatch):
    monkeypatch.delenv(UPSTREAM_ENV, raising=False)
    import os

    with upstream_env('127.0.0.1:7'):
        assert os.environ[UPSTREAM_ENV] == '127.0.0.1:7'
    assert UPSTREAM_ENV not in os.environ


def test_rows_copied_from_the_upstreams_updates_are_its_rows_and_corrections_are_told(
    shm_key,
):
    """a's side of stream_bars (its diff of what it sent) into the
    mirror's buffer: the window and every row equal a's after each change;
    a closed row a changes later is reported (its ``index`` span), the open
    row's updates and a step's new row are not."""
    src = open_shm_array(64, key=f'{shm_key}a')
    dst = open_shm_array(64, key=f'{shm_key}b')
    try:
        rows = np.zeros(10, dtype=src.dtype)
        rows['index'] = np.arange(10)
        rows['time'] = 1000.0 + np.arange(10)
        rows['close'] = 1.0
        src.push(rows)
        tail = _Tail(SimpleNamespace(name='AAA'), 1.0, src)
        seeded = _Seeded(dst)

        def reset(shm, start):
            shm.window[:] = (start, start)

        seeded.seed(tail.snapshot(1000), reset)

        def same() -> bool:
            return (
                dst.window.tolist() == src.window.tolist()
                and dst.array.tobytes() == src.array.tobytes()
            )

        def relay(full: bool = False):
            update = tail.poll(full)
            assert update is not None
            _, lo, last, data = update
            return seeded.apply(lo, last, data)

        assert same()
        src.last_row['close'] = 2.0  # the open row's update
        assert relay() is None and same()
        row = np.zeros(1, dtype=src.dtype)  # a step: a new open row
        row['index'], row['time'], row['close'] = 10, 1010.0, 2.0
        src.push(row)
        assert relay() is None and same()
        src.rows[src.last - 4]['close'] = 3.0  # a correction of a closed row
        assert relay(full=True) == (7, 8) and same()
    finally:
        for shm in (src, dst):
            shm.destroy()


def _fake_sessions(monkeypatch, refuse: str | None = None) -> list[list[str]]:
    """Sessions with the upstream that record the topics of each group and
    serve them at once (``refuse``: a group holding that topic fails
    before serving, as the upstream's refusal does)."""
    calls: list[list[str]] = []

    async def session(self, members, config, served):
        names = [m.name for m in members]
        calls.append(sorted(names))
        if refuse in names:
            raise ValueError(f'bad symbol {refuse!r}')
        for m in members:
            m.topic = Topic(name=m.name, shms={}, writer=None, config=config)  # type: ignore[arg-type]
            self.topics[m.name] = m.topic
            m.serves()
        served[0] = True
        await trio.sleep_forever()

    monkeypatch.setattr(MirrorDaemon, '_session', session)
    return calls


async def test_topics_asked_for_together_share_one_upstream_session(monkeypatch):
    calls = _fake_sessions(monkeypatch)
    async with trio.open_nursery() as tn:
        d = MirrorDaemon('sim', tn, ('127.0.0.1', 1), bus=FeedsBus())
        async with trio.open_nursery() as n:  # as attach_feed starts them
            for name in ('AAA', 'BBB', 'CCC'):
                n.start_soon(d.ensure_topic, name)
        assert calls == [['AAA', 'BBB', 'CCC']]
        assert sorted(d.topics) == ['AAA', 'BBB', 'CCC']
        await d.ensure_topic('AAA')  # running: no session
        await d.ensure_topic('DDD')  # asked for later: a group of its own
        assert calls == [['AAA', 'BBB', 'CCC'], ['DDD']]
        tn.cancel_scope.cancel()


async def test_a_topic_the_upstream_refuses_does_not_keep_its_group_from_serving(
    monkeypatch,
):
    calls = _fake_sessions(monkeypatch, refuse='BAD')
    errors: dict[str, str] = {}
    async with trio.open_nursery() as tn:
        d = MirrorDaemon('sim', tn, ('127.0.0.1', 1), bus=FeedsBus())

        async def ask(name: str) -> None:
            try:
                await d.ensure_topic(name)
            except ValueError as err:
                errors[name] = str(err)

        async with trio.open_nursery() as n:
            for name in ('AAA', 'BAD', 'BBB'):
                n.start_soon(ask, name)
        # the group failed before serving: each topic on its own then
        assert calls[0] == ['AAA', 'BAD', 'BBB']
        assert sorted(calls[1:]) == [['AAA'], ['BAD'], ['BBB']]
        assert sorted(d.topics) == ['AAA', 'BBB']
        assert list(errors) == ['BAD']
        assert (
            "topic 'BAD' (mirrored from the upstream feed daemon feedd.sim at 127.0.0.1:1)"
            in errors['BAD']
        )
        assert "bad symbol 'BAD'" in errors['BAD']
        tn.cancel_scope.cancel()


async def test_a_mirrors_closed_bars_are_the_upstreams_row_for_row_and_it_follows_the_upstream_away_and_back():
    up_port, mirror_port = free_port(), free_port()
    procs: list[Proc] = []
    up = root(up_port)
    procs.append(up)
    try:
        await up.read_until(lambda line: 'samplerd ready' in line)
        mirror = root(mirror_port, '--upstream', f'127.0.0.1:{up_port}')
        procs.append(mirror)
        ready = await mirror.read_until(lambda line: 'samplerd ready' in line)
        assert f'mirroring 127.0.0.1:{up_port}' in ready

        # one client with both feeds: through the mirror, and the upstream's own
        with trio.fail_after(180):
            res = await trio.run_process(
                [
                    sys.executable,
                    str(PROGRAMS / 'mirror_bars.py'),
                    '127.0.0.1',
                    str(mirror_port),
                    str(up_port),
                    'AAA',
                    '4',
                ],
                capture_stdout=True,
                capture_stderr=True,
                check=False,
            )
        assert res.returncode == 0, res.stderr.decode()[-3000:]
        out = json.loads(res.stdout.decode().strip().splitlines()[-1])
        # the mirror's buffers are its own shared memory, its feed daemon a mirror
        assert out['mirror_shm'] and out['upstream_shm']
        assert out['backend_dist'] == f'mirror of 127.0.0.1:{up_port}'
        # the mirror's tree steps its sample-stream subscribers
        assert out['steps'] >= 2
        for p in ('1.0', '60.0'):
            got, want = out['mirror'][p], out['upstream'][p]
            # the history and every bar closed since: the upstream's, byte for byte
            assert len(got) >= 1000, (p, len(got))
            assert {i: want.get(i) for i in got} == got, p

        assert (
            "topic 'bad sym' (mirrored from the upstream feed daemon" in out['refusal']
        )
        assert "bad symbol 'bad sym'" in out['refusal']

        # the upstream stops: the mirror's topic is restarting; it comes back with it
        watch = Proc(
            argv=[
                sys.executable,
                str(PROGRAMS / 'mirror_watch.py'),
                '127.0.0.1',
                str(mirror_port),
                'AAA',
            ]
        )
        procs.append(watch)
        first = json.loads(await watch.read_until(lambda line: '"ready"' in line))
        assert first == {'ready': True, 'shm': True, 'state': 'up'}
        assert await up.stop() == 0
        assert not wait_gone(up.family), 'the upstream root left processes behind'
        line = await watch.read_until(lambda line: '"restarting"' in line)
        assert 'went away' in json.loads(line)['error']
        up = root(up_port)
        procs.append(up)
        await up.read_until(lambda line: 'samplerd ready' in line)
        # up again, and the re-seeded buffers told to b's sample-stream
        # subscribers (views redraw them), in either order
        seen: dict[str, dict] = {}
        while not {'up', 'backfill'} <= set(seen):
            msg = json.loads(await watch.read_until(lambda line: True))
            key = 'backfill' if 'backfill' in msg else msg.get('state')
            seen[key] = msg
        assert seen['up']['error'] is None
        assert seen['backfill']['backfill'] == 'history'
        assert await watch.stop() == 0
        assert await mirror.stop() == 0
        assert await up.stop() == 0
    finally:
        for proc in procs:
            proc.kill()
    family = set().union(*(p.family for p in procs))
    assert not wait_gone(family), 'processes left behind'


T0 = 1_700_000_000.0


def _rows(start: float, n: int, dtype) -> np.ndarray:
    rows = np.zeros(n, dtype=dtype)
    rows['index'] = np.arange(n)
    rows['time'] = start + np.arange(n)
    for i, f in enumerate(('open', 'high', 'low', 'close')):
        rows[f] = 100.0 + np.arange(n) + i / 10
    rows['volume'] = 1.0
    return rows


async def test_a_mirrors_buffers_go_to_its_own_store_after_its_last_stored_bar_and_on_stop(
    tmp_path,
):
    """The mirror's closed bars are appended to its host's store like a
    feed daemon's: from the last bar an earlier run stored (nothing twice,
    the upstream's window fills the gap), and its last closed bars when it
    stops.  Its buffer stays the upstream's rows (never seeded from the
    store)."""
    pytest.importorskip('pyarrow', reason='the bar store needs the store extra')
    from tractor_sampler._pool import BufferPool, GroupKey
    from tractor_sampler._store import ParquetStore
    from tractor_sampler.shm import DEFAULT_DTYPE

    store = ParquetStore(tmp_path)
    earlier = _rows(T0 - 5, 10, DEFAULT_DTYPE)  # an earlier run: T0-5 .. T0+4
    store.write('sim', 'AAA', 1.0, earlier)
    window = _rows(T0, 10, DEFAULT_DTYPE)  # a's window: closed T0 .. T0+8
    window['close'] += 1000  # a's values, not the stored ones
    served: dict[str, np.ndarray] = {}

    async def session(self, members, config, served_flag):
        for m in members:
            if m.topic is None:
                shm = self.pool.take(GroupKey(1.0, 64))
                shm.push(window)
                m.seeded[1.0] = _Seeded(shm)
                m.topic = Topic(name=m.name, shms={1.0: shm}, writer=None)  # type: ignore[arg-type]
                self.topics[m.name] = m.topic
                served[m.name] = shm
            m.serves()
        served_flag[0] = True
        await trio.sleep_forever()

    pool = BufferPool(4)
    try:
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(MirrorDaemon, '_session', session)
            async with trio.open_nursery() as tn:
                d = MirrorDaemon(
                    'sim', tn, ('127.0.0.1', 1), bus=FeedsBus(), pool=pool, store=store
                )
                tn.start_soon(d.run_store, 3600.0)
                await d.ensure_topic('AAA')
                shm = served['AAA']
                # the upstream's rows, not seeded from the store
                assert shm.array.tobytes() == window.tobytes()
                await d.store_flush(d.topics)
                got = store.read('sim', 'AAA', 1.0)
                # the earlier bars kept as stored, then a's from the next one on
                assert got['time'].tolist() == [T0 - 5 + i for i in range(14)]
                assert got['close'].tolist() == (
                    earlier['close'].tolist() + window['close'][5:9].tolist()
                )
                assert len(store.files('sim', 'AAA', 1.0)) == 2
                assert d.store_writer.failures == 0
                await d.store_flush(d.topics)  # nothing new: nothing written
                assert len(store.files('sim', 'AAA', 1.0)) == 2
                # a step on a: T0+9 closes; the mirror stops before a flush
                step = _rows(T0 + 10, 1, DEFAULT_DTYPE)
                step['index'] = 10
                shm.push(step)
                tn.cancel_scope.cancel()
            d.close()
        got = store.read('sim', 'AAA', 1.0)
        assert got['time'][-1] == T0 + 9  # flushed on the way out
        assert got['close'][-1] == window['close'][9]
        assert len(got) == 15 and d.store_writer.failures == 0
    finally:
        pool.close()


async def test_a_mirror_root_stores_the_upstreams_closed_bars_in_its_own_data_dir(
    tmp_path, monkeypatch
):
    """``samplerd run --upstream`` with its own ``--data-dir``: once it
    stops, its store holds every closed bar its client saw through it
    (the upstream's rows), the upstream storing nothing (``--no-store``)."""
    pytest.importorskip('pyarrow', reason='the bar store needs the store extra')
    from tractor_sampler._store import STORE_ENV, ParquetStore

    monkeypatch.delenv(STORE_ENV, raising=False)  # the conftest turns it off
    up_port, mirror_port = free_port(), free_port()
    up_dir, b_dir = tmp_path / 'a', tmp_path / 'b'
    procs: list[Proc] = []
    try:
        up = root(up_port, '--no-store', '--data-dir', str(up_dir))
        procs.append(up)
        await up.read_until(lambda line: 'samplerd ready' in line)
        mirror = root(
            mirror_port, '--upstream', f'127.0.0.1:{up_port}', '--data-dir', str(b_dir)
        )
        procs.append(mirror)
        await mirror.read_until(lambda line: 'samplerd ready' in line)
        with trio.fail_after(180):
            res = await trio.run_process(
                [
                    sys.executable,
                    str(PROGRAMS / 'mirror_bars.py'),
                    '127.0.0.1',
                    str(mirror_port),
                    str(up_port),
                    'AAA',
                    '3',
                ],
                capture_stdout=True,
                capture_stderr=True,
                check=False,
            )
        assert res.returncode == 0, res.stderr.decode()[-3000:]
        out = json.loads(res.stdout.decode().strip().splitlines()[-1])
        assert await mirror.stop() == 0  # its last flush
        assert await up.stop() == 0
        store = ParquetStore(b_dir)
        for p in ('1.0', '60.0'):
            seen = out['mirror'][p]
            stored = store.read('sim', 'AAA', float(p))
            assert len(stored) >= len(seen), p
            by_time = {float(r['time']): r for r in stored}
            for hexrow in seen.values():
                row = np.frombuffer(bytes.fromhex(hexrow), dtype=stored.dtype)[0]
                got = by_time[float(row['time'])]
                for f in ('open', 'high', 'low', 'close', 'volume'):
                    assert np.array_equal(got[f], row[f], equal_nan=True), (p, f)
        assert not (up_dir / 'bars').exists()
    finally:
        for proc in procs:
            proc.kill()
    family = set().union(*(p.family for p in procs))
    assert not wait_gone(family), 'processes left behind'
