"""compat.open_portal: a portal over a connection of its own, whose exit
always ends its message loop and closes the connection, whenever the
caller is cancelled (a5's ``open_portal`` hung for ever when the cancel
came as it started the loop: a root's SIGTERM during a metrics snapshot
left the root running)."""

from __future__ import annotations

import os

import trio

from tractor_services import compat, open_service_mngr


async def _pid() -> int:
    """(An endpoint.)"""
    return os.getpid()


async def test_a_cancel_as_the_portal_opens_ends_it_instead_of_hanging(
    reg_addr, monkeypatch
):
    async with open_service_mngr(registry_addr=reg_addr) as mngr:
        sa = await compat.start_actor(
            mngr.an, 'portal_peer', enable_modules=['test_compat_portal']
        )
        try:
            addr = await compat.find_actor_addr('portal_peer', reg_addr)
            assert addr is not None
            actor = compat.current_actor()
            # a portal used normally: it works and closes its connection
            async with compat.open_portal(addr) as portal:
                assert await portal.run(_pid) == sa.proc.pid
            assert not portal.channel.connected()

            # the caller cancelled right after the id exchange, as the
            # portal starts its message loop (deterministically: no
            # checkpoint between the cancel and the loop's start)
            a5_handshake = type(actor)._do_handshake
            cs = trio.CancelScope()

            async def handshake_then_cancel(self, chan):
                uid = await a5_handshake(self, chan)
                cs.cancel()
                return uid

            monkeypatch.setattr(type(actor), '_do_handshake', handshake_then_cancel)
            ended = trio.Event()
            chans = []

            async def open_cancelled() -> None:
                with cs:
                    async with compat.open_portal(addr) as portal:
                        chans.append(portal.channel)
                        await trio.sleep_forever()
                ended.set()

            async with trio.open_nursery() as tn:
                tn.start_soon(open_cancelled)
                with trio.move_on_after(20):
                    await ended.wait()
                hung = not ended.is_set()
                if hung:  # its peer going away is all that ends it
                    monkeypatch.undo()
                    await sa.portal.cancel_actor()
            monkeypatch.undo()
            assert not hung, 'the cancelled portal waited for its peer to go away'
            assert cs.cancelled_caught
            assert chans and not chans[0].connected()
        finally:
            await compat.cancel_actor(sa, 5)
