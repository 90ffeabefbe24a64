"""Bars for a client on another host (issue #13 item 3): the feed daemon's
buffers by stream into in-process buffers with the shm buffer's read API.

On one host the stream is forced (``remote_bars=True``) or the client is
given another host id; tests/multihost/test_remote_bars.py runs it across
hosts."""

from __future__ import annotations

import os
import signal
import time

import numpy as np
import pytest
import trio

from tractor_sampler import open_market_feed
from tractor_sampler._remote import (
    REMOTE_BARS_ENV,
    SILENCE_S,
    LocalBuffer,
    _Tail,
    remote_bars_wanted,
)
from tractor_sampler.shm import ShmArray, StepPlan, open_shm_array
from tractor_services import PeerGone, _host, host_id, open_service_root

BUFS = {1.0: (256, 30), 60.0: (64, 10)}
FAST = {'tick_rate': 100, 'trade_prob': 0.5}


async def wait_until(pred, timeout=30, poll=0.02):
    with trio.fail_after(timeout):
        while not pred():
            await trio.sleep(poll)


# --- the buffer and the diff, without actors ----------------------------------


class _T:
    name = 'X'


def _fill(shm: ShmArray, n: int, t0: float = 1000.0) -> None:
    rows = np.zeros(n, dtype=shm.dtype)
    rows['index'] = np.arange(n)
    rows['time'] = t0 + np.arange(n)
    for f in ('open', 'high', 'low', 'close'):
        rows[f] = 100.0 + np.arange(n)
    shm.push(rows)


def _copy(tail: _Tail, rows: int) -> LocalBuffer:
    snap = tail.snapshot(rows)
    buf = LocalBuffer('X', 1.0, tail.shm.token, 2 * max(rows, 64))
    buf._load(snap['first'], snap['lo'], snap['last'], snap['rows'])
    return buf


def _sync(tail: _Tail, buf: LocalBuffer, full: bool = False) -> bool:
    u = tail.poll(full)
    if u is None:
        return False
    _, lo, last, data = u
    buf._apply(lo, last, data)
    return True


def test_a_local_buffer_follows_steps_open_row_updates_and_corrections(shm_key):
    with open_shm_array(4096, shm_key) as shm:
        _fill(shm, 40)
        tail = _Tail(_T(), 1.0, shm)
        buf = _copy(tail, 16)
        # the snapshot: the last 16 rows, as they are
        assert len(buf) == 16
        assert buf.array.tobytes() == shm.array[-16:].tobytes()
        assert buf.token == shm.token and buf.readonly
        assert not _sync(tail, buf)  # nothing changed: nothing sent

        rows = shm.rows
        # the open row's update
        rows[shm.last - 1]['close'] = 7.0
        assert _sync(tail, buf)
        assert buf.last_row.tobytes() == shm.last_row.tobytes()
        # a step (a row appended), then a correction of the closed row
        StepPlan([shm]).step(1.0)
        assert _sync(tail, buf)
        rows[shm.last - 2]['high'] = 999.0
        assert _sync(tail, buf, full=True)
        assert buf.array.tobytes() == shm.array[-len(buf) :].tobytes()
        # many steps at once (a catch-up), past the buffer's storage: the
        # newest rows are kept, the oldest go
        for i in range(150):
            StepPlan([shm]).step(1.0)
            rows[shm.last - 1]['volume'] = i
            if i % 7 == 0:
                _sync(tail, buf)
        _sync(tail, buf, full=True)
        assert len(buf) <= buf.size
        assert buf.array.tobytes() == shm.array[-len(buf) :].tobytes()
        assert list(buf.array['index']) == list(
            range(
                int(shm.last_row['index']) - len(buf) + 1,
                int(shm.last_row['index']) + 1,
            )
        )


def test_a_correction_further_back_than_the_tail_is_sent_by_the_sweep(shm_key):
    with open_shm_array(4096, shm_key) as shm:
        _fill(shm, 300)
        tail = _Tail(_T(), 1.0, shm, 256)
        buf = _copy(tail, 256)
        shm.rows[shm.last - 100]['low'] = 1.5  # a late trade, 100 bars back
        assert not _sync(tail, buf, full=True)  # beyond the tail's 64 rows
        assert _sync(tail, buf, full=True) is False
        tail_poll = tail.poll(False, sweep=True)
        assert tail_poll is not None and tail_poll[1] == shm.last - 100
        buf._apply(*tail_poll[1:])
        assert buf.array.tobytes() == shm.array[-len(buf) :].tobytes()
        assert tail.poll(False, sweep=True) is None  # sent: nothing more


def test_a_local_buffer_is_read_only_and_raises_peer_gone_once_gone(shm_key):
    with open_shm_array(64, shm_key) as shm:
        _fill(shm, 4)
        buf = _copy(_Tail(_T(), 1.0, shm), 8)
        with pytest.raises(PermissionError):
            buf.push(shm.array[-1:])
        with pytest.raises(ValueError):
            buf.array[0] = buf.array[1]
        buf._gone(PeerGone('the feed daemon sent nothing for 3 s'))
        for read in (
            lambda: buf.array,
            lambda: buf.last_row,
            lambda: len(buf),
            lambda: buf.first,
        ):
            with pytest.raises(PeerGone, match='sent nothing'):
                read()


def test_same_host_is_decided_by_host_id_and_can_be_forced(monkeypatch):
    monkeypatch.delenv(REMOTE_BARS_ENV, raising=False)
    assert remote_bars_wanted(None, {'host_id': 'f' * 32})
    assert not remote_bars_wanted(None, {'host_id': host_id()})
    assert not remote_bars_wanted(None, {})  # a daemon without host ids
    assert remote_bars_wanted(True, {'host_id': host_id()})
    assert not remote_bars_wanted(False, {'host_id': 'f' * 32})
    monkeypatch.setenv(REMOTE_BARS_ENV, '1')
    assert remote_bars_wanted(None, {'host_id': host_id()})
    monkeypatch.setenv(REMOTE_BARS_ENV, 'yes')
    with pytest.raises(ValueError, match=REMOTE_BARS_ENV):
        remote_bars_wanted(None, {})


@pytest.mark.parametrize(
    'kwargs, env, message',
    [
        ({'remote_rows': 0}, None, 'remote_rows=0'),
        ({'remote_bars': 'yes'}, None, 'remote_bars='),
        ({}, 'maybe', REMOTE_BARS_ENV),
    ],
)
async def test_bad_remote_options_are_refused_before_anything_starts(
    kwargs, env, message, monkeypatch
):
    if env is not None:
        monkeypatch.setenv(REMOTE_BARS_ENV, env)
    # nothing answers at port 1: a refusal after a start would say so
    with pytest.raises(ValueError, match=message):
        async with open_market_feed(['AAA'], registry_addr=('127.0.0.1', 1), **kwargs):
            pass


# --- across actors --------------------------------------------------------------


def _closed_equal(local: LocalBuffer, shm: ShmArray) -> bool:
    """Every closed row of ``local`` is the shm buffer's row of the same
    ``index``, byte for byte (and there are some)."""
    rows = local.array[:-1]
    src = shm.array
    if len(rows) < 3:
        return False
    pos = rows['index'] - int(src['index'][0])
    if pos[0] < 0 or pos[-1] >= len(src) - 1:
        return False
    return rows.tobytes() == src[pos].tobytes()


async def test_remote_client_bars_equal_the_daemons_row_for_row(other_addr):
    async with open_service_root(other_addr):
        async with (
            open_market_feed(['AAA'], config=FAST, buffers=BUFS) as here,
            open_market_feed(['AAA'], remote_bars=True) as there,
        ):
            for p in BUFS:
                shm, local = here.buffer('AAA', p), there.buffer('AAA', p)
                assert isinstance(shm, ShmArray) and isinstance(local, LocalBuffer)
                assert local.token == shm.token and local.readonly
                # the snapshot holds the whole window here (history + open bar)
                assert local.array['index'][0] == shm.array['index'][0]
            shm, local = here.buffer('AAA', 1.0), there.buffer('AAA', 1.0)
            n0 = int(local.last_row['index'])
            # steps close rows: they arrive, and each closed row ends as the
            # daemon's (late corrections included)
            await wait_until(lambda: int(local.last_row['index']) >= n0 + 3)
            await wait_until(lambda: _closed_equal(local, shm))
            assert local.updates > 0
            # the open row follows too
            await wait_until(lambda: local.last_row['volume'] > 0)


async def test_remote_snapshot_is_the_last_n_rows(other_addr):
    async with open_service_root(other_addr):
        async with (
            open_market_feed(['AAA'], buffers=BUFS) as here,
            open_market_feed(['AAA'], remote_bars=True, remote_rows=8) as there,
        ):
            shm, local = here.buffer('AAA', 60.0), there.buffer('AAA', 60.0)
            assert len(local) == 8
            assert local.array['index'][-1] == shm.array['index'][-1]
            assert local.array[:-1].tobytes() == shm.array[-8:-1].tobytes()


async def test_a_client_with_another_host_id_gets_bars_by_stream(
    other_addr, monkeypatch
):
    monkeypatch.delenv(REMOTE_BARS_ENV, raising=False)
    async with open_service_root(other_addr):
        async with open_market_feed(['AAA'], buffers=BUFS) as same:
            assert isinstance(same.buffer('AAA'), ShmArray)
        # this process now says it is on another host than the feed daemon
        monkeypatch.setitem(_host._cache, str(_host.SHM_DIR), 'f' * 32)
        async with open_market_feed(['AAA'], buffers=BUFS) as other:
            assert isinstance(other.buffer('AAA'), LocalBuffer)
            assert len(other.buffer('AAA', 60.0)) > 0


async def test_a_silent_feed_daemon_is_peer_gone_for_a_remote_client(other_addr):
    async with open_service_root(other_addr):
        pid = None
        try:
            with trio.fail_after(60):
                with pytest.raises(PeerGone, match='sent nothing'):
                    async with open_market_feed(
                        ['AAA'], buffers=BUFS, remote_bars=True
                    ) as feed:
                        buf = feed.buffer('AAA')
                        pid = (await feed.info()).pid
                        os.kill(pid, signal.SIGSTOP)  # alive, but silent
                        await trio.sleep_forever()
            with pytest.raises(PeerGone):
                _ = buf.array
        finally:
            if pid is not None:
                os.kill(pid, signal.SIGCONT)


async def test_a_stall_of_the_client_itself_is_not_peer_gone(other_addr):
    """The client's own event loop blocked past the silence limit (the
    daemon sent on meanwhile): the messages that arrived are read, no
    PeerGone."""
    async with open_service_root(other_addr):
        async with open_market_feed(
            ['AAA'], config=FAST, buffers=BUFS, remote_bars=True
        ) as feed:
            buf = feed.buffer('AAA')
            await wait_until(lambda: buf.updates > 0)
            time.sleep(SILENCE_S + 1.5)  # noqa: ASYNC251 (this process stalls)
            n = buf.updates
            # updates go on (past the watch's grace), and reads work
            await wait_until(lambda: buf.updates > n + 20)
            assert len(buf) > 0
