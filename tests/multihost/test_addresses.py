"""Addresses across hosts (issue #13, item 1): a root started on a
routable address is reachable, with its whole tree, from another host."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import trio
from _hosts import PYTHON, Network, read_line, stop

# the program the one-host tests run, run here on a host
SERVICES_PROGRAMS = (
    Path(__file__).resolve().parents[2] / 'packages/tractor-services/tests/programs'
)

pytestmark = pytest.mark.multihost

PORT = 6161


async def _samplerd(net: Network, host: str = 'a', stderr=None) -> trio.Process:
    """``samplerd run --host <host's address>`` on ``host``, once ready."""
    h = net[host]
    proc = await h.start(
        PYTHON,
        '-m',
        'tractor_sampler',
        'run',
        '--host',
        h.addr,
        '--port',
        str(PORT),
        stderr=stderr,
    )
    line = await read_line(proc)
    assert 'samplerd ready' in line and f'{h.addr}:{PORT}' in line, line
    return proc


def _json(res) -> dict:
    assert res.returncode == 0, (res.stdout.decode() + res.stderr.decode())[-3000:]
    return json.loads(res.stdout.decode().strip().splitlines()[-1])


async def test_hosts_do_not_share_shm_or_pids(net: Network):
    """The harness itself: each host has its own /dev/shm and pid
    namespace, or the other tests could pass falsely."""
    a, b = net['a'], net['b']
    await a.run('sh', '-c', 'echo x > /dev/shm/only_on_a', check=True)
    res = await b.run('ls', '/dev/shm')
    assert 'only_on_a' not in res.stdout.decode()
    res = await a.run('sh', '-c', 'echo $$')
    assert int(res.stdout) < 100  # a fresh pid namespace
    # and b reaches a on the bridge, while nothing routes out
    res = await b.run(PYTHON, '-c', _CONNECT_CHECK.format(addr=a.addr))
    assert res.stdout.decode().split() == ['refused', 'unreachable'], res


_CONNECT_CHECK = """
import socket
try:
    socket.create_connection(('{addr}', 9), timeout=10)
except ConnectionRefusedError:
    print('refused')
try:
    socket.create_connection(('1.1.1.1', 9), timeout=10)
except OSError as e:
    print('unreachable' if e.errno == 101 else repr(e))
"""


async def test_ls_from_another_host(net: Network, tmp_path):
    with open(tmp_path / 'stderr', 'wb') as err:
        root = await _samplerd(net, stderr=err)
    try:
        # a root on a routable address says it is exposed
        warning = (tmp_path / 'stderr').read_text()
        assert 'warning' in warning and f'{net["a"].addr}:{PORT}' in warning
        assert '.token' in warning and 'TRACTOR_SERVICES_TOKEN' in warning
        res = await net['b'].run(
            PYTHON,
            '-m',
            'tractor_sampler',
            'ls',
            'services',
            '--json',
            '--host',
            net['a'].addr,
            '--port',
            str(PORT),
        )
        out = res.stdout.decode()
        assert res.returncode == 0, (out + res.stderr.decode())[-3000:]
        assert 'samplerd' in out
    finally:
        assert await stop(root) == 0


async def test_quotes_from_another_host(net: Network):
    """b subscribes to the feed daemon the root on a spawned: the daemon
    registered a's routable address, b's client root bound b's."""
    a, b = net['a'], net['b']
    root = await _samplerd(net)
    holder = None
    try:
        holder = await a.start(
            PYTHON, str(_program('hold_feed.py')), a.addr, str(PORT), 'AAA'
        )
        assert json.loads(await read_line(holder))['ready']
        out = _json(
            await b.run(
                PYTHON, str(_program('quotes.py')), a.addr, str(PORT), 'AAA', '3'
            )
        )
        assert out['bound'][0] == b.addr
        assert out['feedd'][0] == a.addr
        assert len(out['received']) == 3
    finally:
        if holder is not None:
            await stop(holder)
        assert await stop(root) == 0


async def test_sample_stream_from_another_host(net: Network):
    """b opens samplerd's step stream on a's root: 1 s steps on a's
    boundaries arrive at b, in order."""
    a, b = net['a'], net['b']
    root = await _samplerd(net)
    try:
        out = _json(
            await b.run(PYTHON, str(_program('steps.py')), a.addr, str(PORT), '3')
        )
        assert out['bound'][0] == b.addr
        assert out['samplerd'][0] == a.addr
        steps = out['steps']
        assert len(steps) == 3
        assert all(p == 1.0 and gap == 0 for p, _, gap in steps)
        times = [t for _, t, _ in steps]
        assert all(t == round(t) for t in times)  # on 1 s boundaries
        assert times == sorted(set(times))  # one step per boundary, in order
    finally:
        assert await stop(root) == 0


async def test_own_registry_on_b_finds_a_service_on_a(net: Network):
    """A program on b that is a registry itself asks a's registry (a5
    answered from its own and a5's wait never ended)."""
    a, b = net['a'], net['b']
    root = await _samplerd(net)
    try:
        out = _json(
            await b.run(
                PYTHON,
                str(_program('own_registry.py')),
                b.addr,
                a.addr,
                str(PORT),
                'samplerd',
                timeout=90,
            )
        )
        assert out['found'] and out['found'][0] == a.addr, out
        missing = _json(
            await b.run(
                PYTHON,
                str(_program('own_registry.py')),
                b.addr,
                a.addr,
                str(PORT),
                'no_such_service',
                timeout=90,
            )
        )
        assert missing == {'found': None}
    finally:
        assert await stop(root) == 0


async def test_loopback_registration_is_a_clear_error_on_another_host(net: Network):
    a, b = net['a'], net['b']
    root = await a.start(PYTHON, str(_program('loopback_root.py')), a.addr, str(PORT))
    try:
        assert json.loads(await read_line(root))['ready']
        out = _json(
            await b.run(
                PYTHON,
                str(_program('own_registry.py')),
                b.addr,
                a.addr,
                str(PORT),
                'lonely',
                timeout=90,
            )
        )
        assert out['error'] == 'UnreachableService', out
        assert '127.0.0.1' in out['message']
        assert 'samplerd run --host' in out['message']
    finally:
        await stop(root)


def _program(name: str):
    from _hosts import PROGRAMS

    return PROGRAMS / name


async def test_remote_control_of_an_exposed_root_needs_its_token(net: Network):
    """A root on a routable address is guarded: from b, starting or
    cancelling a service needs the token the root wrote on a, and only the
    packages' own endpoints (or those the operator allows) start."""
    a, b = net['a'], net['b']
    root = await _samplerd(net)
    try:
        token_path = (
            a.runtime_dir / f'tractor-services-{os.getuid()}' / f'{a.addr}_{PORT}.token'
        )
        token = token_path.read_text().strip()
        steps = [
            [None, 'start', 'feedd.sim', FEEDD],
            [None, 'cancel', 'samplerd', None],
            [token, 'start', 'intruder', 'mh_endpoints:idle'],
            [token, 'start', 'feedd.sim', FEEDD],
            [token, 'cancel', 'feedd.sim', None],
        ]
        res = await b.run(
            PYTHON,
            str(SERVICES_PROGRAMS / 'control.py'),
            a.addr,
            str(PORT),
            *map(json.dumps, steps),
        )
        out = json.loads((res.stdout.decode().strip().splitlines() or ['null'])[-1])
        assert res.returncode == 0, res.stderr.decode()[-3000:]
        assert [o[0] for o in out[:3]] == ['Unauthorized'] * 3, out
        assert 'no token given' in out[0][1]
        assert 'no token given' in out[1][1]
        assert "'mh_endpoints' is not among" in out[2][1]
        assert out[3:] == ['ok', 'ok'], out
    finally:
        assert await stop(root) == 0


FEEDD = 'tractor_sampler.endpoints:feedd'
