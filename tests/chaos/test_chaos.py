"""The chaos suite: one real tree, faults one at a time, invariants after each.

The tree: ``samplerd run`` on a free port, the sim feed at ``TICK_RATE``
quotes/s on one topic, and three standing subscriber programs: every quote
(``quotes``), throttled frames (``frames``) and samplerd's 1 s steps
(``steps``).  The phases run in this file's order against that one tree; the
root kill comes last and restarts it.

After each fault the suite checks what the docs promise, not just survival:
how long recovery takes (bounded generously: the machine is loaded), that
the subscribers the fault did not touch keep their rate (>= 0.95x), see no
sequence gap and no end, that every gap anyone sees is a drop the producer or
the reader counted, that bars stay contiguous (index +1 per row, times on
period boundaries), that memory and fds stay bounded, and that no process
and no shared-memory segment outlives its owner.  The figures go to the
report (``CHAOS_FIGURES=1`` writes them to ``docs/reliability.md``).
"""

from __future__ import annotations

import os
import signal
import time
from typing import Any

import pytest
from _harness import (
    Program,
    Tree,
    alive,
    record,
    rss_fds,
    segment_pid,
    shm_segments,
    wait_until,
)

TOPIC = 'AAA'
TICK_RATE = 2000  # quotes/s of the sim feed
THROTTLE_HZ = 20.0  # the throttled subscriber's rate
WINDOW_S = 3.0  # rate windows, before and during a fault
RECOVERY_S = 15.0  # generous bound on every recovery
RATE_RATIO = 0.95
STALL_TIMEOUT_S = 5.0  # feedbus's documented stall_timeout
CHURN_CYCLES = 1000
MALFORMED = 500
BAD_CALLS = 100
RSS_GROWTH_MB = 30  # bound on a daemon's RSS growth over a phase
FDS_GROWTH = 10  # bound on a daemon's fd growth over a phase


# --- the tree ---------------------------------------------------------------------


@pytest.fixture(scope='module')
def tree(tmp_path_factory: pytest.TempPathFactory):
    t = Tree(tmp_path_factory.mktemp('chaos'))
    left: dict[str, Any] = {}
    try:
        t0 = time.monotonic()
        t.start_root()
        t.quotes = t.client('quotes', 'sub_client.py', 'quotes', TOPIC, TICK_RATE)
        t.frames = t.client(
            'frames', 'sub_client.py', 'frames', TOPIC, TICK_RATE, THROTTLE_HZ
        )
        t.steps = t.client('steps', 'sub_client.py', 'steps', TOPIC, TICK_RATE)
        first = t.quotes.wait_for(lambda e: e['ev'] == 'first', 60, 'first quote')
        for prog in standing(t):
            prog.wait_for(lambda e: e['ev'] == 'first', 60, 'first message')
            prog.stats_after(time.monotonic())
        record(
            'start',
            fault='—',
            effect='the tree starts: root, samplerd, feed daemon, 3 subscribers',
            first_quote_s=first['t'] - t0,
            ready_s=time.monotonic() - t0,
        )
        yield t
    finally:
        left = t.stop()
    assert not left, f'the tree left things behind after SIGTERM: {left}'


def standing(tree: Tree) -> list[Program]:
    return [tree.quotes, tree.frames, tree.steps]


# --- measurements -------------------------------------------------------------------


def stats_in(prog: Program, t0: float, t1: float) -> list[dict[str, Any]]:
    return [e for e in prog.since(0, 'stats') if t0 <= e['t'] <= t1]


def rate(prog: Program, t0: float, t1: float) -> float:
    """Quotes (steps for ``steps``) per second between ``t0`` and ``t1``,
    from the program's own reports (waits for the one after ``t1``): the
    least-squares slope of the count over time, so a burst that lands
    just inside or outside an edge of the window does not swing it."""
    prog.stats_after(t1)
    evs = stats_in(prog, t0, t1)
    assert len(evs) >= 2, f'{prog.name}: fewer than 2 reports in [{t0:.2f}, {t1:.2f}]'
    epoch = evs[-1]['epoch']
    pts = [(e['t'], e['n']) for e in evs if e['epoch'] == epoch]
    if len(pts) < 2:
        return 0.0
    mt = sum(t for t, _ in pts) / len(pts)
    mn = sum(n for _, n in pts) / len(pts)
    var = sum((t - mt) ** 2 for t, _ in pts)
    return sum((t - mt) * (n - mn) for t, n in pts) / var if var else 0.0


def figures(pid: int | None) -> tuple[float, int] | None:
    """(RSS MB, fds) of a daemon."""
    f = rss_fds(pid) if pid else None
    return (f[0] / 2**20, f[1]) if f else None


def orphans(tree: Tree) -> set[int]:
    """Processes the tree started that are alive outside it."""
    return alive(tree.seen) - tree.remember()


def stale_segments() -> set[str]:
    """Segments whose creator is dead."""
    return {s for s in shm_segments() if not alive({segment_pid(s) or -1})}


def check_healthy(tree: Tree, phase: str) -> None:
    """No orphan process, no segment of a dead creator (allowing a dead
    creator's resource tracker its few seconds)."""
    assert not orphans(tree), f'{phase}: processes outlived the tree: {orphans(tree)}'
    wait_until(
        lambda: not stale_segments(),
        RECOVERY_S,
        f'{phase}: segments of dead processes unlinked ({sorted(stale_segments())})',
    )


class Unaffected:
    """The standing subscribers a fault must not touch: marks taken before
    it, and the checks after it."""

    def __init__(self, progs: list[Program]) -> None:
        self.progs = progs
        self.t0 = time.monotonic()
        self.marks = {p.name: p.mark() for p in progs}
        self.before = {p.name: p.last() for p in progs}

    def check(self, t_fault: float, t_end: float, phase: str) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for prog in self.progs:
            after = prog.stats_after(t_end)
            before = self.before[prog.name]
            ended = prog.since(self.marks[prog.name], 'ended')
            assert not ended, f'{phase}: {prog.name} lost its stream: {ended}'
            assert after['epoch'] == before['epoch'], (
                f'{phase}: {prog.name} reconnected'
            )
            assert after['gaps'] == before['gaps'], (
                f'{phase}: {prog.name} saw {after["gaps"] - before["gaps"]} quotes missing'
            )
            assert after['frame_gaps'] == before['frame_gaps'], (
                f'{phase}: {prog.name} missed frames'
            )
            assert after['bars_error'] is None, (
                f'{phase}: {prog.name}: {after["bars_error"]}'
            )
            assert after['step_error'] is None, (
                f'{phase}: {prog.name}: {after["step_error"]}'
            )
            assert_drops_counted(prog, after, phase)
            if prog.name == 'steps':
                # 1 step per second: they kept coming
                assert after['n'] - before['n'] >= int(t_end - self.t0) - 2, (
                    f'{phase}: steps stopped ({before["n"]} -> {after["n"]})'
                )
                continue
            r0 = rate(prog, t_fault - WINDOW_S, t_fault)
            r1 = rate(prog, t_fault, t_end)
            out[f'{prog.name}_rate_ratio'] = r1 / r0 if r0 else 0.0
            assert r0 > 0 and r1 >= RATE_RATIO * r0, (
                f'{phase}: {prog.name} fell from {r0:.0f} to {r1:.0f} quotes/s'
            )
        return out


#: what a clear end says: the peer is gone, and which
CLEAR_END = (
    'PeerGone',
    'PeerDisconnected',
    'ActorDied',
    'DaemonStopped',
    'SubscriptionDropped',
)


def assert_told(name: str, err: str | None, phase: str) -> None:
    """A stream that a fault ended ends with a clear error: not silently,
    not with an internal error of the runtime."""
    assert err, f'{phase}: {name}: its stream ended silently'
    assert err.split(':', 1)[0] in CLEAR_END, (
        f'{phase}: {name}: its stream ended with an unclear error: {err[:300]}'
    )


def assert_drops_counted(prog: Program, ev: dict[str, Any], phase: str) -> None:
    """Every quote a subscriber missed is a drop the producer (its
    per-subscriber ``dropped``) or the local reader counted."""
    if 'remote' not in ev:
        return
    counted = ev['remote'].get('dropped', 0) + ev['local_dropped']
    assert ev['gaps'] <= counted, (
        f'{phase}: {prog.name} missed {ev["gaps"]} quotes but only {counted} drops were counted'
    )


def subscribers(tree: Tree) -> list[dict[str, Any]]:
    [feed] = tree.ls()['feeds']
    return feed['topics'][TOPIC]['subscribers']


def wait_subscribers(tree: Tree, n: int, timeout: float, what: str) -> float:
    """Poll ``samplerd ls`` until the topic has ``n`` subscribers; returns
    when it saw that."""
    wait_until(lambda: len(subscribers(tree)) == n, timeout, what, poll=0.2)
    return time.monotonic()


def start_victim(tree: Tree, name: str) -> Program:
    victim = tree.client(name, 'sub_client.py', 'quotes', TOPIC, TICK_RATE)
    victim.wait_for(lambda e: e['ev'] == 'first', 60, 'first quote')
    victim.stats_after(time.monotonic())
    return victim


# --- the phases ----------------------------------------------------------------------


def test_steady_state(tree: Tree):
    """Before any fault: every subscriber gap-free at the feed's rate, bars
    and steps contiguous, each daemon's memory and fds measured."""
    watch = Unaffected(standing(tree))
    # both windows after the start-up: the first quotes come in a burst
    t = time.monotonic() + WINDOW_S
    out = watch.check(t, t + WINDOW_S, 'steady state')
    r = rate(tree.quotes, t, t + WINDOW_S)
    assert r >= 0.5 * TICK_RATE, (
        f'the feed delivers {r:.0f} quotes/s, asked for {TICK_RATE}'
    )
    report = tree.ls()
    [feed] = report['feeds']
    assert feed['topics'][TOPIC]['state'] == 'up'
    assert len(feed['topics'][TOPIC]['subscribers']) == 2
    tree.daemons = {n: tree.service_pid(n, report) for n in ('samplerd', 'feedd.sim')}
    tree.baseline = {n: figures(pid) for n, pid in tree.daemons.items()}
    check_healthy(tree, 'steady state')
    record(
        'steady state',
        fault='none',
        effect='baseline',
        quotes_a_second=r,
        frames_a_second=rate(tree.frames, t, t + WINDOW_S)
        / max(1, TICK_RATE / THROTTLE_HZ),
        feedd_rss_mb=tree.baseline['feedd.sim'][0],
        feedd_fds=tree.baseline['feedd.sim'][1],
        samplerd_rss_mb=tree.baseline['samplerd'][0],
        **out,
    )


def test_subscriber_sigkill(tree: Tree):
    """SIGKILL of a subscriber: the producer removes it, the others do not
    notice."""
    victim = start_victim(tree, 'victim_kill')
    try:
        assert len(subscribers(tree)) == 3
        watch = Unaffected(standing(tree))
        t_kill = time.monotonic()
        victim.signal(signal.SIGKILL)
        t_gone = wait_subscribers(tree, 2, RECOVERY_S, 'the killed subscriber removed')
        out = watch.check(t_kill, max(t_gone, t_kill + WINDOW_S), 'subscriber SIGKILL')
    finally:
        victim.reap()
    check_healthy(tree, 'subscriber SIGKILL')
    record(
        'subscriber SIGKILL',
        fault='`kill -9` of an unthrottled subscriber program',
        effect='removed from the topic; the others unaffected',
        removed_after_s=t_gone - t_kill,
        **out,
    )


def test_subscriber_sigstop_past_stall_timeout(tree: Tree):
    """SIGSTOP of a subscriber past the stall timeout: it is removed with a
    clear reason (told to it once it runs again), drops counted, and the
    others keep their rate and their sequence."""
    victim = start_victim(tree, 'victim_stop')
    try:
        mark = victim.mark()
        watch = Unaffected(standing(tree))
        t_stop = time.monotonic()
        victim.signal(signal.SIGSTOP)
        # poll until it is removed, keeping the producer's last counters of
        # it (the unthrottled subscriber that fell behind: fewest delivered)
        last_seen: list[dict[str, Any]] = []

        def removed() -> bool:
            subs = subscribers(tree)
            if len(subs) == 3:
                last_seen[:] = [
                    min(
                        (x for x in subs if not x['rate']), key=lambda x: x['delivered']
                    )
                ]
            return len(subs) == 2

        wait_until(
            removed,
            STALL_TIMEOUT_S + RECOVERY_S,
            'the stopped subscriber removed',
            poll=0.2,
        )
        t_gone = time.monotonic()
        out = watch.check(t_stop, max(t_gone, t_stop + WINDOW_S), 'subscriber SIGSTOP')
        victim.signal(signal.SIGCONT)
        t_cont = time.monotonic()
        ended = victim.wait_for(
            lambda e: e['ev'] == 'ended',
            RECOVERY_S,
            'the end of its removed feed',
            start=mark,
        )
        told = ended['t'] - t_cont
        seen = [e for e in victim.since(mark, 'stats') if e['epoch'] == ended['epoch']]
        again = victim.wait_for(
            lambda e: e['ev'] == 'first' and e['epoch'] > ended['epoch'],
            RECOVERY_S,
            'the first quote after subscribing again',
            start=mark,
        )
    finally:
        victim.reap()
    record(
        'subscriber SIGSTOP',
        fault=f'SIGSTOP of a subscriber program past the stall timeout ({STALL_TIMEOUT_S:g} s)',
        effect='removed with a reason; the others unaffected; it subscribes again after SIGCONT',
        removed_after_s=t_gone - t_stop,
        told_after_sigcont_s=told,
        resubscribed_after_sigcont_s=again['t'] - t_cont,
        end_error=ended['error'],
        victim_missed=seen[-1]['gaps'] if seen else None,
        victim_drops_counted_before_removal=last_seen[0]['dropped']
        if last_seen
        else None,
        victim_overruns=last_seen[0]['overruns'] if last_seen else None,
        **out,
    )
    assert t_gone - t_stop >= STALL_TIMEOUT_S - 0.5, 'removed before its stall timeout'
    assert ended['error'] and 'stall' in ended['error'].lower(), (
        f'the removed subscriber was not told why (its feed ended with {ended["error"]!r})'
    )
    check_healthy(tree, 'subscriber SIGSTOP')


def test_subscribe_leave_cycles(tree: Tree):
    """1,000 subscribe/leave cycles: no error, nothing left subscribed, the
    feed daemon's memory and fds bounded, the others unaffected."""
    feedd = tree.service_pid('feedd.sim')
    before = figures(feedd)
    watch = Unaffected(standing(tree))
    t0 = time.monotonic()
    res = tree.run_client('churn_client.py', TOPIC, CHURN_CYCLES, timeout=150)
    t1 = time.monotonic()
    out = watch.check(t0, max(t1, t0 + WINDOW_S), 'subscribe/leave cycles')
    assert res['errors'] == [] and res['cycles'] == CHURN_CYCLES, res
    assert len(subscribers(tree)) == 2, 'subscriptions left behind'
    after = figures(feedd)
    assert before and after
    record(
        'subscribe/leave',
        fault=f'{CHURN_CYCLES} subscribe/leave cycles from one program, four at a time',
        effect='each a real subscription; all gone after',
        cycle_ms=1000 * res['elapsed'] / CHURN_CYCLES,
        feedd_rss_growth_mb=after[0] - before[0],
        feedd_fds_growth=after[1] - before[1],
        **out,
    )
    assert after[0] - before[0] <= RSS_GROWTH_MB, (
        f'feed daemon RSS {before[0]:.0f} -> {after[0]:.0f} MB'
    )
    assert after[1] - before[1] <= FDS_GROWTH, (
        f'feed daemon fds {before[1]} -> {after[1]}'
    )
    check_healthy(tree, 'subscribe/leave cycles')


def test_malformed_control_and_bad_arguments(tree: Tree):
    """500 malformed control messages on a feed stream (and some on a
    sample stream) and bad endpoint arguments, from a raw tractor client:
    each refused with an error naming the problem, the daemons serve on."""
    pids = {n: tree.service_pid(n) for n in ('samplerd', 'feedd.sim')}
    before = {n: figures(p) for n, p in pids.items()}
    watch = Unaffected(standing(tree))
    t0 = time.monotonic()
    res = tree.run_client('raw_client.py', TOPIC, MALFORMED, BAD_CALLS)
    t1 = time.monotonic()
    out = watch.check(t0, max(t1, t0 + WINDOW_S), 'malformed input')
    after = {n: figures(p) for n, p in pids.items()}
    record(
        'malformed input',
        fault=f'{MALFORMED} malformed control messages on a feed stream, '
        f'{res["sample_stream"]["sent"]} on a sample stream, {BAD_CALLS} endpoint calls with bad arguments',
        effect='each refused with an error naming the problem',
        elapsed_s=res['elapsed'],
        **{
            f'{n}_rss_growth_mb': after[n][0] - before[n][0]
            for n in pids
            if after[n] and before[n]
        },
        **out,
    )
    for key in ('feed_stream', 'sample_stream'):
        r = res[key]
        assert r['error_replies'] == r['sent'] and not r['other_replies'], (key, r)
    assert res['bad_calls']['refused'] == res['bad_calls']['sent'], res['bad_calls']
    assert {n: tree.service_pid(n) for n in pids} == pids, 'a daemon died of bad input'
    for n in pids:
        assert after[n][0] - before[n][0] <= RSS_GROWTH_MB, (
            f'{n} RSS {before[n][0]:.0f} -> {after[n][0]:.0f} MB'
        )
        assert after[n][1] - before[n][1] <= FDS_GROWTH, (
            f'{n} fds {before[n][1]} -> {after[n][1]}'
        )
    check_healthy(tree, 'malformed input')


def test_samplerd_sigkill(tree: Tree):
    """SIGKILL of samplerd: the root restarts it (permanent), the feed
    daemon registers its buffers again and its bars catch up contiguously;
    the quote subscribers do not notice; the step subscriber is told and
    subscribes again."""
    pid = tree.service_pid('samplerd')
    mark = tree.steps.mark()
    watch = Unaffected([tree.quotes, tree.frames])
    t_kill = time.monotonic()
    os.kill(pid, signal.SIGKILL)
    ended = tree.steps.wait_for(
        lambda e: e['ev'] == 'ended', RECOVERY_S, 'its step stream ending', start=mark
    )
    again = tree.steps.wait_for(
        lambda e: e['ev'] == 'first' and e['epoch'] > ended['epoch'],
        RECOVERY_S,
        'a step after samplerd came back',
        start=mark,
    )

    def restarted():
        s = {x['name']: x for x in tree.ls()['services']}.get('samplerd')
        return s if s and s['state'] == 'running' and s['pid'] != pid else None

    svc = wait_until(restarted, RECOVERY_S, 'samplerd running again')
    t_back = time.monotonic()
    # the feed daemon's bars step again: the open bar is the current second's
    wall_now = time.time()
    bars = tree.quotes.wait_for(
        lambda e: e['ev'] == 'stats' and e['last_bar'] >= int(wall_now) - 1,
        RECOVERY_S,
        'its 1 s bars stepping again',
        start=tree.quotes.mark(),
    )
    record(
        'samplerd SIGKILL',
        fault='`kill -9` of samplerd',
        effect='restarted by the root; steps resume; the quote subscribers unaffected',
        step_stream_told_s=ended['t'] - t_kill,
        steps_again_s=again['t'] - t_kill,
        bars_stepping_again_s=bars['t'] - t_kill,
        end_error=ended['error'],
        restarts=svc['restarts'],
    )
    out = watch.check(t_kill, max(t_back, t_kill + WINDOW_S), 'samplerd SIGKILL')
    record('samplerd SIGKILL', **out)
    assert_told('steps', ended['error'], 'samplerd SIGKILL')
    assert svc['restarts'] >= 1, (
        'samplerd was not restarted by the root (a client spawned it afresh): '
        f'{ {k: svc[k] for k in ("state", "restarts", "last_error")} }'
    )
    [feed] = tree.ls()['feeds']
    assert feed['topics'][TOPIC]['state'] == 'up', feed['topics'][TOPIC]
    check_healthy(tree, 'samplerd SIGKILL')


def test_feedd_sigkill(tree: Tree):
    """SIGKILL of the feed daemon: the root restarts it, its subscribers are
    told (a clear error) and subscribe again, gap-free from then on, bars
    contiguous; its segments do not outlive it; the step stream runs on."""
    pid = tree.service_pid('feedd.sim')
    subs = [tree.quotes, tree.frames]
    marks = {p.name: p.mark() for p in subs}
    steps = Unaffected([tree.steps])
    t_kill = time.monotonic()
    os.kill(pid, signal.SIGKILL)
    told: dict[str, float] = {}
    back: dict[str, float] = {}
    errors: dict[str, Any] = {}
    for prog in subs:
        ended = prog.wait_for(
            lambda e: e['ev'] == 'ended',
            RECOVERY_S,
            'its feed ending',
            start=marks[prog.name],
        )
        again = prog.wait_for(
            lambda e, ep=ended['epoch']: e['ev'] == 'first' and e['epoch'] > ep,
            RECOVERY_S,
            'a quote from the restarted feed daemon',
            start=marks[prog.name],
        )
        told[prog.name], back[prog.name] = ended['t'] - t_kill, again['t'] - t_kill
        errors[prog.name] = ended['error']
    t_back = time.monotonic()
    wait_until(
        lambda: not any(segment_pid(s) == pid for s in shm_segments()),
        RECOVERY_S,
        "the killed feed daemon's segments unlinked",
    )
    t_unlinked = time.monotonic()
    # from the new epoch on: gap-free, bars contiguous
    t_end = t_back + WINDOW_S
    for prog in subs:
        ev = prog.stats_after(t_end)
        first = [
            e
            for e in prog.since(marks[prog.name], 'stats')
            if e['epoch'] == ev['epoch']
        ][0]
        assert ev['gaps'] == 0 and ev['frame_gaps'] == 0, (
            f'{prog.name}: gaps after the restart: {ev}'
        )
        assert ev['bars_error'] is None, f'{prog.name}: {ev["bars_error"]}'
        assert_drops_counted(prog, ev, 'feedd SIGKILL')
        assert first['n'] <= ev['n']
    svc = {x['name']: x for x in tree.ls()['services']}['feedd.sim']
    record(
        'feed daemon SIGKILL',
        fault='`kill -9` of the feed daemon',
        effect='restarted by the root; its subscribers told, then subscribe again',
        **{f'{n}_told_s': v for n, v in told.items()},
        **{f'{n}_streaming_again_s': v for n, v in back.items()},
        segments_unlinked_s=t_unlinked - t_kill,
        restarts=svc['restarts'],
        end_error=errors['quotes'],
    )
    for name, err in errors.items():
        assert_told(name, err, 'feedd SIGKILL')
    assert svc['state'] == 'running' and svc['pid'] != pid and svc['restarts'] >= 1, svc
    # samplerd lost one registrant and got a new one: its step times stay contiguous
    ev = tree.steps.stats_after(t_end)
    assert not tree.steps.since(steps.marks['steps'], 'ended'), 'the step stream ended'
    assert ev['step_error'] is None, ev['step_error']
    check_healthy(tree, 'feedd SIGKILL')


def test_root_sigkill(tree: Tree):
    """SIGKILL of the root: every actor of the tree ends by itself, no
    segment is left, every client is told; a new root on the same port and
    the clients stream again."""
    fam = tree.remember()
    marks = {p.name: p.mark() for p in standing(tree)}
    t_kill = time.monotonic()
    tree.root.signal(signal.SIGKILL)
    tree.root.p.wait(RECOVERY_S)
    wait_until(
        lambda: not alive(fam),
        RECOVERY_S,
        f"the killed root's actors ending (alive: {sorted(alive(fam))})",
    )
    t_gone = time.monotonic()
    wait_until(
        lambda: not shm_segments(),
        RECOVERY_S,
        f'every segment unlinked (left: {sorted(shm_segments())})',
    )
    t_unlinked = time.monotonic()
    told = {}
    for prog in standing(tree):
        ended = prog.wait_for(
            lambda e: e['ev'] == 'ended',
            RECOVERY_S,
            'its stream ending',
            start=marks[prog.name],
        )
        told[prog.name] = (ended['t'] - t_kill, ended['error'])
    # a new root on the same port: the clients find it again
    t_restart = time.monotonic()
    tree.start_root()
    back = {}
    for prog in standing(tree):
        up = prog.wait_for(
            lambda e: e['ev'] == 'first' and e['t'] >= t_restart,
            60,
            'a message from the new tree',
            start=marks[prog.name],
        )
        back[prog.name] = up['t'] - t_restart
    record(
        'root SIGKILL',
        fault='`kill -9` of the root daemon (`samplerd run`)',
        effect='its actors end by themselves, segments unlinked, clients told; a new root serves them again',
        actors_gone_s=t_gone - t_kill,
        segments_unlinked_s=t_unlinked - t_kill,
        **{f'{n}_told_s': v[0] for n, v in told.items()},
        **{f'{n}_streaming_again_s': v for n, v in back.items()},
        **{f'{n}_end_error': v[1] for n, v in told.items()},
    )
    for name, (_, err) in told.items():
        assert_told(name, err, 'root SIGKILL')
    check_healthy(tree, 'root SIGKILL')


def test_clients_bounded_over_every_fault(tree: Tree):
    """Over the whole run (every fault above, several reconnections each),
    each subscriber program's RSS and open fds stay bounded: reopening a
    stream leaks neither memory nor connections."""
    for prog in standing(tree):
        prog.stats_after(time.monotonic())
        reports = [e for e in prog.since(0, 'stats') if e['rss']]
        first, last = reports[0], reports[-1]
        growth = ((last['rss'] - first['rss']) / 2**20, last['fds'] - first['fds'])
        epochs = last['epoch']
        record(
            f'client {prog.name}',
            fault='all of the above',
            effect=f'{epochs} streams opened over the run',
            rss_growth_mb=growth[0],
            fds_growth=growth[1],
        )
        assert growth[0] <= RSS_GROWTH_MB, f'{prog.name}: RSS grew {growth[0]:.0f} MB'
        assert growth[1] <= FDS_GROWTH, (
            f'{prog.name}: fds {first["fds"]} -> {last["fds"]}'
        )
