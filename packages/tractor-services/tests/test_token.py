"""A guarded root (issue #13, item 6): remote start and cancel need the
root's token, and remote starts are limited to the modules it allows."""

import json
import sys
from pathlib import Path

import pytest
import trio

from tractor_services import open_service_root
from tractor_services._remote import (
    TOKEN_ENV,
    resolve_token,
    token_file,
)

import services_endpoints as eps

TOKEN = 'not-a-real-secret'
PROGRAMS = Path(__file__).parent / 'programs'


@pytest.fixture(autouse=True)
def _runtime_dir(tmp_path, monkeypatch):
    """Token files in a folder of this test's own."""
    monkeypatch.setenv('XDG_RUNTIME_DIR', str(tmp_path))
    for name in (
        TOKEN_ENV,
        'TRACTOR_SERVICES_TOKEN_FILE',
        'TRACTOR_SERVICES_ALLOW_MODULES',
    ):
        monkeypatch.delenv(name, raising=False)


SLEEPER = 'services_endpoints:sleeper'


async def control(addr, *steps) -> list:
    """Run ``steps`` from another program (a peer of the root)."""
    with trio.fail_after(90):
        proc = await trio.run_process(
            [
                sys.executable,
                str(PROGRAMS / 'control.py'),
                addr[0],
                str(addr[1]),
                *map(json.dumps, steps),
            ],
            capture_stdout=True,
            capture_stderr=True,
            check=False,
        )
    assert proc.returncode == 0, proc.stderr.decode()[-3000:]
    return json.loads(proc.stdout.decode().strip().splitlines()[-1])


async def test_guarded_root_refuses_remote_control_without_its_token(other_addr):
    async with open_service_root(other_addr, token=TOKEN) as mngr:
        await mngr.start_service('running', eps.sleeper)
        out = await control(
            other_addr,
            [None, 'start', 'intruder', SLEEPER],
            [None, 'cancel', 'running', None],
            ['guess', 'start', 'intruder', SLEEPER],
            # the right token, but a module the root does not allow
            [TOKEN, 'start', 'intruder', SLEEPER],
        )
        assert [o[0] for o in out] == ['Unauthorized'] * 4, out
        assert 'no token given' in out[0][1]
        assert '$TRACTOR_SERVICES_TOKEN_FILE' in out[0][1]
        assert 'no token given' in out[1][1]
        assert 'wrong token' in out[2][1]
        assert "'services_endpoints' is not among" in out[3][1]
        assert mngr.info('running').state == 'running'
        assert 'intruder' not in mngr


async def test_guarded_root_starts_allowed_modules_with_its_token(other_addr):
    async with open_service_root(
        other_addr, token=TOKEN, allow_modules=['services_endpoints']
    ) as mngr:
        out = await control(
            other_addr,
            [TOKEN, 'start', 'allowed', SLEEPER],
            [TOKEN, 'cancel', 'allowed', None],
        )
        assert out == ['ok', 'ok']
        assert 'allowed' not in mngr


async def test_root_writes_its_token_for_its_hosts_clients(other_addr, monkeypatch):
    path = token_file(other_addr)
    monkeypatch.setenv(TOKEN_ENV, TOKEN)
    async with open_service_root(other_addr):
        assert path.read_text().strip() == TOKEN
        assert path.stat().st_mode & 0o077 == 0
        monkeypatch.delenv(TOKEN_ENV)
        assert resolve_token(None, other_addr) == TOKEN
    assert not path.exists()


async def test_loopback_root_without_token_is_unguarded(other_addr):
    async with open_service_root(other_addr) as mngr:
        assert mngr.token is None
        assert not token_file(other_addr).exists()
