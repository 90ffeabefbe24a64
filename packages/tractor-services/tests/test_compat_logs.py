"""Expected refusals print no traceback at the default log level: a5 logs
"Actor crashed:" with a traceback for every endpoint that raises (the
actor serves on), and "Root actor crashed:" around any error leaving a
root, even one of the user's own code.  The adapter's log filter makes the
first one line and drops the second; both stay whole at debug level."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tractor_services import compat, open_service_mngr


async def refuse(value: int) -> int:
    """(An endpoint.)  Refuses bad arguments."""
    if value < 0:
        raise ValueError(f'value must be >= 0, not {value}')
    return value


async def test_a_refused_call_is_one_line_on_the_daemon_and_it_serves_on(
    reg_addr, capfd
):
    async with open_service_mngr(registry_addr=reg_addr) as mngr:
        sa = await compat.start_actor(
            mngr.an,
            'refuser',
            enable_modules=['test_compat_logs'],
            loglevel='error',
        )
        try:
            capfd.readouterr()
            with pytest.raises(compat.RemoteActorError) as info:
                await sa.portal.run(refuse, value=-1)
            assert compat.remote_error_type(info.value) == 'ValueError'
            assert await sa.portal.run(refuse, value=3) == 3  # it serves on
        finally:
            await compat.cancel_actor(sa, 5)
    err = capfd.readouterr().err
    assert 'Traceback' not in err, err
    assert 'Actor crashed' not in err, err
    lines = [ln for ln in err.splitlines() if 'value must be >= 0' in ln]
    assert len(lines) == 1, err
    assert 'call failed: ValueError: value must be >= 0, not -1' in lines[0]


PROGRAM = """
import sys, trio
from tractor_services import compat

async def main(port, level):
    async with compat.open_root_actor(('127.0.0.1', port), 'user', loglevel=level):
        raise KeyError('mine')

trio.run(main, int(sys.argv[1]), sys.argv[2])
"""


@pytest.mark.parametrize('level', ['error', 'debug'])
def test_an_error_of_the_users_own_is_not_wrapped_in_root_actor_crashed(
    other_addr, level
):
    res = subprocess.run(
        [sys.executable, '-c', PROGRAM, str(other_addr[1]), level],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert res.returncode == 1
    # Python's own report of the uncaught error, once
    assert res.stderr.count("KeyError: 'mine'") >= 1, res.stderr
    if level == 'error':
        assert 'Root actor crashed' not in res.stderr, res.stderr
    else:  # at debug level the runtime's own report stays
        assert 'Root actor crashed' in res.stderr, res.stderr[-2000:]
