"""
The one bounded queue that drops its oldest message: a sender that must
never block (a fan-out, a stream pump) puts into it, one task receives.

Used by ``compat.SafeStream`` (a stream drained into a local buffer) and
by feedbus (each subscriber's outbox, each local reader of a feed), so
the drop rule and its counters are the same everywhere: when the queue is
full, ``put`` drops the oldest message and counts it in ``stats.dropped``
and the event in ``stats.overruns`` (one drop per overrun here; a caller
may add drops of its own to the same ``stats``).  Nothing is lost
silently.

"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Any, Protocol

import trio

__all__ = ['DropCounts', 'DropOldestQueue', 'QueueStats']


class DropCounts(Protocol):
    """Where a queue counts what it dropped: any object with these two
    integer attributes (feedbus' ``SubStats``, compat's ``StreamStats``,
    or a :class:`QueueStats`), shared by several queues if the caller
    wants one total."""

    dropped: int
    overruns: int


@dataclass
class QueueStats:
    """A queue's own counters, when the caller gives none."""

    dropped: int = 0
    overruns: int = 0


class DropOldestQueue(trio.abc.ReceiveChannel[Any]):
    """A bounded queue that never blocks its sender: when full, the oldest
    message is dropped and counted (see the module's docstring).

    ``put`` never blocks; ``receive`` waits for a message.  ``close(err)``
    ends it: no more puts (they raise ``trio.ClosedResourceError``), the
    receiver gets what is queued, then ``err`` if given, else
    ``trio.EndOfChannel``.  ``take_one`` / ``take_all`` / ``wait_nonempty``
    / ``wait_filled`` let a sender task batch what has piled up."""

    def __init__(self, maxlen: int, stats: DropCounts | None = None) -> None:
        if isinstance(maxlen, bool) or not isinstance(maxlen, int) or maxlen <= 0:
            raise ValueError(f'maxlen={maxlen!r} must be a positive int')
        self._q: deque[Any] = deque()
        self._maxlen = maxlen
        self.stats: DropCounts = stats if stats is not None else QueueStats()
        self._ready = trio.Event()
        self._closed = False
        self._error: BaseException | None = None
        self._high_water: int | None = None
        self._filled = trio.Event()

    @property
    def maxlen(self) -> int:
        return self._maxlen

    @property
    def closed(self) -> bool:
        return self._closed

    def __len__(self) -> int:
        return len(self._q)

    # --- the sender's side ------------------------------------------------------

    def put(self, msg: Any) -> None:
        """Queue ``msg``, dropping (and counting) the oldest when full."""
        if self._closed:
            raise trio.ClosedResourceError('queue closed')
        q = self._q
        if len(q) >= self._maxlen:
            q.popleft()
            self.stats.dropped += 1
            self.stats.overruns += 1
        q.append(msg)
        self._ready.set()
        if self._high_water is not None and len(q) >= self._high_water:
            self._filled.set()

    def close(self, error: BaseException | None = None) -> None:
        """No more puts; the receiver gets what is queued, then ``error``
        (if given: the first close decides) or ``trio.EndOfChannel``."""
        if not self._closed:
            self._error = error
        self._closed = True
        self._ready.set()
        self._filled.set()

    def clear(self) -> None:
        """Discard what is queued, uncounted: for a caller that discards on
        purpose (a pause) or counts the discarded itself (``len`` first)."""
        self._q.clear()

    # --- the receiver's side ------------------------------------------------------

    def _end(self) -> BaseException:
        return self._error or trio.EndOfChannel()

    async def wait_nonempty(self) -> None:
        """Return once a message is queued; the end (see :meth:`close`)
        once closed and empty."""
        while not self._q:
            if self._closed:
                raise self._end()
            if self._ready.is_set():
                self._ready = trio.Event()
            await self._ready.wait()

    async def wait_filled(self, n: int) -> None:
        """Wait until ``n`` messages are queued (or the queue closes),
        without waking on every put; the end once closed and empty."""
        if self._closed and not self._q:
            raise self._end()
        await trio.lowlevel.checkpoint()
        while len(self._q) < n and not self._closed:
            self._high_water, self._filled = n, trio.Event()
            try:
                await self._filled.wait()
            finally:
                self._high_water = None

    def take_one(self) -> Any:
        """The oldest message (``IndexError`` when empty)."""
        return self._q.popleft()

    def take_all(self) -> list[Any]:
        """Everything queued, oldest first."""
        items = list(self._q)
        self._q.clear()
        return items

    async def receive(self) -> Any:
        await self.wait_nonempty()
        return self._q.popleft()

    async def aclose(self) -> None:
        self.close()
        await trio.lowlevel.checkpoint()
