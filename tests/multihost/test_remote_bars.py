"""Bars for a client on another host (issue #13, item 3): a client on b
of a feed daemon on a gets its buffers by stream (a's shared memory is
not b's), and their closed rows are a's, row for row."""

from __future__ import annotations

import json

import pytest
import trio
from _hosts import PROGRAMS, PYTHON, Network, read_line, stop

pytestmark = pytest.mark.multihost

PORT = 6161


def _json(res) -> dict:
    assert res.returncode == 0, (res.stdout.decode() + res.stderr.decode())[-3000:]
    return json.loads(res.stdout.decode().strip().splitlines()[-1])


async def test_remote_client_bars_equal_the_feed_hosts_row_for_row(net: Network):
    a, b = net['a'], net['b']
    root = await a.start(
        PYTHON, '-m', 'tractor_sampler', 'run', '--host', a.addr, '--port', str(PORT)
    )
    holder = None
    try:
        assert 'samplerd ready' in await read_line(root)
        # the topic runs on a for the whole test
        holder = await a.start(
            PYTHON, str(PROGRAMS / 'bars_dump.py'), a.addr, str(PORT), 'AAA', '1000000'
        )
        assert json.loads(await read_line(holder))['ready']
        dump = [PYTHON, str(PROGRAMS / 'bars_dump.py'), a.addr, str(PORT), 'AAA', '4']
        there = _json(await b.run(*dump, timeout=180))
        # then a's own view, read from its shared memory
        here = _json(await a.run(*dump, timeout=180))
        assert here['host_id'] != there['host_id']
        assert not here['remote'] and there['remote']
        for p in ('1.0', '60.0'):
            got, want = there['rows'][p], here['rows'][p]
            assert got, f'no closed {p} s rows on b'
            # every closed row b has is a's row of the same index, byte for byte
            assert {i: want.get(i) for i in got} == got
        # b saw rows close while it ran (steps after its snapshot)
        assert len(there['rows']['1.0']) >= 4
    finally:
        if holder is not None:
            holder.kill()
            with trio.move_on_after(30):
                await holder.wait()
        assert await stop(root) == 0


async def test_a_cut_link_ends_a_remote_clients_bars_with_peer_gone(net: Network):
    """b's bars come by stream from a; when b's link is cut the feed ends
    with PeerGone (heartbeats, or keepalive: whichever notices first), and
    reads of the buffer raise it too, not a stale copy."""
    a, b = net['a'], net['b']
    root = await a.start(
        PYTHON, '-m', 'tractor_sampler', 'run', '--host', a.addr, '--port', str(PORT)
    )
    holder = client = None
    try:
        assert 'samplerd ready' in await read_line(root)
        holder = await a.start(
            PYTHON, str(PROGRAMS / 'bars_dump.py'), a.addr, str(PORT), 'AAA', '1000000'
        )
        assert json.loads(await read_line(holder))['ready']
        client = await b.start(
            PYTHON, str(PROGRAMS / 'bars_until_gone.py'), a.addr, str(PORT), 'AAA'
        )
        assert json.loads(await read_line(client)) == {'ready': True, 'remote': True}
        net.cut('b')
        out = json.loads(await read_line(client, timeout=60))
        assert out['lost'] == 'PeerGone', out
        assert out['read'] == 'PeerGone', out
    finally:
        net.heal('b')
        for proc in (client, holder):
            if proc is not None:
                proc.kill()
                with trio.move_on_after(30):
                    await proc.wait()
        assert await stop(root) == 0


async def test_watch_on_another_host_shows_bars(net: Network):
    """`samplerd watch` on b, unchanged, reads its bars from the stream."""
    a, b = net['a'], net['b']
    root = await a.start(
        PYTHON, '-m', 'tractor_sampler', 'run', '--host', a.addr, '--port', str(PORT)
    )
    holder = None
    try:
        assert 'samplerd ready' in await read_line(root)
        holder = await a.start(
            PYTHON, str(PROGRAMS / 'bars_dump.py'), a.addr, str(PORT), 'AAA', '1000000'
        )
        assert json.loads(await read_line(holder))['ready']
        res = await b.run(
            PYTHON,
            '-m',
            'tractor_sampler',
            'watch',
            'AAA',
            '--host',
            a.addr,
            '--port',
            str(PORT),
            '--duration',
            '3',
            '--rows',
            '2',
        )
        out = res.stdout.decode()
        assert res.returncode == 0, (out + res.stderr.decode())[-3000:]
        assert 'AAA@sim' in out and 'state up' in out
        # the buffer holds the snapshot (the last 1024 rows of a's), and bars
        assert '1 s bars, 10' in out and 'open' in out and 'close' in out
    finally:
        if holder is not None:
            holder.kill()
            with trio.move_on_after(30):
                await holder.wait()
        assert await stop(root) == 0
