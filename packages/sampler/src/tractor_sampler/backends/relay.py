"""
The relay backend, ``relay``: quotes from a feed daemon on another host,
bars built and stepped here.

Meant for a feed daemon on host a (near the exchange) and the bars on
host b, with no samplerd on a: a client on b asks for the ``relay``
feed on b (``open_market_feed([...], backend='relay', feed_host='b',
config={'source': 'sim'})``); b's ``feedd.relay@b`` takes each topic's
quotes from a's ``feedd.<source>`` by one feedbus subscription and
builds the bars from their trades with its own writer, in b's shared
memory, stepped by b's samplerd (see docs/multihost.md, "Quotes on a,
bars on b").

``stream_quotes(symbols, *, source='sim', host=None, source_config=None)``

- ``source``: the backend of the feed daemon whose quotes are relayed
  (not ``relay``);
- ``host``: where that feed daemon runs: a joined host's label or
  address, default the registry's own host (a);
- ``source_config``: the topic's config there (e.g. ``{'seed': 1}``).

The feed daemon there is started, if it is not running, *quotes-only*
(``buffers={}``: no bars, no shared memory, no samplerd); one already
running keeps its settings (its bars, if it has them, stay its own).
Its topics are held (``attach_feed``) for as long as the relay streams
them.  A quote arrives here as it left a (fields and ticks); every trade
tick carries its exchange time, so a trade that arrives after b's step
closed its bar is placed into that closed bar (a late correction,
counted in the writer's ``late`` and broadcast as a ``Backfill``).
When a's feed daemon goes away the stream raises and b's feed daemon
restarts it by its restart policy (the topic is ``restarting``).

``symbol_info(symbol, *, source='sim', host=None, source_config=None)``
is a's (its volume mode in particular), asked of a's feed daemon; a
symbol a refuses is refused here.  There is no ``history``: a's
quotes-only daemon keeps no bars (the first live bar on b is partial).
"""

from __future__ import annotations

import functools
from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import aclosing
from contextlib import asynccontextmanager as acm
from typing import Any

import trio

import feedbus
from tractor_services import compat

from ..hookspecs import Register, hookimpl

NAME = 'relay'


@hookimpl
def tractor_sampler_register_backends(register: Register) -> None:
    from .. import __version__

    register(
        NAME,
        stream_quotes=stream_quotes,
        symbol_info=symbol_info,
        version=__version__,
    )


def _check(source: Any, host: Any, source_config: Any) -> None:
    if not isinstance(source, str) or not source:
        raise ValueError(
            f'source={source!r} must name the backend whose quotes to relay'
        )
    if source == NAME:
        raise ValueError('source=relay: a relay cannot relay another relay')
    if host is not None and (not isinstance(host, str) or not host):
        raise ValueError(f'host={host!r} must be a host label or address')
    if source_config is not None and not isinstance(source_config, dict):
        raise ValueError(f'source_config={source_config!r} must be a dict')


@acm
async def open_source(source: str, host: str | None) -> AsyncIterator[Any]:
    """A portal to ``feedd.<source>`` on ``host`` (default: the registry's
    own host), started quotes-only if it is not running."""
    from tractor_services import maybe_spawn_daemon

    from .._feed import FEEDD_POLICY
    from .._feedd import feedd, feedd_name

    if host is None:
        reg = compat.runtime_registry_addr()
        host = reg[0] if reg is not None else None
    async with maybe_spawn_daemon(
        feedd_name(source),
        functools.partial(feedd, backend=source, buffers={}),
        host=host,
        restart=FEEDD_POLICY,
    ) as portal:
        yield portal


@acm
async def _attached(
    portal: Any, symbols: list[str], source_config: dict[str, Any] | None
) -> AsyncIterator[tuple[Any, dict[str, Any]]]:
    """a's ``attach_feed`` of ``symbols`` (started there, held while in the
    block): its status stream and its started message.  No heartbeats on
    it: liveness across hosts is the quote subscription's (feedbus asks
    for its own)."""
    from .._feedd import attach_feed

    async with compat.open_context(
        portal,
        attach_feed,
        topics=symbols,
        config=source_config or None,
    ) as (ctx, started):
        async with compat.open_drained_stream(ctx) as status:
            yield status, started


async def symbol_info(
    symbol: str,
    *,
    source: str = 'sim',
    host: str | None = None,
    source_config: dict[str, Any] | None = None,
) -> dict[str, Any]:
    _check(source, host, source_config)
    async with (
        open_source(source, host) as portal,
        _attached(portal, [symbol], source_config) as (_, started),
    ):
        info = started['topics'][symbol].get('info')
    return dict(info or {'symbol': symbol})


async def _watch_status(status: Any) -> None:
    """End the relay when a's topic fails or ends, or its status stream
    ends (b's feed daemon then restarts the quote stream)."""
    async for st in status:
        state = st.get('state') if isinstance(st, dict) else None
        if state in ('failed', 'ended'):
            raise RuntimeError(
                f'the source topic {st.get("topic")!r} is {state}: {st.get("error")}'
            )
    raise RuntimeError("the source feed daemon's status stream ended")


def stream_quotes(
    symbols: list[str],
    *,
    source: str = 'sim',
    host: str | None = None,
    source_config: dict[str, Any] | None = None,
) -> AsyncIterator[dict[str, dict[str, Any]]]:
    _check(source, host, source_config)
    return _relay(list(symbols), source, host, source_config)


#: seconds to reach the source and subscribe before the relay gives up
#: (b's feed daemon then restarts it): a source stopping while we connect
#: may leave a5 waiting on it for ever
CONNECT_S = 15.0


async def _connect_deadline(connected: trio.Event, source: str) -> None:
    with trio.move_on_after(CONNECT_S):
        await connected.wait()
        return
    raise RuntimeError(
        f'the source feed daemon feedd.{source} did not serve within {CONNECT_S:g} s'
    )


async def _relay(
    symbols: list[str],
    source: str,
    host: str | None,
    source_config: dict[str, Any] | None,
) -> AsyncIterator[dict[str, dict[str, Any]]]:
    async with trio.open_nursery() as dn:
        connected = trio.Event()
        dn.start_soon(_connect_deadline, connected, source)
        async with aclosing(
            _relay_quotes(symbols, source, host, source_config, connected)
        ) as batches:
            async for batch in batches:
                yield batch


async def _relay_quotes(
    symbols: list[str],
    source: str,
    host: str | None,
    source_config: dict[str, Any] | None,
    connected: trio.Event,
) -> AsyncGenerator[dict[str, dict[str, Any]], None]:
    async with (
        open_source(source, host) as portal,
        _attached(portal, symbols, source_config) as (status, started),
        # a5 leaves a stream from a dead peer waiting for ever: its pid on
        # this host, its connection on another (as the mirror does)
        compat.raise_on_peer_exit(
            started['pid'], f'the source feed daemon feedd.{source}', portal
        ),
        feedbus.open_feed(portal, symbols) as quotes,
        trio.open_nursery() as n,
    ):
        n.start_soon(_watch_status, status)
        connected.set()
        async for q in quotes:
            if isinstance(q, feedbus.Quote):
                yield {q.topic: {**q.fields, 'ticks': list(q.ticks or ())}}
        raise RuntimeError("the source feed daemon's quote stream ended")
