"""Benchmark: local subscribers through the shared-memory quote ring
against the TCP stream path, 1 -> 64 subscribers.

A producer actor publishes N 20-field quotes on one topic; S local
subscribers (feeds spread over up to 4 subscriber actors, as many feeds in
each) read them, either through the producer's quote ring (``ring=True``,
the default on one host) or through their streams (``ring=False``).  Two
phases per (S, path), the paths interleaved:

1. flat out: the producer publishes as fast as it can (a checkpoint every
   64 quotes); metrics: quotes delivered per second per subscriber (from
   the first publish to its last arrival; the TCP path drops the oldest
   from a full outbox, the ring counts gaps: both are reported), and the
   producer's CPU time per published quote (``time.process_time`` of its
   process from the first publish until every subscriber has the last
   quote, so its sends to TCP subscribers count, less its idle CPU with
   the same subscribers connected, read over ``IDLE_S`` before);
2. paced at ``--rate`` quotes/s: the latency from publish to arrival
   (p50 / p99 over every quote of every subscriber; wall clocks of one
   host).

Goals: producer CPU per quote within 1.2x between 1 and 64 ring
subscribers; per-subscriber delivered rate >= 2x the TCP path's; latency
p99 <= the TCP path's.  This machine's limit, measured in the same run:
msgspec encode + decode of the same Quote in one process (quotes/s); every
figure is also given as a fraction of it.

The endpoints live in this file (subactors import it as ``bench_ring``);
the ``__main__`` guard is required.

    python benchmarks/bench_ring.py            # full size, writes docs
    python benchmarks/bench_ring.py --quick    # small, prints only
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import trio
import trio.lowlevel

warnings.filterwarnings('ignore', category=trio.TrioDeprecationWarning)

from tractor_services import compat  # noqa: E402
from tractor_services.testing import free_port, importable_by_subactors  # noqa: E402

HERE = Path(__file__).resolve().parent
PRODUCER = 'ring_prod'
PATHS = ('ring', 'tcp')
CPU_GOAL = 1.2
RATE_GOAL = 2.0
MAX_SUB_ACTORS = 4
#: seconds of nothing published over which the producer's idle CPU is read
IDLE_S = 1.0


def _fields(i: int) -> dict[str, Any]:
    f: dict[str, Any] = {'i': i, 't': time.time()}
    for k in range(18):
        f[f'f{k}'] = 100.0 + k + i * 1e-3
    return f


# --- in the producer -------------------------------------------------------------


async def prod_setup(topic: str) -> int:
    from feedbus import get_feed_bus

    get_feed_bus().add_topic(topic)
    return os.getpid()


async def prod_subs(topic: str) -> int:
    from feedbus import get_feed_bus

    return len(get_feed_bus().get_subs(topic))


async def prod_total_subs() -> int:
    from feedbus import get_feed_bus

    return sum(len(s) for _, s in get_feed_bus().subs_items())


async def prod_cpu() -> float:
    """The producer process's CPU time so far."""
    return time.process_time()


async def prod_publish(topic: str, n: int, rate: float) -> dict[str, float]:
    """Publish ``n`` quotes (flat out when ``rate`` is 0); the process's
    CPU time and the wall time it took."""
    from feedbus import get_feed_bus

    bus = get_feed_bus()
    tick = [{'type': 'bid', 'price': 1.0, 'size': 1.0}]
    # flat out, the quotes' fields are made before the clock starts: the
    # subscribers, not the making of test data, must bound the rate
    made = [_fields(i) for i in range(n)] if rate <= 0 else []
    await trio.lowlevel.checkpoint()
    t0, c0 = time.time(), time.process_time()
    if rate <= 0:
        for i in range(n):
            bus.publish(topic, made[i], tick)
            if i % 64 == 63:
                await trio.lowlevel.checkpoint()
    else:
        start = trio.current_time()
        i = 0
        while i < n:
            due = min(n, int((trio.current_time() - start) * rate) + 1)
            while i < due:
                bus.publish(topic, _fields(i), tick)
                i += 1
            await trio.sleep(0.001)
    return {'start': t0, 'cpu': time.process_time() - c0, 'wall': time.time() - t0}


# --- in a subscriber actor ------------------------------------------------------------


_state: dict[str, Any] = {'done': 0, 'release': trio.Event()}


async def sub_done() -> int:
    """(in a subscriber actor) Its feeds that have the last quote."""
    return _state['done']


async def sub_release() -> None:
    """(in a subscriber actor) Let its feeds end."""
    _state['release'].set()


async def sub_read(
    reg: list, topic: str, feeds: int, ring: bool, n: int, idle_s: float = 3.0
) -> list[dict[str, Any]]:
    """Open ``feeds`` feeds of ``topic`` and read until the last quote (or
    ``idle_s`` of silence); per feed: quotes, last arrival, latencies."""
    from feedbus import open_feed

    out: list[dict[str, Any]] = []
    _state['done'] = 0
    _state['release'] = trio.Event()
    async with compat.find_actor(PRODUCER, tuple(reg)) as portal:

        async def one(task_status=trio.TASK_STATUS_IGNORED) -> None:
            async with open_feed(portal, [topic], ring=ring) as feed:
                task_status.started()
                got = 0
                last = 0.0
                lat: list[float] = []
                while True:
                    q = None
                    with trio.move_on_after(idle_s):
                        q = await feed.receive()
                    if q is None or not hasattr(q, 'fields'):
                        break
                    now = time.time()
                    got += 1
                    last = now
                    lat.append(now - q.fields['t'])
                    if q.fields['i'] == n - 1:
                        break
                _state['done'] += 1
                await _state['release'].wait()  # the producer's CPU is read first
                st = await feed.stats()
                out.append(
                    {
                        'got': got,
                        'last': last,
                        'lat': lat,
                        'ring': feed.ring,
                        'gaps': st.gaps,
                        'dropped': st.dropped,
                    }
                )

        async with trio.open_nursery() as tn:
            for _ in range(feeds):
                await tn.start(one)
    return out


# --- the run ------------------------------------------------------------------------


def machine_limit(reps: int = 50_000) -> float:
    """msgspec encode + decode of one Quote in this process, per second."""
    import msgspec

    from feedbus import Quote

    enc = msgspec.msgpack.Encoder()
    dec = msgspec.msgpack.Decoder(Quote)
    q = Quote(
        topic='q', seq=1, fields=_fields(1), ticks=[{'type': 'bid', 'price': 1.0}]
    )
    t0 = time.perf_counter()
    for _ in range(reps):
        dec.decode(enc.encode(q))
    return reps / (time.perf_counter() - t0)


async def phase(
    prod: Any,
    subs: list[Any],
    reg: tuple,
    topic: str,
    s: int,
    path: str,
    n: int,
    rate: float,
) -> dict[str, Any]:
    import bench_ring as me  # the subactors' name for these endpoints

    await prod.run(me.prod_setup, topic=topic)
    k = min(len(subs), s)
    per = [s // k + (1 if i < s % k else 0) for i in range(k)]
    results: list[list[dict]] = [[] for _ in range(k)]
    pub: dict[str, float] = {}
    async with trio.open_nursery() as tn:
        for i in range(k):

            async def read(i: int = i) -> None:
                results[i] = await subs[i].run(
                    me.sub_read,
                    reg=list(reg),
                    topic=topic,
                    feeds=per[i],
                    ring=path == 'ring',
                    n=n,
                )

            tn.start_soon(read)
        with trio.fail_after(120):
            while await prod.run(me.prod_subs, topic=topic) < s:
                await trio.sleep(0.05)
        # the producer's CPU per second with these subscribers and nothing
        # published (its runtime, their watchdogs): not a cost of quotes
        i0, w0 = await prod.run(me.prod_cpu), time.monotonic()
        await trio.sleep(IDLE_S)
        idle_rate = (await prod.run(me.prod_cpu) - i0) / (time.monotonic() - w0)
        c0, w0 = await prod.run(me.prod_cpu), time.monotonic()
        pub = await prod.run(me.prod_publish, topic=topic, n=n, rate=rate)
        # the producer's CPU once every subscriber has the last quote (not
        # counting their stats requests and unsubscribing after)
        with trio.fail_after(600):
            while sum([await sp.run(me.sub_done) for sp in subs[:k]]) < s:
                await trio.sleep(0.05)
        raw = await prod.run(me.prod_cpu) - c0
        pub['cpu_raw'] = raw
        pub['cpu'] = max(raw - idle_rate * (time.monotonic() - w0), 0.0)
        for sp in subs[:k]:
            await sp.run(me.sub_release)
    feeds = [f for r in results for f in r]
    lat = sorted(x for f in feeds for x in f['lat'])
    rates = [f['got'] / max(f['last'] - pub['start'], 1e-9) for f in feeds if f['got']]
    return {
        'cpu_per_q': pub['cpu'] / n,
        'cpu_raw_per_q': pub['cpu_raw'] / n,
        'rate_per_sub': sum(rates) / len(rates) if rates else 0.0,
        'p50': lat[len(lat) // 2] if lat else float('nan'),
        'p99': lat[min(len(lat) - 1, int(len(lat) * 0.99))] if lat else float('nan'),
        'got': sum(f['got'] for f in feeds) / max(len(feeds), 1),
        'gaps': sum(f['gaps'] for f in feeds),
        'dropped': sum(f['dropped'] for f in feeds),
        'ring': all(f['ring'] for f in feeds) if feeds else False,
        'feeds': len(feeds),
        'pub_wall': pub['wall'],
    }


async def run(cfg: argparse.Namespace) -> dict[str, Any]:
    import bench_ring as me

    compat.quiet_runtime_logs()
    reg = ('127.0.0.1', free_port())
    res: dict[str, Any] = {'flat': {}, 'paced': {}}
    res['limit'] = machine_limit()
    print(f'  machine limit: {res["limit"]:,.0f} Quote encode+decode/s', flush=True)
    async with (
        compat.open_root_actor(reg, 'bench_ring'),
        compat.open_actor_nursery() as an,
    ):
        mods = [me.__name__]
        prod = (await compat.start_actor(an, PRODUCER, enable_modules=mods)).portal
        subs = [
            (await compat.start_actor(an, f'ring_sub{i}', enable_modules=mods)).portal
            for i in range(MAX_SUB_ACTORS)
        ]
        await phase(prod, subs, reg, 'warm', 1, 'ring', 200, 0)
        await phase(prod, subs, reg, 'warm2', 1, 'tcp', 200, 0)
        t = 0
        for s in cfg.subs:
            for r in range(cfg.reps):
                order = PATHS if r % 2 == 0 else PATHS[::-1]
                for path in order:
                    t += 1
                    flat = await phase(prod, subs, reg, f'f{t}', s, path, cfg.n, 0)
                    paced = await phase(
                        prod, subs, reg, f'p{t}', s, path, cfg.n_paced, cfg.rate
                    )
                    res['flat'].setdefault((s, path), []).append(flat)
                    res['paced'].setdefault((s, path), []).append(paced)
                    print(
                        f'  S={s:3d} {path:4s}: {flat["rate_per_sub"]:9,.0f} q/s/sub '
                        f'(gaps {flat["gaps"]}, dropped {flat["dropped"]}, '
                        f'published in {flat["pub_wall"]:.2f} s, got {flat["got"]:.0f}), '
                        f'cpu {flat["cpu_per_q"] * 1e6:6.1f} us/q '
                        f'(raw {flat["cpu_raw_per_q"] * 1e6:.1f}), '
                        f'p50 {paced["p50"] * 1e3:6.2f} ms p99 {paced["p99"] * 1e3:6.2f} ms',
                        flush=True,
                    )
        # let the last subscriptions end before their actors go (quiet logs)
        with trio.move_on_after(30):
            while await prod.run(me.prod_total_subs):
                await trio.sleep(0.05)
        await an.cancel()
    return res


def _med(xs: list[float]) -> float:
    xs = sorted(xs)
    return xs[len(xs) // 2]


def report(res: dict[str, Any], cfg: argparse.Namespace, write: bool) -> bool:
    from _plots import save_curves
    from _report import machine_line, md_table, text_table, wrap, write_section

    limit = res['limit']
    rows = []
    fig: dict[str, dict[int, float]] = {}
    for s in cfg.subs:
        for path in PATHS:
            fl, pa = res['flat'][(s, path)], res['paced'][(s, path)]
            d = {
                'rate': _med([x['rate_per_sub'] for x in fl]),
                'cpu': _med([x['cpu_per_q'] for x in fl]),
                'p50': _med([x['p50'] for x in pa]),
                'p99': _med([x['p99'] for x in pa]),
                'gaps': sum(x['gaps'] for x in fl),
                'dropped': sum(x['dropped'] for x in fl),
            }
            for key, v in d.items():
                fig.setdefault(f'{path}:{key}', {})[s] = v
            rows.append(
                (
                    s,
                    path,
                    f'{d["rate"]:,.0f} ({d["rate"] / limit:.1%})',
                    f'{d["cpu"] * 1e6:.1f} ({d["cpu"] * limit:.2f}x)',
                    f'{d["p50"] * 1e3:.2f}',
                    f'{d["p99"] * 1e3:.2f}',
                    f'{d["gaps"]} / {d["dropped"]}',
                )
            )
    headers = (
        'subscribers',
        'path',
        'delivered q/s per sub (of limit)',
        'producer CPU µs/quote (x one encode+decode)',
        'latency p50 ms',
        'latency p99 ms',
        'gaps / dropped (flat out)',
    )
    lo, hi = min(cfg.subs), max(cfg.subs)
    cpu_ratio = fig['ring:cpu'][hi] / fig['ring:cpu'][lo]
    rate_ratio = {
        s: fig['ring:rate'][s] / max(fig['tcp:rate'][s], 1e-9) for s in cfg.subs
    }
    p99_ok = {s: fig['ring:p99'][s] <= fig['tcp:p99'][s] for s in cfg.subs}
    goals = [
        (
            f'producer CPU per quote, {hi} vs {lo} ring subscribers',
            f'{cpu_ratio:.2f}x',
            f'<= {CPU_GOAL}x',
            cpu_ratio <= CPU_GOAL,
        ),
        *(
            (
                f'delivered per subscriber, ring / TCP, {s} subscriber(s)',
                f'{rate_ratio[s]:.2f}x',
                f'>= {RATE_GOAL}x',
                rate_ratio[s] >= RATE_GOAL,
            )
            for s in cfg.subs
        ),
        *(
            (
                f'latency p99, ring vs TCP, {s} subscriber(s)',
                f'{fig["ring:p99"][s] * 1e3:.2f} vs {fig["tcp:p99"][s] * 1e3:.2f} ms',
                '<=',
                p99_ok[s],
            )
            for s in cfg.subs
        ),
    ]
    ok = all(g[3] for g in goals)
    print()
    print(text_table(headers, rows))
    print()
    print(text_table(('goal', 'measured', 'target', 'met'), goals))
    if not write:
        return ok
    plot = save_curves(
        'ring',
        list(cfg.subs),
        {
            'ring: delivered q/s per sub': [fig['ring:rate'][s] for s in cfg.subs],
            'TCP: delivered q/s per sub': [fig['tcp:rate'][s] for s in cfg.subs],
            'limit: Quote encode+decode/s': [limit for _ in cfg.subs],
        },
        title='Local subscribers: ring vs TCP',
        xlabel='local subscribers',
        ylabel='quotes/s per subscriber',
        styles={'limit: Quote encode+decode/s': 'k--'},
        note=f'N={cfg.n} flat out; latency paced at {cfg.rate:g}/s',
    )
    plot_cpu = save_curves(
        'ring_cpu',
        list(cfg.subs),
        {
            'ring: producer CPU per quote': [
                fig['ring:cpu'][s] * 1e6 for s in cfg.subs
            ],
            'TCP: producer CPU per quote': [fig['tcp:cpu'][s] * 1e6 for s in cfg.subs],
            'one Quote encode+decode': [1e6 / limit for _ in cfg.subs],
        },
        title='Producer CPU per published quote: ring vs TCP',
        xlabel='local subscribers',
        ylabel='µs per quote',
        styles={'one Quote encode+decode': 'k--'},
        note=f'N={cfg.n} flat out, net of the idle producer',
    )
    body = '\n\n'.join(
        [
            wrap(
                f'`benchmarks/bench_ring.py`: S local subscribers (feeds over up to '
                f'{MAX_SUB_ACTORS} subscriber actors) of one producer actor, reading '
                'through the shared-memory quote ring or through their TCP streams '
                f'(`ring=False`), interleaved, median of {cfg.reps} round(s). '
                f'Delivered: {cfg.n:,} 20-field quotes published flat out, per '
                'subscriber from the first publish to its last arrival. Latency: '
                f'{cfg.n_paced:,} quotes paced at {cfg.rate:,.0f}/s. '
                f'Machine limit, same run: msgspec encode+decode of the Quote in one '
                f'process, {limit:,.0f}/s; figures in brackets are fractions of it '
                '(CPU: multiples of one encode+decode). Producer CPU: its process '
                'time from the first publish (flat out) until every subscriber has '
                'the last quote (its sends to TCP subscribers included), less what '
                f'it spends idle with the same subscribers ({IDLE_S:g} s measured '
                'before each trial), per quote. '
                'The machine is shared (2 '
                'cores, loaded by other test runs): absolute figures are noisy.'
            ),
            md_table(headers, rows),
            wrap(
                'Reading the figures: the ring costs the producer one write per '
                'quote whatever the number of local subscribers (the CPU column); '
                "the TCP path's cost grows with each. Delivered per subscriber is "
                "bounded on both paths by the subscribers' own Python work per "
                'quote (decode, local queue, the reading task), here spread over '
                f'{MAX_SUB_ACTORS} processes on 2 shared cores: from 16 subscribers '
                'on, the TCP path keeps up only by dropping (its outboxes drop the '
                'oldest: the last column), while the ring delivers every quote (a '
                "feed's backlog stays in the ring; a gap only if it laps). Paced "
                'latency at 16 and 64 subscribers then measures saturated '
                "subscribers, not the transport; the ring's floor with one "
                'subscriber is its polling: a reader spins a few scheduler passes, '
                'then sleeps 1 ms at a time (trio wakes in whole milliseconds) '
                'while quotes keep coming. Flat out, both paths are bounded by '
                'the same subscriber-side work per quote (one msgspec decode of '
                'a 20-field quote, the local queue, the consumer): the ring saves '
                'the socket and the per-message runtime cost, and with several '
                'feeds in one process decodes each quote once for all of them; '
                "the TCP path's delivered rate counts only what its outbox did "
                'not drop.'
            ),
            md_table(
                ('goal', 'measured', 'target', 'met'),
                [(g[0], g[1], g[2], 'yes' if g[3] else '**no**') for g in goals],
            ),
            '![local subscribers: ring vs TCP](img/ring.png)' if plot else '',
            '![producer CPU per quote: ring vs TCP](img/ring_cpu.png)'
            if plot_cpu
            else '',
            machine_line(),
        ]
    )
    write_section('ring', 'Local subscribers: the shared-memory ring', body)
    return ok


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--subs', type=int, nargs='+', default=[1, 4, 16, 64])
    p.add_argument('--n', type=int, default=20_000, help='quotes, flat out')
    p.add_argument('--n-paced', type=int, default=4_000, help='quotes, paced')
    p.add_argument('--rate', type=float, default=200.0, help='paced quotes/s')
    p.add_argument('--reps', type=int, default=3)
    p.add_argument('--quick', action='store_true', help="small sizes; don't write docs")
    p.add_argument(
        '--write',
        action=argparse.BooleanOptionalAction,
        default=None,
        help='write docs/benchmarks.md (default: yes, unless --quick)',
    )
    cfg = p.parse_args(argv)
    if cfg.quick:  # small sizes unless given
        given = set(argv if argv is not None else sys.argv[1:])
        cfg.n = cfg.n if '--n' in given else 3_000
        cfg.n_paced = cfg.n_paced if '--n-paced' in given else 1_000
        cfg.reps = cfg.reps if '--reps' in given else 1
    write = (not cfg.quick) if cfg.write is None else cfg.write
    importable_by_subactors(HERE)
    res = trio.run(run, cfg)
    ok = report(res, cfg, write)
    print('goals met' if ok else 'some goals not met (see above)')
    return 0


if __name__ == '__main__':
    sys.exit(main())
