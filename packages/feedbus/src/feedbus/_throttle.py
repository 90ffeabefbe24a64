"""
Per-subscriber throttling with tick framing.

A :class:`Throttler` reads :class:`~feedbus._msgs.Quote` messages from a
channel and hands :class:`~feedbus._msgs.Frame` messages to a send callable,
never more than ``rate`` frames per second. A frame conflates every quote
received since the previous one, keeping every tick in arrival order (plus a
FIFO list per tick type) and merging the quote fields.

Timing, with ``P = 1 / rate``, ``L`` the time the last frame was sent
(``-inf`` before the first; see below), ``F`` the arrival time of the
pending frame's first quote and ``T`` that of its first quote holding a
clearing tick:

- a frame holding a clearing tick (a trade) is due at ``max(T, L + P)``: it
  goes out as soon as the rate allows;
- otherwise (quote churn) it is due at ``L + P`` if ``F < L + P``, else at
  ``F + P``: churn is batched, dense churn is delivered at exactly ``rate``,
  and a quiet source's pending frame still leaves within one period of its
  first quote.

``L`` is the last frame's *due* time when that frame went out less than one
period late, and the time it actually went out otherwise. A timer wakes the
throttler a little late (up to a millisecond with epoll), and that lateness
must not add up: dense churn keeps a 60 Hz subscriber at 60 frames/s, not
at 1 / (P + 1 ms). The rate bound therefore holds between *due* times: a
frame sent late may be followed by the next one less than ``P`` later, but
(at a constant rate) due times stay ``P`` or more apart, so no more than
``rate`` frames leave per second on average, nor more than two within any
one period. A frame that went out a period or more late
(the previous ``send`` blocked that long, or a rate change made it overdue)
restarts the schedule from the time it went out.

Input: any ``trio.abc.ReceiveChannel`` (one wake-up per quote). One that
also queues, with ``take_all()`` (everything queued, at once, without
blocking), ``wait_nonempty()`` (block until something is queued;
``trio.EndOfChannel`` once closed and empty) and ``wait_filled(n)`` (block
until ``n`` are queued), as :class:`feedbus._bus.Outbox` does, costs one
wake-up per frame in steady flow: after a frame went at ``L``, whatever
arrives before ``L + P`` is due at ``L + P`` exactly (churn, and a trade
too: ``max(T, L + P)``), so the throttler sleeps to ``L + P`` without
looking at arrivals (waking early only if the queue fills halfway, so
nothing is dropped) and takes everything in at once. Only when nothing was
queued at ``L + P`` (a quiet source) does it wake on arrivals: on the
first (``F``), then on each until a clearing tick or ``F + P``. What
queued up while a ``send`` ran past ``L + P`` goes out as soon as the send
returns. Trio's scheduling (a cancel scope, a wake-up) is most of what a
frame costs, so the loop keeps to one of each per frame; a rate change
moves the deadline being waited for, and :meth:`Throttler.discard` ends
the wait.

Pure trio: all time comes from ``trio.current_time()`` and cancel-scope
deadlines, so ``trio.testing.MockClock`` drives it.

"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import trio

from tractor_services.checks import check_positive

from ._msgs import CLEARING_TICK_TYPES, Frame, Quote, TopicFrame

__all__ = ['ThrottleStats', 'Throttler']


def _check_rate(rate: Any) -> float:
    """A positive, finite number of Hz (the project's one number check)."""
    return float(check_positive('rate', rate, unit='Hz'))


@dataclass
class ThrottleStats:
    """Counters of one throttler (plain ints, read them at any time)."""

    frames_sent: int = 0  # frames whose ``send`` returned
    quotes_in: int = 0  # quotes received (each conflated into some frame)
    ticks_in: int = 0  # ticks carried by those quotes


class _TopicAcc:
    """Accumulates one topic's quotes for the pending frame."""

    __slots__ = (
        'ticks',
        'ticks_by_type',
        'fields',
        'n_quotes',
        'first_seq',
        'last_seq',
    )

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


class _Queue(Protocol):
    """What :meth:`Throttler.discard` needs of a bulk-drained queue."""

    def __len__(self) -> int: ...

    def clear(self) -> None: ...


#: a placeholder before :meth:`Throttler._add` looks up its first topic
_NO_ACC = _TopicAcc(0)


class Throttler:
    """
    Conflate a stream of quotes into at most ``rate`` frames per second.

    One throttler serves one subscriber: run :meth:`run` in a task that the
    subscriber's cancel handle owns. ``rate`` may be changed while it runs;
    the pending frame is re-timed at once. ``clearing`` is the set of tick
    types that make a frame urgent (default :data:`CLEARING_TICK_TYPES`).

    """

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
        self._last_sent = -math.inf  # L
        self._first_at: float | None = None  # F
        self._clearing_at: float | None = None  # T
        self._pending: dict[str, _TopicAcc] = {}
        # the cancel scope whose deadline is the pending frame's; the rate
        # setter moves it so a new rate applies without restarting anything
        self._wait_scope: trio.CancelScope | None = None
        self._wait_deadline: Callable[[], float] = self._deadline
        # the queue run() drains in bulk, while it runs: discard() clears it
        self._queued: _Queue | None = None

    # -- rate ---------------------------------------------------------------

    @property
    def rate(self) -> float:
        """Frames per second at most (Hz). Settable: finite and > 0."""
        return self._rate

    @rate.setter
    def rate(self, rate: float) -> None:
        self._rate = _check_rate(rate)
        scope = self._wait_scope
        if scope is not None and not scope.cancel_called:
            scope.deadline = self._wait_deadline()

    @property
    def period(self) -> float:
        return 1.0 / self._rate

    # -- frame assembly -----------------------------------------------------

    def _deadline(self) -> float:
        """When the pending frame is due (only meaningful if one is pending)."""
        assert self._first_at is not None
        next_allowed = self._last_sent + self.period
        if self._clearing_at is not None:
            return max(self._clearing_at, next_allowed)
        if self._first_at < next_allowed:
            return next_allowed
        return self._first_at + self.period

    def _add(self, batch: Sequence[Quote], now: float) -> None:
        """Conflate ``batch`` (quotes that arrived by ``now``, in order)
        into the pending frame."""
        if not batch:
            return
        if self._first_at is None:
            self._first_at = now
        pending = self._pending
        get_acc = pending.get
        clearing = self.clearing
        seen_clearing = self._clearing_at is not None
        n_ticks = 0
        # per quote: bookkeeping and one dict update (C); per tick: one copy
        # and two appends.  Runs of one topic (the usual batch) look the
        # topic up once.
        topic: str | None = None  # no quote's: the first one looks up
        acc = _NO_ACC
        merge, append, by_type = acc.fields.update, acc.ticks.append, acc.ticks_by_type
        for quote in batch:
            if quote.topic != topic:
                topic = quote.topic
                found = get_acc(topic)
                if found is None:
                    found = pending[topic] = _TopicAcc(quote.seq)
                acc = found
                merge = acc.fields.update
                append = acc.ticks.append
                by_type = acc.ticks_by_type
            acc.n_quotes += 1
            acc.last_seq = quote.seq
            merge(quote.fields)
            ticks = quote.ticks
            if not ticks:
                continue
            n_ticks += len(ticks)
            for tick in ticks:
                # copy: the frame never aliases (or lets anyone mutate) the
                # caller's dicts; the same copy is filed in both views
                tick = tick.copy()
                append(tick)
                ttype = tick.get('type')
                same = by_type.get(ttype)  # type: ignore[arg-type]
                if same is not None:
                    same.append(tick)
                elif ttype.__class__ is str:
                    by_type[ttype] = [tick]
                else:
                    continue  # no (string) type: in ``ticks`` only
                if not seen_clearing and ttype in clearing:
                    seen_clearing = True
                    self._clearing_at = now
        stats = self.stats
        stats.quotes_in += len(batch)
        stats.ticks_in += n_ticks

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

    def discard(self) -> int:
        """Drop the pending frame (on pause, or when the subscriber is
        removed): it is never sent.  Returns how many quotes it held.  The
        schedule (the last frame's time) is kept, so the rate still holds
        for whatever comes next.

        From a queue that :meth:`run` drains in bulk, what is queued belongs
        to the pending frame too (the throttler takes it in only when the
        frame is due): it is cleared and counted here as well."""
        n = sum(acc.n_quotes for acc in self._pending.values())
        queued = self._queued
        if queued is not None:
            n += len(queued)
            queued.clear()
        self._pending = {}
        self._first_at = None
        self._clearing_at = None
        if self._wait_scope is not None:
            self._wait_scope.cancel()  # stop waiting for a frame that is gone
        return n

    # -- the task -------------------------------------------------------------

    async def run(
        self,
        quotes: trio.abc.ReceiveChannel[Quote],
        send: Callable[[Frame], Awaitable[None]],
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """
        Receive quotes from ``quotes`` and ``await send(frame)`` for each
        frame, until ``quotes`` ends or is closed; then send the pending
        frame (at its due time, the rate still holds) and return.

        Errors raised by ``send`` (e.g. ``trio.BrokenResourceError`` when
        the subscriber is gone) propagate to the caller.

        """
        if self._running:
            raise RuntimeError('this Throttler is already running')
        self._running = True
        try:
            task_status.started()
            await self._loop(quotes, send)
        finally:
            self._running = False
            self._wait_scope = None
            self._queued = None

    async def _loop(
        self,
        quotes: trio.abc.ReceiveChannel[Quote],
        send: Callable[[Frame], Awaitable[None]],
    ) -> None:
        take_all = getattr(quotes, 'take_all', None)
        wait_nonempty = getattr(quotes, 'wait_nonempty', None)
        wait_filled = getattr(quotes, 'wait_filled', None)
        clear = getattr(quotes, 'clear', None)
        if (
            callable(take_all)
            and callable(wait_nonempty)
            and callable(wait_filled)
            and callable(clear)
        ):
            self._queued = quotes  # type: ignore[assignment]
            await self._loop_bulk(
                take_all,
                wait_nonempty,
                wait_filled,
                max(1, getattr(quotes, 'maxlen', 2) // 2),
                send,
            )
        else:
            await self._loop_each(quotes.receive, send)

    async def _send(
        self, send: Callable[[Frame], Awaitable[None]], due: float, now: float
    ) -> None:
        """Send the pending frame, due at ``due``; ``now`` is when."""
        frame = self._take_frame()
        # L: the due time, so that timer lateness does not accumulate;
        # the actual time if the frame is a period or more late
        self._last_sent = due if now - due < self.period else now
        await send(frame)
        self.stats.frames_sent += 1

    async def _wait_until(
        self,
        deadline: Callable[[], float],
        wait: Callable[[], Awaitable[None]],
    ) -> bool:
        """``await wait()`` until ``deadline()`` (which the rate setter
        calls again to move the wait), or until :meth:`discard` stops it.
        Returns False once the source has ended (closed and empty)."""
        with trio.CancelScope(deadline=deadline()) as scope:
            self._wait_scope = scope
            self._wait_deadline = deadline
            try:
                await wait()
            except (trio.EndOfChannel, trio.ClosedResourceError):
                return False
            finally:
                self._wait_scope = None
        return True

    async def _loop_bulk(
        self,
        take_all: Callable[[], list[Quote]],
        wait_nonempty: Callable[[], Awaitable[None]],
        wait_filled: Callable[[int], Awaitable[None]],
        high_water: int,
        send: Callable[[Frame], Awaitable[None]],
    ) -> None:
        """The loop for a source that queues (an :class:`~feedbus._bus.Outbox`).

        Steady flow costs one wake-up per frame: after a frame went at
        ``L``, anything arriving before ``L + P`` is due at ``L + P``
        exactly (churn: its first quote came before ``L + P``; a trade:
        ``max(T, L + P)``), so nothing that arrives can make it due sooner
        and the throttler sleeps to ``L + P`` (waking early only when the
        queue fills halfway, so nothing is dropped) and takes in
        everything at once.  Only after a quiet spell, when nothing was
        queued at ``L + P``, does it wake on arrivals: on the first quote
        (``F``), then on each until a clearing tick or ``F + P``."""
        current_time = trio.current_time
        add = self._add
        open_ = True

        def window_end() -> float:
            return self._last_sent + self.period

        async def wait_high() -> None:
            await wait_filled(high_water)

        while True:
            if self._last_sent > -math.inf:
                # 1. the window after the last frame: sleep to its end
                end = window_end()
                while open_ and current_time() < end:
                    open_ = await self._wait_until(window_end, wait_high)
                    add(take_all(), min(current_time(), end))
                    end = window_end()
                # what arrived by now goes at the window's end (by the
                # time it is taken in here, that cannot change)
                add(take_all(), min(current_time(), end))
                if self._pending:
                    if not open_:
                        # the source ended: the pending frame still
                        # waits for its due time (the rate holds on close)
                        await self._flush(send)
                        return
                    await self._send(send, end, current_time())
                    continue
                if not open_:
                    return

            # 2. quiet: wait for the first quote (F), without a timer
            try:
                await wait_nonempty()
            except (trio.EndOfChannel, trio.ClosedResourceError):
                return
            add(take_all(), current_time())

            # 3. churn due at F + P: take in each arrival until then, in
            # case a clearing tick makes it due at once
            while open_ and self._pending and self._clearing_at is None:
                if current_time() >= self._deadline():
                    break
                open_ = await self._wait_until(self._deadline, wait_nonempty)
                add(take_all(), current_time())
            if not self._pending:
                continue  # discard()ed
            if not open_:
                await self._flush(send)
                return
            due = self._deadline()
            now = current_time()
            if due > now:
                # a slower rate moved L + P past a clearing tick: the
                # frame is due at the end of the window
                continue
            await self._send(send, due, now)

    async def _flush(self, send: Callable[[Frame], Awaitable[None]]) -> None:
        """The source ended: send the pending frame at its due time."""
        while self._pending:
            due = self._deadline()
            if due > trio.current_time():
                await self._wait_until(self._deadline, trio.sleep_forever)
                continue
            await self._send(send, due, trio.current_time())

    async def _loop_each(
        self,
        receive: Callable[[], Awaitable[Quote]],
        send: Callable[[Frame], Awaitable[None]],
    ) -> None:
        """The loop for any other channel: one wake-up per quote."""
        current_time = trio.current_time
        add = self._add

        async def take_in() -> None:
            add((await receive(),), current_time())

        source_open = True
        while True:
            if not self._pending:
                if not source_open:
                    return
                # nothing pending: block on the source, no timer
                try:
                    await take_in()
                except (trio.EndOfChannel, trio.ClosedResourceError):
                    return
                continue

            due = self._deadline()
            if due > current_time():
                # one scope for all the waiting on this frame: take in more
                # quotes until its deadline, which a clearing tick (here) or
                # a rate change (the setter) moves
                with trio.CancelScope(deadline=due) as scope:
                    self._wait_scope = scope
                    self._wait_deadline = self._deadline
                    try:
                        if source_open:
                            try:
                                while True:
                                    urgent = self._clearing_at is not None
                                    await take_in()
                                    if not urgent and self._clearing_at is not None:
                                        scope.deadline = self._deadline()
                            except (trio.EndOfChannel, trio.ClosedResourceError):
                                source_open = False
                        await trio.sleep_forever()
                    finally:
                        self._wait_scope = None
                if not self._pending:
                    continue  # discard()ed while waiting
                due = self._deadline()
                if due > current_time():
                    # a rate change moved the deadline back out (the scope
                    # had already fired): keep waiting
                    continue
            await self._send(send, due, current_time())
