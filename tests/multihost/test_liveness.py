"""Liveness across hosts (issue #13, item 2): a client on b learns that
the feed daemon on a died, or that the link to a was cut, as
``PeerGone`` (no pid of a's to watch from b: the connection's end, and
TCP keepalive for a silent link), and can subscribe again afterwards."""

from __future__ import annotations

import json
import os
import signal

import pytest
import trio
from _hosts import PROGRAMS, PYTHON, Network, inner_pid, read_line, stop
from test_addresses import PORT, _samplerd

from tractor_services.testing import actor_pids

pytestmark = pytest.mark.multihost


async def _feed_holder_on_a(net: Network) -> trio.Process:
    a = net['a']
    holder = await a.start(
        PYTHON, str(PROGRAMS / 'hold_feed.py'), a.addr, str(PORT), 'AAA'
    )
    assert json.loads(await read_line(holder))['ready']
    return holder


async def _client_on_b(net: Network) -> trio.Process:
    b = net['b']
    client = await b.start(
        PYTHON,
        str(PROGRAMS / 'feed_until_gone.py'),
        net['a'].addr,
        str(PORT),
        'AAA',
        'reopen',
    )
    assert await read_line(client, timeout=120) == 'subscribed'
    return client


async def test_sigkill_of_the_feed_daemon_reaches_a_client_on_another_host(
    net: Network,
):
    root = await _samplerd(net)
    procs = [root]
    try:
        procs.append(await _feed_holder_on_a(net))
        client = await _client_on_b(net)
        procs.append(client)
        (pid,) = actor_pids('feedd.sim')
        os.kill(pid, signal.SIGKILL)
        # a bound on the wait, generous for a loaded machine (not a timing test)
        gone = json.loads(await read_line(client, timeout=20))
        assert gone['error'] == 'PeerGone', gone
        # the root restarts the daemon; the client subscribes again
        again = json.loads(await read_line(client, timeout=120))
        assert again == {'reopened': True}
    finally:
        for proc in reversed(procs):
            await stop(proc)


async def test_a_cut_link_reaches_a_client_and_a_healed_one_lets_it_reopen(
    net: Network,
):
    root = await _samplerd(net)
    procs = [root]
    try:
        procs.append(await _feed_holder_on_a(net))
        client = await _client_on_b(net)
        procs.append(client)
        net.cut('b')
        try:
            gone = json.loads(await read_line(client, timeout=20))
        finally:
            net.heal('b')
        assert gone['error'] == 'PeerGone', gone
        again = json.loads(await read_line(client, timeout=120))
        assert again == {'reopened': True}
    finally:
        for proc in reversed(procs):
            await stop(proc)


async def test_a_dead_actor_on_another_host_is_not_handed_out(net: Network):
    """a5 keeps the registry entry of an actor that died without a word
    (SIGKILL): one on another host than the registry is checked before a
    lookup hands it out."""
    a, b = net['a'], net['b']
    root = await _samplerd(net)
    client = None
    try:
        client = await b.start(
            PYTHON, str(PROGRAMS / 'client_root.py'), a.addr, str(PORT), 'on_b'
        )
        bound = json.loads(await read_line(client))['bound']
        assert bound[0] == b.addr

        async def lookup() -> dict:
            res = await a.run(
                PYTHON,
                str(PROGRAMS / 'own_registry.py'),
                a.addr,
                a.addr,
                str(PORT),
                'on_b',
                timeout=90,
            )
            assert res.returncode == 0, res.stderr.decode()[-3000:]
            return json.loads(res.stdout.decode().strip().splitlines()[-1])

        assert await lookup() == {'found': bound}
        pid = inner_pid(client)
        assert pid is not None
        os.kill(pid, signal.SIGKILL)
        await client.wait()
        assert await lookup() == {'found': None}
    finally:
        if client is not None:
            await stop(client)
        assert await stop(root) == 0
