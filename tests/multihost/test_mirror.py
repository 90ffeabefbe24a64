"""The relay mirror across hosts (issue #13, item 4): ``samplerd run
--host B --upstream A:P`` on b keeps shared-memory copies of a's topics
that b's clients attach as on a's host; their bars are a's, row for row;
when a's feed daemon dies the mirror's topic is ``restarting`` and comes
back with it."""

from __future__ import annotations

import json
import os
import secrets
import signal
from pathlib import Path

import psutil
import pytest
import trio
from _hosts import PROGRAMS, PYTHON, Network, inner_pid, read_line, stop
from test_addresses import PORT

# the program the one-host tests run, run here on a host
SAMPLER_PROGRAMS = (
    Path(__file__).resolve().parents[2] / 'packages/sampler/tests/programs'
)

pytestmark = pytest.mark.multihost


def _json(res) -> dict:
    assert res.returncode == 0, (res.stdout.decode() + res.stderr.decode())[-3000:]
    return json.loads(res.stdout.decode().strip().splitlines()[-1])


def _feedd_pid(root: trio.Process) -> int:
    """The pid of ``feedd.sim`` under the root ``root`` runs (in its host)."""
    pids = []
    for p in psutil.Process(inner_pid(root)).children(recursive=True):
        try:
            cmd = p.cmdline()
        except psutil.NoSuchProcess:
            continue
        if 'tractor._child' in cmd and any("('feedd.sim'," in a for a in cmd):
            pids.append(p.pid)
    assert len(pids) == 1, pids
    return pids[0]


async def _same_bars(net: Network) -> dict:
    """A client on b (of b's mirror) and one on a (of a's feed daemon):
    every settled closed row b has is a's row of the same index."""
    a, b = net['a'], net['b']
    there = _json(
        await b.run(
            PYTHON,
            str(PROGRAMS / 'bars_dump.py'),
            b.addr,
            str(PORT),
            'AAA',
            '4',
            timeout=180,
        )
    )
    here = _json(
        await a.run(
            PYTHON,
            str(PROGRAMS / 'bars_dump.py'),
            a.addr,
            str(PORT),
            'AAA',
            '4',
            timeout=180,
        )
    )
    # b's client attached b's own shared memory (the mirror's), not a stream
    assert here['host_id'] != there['host_id']
    assert not here['remote'] and not there['remote']
    for p in ('1.0', '60.0'):
        got, want = there['rows'][p], here['rows'][p]
        assert len(got) >= 1000, (p, len(got))  # history and live bars
        assert {i: want.get(i) for i in got} == got, p
    return there


async def _roots(net: Network, procs: list) -> None:
    """a's root, and b's with ``--upstream`` a's, sharing one token (docs/
    multihost.md): b's mirror asks a's root to start a's feed daemon."""
    a, b = net['a'], net['b']
    token = f'TRACTOR_SERVICES_TOKEN={secrets.token_hex(16)}'
    root_a = await a.start(
        'env',
        token,
        PYTHON,
        '-m',
        'tractor_sampler',
        'run',
        '--host',
        a.addr,
        '--port',
        str(PORT),
    )
    procs.append(root_a)
    assert 'samplerd ready' in await read_line(root_a)
    root_b = await b.start(
        'env',
        token,
        PYTHON,
        '-m',
        'tractor_sampler',
        'run',
        '--host',
        b.addr,
        '--port',
        str(PORT),
        '--upstream',
        f'{a.addr}:{PORT}',
    )
    procs.append(root_b)
    line = await read_line(root_b)
    assert 'samplerd ready' in line and f'mirroring {a.addr}:{PORT}' in line, line


async def test_a_cut_link_makes_bs_mirrored_topic_restarting_and_a_healed_one_brings_it_back(
    net: Network,
):
    b = net['b']
    procs: list = []
    try:
        await _roots(net, procs)
        watch = await b.start(
            PYTHON, str(SAMPLER_PROGRAMS / 'mirror_watch.py'), b.addr, str(PORT), 'AAA'
        )
        procs.append(watch)
        first = json.loads(await read_line(watch, timeout=180))
        assert first == {'ready': True, 'shm': True, 'state': 'up'}
        net.cut('b')
        # silence (heartbeats every second) or keepalive: bounded generously
        with trio.fail_after(60):
            while (st := json.loads(await read_line(watch))).get(
                'state'
            ) != 'restarting':
                pass
        assert 'went away' in st['error'], st
        net.heal('b')
        with trio.fail_after(180):
            while (st := json.loads(await read_line(watch))).get('state') != 'up':
                assert 'ended' not in st, st
        # b's client kept its feed and its shared memory throughout
        await _same_bars(net)
    finally:
        net.heal('b')
        for proc in reversed(procs):
            await stop(proc)


async def test_a_mirror_on_b_keeps_a_bars_in_bs_shared_memory_and_follows_a_feedd_sigkill(
    net: Network,
):
    b = net['b']
    procs: list = []
    try:
        await _roots(net, procs)
        root_a = procs[0]
        await _same_bars(net)

        watch = await b.start(
            PYTHON, str(SAMPLER_PROGRAMS / 'mirror_watch.py'), b.addr, str(PORT), 'AAA'
        )
        procs.append(watch)
        first = json.loads(await read_line(watch))
        assert first == {'ready': True, 'shm': True, 'state': 'up'}
        os.kill(_feedd_pid(root_a), signal.SIGKILL)
        # bounds generous for a loaded machine (not a timing test)
        with trio.fail_after(60):
            while (st := json.loads(await read_line(watch))).get(
                'state'
            ) != 'restarting':
                pass
        assert 'went away' in st['error'], st
        # a's root restarts its feed daemon; the mirror subscribes again
        with trio.fail_after(180):
            while (st := json.loads(await read_line(watch))).get('state') != 'up':
                assert 'ended' not in st, st
        # re-seeded from a's new buffers: a's rows again
        await _same_bars(net)
    finally:
        for proc in reversed(procs):
            await stop(proc)
