"""
Introspection as a library call: :func:`introspect` asks a running tree
(the root's service manager, each feed daemon, samplerd) what runs, and
returns one typed :class:`~tractor_sampler.TreeInfo`.  ``samplerd ls``
renders it; programs (monitoring, tests) read its fields.

"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

import msgspec
import trio

from tractor_services import compat, open_root_mngr, resolve_registry_addr

from ._client import SAMPLERD
from ._feedd import FEEDD_PREFIX, feed_info
from ._info import FeedInfo, SamplerInfo, TreeInfo
from ._plugins import get_backends
from ._sampler import sampler_info

#: the parts of a tree :func:`introspect` can ask for
PARTS: tuple[str, ...] = ('services', 'feeds', 'samplerd', 'backends')


async def query_feed(portal: Any) -> FeedInfo:
    """A feed daemon's :class:`~tractor_sampler.FeedInfo`, through a portal
    to it."""
    return msgspec.convert(await portal.run(feed_info), FeedInfo)


async def query_samplerd(portal: Any) -> SamplerInfo:
    """samplerd's :class:`~tractor_sampler.SamplerInfo`, through a portal
    to it."""
    return msgspec.convert(await portal.run(sampler_info), SamplerInfo)


async def introspect(
    registry_addr: str | tuple[str, int] | None = None,
    *,
    parts: Collection[str] = PARTS,
) -> TreeInfo:
    """What runs under the root daemon at ``registry_addr`` (default
    ``$TRACTOR_REGISTRY_ADDR``, else tractor's): its services, each running
    feed daemon (topics, buffers, bar counters, subscribers), samplerd
    (periods, steps, clock and gap counters), and the backends installed
    in this process.  ``parts`` limits what is asked (a subset of
    :data:`PARTS`); what is not asked for is ``None`` in the result.

    In a program without a tractor runtime it boots a client root actor
    for the call (``ServiceError`` when nothing answers at the address).
    ``PluginError`` if a backend plugin of this process fails to load."""
    from ._feed import _maybe_client_root

    wanted = set(parts)
    unknown = wanted - set(PARTS)
    if unknown:
        raise ValueError(
            f'parts: unknown {sorted(unknown)} (known: {", ".join(PARTS)})'
        )
    if wanted == {'backends'}:  # no tree needed
        addr = resolve_registry_addr(registry_addr)
        return TreeInfo(registry=f'{addr[0]}:{addr[1]}', backends=get_backends().info())
    addr = resolve_registry_addr(registry_addr)
    async with _maybe_client_root(addr, None):
        return await _gather(addr, wanted)


def _on_host(info: FeedInfo, name: str) -> FeedInfo:
    """``info`` of the feed daemon registered as ``name``, with the joined
    host it runs on (``feedd.sim@b`` -> ``b``)."""
    from tractor_services._join import split_name

    host = split_name(name)[1]
    return info if host is None else msgspec.structs.replace(info, host=host)


async def _joined_services(addr: tuple[str, int]) -> list[Any]:
    """The services of the hosts that joined the registry at ``addr``
    (``samplerd run --join``), named ``<name>@<label>``; a host that does
    not answer is left out."""
    from tractor_services import ServiceError, joined_hosts

    out: list[Any] = []
    for host in await joined_hosts(addr):
        try:
            with trio.fail_after(compat.REGISTRY_TIMEOUT_S):
                async with open_root_mngr(addr, host=host.label) as mngr:
                    out.extend(await mngr.list_services())
        except (OSError, ServiceError, trio.TooSlowError):
            continue
    return out


async def _gather(addr: tuple[str, int], wanted: set[str]) -> TreeInfo:
    async with open_root_mngr(addr) as mngr:
        services = await mngr.list_services()
    services = [*services, *await _joined_services(addr)]
    running = {s.name for s in services if s.state == 'running'}
    feeds: list[FeedInfo] | None = None
    if 'feeds' in wanted:
        feeds = []
        for name in sorted(n for n in running if n.startswith(FEEDD_PREFIX)):
            async with compat.find_actor(name, addr) as portal:
                if portal is not None:
                    feeds.append(_on_host(await query_feed(portal), name))
    samplerd: SamplerInfo | None = None
    if 'samplerd' in wanted and SAMPLERD in running:
        async with compat.find_actor(SAMPLERD, addr) as portal:
            if portal is not None:
                samplerd = await query_samplerd(portal)
    return TreeInfo(
        registry=f'{addr[0]}:{addr[1]}',
        services=services if 'services' in wanted else None,
        feeds=feeds,
        samplerd=samplerd,
        backends=get_backends().info() if 'backends' in wanted else None,
    )
