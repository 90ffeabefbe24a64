'''
Per-subscriber throttling with tick framing.

A :class:`Throttler` reads :class:`~feedbus._msgs.Quote` messages from a
channel and hands :class:`~feedbus._msgs.Frame` messages to a send callable,
never more than ``rate`` frames per second. A frame conflates every quote
received since the previous one, keeping every tick in arrival order (plus a
FIFO list per tick type) and merging the quote fields.

Timing, with ``P = 1 / rate``, ``L`` the time the last frame was sent
(``-inf`` before the first), ``F`` the arrival time of the pending frame's
first quote and ``T`` that of its first quote holding a clearing tick:

- a frame holding a clearing tick (a trade) is due at ``max(T, L + P)``: it
  goes out as soon as the rate allows;
- otherwise (quote churn) it is due at ``L + P`` if ``F < L + P``, else at
  ``F + P``: churn is batched, dense churn is delivered at exactly ``rate``,
  and a quiet source's pending frame still leaves within one period of its
  first quote.

Pure trio: all time comes from ``trio.current_time()`` and cancel-scope
deadlines, so ``trio.testing.MockClock`` drives it.

'''
from __future__ import annotations

import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import trio

from ._msgs import CLEARING_TICK_TYPES, Frame, Quote, TopicFrame

__all__ = ['ThrottleStats', 'Throttler']


def _check_rate(rate: float) -> float:
    try:
        value = float(rate)
    except (TypeError, ValueError):
        raise ValueError(f'throttle rate must be a number, got {rate!r}') from None
    if not math.isfinite(value) or value <= 0:
        raise ValueError(
            f'throttle rate must be a finite number of Hz > 0, got {rate!r}'
        )
    return value


@dataclass
class ThrottleStats:
    '''Counters of one throttler (plain ints, read them at any time).'''
    frames_sent: int = 0   # frames whose ``send`` returned
    quotes_in: int = 0     # quotes received (each conflated into some frame)
    ticks_in: int = 0      # ticks carried by those quotes


class _TopicAcc:
    '''Accumulates one topic's quotes for the pending frame.'''
    __slots__ = ('ticks', 'ticks_by_type', 'fields', 'n_quotes', 'first_seq', 'last_seq')

    def __init__(self, first_seq: int) -> None:
        self.ticks: list[dict[str, Any]] = []
        self.ticks_by_type: dict[str, list[dict[str, Any]]] = {}
        self.fields: dict[str, Any] = {}
        self.n_quotes = 0
        self.first_seq = first_seq
        self.last_seq = first_seq

    def freeze(self) -> TopicFrame:
        return TopicFrame(
            ticks=self.ticks,
            ticks_by_type=self.ticks_by_type,
            fields=self.fields,
            n_quotes=self.n_quotes,
            first_seq=self.first_seq,
            last_seq=self.last_seq,
        )


class Throttler:
    '''
    Conflate a stream of quotes into at most ``rate`` frames per second.

    One throttler serves one subscriber: run :meth:`run` in a task that the
    subscriber's cancel handle owns. ``rate`` may be changed while it runs;
    the pending frame is re-timed at once. ``clearing`` is the set of tick
    types that make a frame urgent (default :data:`CLEARING_TICK_TYPES`).

    '''

    def __init__(
        self,
        rate: float,
        *,
        clearing: frozenset[str] = CLEARING_TICK_TYPES,
    ) -> None:
        self._rate = _check_rate(rate)
        self.clearing: frozenset[str] = frozenset(clearing)
        self.stats = ThrottleStats()

        self._running = False
        self._frame_seq = 0
        self._last_sent = -math.inf            # L
        self._first_at: float | None = None    # F
        self._clearing_at: float | None = None  # T
        self._pending: dict[str, _TopicAcc] = {}
        # the cancel scope whose deadline is the pending frame's; the rate
        # setter moves it so a new rate applies without restarting anything
        self._wait_scope: trio.CancelScope | None = None

    # -- rate ---------------------------------------------------------------

    @property
    def rate(self) -> float:
        '''Frames per second at most (Hz). Settable: finite and > 0.'''
        return self._rate

    @rate.setter
    def rate(self, rate: float) -> None:
        self._rate = _check_rate(rate)
        if self._wait_scope is not None and self._pending:
            self._wait_scope.deadline = self._deadline()

    @property
    def period(self) -> float:
        return 1.0 / self._rate

    # -- frame assembly -----------------------------------------------------

    def _deadline(self) -> float:
        '''When the pending frame is due (only meaningful if one is pending).'''
        assert self._first_at is not None
        next_allowed = self._last_sent + self.period
        if self._clearing_at is not None:
            return max(self._clearing_at, next_allowed)
        if self._first_at < next_allowed:
            return next_allowed
        return self._first_at + self.period

    def _add(self, quote: Quote, now: float) -> None:
        if self._first_at is None:
            self._first_at = now
        acc = self._pending.get(quote.topic)
        if acc is None:
            acc = self._pending[quote.topic] = _TopicAcc(quote.seq)
        acc.n_quotes += 1
        acc.last_seq = quote.seq
        acc.fields.update(quote.fields)

        self.stats.quotes_in += 1
        self.stats.ticks_in += len(quote.ticks)
        clearing = self.clearing
        for tick in quote.ticks:
            # copy: the frame never aliases (or lets anyone mutate) the
            # caller's dicts; the same copy is filed in both views
            tick = dict(tick)
            acc.ticks.append(tick)
            ttype = tick.get('type')
            if isinstance(ttype, str):
                acc.ticks_by_type.setdefault(ttype, []).append(tick)
                if self._clearing_at is None and ttype in clearing:
                    self._clearing_at = now

    def _take_frame(self) -> Frame:
        self._frame_seq += 1
        frame = Frame(
            seq=self._frame_seq,
            topics={topic: acc.freeze() for topic, acc in self._pending.items()},
            has_clearing=self._clearing_at is not None,
        )
        self._pending = {}
        self._first_at = None
        self._clearing_at = None
        return frame

    # -- the task -------------------------------------------------------------

    async def run(
        self,
        quotes: trio.abc.ReceiveChannel[Quote],
        send: Callable[[Frame], Awaitable[None]],
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        '''
        Receive quotes from ``quotes`` and ``await send(frame)`` for each
        frame, until ``quotes`` ends or is closed; then send the pending
        frame (at its due time, the rate still holds) and return.

        Errors raised by ``send`` (e.g. ``trio.BrokenResourceError`` when
        the subscriber is gone) propagate to the caller.

        '''
        if self._running:
            raise RuntimeError('this Throttler is already running')
        self._running = True
        try:
            task_status.started()
            await self._loop(quotes, send)
        finally:
            self._running = False
            self._wait_scope = None

    async def _loop(
        self,
        quotes: trio.abc.ReceiveChannel[Quote],
        send: Callable[[Frame], Awaitable[None]],
    ) -> None:
        source_open = True
        while True:
            if not self._pending:
                if not source_open:
                    return
                # nothing pending: block on the source, no timer
                try:
                    quote = await quotes.receive()
                except (trio.EndOfChannel, trio.ClosedResourceError):
                    return
                self._add(quote, trio.current_time())
                continue

            if self._deadline() > trio.current_time():
                # wait for the deadline (which the rate setter may move),
                # taking in more quotes meanwhile
                with trio.CancelScope(deadline=self._deadline()) as scope:
                    self._wait_scope = scope
                    try:
                        if source_open:
                            try:
                                quote = await quotes.receive()
                            except (trio.EndOfChannel, trio.ClosedResourceError):
                                source_open = False
                            else:
                                self._add(quote, trio.current_time())
                        else:
                            await trio.sleep_forever()
                    finally:
                        self._wait_scope = None
                if not scope.cancelled_caught:
                    # got a quote (or the source ended): re-time and go on
                    continue
                if self._deadline() > trio.current_time():
                    # a rate change moved the deadline back out (the scope
                    # had already fired): keep waiting
                    continue

            frame = self._take_frame()
            self._last_sent = trio.current_time()
            await send(frame)
            self.stats.frames_sent += 1
