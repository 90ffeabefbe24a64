"""a5 formats a debug string of every message it sends and receives (the
whole message, its raw bytes), even though nothing logs it.  The adapter's
methods build those strings only when tractor's log is at that level.

Each test sends canaries over a real actor connection: a ``str`` whose
``__repr__`` / ``__str__`` / ``__format__`` count their calls, and on the
receive path ``bytes`` that do the same.  The channel's own codec is
wrapped so that the canaries ride in the messages a5 handles (msgpack
cannot carry a subclass): encoding takes the plain string out of a canary
without formatting it, and decoding hands a5 canary bytes and a message
whose payload is a canary again."""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager as acm
from typing import Any

import msgspec
import pytest
import trio

from tractor_services import compat

#: formatting calls, per canary kind ('sent', 'received bytes', 'received')
FORMATTED: Counter[str] = Counter()
#: canaries decoded by the wrapped receive path (proves they were there)
DECODED: Counter[str] = Counter()


class Canary(str):
    """A string that counts every time something formats it."""

    kind = 'sent'

    def __repr__(self) -> str:
        FORMATTED[self.kind] += 1
        return str.__repr__(self)

    def __str__(self) -> str:
        FORMATTED[self.kind] += 1
        return str.__str__(self)

    def __format__(self, spec: str) -> str:
        FORMATTED[self.kind] += 1
        return str.__format__(self, spec)


class ReceivedCanary(Canary):
    kind = 'received'


class CanaryBytes(bytes):
    """A message's raw bytes, counting every time something formats them."""

    def __repr__(self) -> str:
        FORMATTED['received bytes'] += 1
        return bytes.__repr__(self)

    def __str__(self) -> str:
        FORMATTED['received bytes'] += 1
        return bytes.__repr__(self)

    def __format__(self, spec: str) -> str:
        FORMATTED['received bytes'] += 1
        return bytes.__repr__(self)


class _CanaryReader:
    """The transport's byte reader, returning :class:`CanaryBytes`."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner

    async def receive_exactly(self, n: int) -> bytes:
        return CanaryBytes(await self._inner.receive_exactly(n))


def _plain(obj: Any) -> Any:
    if isinstance(obj, Canary):
        return ''.join((obj,))  # the plain string, without formatting it
    raise NotImplementedError(type(obj))


@compat.context
async def echo(ctx: compat.Context) -> None:
    """(An endpoint.)  Sends back every message it receives."""
    await ctx.started(None)
    async with ctx.open_stream() as stream:
        async for msg in stream:
            await stream.send(msg)


@acm
async def canary_channel(reg_addr: tuple[str, int]) -> AsyncIterator[Any]:
    """An echo stream to a child actor, whose connection carries canaries
    both ways (on this, the root's, side)."""
    async with (
        compat.open_root_actor(reg_addr, 'canary_root'),
        compat.open_actor_nursery() as an,
    ):
        sa = await compat.start_actor(
            an, 'echoer', enable_modules=['test_compat_messages']
        )
        try:
            msgstream = sa.portal.channel.msgstream
            a5_decode = msgstream.decode

            def decode(data: bytes) -> Any:
                msg = a5_decode(data)
                if isinstance(msg, dict) and isinstance(msg.get('yield'), str):
                    msg['yield'] = ReceivedCanary(msg['yield'])
                    DECODED['received'] += 1
                return msg

            msgstream.encode = msgspec.msgpack.Encoder(enc_hook=_plain).encode
            msgstream.decode = decode
            msgstream.recv_stream = _CanaryReader(msgstream.recv_stream)
            async with (
                compat.open_context(sa.portal, echo) as (ctx, _),
                ctx.open_stream() as stream,
            ):
                yield stream
        finally:
            await compat.cancel_actor(sa, 5)


async def _round_trips(stream: Any, n: int) -> None:
    with trio.fail_after(30):
        for i in range(n):
            await stream.send(Canary(f'quote {i} ' * 50))
            got = await stream.receive()
            assert isinstance(got, ReceivedCanary)
            assert got == f'quote {i} ' * 50


@pytest.fixture
def a5_methods() -> Any:
    """a5's own message methods for one test (installed before its root
    opens a connection), the adapter's again after it."""
    compat._install_quiet_messages(False)
    yield
    compat._install_quiet_messages(True)


@pytest.fixture(autouse=True)
def counters() -> None:
    FORMATTED.clear()
    DECODED.clear()


async def test_no_message_is_formatted_when_sent_or_received(reg_addr):
    async with canary_channel(reg_addr) as stream:
        await _round_trips(stream, 20)
    assert DECODED['received'] == 20  # the canaries did ride the receive path
    assert FORMATTED == Counter(), dict(FORMATTED)


async def test_a5s_own_methods_format_every_message(reg_addr, a5_methods):
    """The canaries catch a5's formatting (what the test above would see
    without the adapter's methods)."""
    async with canary_channel(reg_addr) as stream:
        await _round_trips(stream, 20)
    assert DECODED['received'] == 20
    # Channel.send; _iter_packets; _process_messages and _push_result
    assert FORMATTED['sent'] >= 20, dict(FORMATTED)
    assert FORMATTED['received bytes'] >= 20, dict(FORMATTED)
    assert FORMATTED['received'] >= 2 * 20, dict(FORMATTED)


async def test_the_lines_are_still_logged_at_transport_level(reg_addr):
    """With tractor's log at ``transport`` level, each message is still
    logged, whole, once sent and once received."""
    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    logger = logging.getLogger('tractor')
    handler = Keep(level=5)
    async with canary_channel(reg_addr) as stream:
        old = logger.level
        logger.setLevel(5)
        logger.addHandler(handler)
        try:
            await _round_trips(stream, 3)
        finally:
            logger.removeHandler(handler)
            logger.setLevel(old)
    sent = [r for r in records if r.levelno == 5 and r.name == 'tractor._ipc']
    assert sent, 'no transport-level record'
    assert FORMATTED['sent'] >= 3, dict(FORMATTED)
    assert FORMATTED['received bytes'] >= 3, dict(FORMATTED)
    assert FORMATTED['received'] >= 2 * 3, dict(FORMATTED)


def test_switching_message_methods_keeps_connection_ends_marked():
    """Putting a5's message methods back (and the adapter's again) replaces
    a5's message loop: the mark of a connection's end (liveness across
    hosts, joined roots) is installed on whichever loop is in place."""
    import tractor

    loop = tractor._actor.Actor
    try:
        compat._install_quiet_messages(False)
        assert getattr(loop._process_messages, '_marks_end', False)
    finally:
        compat._install_quiet_messages(True)
    assert getattr(loop._process_messages, '_marks_end', False)
