"""Services on a chosen host (issue #13, item 5), on one host: `samplerd
run --join` starts a second root (another process, another port) that
joins the first one's registry as host ``b`` with its own manager and
samplerd; a feed asked for on ``b`` runs there (b's root's child), its
bars stepped by b's samplerd; `samplerd ls` on the registry shows both
hosts' services; b stopping takes its entries with it."""

from __future__ import annotations

import json

import psutil
import trio
from _procs import SAMPLERD, Proc

from tractor_sampler import open_market_feed
from tractor_sampler._introspect import query_samplerd
from tractor_services import compat
from tractor_services.testing import free_port, wait_gone


async def ls(port: int) -> dict[str, dict]:
    with trio.fail_after(60):
        res = await trio.run_process(
            [*SAMPLERD, '--port', str(port), 'ls', 'services', '--json'],
            capture_stdout=True,
            capture_stderr=True,
            check=False,
        )
    assert res.returncode == 0, res.stderr.decode()
    return {s['name']: s for s in json.loads(res.stdout)['services']}


async def test_a_feed_asked_for_on_a_joined_host_runs_and_steps_there():
    port = free_port()
    a = Proc('--port', str(port), '-l', 'warning')
    b = None
    try:
        await a.ready()
        b = Proc(
            'run',
            '--join',
            f'127.0.0.1:{port}',
            '--host',
            '127.0.0.1',
            '--label',
            'b',
            '-l',
            'warning',
        )
        ready = await b.ready()
        assert f'joined the registry 127.0.0.1:{port} as host b' in ready
        assert 'samplerd@b pid' in ready

        async with open_market_feed(
            ['AAA'], registry_addr=('127.0.0.1', port), feed_host='b'
        ) as feed:
            assert feed.portal.channel.uid[0] == 'feedd.sim@b'
            # b's samplerd steps the buffer: a new 1 s row appears
            buf = feed.buffer('AAA', 1.0)
            first = int(buf.array[-1]['index'])
            with trio.fail_after(30):
                while int(buf.array[-1]['index']) <= first:
                    await trio.sleep(0.05)
            # registered with b's samplerd, not with a's
            addr = ('127.0.0.1', port)
            for name, want in (('samplerd@b', {1.0: 1, 60.0: 1}), ('samplerd', {})):
                async with compat.find_actor(name, addr) as portal:
                    info = await query_samplerd(portal)
                assert {k: v for k, v in info.buffers.items() if v} == want, name

        services = await ls(port)
        assert {n: s['state'] for n, s in services.items()} == {
            'samplerd': 'running',
            'samplerd@b': 'running',
            'feedd.sim@b': 'running',
        }
        # b's services are b's root's children; a's samplerd is a's
        for name in ('samplerd@b', 'feedd.sim@b'):
            assert psutil.Process(services[name]['pid']).ppid() == b.p.pid
        assert psutil.Process(services['samplerd']['pid']).ppid() == a.p.pid

        # the feed is listed under its host's name
        with trio.fail_after(60):
            res = await trio.run_process(
                [*SAMPLERD, '--port', str(port), 'ls', 'feeds'],
                capture_stdout=True,
                capture_stderr=True,
                check=False,
            )
        assert res.returncode == 0, res.stderr.decode()
        assert 'feedd.sim@b  (' in res.stdout.decode()

        assert await b.stop() == 0, b.err
        assert set(await ls(port)) == {'samplerd'}
    finally:
        for p in (b, a):
            if p is not None:
                status = await p.stop()
                p.kill()
    assert status == 0, a.err
    assert not wait_gone(a.family | (b.family if b else set()))


async def test_a_join_with_a_bad_address_is_one_line():
    with trio.fail_after(60):
        res = await trio.run_process(
            [*SAMPLERD, 'run', '--join', 'nowhere', '--host', '127.0.0.1'],
            capture_stdout=True,
            capture_stderr=True,
            check=False,
        )
    err = res.stderr.decode().strip()
    assert res.returncode == 1 and len(err.splitlines()) == 1, err
    assert err.startswith('samplerd: error: --join nowhere: '), err
