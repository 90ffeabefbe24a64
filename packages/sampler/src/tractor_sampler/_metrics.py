"""
Prometheus metrics of a running tree (``samplerd run --metrics-port N``):
services, topics, subscribers, samplerd's steps and the bar store, as
``samplerd ls`` sees them (docs/metrics.md lists every metric).

How: a trio task in the root asks the tree what runs
(:func:`~tractor_sampler.introspect`, the report ``samplerd ls`` prints)
every ``refresh_s`` seconds, turns it into metric families and hands them
to a :class:`SnapshotCollector`.  prometheus_client's HTTP server runs in
a thread of its own and only ever reads the latest families: a scrape
never calls into trio nor waits on the tree, and a tree that does not
answer leaves the previous snapshot (its age is a metric of its own).

Counters never go backwards: a feed daemon that restarts (or a topic that
stops and starts again) counts from zero, so the exporter keeps, per
series, the value it had reached and adds it to what the new process
counts (:class:`Monotonic`).  Counters are therefore totals since the
exporter started, across restarts of what they count.

prometheus_client is an optional extra: ``pip install
'tractor-sampler[metrics]'`` (:data:`EXTRA_HINT`).
"""

from __future__ import annotations

import math
import time
from collections.abc import AsyncIterator, Iterable, Iterator
from contextlib import asynccontextmanager as acm
from typing import Any, get_args

import trio

from tractor_services import compat

from ._info import TreeInfo
from ._msgs import FeedState

log = compat.get_logger('metrics', 'tractor_sampler')

EXTRA_HINT = "pip install 'tractor-sampler[metrics]'"
#: seconds between two snapshots of the tree
REFRESH_S: float = 1.0
#: a snapshot that takes longer than this is abandoned (counted as an error)
REFRESH_TIMEOUT_S: float = 10.0
#: the subscriber name of a topic's tick recorder (``SubscriberInfo.peer``)
TICKLOG_PEER = 'ticklog'

SERVICE_STATES: tuple[str, ...] = (
    'starting',
    'running',
    'restarting',
    'stopping',
    'stopped',
    'failed',
)
TOPIC_STATES: tuple[str, ...] = get_args(FeedState)


class MetricsUnavailable(RuntimeError):
    """prometheus_client is not installed."""


def require_prometheus() -> None:
    """Raise :class:`MetricsUnavailable` (one line naming the extra) when
    prometheus_client cannot be imported."""
    try:
        import prometheus_client  # noqa: F401
    except ImportError:
        raise MetricsUnavailable(
            f'metrics need prometheus_client: {EXTRA_HINT}'
        ) from None


# --- counters that survive restarts ----------------------------------------------


class Monotonic:
    """Per series, a counter that never goes backwards although the
    process counting it restarts.  :meth:`value` takes the raw count and
    the *epoch* it was counted in (a feed daemon's pid, a topic's start):
    when the epoch changes or the raw count went down, the total reached
    so far becomes the offset the new count is added to."""

    def __init__(self) -> None:
        # key -> [epoch, last raw value, offset]
        self._st: dict[tuple, list[Any]] = {}

    def value(self, key: tuple, epoch: Any, raw: float) -> float:
        st = self._st.get(key)
        if st is None:
            self._st[key] = [epoch, raw, 0.0]
            return float(raw)
        if st[0] != epoch or raw < st[1]:
            st[2] += st[1]
            st[0] = epoch
        st[1] = raw
        return float(st[2] + raw)

    def forget(self, keep: Any) -> None:
        """Drop the series whose key ``keep(key)`` rejects (subscribers
        that left: their series end with them)."""
        for key in [k for k in self._st if not keep(k)]:
            del self._st[key]


# --- the metric families of one snapshot ------------------------------------------


def families(tree: TreeInfo, mono: Monotonic) -> list[Any]:
    """The Prometheus metric families of one :class:`TreeInfo` (services,
    feeds, samplerd), counters made monotonic through ``mono``."""
    from prometheus_client.core import (
        CounterMetricFamily,
        GaugeMetricFamily,
        HistogramMetricFamily,
    )

    out: list[Any] = []

    def counter(name: str, doc: str, labels: Iterable[str]) -> Any:
        f = CounterMetricFamily(name, doc, labels=list(labels))
        out.append(f)
        return f

    def gauge(name: str, doc: str, labels: Iterable[str]) -> Any:
        f = GaugeMetricFamily(name, doc, labels=list(labels))
        out.append(f)
        return f

    # services (the root's manager counts restarts itself: no epoch)
    svc_state = gauge(
        'samplerd_service_state',
        'A service of the root: 1 for its current state, 0 for the others.',
        ('service', 'state'),
    )
    svc_restarts = counter(
        'samplerd_service_restarts', 'Restarts of a service.', ('service',)
    )
    for svc in tree.services or []:
        for st in SERVICE_STATES:
            svc_state.add_metric([svc.name, st], 1.0 if svc.state == st else 0.0)
        svc_restarts.add_metric(
            [svc.name], mono.value(('svc', svc.name), None, svc.restarts)
        )

    # topics, their subscribers, tick logs; feed daemons' stores
    topic_l = ('backend', 'host', 'topic')
    sub_l = (*topic_l, 'subscriber')
    t_state = gauge(
        'samplerd_topic_state',
        "A topic's quote stream: 1 for its current state, 0 for the others.",
        (*topic_l, 'state'),
    )
    t_counters = {
        attr: counter(f'samplerd_topic_{name}', doc, topic_l)
        for attr, name, doc in (
            ('quotes', 'quotes', 'Quotes the topic published.'),
            ('trades', 'trades', 'Trades (clearing ticks) the topic received.'),
            ('late', 'late_trades', 'Trades placed after their bar closed (the closed bar corrected).'),
            ('held', 'held_trades', 'Trades held because their bar had not opened yet.'),
            ('unplaced', 'unplaced_trades', 'Trades placed in no bar (too old, bad time, too far ahead).'),
            ('corrected', 'corrected_bars', 'Closed bars corrected by late trades.'),
            ('restarts', 'restarts', "Restarts of the topic's quote stream."),
        )
    }  # fmt: skip
    t_subs = gauge(
        'samplerd_topic_subscribers', 'Subscribers of the topic now.', topic_l
    )
    t_last = gauge('samplerd_topic_last_price', 'The last price, if sent.', topic_l)
    s_counters = {
        attr: counter(f'samplerd_subscriber_{attr}', doc, sub_l)
        for attr, doc in (
            ('delivered', 'Quotes delivered to the subscriber.'),
            ('messages', 'IPC messages sent to the subscriber.'),
            ('conflated', 'Quotes merged into frames by its throttler.'),
            ('dropped', 'Quotes dropped for it (its outbox was full, or left queued).'),
            ('overruns', 'Times its outbox was full.'),
        )
    }  # fmt: skip
    s_rate = gauge(
        'samplerd_subscriber_throttle_hz',
        'The frames per second the subscriber asked for (0: every quote).',
        sub_l,
    )
    tl_records = counter(
        'samplerd_ticklog_records', "Quotes written to the topic's tick log.", topic_l
    )
    tl_dropped = counter(
        'samplerd_ticklog_dropped',
        'Quotes the tick recorder dropped (it fell behind).',
        topic_l,
    )
    tl_failures = counter(
        'samplerd_ticklog_failures',
        'Failed writes of the tick log (retried; the feed runs on).',
        topic_l,
    )
    store_l = ('backend', 'host')
    store_counters = {
        attr: counter(f'samplerd_store_{attr}', doc, store_l)
        for attr, doc in (
            ('bars', 'Closed bars written to the bar store.'),
            ('writes', 'Writes to the bar store.'),
            ('failures', 'Failed writes to the bar store (retried).'),
            ('rewrites', 'Stored bars written again, corrected by late trades.'),
            ('compacted', 'Bar store files merged away by compaction.'),
            ('merged_files', 'Bar store files written by compaction.'),
            ('compact_failures', 'Failed compactions of the bar store (retried).'),
        )
    }
    subs_seen: set[tuple] = set()
    for f in tree.feeds or []:
        host = f.host or ''
        for name, t in f.topics.items():
            lv = [f.backend, host, name]
            epoch = (f.pid, t.started_at)  # a topic started again counts afresh
            for st in TOPIC_STATES:
                t_state.add_metric([*lv, st], 1.0 if t.state == st else 0.0)
            raw = {
                'quotes': t.quotes,
                'trades': t.trades,
                'late': t.bars.late,
                'held': t.bars.held,
                'unplaced': t.bars.unplaced,
                'corrected': t.bars.corrected,
                'restarts': t.restarts,
            }
            for attr, fam in t_counters.items():
                fam.add_metric(lv, mono.value(('t', attr, *lv), epoch, raw[attr]))
            subs = [s for s in t.subscribers if s.peer != TICKLOG_PEER]
            t_subs.add_metric(lv, float(len(subs)))
            if t.last is not None and math.isfinite(t.last):
                t_last.add_metric(lv, float(t.last))
            for s in t.subscribers:
                if s.peer == TICKLOG_PEER:
                    for fam, v, attr in (
                        # written (delivered: handed to the log, some
                        # maybe still queued)
                        (tl_records, t.ticklog.get('records', s.delivered), 'records'),
                        (tl_dropped, s.dropped, 'dropped'),
                        (tl_failures, t.ticklog.get('failures', 0), 'failures'),
                    ):
                        fam.add_metric(lv, mono.value(('tl', attr, *lv), epoch, v))
                    continue
                sv = [*lv, s.peer or '?']
                for attr, fam in s_counters.items():
                    key = ('s', attr, *sv)
                    subs_seen.add(key)
                    fam.add_metric(sv, mono.value(key, f.pid, getattr(s, attr)))
                s_rate.add_metric(sv, float(s.rate or 0.0))
        if f.store:
            lv = [f.backend, host]
            for attr, fam in store_counters.items():
                v = f.store.get(attr, 0)
                fam.add_metric(lv, mono.value(('store', attr, *lv), f.pid, v))
    # a subscriber that left does not come back (its name is its context's)
    mono.forget(lambda k: k[0] != 's' or k in subs_seen)

    # samplerd
    sd = tree.samplerd
    if sd is not None:
        ep = sd.pid
        steps = counter(
            'samplerd_steps', 'Steps samplerd took, per period.', ('period',)
        )
        for p, n in sorted(sd.steps.items()):
            lv = [f'{p:g}']
            steps.add_metric(lv, mono.value(('sd', 'steps', *lv), ep, n))
        bufs = gauge(
            'samplerd_buffers', 'Buffers samplerd steps, per period.', ('period',)
        )
        for p, n in sorted(sd.buffers.items()):
            bufs.add_metric([f'{p:g}'], float(n))
        for attr, name, doc in (
            ('late_steps', 'late_steps', 'Steps taken more than 1 ms after their boundary.'),
            ('caught_up', 'caught_up_steps', 'Steps caught up at once after a stall.'),
            ('skipped', 'skipped_steps', 'Missed steps skipped (beyond the catch-up limit).'),
            ('clock_jumps', 'clock_jumps', 'Wall-clock jumps samplerd noticed.'),
        ):  # fmt: skip
            counter(f'samplerd_{name}', doc, ()).add_metric(
                [], mono.value(('sd', attr), ep, getattr(sd, attr))
            )
        if sd.lateness_buckets:
            h = HistogramMetricFamily(
                'samplerd_step_lateness_seconds',
                'How long after its boundary each step was taken.',
                labels=[],
            )
            cum = 0.0
            buckets = []
            les = [f'{b:g}' for b in sd.lateness_bounds_s] + ['+Inf']
            for i, (le, n) in enumerate(zip(les, sd.lateness_buckets, strict=False)):
                cum += mono.value(('sd', 'lat', i), ep, n)
                buckets.append((le, cum))
            total = mono.value(('sd', 'lat_sum'), ep, sd.lateness_sum_s)
            h.add_metric([], buckets, total)
            out.append(h)
    return out


# --- the collector and the server -------------------------------------------------


class SnapshotCollector:
    """A prometheus_client collector serving the latest snapshot's
    families.  :meth:`update` (the trio task) replaces them in one
    assignment; :meth:`collect` (the HTTP server's thread) only reads."""

    def __init__(self) -> None:
        self._families: list[Any] = []
        self._taken: float | None = None  # wall clock of the last snapshot
        self.refresh_errors = 0

    def update(self, fams: list[Any], taken: float) -> None:
        self._families, self._taken = fams, taken

    def describe(self) -> list[Any]:
        return []  # nothing collected at registration

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        fams, taken = self._families, self._taken
        yield from fams
        age = GaugeMetricFamily(
            'samplerd_metrics_snapshot_age_seconds',
            'Seconds since the snapshot these metrics come from was taken.',
        )
        age.add_metric([], time.time() - taken if taken is not None else math.nan)
        yield age
        err = CounterMetricFamily(
            'samplerd_metrics_refresh_errors',
            'Snapshots of the tree that failed or timed out (the previous one served).',
        )
        err.add_metric([], float(self.refresh_errors))
        yield err


class MetricsServer:
    """prometheus_client's HTTP server, bound on ``host:port`` (``0``: a
    free port) in a thread of its own, serving a :class:`SnapshotCollector`
    (no other collector: only the tree's metrics).  :meth:`refresh` takes
    a snapshot of the tree (in trio); :meth:`close` stops the server."""

    def __init__(self, host: str = '127.0.0.1', port: int = 0) -> None:
        require_prometheus()
        from prometheus_client import CollectorRegistry, start_http_server

        self.collector = SnapshotCollector()
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(self.collector)  # type: ignore[arg-type]
        self.mono = Monotonic()
        self._server, self._thread = start_http_server(
            port, addr=host, registry=self.registry
        )

    @property
    def address(self) -> tuple[str, int]:
        host, port = self._server.server_address[:2]
        return str(host), int(port)

    @property
    def url(self) -> str:
        host, port = self.address
        host = f'[{host}]' if ':' in host else host
        return f'http://{host}:{port}/metrics'

    async def refresh(self, registry_addr: tuple[str, int]) -> bool:
        """One snapshot of the tree into the collector; ``False`` (counted
        in ``samplerd_metrics_refresh_errors_total``, the previous snapshot
        kept) when the tree did not answer in :data:`REFRESH_TIMEOUT_S`."""
        from ._introspect import introspect

        try:
            with trio.fail_after(REFRESH_TIMEOUT_S):
                tree = await introspect(
                    registry_addr, parts=('services', 'feeds', 'samplerd')
                )
        except Exception as err:  # a daemon gone mid-query, a timeout: next time
            self.collector.refresh_errors += 1
            log.info(f'metrics: snapshot failed: {type(err).__name__}: {err}')
            return False
        self.collector.update(families(tree, self.mono), time.time())
        return True

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()


async def run_metrics(
    server: MetricsServer,
    registry_addr: tuple[str, int],
    refresh_s: float = REFRESH_S,
    *,
    task_status: trio.TaskStatus[tuple[str, int]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Refresh ``server``'s snapshot every ``refresh_s`` seconds until
    cancelled, then stop the server.  The first snapshot is taken before
    ``task_status.started(address)``."""
    try:
        await server.refresh(registry_addr)
        task_status.started(server.address)
        while True:
            await trio.sleep(refresh_s)
            await server.refresh(registry_addr)
    finally:
        with trio.CancelScope(shield=True):
            await trio.to_thread.run_sync(server.close)


@acm
async def open_metrics_server(
    registry_addr: tuple[str, int],
    port: int = 0,
    host: str = '127.0.0.1',
    refresh_s: float = REFRESH_S,
) -> AsyncIterator[MetricsServer]:
    """Serve the metrics of the tree at ``registry_addr`` on
    ``http://host:port/metrics`` while the block runs (inside a tractor
    runtime, e.g. the root's).  ``OSError`` when the port cannot be bound,
    :class:`MetricsUnavailable` without prometheus_client."""
    server = MetricsServer(host, port)
    async with trio.open_nursery() as tn:
        await tn.start(run_metrics, server, registry_addr, refresh_s)
        yield server
        tn.cancel_scope.cancel()


__all__ = [
    'EXTRA_HINT',
    'MetricsServer',
    'MetricsUnavailable',
    'Monotonic',
    'SnapshotCollector',
    'families',
    'open_metrics_server',
    'require_prometheus',
    'run_metrics',
]
