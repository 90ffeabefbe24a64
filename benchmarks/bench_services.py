"""Benchmark: what tractor-services costs over raw tractor.

1. Start latency.  ``ServiceMngr.start_service()`` against raw tractor
   (``ActorNursery.start_actor()`` + ``Portal.open_context()`` until the
   endpoint's ``started()`` value arrives), interleaved A, B, A, B... so
   machine noise hits both alike.  A third, diagnostic kind times raw
   tractor plus the one extra RPC ``start_service`` makes (installing the
   parent-death guard in the child), to split the overhead between that
   RPC and the manager's own bookkeeping.
2. Recovery.  A ``permanent`` service is SIGKILLed M times; each time we
   measure until it serves again (restarted, running, and answering an
   RPC), against the raw spawn + context time of (1) as the floor:
   recovery = detection + teardown + respawn.

Everything runs in one ``trio.run`` with a registry on a free port.  The
``if __name__ == '__main__':`` guard is required: tractor subactors
re-import the parent's ``__main__`` to find ``ep`` and ``ping``.

    python benchmarks/bench_services.py            # N=15, M=10, writes docs
    python benchmarks/bench_services.py --quick    # N=3, M=3, prints only
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import sys
import time
import warnings
from collections import defaultdict
from collections.abc import Awaitable, Callable
from functools import partial

import trio

warnings.filterwarnings('ignore', category=trio.TrioDeprecationWarning)

import tractor  # noqa: E402

import tractor_services  # noqa: E402
from tractor_services import compat  # noqa: E402

#: seconds any single spawn, start or recovery may take before we give up
STEP_TIMEOUT_S = 60.0


@tractor.context
async def ep(ctx: tractor.Context) -> None:
    await ctx.started(os.getpid())
    await trio.sleep_forever()


async def ping() -> str:
    return 'pong'


def free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


# --- one start of each kind: {measurement: seconds} ---------------------------


async def start_raw(i: int) -> dict[str, float]:
    """Raw tractor: spawn + open the context until ``first`` arrives."""
    async with compat.open_actor_nursery() as an:
        t0 = time.perf_counter()
        portal = await an.start_actor(f'raw_{i}', enable_modules=[__name__])
        t1 = time.perf_counter()
        async with portal.open_context(ep) as (ctx, first):
            t2 = time.perf_counter()
            assert isinstance(first, int)
            await ctx.cancel()
        await portal.cancel_actor()
    return {'raw': t2 - t0, 'raw_spawn': t1 - t0, 'raw_ctx': t2 - t1}


async def start_raw_guard(i: int) -> dict[str, float]:
    """Raw tractor plus the guard RPC that ``compat.start_actor`` (and so
    ``start_service``) makes between the spawn and the context."""
    async with compat.open_actor_nursery() as an:
        t0 = time.perf_counter()
        portal = await an.start_actor(
            f'guard_{i}', enable_modules=[__name__, compat.__name__]
        )
        t1 = time.perf_counter()
        await portal.run(compat._install_child_guard, parent_pid=os.getpid())
        t2 = time.perf_counter()
        async with portal.open_context(ep) as (ctx, first):
            t3 = time.perf_counter()
            assert isinstance(first, int)
            await ctx.cancel()
        await portal.cancel_actor()
    return {
        'guard': t3 - t0,
        'guard_spawn': t1 - t0,
        'guard_rpc': t2 - t1,
        'guard_ctx': t3 - t2,
    }


async def start_svc(mngr: tractor_services.ServiceMngr, i: int) -> dict[str, float]:
    """``start_service`` until it returns the started value."""
    name = f'svc_{i}'
    t0 = time.perf_counter()
    first = await mngr.start_service(name, ep)
    t1 = time.perf_counter()
    assert isinstance(first, int)
    await mngr.cancel_service(name)
    return {'svc': t1 - t0}


# --- the run ----------------------------------------------------------------


async def run(n: int, m: int, warmup: int) -> dict[str, list[float]]:
    port = free_port()
    res: dict[str, list[float]] = defaultdict(list)
    async with tractor_services.open_service_mngr(
        registry_addr=('127.0.0.1', port), name='bench_root'
    ) as mngr:
        # start latency, interleaved, the order rotated every round so that
        # no kind always follows the same one; the first `warmup` rounds are
        # not kept
        kinds: list[Callable[[int], Awaitable[dict[str, float]]]] = [
            start_raw,
            partial(start_svc, mngr),
            start_raw_guard,
        ]
        for i in range(warmup + n):
            r = i % len(kinds)
            for fn in kinds[r:] + kinds[:r]:
                with trio.fail_after(STEP_TIMEOUT_S):
                    got = await fn(i)
                for k, v in got.items():
                    if i >= warmup:
                        res[k].append(v)
            if i >= warmup:
                print(
                    f'  start {i + 1 - warmup}: '
                    + '  '.join(
                        f'{k} {res[k][-1] * 1e3:.0f} ms'
                        for k in ('raw', 'svc', 'guard')
                    ),
                    flush=True,
                )

        # recovery from SIGKILL
        name = 'recover'
        policy = tractor_services.RestartPolicy(
            restart='permanent', max_restarts=m + 1, within_s=3600.0
        )
        with trio.fail_after(STEP_TIMEOUT_S):
            await mngr.start_service(name, ep, restart=policy)
        for k in range(1, m + 1):
            pid = mngr.info(name).pid
            assert pid is not None
            with trio.fail_after(STEP_TIMEOUT_S):
                t0 = time.perf_counter()
                os.kill(pid, signal.SIGKILL)
                # restarts is bumped once the dead actor is torn down and
                # unregistered, just before the respawn begins
                await mngr.wait_for(name, lambda i, k=k: i.restarts == k)
                t1 = time.perf_counter()
                await mngr.wait_for(
                    name, lambda i, k=k: i.restarts == k and i.state == 'running'
                )
                assert await mngr.portal(name).run(ping) == 'pong'
                t2 = time.perf_counter()
            assert mngr.info(name).pid != pid
            res['recover'].append(t2 - t0)
            res['detect'].append(t1 - t0)
            res['respawn'].append(t2 - t1)
            print(f'  recovery {k}: {(t2 - t0) * 1e3:.0f} ms', flush=True)
        await mngr.cancel_service(name)
    return res


# --- reporting --------------------------------------------------------------


def report(
    res: dict[str, list[float]], n: int, m: int, warmup: int, write: bool
) -> bool:
    import _report as rp  # here, not at import: subactors re-run this file

    med = {k: rp.median(v) for k, v in res.items()}
    p90 = {k: rp.p90(v) for k, v in res.items()}
    raw = med['raw']
    ratio = med['svc'] / raw
    goal_met = ratio <= 1.1
    floor = 'raw tractor spawn + context'

    def row(label: str, key: str, baseline: str | None) -> list[str]:
        vs = f'{med[key] / raw:.2f}×' if baseline else '—'
        return [label, rp.ms(med[key]), rp.ms(p90[key]), baseline or '—', vs]

    headers = ['measurement', 'median', 'p90', 'baseline', '÷ baseline median']
    rows = [
        [
            f'raw tractor: `start_actor` + `open_context` → `started` (N={n})',
            rp.ms(raw),
            rp.ms(p90['raw']),
            '—',
            '1.00×',
        ],
        row(
            f'`start_service()` → started value (N={n})', 'svc', 'raw tractor, same run'
        ),
        row(
            f'recovery: SIGKILL → serving again (M={m})', 'recover', f'{floor} (floor)'
        ),
        row('… detection + teardown + unregister', 'detect', None),
        row('… respawn + context + first RPC', 'respawn', floor),
    ]
    phase_headers = ['phase (medians)', 'raw tractor', 'raw tractor + guard RPC']
    phase_rows = [
        ['`start_actor()` returns', rp.ms(med['raw_spawn']), rp.ms(med['guard_spawn'])],
        ['guard RPC, `_install_child_guard`', '—', rp.ms(med['guard_rpc'])],
        ['`open_context()` → started', rp.ms(med['raw_ctx']), rp.ms(med['guard_ctx'])],
        ['total', rp.ms(raw), f'{rp.ms(med["guard"])} ({med["guard"] / raw:.2f}×)'],
    ]
    verdict = (
        f'`start_service()` / raw tractor = **{ratio:.2f}×** (goal ≤ 1.10×: '
        + ('**met**' if goal_met else '**not met**')
        + ').'
    )
    start_note = (
        f'{verdict}  `start_service()` makes one RPC more than raw tractor: '
        'between the spawn and the context it runs `compat._install_child_guard` '
        'in the child (the parent-death guard: a pidfd watch on the parent and a SIGTERM handler).  The table '
        'below splits a start into phases, for raw tractor and for raw tractor '
        'plus that RPC.'
    )
    if med['guard_ctx'] < med['raw_ctx'] / 4:
        start_note += (
            '  Whatever request reaches a new child first waits for it to finish '
            'starting up (after `start_actor()` has returned): the context in raw '
            'tractor, the guard RPC in `start_service()`, after which the context '
            f'opens in {rp.ms(med["guard_ctx"])}.  The guard therefore costs about '
            f'one round trip, not the {rp.ms(med["guard_rpc"])} its RPC appears '
            'to take.'
        )
    recovery_note = (
        "Recovery is the time from `SIGKILL` of a `restart='permanent'` service "
        'to its answering `portal(name).run(ping)` again: detection of the dead '
        'process, teardown (reaping it and dropping the registry entry tractor '
        'keeps for a killed actor), then a respawn, which costs about the raw '
        'spawn + context time above.  The service runs with '
        f"`RestartPolicy(restart='permanent', max_restarts={m + 1}, "
        'within_s=3600)`: the default intensity (3 restarts in 5 s) would give '
        'up after the third kill.'
    )
    if med['detect'] >= 0.4:
        recovery_note += (
            f'  Most of the {rp.ms(med["detect"])} before the respawn is one '
            f'timeout in tractor {compat.TRACTOR_VERSION}: the death is seen within '
            'milliseconds, but leaving `Portal.open_context()` while the channel '
            'still looks connected makes tractor send the dead child a cancel '
            'request (`Context.cancel()`), which waits out a hard-coded, shielded '
            '0.5 s.'
        )
    method_note = (
        'Each start spawns and stops a fresh subactor; the three kinds (raw, '
        '`start_service()`, raw + guard) run interleaved, their order rotated '
        f'every round, after {warmup} unrecorded warm-up round(s); teardown is '
        'outside the timed region.  p90 is nearest-rank.'
    )
    machine = rp.machine_line(tractor=compat.TRACTOR_VERSION, trio=trio.__version__)
    body = '\n\n'.join(
        [
            rp.md_table(headers, rows),
            rp.wrap(start_note),
            rp.md_table(phase_headers, phase_rows),
            rp.wrap(recovery_note),
            rp.wrap(method_note),
            rp.wrap(machine),
        ]
    )

    print()
    print(rp.text_table(headers, rows))
    print()
    print(rp.text_table(phase_headers, phase_rows))
    print()
    print(verdict.replace('*', '').replace('`', ''))
    print(machine)
    if write:
        path = rp.write_section('services', 'tractor-services', body)
        print(f'figures written to {path}')
    return goal_met


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument(
        '-n',
        '--iterations',
        type=int,
        default=15,
        help='starts of each kind (default 15)',
    )
    p.add_argument(
        '-m',
        '--recoveries',
        type=int,
        default=10,
        help='SIGKILL recoveries (default 10)',
    )
    p.add_argument(
        '--warmup', type=int, default=1, help='unrecorded warm-up rounds (default 1)'
    )
    p.add_argument(
        '--quick',
        action='store_true',
        help="3 starts of each kind and 3 recoveries; print, don't write docs",
    )
    p.add_argument(
        '--write',
        action=argparse.BooleanOptionalAction,
        default=None,
        help='write docs/benchmarks.md (default: yes, unless --quick)',
    )
    # nox passes the same posargs to every benchmark: tolerate other ones' flags
    args, unknown = p.parse_known_args(argv)
    if unknown:
        print(f'warning: ignoring unknown arguments {unknown}', file=sys.stderr)
    n, m = (3, 3) if args.quick else (args.iterations, args.recoveries)
    if n < 1 or m < 1 or args.warmup < 0:
        p.error('--iterations and --recoveries must be >= 1, --warmup >= 0')
    write = (not args.quick) if args.write is None else args.write
    # subactors import tractor, which touches trio.MultiError, before this file
    quiet = 'ignore:trio.MultiError is deprecated'
    if quiet not in os.environ.get('PYTHONWARNINGS', ''):
        os.environ['PYTHONWARNINGS'] = ','.join(
            filter(None, [os.environ.get('PYTHONWARNINGS'), quiet])
        )

    print(f'bench_services: N={n} starts of each kind, M={m} recoveries', flush=True)
    t0 = time.perf_counter()
    res = trio.run(run, n, m, args.warmup)
    report(res, n, m, args.warmup, write)
    print(f'bench_services took {time.perf_counter() - t0:.1f} s')
    return 0


if __name__ == '__main__':
    sys.exit(main())
