"""
The bus: subscribers as sets per topic, and fan-out that neither a broken
nor a slow subscriber can stall.

Fan-out never awaits: ``publish()`` puts each message into every
subscriber's own bounded outbox and returns.  Each subscriber has one
sender task (its throttler when throttled) that drains the outbox into its
IPC stream.  So a subscriber that joins or leaves during a broadcast can
neither crash it nor get a message twice, and a stalled subscriber delays
only itself.

Drop rule (documented in docs/feedbus.md):

- an outbox holds at most ``outbox_size`` messages; when full, the oldest
  is dropped and counted in ``stats.dropped`` (each such event is an
  *overrun*, counted in ``stats.overruns``);
- a subscriber whose sends make no progress for ``stall_timeout`` seconds
  (judged by its progress, see ``feedbus._producer``), or whose stream is
  broken or closed, is removed from the bus (``stats.removed`` says why);
  what was still queued for it is counted in ``stats.dropped``.

``publish()`` refuses a malformed quote (``BadQuote``, a ``ValueError``)
before it takes a sequence number, and counts it per topic
(``FeedsBus.refused``): no subscriber ever sees it.

"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import msgspec
import trio

from tractor_services import DropOldestQueue, compat
from tractor_services.checks import check_positive

from ._errors import DROP_REASONS
from ._msgs import Quote
from ._ring import RING_BYTES, RingWriter, topic_id
from ._wire import pack

if TYPE_CHECKING:
    from ._throttle import Throttler

log = compat.get_logger('bus', 'feedbus')

#: messages an outbox holds before it drops the oldest
OUTBOX_SIZE: int = 1024
#: seconds a send to one subscriber may take before it is removed
STALL_TIMEOUT_S: float = 5.0


class SubStats(msgspec.Struct, kw_only=True):
    """Counters of one subscriber (readable over IPC)."""

    delivered: int = 0  # quotes delivered (inside frames or batches too)
    messages: int = 0  # IPC messages sent
    conflated: int = 0  # quotes merged into frames by the throttler
    dropped: int = (
        0  # quotes dropped: from a full outbox, or still queued when it was removed
    )
    overruns: int = 0  # times the outbox was full
    requests: int = 0  # control messages received from it
    removed: str | None = None  # why the bus removed it, if it did
    reason: str | None = (
        None  # the same in one word: 'stalled', 'overrun', 'broken' or 'ended'
    )
    ring: bool = False  # it reads the shared-memory quote ring (a local subscriber)
    gaps: int = 0  # times it fell more than the ring behind (ring subscribers)


class BadQuote(ValueError):
    """``publish()`` refused a quote: it names the topic and the problem."""


#: a subscriber's bounded outbox (and each local reader's buffer): the one
#: drop-oldest queue of tractor-services, counting into a :class:`SubStats`
#: (``dropped`` and ``overruns``).  ``Outbox(maxlen, stats)``.
Outbox = DropOldestQueue


class Progress:
    """Sends in flight on one subscriber's stream, and how many finished:
    what the stall watchdog judges (see ``feedbus._producer``).  Two
    integer updates per send, nothing more on the hot path."""

    __slots__ = ('busy', 'done', '_idle')

    def __init__(self) -> None:
        self.busy = 0
        self.done = 0
        self._idle: trio.Event | None = None

    def started(self) -> None:
        self.busy += 1

    def finished(self) -> None:
        self.busy -= 1
        self.done += 1
        if not self.busy and self._idle is not None:
            self._idle.set()

    async def wait_idle(self) -> None:
        """Return once no send is in flight."""
        while self.busy:
            self._idle = trio.Event()
            await self._idle.wait()


@dataclass(frozen=True)
class Sub:
    """One subscription: hashable and immutable, so the bus keeps sets.

    ``ipc`` is the subscriber's stream; ``send_chan`` its bounded outbox,
    drained by the subscriber's own task (its throttler when throttled);
    ``throttle_cs`` cancels exactly that task; ``rc_ui`` says whether the
    subscriber allows remote control of its UI.  ``ctl`` queues control
    replies (:meth:`reply`), sent by a task of their own, so the code
    serving requests never blocks on a stalled subscriber; ``progress``
    tracks every send on ``ipc`` for the stall rule."""

    ipc: compat.MsgStream | compat.SafeStream
    send_chan: Outbox
    throttle_cs: trio.CancelScope
    rc_ui: bool = False
    stats: SubStats = field(default_factory=SubStats, compare=False, hash=False)
    throttler: Throttler | None = field(default=None, compare=False, hash=False)
    ctl: Outbox | None = field(default=None, compare=False, hash=False)
    progress: Progress = field(default_factory=Progress, compare=False, hash=False)
    #: its reader slot in the bus's quote ring when it reads the ring (a
    #: local subscriber: the bus writes its quotes there, not to its outbox)
    ring_slot: int | None = field(default=None, compare=False, hash=False)

    def reply(self, msg: Any) -> None:
        """Queue a control reply (a struct or a map) to this subscriber;
        never blocks.  Sent in order, after any data send already in
        flight."""
        if self.ctl is None:
            raise RuntimeError(
                'this Sub has no reply queue: make it with feedbus.open_sub()'
            )
        try:
            self.ctl.put(msgspec.to_builtins(msg))
        except trio.ClosedResourceError:
            pass  # it was removed: the last message it gets says why

    @property
    def rate(self) -> float | None:
        """Frames per second when throttled, else ``None``."""
        return self.throttler.rate if self.throttler is not None else None


class FeedsBus:
    """Subscribers per topic (``set[Sub]``), the latest quote per topic,
    and per-topic sequence numbers.  One per producer actor:
    :func:`get_feed_bus`."""

    def __init__(self) -> None:
        self._subs: dict[str, set[Sub]] = {}
        # ring subscribers per topic: the ring carries their quotes
        self._ring_subs: dict[str, set[Sub]] = {}
        self._tids: dict[str, int] = {}
        #: the quote ring, while local subscribers read it (see feedbus._ring)
        self.ring: RingWriter | None = None
        #: its data size in bytes (for the next ring made)
        self.ring_bytes: int = RING_BYTES
        self._latest: dict[str, Quote] = {}
        self._seq: dict[str, int] = {}
        self.topics: set[str] = set()
        #: quotes ``publish()`` refused, per topic
        self.refused: dict[str, int] = {}
        # subscriptions per topic (paused ones too) and who watches their
        # number: see subscriptions() and watch_subscriptions()
        self._subscribed: dict[str, set[Sub]] = {}
        self._sub_watchers: list[Callable[[str, int], None]] = []

    # --- subscriber sets ------------------------------------------------

    def add_subs(self, key: str, subs: Iterable[Sub]) -> set[Sub]:
        """Add ``subs`` to ``key``'s set (adding twice is harmless);
        returns the set."""
        subs = list(subs)
        ss = self._subs.setdefault(key, set())
        ss.update(s for s in subs if s.ring_slot is None)
        rs = {s for s in subs if s.ring_slot is not None}
        if rs:
            self._ring_subs.setdefault(key, set()).update(rs)
        if not ss:
            del self._subs[key]
        return ss | self._ring_subs.get(key, set())

    def get_subs(self, key: str) -> set[Sub]:
        """``key``'s subscribers (a copy); an unknown topic creates nothing.
        Ring subscribers' counters are brought up to date from the ring."""
        rs = self._ring_subs.get(key, ())
        self._refresh(rs)
        return set(self._subs.get(key, ())) | set(rs)

    def remove_subs(self, key: str, subs: Iterable[Sub]) -> set[Sub]:
        """Remove ``subs`` from ``key`` (absent ones are ignored): they get
        nothing more of it and no longer count among its
        :meth:`subscriptions`; returns what remains."""
        subs = list(subs)
        left = self._stop_delivery(key, subs)
        self._unsubscribe(key, subs)
        return left

    def _stop_delivery(self, key: str, subs: list[Sub]) -> set[Sub]:
        """Take ``subs`` out of ``key``'s delivery sets only (a pause: they
        stay subscribed)."""
        left: set[Sub] = set()
        for table in (self._subs, self._ring_subs):
            ss = table.get(key)
            if ss is None:
                continue
            ss.difference_update(subs)
            if not ss:
                del table[key]
            left |= ss
        return left

    # --- subscriptions: what a producer counts as a topic's users ------------

    def subscriptions(self, topic: str) -> int:
        """How many subscriptions ask for ``topic``: subscribers that
        opened it through the feed endpoint (``feedbus.open_feed``) or
        subscribed to it since, paused ones included, until they
        unsubscribe, leave, or are removed (:meth:`remove_subs`,
        :meth:`drop_sub`).  Subscribers a producer adds itself
        (:meth:`add_subs` alone) are not counted."""
        return len(self._subscribed.get(topic, ()))

    def watch_subscriptions(self, fn: Callable[[str, int], None]) -> Callable[[], None]:
        """Call ``fn(topic, n)`` each time the number of
        :meth:`subscriptions` to ``topic`` changes (``n``: the new number),
        e.g. to stop a topic nobody reads; returns the function that stops
        the calls.  ``fn`` runs in the bus's own calls, so it must not
        block; an exception from it is logged, never raised into the bus."""
        self._sub_watchers.append(fn)

        def unwatch() -> None:
            if fn in self._sub_watchers:
                self._sub_watchers.remove(fn)

        return unwatch

    def _subscribe(self, topic: str, sub: Sub) -> None:
        """(the feed endpoint) ``sub`` asks for ``topic``."""
        ss = self._subscribed.setdefault(topic, set())
        if sub not in ss:
            ss.add(sub)
            self._tell(topic, len(ss))

    def _unsubscribe(self, topic: str, subs: Iterable[Sub]) -> None:
        ss = self._subscribed.get(topic)
        if not ss:
            return
        n = len(ss)
        ss.difference_update(subs)
        if len(ss) != n:
            if not ss:
                del self._subscribed[topic]
            self._tell(topic, len(ss))

    def _tell(self, topic: str, n: int) -> None:
        for fn in list(self._sub_watchers):
            try:
                fn(topic, n)
            except Exception as err:
                log.error(f'a subscription watcher failed on {topic!r}: {err!r}')

    def subs_items(self) -> Iterator[tuple[str, set[Sub]]]:
        """Topics with their subscribers (copies, safe to mutate the bus
        while iterating)."""
        for key in list({**self._subs, **self._ring_subs}):
            yield key, self.get_subs(key)

    # --- the quote ring (local subscribers) --------------------------------------

    def ring_slot(self) -> int | None:
        """A reader slot in the quote ring (made on first use), or ``None``
        when the ring serves as many readers as it can (the subscriber
        then takes the TCP path)."""
        if self.ring is None:
            self.ring = RingWriter(self.ring_bytes)
        return self.ring.claim_slot()

    def free_ring_slot(self, slot: int) -> None:
        """Give a slot back; the last one closes and unlinks the ring."""
        ring = self.ring
        if ring is None:
            return
        ring.free_slot(slot)
        if not ring._slots:
            self.ring = None
            ring.close()

    def _refresh(self, subs: Iterable[Sub]) -> None:
        """Copy ring readers' counters from their slots into their stats."""
        ring = self.ring
        if ring is None:
            return
        for sub in subs:
            if sub.ring_slot is not None:
                _, delivered, gaps, dropped, _pos, messages, conflated, _ = ring.slot(
                    sub.ring_slot
                )
                st = sub.stats
                st.delivered, st.gaps, st.dropped = delivered, gaps, dropped
                st.messages, st.conflated = messages, conflated

    def forget_sub(self, sub: Sub) -> None:
        """Remove ``sub`` from every topic and close its outbox."""
        for key in list({**self._subs, **self._ring_subs, **self._subscribed}):
            self.remove_subs(key, (sub,))
        sub.send_chan.close()

    def drop_sub(self, sub: Sub, why: str, *, reason: str = 'ended') -> None:
        """End ``sub``'s subscription: remove it from every topic, discard
        (and count in ``stats.dropped``) what is queued for it, and record
        why.  Its sender finishes the send in flight (never cut), then
        sends it one last message with ``reason`` (one of
        :data:`feedbus.DROP_REASONS`; ``'ended'`` when the producer's own
        code ends it), ``why`` and its final counters, and the
        subscription ends."""
        if reason not in DROP_REASONS:
            raise ValueError(f'reason={reason!r} must be one of {sorted(DROP_REASONS)}')
        stats = sub.stats
        if stats.removed is None:
            stats.removed = why
            stats.reason = reason
            log.warning(f'dropping subscriber: {why}')
            outbox = sub.send_chan
            stats.dropped += len(outbox)
            outbox.clear()
            if sub.throttler is not None:
                stats.dropped += sub.throttler.discard()
        self.forget_sub(sub)

    # --- topics and publishing --------------------------------------------

    def add_topic(self, topic: str) -> None:
        """Declare a topic this producer serves (subscribing to an unknown
        topic is an error)."""
        self.topics.add(topic)

    def latest(self, topic: str) -> Quote | None:
        return self._latest.get(topic)

    def broadcast(self, topic: str, msg: Any) -> int:
        """Put any message into the outbox of each of ``topic``'s
        subscribers, as is (no sequence number).  Never blocks; returns how
        many subscribers it reached."""
        n = 0
        for sub in list(self._subs.get(topic, ())):
            try:
                sub.send_chan.put(msg)
                n += 1
            except trio.ClosedResourceError:
                self.remove_subs(topic, (sub,))
        return n

    def publish(
        self,
        topic: str,
        fields: dict[str, Any],
        ticks: list[dict[str, Any]] | None = None,
    ) -> Quote:
        """Stamp the next sequence number of ``topic`` and fan the quote out
        to its subscribers.  Never blocks.

        A malformed quote (``fields`` not a dict with string keys, a tick
        that is not a dict with string keys and a string ``'type'``, or a
        value msgpack cannot encode) raises :class:`BadQuote` and is
        counted in :attr:`refused`; it takes no sequence number and no
        subscriber sees it."""
        seq = self._seq.get(topic, 0) + 1
        quote = Quote(topic=topic, seq=seq, fields=fields, ticks=ticks or [])
        try:
            # the keys, which the subscriber's typed decoder requires to be
            # strings (values: the encoder checks them, at no extra cost)
            if fields.__class__ is not dict:
                raise TypeError(f'fields {fields!r} is not a dict')
            for k in fields:
                if k.__class__ is not str:
                    raise TypeError(f'field name {k!r} is not a string')
            for tick in quote.ticks:
                if tick.__class__ is not dict:
                    raise TypeError(f'tick {tick!r} is not a dict')
                if tick.get('type').__class__ is not str:
                    raise TypeError(f"tick {tick!r} has no string 'type'")
                for k in tick:
                    if k.__class__ is not str:
                        raise TypeError(
                            f'tick {tick!r} has a key {k!r} that is not a string'
                        )
            if topic.__class__ is not str:
                raise TypeError(f'topic {topic!r} is not a string')
            packed = pack(quote)  # encoded once, shared by every unthrottled subscriber
        except (TypeError, ValueError, msgspec.EncodeError, OverflowError) as err:
            key = topic if isinstance(topic, str) else repr(topic)
            self.refused[key] = self.refused.get(key, 0) + 1
            raise BadQuote(f'quote for {topic!r} refused: {err}') from None
        self._seq[topic] = seq
        self.topics.add(topic)
        self._latest[topic] = quote
        if topic in self._ring_subs:
            ring = self.ring
            if ring is not None:
                tid = self._tids.get(topic)
                if tid is None:
                    tid = self._tids[topic] = topic_id(topic)
                ring.write(tid, packed)  # once, however many local readers
        subs = self._subs.get(topic)
        if subs:
            for sub in list(subs):
                item: Any = packed if sub.throttler is None else quote
                try:
                    sub.send_chan.put(item)
                except trio.ClosedResourceError:
                    self.remove_subs(topic, (sub,))
        return quote


@dataclass
class _Holder:
    bus: FeedsBus | None = None
    pid: int = 0


_holder = _Holder()


def get_feed_bus() -> FeedsBus:
    """This actor's one :class:`FeedsBus` (made on first use).  Inside a
    tractor runtime it also lets peers open ``open_feed_stream`` here."""
    if _holder.bus is None or _holder.pid != os.getpid():
        _holder.bus = FeedsBus()
        _holder.pid = os.getpid()
    if compat.current_actor() is not None:
        compat.expose_module('feedbus._producer')
    return _holder.bus


def reset_feed_bus() -> None:
    """Forget this actor's bus (tests, or a producer restarting its feeds)."""
    _holder.bus = None


# --- argument checks (one clear ValueError naming the argument) -------------


def check_topics(topics: Any) -> list[str]:
    """A non-empty list (or tuple, or set) of topic names."""
    if (
        isinstance(topics, (str, bytes))
        or not isinstance(topics, (list, tuple, set, frozenset))
        or not topics
    ):
        raise ValueError(f'topics={topics!r} must be a non-empty list of topic names')
    bad = [t for t in topics if not isinstance(t, str)]
    if bad:
        raise ValueError(
            f'topics={topics!r} must hold topic names (strings), not {bad[0]!r}'
        )
    return list(topics)


def check_rate(rate: Any, name: str = 'tick_throttle') -> float | None:
    """``None`` (unthrottled) or a positive, finite number of Hz, as a
    float (``'1.5'`` and ``True`` are refused, as every number check of
    the project refuses them: ``tractor_services.checks``)."""
    value = check_positive(name, rate, unit='Hz', allow_none=True)
    return None if value is None else float(value)


def check_stall_timeout(value: Any) -> float:
    return float(check_positive('stall_timeout', value, unit='seconds'))


def check_outbox_size(value: Any, name: str = 'outbox_size') -> int:
    """A positive number that is also an ``int``."""
    check_positive(name, value, unit='messages')
    if not isinstance(value, int):
        raise ValueError(f'{name}={value!r} must be a whole number of messages')
    return value


def check_flag(name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f'{name}={value!r} must be True or False')
    return value


def check_clearing(clearing: Any) -> frozenset[str] | None:
    """``None`` (the default set, the caller's to choose) or a collection
    of tick type names; an empty one means *no* clearing tick types."""
    if clearing is None:
        return None
    if isinstance(clearing, (str, bytes)) or not isinstance(
        clearing, (list, tuple, set, frozenset)
    ):
        raise ValueError(
            f'clearing={clearing!r} must be a list of tick type names (or None)'
        )
    bad = [c for c in clearing if not isinstance(c, str)]
    if bad:
        raise ValueError(
            f'clearing={clearing!r} must hold tick type names (strings), not {bad[0]!r}'
        )
    return frozenset(clearing)


_FeedsBus = FeedsBus
