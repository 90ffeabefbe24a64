"""Benchmark: tractor-sampler's stepping, step delivery and trade writes.

1. Steps in real time, period 1 s, ``--steps`` of them (default 60):
   samplerd runs as a service (``start_service('samplerd',
   partial(samplerd, keep_lateness=N))``, with this folder's
   ``_sampler_eps`` enabled in it), the root registers one buffer with
   ``open_sample_stream(1.0, {1.0: shm})`` and 16 subscriber actors each
   hold ``open_sample_stream(1.0)``.

   - step lateness, read inside samplerd from its schedule's own record,
     against a bare trio timer in another actor of the tree (the raw
     source) waking on the half- and quarter-period points of the same
     periods, its lateness computed the same way;
   - step → subscriber latency: arrival ``time.time()`` minus the step's
     ``time`` (its boundary) in every subscriber, against (a) the raw
     source's timer + fan-out: at each half-period point it sends that
     point's time over a plain tractor stream to each of the 16 subscribers
     in turn (arrival - point: what samplerd does, minus samplerd), and
     (b) raw tractor one-way latency: at each quarter-period point it sends
     ``time.time()`` to one subscriber (arrival - send time).

2. Stepping 1000 buffers: ``StepPlan(list(group)).step(p)`` over an
   ``open_shm_group(1000, size)`` against per-buffer Python loops over
   1000 ``open_shm_array`` buffers, and ``step_many`` over those 1000
   (information).  Every step call timed on its own, kinds interleaved.
   Then the curve, 100 -> 10,000 buffers (``--curve``): the plan against
   the per-buffer loop and this machine's limits measured in the same
   rounds (a contiguous ``np.copyto`` of the same rows, one numpy call),
   as a table and a plot (``docs/img/stepping.png``, with matplotlib).
   ``--only-stepping`` runs this part alone and rewrites only its figures.

3. Trade → row update: ``OHLCWriter.write([tick], now)`` per tick against
   a per-tick field-by-field update of ``shm.array[-1]``, same ticks; and
   the writer with 10 trades per write (information).

The ``__main__`` guard is required: subactors re-run this file.

    python benchmarks/bench_sampler.py            # full size, writes docs
    python benchmarks/bench_sampler.py --quick    # small, prints only
    python benchmarks/bench_sampler.py --only-stepping   # test 2 alone
"""

from __future__ import annotations

import argparse
import gc
import math
import os
import random
import sys
import time
import warnings
from collections import defaultdict
from collections.abc import Callable
from contextlib import AsyncExitStack
from functools import partial
from pathlib import Path
from typing import Any

import trio

warnings.filterwarnings('ignore', category=trio.TrioDeprecationWarning)

import numpy as np  # noqa: E402

from tractor_services import compat  # noqa: E402
from tractor_services.testing import free_port, importable_by_subactors  # noqa: E402

HERE = Path(__file__).resolve().parent
PERIOD = 1.0
NSUBS = 16
NBUFS = 1000
#: an epoch-sized, period-aligned bar time for the microbenchmarks
BAR_T = 1_700_000_000.0
GOAL_LATENESS_P99 = 2e-3
GOAL_DELIVERY_P99 = 10e-3
GOAL_STEP_RATIO = 10.0
GOAL_WRITE_RATIO = 2.0
STEP_TIMEOUT_S = 60.0


# --- 2. stepping 1000 buffers -------------------------------------------------


def _seed(shm: Any, i: int) -> None:
    row = np.zeros(1, dtype=shm.dtype)
    c = 10.0 + i * 0.01
    row['index'], row['time'] = 100, BAR_T
    row['open'] = row['high'] = row['low'] = row['close'] = c
    shm.push(row)


def loop_push(shms: list[Any], p: float, tmp: np.ndarray) -> None:
    """Public API only: read the last row as a tuple, fill a reused 1-row
    array with the new row in one tuple assignment, ``push`` it."""
    for shm in shms:
        idx, t, _o, _h, _l, c, _v = shm.last_row.item()
        tmp[0] = (idx + 1, round(t + p, 6), c, c, c, c, 0.0)
        shm.push(tmp)


def loop_direct(views: list[tuple[np.ndarray, np.ndarray]], p: float) -> None:
    """The raw numpy views of each buffer's rows and window (what
    ``OHLCWriter`` uses): read the last row as a tuple, write the new row
    with one tuple assignment, then bump ``last``."""
    for rows, win in views:
        last = int(win[1])
        idx, t, _o, _h, _l, c, _v = rows[last - 1].item()
        rows[last] = (idx + 1, round(t + p, 6), c, c, c, c, 0.0)
        win[1] = last + 1


def bench_stepping(cfg: argparse.Namespace) -> dict[str, Any]:
    from tractor_sampler import open_shm_array
    from tractor_sampler.shm import StepPlan, open_shm_group, step_many

    size = cfg.batch + 8
    p = PERIOD
    res: dict[str, list[float]] = defaultdict(list)
    with open_shm_group(NBUFS, size, start=0) as group:
        shms = []
        try:
            for _ in range(NBUFS):
                shms.append(open_shm_array(size, start=0))
            for i, shm in enumerate(shms):
                _seed(shm, i)
            for i, m in enumerate(group):
                _seed(m, i)
            plan = StepPlan(list(group))
            tmp = np.zeros(1, dtype=shms[0].dtype)
            views = [(s._rows, s._window) for s in shms]
            kinds: dict[str, Callable[[], object]] = {
                'plan': lambda: plan.step(p),
                'loop_direct': lambda: loop_direct(views, p),
                'loop_push': lambda: loop_push(shms, p, tmp),
                'many': lambda: step_many(shms, p),
            }
            names = list(kinds)
            last_rows: dict[str, list[tuple]] = {}
            for r in range(cfg.rounds + 1):  # round 0: warm-up, not kept
                order = names[r % len(names) :] + names[: r % len(names)]
                for kind in order:
                    fn = kinds[kind]
                    # every kind starts each round from the seeded row
                    if kind == 'plan':
                        group.windows[:, 1] = 1
                    else:
                        for _rows, win in views:
                            win[1] = 1
                    gc.disable()
                    try:
                        for _ in range(cfg.batch):
                            t0 = time.perf_counter()
                            fn()
                            t1 = time.perf_counter()
                            if r:
                                res[kind].append(t1 - t0)
                    finally:
                        gc.enable()
                    src = group if kind == 'plan' else shms
                    last_rows[kind] = [m.last_row.item() for m in src]
            # every kind computed the same rows
            ref = np.array(last_rows['plan'])
            for kind in names:
                got = np.array(last_rows[kind])
                assert np.allclose(got, ref, rtol=0, atol=1e-6), kind
                assert all(
                    len(s) == cfg.batch + 1 for s in (group if kind == 'plan' else shms)
                )
        finally:
            for shm in shms:
                shm.destroy()
    return {'times': dict(res), 'size': size}


# --- 2b. the stepping curve: 100 -> 10,000 buffers -------------------------

#: buffers stepped at each point of the curve
CURVE = (100, 300, 1000, 3000, 10_000)
GOAL_CURVE_N = 10_000
GOAL_CURVE_MEDIAN = 1e-3
GOAL_CURVE_RATIO = 20.0


def _curve_point(
    n: int, size: int, cfg: argparse.Namespace
) -> tuple[dict[str, list[float]], int]:
    """One point of the curve: every kind's step times at ``n`` buffers,
    and the row size."""
    from tractor_sampler.shm import StepPlan, open_shm_group

    p = PERIOD
    res: dict[str, list[float]] = defaultdict(list)
    with (
        open_shm_group(n, size, start=0) as group,
        open_shm_group(n, size, start=0) as other,
    ):
        for i, (m, o) in enumerate(zip(group, other, strict=True)):
            _seed(m, i)
            _seed(o, i)
        plan = StepPlan(list(group))
        views = [(m.rows, m.window) for m in other]
        src = np.zeros(n, dtype=group.block.dtype)
        dst = np.empty_like(src)
        one_src, one_dst = src[:1], dst[:1]
        kinds: dict[str, Callable[[int], object]] = {
            'plan': lambda j: plan.step(p),
            'plan_t': lambda j: plan.step(p, BAR_T + (j + 1) * p),
            'loop_direct': lambda j: loop_direct(views, p),
            'copy': lambda j: np.copyto(dst, src),
            'call': lambda j: np.copyto(one_dst, one_src),
        }
        names = list(kinds)
        for r in range(cfg.rounds + 1):  # round 0: warm-up, not kept
            order = names[r % len(names) :] + names[: r % len(names)]
            for kind in order:
                fn = kinds[kind]
                stepped = group if kind.startswith('plan') else other
                stepped.windows[:, 1] = 1  # every round from the seeded row
                gc.disable()
                try:
                    for j in range(cfg.batch):
                        t0 = time.perf_counter()
                        fn(j)
                        t1 = time.perf_counter()
                        if r:
                            res[kind].append(t1 - t0)
                finally:
                    gc.enable()
                if kind in ('plan', 'plan_t', 'loop_direct'):
                    # every stepping kind leaves the same rows (checked)
                    assert (stepped.windows[:, 1] == cfg.batch + 1).all(), kind
                    got = stepped.block[:, cfg.batch]
                    want = _loop_row(n, cfg.batch, p)
                    for f in want.dtype.names or ():
                        assert np.allclose(got[f], want[f], rtol=0, atol=1e-6), (
                            kind,
                            f,
                        )
        itemsize = group.block.dtype.itemsize
    return dict(res), itemsize


def bench_curve(cfg: argparse.Namespace) -> dict[str, Any]:
    """At each size in :data:`CURVE`: one group stepped by a plan (without
    and with the step's time, as samplerd calls it), the per-buffer loop
    over the raw views of a second group of the same shape, and this
    machine's limits for the same rows, measured in the same rounds: a
    contiguous ``np.copyto`` of the bytes of ``n`` rows (what gathering the
    last rows or scattering the new ones moves at best) and one numpy call
    on a single row (the fixed cost of any numpy operation)."""
    size = cfg.batch + 8
    out: dict[int, dict[str, list[float]]] = {}
    itemsize = 0
    load = [os.getloadavg()[0]]  # others' work on the machine, for the note
    for n in cfg.curve:
        out[n], itemsize = _curve_point(n, size, cfg)
        print(f'    {n:>6,} buffers: done', flush=True)
    load.append(os.getloadavg()[0])
    return {'times': out, 'size': size, 'itemsize': itemsize, 'load': load}


def _loop_row(n: int, k: int, p: float) -> np.ndarray:
    """The row the per-buffer loop leaves after ``k`` steps from
    :func:`_seed`'s rows, for buffers ``0 .. n-1``."""
    from tractor_sampler import DEFAULT_DTYPE

    row = np.zeros(n, dtype=DEFAULT_DTYPE)
    c = 10.0 + np.arange(n) * 0.01
    row['index'] = 100 + k
    row['time'] = BAR_T + k * p
    row['open'] = row['high'] = row['low'] = row['close'] = c
    return row


# --- 3. trade -> row update -------------------------------------------------


def naive_write(shm: Any, tick: dict[str, Any], clearing: frozenset[str]) -> None:
    """One trade into the last row, field by field."""
    if tick.get('type') not in clearing:
        return
    price = float(tick['price'])
    size = float(tick.get('size', 0.0))
    row = shm.array[-1]
    if row['volume'] == 0:
        row['open'] = row['high'] = row['low'] = price
    else:
        row['high'] = max(row['high'], price)
        row['low'] = min(row['low'], price)
    row['close'] = price
    row['volume'] += size


def bench_writes(cfg: argparse.Namespace) -> dict[str, Any]:
    from feedbus import CLEARING_TICK_TYPES
    from tractor_sampler import OHLCWriter, open_shm_array

    rng = random.Random(7)
    m = cfg.ticks
    ticks = [
        {
            'type': 'trade',
            'price': round(100 + rng.uniform(-1, 1), 2),
            'size': float(rng.randint(1, 10)),
            'time': BAR_T + 0.5,
        }
        for _ in range(m)
    ]
    batches = [ticks[i : i + 10] for i in range(0, m, 10)]
    now = BAR_T + 0.5
    clearing = frozenset(CLEARING_TICK_TYPES)
    res: dict[str, list[float]] = defaultdict(list)
    with open_shm_array(16, start=0) as w_shm, open_shm_array(16, start=0) as n_shm:
        _seed(w_shm, 0)
        _seed(n_shm, 0)
        seed_row = w_shm.last_row.item()

        def run_writer() -> None:
            w = OHLCWriter({PERIOD: w_shm})
            gc.disable()
            try:
                t0 = time.perf_counter()
                for tick in ticks:
                    w.write([tick], now)
                t1 = time.perf_counter()
            finally:
                gc.enable()
            assert w.trades == m and w.late_trades == 0 and w.pending == 0
            res_one.append((t1 - t0) / m)

        def run_naive() -> None:
            gc.disable()
            try:
                t0 = time.perf_counter()
                for tick in ticks:
                    naive_write(n_shm, tick, clearing)
                t1 = time.perf_counter()
            finally:
                gc.enable()
            res_one.append((t1 - t0) / m)

        def run_batch10() -> None:
            w = OHLCWriter({PERIOD: w_shm})
            gc.disable()
            try:
                t0 = time.perf_counter()
                for b in batches:
                    w.write(b, now)
                t1 = time.perf_counter()
            finally:
                gc.enable()
            assert w.trades == m
            res_one.append((t1 - t0) / m)

        kinds = {'writer': run_writer, 'naive': run_naive, 'writer10': run_batch10}
        names = list(kinds)
        final: dict[str, tuple] = {}
        for r in range(cfg.rounds + 1):
            for kind in names[r % 3 :] + names[: r % 3]:
                shm = n_shm if kind == 'naive' else w_shm
                shm.array[-1] = seed_row  # a fresh bar: no trade yet
                res_one: list[float] = []
                kinds[kind]()
                if r:
                    res[kind].extend(res_one)
                final[kind] = shm.last_row.item()
        assert final['writer'] == final['naive'] == final['writer10'], final
        prices = [t['price'] for t in ticks]
        row = final['writer']
        assert row[2:6] == (prices[0], max(prices), min(prices), prices[-1]), row
    return {'times': dict(res)}


# --- 1. steps in real time --------------------------------------------------


async def bench_steps(cfg: argparse.Namespace) -> dict[str, Any]:
    import _sampler_eps as eps

    from tractor_sampler import SAMPLERD, open_sample_stream, open_shm_array
    from tractor_sampler.endpoints import sampler_info, samplerd
    from tractor_services import open_service_root

    compat.quiet_runtime_logs()
    addr = ('127.0.0.1', free_port())
    n = cfg.steps
    out: dict[str, Any] = {}
    t_setup = time.perf_counter()
    async with open_service_root(addr, name='bench_sampler') as mngr:
        await mngr.start_service(
            SAMPLERD,
            partial(samplerd, keep_lateness=n + 16),
            enable_modules=[eps.__name__],
        )
        sportal = mngr.portal(SAMPLERD)
        with open_shm_array(n + 64, start=0) as shm:
            _seed(shm, 0)
            shm.array[-1]['time'] = math.floor(time.time())
            async with (
                open_sample_stream(PERIOD, {PERIOD: shm}, registry_addr=addr) as ss,
                compat.open_actor_nursery() as an,
                AsyncExitStack() as stack,
            ):
                mods = [eps.__name__]
                raw = (
                    await compat.start_actor(an, eps.RAW_SRC, enable_modules=mods)
                ).portal
                subs: list[Any] = [None] * NSUBS

                async def spawn(i: int) -> None:
                    subs[i] = (
                        await compat.start_actor(
                            an, f'bench_sub{i}', enable_modules=mods
                        )
                    ).portal

                with trio.fail_after(STEP_TIMEOUT_S):
                    async with trio.open_nursery() as tn:
                        for i in range(NSUBS):
                            tn.start_soon(spawn, i)
                # (not under a timeout: the stack outlives any scope opened here)
                ctls = []
                for i, portal in enumerate(subs):
                    ctx, _ = await stack.enter_async_context(
                        compat.open_context(
                            portal,
                            eps.sub_ep,
                            idx=i,
                            registry_addr=list(addr),
                            period=PERIOD,
                        )
                    )
                    ctls.append(await stack.enter_async_context(ctx.open_stream()))
                out['setup_s'] = time.perf_counter() - t_setup
                print(
                    f'  samplerd + raw source + {NSUBS} subscribers up in '
                    f'{out["setup_s"]:.1f} s',
                    flush=True,
                )

                # the window: n steps from the boundary t0
                t0 = float(math.ceil(time.time()) + 2)
                last = t0 + (n - 1) * PERIOD
                for c in ctls:
                    await c.send({'t0': t0, 'n': n})
                offset = time.time() - trio.current_time()
                results: list[Any] = [None] * NSUBS
                root_steps: list[Any] = []

                async def collect(i: int) -> None:
                    results[i] = await ctls[i].receive()

                async def raw_task() -> None:
                    out['raw'] = await raw.run(
                        eps.raw_run, t0=t0, n=n, period=PERIOD, nsubs=NSUBS
                    )

                async def lateness_task() -> None:
                    # between steps: half a period before the first and after the last
                    await trio.sleep_until(t0 - PERIOD / 2 - offset)
                    out['steps_before'] = await sportal.run(eps.lateness_reset)
                    await trio.sleep_until(last + PERIOD / 2 - offset)
                    out['samplerd'] = await sportal.run(eps.lateness_read)
                    out['info'] = await sportal.run(sampler_info)

                async def root_task() -> None:
                    async for msg in ss:
                        if getattr(msg, 'time', 0) >= t0 - 1e-6:
                            root_steps.append((msg.time, msg.index))
                            if msg.time >= last - 1e-6:
                                return

                with trio.fail_after(last - time.time() + STEP_TIMEOUT_S):
                    async with trio.open_nursery() as tn:
                        for i in range(NSUBS):
                            tn.start_soon(collect, i)
                        tn.start_soon(raw_task)
                        tn.start_soon(lateness_task)
                        tn.start_soon(root_task)
                out['subs'] = results
                out['root_steps'] = root_steps
                rows = shm.array
                sel = rows[(rows['time'] >= t0 - 1e-6) & (rows['time'] <= last + 1e-6)]
                out['rows'] = (len(sel), sel['index'].tolist(), sel['time'].tolist())
                await stack.aclose()
                await an.cancel()
    out['t0'], out['n'] = t0, n
    return out


def check_steps(out: dict[str, Any]) -> list[str]:
    """Consistency of the step window; returns problems found."""
    n, t0 = out['n'], out['t0']
    probs = []
    sd = out['samplerd']
    if len(sd['lateness']) != n:
        probs.append(
            f'samplerd recorded {len(sd["lateness"])} steps in the window, not {n}'
        )
    if sd['caught_up'] or sd['skipped']:
        probs.append(
            f'samplerd caught up {sd["caught_up"]} and skipped {sd["skipped"]} steps'
        )
    nrows, idx, times = out['rows']
    if nrows != n or idx != list(range(idx[0], idx[0] + n)):
        probs.append(
            f'the registered buffer got {nrows} rows in the window, not {n} contiguous'
        )
    if [round(t - t0, 6) for t in times] != [float(k) for k in range(n)]:
        probs.append("the buffer's row times are not the window's boundaries")
    for i, r in enumerate(out['subs']):
        if len(r['step']) != n or r['index'] != idx:
            probs.append(
                f'subscriber {i} saw {len(r["step"])} steps (indexes {r["index"][:3]}...)'
            )
        if len(r['fan']) != n:
            probs.append(
                f'subscriber {i} got {len(r["fan"])} raw fan-out messages, not {n}'
            )
    if len(out['subs'][0]['one']) != n:
        probs.append(
            f'subscriber 0 got {len(out["subs"][0]["one"])} raw one-way messages'
        )
    if [t for t, _ in out['root_steps']] != [t0 + k for k in range(n)]:
        probs.append("the root's own sample stream missed steps")
    return probs


# --- reporting --------------------------------------------------------------


#: the stepping figures' own markers inside the sampler section: a run with
#: ``--only-stepping`` rewrites just these
STEP_KEY = 'sampler-stepping'
STEP_START, STEP_END = (
    f'<!-- bench:{STEP_KEY}:start -->',
    f'<!-- bench:{STEP_KEY}:end -->',
)


def _fus(s: float) -> str:
    return f'{s * 1e6:,.1f} µs'


def _met(ok: bool) -> str:
    return 'met' if ok else '**not met**'


def stepping_report(
    stepping: dict[str, Any],
    curve: dict[str, Any],
    cfg: argparse.Namespace,
    draw: bool,
) -> tuple[list[str], list[str], bool]:
    """The stepping tables (1000 buffers, then the curve) and, with
    ``draw``, the curve's plot: markdown sections, terminal tables, and
    whether the goals are met."""
    import _report as rp

    fus, met = _fus, _met
    st = stepping['times']
    base_kind = min(('loop_direct', 'loop_push'), key=lambda k: rp.median(st[k]))
    base = rp.median(st[base_kind])
    ratio = base / rp.median(st['plan'])
    step_ok = ratio >= GOAL_STEP_RATIO
    label = {
        'plan': f'`StepPlan(list(group)).step(p)`, `open_shm_group({NBUFS}, size)`',
        'loop_direct': f'Python loop over {NBUFS} `open_shm_array` buffers: '
        '`rows[last-1].item()`, one tuple assignment to `rows[last]`, '
        'bump `last` (raw views)',
        'loop_push': f'Python loop over {NBUFS} `open_shm_array` buffers, public API: '
        '`last_row.item()`, one tuple into a reused 1-row array, `push()`',
        'many': f'`step_many()` over the {NBUFS} separate buffers (information)',
    }
    headers = [
        'kind',
        'median per step',
        'p90',
        'per buffer',
        f'÷ {base_kind} (baseline)',
        'goal',
        '',
    ]
    rows = []
    for kind in ('plan', 'loop_direct', 'loop_push', 'many'):
        med = rp.median(st[kind])
        r = base / med
        goal, verdict = ('—', '')
        if kind == 'plan':
            goal, verdict = f'≥ {GOAL_STEP_RATIO:g}× faster', met(step_ok)
        rows.append(
            [
                label[kind],
                fus(med),
                fus(rp.p90(st[kind])),
                fus(med / NBUFS),
                '1.00× (baseline)'
                if kind == base_kind
                else f'{r:.2f}× faster'
                if r >= 1
                else f'{1 / r:.2f}× slower',
                goal,
                verdict,
            ]
        )
    printed = [rp.text_table(headers, rows)]
    note = (
        f'One step = one new row in each of {NBUFS} buffers (O = H = L = C = the '
        'previous close, volume 0, index + 1, time + period).  Every step call '
        f'is timed on its own (`perf_counter`, gc disabled): {cfg.rounds} rounds '
        f'of {cfg.batch} steps per kind, kinds interleaved and their order rotated '
        'every round, after one unrecorded warm-up round; each round starts every '
        f'buffer again from one seeded row (buffers of {stepping["size"]} rows).  '
        'All kinds end with the same rows (checked).  The ratio is against the '
        f'faster of the two loops ({base_kind}).'
    )
    sections = [
        f'### Stepping {NBUFS} buffers\n\n'
        + rp.md_table(headers, rows)
        + '\n\n'
        + rp.wrap(note)
    ]

    curve_secs, curve_printed, curve_ok = curve_report(curve, cfg, draw)
    return sections + curve_secs, printed + curve_printed, step_ok and curve_ok


def curve_report(
    curve: dict[str, Any], cfg: argparse.Namespace, draw: bool
) -> tuple[list[str], list[str], bool]:
    """The curve's table and note, and with ``draw`` its plot
    (``docs/img/stepping.png``)."""
    import _plots
    import _report as rp

    fus, met = _fus, _met
    times = curve['times']
    ns = sorted(times)
    itemsize = curve['itemsize']
    med = {n: {k: rp.median(v) for k, v in times[n].items()} for n in ns}
    headers = [
        'buffers',
        '`plan.step(p)` median',
        'p90',
        "`plan.step(p, t)` (samplerd's call)",
        'per-buffer loop (baseline)',
        'plan ÷ loop',
        'copy floor: `np.copyto` of the rows',
        'copy floor ÷ plan',
        'one numpy call',
        'plan in numpy calls',
        'goal',
        '',
    ]
    rows = []
    ok = True
    for n in ns:
        m = med[n]
        ratio = m['loop_direct'] / m['plan']
        goal, verdict = '—', ''
        if n == GOAL_CURVE_N:
            n_ok = m['plan'] <= GOAL_CURVE_MEDIAN and ratio >= GOAL_CURVE_RATIO
            ok &= n_ok
            goal = (
                f'≤ {GOAL_CURVE_MEDIAN * 1e3:g} ms and ≥ {GOAL_CURVE_RATIO:g}× the loop'
            )
            verdict = met(n_ok)
        rows.append(
            [
                f'{n:,}',
                fus(m['plan']),
                fus(rp.p90(times[n]['plan'])),
                fus(m['plan_t']),
                fus(m['loop_direct']),
                f'{ratio:.1f}× faster',
                fus(m['copy']),
                f'{m["copy"] / m["plan"]:.0%}',
                fus(m['call']),
                f'{m["plan"] / m["call"]:.0f}',
                goal,
                verdict,
            ]
        )
    if GOAL_CURVE_N not in med:
        ok = False  # a curve without its goal's point (--curve) meets nothing
    printed = [rp.text_table(headers, rows)]
    first, last = med[ns[0]], med[ns[-1]]
    grow = (last['plan'] - first['plan']) / (ns[-1] - ns[0]) if len(ns) > 1 else 0.0
    note = (
        f'The same step as above at {", ".join(f"{n:,}" for n in ns)} buffers: one '
        f'`open_shm_group(n, {curve["size"]})` stepped by `StepPlan(list(group))`, '
        "without the step's time (`step(p)`: each buffer's next boundary) and with "
        'it (`step(p, t)`: what samplerd calls, information), against the per-buffer '
        'loop over the raw views of a second group of the same shape (`rows[last-1]'
        ".item()`, one tuple assignment, bump `last`).  This machine's limits, in the "
        f'same rounds: the copy floor is one contiguous `np.copyto` of n rows '
        f'({itemsize} bytes each) between two preallocated arrays: the bytes a '
        'step gathers (the last rows) and scatters again (the new ones), moved at '
        'the best speed numpy gets on this machine.  "copy floor ÷ plan" is that '
        "copy's time as a share of a step's: a step moves its rows twice, so near 50% "
        'it runs at '
        "this machine's copy bandwidth (the copy's arrays stay warm in the caches, "
        "the group's rows are spread over its block, so the share is indicative).  "
        'One numpy call is `np.copyto` of a single row, timed like the rest: the '
        'fixed cost of any numpy operation; "plan in numpy calls" is a step\'s '
        f'time in fixed costs.  {cfg.rounds} rounds of {cfg.batch} steps per kind '
        'and size, kinds interleaved and rotated, one warm-up round, gc disabled; '
        'every stepping kind ends with the same rows (checked).  From '
        f'{ns[0]:,} to {ns[-1]:,} buffers a step grows by about '
        f'{grow * 1e9:,.0f} ns per buffer: with few buffers a step costs the fixed '
        'cost of its few dozen numpy calls, with many the bytes it moves.  The '
        'machine was shared: its 1-minute load average was '
        f'{curve["load"][0]:.1f} before the curve and {curve["load"][1]:.1f} after '
        f'({os.cpu_count()} CPUs): a loop of milliseconds is preempted more often '
        'than a step of microseconds, so the ratios vary with the load.'
    )
    img = None
    if draw:
        img = _plots.save_curves(
            'stepping',
            ns,
            {
                'StepPlan.step(p)': [med[n]['plan'] * 1e6 for n in ns],
                "StepPlan.step(p, t) (samplerd's call)": [
                    med[n]['plan_t'] * 1e6 for n in ns
                ],
                'per-buffer Python loop (baseline)': [
                    med[n]['loop_direct'] * 1e6 for n in ns
                ],
                'copy floor: np.copyto of the same rows': [
                    med[n]['copy'] * 1e6 for n in ns
                ],
                'one numpy call': [med[n]['call'] * 1e6 for n in ns],
            },
            title='Stepping n buffers: median time per step',
            xlabel='buffers stepped',
            ylabel='µs per step (log)',
            styles={
                'copy floor: np.copyto of the same rows': 'k--',
                'one numpy call': 'k:',
            },
        )
    if draw and img is None:
        print('  matplotlib is not installed: docs/img/stepping.png not redrawn')
    plot = (
        '![Median time per step against buffers stepped: the plan, the per-buffer '
        "loop and this machine's copy floor, log-log](img/stepping.png)"
    )
    return (
        [
            f'### Stepping 100 → 10,000 buffers\n\n{rp.md_table(headers, rows)}\n\n'
            f'{plot}\n\n{rp.wrap(note)}'
        ],
        printed,
        ok,
    )


def report(
    steps: dict[str, Any] | None,
    stepping: dict[str, Any],
    curve: dict[str, Any],
    writes: dict[str, Any],
    cfg: argparse.Namespace,
    write: bool,
) -> bool:
    import _report as rp  # here, not at import: subactors re-run this file

    import tractor_sampler

    def pct(xs: list[float], q: float) -> float:
        return rp.percentile(xs, q)

    def fms(s: float) -> str:
        return f'{s * 1e3:.2f} ms'

    def fus(s: float) -> str:
        return f'{s * 1e6:,.1f} µs'

    def met(ok: bool) -> str:
        return 'met' if ok else '**not met**'

    all_met = True
    sections: list[str] = []
    printed: list[str] = []

    # 1.
    if steps is not None:
        n = steps['n']
        probs = check_steps(steps)
        lat = steps['samplerd']['lateness']
        raw_lat = steps['raw']['late_half'] + steps['raw']['late_quarter']
        sub_step = [d for r in steps['subs'] for d in r['step']]
        sub_fan = [d for r in steps['subs'] for d in r['fan']]
        sub_one = steps['subs'][0]['one']
        headers = [
            'measurement',
            'samples',
            'p50',
            'p99',
            'max',
            'baseline (same run)',
            'baseline p50',
            'p99',
            'max',
            'goal',
            '',
        ]
        lat_ok = pct(lat, 99) < GOAL_LATENESS_P99
        del_ok = pct(sub_step, 99) < GOAL_DELIVERY_P99
        all_met &= lat_ok and del_ok and not probs
        rows = [
            [
                "step lateness, inside samplerd (its schedule's record)",
                len(lat),
                fms(pct(lat, 50)),
                fms(pct(lat, 99)),
                fms(max(lat)),
                'bare trio timer in another actor (`sleep_until`, same mapping)',
                fms(pct(raw_lat, 50)),
                fms(pct(raw_lat, 99)),
                fms(max(raw_lat)),
                f'p99 < {fms(GOAL_LATENESS_P99)}',
                met(lat_ok),
            ],
            [
                f'step → subscriber: arrival − step `time` ({NSUBS} actors)',
                len(sub_step),
                fms(pct(sub_step, 50)),
                fms(pct(sub_step, 99)),
                fms(max(sub_step)),
                f'bare timer + raw tractor fan-out to the same {NSUBS} actors: arrival − '
                "timer's boundary",
                fms(pct(sub_fan, 50)),
                fms(pct(sub_fan, 99)),
                fms(max(sub_fan)),
                f'p99 < {fms(GOAL_DELIVERY_P99)}',
                met(del_ok),
            ],
            [
                'raw tractor one-way: arrival − `time.time()` at send (1 actor)',
                len(sub_one),
                fms(pct(sub_one, 50)),
                fms(pct(sub_one, 99)),
                fms(max(sub_one)),
                '—',
                '',
                '',
                '',
                '—',
                '',
            ],
        ]
        printed.append(rp.text_table(headers, rows))
        info = steps['info']
        note = (
            f'{n} real steps of period {PERIOD:g} s (a window of {n} consecutive '
            f'boundaries), one samplerd service (`keep_lateness={n + 16}`) stepping '
            f'one buffer the root registered with `open_sample_stream({PERIOD!r}, '
            f'{{{PERIOD!r}: shm}})`, and {NSUBS} subscriber actors each holding '
            f'`open_sample_stream({PERIOD!r})` (so {NSUBS + 1} subscribers in all; '
            f'samplerd counted {info["late_steps"]} steps more than 1 ms late over '
            f'its life, {info["caught_up"]} caught up, {info["skipped"]} skipped).  '
            "Lateness is what samplerd's `Schedule` records: trio's clock at the "
            "step minus the boundary mapped onto trio's clock.  The baseline timer "
            'runs in a separate actor of the same tree and wakes at a quarter and '
            "at half a period past every boundary (out of samplerd's way), its "
            'lateness measured the same way; at the half-period point it sends '
            f"that point's time over a plain `ctx.open_stream()` to each of the "
            f'{NSUBS} subscribers in turn, at the quarter-period point '
            '`time.time()` to subscriber 0 alone.  Latencies are `time.time()` at '
            "arrival in the subscriber's task minus the time carried by the "
            'message (one system clock).  Percentiles are nearest-rank: with '
            f"{n} steps, samplerd's p99 is its {max(math.ceil(0.99 * n), 1)}th "
            'smallest sample of '
            f'{n}{" (the maximum)" if math.ceil(0.99 * n) == n else ""}.'
        )
        if probs:
            note += '  Problems seen in this run: ' + '; '.join(probs) + '.'
        sections.append(
            '### Steps in real time\n\n'
            + rp.md_table(headers, rows)
            + '\n\n'
            + rp.wrap(note)
        )

    # 2.
    step_secs, step_printed, step_ok = stepping_report(stepping, curve, cfg, write)
    all_met &= step_ok
    printed += step_printed
    sections.append(f'{STEP_START}\n' + '\n\n'.join(step_secs) + f'\n{STEP_END}')

    # 3.
    wt = writes['times']
    wmed = rp.median(wt['writer'])
    nmed = rp.median(wt['naive'])
    wratio = nmed / wmed
    w_ok = wratio >= GOAL_WRITE_RATIO
    all_met &= w_ok
    headers = [
        'kind',
        'median per trade',
        'p90',
        '÷ field-by-field (baseline)',
        'goal',
        '',
    ]
    rows = [
        [
            '`OHLCWriter.write([tick], now)`, one trade per call',
            fus(wmed),
            fus(rp.p90(wt['writer'])),
            f'{wratio:.2f}× faster',
            f'≥ {GOAL_WRITE_RATIO:g}× faster',
            met(w_ok),
        ],
        [
            "field by field: `row = shm.array[-1]; row['high'] = max(row['high'], p)`; …",
            fus(nmed),
            fus(rp.p90(wt['naive'])),
            '1.00× (baseline)',
            '—',
            '',
        ],
        [
            '`OHLCWriter.write(ticks, now)`, 10 trades per call (information)',
            fus(rp.median(wt['writer10'])),
            fus(rp.p90(wt['writer10'])),
            f'{nmed / rp.median(wt["writer10"]):.2f}× faster',
            '—',
            '',
        ],
    ]
    printed.append(rp.text_table(headers, rows))
    note = (
        f"{cfg.ticks:,} trade ticks (`{{'type': 'trade', 'price', 'size', 'time'}}`, "
        'all in the open 1 s bar) into one buffer, per kind and round; '
        f'{cfg.rounds} rounds after one unrecorded warm-up, kinds interleaved '
        'and rotated, gc disabled; figures are the per-round mean per trade, '
        'median and p90 over rounds.  The baseline checks the tick type, sets '
        "open / high / low on the bar's first trade, then updates high, low, "
        'close and volume field by field on the `np.void` view of the last row; '
        'both end with the same row (checked).'
    )
    sections.append(
        '### Trade → row update\n\n'
        + rp.md_table(headers, rows)
        + '\n\n'
        + rp.wrap(note)
    )

    machine = rp.machine_line(
        tractor=compat.TRACTOR_VERSION,
        trio=trio.__version__,
        numpy=np.__version__,
        **{'tractor-sampler': tractor_sampler.__version__},
    )
    body = '\n\n'.join([*sections, rp.wrap(machine)])
    print()
    for t in printed:
        print(t)
        print()
    if steps is not None and check_steps(steps):
        print('PROBLEMS:', *check_steps(steps), sep='\n  ')
    print(machine)
    print('all goals met' if all_met else 'some goals NOT met')
    if write:
        path = rp.write_section('sampler', 'tractor-sampler', body)
        print(f'figures written to {path}')
    return all_met


# --- leftovers --------------------------------------------------------------


def leftovers(prefix: str) -> tuple[list[str], list[int]]:
    """This run's segments still in /dev/shm, and our live child processes
    (the stdlib resource tracker excepted)."""
    shm = Path('/dev/shm')
    segs = (
        sorted(p.name for p in shm.iterdir() if p.name.startswith(prefix))
        if shm.is_dir()
        else []
    )
    kids = []
    me = str(os.getpid())
    for st in Path('/proc').glob('[0-9]*/stat'):
        try:
            fields = st.read_text().rsplit(')', 1)[1].split()
            cmd = (st.parent / 'cmdline').read_bytes()
        except OSError:
            continue
        if fields[1] == me and b'resource_tracker' not in cmd:
            kids.append(int(st.parent.name))
    return segs, kids


def _sizes(text: str) -> tuple[int, ...]:
    """``--curve``: comma separated buffer counts, each at least 1."""
    try:
        sizes = tuple(sorted({int(x) for x in text.split(',') if x.strip()}))
    except ValueError:
        sizes = ()
    if not sizes or sizes[0] < 1:
        raise argparse.ArgumentTypeError(
            f'{text!r}: give buffer counts >= 1, comma separated (e.g. 100,1000,10000)'
        )
    return sizes


def report_stepping(
    stepping: dict[str, Any],
    curve: dict[str, Any],
    cfg: argparse.Namespace,
    write: bool,
) -> bool:
    """``--only-stepping``: print the stepping tables and, with ``write``,
    replace only the stepping figures (their own markers inside the
    sampler section of ``docs/benchmarks.md``)."""
    import _report as rp

    import tractor_sampler

    secs, printed, ok = stepping_report(stepping, curve, cfg, write)
    machine = rp.machine_line(
        numpy=np.__version__, **{'tractor-sampler': tractor_sampler.__version__}
    )
    print()
    for t in printed:
        print(t)
        print()
    print(machine)
    print('stepping goals met' if ok else 'some stepping goals NOT met')
    if write:
        if STEP_START not in (rp.DOC.read_text() if rp.DOC.exists() else ''):
            print(
                f'{rp.DOC} has no stepping markers ({STEP_START}): run the whole '
                'benchmark once to write them; nothing written'
            )
            return ok
        body = '\n\n'.join([*secs, rp.wrap(f'Stepping figures: {machine}')])
        path = rp.write_section(STEP_KEY, 'tractor-sampler stepping', body)
        print(f'stepping figures written to {path}')
    return ok


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument(
        '--steps', type=int, default=60, help='real 1 s steps for test 1 (default 60)'
    )
    p.add_argument(
        '--rounds', type=int, default=10, help='rounds of tests 2 and 3 (default 10)'
    )
    p.add_argument(
        '--batch',
        type=int,
        default=100,
        help='timed steps per kind and round in test 2 (default 100)',
    )
    p.add_argument(
        '--ticks',
        type=int,
        default=10_000,
        help='trades per kind and round in test 3 (default 10000)',
    )
    p.add_argument(
        '--no-steps', action='store_true', help='skip test 1 (the real-time steps)'
    )
    p.add_argument(
        '--only-stepping',
        action='store_true',
        help='run test 2 alone (1000 buffers and the curve); writes only its figures',
    )
    p.add_argument(
        '--curve',
        type=_sizes,
        default=CURVE,
        help='buffers at each point of the stepping curve, comma separated '
        f'(default {",".join(map(str, CURVE))})',
    )
    p.add_argument(
        '--quick',
        action='store_true',
        help="5 steps, small sizes; print, don't write docs",
    )
    p.add_argument(
        '--write',
        action=argparse.BooleanOptionalAction,
        default=None,
        help='write docs/benchmarks.md (default: yes, unless --quick)',
    )
    # nox passes the same posargs to every benchmark: tolerate other ones' flags
    cfg, unknown = p.parse_known_args(argv)
    if unknown:
        print(f'warning: ignoring unknown arguments {unknown}', file=sys.stderr)
    if cfg.quick:
        cfg.steps, cfg.rounds, cfg.batch, cfg.ticks = 5, 3, 50, 2_000
        if cfg.curve == CURVE:
            cfg.curve = (100, 1000, 10_000)
    if cfg.steps < 2 or cfg.rounds < 1 or cfg.batch < 1 or cfg.ticks < 10:
        p.error('--steps >= 2, --rounds >= 1, --batch >= 1, --ticks >= 10')
    write = (not cfg.quick) if cfg.write is None else cfg.write
    if write and cfg.no_steps and not cfg.only_stepping:
        p.error('--no-steps leaves test 1 out: use it with --no-write')
    env = os.environ
    importable_by_subactors(HERE)
    # this run's segments get a prefix of their own (children inherit it),
    # so the leftover check below only looks at ours
    from tractor_sampler.shm import KEY_PREFIX_ENV

    prefix = f'tsamp_bench{os.getpid()}_'
    env[KEY_PREFIX_ENV] = prefix

    print(
        f'bench_sampler: {cfg.steps} steps of {PERIOD:g} s with {NSUBS} subscribers; '
        f'{NBUFS} buffers x {cfg.rounds} rounds x {cfg.batch} steps; '
        f'{cfg.ticks:,} trades x {cfg.rounds} rounds',
        flush=True,
    )
    t_all = time.perf_counter()
    t = time.perf_counter()
    stepping = bench_stepping(cfg)
    print(f'  stepping {NBUFS} buffers: {time.perf_counter() - t:.1f} s', flush=True)
    t = time.perf_counter()
    curve = bench_curve(cfg)
    print(f'  stepping curve: {time.perf_counter() - t:.1f} s', flush=True)
    if cfg.only_stepping:
        report_stepping(stepping, curve, cfg, write)
    else:
        t = time.perf_counter()
        writes = bench_writes(cfg)
        print(f'  trade writes: {time.perf_counter() - t:.1f} s', flush=True)
        steps = None
        if not cfg.no_steps:
            t = time.perf_counter()
            steps = trio.run(bench_steps, cfg)
            print(f'  real-time steps: {time.perf_counter() - t:.1f} s', flush=True)
        report(steps, stepping, curve, writes, cfg, write)
    segs, kids = leftovers(prefix)
    if segs or kids:
        print(f'LEFTOVERS: shm segments {segs}, child processes {kids}')
    print(f'bench_sampler took {time.perf_counter() - t_all:.1f} s')
    return 1 if segs or kids else 0


if __name__ == '__main__':
    sys.exit(main())
