"""No hangs for what is not a registry: when the registry port belongs to
an HTTP server, a silent listener or a frozen (SIGSTOPped) daemon, every
client ends within a bounded wait with one line naming the address and
what answered there (a5 alone hung for ever; ``samplerd run`` called an
HTTP server "a registry")."""

from __future__ import annotations

import os
import signal
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager as acm
from functools import partial

import pytest
import trio
from test_cli import Proc, free_port, run_cli

from tractor_sampler import open_market_feed
from tractor_services import RegistryUnreachable, compat
from tractor_services.testing import wait_gone

NOT_A_REGISTRY = (
    'samplerd: error: 127.0.0.1:{port} answered but is not a tractor registry ('
)
NO_ANSWER = 'samplerd: error: no answer from 127.0.0.1:{port} within {s:g} s'


async def _http(stream: trio.SocketStream) -> None:
    try:
        await stream.receive_some()
        await stream.send_all(b'HTTP/1.0 400 Bad Request\r\nContent-Length: 0\r\n\r\n')
    except trio.BrokenResourceError:
        pass


async def _silent(stream: trio.SocketStream) -> None:
    await trio.sleep_forever()


@acm
async def serving(handler) -> AsyncIterator[int]:
    """A TCP server of this test on a free port; yields the port."""
    async with trio.open_nursery() as tn:
        [listener] = await tn.start(
            partial(trio.serve_tcp, handler, 0, host='127.0.0.1')
        )
        yield listener.socket.getsockname()[1]
        tn.cancel_scope.cancel()


def _one_line(res) -> str:
    err = res.stderr.decode().strip()
    assert res.returncode == 1, err
    assert len(err.splitlines()) == 1, err
    return err


@pytest.mark.parametrize('cmd', [['ls'], ['watch', 'AAA'], ['run']])
async def test_an_http_server_at_the_port_is_named_not_a_registry(cmd):
    async with serving(_http) as port:
        err = _one_line(await run_cli('--port', str(port), *cmd))
    assert err.startswith(NOT_A_REGISTRY.format(port=port)), err
    assert 'HTTP/1.0' in err


@pytest.mark.parametrize('cmd', [['ls'], ['watch', 'AAA']])
async def test_a_silent_listener_is_no_answer_within_the_deadline(cmd):
    async with serving(_silent) as port:
        err = _one_line(await run_cli('--port', str(port), *cmd))
    assert err.startswith(NO_ANSWER.format(port=port, s=compat.REGISTRY_TIMEOUT_S)), err


async def test_a_frozen_daemon_is_no_answer_within_the_deadline():
    port = free_port()
    daemon = Proc('--port', str(port), '-l', 'warning')
    try:
        await daemon.read_until(lambda line: 'ready' in line)
        daemon.remember_family()
        os.kill(daemon.p.pid, signal.SIGSTOP)
        try:
            res = await run_cli('--port', str(port), 'ls')
        finally:
            os.kill(daemon.p.pid, signal.SIGCONT)
        status = await daemon.stop(signal.SIGTERM)
    finally:
        if daemon.p.poll() is None:
            daemon.p.kill()
    assert not wait_gone(daemon.family)
    assert status == 0, daemon.err
    err = _one_line(res)
    assert err.startswith(NO_ANSWER.format(port=port, s=compat.REGISTRY_TIMEOUT_S)), err


@pytest.mark.parametrize(
    'handler, message',
    [
        (_http, '127.0.0.1:{port} answered but is not a tractor registry'),
        (_silent, 'no answer from 127.0.0.1:{port} within'),
    ],
)
async def test_open_feed_raises_what_answered_instead_of_hanging(handler, message):
    async with serving(handler) as port:
        with trio.fail_after(60):
            with pytest.raises(RegistryUnreachable, match=message.format(port=port)):
                async with open_market_feed(['AAA'], registry_addr=('127.0.0.1', port)):
                    pass


async def test_a_refused_demo_config_prints_its_error_without_tracebacks():
    res = await run_cli('demo', '--tick-rate', '0', '--duration', '30')
    err = res.stderr.decode()
    assert res.returncode == 1, err
    assert 'Traceback' not in err and 'crashed:' not in err, err
    # the feed daemon's one line for the refusal, and the command's own
    assert len(err.strip().splitlines()) <= 2, err
    assert err.strip().splitlines()[-1].startswith('samplerd: error: '), err
    assert 'tick_rate must be a finite number > 0' in err.strip().splitlines()[-1]
