"""Services on a chosen host (issue #13, item 5), across hosts: `samplerd
run --join` on b joins a's registry (only with a's token); a client on a
asks for services on b and they run on b (in b's pid namespace, children
of b's root), the feed's bars reach a by stream; `samplerd ls` from a
shows both hosts' services; b's root leaving removes its entries."""

from __future__ import annotations

import json
import os
import subprocess

import pytest
import trio
from _hosts import PROGRAMS, PYTHON, Network, read_line, stop

pytestmark = pytest.mark.multihost

PORT = 6161


async def _ls(net: Network) -> dict[str, dict]:
    a = net['a']
    res = await a.run(
        PYTHON,
        '-m',
        'tractor_sampler',
        '--host',
        a.addr,
        '--port',
        str(PORT),
        'ls',
        'services',
        '--json',
    )
    assert res.returncode == 0, res.stderr.decode()[-3000:]
    return {s['name']: s for s in json.loads(res.stdout)['services']}


def _ppid(stat: str) -> int:
    return int(stat.rpartition(')')[2].split()[1])


async def test_a_client_on_a_gets_services_on_b(net: Network, tmp_path):
    a, b = net['a'], net['b']
    root = await a.start(
        PYTHON, '-m', 'tractor_sampler', 'run', '--host', a.addr, '--port', str(PORT)
    )
    line = await read_line(root)
    assert 'samplerd ready' in line, line
    token = (
        (a.runtime_dir / f'tractor-services-{os.getuid()}' / f'{a.addr}_{PORT}.token')
        .read_text()
        .strip()
    )
    join = [
        '-m',
        'tractor_sampler',
        'run',
        '--join',
        f'{a.addr}:{PORT}',
        '--host',
        b.addr,
        '--label',
        'b',
    ]

    # without a's token the join is refused, in one line
    res = await b.run(PYTHON, *join)
    err = res.stderr.decode().strip()
    assert res.returncode == 1 and len(err.splitlines()) == 1, err
    assert 'Unauthorized' in err and 'no token given' in err, err
    assert set(await _ls(net)) == {'samplerd'}

    # with it b joins; b's manager allows the test's endpoint module
    joined = await trio.lowlevel.open_process(
        b.python(*join),
        stdout=subprocess.PIPE,
        env=b.env(
            TRACTOR_SERVICES_TOKEN=token, TRACTOR_SERVICES_ALLOW_MODULES='mh_endpoints'
        ),
    )
    b.procs.append(joined)
    line = await read_line(joined)
    assert f'joined the registry {a.addr}:{PORT} as host b' in line, line
    b_root = int(line.split('root pid ')[1].split(',')[0])  # in b's pid namespace

    res = await a.run(
        PYTHON, str(PROGRAMS / 'join_client.py'), a.addr, str(PORT), 'b', 'AAA'
    )
    assert res.returncode == 0, res.stderr.decode()[-3000:]
    out = json.loads(res.stdout.decode().strip().splitlines()[-1])
    assert out['idle'] == 'idle@b' and out['feed'] == 'feedd.sim@b'
    assert out['bars'] == 'LocalBuffer' and out['rows'] > 0  # by stream: another host
    assert set(out['services']) == {'samplerd@b', 'idle@b', 'feedd.sim@b'}
    # they run on b: b's root's children in b's pid namespace (a has no such pid)
    for name, pid in out['services'].items():
        stat = await b.run('cat', f'/proc/{pid}/stat', check=True)
        assert _ppid(stat.stdout.decode()) == b_root, name

    # `samplerd ls` from a shows both hosts' services
    services = await _ls(net)
    assert {n: s['state'] for n, s in services.items()} == {
        'samplerd': 'running',
        'samplerd@b': 'running',
        'idle@b': 'running',
        'feedd.sim@b': 'running',
    }

    # b's root leaving removes its entries from a's registry
    assert await stop(joined) == 0
    assert set(await _ls(net)) == {'samplerd'}
    res = await a.run(PYTHON, '-c', _REGISTRY_NAMES.format(host=a.addr, port=PORT))
    assert res.returncode == 0, res.stderr.decode()[-3000:]
    names = json.loads(res.stdout.decode().strip().splitlines()[-1])
    assert not [n for n in names if '@b' in n], names
    assert await stop(root) == 0


_REGISTRY_NAMES = """
import json, trio
from tractor_services import compat

async def main():
    async with compat.open_root_actor(('{host}', {port}), 'names', loglevel='critical'):
        async with compat._open_registry(('{host}', {port})) as reg:
            names = await reg.run_from_ns('self', 'get_registry')
    print(json.dumps(sorted(names)))

trio.run(main)
"""


_JOINED = """
import json, trio
from tractor_services import compat, joined_hosts

async def main():
    async with compat.open_root_actor(('{host}', {port}), 'hosts', loglevel='critical'):
        async with compat._open_registry(('{host}', {port})) as reg:
            names = await reg.run_from_ns('self', 'get_registry')
        hosts = [h.label for h in await joined_hosts(('{host}', {port}))]
    print(json.dumps({{'hosts': hosts, 'names': sorted(names)}}))

trio.run(main)
"""


async def test_a_cut_link_ends_the_join(net: Network):
    """b's link cut: the join session ends with the connection (keepalive),
    a's root forgets b and its entries, and b's root stops (PeerGone)."""
    a, b = net['a'], net['b']
    root = await a.start(
        PYTHON, '-m', 'tractor_sampler', 'run', '--host', a.addr, '--port', str(PORT)
    )
    assert 'samplerd ready' in await read_line(root)
    token = (
        (a.runtime_dir / f'tractor-services-{os.getuid()}' / f'{a.addr}_{PORT}.token')
        .read_text()
        .strip()
    )
    joined = await trio.lowlevel.open_process(
        b.python(
            '-m',
            'tractor_sampler',
            'run',
            '--join',
            f'{a.addr}:{PORT}',
            '--host',
            b.addr,
            '--label',
            'b',
        ),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=b.env(TRACTOR_SERVICES_TOKEN=token),
    )
    b.procs.append(joined)
    assert 'joined the registry' in await read_line(joined)

    async def state() -> dict:
        res = await a.run(PYTHON, '-c', _JOINED.format(host=a.addr, port=PORT))
        assert res.returncode == 0, res.stderr.decode()[-3000:]
        return json.loads(res.stdout.decode().strip().splitlines()[-1])

    before = await state()
    assert before['hosts'] == ['b']
    assert any(n.startswith('samplerd@b.') for n in before['names'])
    net.cut('b')
    with trio.fail_after(60):
        while (now := await state())['hosts']:
            await trio.sleep(0.5)
    assert not [n for n in now['names'] if '@b.' in n], now
    with trio.fail_after(60):
        status = await joined.wait()
    err = (await joined.stderr.receive_some()).decode()
    assert status == 1 and len(err.strip().splitlines()) == 1, err
    assert f'the registry root at {a.addr}:{PORT} went away' in err, err
    net.heal('b')
    assert await stop(root) == 0
