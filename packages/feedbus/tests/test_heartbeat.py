"""Heartbeats on a subscription to a producer on another host, forced on
one host with $TRACTOR_SERVICES_HEARTBEATS=1: never delivered to the
subscriber, and a stuck (SIGSTOPped) producer raises PeerGone."""

import os
import signal
from functools import partial

import feedbus_endpoints as fe
import pytest
import trio

from feedbus import open_feed
from tractor_services import PeerGone, compat, open_service_mngr
from tractor_services._heartbeat import ENV_VAR


async def wait_for(pred, timeout=20.0, poll=0.05):
    with trio.fail_after(timeout):
        while not pred():
            await trio.sleep(poll)


async def test_a_local_subscription_gets_no_heartbeats(reg_addr, monkeypatch):
    monkeypatch.delenv(ENV_VAR, raising=False)
    async with open_service_mngr(registry_addr=reg_addr) as mngr:
        await mngr.start_service('prod', partial(fe.producer, topics=['a'], hz=20))
        async with compat.find_actor('prod', mngr.registry_addr) as portal:
            async with open_feed(portal, ['a'], ring=False) as feed:
                assert feed.heartbeat_s is None
                with trio.fail_after(20):
                    for _ in range(5):
                        await feed.receive()
                assert feed.heartbeats == 0


async def test_heartbeats_are_dropped_and_a_stopped_producer_is_peer_gone(
    reg_addr, monkeypatch
):
    monkeypatch.setenv(ENV_VAR, '1')  # treat the producer as on another host
    async with open_service_mngr(registry_addr=reg_addr) as mngr:
        # one quote, then silence: only heartbeats keep the stream alive
        pid = await mngr.start_service(
            'prod', partial(fe.producer, topics=['a'], hz=0.001)
        )
        async with compat.find_actor('prod', mngr.registry_addr) as portal:
            try:
                with trio.fail_after(60):
                    with pytest.raises(PeerGone, match='sent nothing for 3 s'):
                        async with open_feed(portal, ['a'], ring=False) as feed:
                            assert feed.heartbeat_s == 1.0
                            got = []
                            async with trio.open_nursery() as tn:

                                async def read():
                                    async for msg in feed:
                                        got.append(msg)

                                tn.start_soon(read)
                                # silence past the timeout, kept alive by them
                                await wait_for(lambda: feed.heartbeats >= 4)
                                assert all(type(m).__name__ == 'Quote' for m in got)
                                assert len(got) <= 1
                                os.kill(pid, signal.SIGSTOP)
                                await trio.sleep_forever()
            finally:
                os.kill(pid, signal.SIGCONT)


async def test_a_bad_heartbeat_setting_is_refused_before_subscribing(
    reg_addr, monkeypatch
):
    monkeypatch.setenv(ENV_VAR, 'yes')
    async with open_service_mngr(registry_addr=reg_addr) as mngr:
        await mngr.start_service('prod', partial(fe.producer, topics=['a'], hz=20))
        async with compat.find_actor('prod', mngr.registry_addr) as portal:
            with pytest.raises(ValueError, match=ENV_VAR):
                async with open_feed(portal, ['a']):
                    pass
            with pytest.raises(ValueError, match='heartbeat_s'):
                async with open_feed(portal, ['a'], heartbeat_s=-1):
                    pass


async def test_a_stall_of_the_subscriber_itself_is_not_peer_gone(reg_addr, monkeypatch):
    """The subscriber's own event loop blocked past the silence limit while
    the producer's heartbeats went on: they are read, no PeerGone."""
    import time

    from tractor_services._heartbeat import HEARTBEAT_TIMEOUT_S

    monkeypatch.setenv(ENV_VAR, '1')
    async with open_service_mngr(registry_addr=reg_addr) as mngr:
        await mngr.start_service('prod', partial(fe.producer, topics=['a'], hz=0.001))
        async with compat.find_actor('prod', mngr.registry_addr) as portal:
            async with open_feed(portal, ['a'], ring=False) as feed:
                await wait_for(lambda: feed.heartbeats >= 1)
                time.sleep(HEARTBEAT_TIMEOUT_S + 1.5)  # noqa: ASYNC251 (we stall)
                n = feed.heartbeats
                await wait_for(lambda: feed.heartbeats >= n + 3)
