"""Services on a chosen host (issue #13, item 5), on one host: a second
root (another process, on another port) joins the first one's registry as
host ``b``; services asked for on ``b`` are spawned by b's manager (they
are its children) and registered as ``<name>@b``; b's root leaving drops
its entries; a join without the registry's token is refused."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import trio

from tractor_services import (
    NoServiceRoot,
    Unauthorized,
    compat,
    joined_hosts,
    maybe_spawn_daemon,
    open_root_mngr,
    open_service_root,
    qualify,
)
from tractor_services._join import split_name
from tractor_services._remote import TOKEN_ENV

import services_endpoints as eps

PROGRAMS = Path(__file__).parent / 'programs'
TOKEN = 'not-a-real-secret'


@pytest.fixture(autouse=True)
def _runtime_dir(tmp_path, monkeypatch):
    """Token files in a folder of this test's own; no token in the environment."""
    monkeypatch.setenv('XDG_RUNTIME_DIR', str(tmp_path))
    for name in (TOKEN_ENV, 'TRACTOR_SERVICES_TOKEN_FILE', 'TRACTOR_SERVICES_HOST'):
        monkeypatch.delenv(name, raising=False)


def ppid(pid: int) -> int:
    with open(f'/proc/{pid}/stat') as f:
        return int(f.read().rpartition(')')[2].split()[1])


class Joiner:
    """``programs/joiner.py`` in a process of its own: b's root (stderr to
    a file, so that nothing blocks on a full pipe)."""

    def __init__(self, addr, tmp_path, label='b', env=None):
        self.err_path = tmp_path / f'joiner-{label}-{os.urandom(4).hex()}.err'
        with open(self.err_path, 'wb') as err:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    str(PROGRAMS / 'joiner.py'),
                    addr[0],
                    str(addr[1]),
                    '127.0.0.1',
                    label,
                ],
                stdout=subprocess.PIPE,
                stderr=err,
                env={**os.environ, **(env or {})},
            )

    @property
    def stderr(self) -> str:
        return self.err_path.read_text()

    async def first_line(self) -> dict:
        with trio.fail_after(60):
            line = await trio.to_thread.run_sync(
                self.proc.stdout.readline, cancellable=True
            )
        assert line, self.stderr[-3000:]
        return json.loads(line)

    async def wait(self) -> int:
        with trio.fail_after(30):
            return await trio.to_thread.run_sync(self.proc.wait, cancellable=True)

    async def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return await self.wait()
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
            self.proc.stdout.close()


def test_names():
    assert qualify('feedd.sim', None) == 'feedd.sim'
    assert qualify('feedd.sim', 'b') == 'feedd.sim@b'
    assert qualify('feedd.sim@b', 'b') == 'feedd.sim@b'
    assert split_name('feedd.sim@b') == ('feedd.sim', 'b')
    assert split_name('samplerd') == ('samplerd', None)


async def test_a_service_asked_for_on_a_joined_host_runs_there(other_addr, tmp_path):
    async with open_service_root(other_addr) as mngr:
        b = Joiner(other_addr, tmp_path)
        try:
            ready = await b.first_line()
            assert ready['ready']
            hosts = await joined_hosts(other_addr)
            assert [(h.label, h.pid) for h in hosts] == [('b', b.proc.pid)]

            # asked for on b: b's manager spawns it (its child), named sleeper@b
            async with maybe_spawn_daemon(
                'sleeper', eps.sleeper, registry_addr=other_addr, host='b'
            ) as portal:
                assert portal.channel.uid[0] == 'sleeper@b'
                async with open_root_mngr(other_addr, host='b') as bm:
                    (info,) = await bm.list_services()
                assert info.name == 'sleeper@b'
                assert ppid(info.pid) == b.proc.pid
            # the same name on the registry's host is another service
            async with maybe_spawn_daemon(
                'sleeper', eps.sleeper, registry_addr=other_addr
            ) as portal:
                assert portal.channel.uid[0] == 'sleeper'
            (here,) = await mngr.list_services()
            assert here.name == 'sleeper' and ppid(here.pid) == os.getpid()
            assert here.pid != info.pid
            async with compat.find_actor('sleeper@b', other_addr) as found:
                assert found is not None

            # b's root leaving drops its host and every entry of its
            assert await b.stop() == 0
            assert await joined_hosts(other_addr) == []
            async with compat._open_registry(other_addr) as reg:
                names = await reg.run_from_ns('self', 'get_registry')
            assert not [n for n in names if split_name(n.rpartition('.')[0])[1] == 'b']
            with pytest.raises(NoServiceRoot, match="host 'b'"):
                async with open_root_mngr(other_addr, host='b'):
                    pass
        finally:
            await b.stop()


async def test_a_join_without_the_registrys_token_is_refused(other_addr, tmp_path):
    async with open_service_root(other_addr, token=TOKEN) as mngr:
        # (a runtime folder of its own: no token file of a's to find)
        (tmp_path / 'b').mkdir()
        b = Joiner(other_addr, tmp_path, env={'XDG_RUNTIME_DIR': str(tmp_path / 'b')})
        try:
            refused = await b.first_line()
            assert await b.wait() == 1, refused
        finally:
            await b.stop()
        assert refused['error'].startswith('Unauthorized: ')
        assert 'no token' in refused['error']
        assert 'Traceback' not in b.stderr
        assert await joined_hosts(other_addr) == []

        # with the token it joins, and b's manager is guarded by the same token
        b = Joiner(other_addr, tmp_path, env={TOKEN_ENV: TOKEN})
        try:
            assert (await b.first_line())['ready']
            # b's manager keeps the tree's rules: the token gets past it,
            # the module allow-list still refuses
            async with open_root_mngr(other_addr, host='b') as bm:
                assert bm.token == TOKEN
                with pytest.raises(Unauthorized, match='is not among those it allows'):
                    await bm.start_service('sleeper', eps.sleeper)
                assert await bm.list_services() == []
        finally:
            assert await b.stop() == 0
        assert await mngr.list_services() == []


def _registry_root(addr) -> subprocess.Popen:
    """``programs/daemon.py``: a root with services, in a process of its own."""
    return subprocess.Popen(
        [sys.executable, str(PROGRAMS / 'daemon.py'), *map(str, addr)],
        stdout=subprocess.PIPE,
    )


async def test_a_joined_root_stops_when_the_registry_root_dies(other_addr, tmp_path):
    """Without its registry the joined tree cannot be found: b's root
    stops with PeerGone (one line) when a's root is killed."""
    a = _registry_root(other_addr)
    b = None
    try:
        with trio.fail_after(60):
            line = await trio.to_thread.run_sync(a.stdout.readline, cancellable=True)
        assert json.loads(line)['ready']
        b = Joiner(other_addr, tmp_path)
        assert (await b.first_line())['ready']
        a.kill()
        gone = await b.first_line()
        assert await b.wait() == 1
        assert gone['error'].startswith('PeerGone: the registry root '), gone
        assert 'Traceback' not in b.stderr
    finally:
        if b is not None:
            await b.stop()
        a.kill()
        a.wait()
        a.stdout.close()


async def _registry_names(addr) -> list[str]:
    async with compat._open_registry(addr) as reg:
        return [
            n.rpartition('.')[0] for n in await reg.run_from_ns('self', 'get_registry')
        ]


async def test_a_killed_joined_root_leaves_no_entries(other_addr, tmp_path):
    """b's root SIGKILLed (it cannot unregister anything): its join session
    ends with the connection, and a's root drops b's host and entries."""
    async with open_service_root(other_addr):
        b = Joiner(other_addr, tmp_path)
        try:
            assert (await b.first_line())['ready']
            async with maybe_spawn_daemon(
                'sleeper', eps.sleeper, registry_addr=other_addr, host='b'
            ):
                pass
            assert {'host_root@b', 'sleeper@b'} <= set(
                await _registry_names(other_addr)
            )
            b.proc.kill()
            with trio.fail_after(30):
                while await joined_hosts(other_addr):
                    await trio.sleep(0.05)
            assert not [
                n for n in await _registry_names(other_addr) if n.endswith('@b')
            ]
        finally:
            await b.stop()
