"""
What introspection returns, as typed records: a feed daemon's topics with
their buffers, bar counters and subscribers (:class:`FeedInfo`), samplerd's
periods and clock counters (:class:`SamplerInfo`), the installed backends
(:class:`BackendInfo`) and all of a tree at once (:class:`TreeInfo`, from
:func:`~tractor_sampler.introspect`).

They are frozen, keyword-only msgspec structs: the daemons build them,
they travel over IPC as plain maps (``msgspec.to_builtins``) and are
rebuilt on receipt with ``msgspec.convert``, which also validates them.
Fields are only ever added, with defaults.  Maps keyed by a period are
keyed by the period in seconds (a ``float``).

"""

from __future__ import annotations

from typing import Any

import msgspec

from feedbus import SubStats
from tractor_services import ServiceInfo

from ._msgs import FeedState
from .shm import ShmToken


class _Info(msgspec.Struct, frozen=True, kw_only=True):
    pass


class SubscriberInfo(SubStats, kw_only=True):
    """One subscriber of a topic's quotes: feedbus' counters
    (:class:`feedbus.SubStats`: delivered, messages, conflated, dropped,
    overruns, ...) plus its throttle ``rate`` (Hz; ``None``: every quote)
    and whether it allows remote control of its UI.  (Not frozen, as
    ``SubStats`` is not: a frozen struct cannot extend it.)"""

    rate: float | None = None
    rc_ui: bool = False
    #: who it is: ``<actor name>/<context id>`` (one per subscription),
    #: ``ticklog`` for the topic's tick recorder; the ``subscriber`` label
    #: of the Prometheus metrics (docs/metrics.md)
    peer: str = ''


class BufferInfo(_Info, frozen=True, kw_only=True):
    """One shared-memory buffer of a topic."""

    rows: int  # valid rows
    history: int = 0  # history bars prepended at start
    last_time: float = 0.0  # the open bar's time
    token: ShmToken  # attach it with tractor_sampler.attach_shm_array(token)


class PeriodBarCounters(_Info, frozen=True, kw_only=True):
    """How one buffer's bar writer placed trades (docs/reliability.md,
    "Bars and clocks")."""

    placed: int = 0  # trades written into a bar
    late: int = 0  # after their bar closed: the closed bar corrected
    held: int = 0  # before their bar opened: held, then placed
    corrected: int = 0  # closed rows the writer changed
    unplaced: int = 0  # in no bar (too old, skipped by a jump, bad time, too far ahead)
    pending: int = 0  # held right now
    #: the period this buffer's bars are built from, if derived from another
    from_period: float | None = msgspec.field(default=None, name='from')


class BarCounters(PeriodBarCounters, frozen=True, kw_only=True):
    """A topic's bar writer: the counters summed over its buffers, plus
    totals and ``by_period``."""

    trades: int = 0
    volume: str = 'sum'  # how trade volume is taken: 'sum' or 'cumulative'
    bad_times: int = 0
    corrections_lost: int = 0
    by_period: dict[float, PeriodBarCounters] = {}


class TopicInfo(_Info, frozen=True, kw_only=True):
    """One topic of a feed daemon."""

    state: FeedState
    config: dict[str, Any] = {}  # the backend config it streams with
    restarts: int = 0  # of its quote stream
    last_error: str | None = None
    started_at: float = 0.0  # wall clock
    quotes: int = 0  # quotes published (the last sequence number)
    last: float | None = None  # the last price, if the backend sends one
    trades: int = 0
    late_trades: int = 0
    unplaced_trades: int = 0
    bars: BarCounters = BarCounters()
    steps: int = 0  # samplerd steps folded in
    sampler_restarts: int = 0  # times registered again with a restarted samplerd
    filled_bars: int = 0  # rows appended for boundaries samplerd missed
    buffers: dict[float, BufferInfo] = {}
    subscribers: list[SubscriberInfo] = []  # most delivered first
    #: its tick log, when recorded (docs/storage.md, "Tick log"): ``path``,
    #: ``records`` written, ``pending``, ``dropped``, ``failures`` (failed
    #: writes, retried), ``failing_since`` (wall time, ``None`` when writes
    #: succeed) and ``last_error``
    ticklog: dict[str, Any] = {}


class FeedInfo(_Info, frozen=True, kw_only=True):
    """A feed daemon (``feedd.<backend>``): its backend and topics."""

    backend: str
    version: str | None = None
    dist: str = ''  # '<distribution> <version>', or 'builtin'
    pid: int
    time: float  # wall clock when this was taken
    topics: dict[str, TopicInfo] = {}
    #: history calls whose bars broke the backend contract (no backfill)
    bad_history: int = 0
    #: the shared-memory groups holding the topics' buffers: ``groups``,
    #: ``slots`` (in all), ``used``, ``refused`` (topics refused for want
    #: of /dev/shm space); see docs/sampler.md, "Buffers in groups"
    pool: dict[str, int] = {}
    #: registrations the daemon opened with samplerd (one, plus one per
    #: samplerd restart), and the steps it received per period
    sampler_registrations: int = 0
    steps: dict[float, int] = {}
    #: the bar store (docs/storage.md): ``name``, ``root``, ``bars`` and
    #: ``writes`` done, ``failures`` (retried) and ``last_error``;
    #: ``rewrites`` (stored bars corrected by late trades, written again),
    #: ``compacted`` (files merged away), ``merged_files`` (files written by
    #: merges), ``compact_failures``; empty when the store is off
    store: dict[str, Any] = {}
    #: the joined host it runs on (``feedd.<backend>@<host>``), ``None`` on
    #: the registry's host (docs/multihost.md, "Services on a chosen host")
    host: str | None = None


class SamplerInfo(_Info, frozen=True, kw_only=True):
    """samplerd: its periods, buffers, subscribers and step counters, and
    the counters of stalls and clock jumps (docs/reliability.md, "Bars and
    clocks")."""

    pid: int
    incrementers: int = 0  # incrementer tasks ever run (one)
    periods: list[float] = []
    buffers: dict[float, int] = {}  # registered buffers per period
    subscribers: dict[str, int] = {}  # per bus topic ('period:<p>')
    steps: dict[float, int] = {}
    late_steps: int = 0
    caught_up: int = 0
    skipped: int = 0
    aligned: int = 0  # rows appended to align newly registered buffers
    set_aside: int = 0  # buffers no longer stepped (full or closed)
    clock_jumps: int = 0
    max_clock_jump_s: float = 0.0
    gaps: dict[float, int] = {}  # steps whose rows jumped boundaries, per period
    gap_bars: dict[float, int] = {}  # boundaries jumped over, per period
    waited: int = 0  # rows not appended: the buffer was already at the step's time
    #: the step lateness histogram: steps per bucket of lateness (wall time
    #: past the boundary), one per upper bound in ``lateness_bounds_s``
    #: (``<=``), then the steps later than the last; and the lateness summed
    lateness_bounds_s: list[float] = []
    lateness_buckets: list[int] = []
    lateness_sum_s: float = 0.0


class BackendInfo(_Info, frozen=True, kw_only=True):
    """One installed backend."""

    name: str
    version: str | None = None
    dist: str = ''  # '<distribution> <version>', or 'builtin'
    history: bool = False  # it provides history
    symbol_info: bool = False  # it checks symbols
    #: a broken plugin, left out: why (``name`` is then the plugin's name)
    error: str | None = None


class TreeInfo(_Info, frozen=True, kw_only=True, omit_defaults=True):
    """Everything that runs under one root daemon, from
    :func:`~tractor_sampler.introspect`.  A part that was not asked for is
    ``None``; ``samplerd`` is also ``None`` when it does not run."""

    registry: str  # 'host:port'
    services: list[ServiceInfo] | None = None
    feeds: list[FeedInfo] | None = None
    samplerd: SamplerInfo | None = None
    backends: list[BackendInfo] | None = None


def to_wire(info: msgspec.Struct) -> Any:
    """An info struct as it travels over IPC (plain maps and lists)."""
    return msgspec.to_builtins(info)


def to_json_builtins(info: msgspec.Struct) -> Any:
    """An info struct as JSON-ready data: period keys (floats) written
    ``'1'``, ``'0.5'``, ``'60'``.  ``msgspec.convert(data, type(info),
    strict=False)`` reads it back."""
    return _str_keys(msgspec.to_builtins(info))


def _str_keys(v: Any) -> Any:
    if isinstance(v, dict):
        return {
            (f'{k:g}' if isinstance(k, float) else str(k)): _str_keys(x)
            for k, x in v.items()
        }
    if isinstance(v, list):
        return [_str_keys(x) for x in v]
    return v
