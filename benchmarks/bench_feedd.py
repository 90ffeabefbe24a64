"""Benchmark: the feed daemon (``feedd.sim``) against a raw tractor stream.

One topic (``AAA``) of the simulated backend at 1,000 and 10,000 quotes/s
and flat out (``tick_rate`` 200,000: the sim then yields back to back, as
fast as its consumer takes them), 4 subscriber actors, unthrottled.

- **feedd**: the root (a service root) has its manager spawn
  ``feedd.sim`` (``maybe_open_feedd``); each subscriber opens its own
  ``tractor_sampler.open_market_feed(['AAA'], backend='sim',
  config={'tick_rate': N}, ...)`` (the first starts the topic).  The
  daemon runs the sim through ``sample_and_broadcast``: trades into the
  topic's 1 s and 60 s shm bars, every quote published on its feedbus,
  fanned out to the 4.  The daemon is stopped after every trial (a topic
  runs on after its last client leaves, and keeps its config).
- **raw** (the baseline): one actor runs the same sim stream
  (``tractor_sampler.backends.sim.stream_quotes``) and sends every quote
  dict (plus ``topic`` and ``seq``) over a plain tractor 0.1.0a5 context
  stream (``portal.open_context`` + ``ctx.open_stream()``, default
  backpressure) to each of the same 4 subscriber actors in turn: no shm,
  no feedbus.
- **sim**: the same actor runs the sim stream alone and drops the quotes:
  the sim's own CPU cost per quote, to separate it from the daemon's.

Per trial, over a window of ``--secs`` after ``--warm`` seconds:
latency (a subscriber's ``time.time()`` at arrival minus the quote's
``time``, stamped by the sim when it made the quote), pooled over the 4
subscribers; quotes/s published (feedd: the bus's sequence delta from
``feed_info()``, i.e. what ``Feed.info()`` returns) or generated (raw,
sim); quotes/s delivered to each subscriber; losses (sequence gaps seen by
the subscribers, the daemon's per-subscriber ``dropped`` / ``overruns``);
CPU time of every process (``psutil``, sampled by the root at the window's
ends).  Kinds are interleaved, their order rotated every round, after one
unrecorded warm-up round; figures are medians over rounds.

**Topics per feed daemon** (a curve, 1 to 10,000 topics, run first;
``--only-topics`` runs it alone, ``--no-topics`` leaves it out): per topic
count a fresh service root, ``feedd.sim`` with that many topics opened by
one ``open_market_feed`` call, measuring the time to open them, the file
descriptors of the daemon, samplerd and the client, the daemon's
anonymous RSS and the /dev/shm pages touched per topic, and samplerd's
step latency to a subscriber with the topics registered against one
buffer alone in the same run; a table and a plot
(``docs/img/feedd_topics.png``) inside the feedd section.

The ``__main__`` guard is required: subactors re-run this file.

    python benchmarks/bench_feedd.py            # full size, writes docs
    python benchmarks/bench_feedd.py --quick    # small, prints only
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
import warnings
from collections import defaultdict
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import trio

warnings.filterwarnings('ignore', category=trio.TrioDeprecationWarning)

from tractor_services import compat  # noqa: E402
from tractor_services.testing import free_port, importable_by_subactors  # noqa: E402

HERE = Path(__file__).resolve().parent
KINDS = ('feedd', 'raw', 'sim')
NSUBS = 4
MAX_RATE = 200_000.0
TRIAL_TIMEOUT_S = 60.0
#: subscribers stay on this long after the window, so that the counters
#: read at its end still include them
GRACE_S = 0.25


def _wall_deadline(t: float) -> float:
    """``time.time()`` value ``t`` on trio's clock."""
    return trio.current_time() + (t - time.time())


class Cpu:
    """CPU seconds (user + system) of some processes, and of the machine."""

    def __init__(self, pids: dict[str, int]) -> None:
        import psutil

        self._psutil = psutil
        self.procs = {k: psutil.Process(p) for k, p in pids.items()}

    def add(self, key: str, pid: int) -> None:
        self.procs[key] = self._psutil.Process(pid)

    def sample(self) -> dict[str, float]:
        out = {'_wall': time.time()}
        for k, p in self.procs.items():
            try:
                t = p.cpu_times()
                out[k] = t.user + t.system
            except self._psutil.Error:
                out[k] = math.nan
        m = self._psutil.cpu_times()
        out['_busy'] = sum(m) - m.idle - getattr(m, 'iowait', 0.0)
        out['_total'] = sum(m)
        return out

    @staticmethod
    def delta(a: dict[str, float], b: dict[str, float]) -> dict[str, float]:
        """CPU seconds per second of wall time, per process; ``_machine``:
        busy cores."""
        dt = b['_wall'] - a['_wall']
        out = {k: (b[k] - a[k]) / dt for k in a if not k.startswith('_')}
        frac = (b['_busy'] - a['_busy']) / max(b['_total'] - a['_total'], 1e-9)
        out['_machine'] = frac * (os.cpu_count() or 1)
        # busy time of processes that are not this benchmark's (the machine
        # is shared), kernel work on behalf of ours included
        out['_others'] = out['_machine'] - sum(
            v for k, v in out.items() if not k.startswith('_') and not math.isnan(v)
        )
        out['_dt'] = dt
        return out


class Bench:
    def __init__(
        self,
        cfg: argparse.Namespace,
        addr: tuple[str, int],
        mngr: Any,
        raw: Any,
        ctls: list[Any],
        cpu: Cpu,
    ) -> None:
        self.cfg = cfg
        self.addr = addr
        self.mngr = mngr
        self.raw = raw  # portal of the raw source actor
        self.ctls = ctls  # root side of each subscriber's command stream
        self.cpu = cpu

    def _window(self, secs: float, warm: float) -> dict[str, float]:
        t0 = time.time() + warm
        return {'t0': t0, 't1': t0 + secs, 't_end': t0 + secs + GRACE_S}

    async def _cpu_at(
        self, t0: float, t1: float, out: dict[str, Any], info: Any = None
    ) -> None:
        """Sample CPU (and the daemon's counters) at ``t0`` and ``t1``."""
        await trio.sleep_until(_wall_deadline(t0))
        a = self.cpu.sample()
        if info is not None:
            out['info0'] = await info()
        await trio.sleep_until(_wall_deadline(t1))
        b = self.cpu.sample()
        if info is not None:
            out['info1'] = await info()
        out['cpu'] = Cpu.delta(a, b)

    async def _subs(self, cmd: dict[str, Any]) -> None:
        for c in self.ctls:
            await c.send(cmd)
        for c in self.ctls:
            got = await c.receive()
            assert got == 'ready', got

    async def trial(
        self, kind: str, rate: float, secs: float, warm: float
    ) -> dict[str, Any]:
        with trio.fail_after(secs + warm + TRIAL_TIMEOUT_S):
            if kind == 'sim':
                return await self._sim(rate, secs, warm)
            if kind == 'raw':
                return await self._raw(rate, secs, warm)
            return await self._feedd(rate, secs, warm)

    async def _sim(self, rate: float, secs: float, warm: float) -> dict[str, Any]:
        import _feedd_eps as eps

        win = self._window(secs, warm)
        out: dict[str, Any] = {}
        async with trio.open_nursery() as tn:
            tn.start_soon(self._cpu_at, win['t0'], win['t1'], out)
            res = await self.raw.run(
                eps.sim_alone, rate=rate, t0=win['t0'], t1=win['t1']
            )
        cpu = out['cpu']
        pub = res['generated'] / secs
        return {
            'published': pub,
            'prod_cpu': cpu['raw_src'],
            'prod_us': cpu['raw_src'] / pub * 1e6 if pub else math.nan,
            'machine': cpu['_machine'],
            'others': cpu['_others'],
        }

    async def _collect(self, results: list[Any], j: int) -> None:
        results[j] = await self.ctls[j].receive()

    async def _raw(self, rate: float, secs: float, warm: float) -> dict[str, Any]:
        import _feedd_eps as eps

        await self._subs({'kind': 'raw'})
        win = self._window(secs, warm)
        for c in self.ctls:
            await c.send(win)
        out: dict[str, Any] = {}
        results: list[Any] = [None] * len(self.ctls)
        async with trio.open_nursery() as tn:
            for j in range(len(self.ctls)):
                tn.start_soon(self._collect, results, j)
            tn.start_soon(self._cpu_at, win['t0'], win['t1'], out)
            res = await self.raw.run(
                eps.raw_run, rate=rate, t0=win['t0'], t1=win['t1'], t_stop=win['t_end']
            )
        assert res['streams'] == len(self.ctls), res
        pub = res['generated'] / secs
        return self._summary(results, secs, pub, out['cpu'], 'raw_src')

    async def _feedd(self, rate: float, secs: float, warm: float) -> dict[str, Any]:
        import _feedd_eps as eps

        from tractor_sampler import feedd_name, maybe_open_feedd
        from tractor_sampler.endpoints import feed_info

        config = {'tick_rate': rate}
        ts = time.perf_counter()
        # the config (the tick rate) goes with each subscriber's open_feed:
        # the first one starts the topic with it
        async with maybe_open_feedd(
            'sim', registry_addr=self.addr, buffers=eps.BUFFERS
        ) as portal:
            await self._subs({'kind': 'feedd', 'config': config})
            first = await portal.run(feed_info)
            self.cpu.add('feedd', first['pid'])
            if 'samplerd' not in self.cpu.procs:
                self.cpu.add('samplerd', self.mngr.info('samplerd').pid)
            setup = time.perf_counter() - ts
            win = self._window(secs, warm)
            for c in self.ctls:
                await c.send(win)
            out: dict[str, Any] = {}
            results: list[Any] = [None] * len(self.ctls)

            async def info() -> Any:
                return await portal.run(feed_info)

            async with trio.open_nursery() as tn:
                for j in range(len(self.ctls)):
                    tn.start_soon(self._collect, results, j)
                tn.start_soon(self._cpu_at, win['t0'], win['t1'], out, info)
        # a fresh daemon per trial: a topic runs on (at its tick rate) after
        # its last client leaves, and cannot change its config
        await self.mngr.cancel_service(feedd_name('sim'))
        del self.cpu.procs['feedd']
        i0, i1 = out['info0'], out['info1']
        t_a, t_b = i0['topics'][eps.TOPIC], i1['topics'][eps.TOPIC]
        dt = i1['time'] - i0['time']
        pub = (t_b['quotes'] - t_a['quotes']) / dt

        def tot(info: dict[str, Any], key: str) -> int:
            return sum(s[key] for s in info['subscribers'])

        got = self._summary(results, secs, pub, out['cpu'], 'feedd')
        if len(t_b['subscribers']) != NSUBS:
            print(
                f'  warning: the daemon had {len(t_b["subscribers"])} subscribers '
                "at the window's end",
                flush=True,
            )
        got.update(
            {
                'setup': setup,
                'trades': (t_b['trades'] - t_a['trades']) / dt,
                'late_trades': t_b['late_trades'] - t_a['late_trades'],
                'd_delivered': (tot(t_b, 'delivered') - tot(t_a, 'delivered'))
                / dt
                / NSUBS,
                'd_dropped': tot(t_b, 'dropped') - tot(t_a, 'dropped'),
                'd_overruns': tot(t_b, 'overruns') - tot(t_a, 'overruns'),
                'q_per_msg': (tot(t_b, 'delivered') - tot(t_a, 'delivered'))
                / max(tot(t_b, 'messages') - tot(t_a, 'messages'), 1),
                'nsubs_daemon': len(t_b['subscribers']),
                'state': t_b['state'],
            }
        )
        return got

    def _summary(
        self,
        results: list[dict[str, Any]],
        secs: float,
        pub: float,
        cpu: dict[str, float],
        prod: str,
    ) -> dict[str, Any]:
        import numpy as np

        lat = np.concatenate(
            [np.frombuffer(r['lat'], dtype=np.float32) for r in results]
        )
        lat = lat.astype(np.float64)
        rates = [r['count'] / secs for r in results]
        subs_cpu = sum(cpu[f'sub{j}'] for j in range(len(results)))
        return {
            'published': pub,
            'delivered': rates,
            'gaps': sum(r['gaps'] for r in results),
            'gaps_all': sum(r['gaps_all'] for r in results),
            'quotes_all': sum(r['quotes_all'] for r in results),
            'local_dropped': sum(r['local_dropped'] for r in results),
            'dropped_all': sum(r['d_dropped'] for r in results),
            'overruns_all': sum(r['d_overruns'] for r in results),
            'p50': float(np.percentile(lat, 50)) if len(lat) else math.nan,
            'p99': float(np.percentile(lat, 99)) if len(lat) else math.nan,
            'max': float(lat.max()) if len(lat) else math.nan,
            'n_lat': len(lat),
            'prod_cpu': cpu[prod],
            'prod_us': cpu[prod] / pub * 1e6 if pub else math.nan,
            'subs_cpu': subs_cpu,
            'subs_us': subs_cpu / sum(rates) * 1e6 if sum(rates) else math.nan,
            'machine': cpu['_machine'],
            'others': cpu['_others'],
        }


async def run(cfg: argparse.Namespace) -> dict[str, Any]:
    import _feedd_eps as eps

    from tractor_services import open_service_root

    compat.quiet_runtime_logs()
    addr = ('127.0.0.1', free_port())
    res: dict[str, Any] = {'trials': defaultdict(list)}
    t_setup = time.perf_counter()
    async with open_service_root(addr, name='bench_feedd') as mngr:
        compat.quiet_runtime_logs()
        async with compat.open_actor_nursery() as an, AsyncExitStack() as stack:
            mods = [eps.__name__]
            raw = await compat.start_actor(an, eps.RAW_SRC, enable_modules=mods)
            subs: list[Any] = [None] * NSUBS

            async def spawn(i: int) -> None:
                subs[i] = await compat.start_actor(
                    an, f'feedd_sub{i}', enable_modules=mods
                )

            async with trio.open_nursery() as tn:
                for i in range(NSUBS):
                    tn.start_soon(spawn, i)
            ctls = []
            for s in subs:
                ctx, _ = await stack.enter_async_context(
                    compat.open_context(s.portal, eps.sub_ctl, registry_addr=list(addr))
                )
                ctls.append(await stack.enter_async_context(ctx.open_stream()))
            cpu = Cpu(
                {
                    'root': os.getpid(),
                    'raw_src': raw.proc.pid,
                    **{f'sub{i}': s.proc.pid for i, s in enumerate(subs)},
                }
            )
            bench = Bench(cfg, addr, mngr, raw.portal, ctls, cpu)
            res['setup_s'] = time.perf_counter() - t_setup
            print(
                f'  raw source + {NSUBS} subscribers up in {res["setup_s"]:.1f} s',
                flush=True,
            )

            for r in range(cfg.rounds + 1):  # round 0: warm-up, not kept
                secs = cfg.warm_secs if r == 0 else cfg.secs
                t_round = time.perf_counter()
                for k, rate in enumerate(cfg.rates):
                    i = (r + k) % len(KINDS)
                    order = KINDS[i:] + KINDS[:i]
                    line = []
                    for kind in order:
                        got = await bench.trial(kind, rate, secs, cfg.warm)
                        if r:
                            res['trials'][(kind, rate)].append(got)
                        line.append(_line(kind, got))
                    print(
                        f'  {"warm-up" if r == 0 else f"round {r}"}, {_rate_label(rate)}: '
                        + ' | '.join(line),
                        flush=True,
                    )
                print(f'  ({time.perf_counter() - t_round:.1f} s)', flush=True)
            await stack.aclose()
            await an.cancel()
    return res


# --- topics per feed daemon ------------------------------------------------------


async def _step_latency(
    steps: Any, n: int, others: list[int] | None = None
) -> list[float]:
    """Arrival minus boundary of the next ``n`` 1 s steps (seconds);
    ``others`` gets the count of the other messages (Backfill corrections
    the feed daemon broadcasts through samplerd) that came meanwhile."""
    from tractor_sampler import Step

    out: list[float] = []
    # a reader of its own: only the steps from now on (the default reader
    # holds the ones that came while the topics opened)
    with trio.fail_after(n * 3 + 30):
        async with steps.open_reader() as rx:
            while len(out) < n:
                msg = await rx.receive()
                if isinstance(msg, Step) and msg.period_s == 1.0:
                    out.append(time.time() - msg.time)
                elif others is not None and not isinstance(msg, Step):
                    others.append(1)
    return out


async def run_topics(cfg: argparse.Namespace) -> dict[str, Any]:
    """The topics curve: per topic count, a fresh service root; samplerd's
    step latency to a subscriber (this process) with one buffer of its
    own registered, then with the topics' buffers too; the time to open
    the topics (one ``open_market_feed`` call); file descriptors of the
    daemon, samplerd and this client; the daemon's anonymous RSS and the
    /dev/shm pages touched, per topic."""
    import _feedd_eps as eps
    import numpy as np
    import psutil

    from tractor_sampler import (
        feedd_name,
        maybe_open_feedd,
        open_market_feed,
        open_sample_stream,
        open_shm_array,
    )
    from tractor_services import open_service_root

    compat.quiet_runtime_logs()
    points = []
    for n in cfg.topics:
        addr = ('127.0.0.1', free_port())
        async with open_service_root(addr, name='bench_feedd_topics') as mngr:
            compat.quiet_runtime_logs()
            # the topics run on, registered, after their client leaves (the
            # latency windows below): a linger longer than the whole point
            async with maybe_open_feedd(
                'sim',
                buffers=eps.TOPIC_BUFFERS,
                group_members=cfg.group_members,
                linger=3600.0,
            ):
                pass
            feedd_pid = mngr.info(feedd_name('sim')).pid
            sd_pid = mngr.info('samplerd').pid
            empty = eps.proc_figures(feedd_pid)
            with open_shm_array(64, start=0) as one:
                row = np.zeros(1, dtype=one.dtype)
                row['time'] = math.floor(time.time())
                row['close'] = 100.0
                one.push(row)
                async with open_sample_stream(1.0, {1.0: one}) as steps:
                    base = await _step_latency(steps, cfg.steps)
                    topics = [f'S{i:05d}' for i in range(n)]
                    procs = {
                        k: psutil.Process(pid)
                        for k, pid in (
                            ('daemon', feedd_pid),
                            ('samplerd', sd_pid),
                            ('client', os.getpid()),
                        )
                    }

                    def cpu(procs: dict[str, Any] = procs) -> dict[str, float]:
                        out = {}
                        for k, pr in procs.items():
                            c = pr.cpu_times()
                            out[k] = c.user + c.system
                        return out

                    cpu0 = cpu()
                    t0 = time.perf_counter()
                    async with open_market_feed(
                        topics,
                        config={
                            'tick_rate': cfg.topic_rate,
                            'trade_prob': 0.5,
                            'anchored': False,
                        },
                        buffers=eps.TOPIC_BUFFERS,
                    ) as feed:
                        t_open = time.perf_counter() - t0
                        cpu1 = cpu()
                        names = {
                            feed.buffer(t, p).token.shm_name
                            for t in topics
                            for p in eps.TOPIC_BUFFERS
                        }
                        info = await feed.info()
                        d = eps.proc_figures(feedd_pid)
                        point = {
                            'n': n,
                            'open_s': t_open,
                            'open_cpu': {k: cpu1[k] - cpu0[k] for k in cpu0},
                            'base': base,
                            'groups': len(names),
                            'registrations': info.sampler_registrations,
                            'daemon': d,
                            'daemon_empty': empty,
                            'samplerd': eps.proc_figures(sd_pid),
                            'client': eps.proc_figures(os.getpid()),
                            'rss_per_topic': (d['rss_anon'] - empty['rss_anon']) / n,
                            'shm_per_topic': eps.shm_touched(names) / n,
                        }
                    # the topics stay registered after their client leaves:
                    # samplerd's step latency with them, measured here with
                    # no quotes of N topics arriving at this subscriber too
                    others: list[int] = []
                    point['lat'] = await _step_latency(steps, cfg.steps, others)
                    point['broadcasts'] = len(others)
            await mngr.cancel_service(feedd_name('sim'))
        points.append(point)
        b50, b99 = rp_pct(point['base'], 50), rp_pct(point['base'], 99)
        l50, l99 = rp_pct(point['lat'], 50), rp_pct(point['lat'], 99)
        oc = point['open_cpu']
        print(
            f'  {n:>6,} topics: open {t_open:.2f} s (CPU: daemon {oc["daemon"]:.2f} s, '
            f'samplerd {oc["samplerd"]:.2f}, client {oc["client"]:.2f}); step latency p50/p99 '
            f'{l50 * 1e3:.2f}/{l99 * 1e3:.2f} ms (one buffer: {b50 * 1e3:.2f}/'
            f'{b99 * 1e3:.2f}); fds daemon {d["fds"]} ({d["shm_fds"]} shm), samplerd '
            f'{point["samplerd"]["fds"]} ({point["samplerd"]["shm_fds"]} shm), client '
            f'{point["client"]["fds"]} ({point["client"]["shm_fds"]} shm); RSS/topic '
            f'{point["rss_per_topic"] / 1e3:.1f} KB; /dev/shm/topic '
            f'{point["shm_per_topic"] / 1e3:.1f} KB; {point["groups"]} groups; '
            f'{point["broadcasts"]} other messages in the latency window',
            flush=True,
        )
    return {'points': points}


def rp_pct(samples: list[float], q: float) -> float:
    import _report as rp

    return rp.percentile(samples, q) if samples else math.nan


def _rate_label(rate: float) -> str:
    return 'max' if rate >= MAX_RATE else f'{rate:,.0f}/s'


def _line(kind: str, g: dict[str, Any]) -> str:
    s = f'{kind} pub {g["published"]:,.0f}/s cpu {g["prod_cpu"] * 100:.0f}%'
    if kind != 'sim':
        s += (
            f' deliv {min(g["delivered"]):,.0f}/s p50 {g["p50"] * 1e3:.2f} ms '
            f'p99 {g["p99"] * 1e3:.2f} ms gaps {g["gaps"]}'
        )
    if kind != 'sim':
        s += f' (trial: gaps {g["gaps_all"]} local {g["local_dropped"]})'
    if kind == 'feedd':
        s += (
            f' drop {g["d_dropped"]} (trial {g["dropped_all"]}) q/msg {g["q_per_msg"]:.1f}'
            f' setup {g["setup"]:.1f}s'
        )
    return s


# --- reporting --------------------------------------------------------------


#: the topics curve's own markers inside the feedd section: a run with
#: ``--only-topics`` rewrites just these, a run with ``--no-topics`` keeps them
TOPICS_KEY = 'feedd-topics'
TOPICS_START, TOPICS_END = (
    f'<!-- bench:{TOPICS_KEY}:start -->',
    f'<!-- bench:{TOPICS_KEY}:end -->',
)


def _topics_block_in_doc() -> str:
    """The topics curve's block as docs/benchmarks.md has it now ('' if none)."""
    import _report as rp

    if not rp.DOC.exists():
        return ''
    text = rp.DOC.read_text()
    i, j = text.find(TOPICS_START), text.find(TOPICS_END)
    return text[i : j + len(TOPICS_END)] if 0 <= i < j else ''


def topics_report(res: dict[str, Any], cfg: argparse.Namespace) -> str:
    """The topics curve as markdown (a table, the targets, a plot)."""
    import _plots
    import _report as rp

    import tractor_sampler

    pct = rp.percentile
    pts = res['points']
    h = [
        'topics',
        'open, s (ms per topic)',
        'CPU to open, ms per topic: daemon / samplerd / client',
        'step p50 / p99, N topics',
        'step p50 / p99, one buffer',
        'p99 ratio',
        'fds: daemon / samplerd / client (on /dev/shm)',
        'daemon RSS per topic',
        '/dev/shm per topic',
        'groups',
    ]
    rows = []
    for q in pts:
        n = q['n']
        l50, l99 = pct(q['lat'], 50), pct(q['lat'], 99)
        b50, b99 = pct(q['base'], 50), pct(q['base'], 99)
        fd = ' / '.join(
            f'{q[k]["fds"]} ({q[k]["shm_fds"]})'
            for k in ('daemon', 'samplerd', 'client')
        )
        rows.append(
            [
                f'{n:,}',
                f'{q["open_s"]:.2f} ({q["open_s"] / n * 1e3:.2f})',
                ' / '.join(
                    f'{q["open_cpu"][k] / n * 1e3:.2f}'
                    for k in ('daemon', 'samplerd', 'client')
                )
                if n >= 100
                else '–',
                f'{l50 * 1e3:.2f} / {l99 * 1e3:.2f} ms',
                f'{b50 * 1e3:.2f} / {b99 * 1e3:.2f} ms',
                f'{l99 / b99:.2f}×' if b99 > 0 else '–',
                fd,
                f'{q["rss_per_topic"] / 1e3:.1f} KB' if n >= 100 else '–',
                f'{q["shm_per_topic"] / 1e3:.1f} KB',
                str(q['groups']),
            ]
        )
    big = max(pts, key=lambda q: q['n'])
    n = big['n']
    l99, b99 = pct(big['lat'], 99), pct(big['base'], 99)
    rss = big['rss_per_topic']

    def met(ok: bool) -> str:
        return 'met' if ok else '**not met**'

    oc = big['open_cpu']
    targets = [
        f'{n:,} topics open in {big["open_s"]:.1f} s (target ≤ 10 s at 10,000: '
        f'{met(n >= 10_000 and big["open_s"] <= 10)}); CPU spent opening them: '
        f'{oc["daemon"]:.1f} s in the daemon, {oc["samplerd"]:.1f} s in samplerd, '
        f'{oc["client"]:.1f} s in the client',
        f'samplerd step → subscriber p99 {l99 * 1e3:.2f} ms with {n:,} topics '
        f'registered, {l99 / b99:.2f}× one buffer in the same run (target < 5 ms and '
        f'≤ 2×: {met(l99 < 0.005 and l99 <= 2 * b99)})',
        f"the daemon's anonymous RSS per topic {rss / 1e3:.1f} KB (target ≤ 50 KB: "
        f'{met(rss <= 50e3)})',
        f'/dev/shm touched per topic {big["shm_per_topic"] / 1e3:.1f} KB at {n:,} '
        'topics: two pages (the seeded row of each of its two buffers: a topic '
        'touches the pages of the rows it uses, not its capacity) plus its share '
        "of the groups' control segments (64 KB per group of 4096 slots, which "
        'is what the figure at 1 topic is)',
        'file descriptors per process stay flat from 1 topic to '
        f'{n:,}: {big["daemon"]["fds"]} in the daemon, {big["samplerd"]["fds"]} in '
        f'samplerd, {big["client"]["fds"]} in the client (a group is 2 segments; '
        f'{big["groups"]} groups at {n:,} topics with {cfg.group_members} slots each)',
        f'one registration with samplerd per daemon '
        f'({big["registrations"]} at {n:,} topics)',
    ]
    load = res.get('load', ())
    note = (
        f'Per topic count a fresh service root; {cfg.steps} 1 s steps per latency '
        'window, measured at a subscriber of samplerd (this process) that '
        'registered one buffer of its own: first alone (the baseline, "one '
        'buffer"), then with the topics registered too (after the client left '
        'them: they run on in the daemon, registered, while no quote of theirs '
        'reaches this process).  CPU to open is user + system time of each '
        'process over the open (psutil; 10 ms resolution, so "–" below 100 '
        'topics).  The topics are sim '
        f'symbols opened by one `open_market_feed` call (`tick_rate` '
        f'{cfg.topic_rate:g}, `anchored=False`: the sim starts at its start price '
        'instead of computing its history path per symbol, and no history bars: '
        'the sim computes 3 ms of history per topic, which would be the '
        "backend's cost, not the daemon's), buffers "
        f'{ {p: r for p, (r, _) in eps_buffers().items()} } rows.  RSS is the '
        "daemon's RssAnon (private anonymous memory) after the topics opened "
        'less before, per topic; /dev/shm is the blocks tmpfs allocated to the '
        'groups, per topic.  The machine was shared with other test runs and '
        'loaded'
        + (
            f' (load average {load[0]:.1f} at the start, {load[1]:.1f} at the end)'
            if len(load) == 2
            else ''
        )
        + ": latency figures are noisy.  samplerd's own step of 10,000 buffers "
        'takes about a millisecond (in process, the stepping figures of the '
        'sampler section); at 10,000 topics the rest of the step latency is the '
        "daemon's 10,000 sim streams (still running) and the other processes "
        'sharing two cores.'
        + (
            f"  Other messages on the subscriber's stream during the latency "
            f'windows (Backfill corrections): {big.get("broadcasts", 0)} at '
            f'{big["n"]:,} topics.'
        )
    )
    plot = _plots.save_curves(
        'feedd_topics',
        [q['n'] for q in pts],
        {
            'open, ms per topic': [q['open_s'] / q['n'] * 1e3 for q in pts],
            'step p99, ms (N topics)': [pct(q['lat'], 99) * 1e3 for q in pts],
            'step p99, ms (one buffer)': [pct(q['base'], 99) * 1e3 for q in pts],
            'daemon RSS per topic, KB': [
                max(q['rss_per_topic'], 1.0) / 1e3 if q['n'] >= 100 else math.nan
                for q in pts
            ],
            'fds in the daemon': [q['daemon']['fds'] for q in pts],
        },
        title='One feed daemon, 1 to 10,000 topics',
        xlabel='topics on the daemon',
        ylabel='(unit in the legend)',
        styles={'step p99, ms (one buffer)': 'k--'},
        note=f'tractor-sampler {tractor_sampler.__version__}; machine shared and loaded',
    )
    parts = [
        '### Topics per feed daemon',
        rp.md_table(h, rows),
        '\n'.join(f'- {t}' for t in targets),
    ]
    if plot is not None:
        parts.append('![topics per feed daemon](img/feedd_topics.png)')
    parts.append(rp.wrap(note))
    print()
    print(rp.text_table(h, rows))
    print()
    print('\n'.join(targets))
    if plot is None:
        print('  matplotlib is not installed: docs/img/feedd_topics.png not redrawn')
    return '\n\n'.join(parts)


def eps_buffers() -> dict[float, tuple[int, int]]:
    import _feedd_eps as eps

    return eps.TOPIC_BUFFERS


def report(res: dict[str, Any], cfg: argparse.Namespace, write: bool) -> None:
    import _report as rp  # here, not at import: subactors re-run this file

    import tractor_sampler

    med = rp.median
    T = res['trials']

    def m(kind: str, rate: float, key: str) -> float:
        return med([g[key] for g in T[(kind, rate)]])

    def msec(v: float) -> str:
        return f'{v * 1e3:.2f} ms'

    label = {
        'feedd': 'feedd (`open_feed`)',
        'raw': 'raw tractor stream',
        'sim': 'sim alone',
    }

    # 1. latency and throughput
    h1 = [
        '`tick_rate` asked, quotes/s',
        'path',
        'published / generated quotes/s',
        'delivered quotes/s per subscriber (slowest; min – max)',
        '÷ raw',
        'lost: window; whole trial (seq gaps / daemon dropped)',
        'quotes per message',
        'latency p50',
        'p99',
        'max',
    ]
    rows1 = []
    for rate in cfg.rates:
        base = med([min(g['delivered']) for g in T[('raw', rate)]])
        for kind in ('feedd', 'raw'):
            gs = T[(kind, rate)]
            slow = med([min(g['delivered']) for g in gs])
            gaps = sum(g['gaps'] for g in gs)
            gaps_all = sum(g['gaps_all'] for g in gs)
            local = sum(g['local_dropped'] for g in gs)
            if kind == 'feedd':
                lost = (
                    f'{gaps} / {sum(g["d_dropped"] for g in gs)}; '
                    f'{gaps_all} / {sum(g["dropped_all"] for g in gs)}'
                )
                if local:
                    lost += f" ({local} in the subscribers' own buffers)"
                qpm = f'{m(kind, rate, "q_per_msg"):.1f}'
            else:
                lost = f'{gaps} / —; {gaps_all} / —'
                qpm = '1 (by design)'
            rows1.append(
                [
                    _rate_label(rate) if kind == 'feedd' else '',
                    label[kind],
                    f'{m(kind, rate, "published"):,.0f}',
                    f'{slow:,.0f} ({min(min(g["delivered"]) for g in gs):,.0f} – '
                    f'{max(min(g["delivered"]) for g in gs):,.0f})',
                    '1.00×' if kind == 'raw' else f'{slow / base:.2f}×',
                    lost,
                    qpm,
                    msec(m(kind, rate, 'p50')),
                    msec(m(kind, rate, 'p99')),
                    msec(max(g['max'] for g in gs)),
                ]
            )

    # 2. CPU
    h2 = [
        '`tick_rate` asked, quotes/s',
        'process',
        'quotes/s',
        'CPU, % of a core',
        'µs per quote',
        '… minus the sim alone',
        '4 subscribers: CPU %',
        'µs per delivered quote',
        'machine busy, cores of 2',
        '… of it not this benchmark',
    ]
    rows2 = []
    for rate in cfg.rates:
        sim_us = m('sim', rate, 'prod_us')
        for kind in KINDS:
            us = m(kind, rate, 'prod_us')
            rows2.append(
                [
                    _rate_label(rate) if kind == 'feedd' else '',
                    {
                        'feedd': 'feedd.sim daemon (sim + bars + feedbus)',
                        'raw': 'raw source (sim + one send per subscriber)',
                        'sim': 'sim alone (baseline of the two above)',
                    }[kind],
                    f'{m(kind, rate, "published"):,.0f}',
                    f'{m(kind, rate, "prod_cpu") * 100:.0f}',
                    f'{us:.1f}',
                    '—' if kind == 'sim' else f'{us - sim_us:.1f}',
                    '—' if kind == 'sim' else f'{m(kind, rate, "subs_cpu") * 100:.0f}',
                    '—' if kind == 'sim' else f'{m(kind, rate, "subs_us"):.1f}',
                    f'{m(kind, rate, "machine"):.2f}',
                    f'{max(m(kind, rate, "others"), 0.0):.2f}',
                ]
            )

    maxr = max(cfg.rates)
    fd = T[('feedd', maxr)]
    trades = {rate: m('feedd', rate, 'trades') for rate in cfg.rates}
    daemon_deliv = {rate: m('feedd', rate, 'd_delivered') for rate in cfg.rates}
    overruns = sum(g['d_overruns'] for rate in cfg.rates for g in T[('feedd', rate)])
    setup = med([g['setup'] for rate in cfg.rates for g in T[('feedd', rate)]])
    nrounds = len(fd)

    notes1 = (
        f'One topic of the sim backend (its `tick_rate` is quotes per second; '
        f'each quote carries 4 ticks, bid / bsize / ask / asize, plus a trade '
        f'tick in one of ten, `trade_prob` 0.1), {NSUBS} subscriber actors, '
        f'unthrottled; '
        f'window of {cfg.secs:g} s after {cfg.warm:g} s of warm-up, {nrounds} '
        f"rounds; medians over rounds (latency: of each round's percentiles, "
        f'pooled over the {NSUBS} subscribers; max: over all rounds).  *max* '
        f'asks the sim for {MAX_RATE:,.0f} quotes/s, so it runs flat out, as fast '
        f"as its consumer lets it.  Published: the daemon's bus sequence delta "
        f'over the window (`feed_info()`, what `Feed.info()` returns); for the '
        f'raw path the quotes its sim generated.  Delivered: quotes arriving in '
        f"the window at the slowest of the {NSUBS} subscribers (the daemon's own "
        f'count agrees: '
        + ', '.join(f'{daemon_deliv[r]:,.0f}' for r in cfg.rates)
        + ' quotes/s per subscriber).  Lost, summed over the subscribers and '
        'rounds: sequence gaps the subscribers saw / quotes the daemon dropped '
        'for them (its per-subscriber `dropped`, outbox overruns), first inside '
        'the window (gaps by arrival time, drops from `feed_info()` at the '
        "window's ends), then over the whole trial, from subscribing to leaving "
        f"(drops from each subscriber's own `stats()`; {overruns} overrun events "
        'inside the windows).  The '
        f'daemon wrote '
        + ', '.join(f'{trades[r]:,.0f}' for r in cfg.rates)
        + " trades/s into the topic's 1 s and 60 s bars.  Latency: "
        "`time.time()` in the subscriber's task when it takes the quote minus "
        "the quote's `time`, which the sim stamps when it makes the quote (one "
        'system clock).'
    )
    notes2 = (
        'CPU: user + system time of each process (`psutil`), sampled by the '
        "root at the window's ends, per second of wall time; µs per quote = "
        'that CPU time per quote published (generated); *minus the sim alone*: '
        'the same figure for the sim stream run alone in the raw source actor at '
        "the same asked rate, consuming nothing (the sim runs inside the daemon's "
        "process and its cost is part of the daemon's).  Subscribers: the "
        f'{NSUBS} summed; µs per delivered quote: per quote delivered to one '
        'subscriber.  Machine busy: '
        'system-wide non-idle time, in cores; *not this benchmark*: that minus '
        "the CPU time of this benchmark's processes (root, samplerd, daemon, "
        'raw source, subscribers): other programs on the shared machine, and '
        'kernel work not charged to a process.'
    )
    method = (
        'The root is a service root (`open_service_root`, free port); for '
        'each feedd trial its manager spawns `feedd.sim` with small buffers '
        '(`{1.0: (4096, 0), 60.0: (512, 0)}`), each subscriber opens '
        "`tractor_sampler.open_market_feed(['AAA'], backend='sim', config={'tick_rate': "
        'N}, ...)`, and after the trial the daemon is stopped (a topic runs on '
        'after its last client leaves and keeps its config; spawn to all '
        f'{NSUBS} subscribed took '
        f'{setup:.2f} s, median).  The raw baseline: one actor runs the same '
        "`tractor_sampler.backends.sim.stream_quotes(['AAA'], tick_rate=N)` and "
        'sends each quote dict (with `topic` and `seq` added) with `await '
        'stream.send(d)` to each subscriber in turn, over plain '
        '`portal.open_context()` + `ctx.open_stream()` streams (default '
        'backpressure), then an end marker.  The raw source and the '
        f'{NSUBS} subscriber actors are spawned once and reused.  The three '
        'kinds (feedd, raw, sim alone) run one after another at each rate, their '
        'order rotated every round, after one unrecorded warm-up round.'
    )
    machine = rp.machine_line(
        tractor=compat.TRACTOR_VERSION,
        trio=trio.__version__,
        **{'tractor-sampler': tractor_sampler.__version__},
    )
    reading = _reading(T, cfg)
    body = '\n\n'.join(
        [
            '### Latency and throughput, 4 subscribers',
            rp.md_table(h1, rows1),
            rp.wrap(notes1),
            '### CPU',
            rp.md_table(h2, rows2),
            rp.wrap(notes2),
            '### Reading',
            reading,
            rp.wrap(method),
            rp.wrap(machine),
        ]
    )
    # the topics curve's block: this run's, or the one the doc has
    topics = res.get('topics_md')
    block = (
        f'{TOPICS_START}\n{topics}\n{TOPICS_END}'
        if topics is not None
        else _topics_block_in_doc()
    )
    if block:
        body += '\n\n' + block
    print()
    print(rp.text_table(h1, rows1))
    print()
    print(rp.text_table(h2, rows2))
    print()
    print(reading)
    print()
    print(machine)
    if write:
        path = rp.write_section('feedd', 'feed daemon (feedd)', body)
        print(f'figures written to {path}')


def _loss_text(T: dict[Any, list[dict[str, Any]]], rates: list[float]) -> str:
    """What the daemon lost at ``rates``, in a sentence."""
    gs = [g for r in rates for g in T[('feedd', r)]]
    gaps = sum(g['gaps_all'] for g in gs)
    dropped = sum(g['dropped_all'] for g in gs)
    local = sum(g['local_dropped'] for g in gs)
    seen = sum(g['quotes_all'] for g in gs)
    if gaps == dropped == local == 0:
        return (
            f'No quote was lost in these {len(gs)} trials (no sequence gap, no drop).'
        )
    if gaps == dropped and not local:
        return (
            f'{gaps:,} quotes were lost in these {len(gs)} trials '
            f"({gaps / max(seen + gaps, 1):.2%} of the subscribers' quotes), each "
            "one dropped by the daemon from a lagging subscriber's full outbox (below)."
        )
    return (
        f'In these {len(gs)} trials the subscribers saw {gaps:,} sequence gaps '
        f'({gaps / max(seen + gaps, 1):.2%} of their quotes); the daemon counted '
        f'{dropped:,} drops from full outboxes, the subscribers {local:,} from '
        'their own buffers.'
    )


def _reading(T: dict[Any, list[dict[str, Any]]], cfg: argparse.Namespace) -> str:
    """A short reading of the figures (its numbers filled in from them)."""
    import _report as rp

    med = rp.median

    def m(kind: str, rate: float, key: str) -> float:
        return med([g[key] for g in T[(kind, rate)]])

    def slow(kind: str, rate: float) -> float:
        return med([min(g['delivered']) for g in T[(kind, rate)]])

    rates = sorted(cfg.rates)
    lo, hi = rates[0], rates[-1]
    mid = [r for r in rates if r not in (lo, hi)]
    sat = [r for r in rates if m('feedd', r, 'published') < 0.95 * min(r, MAX_RATE)]
    paras = []

    # 1. the low rate
    paras.append(
        f'At {lo:,.0f} quotes/s both paths keep up: the daemon publishes '
        f'{m("feedd", lo, "published"):,.0f} quotes/s and the slowest subscriber '
        f'gets {slow("feedd", lo):,.0f} (raw: {slow("raw", lo):,.0f}), latency '
        f'p50 / p99 {m("feedd", lo, "p50") * 1e3:.2f} / {m("feedd", lo, "p99") * 1e3:.2f} ms '
        f'against {m("raw", lo, "p50") * 1e3:.2f} / {m("raw", lo, "p99") * 1e3:.2f} ms '
        f'raw.  With quotes 1 ms apart the daemon sends '
        f'{m("feedd", lo, "q_per_msg"):.1f} quotes per message, i.e. each quote '
        f'alone, so it costs about what the raw stream costs per quote '
        f'({m("feedd", lo, "prod_us"):.0f} against {m("raw", lo, "prod_us"):.0f} µs '
        f"of the producer's CPU, shm writes and feedbus included)."
    )

    # 2. throughput under load
    if sat:
        a = m('feedd', hi, 'prod_us')
        c = m('feedd', hi, 'subs_us')
        per_pub = a + NSUBS * c
        short = [r for r in sat if r < MAX_RATE]
        lead = (
            'Neither path reaches '
            + ' or '.join(f'{r:,.0f}' for r in short)
            + ' quotes/s on this machine, and flat out gets no further: the daemon '
            if short
            else 'Flat out, the daemon '
        )
        paras.append(
            lead
            + 'published '
            + ' and '.join(
                f'{m("feedd", r, "published"):,.0f} ({"flat out" if r >= MAX_RATE else f"{r:,.0f} asked"})'
                for r in sat
            )
            + ' quotes/s, writing '
            + ' and '.join(f'{m("feedd", r, "trades"):,.0f}' for r in sat)
            + ' trades/s into the bars, and its slowest subscriber got '
            + ' and '.join(f'{slow("feedd", r):,.0f}' for r in sat)
            + '; the raw stream delivered '
            + ' and '.join(f'{slow("raw", r):,.0f}' for r in sat)
            + ' (feedd ÷ raw: '
            + ', '.join(f'{slow("feedd", r) / slow("raw", r):.2f}×' for r in sat)
            + ').  '
            + _loss_text(T, sat)
            + "  The limit is the machine's 2 cores, not one process: "
            f'{m("feedd", hi, "machine"):.2f} cores were busy flat out, the daemon '
            f'had {m("feedd", hi, "prod_cpu") * 100:.0f}% of one and the {NSUBS} '
            f'subscribers {m("feedd", hi, "subs_cpu") * 100:.0f}%.  Per published '
            f'quote the daemon spends {a:.0f} µs and each subscriber {c:.0f} µs, '
            f'~{per_pub:.0f} µs in all: 2 cores run out near '
            f'{2e6 / per_pub:,.0f} quotes/s.'
        )

    # 3. the bottleneck
    qpm = m('feedd', hi, 'q_per_msg')
    net = m('feedd', hi, 'prod_us') - m('sim', hi, 'prod_us')
    paras.append(
        'What those microseconds buy is IPC messages: the daemon sends '
        + ', '.join(f'{m("feedd", r, "q_per_msg"):.1f}' for r in rates)
        + ' quotes per message at the three rates.  Quotes that arrive together '
        'go out together: the sim hands out the quotes already due back to back '
        '(up to `MAX_BURST` = 64 between checkpoints, as a socket read hands a '
        'real backend several messages per wake-up), `sample_and_broadcast` '
        "publishes them, and each subscriber's sender task sends all its outbox "
        "holds in one message (feedbus's batching).  At 1,000 quotes/s they are "
        '1 ms apart and go one by one; the more arrive per wake-up, the fewer '
        f'messages per quote: flat out each quote costs the daemon '
        f'{4 / max(qpm, 1e-9):.2f} sends (~{net:.0f} µs beyond the sim) and each '
        f'subscriber about {m("feedd", hi, "subs_us"):.0f} µs, against '
        f'{m("raw", hi, "prod_us") - m("sim", hi, "prod_us"):.0f} and '
        f"{m('raw', hi, 'subs_us'):.0f} µs for raw tractor's one message per "
        'quote per subscriber.'
    )

    # 4. latency
    p99f = [m('feedd', r, 'p99') * 1e3 for r in rates]
    p99r = [m('raw', r, 'p99') * 1e3 for r in rates]
    text = (
        'Latency p99: feedd '
        + ' / '.join(f'{v:.1f}' for v in p99f)
        + ' ms, raw '
        + ' / '.join(f'{v:.1f}' for v in p99r)
        + f' ms at {" / ".join(_rate_label(r) for r in rates)}; p50 stays under '
        f'{max(m(k, r, "p50") for k in ("feedd", "raw") for r in rates) * 1e3:.1f} '
        'ms everywhere; maxima over all rounds: feedd '
        + ' / '.join(
            f'{max(g["max"] for g in T[("feedd", r)]) * 1e3:.0f}' for r in rates
        )
        + ' ms, raw '
        + ' / '.join(f'{max(g["max"] for g in T[("raw", r)]) * 1e3:.0f}' for r in rates)
        + ' ms.  '
    )
    sat_idx = [i for i, r in enumerate(rates) if r > lo]
    if any(p99f[i] > 1.5 * p99r[i] for i in sat_idx):
        text += (
            "Under saturation feedd's tail is the longer one: its sim is held back "
            'by nothing but CPU, so its quotes wait in the outboxes of subscribers '
            "that are momentarily starved of CPU, where raw tractor's sim waits "
            'instead (below).  '
        )
    elif any(p99r[i] > 1.5 * p99f[i] for i in sat_idx):
        text += "Under saturation feedd's p99 is no longer than raw tractor's.  "
    elif sat_idx:
        text += 'Under saturation the two tails are alike.  '
    bad = [
        (r, g)
        for r in rates
        for g in T[('feedd', r)]
        if g['dropped_all'] or g['gaps_all']
    ]
    n_all = sum(len(T[('feedd', r)]) for r in rates)
    if bad:
        r, g = max(bad, key=lambda x: x[1]['dropped_all'])
        text += (
            f"The tail of feedd's maxima is the loss above: in {len(bad)} of {n_all} "
            f'trials a subscriber fell behind (in the worst, at '
            f'{_rate_label(r)}, the slowest got {min(g["delivered"]):,.0f} quotes/s '
            f'of {g["published"]:,.0f} published, latency up to {g["max"] * 1e3:.0f} '
            'ms): its quotes queued in its outbox until that overflowed (1024 '
            f'quotes, ~{1024 / max(g["published"], 1) * 1e3:.0f} ms at that rate) '
            'and the daemon dropped the oldest, as designed.  '
        )
    else:
        text += (
            f'No subscriber fell far enough behind to lose a quote in {n_all} trials.  '
        )
    text += (
        'Raw tractor cannot drop: its flow control makes its sim wait for the '
        'slowest subscriber, so under load it simply makes fewer quotes (the '
        "sim's schedule skips ahead once it is a second behind), and a slow "
        'subscriber slows all four.'
    )
    paras.append(text)

    # 5. the sim's share, and the machine
    others = [max(m(k, r, 'others'), 0.0) for k in KINDS for r in rates]
    others_lo, others_hi = min(others), max(others)
    paras.append(
        f'The sim itself costs {m("sim", hi, "prod_us"):.1f} µs per quote flat out '
        f'(alone it makes {m("sim", hi, "published"):,.0f} quotes/s on one core), '
        + ', '.join(
            f'{m("sim", r, "prod_us"):.1f} µs at {r:,.0f}/s' for r in [*mid[::-1], lo]
        )
        + ' (mostly waking up once a millisecond); inside the daemon that is '
        f'{m("sim", hi, "prod_us") / m("feedd", hi, "prod_us") * 100:.0f}% of its '
        'CPU per quote flat out, so the sim is not what limits it.  The machine '
        'has 2 noisy cores shared with other programs (during the trials they '
        f'took {others_lo:.2f} to {others_hi:.2f} of the 2 cores: medians per '
        'row of the last CPU column), '
        "the sim runs in the daemon's process and the subscribers on the same "
        "cores: take the absolute rates as this machine's; the ratios to raw "
        'tractor and the quotes per message carry over better.'
    )
    return '\n\n'.join(rp.wrap(p) for p in paras)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument(
        '--secs', type=float, default=2.5, help='measurement window per trial, s'
    )
    p.add_argument(
        '--warm', type=float, default=0.5, help='warm-up before each window, s'
    )
    p.add_argument(
        '--warm-secs', type=float, default=1.0, help='window of the warm-up round, s'
    )
    p.add_argument('--rounds', type=int, default=4, help='recorded rounds')
    p.add_argument(
        '--rates',
        type=lambda v: [float(x) for x in v.split(',')],
        default=[1_000.0, 10_000.0, MAX_RATE],
        help=f'asked quotes/s (default 1000,10000,{MAX_RATE:.0f}: flat out)',
    )
    p.add_argument(
        '--quick',
        action='store_true',
        help="short windows, one round; print, don't write docs",
    )
    p.add_argument(
        '--write',
        action=argparse.BooleanOptionalAction,
        default=None,
        help='write docs/benchmarks.md (default: yes, unless --quick)',
    )
    p.add_argument(
        '--topics',
        type=lambda v: [int(x) for x in v.split(',')],
        default=[1, 10, 100, 1000, 10_000],
        help='the topics curve: topic counts (default 1,10,100,1000,10000)',
    )
    p.add_argument(
        '--topic-rate',
        type=float,
        default=0.05,
        help="the topics curve: each topic's sim tick_rate (quotes/s)",
    )
    p.add_argument(
        '--steps',
        type=int,
        default=15,
        help='the topics curve: steps per latency window',
    )
    p.add_argument(
        '--group-members',
        type=int,
        default=4096,
        help="the topics curve: the feed daemon's slots per buffer group",
    )
    p.add_argument(
        '--only-topics',
        action='store_true',
        help='run the topics curve alone (rewrites only its figures)',
    )
    p.add_argument(
        '--no-topics', action='store_true', help='leave the topics curve out'
    )
    # nox passes the same posargs to every benchmark: tolerate other ones' flags
    cfg, unknown = p.parse_known_args(argv)
    if unknown:
        print(f'warning: ignoring unknown arguments {unknown}', file=sys.stderr)
    if cfg.quick:
        cfg.secs, cfg.warm, cfg.warm_secs, cfg.rounds = 1.0, 0.4, 0.5, 1
        cfg.topics = [n for n in cfg.topics if n <= 1000] or [1]
        cfg.steps = min(cfg.steps, 5)
    write = (not cfg.quick) if cfg.write is None else cfg.write
    importable_by_subactors(HERE)

    print(
        f'bench_feedd: rates {", ".join(_rate_label(r) for r in cfg.rates)}, '
        f'{NSUBS} subscribers, {cfg.secs:g} s windows, {cfg.rounds} rounds',
        flush=True,
    )
    t0 = time.perf_counter()
    topics_md = None
    if not cfg.no_topics:
        print(
            f'bench_feedd: topics per feed daemon {cfg.topics}, '
            f'{cfg.group_members} slots per group',
            flush=True,
        )
        load0 = os.getloadavg()[0]
        tres = trio.run(run_topics, cfg)
        tres['load'] = (load0, os.getloadavg()[0])
        topics_md = topics_report(tres, cfg)
        if cfg.only_topics:
            if write:
                import _report as rp

                if _topics_block_in_doc():
                    path = rp.write_section(
                        TOPICS_KEY, 'topics per feed daemon', topics_md
                    )
                else:  # first time: inside the feedd section
                    text = rp.DOC.read_text()
                    end = '<!-- bench:feedd:end -->'
                    text = text.replace(
                        end, f'{TOPICS_START}\n{topics_md}\n{TOPICS_END}\n{end}', 1
                    )
                    rp.DOC.write_text(text)
                    path = rp.DOC
                print(f'figures written to {path}')
            print(f'bench_feedd took {time.perf_counter() - t0:.1f} s')
            return 0
    res = trio.run(run, cfg)
    res['topics_md'] = topics_md
    report(res, cfg, write)
    print(f'bench_feedd took {time.perf_counter() - t0:.1f} s')
    return 0


if __name__ == '__main__':
    sys.exit(main())
