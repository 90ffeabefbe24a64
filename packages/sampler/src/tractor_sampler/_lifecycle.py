"""
Topics start and stop on demand: the settings of a
feed daemon's lingering and stale watch, and :func:`stop_topic`, the
library side of ``samplerd stop TOPIC``.

A feed daemon counts each topic's clients (``attach_feed`` contexts,
``stream_bars`` streams, and subscriptions to the topic on its feed bus,
``feedbus.open_feed`` clients without a feed of their own included:
``FeedsBus.subscriptions``; a relay mirror's upstream session is an
``attach_feed`` too).  When the last one leaves, the topic lingers
``linger`` seconds (default :data:`DEFAULT_LINGER_S`; 0: it stops at
once); a client arriving meanwhile keeps it running, same buffers.  Then
its quote stream stops, its closed bars are flushed to the bar store (when
it is on) and its shared-memory slots are given back.  A topic that gets
no quote for ``stale_after`` seconds (default
:data:`DEFAULT_STALE_AFTER_S`; 0: never) is reported ``stale`` to its
subscribers, and ``up`` again at its next quote.  See docs/sampler.md,
"Lingering, stop and stale".
"""

from __future__ import annotations

import math
import os
from typing import Any

import msgspec

from tractor_services import compat

from ._msgs import FeedStatus
from ._plugins import DEFAULT_BACKEND

#: seconds a topic without clients keeps running
DEFAULT_LINGER_S = 30.0
#: seconds without a quote before a topic is reported ``stale``
DEFAULT_STALE_AFTER_S = 30.0

#: the linger of a root's feed daemons (``samplerd run --linger S``)
LINGER_ENV = 'TRACTOR_SAMPLER_LINGER_S'
#: their stale_after
STALE_AFTER_ENV = 'TRACTOR_SAMPLER_STALE_AFTER_S'


def check_seconds(value: Any, what: str) -> float:
    """``value`` as a number of seconds >= 0; one ``ValueError`` line
    naming ``what`` otherwise."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        try:
            value = float(value)
        except (TypeError, ValueError):
            raise ValueError(
                f'{what}={value!r} must be a number of seconds >= 0'
            ) from None
    value = float(value)
    if not math.isfinite(value) or value < 0:
        raise ValueError(f'{what}={value!r} must be a number of seconds >= 0')
    return value


def setting(value: Any, env: str, default: float, what: str) -> float:
    """``value`` if given, else ``$env`` if set, else ``default``; checked."""
    if value is None:
        raw = os.environ.get(env, '').strip()
        if not raw:
            return default
        return check_seconds(raw, f'${env}')
    return check_seconds(value, what)


async def stop_topic(
    topic: str,
    backend: str = DEFAULT_BACKEND,
    *,
    registry_addr: str | tuple[str, int] | None = None,
    reason: str | None = None,
) -> FeedStatus:
    """Stop ``topic`` of ``backend``'s running feed daemon now, whatever
    its clients: they get a :class:`FeedStatus` ``'ended'`` whose error is
    ``reason`` (default ``'stopped on request'``) and their feed's quote
    iteration ends; the topic's closed bars are flushed to the bar store
    (when it is on) and its buffers given back.  Returns that last status.
    ``ValueError`` (one line) when no such daemon or topic runs."""
    from ._feed import _maybe_client_root
    from ._feedd import feedd_name, stop_feed_topic

    if not isinstance(topic, str) or not topic:
        raise ValueError(f'topic={topic!r} must be a topic name')
    name = feedd_name(backend)
    async with _maybe_client_root(registry_addr, None) as addr:
        assert addr is not None  # resolved (default: the local registry)
        async with compat.find_actor(name, addr) as portal:
            if portal is None:
                raise ValueError(
                    f'no feed daemon {name} runs at {addr[0]}:{addr[1]}: '
                    f'nothing to stop'
                )
            try:
                st = await portal.run(stop_feed_topic, topic=topic, reason=reason)
            except Exception as exc:
                err = compat.unwrap_error(exc)
                if compat.remote_error_type(err) in ('ValueError', 'KeyError'):
                    raise ValueError(compat.remote_error_message(err)) from None
                raise
    return msgspec.convert(st, FeedStatus)
