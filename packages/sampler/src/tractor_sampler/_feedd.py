"""
The feed daemon: one per backend, registered as ``feedd.<backend>``,
spawned and supervised by the root's service manager and found through
the registry.

For every topic (a symbol of the backend) a client asks for, it:

1. checks the symbol with the backend's ``symbol_info`` (when it has one),
   so an unknown symbol is a clear error for that client only;
2. creates one shared-memory buffer per period (1 s and 60 s by default),
   fetches history for each (when the backend has it) and seeds the open
   bar with the last close;
3. registers the buffers with samplerd (which steps them from then on),
   prepends the history and broadcasts a :class:`~tractor_sampler.Backfill`
   event per buffer;
4. runs the backend's quote stream through
   :func:`~tractor_sampler.sample_and_broadcast`: trades into the open bars,
   every quote onto this actor's feed bus, where subscribers read it with
   ``feedbus.open_feed`` (throttled ones through their throttler);
5. folds samplerd's steps into its bar writer.

A quote stream that raises (or ends) is reported to the topic's
subscribers as a :class:`~tractor_sampler.FeedStatus` and restarted by the
daemon's :class:`~tractor_services.RestartPolicy` (``transient``, at most
5 restarts in 60 s, backing off from 0.5 s by default); when the policy
gives up the topic is reported ``failed`` and torn down (the next client
that asks for it starts it afresh).  Topics are independent: one topic's
failure, or another backend's, touches nothing else.

The feed daemon requires samplerd (the root's manager stops it first).
When samplerd goes away (killed, or its endpoint stopped) the topics are
reported ``restarting`` and their quote streams run on; the daemon asks the
root's manager to tell it when samplerd runs again
(:meth:`~tractor_services.ServiceMngr.wait_running`), appends the rows of
the boundaries samplerd missed (flat at the last close; trades that
arrived meanwhile are placed into them) and registers the buffers again:
``up``, with bars contiguous.  If samplerd is not coming back (stopped on
request, or its restart policy gave up) the topics are reported ``failed``
and torn down.

"""

from __future__ import annotations

import gc
import math
import os
import time
from collections import Counter, defaultdict
from collections.abc import AsyncIterator, Iterable, Iterator
from contextlib import asynccontextmanager as acm
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import msgspec
import numpy as np
import trio

from feedbus import FeedsBus, get_feed_bus, open_sub
from tractor_services import (
    GaveUp,
    PeerDisconnected,
    RestartPolicy,
    Supervision,
    compat,
    describe_error,
    error_leaves,
    host_id,
    open_root_mngr,
    supervise,
)
from tractor_services._heartbeat import check_heartbeat

from ._client import SAMPLERD, SampleStream, open_sample_stream, spawn_samplerd
from ._conform import ContractBreach, check_bars, check_first_batches, check_symbol_info
from ._errors import NoFeedDaemon, SamplerError, SamplerGone, SamplerRefused
from ._history import prepend_history
from ._info import BarCounters, BufferInfo, FeedInfo, SubscriberInfo, TopicInfo, to_wire
from ._msgs import FeedState, FeedStatus, Step
from ._ohlc import OHLCWriter, broadcast_corrections, sample_and_broadcast, volume_mode
from ._plugins import DEFAULT_BACKEND, Backend, config_for, load_backends
from ._pool import DEFAULT_GROUP_MEMBERS, BufferPool, GroupKey, check_group_members
from ._schedule import Grid, check_origin, check_period, check_stamp
from ._store import StoreWriter, flush_interval, join_stored, open_store
from .shm import ShmArray, StepPlan

log = compat.get_logger('feedd', 'tractor_sampler')

#: the service name prefix: the daemon of backend ``b`` is ``feedd.b``
FEEDD_PREFIX = 'feedd.'

#: per period: (buffer rows, history bars fetched); the window starts in
#: the middle, so half the rows are room for history and half for live bars
DEFAULT_BUFFERS: dict[float, tuple[int, int]] = {
    1.0: (2 * 12 * 3600, 3600),  # 12 h of live 1 s bars; an hour of history
    60.0: (2 * 7 * 1440, 1440),  # a week of live 1 min bars; a day of history
}

#: how long a client's request waits for a just-spawned daemon to serve
READY_TIMEOUT_S = 30.0

#: how long topics wait for samplerd to run again after it went away
#: (the manager says at once when it is not coming back)
SAMPLERD_BACK_TIMEOUT_S = 60.0

#: at most this many buffers per add/remove request to samplerd
MAX_BATCH: int = 2000

#: at most this many topics of one attach request start at once
START_CONCURRENCY: int = 10_000

#: how a topic's quote stream is restarted when it raises
DEFAULT_STREAM_POLICY = RestartPolicy(
    restart='transient',
    max_restarts=5,
    within_s=60.0,
    backoff_s=0.5,
    max_backoff_s=10.0,
)


#: an attach request of at least this many topics starts them with the
#: cyclic garbage collector paused (see _gc_paused)
GC_PAUSE_TOPICS: int = 64

#: attach requests running with the collector paused (and whether it
#: was enabled before the first)
_gc_pauses = 0
_gc_was_enabled = True


@contextmanager
def _gc_paused(pause: bool) -> Iterator[None]:
    """Pause Python's cyclic garbage collector while many topics start:
    each start allocates thousands of objects that live on (tasks, bars
    writers, buffers), so the collector would run full collections over an
    ever larger heap again and again (measured: a third of the time to open
    4,000 topics).  Nothing is freed late: what starting leaves as cyclic
    garbage is collected once the last paused start is done."""
    global _gc_pauses, _gc_was_enabled
    if not pause:
        yield
        return
    if not _gc_pauses:
        _gc_was_enabled = gc.isenabled()
        gc.disable()
    _gc_pauses += 1
    try:
        yield
    finally:
        _gc_pauses -= 1
        if not _gc_pauses and _gc_was_enabled:
            gc.enable()


def feedd_name(backend: str) -> str:
    """The service name of ``backend``'s feed daemon."""
    return f'{FEEDD_PREFIX}{backend}'


def check_topic_name(name: Any) -> str:
    """One topic (symbol) name, whatever the backend: a non-empty string
    without surrounding blanks, commas or control characters (``' '`` and
    ``'AAA,BBB'`` are typos, refused here in one line naming them, before
    anything starts); what else a symbol may hold is the backend's to say
    (``sim``: see backends/sim.py)."""
    if not isinstance(name, str) or not name.strip():
        raise ValueError(f'bad topic {name!r}: topics are non-empty strings')
    if name != name.strip():
        raise ValueError(f'bad topic {name!r}: blanks around the name')
    if ',' in name:
        raise ValueError(
            f'bad topic {name!r}: a comma in the name (give several topics as a list)'
        )
    if any(not c.isprintable() for c in name):
        raise ValueError(f'bad topic {name!r}: a control character in the name')
    return name


def check_topics(topics: Any) -> list[str]:
    """A non-empty list of distinct, non-empty topic names."""
    if isinstance(topics, str) or not isinstance(topics, Iterable):
        raise TypeError(f'topics must be a list of symbol names, not {topics!r}')
    out = list(topics)
    if not out:
        raise ValueError('no topics given')
    for t in out:
        check_topic_name(t)
    if len(set(out)) != len(out):
        raise ValueError(f'duplicate topics in {out!r}')
    return out


class BufferSpec(tuple):
    """One buffer of a topic: ``(rows, history)`` (a tuple, so it unpacks
    and compares like the plain form) plus its bar options: ``composite``,
    the source period it is built from (``None``: built from trades; see
    :class:`~tractor_sampler._ohlc.OHLCWriter`).  Equal to a plain
    ``(rows, history)`` tuple only when its options are the defaults."""

    composite: float | None
    origin: float
    stamp: str
    skip_first_partial: bool

    def __new__(
        cls,
        rows: int,
        history: int,
        *,
        composite: float | None = None,
        origin: float = 0.0,
        stamp: str = 'open',
        skip_first_partial: bool = False,
    ) -> BufferSpec:
        self = super().__new__(cls, (rows, history))
        self.composite, self.origin, self.stamp = composite, origin, stamp
        self.skip_first_partial = skip_first_partial
        return self

    @property
    def options(self) -> dict[str, Any]:
        """The options that are not the defaults, by their dict-form keys."""
        opts: dict[str, Any] = {}
        if self.composite is not None:
            opts['from'] = self.composite
        if self.origin:
            opts['origin'] = self.origin
        if self.stamp != 'open':
            opts['stamp'] = self.stamp
        if self.skip_first_partial:
            opts['skip_first_partial'] = True
        return opts

    def to_msg(self) -> dict[str, Any]:
        """The dict form (``{'rows': n, 'history': m, **options}``), which
        :func:`check_buffers` takes back: what travels to the daemon."""
        return {'rows': self[0], 'history': self[1], **self.options}

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, tuple) or tuple(self) != tuple(other):
            return False
        return self.options == (other.options if isinstance(other, BufferSpec) else {})

    def __ne__(self, other: object) -> bool:
        return not self == other

    __hash__ = tuple.__hash__

    def __repr__(self) -> str:
        opts = ''.join(f', {k}={v!r}' for k, v in self.options.items())
        return f'BufferSpec({self[0]}, {self[1]}{opts})'


#: the keys of a buffer's dict form
_SPEC_KEYS = ('rows', 'history', 'from', 'origin', 'stamp', 'skip_first_partial')


def check_buffers(buffers: Any) -> dict[float, BufferSpec]:
    """``{period: (rows, history)}``, ``{period: rows}`` (no history) or
    ``{period: {'rows': n, 'history': m, 'from': source_period, 'origin':
    s, 'stamp': 'open' | 'close', 'skip_first_partial': bool}}`` (the dict
    form: ``from`` makes a composite buffer built from the source period's
    bars, ``origin`` starts its bars ``s`` seconds past the period's
    multiples, ``stamp='close'`` stamps each row with its bar's end,
    ``skip_first_partial`` writes no trade into the first live bar when
    the topic started mid-bar; see docs/sampler.md); a :class:`BufferSpec`
    per period."""
    if buffers is None:
        buffers = DEFAULT_BUFFERS
    if not isinstance(buffers, dict) or not buffers:
        raise ValueError(
            f'buffers must map periods to (rows, history bars), not {buffers!r}'
        )
    out: dict[float, BufferSpec] = {}
    for raw_p, spec in buffers.items():
        try:
            p = check_period(float(raw_p))
        except (TypeError, ValueError) as err:
            raise ValueError(f'buffers: {err}') from None
        opts: dict[str, Any] = {}
        if isinstance(spec, BufferSpec):
            opts = dict(spec.options)
        if isinstance(spec, int):
            rows, hist = spec, 0
        elif isinstance(spec, (list, tuple)) and len(spec) == 2:
            rows, hist = spec
        elif isinstance(spec, dict):
            unknown = sorted(set(spec) - set(_SPEC_KEYS), key=str)
            if unknown or 'rows' not in spec:
                raise ValueError(
                    f'buffers[{p}]: {spec!r} must have rows and may have '
                    f'{", ".join(_SPEC_KEYS[1:])}'
                    + (f', not {unknown}' if unknown else '')
                )
            rows, hist = spec['rows'], spec.get('history', 0)
            opts = {k: spec[k] for k in _SPEC_KEYS[2:] if spec.get(k) is not None}
        else:
            raise ValueError(
                f'buffers[{p}]: {spec!r} must be rows, (rows, history bars) or a dict'
            )
        if not (isinstance(rows, int) and rows >= 4):
            raise ValueError(f'buffers[{p}]: rows={rows!r} must be an int >= 4')
        if not (isinstance(hist, int) and 0 <= hist <= rows // 2):
            raise ValueError(
                f'buffers[{p}]: history={hist!r} must be an int in [0, rows // 2]'
            )
        src = opts.get('from')
        if src is not None:
            try:
                src = check_period(src)
            except (TypeError, ValueError) as err:
                raise ValueError(f'buffers[{p}]: from: {err}') from None
        try:
            origin = check_origin(opts.get('origin', 0.0))
            stamp = check_stamp(opts.get('stamp', 'open'))
        except ValueError as err:
            raise ValueError(f'buffers[{p}]: {err}') from None
        skip = opts.get('skip_first_partial', False)
        if not isinstance(skip, bool):
            raise ValueError(
                f'buffers[{p}]: skip_first_partial={skip!r} must be True or False'
            )
        out[p] = BufferSpec(
            rows,
            hist,
            composite=src,
            origin=origin,
            stamp=stamp,
            skip_first_partial=skip,
        )
    composite = {p: s.composite for p, s in out.items() if s.composite is not None}
    for p, src in composite.items():
        if src not in out:
            raise ValueError(
                f'buffers[{p}]: from={src:g} names no buffer (periods: {sorted(out)})'
            )
        if src in composite:
            raise ValueError(
                f'buffers[{p}]: from={src:g} is itself composite: build from a buffer of trades'
            )
        tp, ts = round(p * 10), round(src * 10)
        if tp <= ts or tp % ts:
            raise ValueError(
                f'buffers[{p}]: from={src:g}: the period must be a whole multiple of the source period, and longer'
            )
        if (Grid(p, out[p].origin).origin - Grid(src, out[src].origin).origin) % ts:
            raise ValueError(
                f"buffers[{p}]: from={src:g}: its bars must start on the source's boundaries (origin)"
            )
    return out


def check_feedd_buffers(buffers: Any) -> dict[float, BufferSpec]:
    """A feed daemon's ``buffers``: :func:`check_buffers`, except that
    ``{}`` makes a *quotes-only* daemon: its topics keep no bars (no
    shared memory, no history) and it neither needs nor starts samplerd.
    It feeds clients that build bars elsewhere, e.g. the ``relay``
    backend of a feed daemon on another host (docs/multihost.md, "Quotes
    on a, bars on b")."""
    if isinstance(buffers, dict) and not buffers:
        return {}
    return check_buffers(buffers)


def composite_of(buffers: dict[float, BufferSpec]) -> dict[float, float]:
    """The ``composite=`` argument of a topic's :class:`OHLCWriter`."""
    return {p: s.composite for p, s in buffers.items() if s.composite is not None}


async def _aclose(source: Any, name: str) -> None:
    """Close a backend's quote stream (shielded, bounded)."""
    aclose = getattr(source, 'aclose', None)
    if aclose is None:
        return
    with trio.CancelScope(shield=True), trio.move_on_after(5):
        try:
            await aclose()
        except Exception as err:
            log.error(f'{name}: closing the quote stream failed: {describe_error(err)}')


def _on_grid(bars: np.ndarray | None, grid: Grid, name: str) -> np.ndarray | None:
    """A backend's history (bars stamped on their start, on the period's
    multiples) for a buffer on ``grid``: stamped on close, the times move
    one period on; on another origin it does not fit (logged, no backfill)."""
    if bars is None or not len(bars) or 'time' not in (bars.dtype.names or ()):
        return bars
    if grid.origin:
        log.warning(
            f"{name}: history for {grid.p:g} s bars is on the period's multiples, "
            f"the buffer's bars start {grid.origin / 10:g} s past them: no backfill"
        )
        return None
    if grid.close:
        bars = bars.copy()
        bars['time'] = (np.rint(bars['time'] * 10) + grid.tenths) / 10
    return bars


def _fill_to(bars: np.ndarray, open_t: float, p: float) -> np.ndarray:
    """History ending before the bar preceding ``open_t`` (fetching it
    took a while), continued with flat bars at the last close, so it meets
    the open bar."""
    if not len(bars) or 'time' not in (bars.dtype.names or ()):
        return bars
    missing = round((open_t - p - float(bars['time'][-1])) / p)
    if missing <= 0:
        return bars
    fill = np.zeros(missing, dtype=bars.dtype)
    close = bars['close'][-1]
    for f in ('open', 'high', 'low', 'close'):
        if f in (bars.dtype.names or ()):
            fill[f] = close
    fill['time'] = float(bars['time'][-1]) + p * np.arange(1, missing + 1)
    return np.concatenate([bars, fill])


#: what leaving samplerd's sample stream raises when samplerd went away
_SAMPLERD_LOST = (
    SamplerGone,
    PeerDisconnected,  # PeerGone: its process exited
    compat.ContextCancelled,  # it stopped (its actor was cancelled)
    trio.BrokenResourceError,
    trio.ClosedResourceError,
    trio.EndOfChannel,
)


def samplerd_lost(err: BaseException) -> BaseException | None:
    """The error that says samplerd went away, if that (and cancellations)
    is all ``err`` holds, else ``None``.  a5 raises groups here (e.g. its
    ``ContextCancelled`` with our ``SamplerGone``): caught by content."""
    found = [e for e in error_leaves(err) if not isinstance(e, trio.Cancelled)]
    if not found or not all(isinstance(e, _SAMPLERD_LOST) for e in found):
        return None
    # the most telling one: the process exit, then samplerd's cancel
    for kind in (PeerDisconnected, compat.ContextCancelled):
        for e in found:
            if isinstance(e, kind):
                return e
    return found[0]


def fill_missed_bars(shm: ShmArray, period_s: float, now: float) -> int:
    """Append the rows of the boundaries nobody stepped (samplerd was
    away) up to the bar holding ``now``, as samplerd's steps would have
    made them (index + 1, time + period, flat at the last close, no
    volume); returns how many.  Bounded by the room left."""
    if not len(shm) or 'time' not in (shm.dtype.names or ()):
        return 0
    grid = Grid.of(period_s, shm.token)  # the token says where its bars lie
    open_t = grid.row_time(grid.bar_of(now))
    n = min(
        round((open_t - float(shm.last_row['time'])) / period_s), shm.size - shm.last
    )
    if n <= 0:
        return 0
    plan = StepPlan([shm])
    for _ in range(n):
        plan.step(period_s)
    return n


def fill_missed_bars_many(
    shms: list[ShmArray], period_s: float, now: float
) -> list[int]:
    """:func:`fill_missed_bars` for many buffers of one period: the
    buffers of one group whose last rows are at the same time (after an
    outage, all of a daemon's topics) are filled by one vectorised plan;
    returns the rows appended to each."""
    out = [0] * len(shms)
    buckets: dict[tuple[str, float], list[int]] = defaultdict(list)
    for i, shm in enumerate(shms):
        if len(shm) and 'time' in (shm.dtype.names or ()):
            buckets[(shm.token.shm_name, float(shm.last_row['time']))].append(i)
    for (_, last_t), idx in buckets.items():
        first = shms[idx[0]]
        grid = Grid.of(period_s, first.token)
        open_t = grid.row_time(grid.bar_of(now))
        n = round((open_t - last_t) / period_s)
        room = min(shms[i].size - shms[i].last for i in idx)
        if n <= 0:
            continue
        if n > room:  # some have no room for all: one by one, bounded
            for i in idx:
                out[i] = fill_missed_bars(shms[i], period_s, now)
            continue
        plan = StepPlan([shms[i] for i in idx])
        for _ in range(n):
            plan.step(period_s)
        for i in idx:
            out[i] = n
    return out


def _fill_to_now(shms_by_period: dict[float, list[ShmArray]]) -> int:
    """Right before buffers are registered with samplerd: the rows of the
    boundaries that passed since they were seeded (a busy daemon starting
    thousands of topics can take longer than samplerd aligns by itself,
    :data:`~tractor_sampler._sampler.MAX_ALIGN_ROWS` bars), flat at the
    last close as samplerd's steps make them, so no gap opens; returns
    how many rows."""
    now = time.time()
    return sum(
        sum(fill_missed_bars_many(list(shms), p, now))
        for p, shms in shms_by_period.items()
    )


@dataclass(eq=False)
class _Started:
    """A topic task's ``task_status``: set when it serves (or failed to)."""

    done: trio.Event = field(default_factory=trio.Event)
    topic: Topic | None = None
    error: Exception | None = None

    def started(self, topic: Topic) -> None:
        self.topic = topic
        self.done.set()


@dataclass(eq=False)
class _Req:
    """A topic's buffers to add to (or remove from) samplerd's stepping,
    queued for the daemon's one sample stream (sent in batches)."""

    kind: str  # 'add' | 'remove'
    topic: Topic
    done: trio.Event = field(default_factory=trio.Event)
    error: str | None = None


@dataclass(eq=False)
class Topic:
    """One topic of a feed daemon."""

    name: str
    shms: dict[float, ShmArray]
    writer: OHLCWriter
    info: dict[str, Any] | None = None
    #: the backend config it streams with
    config: dict[str, Any] = field(default_factory=dict)
    state: FeedState = 'starting'
    restarts: int = 0
    last_error: str | None = None
    started_at: float = field(default_factory=time.time)
    #: history bars prepended per period
    history: dict[float, int] = field(default_factory=dict)
    #: the daemon's step count (all periods of the topic) when it registered
    steps_base: int = 0
    #: the quote stream's own state ('up', 'restarting', ...)
    stream_state: FeedState = 'starting'
    #: why samplerd does not step the buffers right now (None: it does)
    sampler_error: str | None = None
    #: times the buffers were registered again with a restarted samplerd
    sampler_restarts: int = 0
    #: rows appended for boundaries samplerd missed while it was away
    filled_bars: int = 0
    #: the topic's task (cancelled when samplerd is not coming back)
    scope: trio.CancelScope | None = None
    #: set once its task is over (slots given back): see stop_topic
    stopped: trio.Event = field(default_factory=trio.Event)

    def status(self) -> FeedStatus:
        return FeedStatus(
            topic=self.name,
            state=self.state,
            restarts=self.restarts,
            error=None if self.state == 'up' else self.last_error,
            time=time.time(),
        )


class FeedDaemon:
    """The feed daemon's state: its backend, topics, feed bus and the bus
    its status reports go out on.  Get it with :func:`get_feed_daemon`
    inside ``feedd.<backend>``."""

    def __init__(
        self,
        backend: Backend,
        tn: trio.Nursery,
        *,
        buffers: dict[float, Any] | None = None,
        policy: RestartPolicy = DEFAULT_STREAM_POLICY,
        bus: FeedsBus | None = None,
        group_members: int = DEFAULT_GROUP_MEMBERS,
        pool: BufferPool | None = None,
        store: Any = None,
        linger: float | None = None,
        stale_after: float | None = None,
    ) -> None:
        self.backend = backend
        self._init_lifecycle(linger, stale_after)
        #: the bar store's writer (None: no store), see _store.py
        self.store_writer = _store_writer(store, backend.name)
        self.buffers = check_feedd_buffers(buffers)
        #: every topic's buffers, one group per spec (see _pool.py)
        self.pool = pool or BufferPool(check_group_members(group_members))
        self.policy = policy
        self.bus = bus or get_feed_bus()
        self.status_bus = FeedsBus()
        self.topics: dict[str, Topic] = {}
        self._tn = tn
        self._locks: dict[str, trio.Lock] = {}
        # lost samplerd pid -> (set when we know, why it is not back or None)
        self._sampler_waits: dict[int | None, tuple[trio.Event, list[str | None]]] = {}
        #: history calls whose bars broke the contract (named in the log)
        self.bad_history = 0
        # the daemon's one registration with samplerd (see _run_link): its
        # step stream while registered, the topics whose buffers it steps,
        # and the adds/removes queued for it
        self._steps: SampleStream | None = None
        self._link_up = trio.Event()
        self._link_lock = trio.Lock()
        self._link_running = False
        self._sampled: dict[Topic, None] = {}
        self._reqs: list[_Req] = []
        self._reqs_wake = trio.Event()
        #: per period: topics whose writer has work at the next step
        self._work: defaultdict[float, set[Topic]] = defaultdict(set)
        #: steps received per period; registrations opened with samplerd
        self.steps: Counter[float] = Counter()
        self.sampler_registrations = 0
        #: set when the whole daemon stops: topics then skip giving their
        #: slots back one by one (samplerd drops the registration anyway)
        self.closing = False
        #: topics ending now whose last closed bars go to the store in one
        #: batch (see _flush_ended)
        self._ending: dict[str, Topic] = {}
        self._ending_done: trio.Event | None = None
        self._config_keys: dict[tuple[Any, tuple[str, ...]], tuple[str, ...]] = {}
        #: topics whose quotes go to their tick log now (see _start_recording)
        self._recording: dict[str, Topic] = {}
        self._watch_bus_subscriptions()

    # --- topics -----------------------------------------------------------

    async def ensure_topic(
        self, name: str, config: dict[str, Any] | None = None
    ) -> Topic:
        """The running topic ``name``, started first (with ``config``) if
        needed; concurrent calls start it once.  Raises ``ValueError``
        naming the problem when the backend does not know the symbol or
        refuses the config (nothing is started then), or when the topic
        already runs with another config."""
        config = dict(config or {})
        record = self._record_option(config)  # the tick log's, not the backend's
        lock = self._locks.setdefault(name, trio.Lock())
        async with lock:
            topic = self.topics.get(name)
            if topic is None:
                topic = await self._start_topic(name, config)
            elif config and config != topic.config:
                raise ValueError(
                    f'topic {name!r} of backend {self.backend.name!r} already runs with '
                    f'config {topic.config!r}, not {config!r}: leave config out to share it'
                )
            if record:
                self._start_recording(topic)
            return topic

    # --- the tick log (see _ticklog.py) ---------------------------------------

    def _record_option(self, config: dict[str, Any]) -> bool:
        """Take ``record`` out of a topic's ``config`` (the backend never
        sees it): whether the topic's quotes go to its tick log, also for
        every topic of a daemon whose root runs with ``--record``
        (:data:`~tractor_sampler._ticklog.RECORD_ENV`).  The data directory
        is checked here, so a bad one refuses the topic before it starts."""
        from ._datadir import data_dir
        from ._ticklog import RECORD_ENV

        record = config.pop('record', False)
        if not isinstance(record, bool):
            raise ValueError(f'record={record!r} must be True or False')
        record = record or os.environ.get(RECORD_ENV, '') not in ('', '0')
        if record:
            try:
                data_dir()
            except ValueError as err:  # a plain ValueError: the client's refusal
                raise ValueError(f'record=True: {err}') from None
        return record

    def _start_recording(self, topic: Topic) -> None:
        """Start ``topic``'s recorder (once): a subscriber of the feed bus
        in this daemon (:func:`~tractor_sampler._ticklog.run_recorder`),
        ending with the topic."""
        recording = self._recording
        if recording.get(topic.name) is topic:
            return
        recording[topic.name] = topic
        self._tn.start_soon(self._record, topic, recording)

    async def _record(self, topic: Topic, recording: dict[str, Topic]) -> None:
        from ._ticklog import TickLog, run_recorder

        try:
            try:
                tl = TickLog.open(
                    topic.name,
                    backend=self.backend.name,
                    volume=volume_mode(topic.info),
                )
            except (ValueError, OSError) as err:
                log.error(f'{topic.name}: not recorded: {err}')
                return
            await run_recorder(
                self.bus,
                topic.name,
                tl,
                alive=lambda: self.topics.get(topic.name) is topic,
            )
        finally:
            if recording.get(topic.name) is topic:
                del recording[topic.name]

    async def _start_topic(self, name: str, config: dict[str, Any]) -> Topic:
        """``self._tn.start(self._serve_topic, ...)`` without its temporary
        nursery per start (a tenth of the time to open thousands of topics):
        the topic's task is spawned in the daemon's nursery and tells us
        when it serves, or why it does not."""
        ready = _Started()
        self._tn.start_soon(self._serve_topic_task, name, config, ready)
        await ready.done.wait()
        if ready.error is not None:
            raise ready.error
        assert ready.topic is not None
        return ready.topic

    async def _serve_topic_task(
        self, name: str, config: dict[str, Any], ready: _Started
    ) -> None:
        try:
            await self._serve_topic(name, config, task_status=ready)
        except Exception as err:
            if ready.done.is_set():
                raise
            ready.error = err  # refused before it served: the caller's error
        finally:
            if not ready.done.is_set():  # cancelled before it served
                if ready.error is None:
                    ready.error = ValueError(
                        f'topic {name!r}: the feed daemon stopped while it started'
                    )
                ready.done.set()

    def _config_for(self, fn: Any, config: dict[str, Any]) -> dict[str, Any]:
        """:func:`config_for`, its signature inspection done once per hook
        and set of config keys (not once per topic)."""
        key = (fn, tuple(config))
        keep = self._config_keys.get(key)
        if keep is None:
            keep = self._config_keys[key] = tuple(config_for(fn, config))
        return {k: config[k] for k in keep}

    async def _symbol_info(
        self, name: str, config: dict[str, Any]
    ) -> dict[str, Any] | None:
        fn = self.backend.symbol_info
        if fn is None:
            return None
        try:
            info = await fn(name, **self._config_for(fn, config))
        except Exception as err:
            raise ValueError(
                f'backend {self.backend.name!r} refused symbol {name!r}: {describe_error(err)}'
            ) from err
        # the conformance kit's own check: the topic is refused, naming the hook
        try:
            check_symbol_info(
                info, f'backend {self.backend.name!r}: symbol_info({name!r})'
            )
        except ContractBreach as breach:
            raise ValueError(str(breach)) from None  # a refusal: one line
        return dict(info)

    async def _history(
        self,
        name: str,
        now: float,
        config: dict[str, Any],
        counts: dict[float, int] | None = None,
    ) -> dict[float, np.ndarray]:
        fn = self.backend.history
        out: dict[float, np.ndarray] = {}
        if fn is None:
            return out
        for p, (_, count) in self.buffers.items():
            if counts is not None and p in counts:
                count = counts[p]  # the gap after the stored bars
            if not count:
                continue
            call = f'backend {self.backend.name!r}: history({name!r}, {p:g}, ...)'
            try:
                bars = await fn(name, p, now, count, **self._config_for(fn, config))
            except Exception as err:
                log.error(f'{call} failed, no backfill: {describe_error(err)}')
                continue
            try:
                # the conformance kit's own checks: a backend breaking the
                # contract is named here (the topic refused, its client told),
                # not deep inside numpy later
                check_bars(bars, call, p, now, exact_end=False)
            except ContractBreach as breach:
                self.bad_history += 1
                raise ValueError(str(breach)) from None  # a refusal: one line
            if len(bars):
                out[p] = bars
        return out

    async def _serve_topic(
        self,
        name: str,
        config: dict[str, Any],
        *,
        task_status: trio.TaskStatus[Topic] | _Started = trio.TASK_STATUS_IGNORED,
    ) -> None:
        info = await self._symbol_info(name, config)
        try:
            # config errors surface on the call (the hook's contract): the
            # client that asked for the topic gets them, nothing is started
            source = self.backend.stream_quotes([name], **config)
        except Exception as err:
            raise ValueError(
                f'backend {self.backend.name!r} refused to stream {name!r} with '
                f'config {config!r}: {describe_error(err)}'
            ) from err
        shms: dict[float, ShmArray] = {}
        handed_over = False  # the source belongs to _run_stream from then on
        topic: Topic | None = None
        try:
            # refused here rather than a SIGBUS when a sparse page is touched
            self.pool.check_space(
                sum(self.pool.touch_bytes(r, h) for r, h in self.buffers.values()),
                f'topic {name!r} of backend {self.backend.name!r}',
            )
            for p, spec in self.buffers.items():
                shms[p] = self.pool.take(
                    GroupKey(
                        p,
                        spec[0],
                        getattr(spec, 'origin', 0.0),
                        getattr(spec, 'stamp', 'open'),
                    )
                )
            asked = time.time()
            history = await self._stored_then_history(name, asked, config)
            now = time.time()  # fetching history may have taken a while
            for p, shm in shms.items():
                # the open bar, seeded from the last close (NaN without
                # history: the first trade opens it)
                grid = Grid.of(p, shm.token)
                open_t = grid.row_time(grid.bar_of(now))
                bars = _on_grid(history.get(p), grid, name)
                if bars is not None:
                    history[p] = bars = _fill_to(bars, open_t, p)
                else:
                    history.pop(p, None)
                row = np.zeros(1, dtype=shm.dtype)
                row['index'] = len(bars) if bars is not None else 0
                row['time'] = open_t
                seed = float(bars['close'][-1]) if bars is not None else math.nan
                for f in ('open', 'high', 'low', 'close'):
                    row[f] = seed
                shm.push(row)
            topic = Topic(
                name=name,
                shms=shms,
                writer=OHLCWriter(
                    shms, volume=volume_mode(info), composite=composite_of(self.buffers)
                ),
                info=info,
                config=config,
            )
            topic.writer.on_trades = self._work_marker(topic)
            self.bus.add_topic(name)
            try:
                with trio.CancelScope() as topic.scope:
                    # registered (and backfilled) before any client sees it
                    await self._register(topic)
                    await self._backfill(topic, history)
                    self._mark_live(topic, time.time())
                    self.topics[name] = topic
                    task_status.started(topic)
                    handed_over = True
                    await self._run_stream_watched(topic, source)
            finally:
                if self.topics.get(name) is topic:
                    # its last closed bars, before its slots can be given back
                    await self._flush_ended(topic)
                    del self.topics[name]
        finally:
            if not handed_over:
                await _aclose(source, name)
            # (when the whole daemon stops, the pool unlinks every group at once)
            if topic is not None and not self.closing:
                for work in self._work.values():
                    work.discard(topic)
                await self._unregister(topic)
            if not self.closing:
                for shm in shms.values():
                    self.pool.give_back(shm)
            if topic is not None:
                topic.stopped.set()

    async def _flush_ended(self, topic: Topic) -> None:
        """Store ``topic``'s closed bars as it ends, whatever ends it (a
        stop, a failure, the whole daemon cancelled: then every topic ends
        at once, in an order trio chooses, so the writer's own last flush
        cannot be relied on to still see them).  Topics ending together go
        in one batch: the first waits one scheduling round for the others,
        then flushes them all; shielded, bounded."""
        w = self.store_writer
        if w is None:
            return
        self._ending[topic.name] = topic
        with trio.CancelScope(shield=True), trio.move_on_after(30):
            if self._ending_done is not None:
                await self._ending_done.wait()
                return
            done = self._ending_done = trio.Event()
            try:
                await trio.lowlevel.checkpoint()  # the others ending now join
                batch, self._ending = self._ending, {}
                self._ending_done = None
                await w.flush(batch)
            finally:
                self._ending_done = (
                    None if self._ending_done is done else self._ending_done
                )
                done.set()

    async def _stored_then_history(
        self, name: str, now: float, config: dict[str, Any]
    ) -> dict[float, np.ndarray]:
        """A new topic's past bars per period: from the bar store first,
        then only the gap since the last stored bar from the backend's
        history (see _store.py); without a store, the backend's history."""
        w = self.store_writer
        if w is None:
            return await self._history(name, now, config)
        stored: dict[float, np.ndarray] = {}
        counts: dict[float, int] = {}
        for p, spec in self.buffers.items():
            if not spec[1] or spec.origin or spec.stamp != 'open':
                continue
            bars, gap = await trio.to_thread.run_sync(w.seed, name, p, now, spec[1])
            if bars is not None:
                stored[p], counts[p] = bars, gap
        fetched = await self._history(name, now, config, counts)
        for p, bars in stored.items():
            fetched[p] = join_stored(bars, fetched.get(p), p)
        return fetched

    def _work_marker(self, topic: Topic) -> Any:
        """The writer's ``on_trades``: the topic has work at the next step
        of each of its periods (see :meth:`_fold_steps`)."""
        # the sets stay the same objects (_fold_steps empties them in place)
        sets = [self._work[p] for p in topic.shms]

        def mark() -> None:
            for work in sets:
                work.add(topic)

        return mark

    def _mark_live(self, topic: Topic, t: float) -> None:
        """The quote stream starts at ``t`` (right after this): mark in each
        buffer's token the first live bar, the one holding ``t``, and
        whether it started before ``t`` (partial); buffers with
        ``skip_first_partial`` get no trade of a partial one.  Before any
        client has the tokens (samplerd's copy needs no mark)."""
        skip = []
        for p, shm in topic.shms.items():
            grid = Grid.of(p, shm.token)
            k = grid.bar_of(t)
            partial = grid.start(k) != t
            # the seeded open bar (after the history prepended); no gap in a
            # new buffer: one index per bar from it
            seeded = shm.array[topic.history.get(p, 0)]
            live = int(seeded['index']) + k - grid.row_bar(float(seeded['time']))
            shm.mark_live(live, partial)
            if partial and self.buffers[p].skip_first_partial:
                skip.append(p)
        if skip:
            topic.writer.skip_partial(t, skip)

    # --- the daemon's one registration with samplerd ---------------------

    async def _register(self, topic: Topic) -> None:
        """Have samplerd step ``topic``'s buffers (through the daemon's one
        sample stream, in a batch with the other topics starting now);
        samplerd aligns a buffer registered right after a boundary.  Raises
        ``ValueError`` when samplerd refuses them, or it is not running and
        not coming back."""
        if not topic.shms:  # a quotes-only daemon: nothing to step
            return
        if not self._link_running:
            async with self._link_lock:
                if not self._link_running:
                    await self._tn.start(self._run_link)
        await self._request('add', topic)
        topic.steps_base = sum(self.steps[p] for p in topic.shms)

    async def _unregister(self, topic: Topic) -> None:
        """Have samplerd stop stepping ``topic``'s buffers (so their slots
        can be reused); nothing to do when the registration is gone."""
        if topic not in self._sampled and not any(r.topic is topic for r in self._reqs):
            return
        if not self._link_running:
            self._sampled.pop(topic, None)
            return
        with trio.CancelScope(shield=True), trio.move_on_after(10):
            await self._request('remove', topic, raise_error=False)
        self._sampled.pop(topic, None)

    async def _request(self, kind: str, topic: Topic, raise_error: bool = True) -> None:
        req = _Req(kind, topic)
        self._reqs.append(req)
        self._reqs_wake.set()
        await req.done.wait()
        if req.error is not None and raise_error:
            raise ValueError(
                f'{topic.name}: samplerd did not take its buffers: {req.error}'
            )

    async def _send_reqs(self, steps: SampleStream) -> None:
        """Send the queued adds and removes, in order, several topics per
        request, and answer each once samplerd acked it."""
        while True:
            if not self._reqs:
                self._reqs_wake = trio.Event()
                await self._reqs_wake.wait()
                continue
            kind = self._reqs[0].kind
            batch: list[_Req] = []
            n = 0
            for r in self._reqs:
                if r.kind != kind or n >= MAX_BATCH:
                    break
                batch.append(r)
                n += len(r.topic.shms)
            tokens: dict[float, list[ShmArray]] = defaultdict(list)
            for r in batch:
                for p, shm in r.topic.shms.items():
                    tokens[p].append(shm)
            error = None
            try:
                if kind == 'add':
                    _fill_to_now(tokens)
                    await steps.add_buffers(tokens)
                else:
                    await steps.remove_buffers(tokens)
            except SamplerRefused as err:
                error = str(err)
            del self._reqs[: len(batch)]
            for r in batch:
                r.error = error
                if error is None:
                    if kind == 'add':
                        self._sampled[r.topic] = None
                    else:
                        self._sampled.pop(r.topic, None)
                r.done.set()

    def _end_reqs(self, error: str | None = None) -> None:
        """The registration is gone: removes are done (samplerd dropped
        everything with it); with ``error`` the adds fail too."""
        keep = []
        for r in self._reqs:
            if r.kind == 'remove':
                self._sampled.pop(r.topic, None)
                r.done.set()
            elif error is not None:
                r.error = error
                r.done.set()
            else:
                keep.append(r)
        self._reqs[:] = keep

    async def _run_link(
        self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """The daemon's one registration with samplerd: one sample stream
        for all its periods and topics (buffers are added and removed by
        requests on it), its steps folded into the writers with work.  When
        samplerd goes away: every topic is reported ``restarting``, and once
        samplerd runs again the rows it missed are filled (vectorised, per
        group) and all buffers registered again at once.  If it is not
        coming back, every topic is reported ``failed`` and torn down."""
        self._link_running = True
        first = True
        try:
            while True:
                pid: int | None = None
                try:
                    async with open_sample_stream() as steps:
                        self.sampler_registrations += 1
                        pid = steps.pid
                        async with trio.open_nursery() as n:
                            if not first:
                                await self._register_again(steps)
                            self._steps = steps
                            self._link_up.set()
                            n.start_soon(self._send_reqs, steps)
                            if first:
                                first = False
                                task_status.started()
                            await self._fold_steps(steps)
                except BaseException as err:
                    lost = None if first else samplerd_lost(err)
                    if lost is None:
                        raise
                    cause = describe_error(lost)
                else:
                    # a5 may end the block quietly when samplerd cancelled it
                    cause = 'its sample stream ended'
                self._steps = None
                self._link_up = trio.Event()
                self._end_reqs()
                error = f'samplerd (pid {pid}) went away ({cause}): waiting for it to restart'
                log.warning(
                    f'{self.backend.name}: {error} ({len(self._sampled)} topics)'
                )
                for topic in self._sampled:
                    topic.sampler_error = error
                    self._publish(topic)
                why_not = await self._samplerd_back(pid)
                if why_not is not None:
                    log.error(
                        f'{self.backend.name}: samplerd is not coming back: {why_not}'
                    )
                    gone = (
                        f'samplerd (pid {pid}) is gone ({why_not}): nothing steps '
                        'the buffers any more'
                    )
                    self._end_reqs(gone)
                    for topic in list(self._sampled):
                        self._report(topic, 'failed', gone)
                        if topic.scope is not None:
                            topic.scope.cancel()
                    self._sampled.clear()
                    return
                self._fill_missed(time.time())
        finally:
            self._link_running = False
            self._steps = None
            self._link_up = trio.Event()
            self._end_reqs('the feed daemon stopped')

    async def _register_again(self, steps: SampleStream) -> None:
        """After a samplerd restart: every topic's buffers, in batches."""
        topics = list(self._sampled)
        for i in range(0, len(topics), max(1, MAX_BATCH // max(1, len(self.buffers)))):
            chunk = topics[i : i + max(1, MAX_BATCH // max(1, len(self.buffers)))]
            tokens: dict[float, list[ShmArray]] = defaultdict(list)
            for topic in chunk:
                for p, shm in topic.shms.items():
                    tokens[p].append(shm)
            _fill_to_now(tokens)
            await steps.add_buffers(tokens)
        for topic in topics:
            topic.sampler_restarts += 1
            topic.sampler_error = None
            self._publish(topic)
        log.info(
            f'{self.backend.name}: {len(topics)} topics registered again with '
            f'samplerd (pid {steps.pid})'
        )

    def _fill_missed(self, now: float) -> None:
        """The rows of the boundaries samplerd missed, for every topic (one
        vectorised plan per group and last row time), then the trades held
        for those bars go in."""
        topics = list(self._sampled)
        for p in self.buffers:
            have = [t for t in topics if p in t.shms]
            counts = fill_missed_bars_many([t.shms[p] for t in have], p, now)
            for t, n in zip(have, counts, strict=True):
                t.filled_bars += n
        for t in topics:
            t.writer.on_step()

    async def _backfill(self, topic: Topic, history: dict[float, np.ndarray]) -> None:
        for p, bars in history.items():
            try:
                start, end = prepend_history(topic.shms[p], bars, p)
                topic.history[p] = len(bars)
            except (ValueError, TypeError) as err:
                log.error(
                    f'{topic.name}: history for {p} s bars does not fit, no backfill: {err}'
                )
                continue
            steps = self._steps
            if steps is None:
                continue  # samplerd is away: nobody to tell
            try:
                await steps.backfilled(topic.name, p, start, end)
            except SamplerError as err:
                log.warning(f'{topic.name}: backfill of {p:g} s not broadcast: {err}')

    async def _samplerd_back(self, lost_pid: int | None) -> str | None:
        """Wait until the root's manager runs samplerd again (in a process
        other than ``lost_pid``); ``None`` then, else why it is not coming
        back.  One question to the root per lost samplerd, however many
        topics wait."""
        wait = self._sampler_waits.get(lost_pid)
        if wait is None:
            wait = self._sampler_waits[lost_pid] = (trio.Event(), [None])
            self._tn.start_soon(self._ask_samplerd_back, lost_pid, wait)
        await wait[0].wait()
        return wait[1][0]

    async def _ask_samplerd_back(
        self,
        lost_pid: int | None,
        wait: tuple[trio.Event, list[str | None]],
    ) -> None:
        done, result = wait
        try:
            async with open_root_mngr() as mngr:
                await mngr.wait_running(
                    SAMPLERD, not_pid=lost_pid, timeout=SAMPLERD_BACK_TIMEOUT_S
                )
        except Exception as err:  # not coming back, or no root to ask
            result[0] = describe_error(compat.unwrap_error(err))
        finally:
            if self._sampler_waits.get(lost_pid) is wait:
                del self._sampler_waits[lost_pid]
            done.set()

    async def _fold_steps(self, steps: SampleStream) -> None:
        """samplerd's steps, one per period and boundary for all topics:
        only the writers with work (trades since their last step, trades
        held, corrections to broadcast) settle; the others' rows are right
        as samplerd made them (see :meth:`OHLCWriter.needs_step`)."""
        async for msg in steps:
            if not isinstance(msg, Step):
                continue
            p = msg.period_s
            self.steps[p] += 1
            work = self._work.get(p)
            if not work:
                continue
            todo = list(work)
            work.clear()  # in place: writers' markers hold this set
            for topic in todo:
                w = topic.writer
                w.on_step(p)
                if w.has_corrections:
                    # closed bars late trades changed: views redraw them
                    await broadcast_corrections(w, steps, topic.name)
                if w.needs_step(p) and self.topics.get(topic.name) is topic:
                    work.add(topic)
        raise SamplerGone('the step stream from samplerd ended')

    def _report(self, topic: Topic, state: FeedState, error: str | None = None) -> None:
        """The quote stream's state changed: publish the topic's."""
        topic.stream_state = state
        if error is not None:
            topic.last_error = error
        self._publish(topic, state)

    def _publish(self, topic: Topic, state: FeedState | None = None) -> None:
        """Tell the topic's status subscribers its state: the quote
        stream's, except that an ``up`` stream whose buffers samplerd does
        not step right now is ``restarting`` (the error says why)."""
        state = state or topic.stream_state
        if state in ('up', 'starting') and topic.sampler_error is not None:
            state = 'restarting'
            topic.last_error = topic.sampler_error
        topic.state = state
        self.status_bus.broadcast(topic.name, topic.status())
        if state in ('failed', 'ended') and self.topics.get(topic.name) is topic:
            # gone for whoever asks from now on (its teardown follows), and
            # its subscribers are done with it: a later instance of the topic
            # (new buffers) is for the clients that open it then
            del self.topics[topic.name]
            self.status_bus.remove_subs(
                topic.name, self.status_bus.get_subs(topic.name)
            )
            self.bus.remove_subs(topic.name, self.bus.get_subs(topic.name))

    async def _run_stream(self, topic: Topic, source: Any) -> None:
        """Run the backend's quote stream for ``topic`` (``source`` is the
        first one), restarting it by the daemon's policy
        (:func:`tractor_services.supervise`, the service manager's restart
        loop); returns when the policy says stop."""
        policy = self.policy
        fn = self.backend.stream_quotes

        last_error: Exception | None = None

        async def once() -> None:
            nonlocal source, last_error
            last_error = None
            try:
                if source is None:
                    source = fn([topic.name], **topic.config)
                self._report(topic, 'up')
                writers = {topic.name: topic.writer}
                # its first batches checked by the conformance kit's own check
                # (a ContractBreach fails the topic, named, without restarts);
                # the rest straight from the source
                call = f'backend {self.backend.name!r}: stream_quotes({[topic.name]!r})'
                await sample_and_broadcast(
                    check_first_batches(source, [topic.name], call), writers, self.bus
                )
                await sample_and_broadcast(source, writers, self.bus)
            except Exception as err:
                last_error = err
                log.error(
                    f'{topic.name}: the {self.backend.name!r} quote stream failed: {describe_error(err)}'
                )
                raise
            finally:
                await _aclose(source, topic.name)
                source = None

        def on_state(sup: Supervision) -> None:
            if isinstance(sup.error, GaveUp):
                last = sup.error.__cause__
                self._report(
                    topic,
                    'failed',
                    f'gave up after {sup.restarts} restarts (at most '
                    f'{policy.max_restarts} in {policy.within_s:g} s); last error: '
                    f'{describe_error(last) if last is not None else "the quote stream ended"}',
                )
                return
            error = (
                str(sup.error)  # names the backend and the hook already
                if isinstance(sup.error, ContractBreach)
                else describe_error(sup.error)
                if sup.error is not None
                else None
            )
            if sup.state == 'restarting':
                topic.restarts = sup.restarts
                self._report(topic, 'restarting', error or 'the quote stream ended')
            else:
                self._report(topic, 'failed' if error is not None else 'ended', error)

        # a backend breaking the contract does it again: no restart
        await supervise(
            once,
            policy,
            on_state=on_state,
            stop=lambda: isinstance(last_error, ContractBreach),
        )

    # --- clients, lingering, stop and stale (see _lifecycle.py) -------------

    #: whether this daemon's topics stop (their linger, stop_topic): a
    #: relay mirror's follow the upstream's instead (see _mirror.py)
    stops_topics: bool = True

    def _init_lifecycle(self, linger: float | None, stale_after: float | None) -> None:
        from ._lifecycle import (
            DEFAULT_LINGER_S,
            DEFAULT_STALE_AFTER_S,
            LINGER_ENV,
            STALE_AFTER_ENV,
            setting,
        )

        #: seconds a topic without clients keeps running (0: none)
        self.linger = setting(linger, LINGER_ENV, DEFAULT_LINGER_S, 'linger')
        #: seconds without a quote before a topic is ``stale`` (0: never)
        self.stale_after = setting(
            stale_after, STALE_AFTER_ENV, DEFAULT_STALE_AFTER_S, 'stale_after'
        )
        #: clients per topic (attach_feed contexts, stream_bars streams;
        #: feed bus subscriptions count too, see _users)
        self.clients: Counter[str] = Counter()
        #: topics lingering without clients: the scope of their wait
        self._lingers: dict[str, trio.CancelScope] = {}
        #: topics stopped by their linger or on request (ls, tests)
        self.stopped_topics = 0
        #: topics watched for staleness: [quote seq seen, since, state seen]
        self._stale_watched: dict[Topic, list[Any]] = {}
        self._stale_watching = False

    @acm
    async def holding(self, names: Iterable[str]) -> AsyncIterator[None]:
        """Count a client of each topic of ``names`` while inside: a
        lingering topic keeps running; the last client leaving starts its
        linger (:meth:`_linger`)."""
        names = list(dict.fromkeys(names))
        for name in names:
            self.clients[name] += 1
            cs = self._lingers.pop(name, None)
            if cs is not None:
                cs.cancel()
        try:
            yield
        finally:
            for name in names:
                self.clients[name] -= 1
                if self.clients[name] <= 0:
                    del self.clients[name]
                    if not self._users(name):
                        self._start_linger(name)

    def _users(self, name: str) -> int:
        """``name``'s clients: attach_feed contexts and stream_bars
        streams, and subscriptions on the feed bus (a ``feedbus.open_feed``
        client of this daemon, with or without a feed of its own; the tick
        log's recorder, the daemon's own subscriber, is not one)."""
        return self.clients.get(name, 0) + self.bus.subscriptions(name)

    def _start_linger(self, name: str) -> None:
        if not self.closing and name not in self._lingers:
            # the scope now, so a client arriving before the task runs
            # cancels it
            cs = self._lingers[name] = trio.CancelScope()
            self._tn.start_soon(self._linger, name, cs)

    def _watch_bus_subscriptions(self) -> None:
        """Count the feed bus's subscriptions of each topic among its
        clients (:meth:`_users`) while the daemon runs: a subscription
        arriving calls a topic's linger off, the last client of any kind
        leaving a running topic starts it."""
        unwatch = self.bus.watch_subscriptions(self._bus_subscriptions)

        async def watching() -> None:
            try:
                await trio.sleep_forever()
            finally:
                unwatch()

        self._tn.start_soon(watching)

    def _bus_subscriptions(self, name: str, n: int) -> None:
        if n:
            cs = self._lingers.pop(name, None)
            if cs is not None:
                cs.cancel()
        elif name in self.topics and not self._users(name):
            self._start_linger(name)

    async def _linger(self, name: str, cs: trio.CancelScope) -> None:
        with cs:
            await trio.sleep(self.linger)
        if self._lingers.get(name) is cs:
            del self._lingers[name]
        if cs.cancelled_caught or self._users(name) or not self.stops_topics:
            return
        await self.stop_topic(
            name, f'no client for {self.linger:g} s (linger)', if_unused=True
        )

    async def stop_topic(
        self, name: str, reason: str, *, if_unused: bool = False
    ) -> FeedStatus | None:
        """Stop topic ``name`` now: its clients get ``'ended'`` with
        ``reason`` (and new ones start it afresh), its closed bars are
        flushed to the store (when on), its quote stream stops and its
        slots are given back (returns once they are).  ``KeyError`` when it
        does not run; with ``if_unused`` (the linger) nothing happens then,
        nor when a client came meanwhile."""
        if not self.stops_topics:
            raise ValueError(
                f'feedd.{self.backend.name} is a relay mirror: stop {name!r} on its upstream'
            )
        lock = self._locks.setdefault(name, trio.Lock())
        async with lock:  # no start of the same topic meanwhile
            topic = self.topics.get(name)
            if topic is None:
                if if_unused:
                    return None
                raise KeyError(
                    f'topic {name!r} does not run in feedd.{self.backend.name}'
                )
            if if_unused and self._users(name):
                return None
            self._report(topic, 'ended', reason)  # no longer in self.topics
            status = topic.status()
            w = self.store_writer
            if w is not None:
                with trio.CancelScope(shield=True), trio.move_on_after(30):
                    await w.flush({name: topic})
            if topic.scope is not None:
                topic.scope.cancel()
            with trio.move_on_after(30):
                await topic.stopped.wait()
            self.stopped_topics += 1
            log.info(f'{name}: stopped ({reason})')
            return status

    async def _run_stream_watched(self, topic: Topic, source: Any) -> None:
        """:meth:`_run_stream`, the topic watched for staleness meanwhile
        (one watch task for all topics: see :meth:`_watch_stale`)."""
        if self.stale_after <= 0:
            await self._run_stream(topic, source)
            return
        watched = self._stale_watched
        watched[topic] = [None, trio.current_time(), topic.stream_state]
        if not self._stale_watching:
            self._stale_watching = True
            self._tn.start_soon(self._watch_stale, watched)
        try:
            await self._run_stream(topic, source)
        finally:
            watched.pop(topic, None)

    async def _watch_stale(self, watched: dict[Topic, list[Any]]) -> None:
        """Report a topic ``stale`` when its quote stream is ``up`` but its
        last quote is ``stale_after`` seconds old, and ``up`` at the next
        one: every topic's latest quote on the feed bus, polled by this one
        task (a task per topic would wake thousands of times a second)."""
        after = self.stale_after
        poll = min(after / 4, 1.0)
        while True:
            await trio.sleep(poll)
            now = trio.current_time()
            for topic, w in list(watched.items()):
                seq, since, was = w
                latest = self.bus.latest(topic.name)
                s = latest.seq if latest is not None else None
                state = topic.stream_state
                if state == 'up' and was not in ('up', 'stale'):
                    since = now  # (re)started: its silence counts from now
                if s != seq:
                    seq, since = s, now
                    if state == 'stale':
                        self._report(topic, 'up')
                        state = 'up'
                elif state == 'up' and now - since >= after:
                    self._report(
                        topic,
                        'stale',
                        f'no quote for {now - since:.1f} s (stale_after={after:g} s)',
                    )
                    state = 'stale'
                w[:] = [seq, since, state]

    # --- introspection ------------------------------------------------------

    def info(self) -> FeedInfo:
        """The daemon's backend and topics: per topic its state, counters,
        buffers and subscribers (see :class:`~tractor_sampler.FeedInfo`)."""
        b = self.backend
        topics = {}
        for name, t in sorted(self.topics.items()):
            latest = self.bus.latest(name)
            last = latest.fields.get('last') if latest is not None else None
            subs = [
                SubscriberInfo(
                    rate=sub.rate,
                    rc_ui=sub.rc_ui,
                    peer=_sub_peer(sub),
                    **msgspec.structs.asdict(sub.stats),
                )
                for sub in self.bus.get_subs(name)
            ]
            topics[name] = TopicInfo(
                state=t.state,
                config=t.config,
                restarts=t.restarts,
                last_error=t.last_error,
                started_at=t.started_at,
                quotes=latest.seq if latest is not None else 0,
                last=last
                if isinstance(last, (int, float)) and not isinstance(last, bool)
                else None,
                trades=t.writer.trades,
                late_trades=t.writer.late_trades,
                unplaced_trades=t.writer.unplaced_trades,
                # late/held/corrected/unplaced, summed and per period
                bars=msgspec.convert(t.writer.stats(), BarCounters, strict=False),
                steps=sum(self.steps[p] for p in t.shms) - t.steps_base,
                sampler_restarts=t.sampler_restarts,
                filled_bars=t.filled_bars,
                buffers={
                    p: BufferInfo(
                        rows=len(shm),
                        history=t.history.get(p, 0),
                        last_time=float(shm.last_row['time']),
                        token=shm.token,
                    )
                    for p, shm in t.shms.items()
                },
                subscribers=sorted(subs, key=lambda s: -s.delivered),
                ticklog=_ticklog_info(self.bus.get_subs(name)),
            )
        return FeedInfo(
            backend=b.name,
            version=b.version,
            dist=b.dist,
            pid=os.getpid(),
            time=time.time(),
            topics=topics,
            bad_history=self.bad_history,
            pool=self.pool.stats(),
            sampler_registrations=self.sampler_registrations,
            steps=dict(self.steps),
            store=_store_info(self.store_writer),
        )


@dataclass
class _Holder:
    daemon: FeedDaemon | None = None
    #: set once the daemon serves (the actor registers by name before that)
    ready: trio.Event = field(default_factory=trio.Event)


_holder = _Holder()


def get_feed_daemon() -> FeedDaemon:
    """This actor's :class:`FeedDaemon`; a clear error anywhere else."""
    if _holder.daemon is None:
        raise NoFeedDaemon(
            'no feed daemon runs in this actor: the feedd.<backend> service '
            'hosts one (tractor_sampler.open_market_feed() starts it)'
        )
    return _holder.daemon


async def wait_feed_daemon(timeout: float = READY_TIMEOUT_S) -> FeedDaemon:
    """This actor's :class:`FeedDaemon`, once it serves: the actor is
    registered (so clients find it) before the daemon has loaded its
    plugins and made sure samplerd runs."""
    with trio.move_on_after(timeout):
        await _holder.ready.wait()
    return get_feed_daemon()


def _with_relay(backend: str, plugins: Iterable[str]) -> list[str]:
    """``plugins``, plus the ``relay`` backend's module when that is the
    backend asked for: it ships with the package but is not listed among
    the built-ins (it is a way to reach another feed daemon, not a source
    of quotes; see backends/relay.py)."""
    out = list(plugins)
    if backend == 'relay':
        out.append('tractor_sampler.backends.relay')
    return out


def _load(backend: str, plugins: Iterable[str]) -> Backend:
    """The backend, loaded as ``samplerd ls`` loads them (a broken plugin,
    an entry point or a ``plugins`` module that fails to import included,
    is left out in one line and the others work): ``UnknownBackend`` when
    it is not there, naming the broken plugins and why."""
    note = (
        f' in the feed daemon (pid {os.getpid()}, a child of the root daemon, working '
        f'directory {os.getcwd()}; it must be importable where the root daemon runs: '
        'install it, or start the root with it on PYTHONPATH)'
    )
    registry = load_backends(
        modules=_with_relay(backend, plugins), module_note=note, strict=False
    )
    return registry[backend]


#: the root's feed-daemon settings (``samplerd run --config``: ``[feeds]
#: buffers``, ``group_members``, ``[restart.stream]``, as JSON) in its
#: environment, which every daemon its manager spawns inherits: the feed
#: daemons its clients ask for take them too where they give none
BUFFERS_ENV = 'TRACTOR_SAMPLER_BUFFERS'
GROUP_MEMBERS_ENV = 'TRACTOR_SAMPLER_GROUP_MEMBERS'
STREAM_RESTART_ENV = 'TRACTOR_SAMPLER_STREAM_RESTART'


def root_defaults(
    buffers: Any, group_members: Any, restart: Any
) -> tuple[Any, int, Any]:
    """``feedd``'s ``buffers``, ``group_members`` and ``restart``, each
    left out (``None``) taken from the root's environment (see
    :data:`BUFFERS_ENV`), else the built-in default.  A variable that is
    not JSON is a ``ValueError`` naming it."""

    def env(name: str) -> Any:
        raw = os.environ.get(name)
        if not raw:
            return None
        try:
            return msgspec.json.decode(raw)
        except msgspec.DecodeError:
            raise ValueError(f'${name}: not JSON: {raw!r}') from None

    if buffers is None:
        buffers = env(BUFFERS_ENV)
    if restart is None:
        restart = env(STREAM_RESTART_ENV)
    if group_members is None:
        group_members = env(GROUP_MEMBERS_ENV)
        if group_members is None:
            group_members = DEFAULT_GROUP_MEMBERS
    return buffers, group_members, restart


@compat.context
async def feedd(
    ctx: compat.Context,
    backend: str = DEFAULT_BACKEND,
    buffers: dict[Any, Any] | None = None,
    restart: dict[str, Any] | None = None,
    plugins: list[str] | None = None,
    group_members: int | None = None,
    data_dir: str | bool | None = None,
    linger: float | None = None,
    stale_after: float | None = None,
) -> None:
    """The feed daemon's root endpoint (supervised by the root's service
    manager as ``feedd.<backend>``): loads the backend (plus the plugin
    modules named in ``plugins``, for backends not installed as entry
    points), then serves topics until cancelled.

    ``buffers`` maps periods to ``(rows, history bars)``; ``restart`` is
    the quote streams' :class:`RestartPolicy` as a dict; ``group_members``
    the member slots of each shared-memory group of buffers (sparse: see
    docs/sampler.md, "Buffers in groups"); ``data_dir`` the bar store's
    data directory (default: ``$TRACTOR_SAMPLER_DATA_DIR``, else the
    per-user one; ``False``: no store; see docs/storage.md); ``linger`` and
    ``stale_after`` the seconds a topic without clients keeps running and
    without quotes is ``up`` (see :mod:`tractor_sampler._lifecycle`).  (The backend's config comes
    per topic, from the client that starts it.)  ``buffers``,
    ``group_members`` and ``restart`` left out are the root's (its config
    file's ``[feeds]`` and ``[restart.stream]``, see :func:`root_defaults`),
    else the built-in ones."""
    buffers, group_members, restart = root_defaults(buffers, group_members, restart)
    if not isinstance(backend, str) or not backend:
        raise ValueError(f'backend={backend!r} must be a backend name')
    if plugins is not None and (
        not isinstance(plugins, list)
        or not all(isinstance(m, str) and m for m in plugins)
    ):
        raise ValueError(f'plugins={plugins!r} must be a list of module names')
    if restart is not None and not isinstance(restart, dict):
        raise ValueError(f'restart={restart!r} must be a restart policy as a dict')
    try:
        policy = (
            msgspec.convert(restart, RestartPolicy)
            if restart
            else DEFAULT_STREAM_POLICY
        )
    except (msgspec.ValidationError, TypeError, ValueError) as err:
        raise ValueError(
            f'restart={restart!r} is not a restart policy: {err}'
        ) from None
    checked_buffers = check_feedd_buffers(buffers)
    members = check_group_members(group_members)
    lifecycle = _lifecycle_settings(linger, stale_after)
    if await _maybe_mirror(ctx, backend, members, data_dir):
        return
    store, flush_s = _feedd_store(data_dir)
    be = _load(backend, plugins or ())
    compat.expose_module(__name__)
    compat.expose_module('tractor_sampler._remote')  # stream_bars: remote clients
    # samplerd first (clients start it before us, and declare that we
    # require it, so the root's manager stops us before it; a daemon started
    # some other way makes sure of it here)
    if checked_buffers:  # a quotes-only daemon (buffers={}) needs none
        await spawn_samplerd()
    pool = BufferPool(members)
    try:
        async with trio.open_nursery() as tn:
            _holder.daemon = FeedDaemon(
                be,
                tn,
                buffers=checked_buffers,
                policy=policy,
                pool=pool,
                store=store,
                linger=lifecycle['linger'],
                stale_after=lifecycle['stale_after'],
            )
            if _holder.daemon.store_writer is not None:
                tn.start_soon(
                    _holder.daemon.store_writer.run, _holder.daemon.topics, flush_s
                )
            _holder.ready.set()
            try:
                await ctx.started(
                    {'pid': os.getpid(), 'backend': be.name, 'version': be.version}
                )
                await trio.sleep_forever()
            finally:
                daemon = _holder.daemon
                if daemon is not None:
                    # (each topic stores its last closed bars as its task
                    # ends: Daemon._flush_ended)
                    daemon.closing = True
                _holder.daemon = None
                _holder.ready = trio.Event()
                tn.cancel_scope.cancel()
    finally:
        pool.close()


def _lifecycle_settings(linger: Any, stale_after: Any) -> dict[str, float]:
    """``feedd``'s ``linger`` and ``stale_after``, checked before anything
    starts (defaults from the root's environment, see _lifecycle.py)."""
    from ._lifecycle import (
        DEFAULT_LINGER_S,
        DEFAULT_STALE_AFTER_S,
        LINGER_ENV,
        STALE_AFTER_ENV,
        setting,
    )

    return {
        'linger': setting(linger, LINGER_ENV, DEFAULT_LINGER_S, 'linger'),
        'stale_after': setting(
            stale_after, STALE_AFTER_ENV, DEFAULT_STALE_AFTER_S, 'stale_after'
        ),
    }


def _store_writer(store: Any, backend: str) -> StoreWriter | None:
    return StoreWriter(store, backend) if store is not None else None


def _sub_peer(sub: Any) -> str:
    """A subscriber's name for introspection (``SubscriberInfo.peer``):
    ``<actor name>/<context id>`` of its stream, ``ticklog`` for the tick
    recorder (a local subscriber without a stream)."""
    from ._ticklog import _NoIPC

    if isinstance(sub.ipc, _NoIPC):
        return 'ticklog'
    stream = getattr(sub.ipc, 'stream', sub.ipc)  # a SafeStream wraps a MsgStream
    ctx = getattr(stream, '_ctx', None)
    uid = getattr(getattr(ctx, 'chan', None), 'uid', None)
    cid = str(getattr(ctx, 'cid', '') or '')
    name = uid[0] if uid else '?'
    return f'{name}/{cid[:8]}' if cid else name


def _ticklog_info(subs: Any) -> dict[str, Any]:
    """A topic's tick log for :class:`TopicInfo` (empty: not recorded)."""
    from ._ticklog import recorder_info

    return recorder_info(subs)


def _store_info(w: StoreWriter | None) -> dict[str, Any]:
    """The bar store's counters for :class:`FeedInfo` (empty: no store)."""
    if w is None:
        return {}
    return {
        'name': w.store.name,
        'root': str(getattr(w.store, 'root', '')),
        'bars': w.bars,
        'writes': w.writes,
        'failures': w.failures,
        'last_error': w.last_error,
        # stored bars written again (corrected by late trades); compaction:
        # files merged away, merged files written, failed compactions
        'rewrites': w.rewrites,
        'compacted': w.compacted,
        'merged_files': w.merged_files,
        'compact_failures': w.compact_failures,
    }


def _feedd_store(data_dir: str | bool | None) -> tuple[Any, float]:
    """The bar store of a feed daemon, on by default (from the library as
    from ``samplerd run``): in ``data_dir``, else the data directory
    (``$TRACTOR_SAMPLER_DATA_DIR``, else the per-user one, see
    _datadir.py); off with ``data_dir=False`` or
    ``$TRACTOR_SAMPLER_STORE=none``, or without pyarrow (said once).  A
    data directory that cannot be used is logged in one line and the feed
    runs without the store."""
    from ._datadir import check_store_setting

    data_dir = check_store_setting(data_dir)
    if data_dir is False:
        return None, 0.0
    flush_s = flush_interval()
    try:
        return open_store(data_dir), flush_s
    except ValueError as err:  # DataDirError too: the feed runs without it
        log.error(f'bar store off: {err}')
        return None, 0.0


async def _maybe_mirror(
    ctx: compat.Context, backend: str, members: int, data_dir: str | bool | None = None
) -> bool:
    """In a root started with an upstream (``samplerd run --upstream``,
    :data:`~tractor_sampler._mirror.UPSTREAM_ENV`): serve a relay mirror of
    the upstream's ``feedd.<backend>`` instead of a local feed daemon, until
    cancelled (see :mod:`tractor_sampler._mirror`; its buffers go to this
    host's bar store, ``data_dir``); ``False`` otherwise."""
    from ._mirror import run_mirror, upstream_from_env

    upstream = upstream_from_env()
    if upstream is None:
        return False
    await run_mirror(ctx, backend, upstream, members, data_dir=data_dir)
    return True


@compat.context
async def attach_feed(
    ctx: compat.Context,
    topics: list[str],
    config: dict[str, Any] | None = None,
    heartbeat_s: float | None = None,
) -> None:
    """(feedd) Start ``topics`` if needed (with the backend ``config``);
    ``started()`` carries this daemon's pid and, per topic, its buffer
    tokens by period and its latest status; then the stream carries every :class:`FeedStatus`
    change of those topics until the client leaves.  ``heartbeat_s``: a
    client on another host asks for a heartbeat after this long without a
    report (``tractor_services._heartbeat``)."""
    daemon = await wait_feed_daemon()
    names = check_topics(topics)
    heartbeat_s = check_heartbeat(heartbeat_s)
    if config is not None and not isinstance(config, dict):
        raise TypeError(f'config must be a dict of backend options, not {config!r}')
    started: dict[str, Any] = {}
    # topics start concurrently (their registrations with samplerd go in
    # batches); a refusal of one does not stop the others, the first
    # (in the order asked) is raised once all are done
    errors: dict[str, Exception] = {}
    limit = trio.CapacityLimiter(START_CONCURRENCY)
    async with daemon.holding(names):  # counted from before they start
        await _attach_feed(
            ctx, daemon, names, config, heartbeat_s, started, errors, limit
        )


async def _attach_feed(
    ctx: compat.Context,
    daemon: FeedDaemon,
    names: list[str],
    config: dict[str, Any] | None,
    heartbeat_s: float | None,
    started: dict[str, Any],
    errors: dict[str, Exception],
    limit: trio.CapacityLimiter,
) -> None:
    """attach_feed's body, inside its count of the topics' clients."""

    held: dict[str, Topic] = {}

    async def start(name: str) -> None:
        async with limit:
            try:
                t = await daemon.ensure_topic(name, config)
            except Exception as err:
                errors[name] = err
                return
        held[name] = t
        started[name] = {
            'buffers': {repr(p): shm.token.to_msg() for p, shm in t.shms.items()},
            'status': msgspec.to_builtins(t.status()),
            'info': t.info,
        }

    with _gc_paused(len(names) >= GC_PAUSE_TOPICS):
        async with trio.open_nursery() as n:
            for name in names:
                n.start_soon(start, name)
    for name in names:
        if name in errors:
            raise errors[name]
    started = {name: started[name] for name in names}
    # host_id: a client with another one cannot attach our buffers (_remote.py)
    await ctx.started({'pid': os.getpid(), 'host_id': host_id(), 'topics': started})
    async with (
        compat.open_stream(ctx) as stream,
        open_sub(daemon.status_bus, stream, batch=False, heartbeat_s=heartbeat_s) as (
            sub,
            ready,
        ),
    ):
        for name in names:
            daemon.status_bus.add_subs(name, {sub})
            # what changed between started() and now (a report sent before
            # we subscribed would be lost): the current status, once more
            sub.send_chan.put(_status_now(daemon, name, held.get(name)))
        ready.set()
        try:
            async for _ in stream:
                pass  # no requests: held open until the client leaves
        except (PeerDisconnected, trio.BrokenResourceError, trio.ClosedResourceError):
            pass


def _status_now(daemon: FeedDaemon, name: str, held: Topic | None) -> FeedStatus:
    """The status of a topic a client attaches to, right after it
    subscribed: the running topic's, else the last one of the topic it
    was started with (which failed or ended meanwhile: its error, e.g. a
    backend breaking the quote contract, is the client's to see)."""
    now_t = daemon.topics.get(name)
    if now_t is not None:
        return now_t.status()
    if held is not None and held.state in ('failed', 'ended'):
        return held.status()
    return FeedStatus(
        topic=name,
        state='failed',
        error='the topic ended while this client attached',
        time=time.time(),
    )


async def stop_feed_topic(topic: str, reason: str | None = None) -> dict[str, Any]:
    """(feedd) Stop ``topic`` now (:meth:`FeedDaemon.stop_topic`), its
    clients told ``reason``; its last :class:`FeedStatus` in IPC form.
    ``ValueError`` when it does not run."""
    if reason is not None and not isinstance(reason, str):
        raise ValueError(f'reason={reason!r} must be a string')
    daemon = get_feed_daemon()
    try:
        st = await daemon.stop_topic(topic, reason or 'stopped on request')
    except KeyError as err:
        raise ValueError(err.args[0]) from None
    return msgspec.to_builtins(st)


async def feed_info() -> dict[str, Any]:
    """(feedd) The daemon's backend, topics, their buffers, states,
    counters and subscribers: a :class:`~tractor_sampler.FeedInfo` in its
    IPC form (``MarketFeed.info()`` and ``introspect()`` rebuild it)."""
    return to_wire(get_feed_daemon().info())
