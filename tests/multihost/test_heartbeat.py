"""Stream heartbeats across hosts (issue #13, item 2): a feed daemon on a
that is stuck (SIGSTOPped: its host still answers TCP, so neither the
connection's end nor keepalive tells) reaches a subscriber on b as
``PeerGone`` after ~3 s without a message."""

from __future__ import annotations

import json
import os
import signal

import pytest
from _hosts import PROGRAMS, PYTHON, Network, read_line, stop
from test_addresses import PORT, _samplerd
from test_liveness import _feed_holder_on_a

from tractor_services.testing import actor_pids

pytestmark = pytest.mark.multihost


async def test_a_stopped_feed_daemon_reaches_a_subscriber_on_another_host(
    net: Network,
):
    root = await _samplerd(net)
    procs = [root]
    pid = None
    try:
        procs.append(await _feed_holder_on_a(net))
        client = await net['b'].start(
            PYTHON,
            str(PROGRAMS / 'feed_until_gone.py'),
            net['a'].addr,
            str(PORT),
            'AAA',
        )
        procs.append(client)
        assert await read_line(client, timeout=120) == 'subscribed'
        (pid,) = actor_pids('feedd.sim')
        os.kill(pid, signal.SIGSTOP)  # alive, its host answering: silent
        # a bound on the wait, generous for a loaded machine (not a timing test)
        gone = json.loads(await read_line(client, timeout=20))
        assert gone['error'] == 'PeerGone', gone
        assert 'sent nothing for 3 s' in gone['message'], gone
    finally:
        if pid is not None:
            os.kill(pid, signal.SIGCONT)
            os.kill(pid, signal.SIGKILL)
        for proc in reversed(procs):
            await stop(proc)
