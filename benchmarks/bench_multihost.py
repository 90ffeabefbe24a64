"""Benchmark: across hosts -- quote latency from a feed daemon
on host a to a subscriber on host b, direct and through b's relay mirror,
against the same subscriber on a; rows/s of bars streamed to a client on
another host; and the cross-host round trip they all rest on.

Two "hosts" are built as in the multi-host tests (``tests/multihost/
_hosts.py``, imported by path: a network, pid and mount namespace each, on
a private bridge), so this needs root; elsewhere it says why and skips.
Host a runs ``samplerd run --host A``; host b runs ``samplerd run --host B
--upstream A:P`` (the mirror), both with one token.  Then, one probe at a
time, interleaved over ``--reps`` rounds (each probe a fresh client
process that opens a market feed of the sim backend on one topic, reads
its quotes for ``--seconds`` and prints a JSON line):

- ``a, ring``: a client on a of a's feed daemon (the default path there:
  the shared-memory quote ring, shared-memory bars);
- ``a, TCP``: the same on a with the quote stream (``ring=False``) and the
  bars by stream (``remote_bars=True``): the loopback baseline of the paths
  b's direct client takes;
- ``b, direct``: a client on b of a's feed daemon (quotes and bars by
  stream across the bridge);
- ``b, mirror``: a client on b of b's mirror (b's shared memory; the
  mirror holds one stream per topic set from a), its quotes through b's
  ring, and again through the mirror's stream (``ring=False``).

Latency: the sim backend stamps each quote with the wall time it made it
(``fields['time']``); the probe takes ``time.time()`` on arrival.  The
hosts share this machine's clock, so no skew enters (on real hosts it
would: see docs/multihost.md, Clocks).  Rows/s: the snapshot of the bars
(``remote_rows``, all the rows the daemon holds, both periods) over the
time ``open_market_feed`` took, against the shared-memory open's time.
Round trip: 64-byte TCP echoes from b to a, and from a to itself.

The probes run as ``python benchmarks/bench_multihost.py probe ...`` in a
host (the ``__main__`` guard is required).

    python benchmarks/bench_multihost.py            # full size, writes docs
    python benchmarks/bench_multihost.py --quick    # small, prints only
    python benchmarks/bench_multihost.py --save r.json   # keep the raw results
    python benchmarks/bench_multihost.py --load r.json   # report them again
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import socket
import sys
import time
import warnings
from functools import partial
from pathlib import Path
from typing import Any

import trio

warnings.filterwarnings('ignore', category=trio.TrioDeprecationWarning)

HERE = Path(__file__).resolve().parent
#: this file, as the probes run it in a host
ME = str(Path(__file__).resolve())
ROOT = HERE.parent
HOSTS_DIR = ROOT / 'tests' / 'multihost'
PORT = 6161
ECHO_PORT = 6199
TOPIC = 'AAA'
#: probe kinds, in the order each round runs them
KINDS = ('a_ring', 'a_tcp', 'b_direct', 'b_mirror', 'b_mirror_tcp')
LABELS = {
    'a_ring': 'a, ring (same host)',
    'a_tcp': 'a, TCP loopback',
    'b_direct': "b, direct (a's feed daemon)",
    'b_mirror': "b, through b's mirror (ring)",
    'b_mirror_tcp': "b, through b's mirror (TCP)",
}


# --- probes (run inside a host) ----------------------------------------------------


async def probe_feed(
    host: str, port: int, topic: str, seconds: float, ring: bool, remote: str
) -> dict[str, Any]:
    """Open a market feed of ``topic`` through the root at ``host:port``,
    read its quotes for ``seconds`` on a subscription of its own
    (``ring``), and report the open time, the rows it got and the
    quotes' latency."""
    import feedbus
    from tractor_sampler import open_market_feed
    from tractor_sampler._remote import LocalBuffer

    remote_bars = {'auto': None, 'yes': True, 'no': False}[remote]
    t0 = time.perf_counter()
    async with open_market_feed(
        [topic],
        registry_addr=(host, port),
        remote_bars=remote_bars,
        remote_rows=1_000_000,
        loglevel='critical',
    ) as feed:
        open_s = time.perf_counter() - t0
        bufs = feed.buffers[topic]
        rows = sum(len(b) for b in bufs.values())
        is_remote = any(isinstance(b, LocalBuffer) for b in bufs.values())
        lat: list[float] = []
        async with trio.open_nursery() as tn:

            async def drain() -> None:
                # the feed's own subscription: read, so it never backs up
                async for _ in feed:
                    pass

            tn.start_soon(drain)
            async with feedbus.open_feed(feed.portal, [topic], ring=ring) as sub:
                with trio.move_on_after(seconds):
                    async for msg in sub:
                        now = time.time()
                        t = msg.fields.get('time')
                        if t is not None:
                            lat.append(now - float(t))
            tn.cancel_scope.cancel()
    return {'open_s': open_s, 'rows': rows, 'remote': is_remote, 'lat': lat}


async def probe_echo_server(port: int, host: str) -> None:
    """Echo every byte back; print a ready line."""

    async def echo(stream: trio.SocketStream) -> None:
        stream.socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        async for data in stream:
            await stream.send_all(data)

    async with trio.open_nursery() as tn:
        await tn.start(partial(trio.serve_tcp, echo, port, host=host))
        print(json.dumps({'ready': True}), flush=True)


async def probe_echo_client(host: str, port: int, n: int) -> dict[str, Any]:
    """``n`` 64-byte round trips to the echo server, one at a time."""
    stream = await trio.open_tcp_stream(host, port)
    stream.socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    msg = b'x' * 64
    rtt = []
    async with stream:
        for _ in range(n):
            t0 = time.perf_counter()
            await stream.send_all(msg)
            got = 0
            while got < len(msg):
                got += len(await stream.receive_some(len(msg) - got))
            rtt.append(time.perf_counter() - t0)
    return {'rtt': rtt}


def probe(argv: list[str]) -> int:
    kind, rest = argv[0], argv[1:]
    if kind == 'feed':
        host, port, topic, seconds, ring, remote = rest
        out = trio.run(
            probe_feed, host, int(port), topic, float(seconds), ring == '1', remote
        )
    elif kind == 'echo-server':
        trio.run(probe_echo_server, int(rest[0]), rest[1])
        return 0
    elif kind == 'echo-client':
        out = trio.run(probe_echo_client, rest[0], int(rest[1]), int(rest[2]))
    else:
        raise SystemExit(f'unknown probe {kind!r}')
    print(json.dumps(out), flush=True)
    return 0


# --- the run (on this machine, as root) --------------------------------------------


def _hosts_module() -> Any:
    """tests/multihost/_hosts.py, the tests' own namespace helpers."""
    if str(HOSTS_DIR) not in sys.path:
        sys.path.insert(0, str(HOSTS_DIR))
    import _hosts

    return _hosts


def _last_json(res: Any, what: str) -> dict[str, Any]:
    out = res.stdout.decode()
    if res.returncode != 0:
        raise RuntimeError(f'{what} failed:\n{(out + res.stderr.decode())[-3000:]}')
    return json.loads(out.strip().splitlines()[-1])


async def run(cfg: argparse.Namespace) -> dict[str, Any]:
    hm = _hosts_module()
    me = ME
    py = hm.PYTHON
    res: dict[str, Any] = {k: [] for k in KINDS}
    res['rtt_b'], res['rtt_a'] = [], []
    with hm.Network(('a', 'b')) as net:
        a, b = net['a'], net['b']
        token = {'TRACTOR_SERVICES_TOKEN': secrets.token_hex(16)}
        tok = f'TRACTOR_SERVICES_TOKEN={token["TRACTOR_SERVICES_TOKEN"]}'
        procs = []
        try:
            echo = await a.start(py, me, 'probe', 'echo-server', str(ECHO_PORT), a.addr)
            procs.append(echo)
            await hm.read_line(echo)
            root_a = await a.start(
                'env',
                tok,
                py,
                '-m',
                'tractor_sampler',
                'run',
                '--host',
                a.addr,
                '--port',
                str(PORT),
            )
            procs.append(root_a)
            print('a:', await hm.read_line(root_a, timeout=180), flush=True)
            root_b = await b.start(
                'env',
                tok,
                py,
                '-m',
                'tractor_sampler',
                'run',
                '--host',
                b.addr,
                '--port',
                str(PORT),
                '--upstream',
                f'{a.addr}:{PORT}',
            )
            procs.append(root_b)
            print('b:', await hm.read_line(root_b, timeout=180), flush=True)

            where = {
                'a_ring': (a, a.addr, '1', 'auto'),
                'a_tcp': (a, a.addr, '0', 'yes'),
                'b_direct': (b, a.addr, '0', 'auto'),
                'b_mirror': (b, b.addr, '1', 'auto'),
                'b_mirror_tcp': (b, b.addr, '0', 'auto'),
            }

            async def feed_probe(kind: str, seconds: float) -> dict[str, Any]:
                host, reg, ring, remote = where[kind]
                return _last_json(
                    await host.run(
                        py,
                        me,
                        'probe',
                        'feed',
                        reg,
                        str(PORT),
                        TOPIC,
                        str(seconds),
                        ring,
                        remote,
                        timeout=300,
                        env=token,
                    ),
                    f'probe {kind}',
                )

            # warm-up: spawns a's feed daemon and b's mirror, starts the topic
            for kind in ('a_ring', 'b_mirror'):
                await feed_probe(kind, 1.0)
            for rnd in range(cfg.reps):
                for host, key in ((b, 'rtt_b'), (a, 'rtt_a')):
                    out = _last_json(
                        await host.run(
                            py,
                            me,
                            'probe',
                            'echo-client',
                            a.addr,
                            str(ECHO_PORT),
                            str(cfg.pings),
                        ),
                        'echo client',
                    )
                    res[key] += out['rtt']
                for kind in KINDS:
                    out = await feed_probe(kind, cfg.seconds)
                    res[kind].append(out)
                    print(
                        f'round {rnd + 1}: {kind}: open {out["open_s"]:.2f} s, '
                        f'{out["rows"]} rows (stream: {out["remote"]}), '
                        f'{len(out["lat"])} quotes',
                        flush=True,
                    )
        finally:
            for proc in reversed(procs):
                await hm.stop(proc)
    res['load_end'] = list(os.getloadavg())
    return res


def report(res: dict[str, Any], cfg: argparse.Namespace, write: bool) -> None:
    from _plots import save_curves
    from _report import (
        machine_line,
        md_table,
        percentile,
        text_table,
        wrap,
        write_section,
    )

    load = ''
    if res.get('load_end'):
        load = ', load average {:.1f} / {:.1f} / {:.1f} at its end'.format(
            *res['load_end']
        )

    def p(xs: list[float], q: float) -> float:
        return percentile(xs, q) * 1e3 if xs else float('nan')

    rtt_rows = [
        ('b -> a (across the bridge)', len(res['rtt_b'])),
        ('a -> a (loopback)', len(res['rtt_a'])),
    ]
    rtt_table = [
        (name, n, f'{p(xs, 50):.3f}', f'{p(xs, 99):.3f}')
        for (name, n), xs in zip(rtt_rows, (res['rtt_b'], res['rtt_a']), strict=True)
    ]
    rtt_headers = ('64-byte TCP echo', 'round trips', 'p50 ms', 'p99 ms')

    lat_rows = []
    lat_fig: dict[str, list[float]] = {}
    for kind in KINDS:
        outs = res[kind]
        lat = [x for o in outs for x in o['lat']]
        lat_fig[kind] = [p(lat, q) for q in (50, 90, 99)]
        rows = [o['rows'] for o in outs]
        opens = [o['open_s'] for o in outs]
        rate = [o['rows'] / o['open_s'] for o in outs if o['remote']]
        lat_rows.append(
            (
                LABELS[kind],
                len(lat),
                f'{p(lat, 50):.2f}',
                f'{p(lat, 99):.2f}',
                'stream' if all(o['remote'] for o in outs) else 'shared memory',
                f'{min(rows):,}',
                f'{sorted(opens)[len(opens) // 2]:.2f}',
                f'{sorted(rate)[len(rate) // 2]:,.0f}' if rate else '-',
            )
        )
    lat_headers = (
        'subscriber',
        'quotes',
        'latency p50 ms',
        'latency p99 ms',
        'bars by',
        'rows at open',
        'open s (median)',
        'rows/s at open',
    )
    print()
    print(text_table(rtt_headers, rtt_table))
    print()
    print(text_table(lat_headers, lat_rows))
    if not write:
        return
    plot = save_curves(
        'multihost',
        [50, 90, 99],
        {LABELS[k]: lat_fig[k] for k in KINDS},
        title='Quote latency, feed daemon on a to a subscriber',
        xlabel='percentile',
        ylabel='ms',
        note=f'sim backend, 100 quotes/s, {cfg.reps} x {cfg.seconds:g} s per subscriber',
    )
    body = '\n\n'.join(
        [
            wrap(
                '`benchmarks/bench_multihost.py`: two hosts built as in the '
                'multi-host tests (network, pid and mount namespaces on a private '
                'bridge, one machine), `samplerd run --host A` on a and `samplerd '
                'run --host B --upstream A:P` on b (the relay mirror). First the '
                f'round trip everything rests on: {cfg.pings:,} 64-byte TCP echoes '
                'per round to an echo server on a, from b and from a itself.'
            ),
            md_table(rtt_headers, rtt_table),
            wrap(
                'Then, one client process at a time, interleaved over '
                f'{cfg.reps} round(s): each opens a market feed of the sim '
                f'backend on {TOPIC} (100 quotes/s) and reads its quotes for '
                f'{cfg.seconds:g} s on a subscription of its own. Latency: the '
                "quote's own wall-time stamp (the sim backend makes it) to its "
                'arrival; the hosts share one clock here, so no skew enters. '
                '*a, ring*: a client on a (the default there: quote ring, shared '
                'memory); *a, TCP loopback*: the same with the quote stream '
                '(`ring=False`) and the bars by stream (`remote_bars=True`), the '
                "paths of b's direct client on one host; *b, direct*: a client on "
                "b of a's feed daemon; *b, mirror*: a client on b of b's mirror "
                "(b's shared memory, one stream per topic set from a), quotes "
                "through b's ring, and again through the mirror's stream. "
                'Rows at open: the bars the client had when `open_market_feed` '
                'returned (by stream: the whole snapshot, both periods); rows/s: '
                'those over the open time (which includes finding and attaching '
                'the feed, so it is a floor). The machine is shared (2 cores, '
                'loaded by other test runs while this ran' + load + '): the '
                'absolute figures, the p99s above all, are noisy; compare rows '
                'of one run.'
            ),
            md_table(lat_headers, lat_rows),
            wrap(
                'Reading the figures: the hosts here are namespaces on one '
                "machine, so the bridge costs what the kernel's veth path costs, "
                'hundredths to tenths of a millisecond over loopback (the echo); '
                "between machines add the network's round trip. *b, direct* "
                'against *a, TCP loopback* compares the same paths with and '
                'without the crossing: here the difference is below the noise '
                '(the two trade places between runs). '
                "The mirror adds a hop (a's feed daemon to the mirror by stream, "
                'the mirror republishing on b): its worth is one stream per topic '
                'set per host however many clients b has, and shared-memory bars '
                'on b, not latency. Ring against TCP on one host: a ring reader '
                'that finds nothing new sleeps (1 ms doubling to 8 ms), which at '
                '100 quotes/s can cost it a few ms; on this loaded machine these '
                'two trade places between runs too. The p99s measure the load (other test '
                'runs on 2 shared cores), not the paths. Rows at open by stream: '
                "about 5,000 rows (the sim's history, both periods); their rate is "
                "a floor, bounded by the open's other round trips, and varies with "
                'the load.'
            ),
            '![quote latency across hosts](img/multihost.png)' if plot else '',
            machine_line(),
        ]
    )
    write_section('multihost', 'Across hosts: latency, bars, round trip', body)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ['probe']:
        return probe(argv[1:])
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--seconds', type=float, default=10.0, help='quotes read per probe')
    p.add_argument('--reps', type=int, default=3, help='rounds')
    p.add_argument('--pings', type=int, default=2000, help='echoes per round')
    p.add_argument('--quick', action='store_true', help="small sizes; don't write docs")
    p.add_argument('--save', metavar='FILE', help="write the run's raw results (JSON)")
    p.add_argument(
        '--load', metavar='FILE', help='report the raw results of an earlier run'
    )
    p.add_argument(
        '--write',
        action=argparse.BooleanOptionalAction,
        default=None,
        help='write docs/benchmarks.md (default: yes, unless --quick)',
    )
    cfg, _ = p.parse_known_args(argv)
    if cfg.quick:
        cfg.seconds = cfg.seconds if '--seconds' in argv else 3.0
        cfg.reps = cfg.reps if '--reps' in argv else 1
        cfg.pings = cfg.pings if '--pings' in argv else 300
    write = (not cfg.quick) if cfg.write is None else cfg.write
    if cfg.load:
        saved = json.loads(Path(cfg.load).read_text())
        vars(cfg).update(saved['cfg'])
        res = saved['res']
    elif reason := _hosts_module().unavailable():
        print(f'bench_multihost: skipped: needs network namespaces: {reason}')
        return 0
    else:
        res = trio.run(run, cfg)
    if cfg.save:
        keep = {k: getattr(cfg, k) for k in ('seconds', 'reps', 'pings')}
        Path(cfg.save).write_text(json.dumps({'cfg': keep, 'res': res}))
    report(res, cfg, write)
    return 0


if __name__ == '__main__':
    sys.exit(main())
