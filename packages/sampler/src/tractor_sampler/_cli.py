"""
The ``samplerd`` command (also ``python -m tractor_sampler``).

::

    samplerd [run]                 start the root daemon and samplerd; print a ready line
    samplerd ls [what] [--json]    services, feeds (topics, subscribers), samplerd, backends
    samplerd watch TOPIC           a topic's bars, live, in the terminal
    samplerd demo                  everything on the simulated backend, and the live view

Common flags, as ``pikerd`` has them: ``-l/--loglevel``, ``--pdb``,
``--host`` and ``--port`` (the registry; default ``$TRACTOR_REGISTRY_ADDR``
or tractor's ``127.0.0.1:1616``).  Ctrl-C and SIGTERM stop everything
cleanly with exit status 0; errors print one line and exit with 1.

"""

from __future__ import annotations

import argparse
import contextvars
import json
import math
import os
import shutil
import signal
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from contextlib import asynccontextmanager as acm
from contextlib import contextmanager
from typing import Any, TextIO

import trio

from tractor_services import (
    PeerDisconnected,
    RegistryInUse,
    RegistryUnreachable,
    ServiceError,
    cancel_on_signals,
    compat,
    default_registry_addr,
    is_loopback,
    open_service_root,
    qualify,
)

from . import __version__
from ._client import spawn_samplerd
from ._errors import PluginError
from ._feed import open_market_feed
from ._feedd import FEEDD_PREFIX
from ._info import BackendInfo, TreeInfo, to_json_builtins
from ._introspect import PARTS, introspect
from ._plugins import DEFAULT_BACKEND, get_backends
from ._view import live_view

PROG = 'samplerd'
LS_WHAT = ('all', *PARTS)


class CliError(Exception):
    """An error the command reports in one line (exit status 1)."""


# --- arguments ----------------------------------------------------------------


def _common(defaults: bool) -> argparse.ArgumentParser:
    """The flags every subcommand takes (also before the subcommand)."""
    d: Callable[[Any], Any] = (
        (lambda v: v) if defaults else (lambda v: argparse.SUPPRESS)
    )
    p = argparse.ArgumentParser(add_help=False)
    g = p.add_argument_group('common options')
    g.add_argument(
        '-l',
        '--loglevel',
        default=d(None),
        metavar='LEVEL',
        help="tractor's log level for every actor (e.g. info, runtime, cancel)",
    )
    g.add_argument(
        '--pdb',
        action='store_true',
        default=d(False),
        help="tractor's debug mode: crashed actors drop into pdb",
    )
    g.add_argument(
        '--host',
        default=d(None),
        help='registry host (default: $TRACTOR_REGISTRY_ADDR, else 127.0.0.1); '
        '`run` binds it and its services bind it too: give a routable address '
        '(not 0.0.0.0) to reach the tree from other hosts',
    )
    g.add_argument(
        '--port',
        type=_port,
        default=d(None),
        help='registry port (default: $TRACTOR_REGISTRY_ADDR, else 1616)',
    )
    return p


def _port(text: str) -> int:
    """``--port``: a TCP port number, 0 to 65535."""
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f'{text!r} is not a port number') from None
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f'{port} is out of range (0 to 65535)')
    return port


def build_parser() -> argparse.ArgumentParser:
    common = _common(defaults=False)
    parser = argparse.ArgumentParser(
        prog=PROG,
        parents=[_common(defaults=True)],
        description='samplerd: shared-memory OHLCV bars stepped and broadcast across tractor actors.',
        epilog='Without a command, `run`. Ctrl-C or SIGTERM stops cleanly (exit status 0).',
    )
    parser.add_argument(
        '-V', '--version', action='version', version=f'%(prog)s {__version__}'
    )
    sub = parser.add_subparsers(dest='cmd', metavar='COMMAND')

    run = sub.add_parser(
        'run',
        parents=[common],
        help='start the root daemon (registry + service manager) and samplerd',
        description='Start the root daemon at the registry address, with samplerd, and '
        'print one ready line. Feed daemons start when clients ask for them.',
    )
    _add_upstream(run)
    _add_join(run)
    _add_data_dir(run)
    _add_record(run)
    _add_linger(run)
    _add_config(run)
    _add_metrics(run)
    _add_stop(sub, common)
    _add_export(sub, common)
    _add_bars(sub, common)
    _add_chart(sub, common)

    ls = sub.add_parser(
        'ls',
        parents=[common],
        help='list services, feeds and their subscribers, samplerd, backends',
        description='List what runs under the root daemon (services, feeds with their '
        'topics and subscribers, samplerd) and the installed backends.',
    )
    ls.add_argument('what', nargs='?', default='all', choices=LS_WHAT)
    ls.add_argument('--json', action='store_true', help='print JSON instead of tables')

    for name, help_ in (
        ('watch', "watch a topic's bars, last price, ticks/s and subscribers live"),
        ('demo', 'start everything on the simulated backend and watch it live'),
    ):
        w = sub.add_parser(name, parents=[common], help=help_, description=help_)
        if name == 'watch':
            w.add_argument('topic', help='the symbol to watch')
            w.add_argument(
                '--backend', default=DEFAULT_BACKEND, help='default: %(default)s'
            )
        else:
            w.add_argument(
                '--topics',
                default='AAA,BBB',
                help='comma-separated symbols (default: %(default)s)',
            )
            w.add_argument(
                '--tick-rate',
                type=float,
                default=50.0,
                help='simulated quotes per second per symbol (default: %(default)s)',
            )
            w.add_argument('--seed', type=int, default=0, help='the simulation seed')
        w.add_argument(
            '--period',
            type=float,
            default=1.0,
            help='bar period to show, 1 or 60 (default: %(default)s)',
        )
        w.add_argument(
            '--rows',
            type=int,
            default=None,
            help='bars shown at most (default: as many as the terminal width holds; '
            'the table: 10)',
        )
        w.add_argument(
            '--table',
            action='store_true',
            help='a table of the bars instead of the chart (always, when stdout '
            'is not a terminal)',
        )
        w.add_argument(
            '--fps',
            type=float,
            default=None,
            help='redraws per second (default: 4 on a terminal, 1 otherwise)',
        )
        w.add_argument(
            '--duration',
            type=float,
            default=None,
            help='stop after showing bars this many seconds (counted from the first frame; default: run until Ctrl-C)',
        )
        w.add_argument(
            '--plugin',
            action='append',
            default=[],
            metavar='MODULE',
            help='also load this plugin module in the feed daemon (repeatable)',
        )
    return parser


def registry_addr(args: argparse.Namespace) -> tuple[str, int]:
    host, port = default_registry_addr()
    return (args.host or host, args.port if args.port is not None else port)


# --- signals -------------------------------------------------------------------


@acm
async def _stop_on_signals() -> AsyncIterator[trio.CancelScope]:
    """A scope that SIGINT (Ctrl-C) or SIGTERM cancels: the block ends and
    everything under it is torn down in order.  Enter it *inside* the root
    actor: the runtime's own teardown must not run in a cancelled scope
    (it would time out talking to its children, then kill them).

    A stop signal repeated while the block ends is absorbed (the receiver
    runs outside the scope it cancels, so the first signal does not end
    it); once the block has ended because of one, SIGINT and SIGTERM stay
    ignored for the rest of the process (the root's own teardown and the
    interpreter's exit follow): a Ctrl-C pressed again there would
    otherwise cut the root's teardown short with ``KeyboardInterrupt``, or,
    once Python has reset its handlers on the way out, kill the process by
    SIGINT instead of exit status 0.  The receiver puts back, as it closes,
    the handlers it found: those are set to "ignore" before it starts, so
    no signal lands in between on trio's ``KeyboardInterrupt`` handler."""
    stops = (signal.SIGINT, signal.SIGTERM)
    found = {signum: signal.getsignal(signum) for signum in stops}
    _ignore_stop_signals()
    cs = trio.CancelScope()
    try:
        async with trio.open_nursery() as tn:
            await tn.start(cancel_on_signals, cs, stops)
            try:
                with cs:
                    yield cs
            finally:
                tn.cancel_scope.cancel()
    finally:
        if not cs.cancel_called:  # ended on its own: signals as they were
            for signum, handler in found.items():
                if handler is not None:  # (None: not set from Python)
                    signal.signal(signum, handler)


def _ignore_stop_signals() -> None:
    """SIGINT and SIGTERM ignored from now on (the process is stopping)."""
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, signal.SIG_IGN)


# --- run ----------------------------------------------------------------------


async def cmd_run(args: argparse.Namespace, out: TextIO) -> None:
    _check_metrics(args)
    _set_linger(args)
    if getattr(args, 'join', None) is not None:
        return await _run_joined(args, out)
    addr = registry_addr(args)
    _set_upstream(args, addr)
    _set_data_dir(args)
    _set_record(args)
    async with _root(args, addr) as mngr, _stop_on_signals():
        _warn_if_exposed(addr, getattr(mngr, 'token_file', None))
        pid = await spawn_samplerd(addr, **_samplerd_start(args))
        await _start_metrics(args, addr, mngr, out)
        async with _boot_topics(args, addr) as boot:
            _ready(out, addr, f'samplerd pid {pid}' + _upstream_note(args) + boot)
            with _systemd_notified(f'registry {addr[0]}:{addr[1]}{boot}'):
                await trio.sleep_forever()


def _add_join(run: argparse.ArgumentParser) -> None:
    """``run --join HOST:PORT [--label NAME]``: services on this host in
    another root's tree (docs/multihost.md, "Services on a chosen host")."""
    run.add_argument(
        '--join',
        default=None,
        metavar='HOST:PORT',
        help='join the registry of the root at HOST:PORT as a host of its tree: '
        'this root (on --host, default: the address that routes there) has its '
        'own service manager and samplerd; its services register there as '
        '<name>@<label> (docs/multihost.md, "Services on a chosen host")',
    )
    run.add_argument(
        '--label',
        default=None,
        metavar='NAME',
        help='with --join: the name of this host in the tree (default: --host)',
    )


async def _run_joined(args: argparse.Namespace, out: TextIO) -> None:
    """``samplerd run --join``: a joined root (its own manager, in the
    registry at ``--join``) with this host's samplerd (``samplerd@<label>``)."""
    from tractor_services import AddressError, open_join_root, parse_addr
    from tractor_services._addr import route_host

    if getattr(args, 'upstream', None) is not None:
        raise CliError('--join and --upstream cannot be combined (yet): pick one')
    try:
        addr = parse_addr(args.join)
    except ValueError as err:
        raise CliError(f'--join {args.join}: {err}') from None
    try:
        host = args.host or route_host(addr)
    except AddressError as err:
        raise CliError(f'--join {args.join}: {err}') from None
    async with (
        open_join_root(
            addr,
            host=host,
            label=args.label,
            loglevel=args.loglevel,
            debug_mode=args.pdb,
            handle_signals=False,
        ) as mngr,
        _stop_on_signals(),
    ):
        label = mngr.host_label
        pid = await spawn_samplerd(addr, **_samplerd_start(args))
        print(
            f'{PROG} ready: joined the registry {addr[0]}:{addr[1]} as host {label} '
            f'({host}), root pid {os.getpid()}, samplerd@{label} pid {pid}',
            file=out,
            flush=True,
        )
        with _systemd_notified(f'joined {addr[0]}:{addr[1]} as {label}'):
            await trio.sleep_forever()


def _add_upstream(run: argparse.ArgumentParser) -> None:
    """``run --upstream HOST:PORT``: the relay mirror (docs/multihost.md)."""
    run.add_argument(
        '--upstream',
        default=None,
        metavar='HOST:PORT',
        help="mirror the feed daemons of the root at HOST:PORT: this root's feed "
        'daemons take quotes and bars from there and keep local shared-memory '
        'buffers for this host\'s clients (docs/multihost.md, "The relay mirror")',
    )


def _set_upstream(args: argparse.Namespace, addr: tuple[str, int]) -> None:
    """``--upstream`` checked (one line naming the problem, before
    anything starts) and set in this root's environment, which the feed
    daemons it spawns inherit (they run as relay mirrors then)."""
    from ._mirror import UPSTREAM_ENV, parse_upstream

    text = getattr(args, 'upstream', None)
    if text is None:
        return
    try:
        host, port = parse_upstream(text)
    except ValueError as err:
        raise CliError(f'--upstream: {err}') from None
    if (host, port) == tuple(addr):
        raise CliError(
            f'--upstream {host}:{port} is this root itself: give the registry '
            'address of the root to mirror'
        )
    os.environ[UPSTREAM_ENV] = f'{host}:{port}'


def _upstream_note(args: argparse.Namespace) -> str:
    text = getattr(args, 'upstream', None)
    return f', mirroring {text}' if text else ''


def _warn_if_exposed(
    addr: tuple[str, int], token_file: Any = None, err: TextIO | None = None
) -> None:
    """A root on a non-loopback ``--host`` is reachable from other hosts
    (that is what it is for: docs/multihost.md): say so on stderr, once,
    with where its token is."""
    if is_loopback(addr[0]):
        return
    token = (
        f"starting and stopping them needs the root's token, in {token_file} "
        '(give it to clients on other hosts as $TRACTOR_SERVICES_TOKEN); '
        if token_file
        else ''
    )
    print(
        f'{PROG}: warning: the root listens on {addr[0]}:{addr[1]}, not on loopback: '
        f'anyone who can reach that port can list its services; {token}'
        'firewall the port to the hosts that need it (docs/multihost.md)',
        file=err or sys.stderr,
        flush=True,
    )


@acm
async def _root(args: argparse.Namespace, addr: tuple[str, int]) -> AsyncIterator[Any]:
    try:
        async with open_service_root(
            addr,
            name='samplerd_root',
            loglevel=args.loglevel,
            debug_mode=args.pdb,
            handle_signals=False,
        ) as mngr:
            yield mngr
    except RegistryInUse as err:
        raise CliError(
            f'{err} (is a samplerd already running there? `samplerd ls` shows it)'
        ) from None


def _ready(out: TextIO, addr: tuple[str, int], extra: str = '') -> str:
    """Print the ready line; returns it (the live view keeps it on top)."""
    line = f'{PROG} ready: registry {addr[0]}:{addr[1]}, root pid {os.getpid()}' + (
        f', {extra}' if extra else ''
    )
    print(line, file=out, flush=True)
    return line


# --- ls -----------------------------------------------------------------------


@acm
async def _client(
    args: argparse.Namespace, addr: tuple[str, int], name: str
) -> AsyncIterator[None]:
    await _require_samplerd(addr)
    # a client reports its errors in one line: the runtime's own error logs
    # (tracebacks of what it passes on to us) only with an explicit -l
    async with compat.open_root_actor(
        addr,
        name,
        loglevel=args.loglevel or 'critical',
        debug_mode=args.pdb,
    ):
        yield


async def _require_samplerd(addr: tuple[str, int]) -> None:
    """A client command's one line when nothing answers at ``addr``."""
    if not await compat.registry_reachable(addr):
        raise CliError(
            f'no samplerd answers at {addr[0]}:{addr[1]}: start one with `samplerd run`'
        )


def list_backends() -> list[BackendInfo]:
    try:
        return get_backends().info()
    except PluginError as err:
        raise CliError(str(err)) from None


#: the widest a table cell gets in `samplerd ls` (a longer one, e.g. a long
#: topic name, is cut with an ellipsis; `--json` has it whole)
CELL_MAX = 60


#: the terminal's width while `samplerd ls` renders to one (None: no limit
#: but CELL_MAX, e.g. into a pipe or a file)
_LS_WIDTH: contextvars.ContextVar[int | None] = contextvars.ContextVar(
    '_LS_WIDTH', default=None
)
#: a column is never cut narrower than this to fit the terminal
CELL_MIN = 8
#: room kept for the indent tables are printed with (at most 6 spaces)
_INDENT = 6


def _cell(value: Any, width: int = CELL_MAX) -> str:
    text = '' if value is None else str(value)
    return text if len(text) <= width else text[: max(width - 1, 0)] + '…'


def _table(rows: Sequence[Sequence[Any]], head: Sequence[str]) -> list[str]:
    """Aligned columns, each cell at most CELL_MAX characters (cut with an
    ellipsis); rendering to a terminal (:data:`_LS_WIDTH`), the widest
    columns are cut further, down to CELL_MIN, until a row fits it."""
    cells = [[str(c) for c in head]] + [[_cell(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(head))]
    limit = _LS_WIDTH.get()
    if limit is not None:
        room = limit - _INDENT - 2 * (len(widths) - 1)
        while sum(widths) > room:
            i = max(range(len(widths)), key=lambda k: widths[k])
            if widths[i] <= CELL_MIN:
                break
            widths[i] -= 1
        cells = [[_cell(c, w) for c, w in zip(r, widths, strict=True)] for r in cells]
    return [
        '  '.join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()
        for r in cells
    ]


def _ago(t: float | None, now: float) -> str:
    if not t:
        return ''
    s = max(0.0, now - t)
    return (
        f'{s:.0f}s' if s < 120 else f'{s / 60:.0f}m' if s < 7200 else f'{s / 3600:.1f}h'
    )


def render_ls(report: TreeInfo, width: int | None = None) -> str:
    """``samplerd ls``: the tables of what :func:`introspect` returned,
    fitted to ``width`` columns if given (a terminal's)."""
    token = _LS_WIDTH.set(width)
    try:
        return _render_ls(report)
    finally:
        _LS_WIDTH.reset(token)


def _render_ls(report: TreeInfo) -> str:
    now = time.time()
    lines: list[str] = [f'registry {report.registry}']
    if report.services is not None:
        lines += ['', 'services']
        lines += [
            '  ' + r
            for r in _table(
                [
                    (
                        s.name,
                        s.state,
                        s.pid,
                        _ago(s.started_at, now),
                        s.restarts,
                        (s.last_error or '')[:60],
                    )
                    for s in report.services
                ],
                ('name', 'state', 'pid', 'up', 'restarts', 'last error'),
            )
        ]
    if report.feeds is not None:
        lines += ['', 'feeds']
        if not report.feeds:
            lines.append('  (none: a feed daemon starts when a client opens a feed)')
        for f in report.feeds:
            src = (
                f'{f.dist} {f.version}' if f.dist == 'builtin' and f.version else f.dist
            )
            lines.append(f'  {qualify(FEEDD_PREFIX + f.backend, f.host)}  ({src})')
            lines += _store_lines(f.store)
            lines += _ticklog_lines(f.topics)
            rows = []
            for name, t in f.topics.items():
                up = max(1e-9, f.time - t.started_at)
                rows.append(
                    (
                        name,
                        t.state,
                        t.last,
                        t.quotes,
                        f'{t.quotes / up:.0f}',
                        t.trades,
                        t.restarts,
                        len(t.subscribers),
                        (t.last_error or '')[:60],
                    )
                )
            lines += [
                '    ' + r
                for r in _table(
                    rows,
                    (
                        'topic',
                        'state',
                        'last',
                        'quotes',
                        'avg q/s',
                        'trades',
                        'restarts',
                        'subs',
                        'last error',
                    ),
                )
            ]
            for name, t in f.topics.items():
                if t.subscribers:
                    lines.append(f'    subscribers of {name}')
                    lines += [
                        '      ' + r
                        for r in _table(
                            [
                                (
                                    s.rate or 'all',
                                    s.delivered,
                                    s.messages,
                                    s.conflated,
                                    s.dropped,
                                    s.overruns,
                                )
                                for s in t.subscribers
                            ],
                            (
                                'rate Hz',
                                'delivered',
                                'messages',
                                'conflated',
                                'dropped',
                                'overruns',
                            ),
                        )
                    ]
    if report.samplerd is not None:
        sd = report.samplerd
        lines += ['', f'samplerd  pid {sd.pid}  late steps {sd.late_steps}']
        lines += [
            '  ' + r
            for r in _table(
                [
                    (
                        f'{p:g}',
                        sd.buffers.get(p, 0),
                        sd.steps.get(p, 0),
                        sd.subscribers.get(f'period:{p:g}', 0),
                    )
                    for p in sd.periods
                ],
                ('period s', 'buffers', 'steps', 'subscribers'),
            )
        ]
    if report.backends is not None:
        lines += ['', 'backends']
        lines += [
            '  ' + r
            for r in _table(
                [
                    (
                        b.name,
                        b.version or '',
                        b.dist,
                        ', '.join(
                            k for k in ('history', 'symbol_info') if getattr(b, k)
                        )
                        or '-',
                    )
                    for b in report.backends
                    if b.error is None
                ],
                ('name', 'version', 'from', 'also provides'),
            )
        ]
        # a broken plugin: one whole line each (left out, the rest works)
        lines += [
            f'  BROKEN plugin {b.name!r}: {b.error}'
            for b in report.backends
            if b.error is not None
        ]
    lines += bars_and_clock_lines(report)
    return '\n'.join(lines)


def bars_and_clock_lines(report: TreeInfo) -> list[str]:
    """`samplerd ls`: per topic, the trades its bar writer placed late
    (correcting closed bars), held (ahead of the open bar), or could not
    place, and samplerd's clock jumps and gaps (docs/reliability.md, "Bars
    and clocks")."""
    lines: list[str] = []
    rows = [
        (
            name,
            t.bars.late,
            t.bars.held,
            t.bars.corrected,
            t.bars.unplaced,
            t.bars.pending,
        )
        for f in report.feeds or []
        for name, t in f.topics.items()
    ]
    if rows:
        lines += ['', 'bars']
        lines += [
            '  ' + r
            for r in _table(
                rows, ('topic', 'late', 'held', 'corrected', 'unplaced', 'pending')
            )
        ]
    sd = report.samplerd
    if sd is not None:
        lines.append(
            f'samplerd clock  jumps {sd.clock_jumps} (largest {sd.max_clock_jump_s:+.3f} s)  '
            f'gaps {sum(sd.gaps.values())} ({sum(sd.gap_bars.values())} bars)  '
            f'caught up {sd.caught_up}  skipped {sd.skipped}'
        )
    return lines


def _ls_backends_registry(args: argparse.Namespace) -> str:
    """The ``registry`` line of ``ls backends`` (which asks no daemon): the
    address the other commands would use when one is given (``--host``,
    ``--port`` or ``$TRACTOR_REGISTRY_ADDR``), ``-`` when none is."""
    from tractor_services._addr import REGISTRY_ENV

    if args.host or args.port is not None or os.environ.get(REGISTRY_ENV):
        host, port = registry_addr(args)
        return f'{host}:{port}'
    return '-'


async def cmd_ls(args: argparse.Namespace, out: TextIO) -> None:
    parts = PARTS if args.what == 'all' else (args.what,)
    if args.what == 'backends':
        report = TreeInfo(
            registry=_ls_backends_registry(args), backends=list_backends()
        )
    else:
        addr = registry_addr(args)
        async with _client(args, addr, 'samplerd_ls'):
            try:
                report = await introspect(addr, parts=parts)
            except PluginError as err:
                raise CliError(str(err)) from None
    # a terminal's width when printing to one; into a pipe or a file the
    # cells are cut at CELL_MAX only (--json: always whole)
    width = shutil.get_terminal_size().columns if out.isatty() else None
    text = (
        json.dumps(to_json_builtins(report), indent=2)
        if args.json
        else render_ls(report, width)
    )
    print(text, file=out, flush=True)


# --- the live view (drawn by _view) -----------------------------------------


def _check_view_args(args: argparse.Namespace) -> None:
    if args.period not in (1.0, 60.0):
        raise CliError(
            f'--period {args.period:g}: the feed daemons keep 1 s and 60 s bars'
        )
    if args.duration is not None and not args.duration > 0:
        raise CliError(f'--duration {args.duration} must be > 0')
    if args.fps is not None and not (0 < args.fps <= 60):
        raise CliError(f'--fps {args.fps:g} must be in (0, 60]')
    if args.rows is not None and args.rows < 1:
        raise CliError(f'--rows {args.rows} must be >= 1')
    _check_topic_args(args)


def _check_topic_args(args: argparse.Namespace) -> None:
    """``watch TOPIC`` / ``demo --topics``: a mistyped symbol (``' '``,
    ``'AAA;BBB'``) is one line naming it, before anything starts; demo's
    go to ``sim``, whose own rule applies too (backends/sim.py)."""
    from ._feedd import check_topic_name

    if getattr(args, 'topics', None) is None:
        names, what = [args.topic], 'topic'
    else:
        names = [t.strip() for t in args.topics.split(',') if t.strip()]
        what = '--topics'
        if not names:
            raise CliError(f'--topics {args.topics!r}: no symbol given')
    try:
        for name in names:
            check_topic_name(name)
            if what == '--topics':
                from .backends.sim import _check_symbol

                _check_symbol(name)
    except ValueError as err:
        raise CliError(f'{what}: {err}') from None


async def cmd_watch(args: argparse.Namespace, out: TextIO) -> None:
    _check_view_args(args)
    addr = registry_addr(args)
    async with _client(args, addr, 'samplerd_watch'), _stop_on_signals():
        async with open_market_feed(
            [args.topic],
            args.backend,
            tick_throttle=args.fps or 4.0,
            registry_addr=addr,
            plugins=args.plugin,
            loglevel=args.loglevel,
        ) as feed:
            # --duration counts from the first frame: starting the feed
            # (a feed daemon spawned, history fetched) is not cut short
            with trio.move_on_after(_duration(args)):
                await live_view(feed, args, out)


async def cmd_demo(args: argparse.Namespace, out: TextIO) -> None:
    _check_view_args(args)
    if args.host is None and args.port is None:
        addr = (
            '127.0.0.1',
            _free_port(),
        )  # a demo of its own, beside any running samplerd
    else:
        addr = registry_addr(args)
    topics = [t.strip() for t in args.topics.split(',') if t.strip()]
    async with _root(args, addr), _stop_on_signals():
        pid = await spawn_samplerd(addr)
        async with open_market_feed(
            topics,
            DEFAULT_BACKEND,
            tick_throttle=args.fps or 4.0,
            registry_addr=addr,
            config={'tick_rate': args.tick_rate, 'seed': args.seed},
            plugins=args.plugin,
            loglevel=args.loglevel,
        ) as feed:
            ready = _ready(
                out,
                addr,
                f'samplerd pid {pid}, feed {", ".join(topics)} on {DEFAULT_BACKEND}',
            )
            with trio.move_on_after(_duration(args)):
                await live_view(feed, args, out, head=[ready])


def _duration(args: argparse.Namespace) -> float:
    """``--duration``: seconds of live view (from the first frame)."""
    return args.duration if args.duration else math.inf


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


# --- Prometheus metrics: run --metrics-port ---------------------------------------


class _MetricsPort(argparse.Action):
    """``--metrics-port``: refused in one line, before anything starts,
    when prometheus_client (the ``metrics`` extra) is not installed."""

    def __call__(
        self, parser: Any, namespace: Any, values: Any, option_string: Any = None
    ) -> None:
        from ._metrics import MetricsUnavailable, require_prometheus

        try:
            require_prometheus()
        except MetricsUnavailable as err:
            parser.exit(1, f'{PROG}: error: {option_string}: {err}\n')
        setattr(namespace, self.dest, values)


def _add_metrics(run: argparse.ArgumentParser) -> None:
    """``run --metrics-port N [--metrics-host HOST]`` (docs/metrics.md)."""
    run.add_argument(
        '--metrics-port',
        type=_port,
        action=_MetricsPort,
        default=None,
        metavar='N',
        help='serve Prometheus metrics on http://127.0.0.1:N/metrics (off by default; '
        "0: a free port; needs pip install 'tractor-sampler[metrics]'; docs/metrics.md)",
    )
    run.add_argument(
        '--metrics-host',
        default=None,
        metavar='HOST',
        help='with --metrics-port: the address the metrics listen on (default: '
        '127.0.0.1; another address is reachable from other hosts)',
    )


def _check_metrics(args: argparse.Namespace) -> None:
    """The metrics flags checked before anything starts (one line)."""
    if getattr(args, 'metrics_port', None) is None:
        if getattr(args, 'metrics_host', None) is not None:
            raise CliError('--metrics-host needs --metrics-port')
        return
    if getattr(args, 'join', None) is not None:
        raise CliError(
            '--metrics-port cannot be combined with --join: serve the metrics from '
            'the root the hosts join (its tree includes their services)'
        )


async def _start_metrics(
    args: argparse.Namespace, addr: tuple[str, int], mngr: Any, out: TextIO
) -> None:
    """With ``--metrics-port``: bind the metrics server (one line when it
    cannot), warn when it is not on loopback, run its snapshot task as the
    root's ``metrics`` service, and print its URL."""
    port = getattr(args, 'metrics_port', None)
    if port is None:
        return
    from ._metrics import MetricsServer, run_metrics

    host = args.metrics_host or '127.0.0.1'
    try:
        server = MetricsServer(host, port)
    except OSError as err:
        raise CliError(
            f'--metrics-port {port}: cannot listen on {host}:{port}: '
            f'{err.strerror or err}'
        ) from None
    if not is_loopback(host):
        print(
            f'{PROG}: warning: the metrics listen on {host}:{server.address[1]}, not on '
            'loopback: anyone who can reach that port can read them; firewall the '
            'port to your Prometheus (docs/metrics.md)',
            file=sys.stderr,
            flush=True,
        )
    try:
        await mngr.start_service_task(
            'metrics', run_metrics, server=server, registry_addr=addr
        )
    except BaseException:
        server.close()
        raise
    print(f'{PROG} metrics: {server.url}', file=out, flush=True)


# --- a picture of a topic: chart ----------------------------------------------------


def _add_bar_args(p: argparse.ArgumentParser, *, period: float) -> None:
    """The arguments of the commands reading a topic's bars (``chart``,
    ``export``, ``bars``): the topic, its backend and period, a time range,
    the data directory."""
    p.add_argument('topic', help='the symbol')
    p.add_argument('--backend', default=DEFAULT_BACKEND, help='default: %(default)s')
    p.add_argument(
        '--period',
        type=float,
        default=period,
        help='bar period in s (default: %(default)g)',
    )
    p.add_argument('--start', default=None, help='epoch seconds or ISO date/time (UTC)')
    p.add_argument(
        '--end', default=None, help='epoch seconds or ISO date/time, exclusive'
    )
    p.add_argument('--data-dir', default=None, metavar='DIR', help='as for `run`')


def _add_chart(sub: Any, common: argparse.ArgumentParser) -> None:
    c = sub.add_parser(
        'chart',
        parents=[common],
        help="draw a topic's bars to a PNG: candlesticks and volume",
        description="Draw a topic's last bars as candlesticks over volume bars to a "
        "PNG, from the running feed daemon's buffer, or from the bar store when no "
        'daemon runs the topic (or with --from-store). Needs matplotlib: pip install '
        "'tractor-sampler[chart]'.",
    )
    _add_bar_args(c, period=60.0)
    c.add_argument(
        '-o', '--output', required=True, metavar='FILE', help='the PNG to write'
    )
    c.add_argument(
        '--bars',
        type=int,
        default=None,
        metavar='N',
        help='the last N bars (default: 120)',
    )
    c.add_argument(
        '--size',
        default='1200x700',
        metavar='WxH',
        help='the picture in pixels (default: %(default)s)',
    )
    c.add_argument(
        '--from-store',
        action='store_true',
        help='read the bar store even when a feed daemon runs the topic',
    )


async def cmd_chart(args: argparse.Namespace, out: TextIO) -> None:
    from ._datadir import DataDirError
    from ._plot import (
        DEFAULT_BARS,
        PlotUnavailable,
        bars_from_daemon,
        bars_from_store,
        draw_bars,
        parse_size,
        require_matplotlib,
    )
    from ._schedule import check_period

    try:
        require_matplotlib()
        period = check_period(args.period)
        size = parse_size(args.size)
        start, end = _when(args.start, '--start'), _when(args.end, '--end')
    except (PlotUnavailable, ValueError) as err:
        raise CliError(str(err)) from None
    n = DEFAULT_BARS if args.bars is None else args.bars
    if n < 1:
        raise CliError(f'--bars {n} must be >= 1')
    bars, source = None, 'the bar store'
    addr = registry_addr(args)
    if not args.from_store and await compat.registry_reachable(addr):
        async with compat.open_root_actor(
            addr,
            'samplerd_chart',
            loglevel=args.loglevel or 'critical',
            debug_mode=args.pdb,
        ):
            try:
                bars = await bars_from_daemon(args.topic, period, args.backend, addr)
            except ValueError as err:
                raise CliError(str(err)) from None
        source = 'the running feed daemon'
    if bars is None:
        source = 'the bar store'
        try:
            bars = bars_from_store(
                args.topic, period, args.backend, data_dir=args.data_dir
            )
        except (ValueError, DataDirError) as err:
            raise CliError(str(err)) from None
    if start is not None:
        bars = bars[bars['time'] >= start]
    if end is not None:
        bars = bars[bars['time'] < end]
    bars = bars[-n:]
    try:
        chart = draw_bars(
            bars,
            args.output,
            title=f'{args.topic}@{args.backend}  {period:g} s bars',
            size=size,
        )
    except ValueError:
        raise CliError(f'no bars of {args.topic} ({period:g} s) in {source}') from None
    except OSError as err:
        raise CliError(f'-o {args.output}: {err.strerror or err}') from None
    print(
        f'{chart.candles} bars of {args.topic} ({period:g} s) from {source} drawn to '
        f'{args.output} ({size[0]}x{size[1]})',
        file=out,
    )


# --- the bar store: run --data-dir, export ------------------------------------


def _store_lines(store: dict[str, Any]) -> list[str]:
    """``samplerd ls``: a feed daemon's bar store and its failures."""
    if not store:
        return ['    bar store: off']
    line = (
        f'    bar store: {store.get("name")} in {store.get("root")}, '
        f'{store.get("bars", 0)} bars in {store.get("writes", 0)} writes, '
        f'{store.get("failures", 0)} failed writes (retried)'
    )
    if store.get('last_error'):
        line += f'; last: {store["last_error"]}'
    # corrections written again; compaction (files merged away into fewer)
    more = (
        f'      {store.get("rewrites", 0)} bars rewritten (late corrections), '
        f'{store.get("compacted", 0)} files compacted into '
        f'{store.get("merged_files", 0)}, '
        f'{store.get("compact_failures", 0)} failed compactions (retried)'
    )
    return [line, more]


def _ticklog_lines(topics: dict[str, Any]) -> list[str]:
    """``samplerd ls``: the tick log of each recorded topic and its failures."""
    lines = []
    now = time.time()
    for name, t in topics.items():
        tl = t.ticklog
        if not tl:
            continue
        line = (
            f'    tick log of {name}: {tl.get("records", 0)} quotes written to '
            f'{tl.get("path")}, {tl.get("dropped", 0)} dropped, '
            f'{tl.get("failures", 0)} failed writes (retried)'
        )
        if tl.get('failing_since') is not None:
            line += (
                f'; FAILING for {_ago(tl["failing_since"], now) or "0s"}, '
                f'{tl.get("pending", 0)} quotes held: {tl.get("last_error")}'
            )
        elif tl.get('last_error'):
            line += f'; last: {tl["last_error"]}'
        lines.append(line)
    return lines


def _add_data_dir(run: argparse.ArgumentParser) -> None:
    """``run --data-dir DIR`` / ``--no-store``: the bar store (docs/storage.md)."""
    run.add_argument(
        '--data-dir',
        default=None,
        metavar='DIR',
        help='where the bar store keeps closed bars (default: $TRACTOR_SAMPLER_DATA_DIR, '
        'else $XDG_DATA_HOME/tractor-sampler, i.e. ~/.local/share/tractor-sampler)',
    )
    run.add_argument(
        '--no-store',
        action='store_true',
        help='keep no bars on disk (the feed daemons run without the bar store)',
    )


def _set_data_dir(args: argparse.Namespace) -> None:
    """The data directory checked (one line when it cannot be used,
    before anything starts) and set in this root's environment, which the
    feed daemons it spawns inherit (their bar store is on then)."""
    from ._datadir import ENV_VAR, DataDirError, data_dir
    from ._store import NO_STORE, STORE_ENV

    if getattr(args, 'no_store', False):
        os.environ[STORE_ENV] = NO_STORE
        return
    if not hasattr(args, 'data_dir'):
        return
    try:
        os.environ[ENV_VAR] = str(data_dir(args.data_dir))
    except DataDirError as err:
        raise CliError(f'--data-dir: {err}') from None


def _add_export(sub: Any, common: argparse.ArgumentParser) -> None:
    e = sub.add_parser(
        'export',
        parents=[common],
        help="write a topic's stored bars as Parquet or CSV",
        description="Write a topic's bars from the bar store (no daemon needed) "
        'as Parquet or CSV: time, open, high, low, close, volume, oldest first.',
    )
    _add_bar_args(e, period=1.0)
    e.add_argument('--format', choices=('parquet', 'csv'), default='csv')
    e.add_argument(
        '-o', '--output', default=None, metavar='FILE', help='default: stdout (csv)'
    )


async def cmd_export(args: argparse.Namespace, out: TextIO) -> None:
    from ._datadir import DataDirError
    from ._export import export_bars, read_bars

    try:
        bars = read_bars(
            args.topic,
            args.period,
            backend=args.backend,
            start=args.start,
            end=args.end,
            data_dir=args.data_dir,
        )
        n = export_bars(bars, args.format, args.output or out)
    except (ValueError, DataDirError) as err:
        raise CliError(str(err)) from None
    if args.output:
        print(
            f'{n} bars of {args.topic} ({args.period:g} s) written to {args.output}',
            file=out,
        )
    elif n == 0:
        print(
            f'{PROG}: no stored bars of {args.topic} ({args.period:g} s)',
            file=sys.stderr,
        )


# --- the tick log: run --record, bars ------------------------------------------


def _add_record(run: argparse.ArgumentParser) -> None:
    """``run --record``: every topic's quotes to its tick log (docs/storage.md)."""
    run.add_argument(
        '--record',
        action='store_true',
        help="append every topic's quotes to its tick log in the data directory "
        '(docs/storage.md, "Tick log")',
    )


def _set_record(args: argparse.Namespace) -> None:
    """``--record`` set in this root's environment (its feed daemons
    inherit it), the data directory checked first (one line)."""
    from ._datadir import DataDirError, data_dir
    from ._ticklog import RECORD_ENV

    if not getattr(args, 'record', False):
        return
    try:
        data_dir(getattr(args, 'data_dir', None))
    except DataDirError as err:
        raise CliError(f'--record: {err}') from None
    os.environ[RECORD_ENV] = '1'


def _when(text: str | None, name: str) -> float | None:
    """``--start`` / ``--end``: epoch seconds or an ISO date/time (UTC
    without a zone)."""
    if text is None:
        return None
    from .backends.replay import _parse_time

    try:
        return _parse_time(text)
    except ValueError:
        raise CliError(
            f'{name} {text!r}: not epoch seconds nor an ISO date/time'
        ) from None


def _add_bars(sub: Any, common: argparse.ArgumentParser) -> None:
    b = sub.add_parser(
        'bars',
        parents=[common],
        help="build a topic's bars from its tick log (offline)",
        description="Build bars of any period from a topic's tick log (no daemon "
        'needed), as the live feed built them, and write them as CSV: time, open, '
        'high, low, close, volume, oldest first.',
    )
    _add_bar_args(b, period=1.0)
    b.add_argument(
        '-o', '--output', default=None, metavar='FILE', help='default: stdout'
    )
    b.add_argument(
        '--store',
        action='store_true',
        help='append the closed bars to the bar store (only those after its last '
        'bar) instead of writing CSV',
    )


async def cmd_bars(args: argparse.Namespace, out: TextIO) -> None:
    from ._datadir import DataDirError
    from ._rebuild import build_bars
    from ._schedule import check_period
    from ._ticklog import segments, topic_dir

    try:
        check_period(args.period)
        start, end = _when(args.start, '--start'), _when(args.end, '--end')
        d = topic_dir(args.topic, args.backend, args.data_dir)
        if not segments(d):
            raise CliError(f'no tick log of {args.topic!r} ({args.backend}) in {d}')
        bars = build_bars(
            args.topic, args.period, start, end, backend=args.backend, directory=d
        )
        if args.store:
            from ._rebuild import store_built_bars

            n = store_built_bars(
                args.topic,
                args.period,
                bars,
                backend=args.backend,
                data_dir=args.data_dir,
            )
    except CliError:
        raise
    except (ValueError, DataDirError) as err:
        raise CliError(str(err)) from None
    except Exception as err:  # the store's own errors (StoreError): one line
        raise CliError(f'bar store: {err}') from None
    if args.store:
        print(
            f'{n} bars of {args.topic} ({args.period:g} s) stored from its tick log',
            file=out,
        )
        return
    cols = ('time', 'open', 'high', 'low', 'close', 'volume')
    lines = [','.join(cols)]
    lines += [','.join(repr(float(r[c])) for c in cols) for r in bars]
    text = '\n'.join(lines) + '\n'
    if not args.output:
        out.write(text)
        return
    try:
        await trio.Path(args.output).write_text(text)
    except OSError as err:
        raise CliError(f'-o {args.output}: {err.strerror or err}') from None
    if args.output:
        print(
            f'{len(bars)} bars of {args.topic} ({args.period:g} s) written to {args.output}',
            file=out,
        )


# --- topics start and stop on demand: run --linger, stop -------------------------


def _add_linger(run: argparse.ArgumentParser) -> None:
    """``run --linger S``: how long a topic without clients keeps running."""
    run.add_argument(
        '--linger',
        default=None,
        metavar='S',
        help='seconds a topic keeps running after its last client left (default: 30; '
        '0: it stops at once; docs/sampler.md, "Lingering, stop and stale")',
    )


def _set_linger(args: argparse.Namespace) -> None:
    """``--linger`` checked (one line) and set in this root's environment,
    which the feed daemons it spawns inherit."""
    from ._lifecycle import LINGER_ENV, check_seconds

    if getattr(args, 'linger', None) is None:
        return
    try:
        os.environ[LINGER_ENV] = repr(check_seconds(args.linger, '--linger'))
    except ValueError as err:
        raise CliError(str(err)) from None


def _add_stop(sub: Any, common: argparse.ArgumentParser) -> None:
    s = sub.add_parser(
        'stop',
        parents=[common],
        help='stop a running topic now',
        description='Stop a topic of a running feed daemon now: its clients get the '
        "status 'ended' with the reason and their feed ends; its closed bars are "
        'flushed to the bar store (when on) and its buffers given back.',
    )
    s.add_argument('topic', help='the symbol')
    s.add_argument('--backend', default=DEFAULT_BACKEND, help='default: %(default)s')
    s.add_argument(
        '--reason',
        default=None,
        help="what its clients are told (default: 'stopped on request')",
    )


async def cmd_stop(args: argparse.Namespace, out: TextIO) -> None:
    from ._lifecycle import stop_topic

    addr = registry_addr(args)
    await _require_samplerd(addr)
    try:
        st = await stop_topic(
            args.topic, args.backend, registry_addr=addr, reason=args.reason
        )
    except ValueError as err:
        raise CliError(str(err)) from None
    print(f'{args.backend}/{args.topic}: {st.state} ({st.error})', file=out)


# --- the config file and systemd: run --config ----------------------------------


def _add_config(run: argparse.ArgumentParser) -> None:
    """``run --config FILE`` / ``--check-config`` (docs/production.md)."""
    run.add_argument(
        '--config',
        default=None,
        metavar='FILE',
        help='read the settings from this TOML file (flags given override it; '
        'docs/production.md, "The config file")',
    )
    run.add_argument(
        '--check-config',
        action='store_true',
        help='check the config file and the flags, print the settings `run` would '
        'use as JSON, and start nothing',
    )


def _apply_config_file(args: argparse.Namespace, out: TextIO) -> int | None:
    """``run --config``: the file loaded and checked into ``args``, and its
    settings without a flag put in this root's environment (its services
    inherit them), before anything starts.  An exit status when the
    command ends here (2 and one line for a bad file, 0 after
    ``--check-config``), else ``None``."""
    from ._config import ConfigError, apply_config, effective_settings, set_environment

    if args.cmd not in (None, 'run'):
        return None
    try:
        rc = apply_config(args)
        if (
            rc is not None
            and args.join is not None
            and any(b.topics for b in rc.backends)
        ):
            raise ConfigError(
                f'{rc.path}: [backends.*] topics: boot topics on a root that joins '
                'another (join) are not supported yet'
            )
    except ConfigError as err:
        print(f'{PROG}: error: {err}', file=sys.stderr)
        return 2
    if getattr(args, 'check_config', False):
        print(json.dumps(effective_settings(args, rc), indent=2), file=out)
        return 0
    set_environment(rc)
    return None


def _samplerd_start(args: argparse.Namespace) -> dict[str, Any]:
    """``spawn_samplerd``'s keywords: the config file's
    ``[restart.samplerd]`` policy."""
    rc = getattr(args, 'run_config', None)
    return {'restart': rc.policies['samplerd']} if rc is not None else {}


@acm
async def _boot_topics(
    args: argparse.Namespace, addr: tuple[str, int]
) -> AsyncIterator[str]:
    """The config file's boot topics started and held while the block
    runs; yields the ready line's note naming them.  A topic that cannot
    start is one line (exit status 1)."""
    from ._config import open_boot_topics

    rc = getattr(args, 'run_config', None)
    entered = False
    try:
        async with open_boot_topics(rc, addr, args.loglevel) as names:
            entered = True
            yield f', boot topics {", ".join(names)}' if names else ''
    except Exception as exc:
        err = compat.unwrap_error(exc)
        if entered or rc is None or not isinstance(err, (ValueError, ServiceError)):
            raise
        raise CliError(f'{rc.path}: {err}') from None


@contextmanager
def _systemd_notified(status: str) -> Iterator[None]:
    """systemd's readiness protocol when ``$NOTIFY_SOCKET`` is set
    (``Type=notify``): ``READY=1`` now (the ready line is out),
    ``STOPPING=1`` when the block ends (SIGTERM, Ctrl-C, an error)."""
    from ._sdnotify import sd_notify

    sd_notify('READY=1', f'STATUS={PROG} ready: {status}')
    try:
        yield
    finally:
        sd_notify('STOPPING=1', f'STATUS={PROG} stopping')


COMMANDS = {
    'run': cmd_run,
    'ls': cmd_ls,
    'watch': cmd_watch,
    'demo': cmd_demo,
    'export': cmd_export,
    'bars': cmd_bars,
    'stop': cmd_stop,
    'chart': cmd_chart,
}


def main(argv: Sequence[str] | None = None, out: TextIO | None = None) -> int:
    """The ``samplerd`` console script; returns the exit status.

    Called without ``argv`` it is the process's own command (the console
    script, ``python -m tractor_sampler``): once the command has run,
    SIGINT and SIGTERM are ignored until the process exits, so a Ctrl-C
    landing while the interpreter shuts down (when Python has put SIGINT
    back to its default action) cannot turn a clean stop into a death by
    SIGINT.  A caller passing ``argv`` keeps its own signal handlers."""
    out = out or sys.stdout
    args = build_parser().parse_args(argv)
    status = _apply_config_file(args, out)
    if status is not None:
        return status
    cmd = COMMANDS[args.cmd or 'run']
    try:
        try:
            trio.run(cmd, args, out)
        finally:
            if argv is None:
                _ignore_stop_signals()
        out.flush()
    except KeyboardInterrupt:
        return 0
    except BaseException as exc:
        err = compat.unwrap_error(exc)
        if isinstance(err, KeyboardInterrupt):
            return 0
        if isinstance(err, BrokenPipeError):
            # the reader went away (`samplerd ls | head`): stop quietly, as a
            # process killed by SIGPIPE would, and keep the interpreter's
            # final flush from complaining again
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
            return 128 + signal.SIGPIPE
        if isinstance(err, (CliError, PeerDisconnected, RegistryUnreachable)):
            # a peer that went away says so in its own words (naming it)
            print(f'{PROG}: error: {err}', file=sys.stderr)
            return 1
        if isinstance(err, (ServiceError, OSError, ValueError, KeyError)):
            print(f'{PROG}: error: {type(err).__name__}: {err}', file=sys.stderr)
            return 1
        remote = compat.remote_error_type(err)
        if remote is not None:  # raised in another actor: its type and message
            print(
                f'{PROG}: error: {remote}: {compat.remote_error_message(err)}',
                file=sys.stderr,
            )
            return 1
        raise
    return 0
