"""
Heartbeats on streams whose peer is on another host.

On one host a stuck or dead peer is noticed by its pid; across hosts TCP
keepalive notices a dead host or a cut link, but not a peer whose host
still answers TCP while its process is stuck (SIGSTOPped, wedged) or whose
stream went silent.  So every long-lived stream to another host carries
heartbeats:

- the consumer decides, when it opens the stream, whether it wants them
  (:func:`heartbeat_interval`: a peer on another host by the connection's
  addresses, or every peer with ``$TRACTOR_SERVICES_HEARTBEATS=1``, for
  one-host tests) and asks the producer's endpoint for them
  (``heartbeat_s=``): both sides agree, a local stream is unchanged;
- the producer (:class:`Heartbeat`) sends :data:`HEARTBEAT_MSG` after
  :data:`HEARTBEAT_S` without any other message, through the stream's own
  send path (whole messages only: ``compat.send_whole``);
- the consumer's pump drops heartbeats (:func:`is_heartbeat`: readers
  never see one) and notes the time of every message; its watch
  (:func:`watch_silence`) raises :class:`~tractor_services.PeerGone` after
  :data:`HEARTBEAT_TIMEOUT_S` without any.  A consumer whose own event
  loop was blocked past the deadline gives the messages that arrived
  meanwhile :data:`STALL_GRACE_S` first: its stall is not the peer's.

"""

from __future__ import annotations

import math
import os
from collections.abc import Awaitable, Callable
from typing import Any, NoReturn

import trio

from . import compat
from ._errors import PeerGone

#: a producer sends a heartbeat after this long without any other message
HEARTBEAT_S: float = 1.0
#: a consumer raises PeerGone after this long without any message
HEARTBEAT_TIMEOUT_S: float = 3.0
#: after waking late (its own loop stalled), a consumer waits this long
#: for what arrived meanwhile before it calls the peer gone
STALL_GRACE_S: float = 0.5
#: a silence watch waking this much past its deadline was stalled itself
LATE_S: float = 0.1
#: ``1``: every stream a consumer opens asks for heartbeats (its peer is
#: treated as on another host); unset or ``0``: only streams to another host
ENV_VAR = 'TRACTOR_SERVICES_HEARTBEATS'

HEARTBEAT_TAG = 'heartbeat'
#: the message itself (a map, as control messages are; never data)
HEARTBEAT_MSG: dict[str, Any] = {'type': HEARTBEAT_TAG}


def is_heartbeat(raw: Any) -> bool:
    """Is ``raw`` (a message as received) a heartbeat?"""
    return type(raw) is dict and raw.get('type') == HEARTBEAT_TAG


def forced() -> bool:
    """Does ``$TRACTOR_SERVICES_HEARTBEATS`` ask for heartbeats on every
    stream?  A value other than ``0``/``1`` (or empty) is refused in one
    line."""
    raw = os.environ.get(ENV_VAR, '').strip()
    if raw in ('', '0'):
        return False
    if raw == '1':
        return True
    raise ValueError(f'${ENV_VAR}={raw!r} must be 1 (every stream) or 0')


def heartbeat_interval(portal: Any, force: bool | None = None) -> float | None:
    """What a consumer opening a stream on ``portal`` asks its producer for
    (the endpoint's ``heartbeat_s``): :data:`HEARTBEAT_S` for a peer on
    another host (by the connection's addresses), or for any peer when
    ``force`` (default: ``$TRACTOR_SERVICES_HEARTBEATS``); else ``None``."""
    if force is None:
        force = forced()
    if force:
        return HEARTBEAT_S
    chan = getattr(portal, 'channel', portal)
    return None if compat._same_host(chan) else HEARTBEAT_S


def check_heartbeat(value: Any) -> float | None:
    """An endpoint's ``heartbeat_s``: ``None`` (none) or seconds in
    (0, 60]; anything else one ``ValueError`` naming it."""
    if value is None:
        return None
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not math.isfinite(value)
        or not 0 < value <= 60
    ):
        raise ValueError(f'heartbeat_s={value!r} must be None or seconds in (0, 60]')
    return float(value)


def silence_timeout(interval: float | None) -> float | None:
    """The silence a consumer that asked for heartbeats every ``interval``
    tolerates: :data:`HEARTBEAT_TIMEOUT_S` for the default interval (three
    heartbeats missed), in proportion otherwise."""
    if interval is None:
        return None
    return HEARTBEAT_TIMEOUT_S * interval / HEARTBEAT_S


class Heartbeat:
    """The producer's side: wrap the stream's send with :meth:`wrap` (every
    message sent counts as traffic) and run :meth:`run` beside it."""

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self.last = trio.current_time()
        self.sending = 0
        #: heartbeats sent
        self.sent = 0

    def wrap(
        self, send: Callable[[Any], Awaitable[None]]
    ) -> Callable[[Any], Awaitable[None]]:
        async def sending(msg: Any) -> None:
            self.sending += 1
            try:
                await send(msg)
            finally:
                self.sending -= 1
                self.last = trio.current_time()

        return sending

    async def run(self, send: Callable[[Any], Awaitable[None]]) -> None:
        """Send a heartbeat with ``send`` (the wrapped send, or one that
        calls it) whenever :attr:`interval` passed without a message sent;
        a send in flight counts as traffic (it is the peer's to read)."""
        while True:
            due = self.last + self.interval
            if trio.current_time() < due:
                await trio.sleep_until(due)
                continue
            if self.sending:
                await trio.sleep(self.interval)
                continue
            await send(dict(HEARTBEAT_MSG))
            self.sent += 1


async def watch_silence(
    heard: Callable[[], float],
    what: str,
    timeout: float = HEARTBEAT_TIMEOUT_S,
    chan: Any = None,
) -> NoReturn:
    """Return never; raise :class:`PeerGone` once ``heard()`` (the time the
    last message arrived, ``trio.current_time()``) is ``timeout`` old.  A
    wake-up well past the deadline (this process stalled) waits
    :data:`STALL_GRACE_S` for the messages that arrived meanwhile first.
    ``chan``: the connection, marked disconnected (a5 would otherwise wait
    on the silent peer when the contexts on it close)."""
    stalled = False
    while True:
        deadline = heard() + timeout
        now = trio.current_time()
        if now < deadline:
            stalled = False
            await trio.sleep_until(deadline)
        elif now - deadline > LATE_S and not stalled:
            stalled = True
            await trio.sleep(STALL_GRACE_S)
        else:
            break
    if chan is not None:
        compat.mark_disconnected(chan)
    raise PeerGone(
        f'{what} sent nothing for {timeout:g} s (heartbeats every '
        f'{timeout * HEARTBEAT_S / HEARTBEAT_TIMEOUT_S:g} s): it is stuck, its '
        'host went silent or the link is cut'
    )
