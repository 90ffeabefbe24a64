"""Heartbeats on samplerd's step stream and the feed daemon's status stream
for a client on another host (issue #13 item 2), forced on one host with
$TRACTOR_SERVICES_HEARTBEATS=1: the readers never see one, and a stuck
(SIGSTOPped) peer raises PeerGone.  tests/multihost/test_heartbeat.py runs
it across hosts."""

from __future__ import annotations

import os
import signal

import pytest
import trio

from tractor_sampler import open_market_feed, open_sample_stream
from tractor_sampler._feed import StatusStream
from tractor_sampler._feedd import attach_feed, feedd_name
from tractor_sampler._msgs import FeedStatus
from tractor_services import PeerGone, compat, open_service_root
from tractor_services._heartbeat import ENV_VAR, HEARTBEAT_S

BUFS = {1.0: (256, 30)}


async def wait_until(pred, timeout=30, poll=0.05):
    with trio.fail_after(timeout):
        while not pred():
            await trio.sleep(poll)


async def test_a_local_client_asks_for_no_heartbeats(other_addr, monkeypatch):
    monkeypatch.delenv(ENV_VAR, raising=False)
    async with open_service_root(other_addr):
        async with open_market_feed(['AAA'], buffers=BUFS) as feed:
            assert feed.status.heartbeat_s is None
            assert feed.quotes.heartbeat_s is None


async def test_a_remote_market_feed_asks_for_heartbeats(other_addr, monkeypatch):
    monkeypatch.setenv(ENV_VAR, '1')  # as if the feed daemon were on another host
    async with open_service_root(other_addr):
        async with open_market_feed(['AAA'], buffers=BUFS) as feed:
            assert feed.status.heartbeat_s == HEARTBEAT_S
            assert feed.quotes.heartbeat_s == HEARTBEAT_S
            # the status stream is quiet: heartbeats keep it alive
            await wait_until(lambda: feed.status.heartbeats >= 2)


async def test_a_stopped_samplerd_is_peer_gone_on_the_step_stream(
    other_addr, monkeypatch
):
    monkeypatch.setenv(ENV_VAR, '1')
    async with open_service_root(other_addr):
        pid = None
        try:
            with trio.fail_after(60):
                with pytest.raises(PeerGone, match='sent nothing for 3 s'):
                    # no period: the stream carries nothing but heartbeats
                    async with open_sample_stream(registry_addr=other_addr) as ss:
                        assert ss.heartbeat_s == HEARTBEAT_S
                        got = []
                        async with trio.open_nursery() as tn:

                            async def read():
                                async for msg in ss:
                                    got.append(msg)

                            tn.start_soon(read)
                            await wait_until(lambda: ss.heartbeats >= 4)
                            assert got == []  # none reached the reader
                            pid = ss.pid
                            assert pid is not None
                            os.kill(pid, signal.SIGSTOP)
                            await trio.sleep_forever()
        finally:
            if pid is not None:
                os.kill(pid, signal.SIGCONT)


async def test_a_stopped_feed_daemon_is_peer_gone_on_the_status_stream(
    other_addr, monkeypatch
):
    monkeypatch.delenv(ENV_VAR, raising=False)
    async with open_service_root(other_addr):
        async with open_market_feed(['AAA'], buffers=BUFS) as feed:  # local
            pid = (await feed.info()).pid
            name = feedd_name(feed.backend)
            try:
                # a status stream of our own, on a connection of our own,
                # that asked for heartbeats (as a client on another host)
                async with compat.find_actor(name, other_addr) as portal:
                    assert portal is not None
                    with trio.fail_after(60):
                        with pytest.raises(PeerGone, match='sent nothing for 3 s'):
                            async with compat.open_context(
                                portal,
                                attach_feed,
                                topics=['AAA'],
                                heartbeat_s=HEARTBEAT_S,
                            ) as (ctx, _):
                                async with compat.open_drained_stream(ctx) as s:
                                    status = StatusStream(
                                        stream=s,
                                        buffer=16,
                                        heartbeat_s=HEARTBEAT_S,
                                        peer_what=name,
                                    )
                                    got = []
                                    async with (
                                        status._running(),
                                        trio.open_nursery() as tn,
                                    ):

                                        async def read():
                                            async for msg in status:
                                                got.append(msg)

                                        tn.start_soon(read)
                                        await wait_until(lambda: status.heartbeats >= 3)
                                        assert got
                                        assert all(
                                            isinstance(m, FeedStatus) for m in got
                                        )
                                        os.kill(pid, signal.SIGSTOP)
                                        await trio.sleep_forever()
            finally:
                os.kill(pid, signal.SIGCONT)
