"""
The tractor adapter.

This module holds exactly two things, so that moving to a later tractor is
a one-file change:

1. every call whose form differs across tractor versions (the runtime's
   types and decorator, booting a root, spawning, contexts and streams,
   the registry, remote errors, the logger tree), and
2. every work-around of a gap in tractor 0.1.0a5 (the only release on the
   package index), each named after the a5 behaviour it covers.

It is the only module of ``tractor_services``, ``feedbus`` and
``tractor_sampler`` that imports ``tractor`` (``tests/test_layout.py``
checks): others write ``@compat.context`` and ``ctx: compat.Context``.
Errors live in ``_errors``, addresses in ``_addr``, process helpers in
``_proc``.

The a5 work-arounds:

- *A dead peer makes a receiver hang forever*: :func:`watch_process`
  turns a child's death (even by SIGKILL) into ``ActorDied`` within
  milliseconds; :func:`wait_disconnected` and :func:`raise_on_peer_exit`
  do the same for a peer we did not spawn; across hosts
  :func:`watch_remote_peer` ends the block when the connection ends
  (:func:`_install_loop_end_marks`), and keepalive bounds a dead host or
  a cut link (:func:`_install_keepalive`).
- *Leaving a context whose peer died raises ``UnboundLocalError``; the
  far end's cancel is swallowed or replaces the body's own error*:
  :func:`open_context` and :func:`far_end_endings` tell every ending
  (``PeerDisconnected``, ``DaemonStopped``, the caller's own error).
- *The registry keeps dead entries; ``wait_for_actor`` raises after a
  name was re-registered; a registry query has no deadline; anything
  listening passes for a registry*: :func:`unregister_actor`,
  :func:`wait_for_actor` (polls), :func:`find_actor_addr` (deadline),
  :func:`registry_reachable` (a real handshake with a deadline).
- *Backpressure blocks a whole connection; one overrun kills a context*:
  :func:`open_stream` / :func:`open_drained_stream` never apply
  connection backpressure; :class:`SafeStream` drops the oldest message
  (counted) instead of overrunning.
- *Across hosts: a client root binds the registry's host (Errno 99
  elsewhere); ``start_actor`` binds and registers ``127.0.0.1``; a
  registry's own lookups ignore the address given*:
  :func:`_install_root_bind` (a client binds the address that routes to
  the registry), :func:`service_bind_addr`, :func:`_open_registry`.
- *A send cancelled part-way kills the connection*: :func:`send_whole`,
  :func:`send_whole_or_abort`, :func:`abort_connection`.
- *A killed root orphans its children; a cancelled spawn is reaped as a
  zombie after 3 s*: every actor we spawn installs
  :func:`_install_child_guard`; :func:`_install_prompt_hard_kill`.
- *Every call leaves bookkeeping behind* (``actor._contexts``,
  ``portal._streams``): :func:`_install_forgetful_rpc`,
  :func:`_forget_stream`.
- *Every message sent or received is formatted into a debug string,
  whole, though nothing logs it*: :func:`_install_quiet_messages` (the
  strings are built only at tractor's ``transport`` log level).
- *Tracebacks at ERROR for every cancel and refused call; deprecation
  warnings at import*: :func:`quiet_runtime_logs`,
  :func:`ignore_runtime_warnings`.

"""

from __future__ import annotations
import __future__

import ast
import contextvars
import importlib
import inspect
import logging
import math
import os
import select
import signal
import sys
import textwrap
import threading
import time
import warnings
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import asynccontextmanager as acm
from dataclasses import dataclass, field
from typing import Any, TypeAlias

import trio

from ._addr import (
    check_bind_host,
    check_reachable,
    client_bind_host,
    is_loopback,
    parse_addr,
)
from ._errors import (
    ActorDied,
    DaemonStopped,
    PeerDisconnected,
    PeerGone,
    RegistryUnreachable,
    ServiceNotFound,
    error_leaves,
    only_cancelled,
)
from ._proc import hard_kill, rss_bytes, wait_pid_exit
from ._queue import DropOldestQueue

if sys.version_info < (3, 11):  # pragma: no cover
    from exceptiongroup import BaseExceptionGroup

_INSTALL_HINT = """\
tractor is not installed.  tractor 0.1.0a5 (the only release) requires
pdbpp from a git URL, so it is an extra rather than a hard requirement.
Install it with one of:

    uv pip install --overrides overrides.txt 'tractor-services[tractor]'
        (overrides.txt holds one line: pdbpp>=0.11)
    pip install --no-deps tractor==0.1.0a5
        (after `pip install tractor-services`, which brings tractor's
        own requirements)
"""

try:
    with warnings.catch_warnings():
        # a5 touches ``trio.MultiError`` at import time
        warnings.simplefilter('ignore', trio.TrioDeprecationWarning)
        import tractor
        from tractor import _state as _tractor_state
        from tractor.log import get_logger as _tractor_get_logger
except ImportError as err:  # pragma: no cover - exercised by the pip recipe
    raise ImportError(_INSTALL_HINT) from err


# --- the runtime's names ----------------------------------------------------

TRACTOR_VERSION: str = getattr(tractor, '__version__', '0.1.0a5')

Actor: TypeAlias = tractor._actor.Actor
ActorNursery: TypeAlias = tractor._supervise.ActorNursery
Portal: TypeAlias = tractor.Portal
Context: TypeAlias = tractor.Context
MsgStream: TypeAlias = tractor.MsgStream
RemoteActorError: TypeAlias = tractor.RemoteActorError
ContextCancelled: TypeAlias = tractor.ContextCancelled
Channel: TypeAlias = tractor._ipc.Channel
context = tractor.context

#: seconds a child gets to tear down after its parent died, before SIGKILL
CHILD_GRACE_S: int = 3


def get_logger(name: str, root: str) -> logging.Logger:
    """One logger per package and subsystem, under tractor's log tree."""
    return _tractor_get_logger(name, _root_name=root)


log = get_logger('compat', 'tractor_services')


# --- runtime ----------------------------------------------------------------


def current_actor() -> Actor | None:
    """This process's actor, or ``None`` outside a tractor runtime."""
    return _tractor_state.current_actor(err_on_no_runtime=False)


def is_registry() -> bool:
    """Is this actor the registry (a5: the "arbiter")?"""
    actor = current_actor()
    return bool(actor is not None and actor.is_arbiter)


def runtime_registry_addr() -> tuple[str, int] | None:
    """The registry address the running actor uses, or ``None`` outside a
    runtime (a5 calls it ``_arb_addr``)."""
    actor = current_actor()
    return None if actor is None else tuple(actor._arb_addr)  # type: ignore[return-value]


# --- is it a registry? --------------------------------------------------------

#: seconds a client waits for a registry to answer: connect, a5's uid
#: exchange and a registry query, together
REGISTRY_TIMEOUT_S: float = 5.0

#: the largest message a probe accepts (a5 frames with a 4-byte length:
#: an HTTP reply's first bytes read as a length of ~1.3 GB)
_PROBE_MAX_MSG = 1 << 20


class _NotTractor(Exception):
    pass


async def registry_reachable(
    addr: tuple[str, int],
    timeout: float = REGISTRY_TIMEOUT_S,
) -> bool:
    """Does a tractor registry answer at ``addr``?  ``False`` when nothing
    listens there; ``True`` when a5's uid exchange and a registry query
    both get their answers within ``timeout`` seconds; else
    :class:`RegistryUnreachable` saying what answered.

    *a5 (and a plain TCP connect) take anything listening for a registry,
    and its own handshake has no deadline*: an HTTP server, a silent
    listener or a SIGSTOPped daemon made every client hang for ever."""
    host, port = addr
    where = f'{host}:{port}'
    with trio.move_on_after(timeout):
        try:
            stream = await trio.open_tcp_stream(host, port)
        except OSError:
            return False
        async with stream:
            try:
                await _ask_registry(stream, where)
            except _NotTractor as err:
                raise RegistryUnreachable(
                    f'{where} answered but is not a tractor registry ({err})'
                ) from None
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as err:
                raise RegistryUnreachable(
                    f'{where} answered but is not a tractor registry (the connection broke: {err})'
                ) from None
            return True
    raise RegistryUnreachable(
        f'no answer from {where} within {timeout:g} s '
        '(a frozen process there, or not a tractor registry)'
    )


async def _ask_registry(stream: trio.SocketStream, where: str) -> None:
    """a5's wire protocol by hand (4-byte little-endian length, msgpack):
    exchange uids, then call the registry's ``get_registry``."""
    import struct
    import uuid

    import msgspec

    encode = msgspec.msgpack.Encoder().encode
    decode = msgspec.msgpack.Decoder().decode
    buf = bytearray()

    async def send(msg: Any) -> None:
        data = encode(msg)
        await stream.send_all(struct.pack('<I', len(data)) + data)

    async def recv() -> Any:
        while True:
            if len(buf) >= 4:
                (size,) = struct.unpack('<I', buf[:4])
                if size > _PROBE_MAX_MSG:
                    raise _NotTractor(f'it sent {bytes(buf[:16])!r}')
                if len(buf) >= 4 + size:
                    raw = bytes(buf[4 : 4 + size])
                    del buf[: 4 + size]
                    try:
                        return decode(raw)
                    except msgspec.DecodeError:
                        raise _NotTractor(f'it sent {raw[:16]!r}') from None
            chunk = await stream.receive_some()
            if not chunk:
                raise _NotTractor(
                    'it closed the connection'
                    + (f' after sending {bytes(buf[:16])!r}' if buf else '')
                )
            buf.extend(chunk)

    uid = ('registry_probe', str(uuid.uuid4()))
    await send(uid)
    peer = await recv()
    if not (
        isinstance(peer, list)
        and len(peer) == 2
        and all(isinstance(x, str) for x in peer)
    ):
        raise _NotTractor(f'its first message was {peer!r:.60}, not an actor id')
    cid = str(uuid.uuid4())
    await send({'cmd': ('self', 'get_registry', {}, list(uid), cid)})
    while True:
        msg = await recv()
        if not isinstance(msg, dict) or msg.get('cid') != cid:
            continue
        if 'error' in msg:
            raise _NotTractor(
                f'it is the tractor actor {peer[0]!r}, which keeps no registry'
            )
        if 'return' in msg:
            return


@acm
async def open_root_actor(
    registry_addr: tuple[str, int],
    name: str,
    *,
    loglevel: str | None = None,
    debug_mode: bool = False,
    enable_modules: Iterable[str] = (),
    bind_host: str | None = None,
) -> AsyncIterator[Actor]:
    """Boot this process's root actor; it is the registry unless one
    already answers at ``registry_addr``.  As a client it binds
    ``bind_host`` (default: ``$TRACTOR_BIND_HOST``, else the local
    address that routes to the registry; see :func:`_install_root_bind`)."""
    host = check_bind_host(registry_addr[0], 'registry host')
    client_host = client_bind_host((host, registry_addr[1]), bind_host)
    token = _ROOT_BIND_HOST.set(client_host)
    try:
        async with tractor.open_root_actor(
            arbiter_addr=registry_addr,
            name=name,
            loglevel=loglevel,
            debug_mode=debug_mode,
            enable_modules=list(enable_modules),
        ) as actor:
            quiet_runtime_logs()
            yield actor
    finally:
        _ROOT_BIND_HOST.reset(token)


@acm
async def open_actor_nursery() -> AsyncIterator[ActorNursery]:
    """An actor nursery in the running runtime."""
    async with tractor.open_nursery() as an:
        yield an


# --- addresses across hosts -----------------------------------------------------

#: the address a client root binds (set by :func:`open_root_actor` for the
#: root's own startup task; see :func:`_install_root_bind`)
_ROOT_BIND_HOST: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    'tractor_services_root_bind_host', default=None
)


def _install_root_bind() -> None:
    """*a5 binds a client root (one that found a registry) to
    ``(registry_host, 0)``: on any other host than the registry's that is
    ``OSError: [Errno 99] Cannot assign requested address``.*  The root's
    startup (``Actor._async_main`` without a parent) binds the host
    :func:`open_root_actor` chose instead: the local address that routes
    to the registry.  A root that is the registry binds the registry's
    address, as before; subactors bind what their parent passed."""
    Actor_ = tractor._actor.Actor
    if getattr(Actor_._async_main, '_binds_route', False):
        return
    orig = Actor_._async_main

    async def _async_main(
        self: Any,
        accept_addr: tuple[str, int] | None = None,
        parent_addr: tuple[str, int] | None = None,
        **kwargs: Any,
    ) -> Any:
        host = _ROOT_BIND_HOST.get()
        if (
            parent_addr is None
            and accept_addr is not None
            and host is not None
            and not self.is_arbiter
        ):
            accept_addr = (host, accept_addr[1])
        return await orig(
            self, accept_addr=accept_addr, parent_addr=parent_addr, **kwargs
        )

    _async_main._binds_route = True  # type: ignore[attr-defined]
    Actor_._async_main = _async_main


_install_root_bind()


def own_host() -> str | None:
    """The host this actor's channel server is bound to (the address it
    registered), or ``None`` outside a runtime."""
    actor = current_actor()
    if actor is None:
        return None
    try:
        return str(actor.accept_addr[0])
    except (AttributeError, IndexError, OSError, TypeError):
        return None


def service_bind_addr(service_host: str | None) -> tuple[str, int] | None:
    """The ``bind_addr`` a service spawned by a manager gets: an ephemeral
    port on ``service_host`` (*a5's ``start_actor`` binds and registers
    ``127.0.0.1`` by default, unreachable from other hosts*).  ``None``
    keeps a5's default."""
    if service_host is None:
        return None
    return (check_bind_host(service_host, 'service host'), 0)


# --- spawning ----------------------------------------------------------------


@dataclass
class SpawnedActor:
    """A child actor with the handles supervision needs."""

    portal: Portal
    proc: trio.Process
    uid: tuple[str, str]

    @property
    def pid(self) -> int:
        return self.proc.pid


async def start_actor(
    an: ActorNursery,
    name: str,
    *,
    enable_modules: list[str],
    loglevel: str | None = None,
    bind_addr: tuple[str, int] | None = None,
    debug_mode: bool | None = None,
) -> SpawnedActor:
    """Spawn a daemon actor and install its parent-death guard."""
    kwargs: dict[str, Any] = {}
    if bind_addr is not None:
        host, port = parse_addr(bind_addr)
        kwargs['bind_addr'] = (check_bind_host(host, 'service bind address'), port)
    if debug_mode is not None:
        kwargs['debug_mode'] = debug_mode
    _quiet_child_warnings()
    portal = await an.start_actor(
        name,
        enable_modules=[*enable_modules, __name__],
        loglevel=loglevel,
        **kwargs,
    )
    uid = tuple(portal.channel.uid)
    proc = an._children[uid][1]
    await portal.run(_install_child_guard, parent_pid=os.getpid())
    return SpawnedActor(portal=portal, proc=proc, uid=uid)  # type: ignore[arg-type]


# a5's modules that touch ``trio.MultiError`` (deprecated since trio 0.22)
_NOISY_MODULES = (
    'tractor',
    'tractor._actor',
    'tractor._exceptions',
    'tractor._portal',
    'tractor._root',
    'tractor._spawn',
    'tractor._streaming',
    'tractor._supervise',
    'tractor._entry',
    'tractor._debug',
)


def _quiet_child_warnings() -> None:
    """Children import tractor directly: give them (through the inherited
    environment) filters for a5's deprecation warnings, and only those."""
    current = os.environ.get('PYTHONWARNINGS', '')
    if 'FutureWarning:tractor' in current:
        return
    ours = ','.join(f'ignore::FutureWarning:{m}' for m in _NOISY_MODULES)
    os.environ['PYTHONWARNINGS'] = f'{current},{ours}' if current else ours


async def _install_child_guard(parent_pid: int) -> None:
    """(Runs in the child.)  Die with the parent: when the parent process
    exits, or SIGTERM arrives, cancel this actor's tree, and end the process
    outright if that has not finished within ``CHILD_GRACE_S``.

    SIGINT is ignored (outside debug mode): a terminal's Ctrl-C reaches
    every process of the group, and the root stops its tree in order.

    The parent is watched by a thread blocked on its pidfd (Linux >= 5.3;
    elsewhere it polls ``getppid()``), so even an actor whose event loop is
    stuck dies with its parent.  ``PR_SET_PDEATHSIG`` would be simpler but
    fires when the *thread* that spawned us exits, and trio spawns from
    worker threads that retire after 10 s idle."""
    quiet_runtime_logs()
    token = trio.lowlevel.current_trio_token()
    actor = tractor.current_actor()

    def _cancel() -> None:
        actor._service_n.start_soon(actor.cancel)

    def _on_sigterm(signum: int, frame: Any) -> None:
        # a hard deadline first (SIGALRM's default action ends the process),
        # then the graceful path, which needs the event loop
        signal.alarm(CHILD_GRACE_S)
        try:
            token.run_sync_soon(_cancel)
        except trio.RunFinishedError:
            os._exit(128 + signum)

    signal.signal(signal.SIGTERM, _on_sigterm)
    if not _tractor_state.debug_mode():
        # Ctrl-C in a terminal reaches the whole process group: the root
        # tears its tree down in order, so a daemon child leaves that to it
        # (in debug mode tractor's debugger needs SIGINT in children)
        signal.signal(signal.SIGINT, signal.SIG_IGN)

    pidfd: int | None = None
    if hasattr(os, 'pidfd_open'):
        try:
            pidfd = os.pidfd_open(parent_pid)
        except OSError:  # too old a kernel, or the parent is already gone
            pidfd = None

    def _watch_parent() -> None:
        if pidfd is not None:
            select.select([pidfd], [], [])
            os.close(pidfd)
        else:
            while os.getppid() == parent_pid:
                time.sleep(0.2)
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(CHILD_GRACE_S + 1)
        os._exit(70)  # neither the graceful path nor SIGALRM ended us

    threading.Thread(target=_watch_parent, name='parent-watch', daemon=True).start()
    if os.getppid() != parent_pid:  # the parent died before we watched it
        os.kill(os.getpid(), signal.SIGTERM)


async def watch_process(sa: SpawnedActor) -> None:
    """Return never; raise :class:`ActorDied` as soon as the process exits."""
    await sa.proc.wait()
    # a5 takes ~0.5 s to notice the dead channel, and meanwhile leaving the
    # context sends the corpse a cancel request with a shielded 0.5 s wait.
    # Mark the channel disconnected so every a5 path skips talking to it;
    # closing the socket instead would race a5's own reader task on it.
    mark_disconnected(sa.portal.channel)
    raise ActorDied(sa.uid, sa.pid, sa.proc.returncode)


def mark_disconnected(chan: Channel) -> None:
    """Make a5 treat ``chan`` (whose peer is known dead) as disconnected."""
    chan.connected = lambda: False


async def wait_disconnected(portal: Portal, poll_s: float = 0.05) -> None:
    """Return once the portal's channel is gone (a peer we did not spawn)."""
    actor = tractor.current_actor()
    chan = portal.channel
    while chan.connected() and chan.uid in actor._peers:
        await trio.sleep(poll_s)


def _same_host(chan: Channel) -> bool:
    """Is the peer behind ``chan`` on this host (a loopback address, or
    the one our end of the connection has)?"""
    try:
        raddr, laddr = chan.raddr[0], chan.laddr[0]
    except (AttributeError, TypeError, IndexError):
        return True  # no addresses to tell by: assume the usual, one host
    return (
        raddr == laddr
        or raddr in ('127.0.0.1', '::1', 'localhost')
        or raddr.startswith('127.')
    )


@acm
async def raise_on_peer_exit(
    pid: int, what: str, portal: Portal | None = None
) -> AsyncIterator[None]:
    """Run the block; if process ``pid`` (a peer on this host, reached
    through ``portal``) exits meanwhile, cancel the block and raise
    :class:`PeerGone`.

    a5 leaves a receiver waiting forever on a dead peer's stream, and a
    channel we connected ourselves still looks connected, so leaving a
    context on it waits forever for the peer's final result: the peer's pid
    is the dependable signal (peers that share memory with us are on this
    host anyway), and the portal's channel is then marked disconnected so
    that every context on it exits at once.  A peer on another host (by
    the portal's addresses) has no pid of ours to watch: the block is
    cancelled and :class:`PeerGone` raised when the connection to it ends
    instead (see :func:`watch_remote_peer`)."""
    if portal is not None and not _same_host(portal.channel):
        async with watch_remote_peer(portal, what):
            yield
        return
    async with trio.open_nursery() as tn:

        async def watch() -> None:
            await wait_pid_exit(pid)
            if portal is not None:
                mark_disconnected(portal.channel)
            raise PeerGone(f'{what} (pid {pid}) exited')

        tn.start_soon(watch)
        try:
            yield
        finally:
            tn.cancel_scope.cancel()


# --- liveness across hosts ----------------------------------------------------

#: TCP keepalive of connections to other hosts: probes after this many
#: idle seconds, this often, this many unanswered before the connection
#: fails; unacknowledged data fails it after TCP_USER_TIMEOUT_MS.  A dead
#: host or a cut link thus ends the connection within ~3 s, traffic or not.
KEEPALIVE_IDLE_S: int = 1
KEEPALIVE_INTERVAL_S: int = 1
KEEPALIVE_PROBES: int = 2
TCP_USER_TIMEOUT_MS: int = 3000


def set_keepalive(sock: Any) -> None:
    """Turn on :data:`KEEPALIVE_IDLE_S` & co. on ``sock`` (a TCP socket to
    another host); options this platform lacks are skipped."""
    import socket as _socket

    opts = [
        (_socket.SOL_SOCKET, _socket.SO_KEEPALIVE, 1),
        (_socket.IPPROTO_TCP, getattr(_socket, 'TCP_KEEPIDLE', None), KEEPALIVE_IDLE_S),
        (
            _socket.IPPROTO_TCP,
            getattr(_socket, 'TCP_KEEPINTVL', None),
            KEEPALIVE_INTERVAL_S,
        ),
        (_socket.IPPROTO_TCP, getattr(_socket, 'TCP_KEEPCNT', None), KEEPALIVE_PROBES),
        (
            _socket.IPPROTO_TCP,
            getattr(_socket, 'TCP_USER_TIMEOUT', None),
            TCP_USER_TIMEOUT_MS,
        ),
    ]
    for level, opt, value in opts:
        if opt is None:
            continue
        try:
            sock.setsockopt(level, opt, value)
        except OSError as err:  # pragma: no cover - platform without it
            log.debug(f'keepalive option {opt} not set: {err}')


def _install_keepalive() -> None:
    """*a5's connections have no keepalive: a client of a dead host, or
    across a cut link, waits for ever.*  Every a5 TCP transport to a peer
    on another host (not loopback) gets :func:`set_keepalive` when it is
    made, accepted or connected."""
    from tractor import _ipc as a5_ipc

    cls = a5_ipc.MsgpackTCPStream
    if getattr(cls.__init__, '_keeps_alive', False):
        return
    orig = cls.__init__

    def __init__(self: Any, stream: Any, *args: Any, **kwargs: Any) -> None:
        orig(self, stream, *args, **kwargs)
        try:
            peer = stream.socket.getpeername()[0]
        except (AttributeError, OSError, IndexError):
            return
        if not is_loopback(str(peer)):
            set_keepalive(stream.socket)

    __init__._keeps_alive = True  # type: ignore[attr-defined]
    cls.__init__ = __init__


_install_keepalive()


def _loop_ended(chan: Channel) -> trio.Event:
    """The event set when a5's message loop on ``chan`` ends."""
    ev = getattr(chan, '_tsvc_loop_ended', None)
    if ev is None:
        ev = chan._tsvc_loop_ended = trio.Event()
    return ev


async def wait_connection_end(ctx: Context) -> None:
    """(in a context endpoint) Wait until the connection of ``ctx``'s
    peer ends (a5's message loop on it ends: EOF, reset, a keepalive
    timeout), then cancel the endpoint's task as a5 does when a loop ends
    cleanly (the endpoint's ``finally`` runs; nothing is sent on the dead
    connection).  *a5 cancels the RPC tasks of a channel only when its
    loop ends cleanly, not when the transport breaks (a SIGKILLed peer, a
    cut link)*: an endpoint that holds something for its caller (a joined
    host's session) waited for ever."""
    await _loop_ended(ctx.chan).wait()
    actor = current_actor()
    entry = getattr(actor, '_rpc_tasks', {}).get((ctx.chan, ctx.cid))
    if entry is not None:
        entry[0].cancel()
    await trio.sleep_forever()


def _install_loop_end_marks() -> None:
    """*a5 ends a channel's message loop when its connection closes or
    fails (EOF, reset, a keepalive timeout), but tells no stream or
    context on it: their receivers wait for ever.*  Mark the end on the
    channel (:func:`_loop_ended`) so :func:`watch_remote_peer` can turn it
    into :class:`PeerGone`."""
    Actor_ = tractor._actor.Actor
    if getattr(Actor_._process_messages, '_marks_end', False):
        return
    orig = Actor_._process_messages

    async def _process_messages(
        self: Any,
        chan: Any,
        shield: bool = False,
        task_status: Any = trio.TASK_STATUS_IGNORED,
    ) -> Any:
        try:
            return await orig(self, chan, shield=shield, task_status=task_status)
        finally:
            _loop_ended(chan).set()

    _process_messages._marks_end = True  # type: ignore[attr-defined]
    Actor_._process_messages = _process_messages


# (installed by _install_quiet_messages, below, every time it runs: that one
# replaces a5's ``_process_messages``, and this wraps the result)


@acm
async def watch_remote_peer(portal: Portal, what: str) -> AsyncIterator[None]:
    """Run the block; if the connection behind ``portal`` ends meanwhile
    (its peer's process died, its host went away or the link was cut: a
    keepalive failure within ~3 s, see :func:`set_keepalive`), cancel the
    block and raise :class:`PeerGone`."""
    chan = portal.channel
    ended = _loop_ended(chan)
    async with trio.open_nursery() as tn:

        async def watch() -> None:
            await ended.wait()
            mark_disconnected(chan)
            where = ':'.join(map(str, chan.raddr or ())) or 'another host'
            raise PeerGone(
                f'{what} at {where} went away (its connection closed or timed out)'
            )

        tn.start_soon(watch)
        try:
            yield
        finally:
            tn.cancel_scope.cancel()


async def cancel_actor(sa: SpawnedActor, timeout: float) -> None:
    """Ask the actor to cancel itself, wait ``timeout`` s for its process to
    exit, then kill it.  Returns once the process is reaped."""
    with trio.CancelScope(shield=True):
        with trio.move_on_after(timeout):
            if sa.proc.returncode is None and sa.portal.channel.connected():
                with trio.move_on_after(timeout / 2):
                    try:
                        await sa.portal.cancel_actor()
                    except Exception as err:  # peer went away meanwhile
                        log.debug(f'cancel request to {sa.uid} failed: {err!r}')
            await sa.proc.wait()
        await hard_kill(sa.proc)


# --- contexts ---------------------------------------------------------------


def is_context_fn(fn: Any) -> bool:
    """Is ``fn`` decorated with ``@compat.context``?"""
    return bool(getattr(fn, '_tractor_context_function', False))


@acm
async def open_context(
    portal: Portal,
    fn: Callable,
    **kwargs: Any,
) -> AsyncIterator[tuple[Context, Any]]:
    """``Portal.open_context`` whose endings are all told:

    - a cancellation provoked by the far end (its actor stopped) raises
      :class:`DaemonStopped`.  *a5 cancels the caller's body with its own
      relay and raises the far end's ``ContextCancelled``; re-raising the
      body's ``Cancelled`` instead (which no scope of the caller's owns)
      let an outer scope swallow it and the block exited silently;*
    - a cancellation of the caller itself (one of its own scopes, or its
      own ``ctx.cancel()``) propagates as itself (a5 replaces it with the
      ``ContextCancelled`` its own cancel request provoked);
    - an error raised by the body propagates as itself, not hidden behind
      the ``ContextCancelled`` that a5's cancel-on-exit provokes;
    - a dead peer raises :class:`PeerDisconnected` instead of a5's
      ``UnboundLocalError``."""
    body_raised = False
    body_exc: BaseException | None = None
    ctx_ref: Context | None = None
    _NEW_CTX.set(None)
    try:
        async with portal.open_context(fn, **kwargs) as (ctx, first):
            ctx_ref = ctx
            try:
                yield ctx, first
            except BaseException as exc:
                body_raised = True
                body_exc = exc
                raise
    except UnboundLocalError as err:
        if body_raised:  # the caller's own error, not a5's exit path
            raise
        raise PeerDisconnected(
            f'peer {portal.channel.uid} disconnected inside context {fn.__name__}'
        ) from err
    except BaseException as exc:
        if ctx_ref is None:  # refused before started(): a5 keeps its entry
            _forget_ctx(portal.actor, portal.channel, _NEW_CTX.get())
        if (
            body_exc is not None
            and _far_end_cancel(body_exc) is None
            and not only_cancelled(body_exc)
            and _only_cancels_besides(exc, body_exc)
        ):
            raise body_exc from None  # the body's own error, not what leaving provoked
        cc = _far_end_cancel(exc)
        if cc is None:
            raise
        asked = ctx_ref is not None and ctx_ref._cancel_called
        if asked or trio.current_effective_deadline() == -math.inf:
            # our own cancellation (a5 answered it with ContextCancelled)
            if body_exc is not None and only_cancelled(body_exc):
                raise body_exc from None
            raise
        uid = getattr(portal.channel, 'uid', None)
        peer = f'actor {uid[0]!r}' if uid else 'the peer'
        raise DaemonStopped(peer, f'the context {fn.__name__}') from cc


@acm
async def far_end_endings(
    peer: str,
    what: str,
    is_silent_end: Callable[[BaseException], bool],
) -> AsyncIterator[None]:
    """Raise :class:`DaemonStopped` (naming ``peer``) for an error of the
    block that ``is_silent_end`` says is the far end ending ``what``
    without a word: the same ending as the far end's cancel, which races
    it (*a5 delivers a stream's end and the context's cancel in either
    order when an actor stops*)."""
    try:
        yield
    except BaseException as exc:
        err = unwrap_error(exc)
        if err is not exc and not _only_cancels_besides(exc, err):
            raise
        if is_silent_end(err):
            raise DaemonStopped(f'actor {peer!r}', what) from err
        raise


def _far_end_cancel(exc: BaseException) -> BaseException | None:
    """The ``ContextCancelled`` in ``exc`` if that (and cancellations) is
    all there is, else ``None``."""
    if isinstance(exc, tractor.ContextCancelled):
        return exc
    if isinstance(exc, BaseExceptionGroup):
        found = None
        for e in exc.exceptions:
            if isinstance(e, trio.Cancelled):
                continue
            inner = _far_end_cancel(e)
            if inner is None:
                return None
            found = found or inner
        return found
    return None


def _only_cancels_besides(exc: BaseException, own: BaseException) -> bool:
    """Is ``exc`` made of ``own``'s errors plus cancellations only?"""
    mine = {id(e) for e in error_leaves(own)}
    return all(
        id(e) in mine or isinstance(e, (trio.Cancelled, tractor.ContextCancelled))
        for e in error_leaves(exc)
    )


async def context_result(ctx: Context) -> Any:
    """The context's final result (a5: ``ctx.result()``; later
    tractors: ``ctx.wait_for_result()``)."""
    return await ctx.result()


def remote_error_type(err: BaseException) -> str | None:
    """The remote exception's type name carried by a ``RemoteActorError``."""
    if not isinstance(err, tractor.RemoteActorError):
        return None
    msgdata = getattr(err, 'msgdata', None) or {}
    name = msgdata.get('type_str') if isinstance(msgdata, dict) else None
    return name or getattr(getattr(err, 'type', None), '__name__', None)


def remote_error_message(err: BaseException) -> str:
    """The remote exception's own message (the last line of its traceback)."""
    tb = (remote_traceback(err) or '').strip()
    last = tb.splitlines()[-1] if tb else str(err)
    name = remote_error_type(err)
    for prefix in (f'{name}: ',):
        if name and prefix in last:
            return last.split(prefix, 1)[1]
    return last


def remote_traceback(err: BaseException) -> str | None:
    msgdata = getattr(err, 'msgdata', None) or {}
    return msgdata.get('tb_str') if isinstance(msgdata, dict) else None


def unwrap_error(err: BaseException) -> BaseException:
    """The first real error inside an exception group (a5 often raises one
    remote error twice, from the context and from its nursery)."""
    while isinstance(err, BaseExceptionGroup):
        leaves = [e for e in err.exceptions if not isinstance(e, trio.Cancelled)]
        if not leaves:
            return err
        remote = [e for e in leaves if isinstance(e, tractor.RemoteActorError)]
        err = (remote or leaves)[0]
    return err


def is_cancellation(err: BaseException) -> bool:
    return isinstance(err, (trio.Cancelled, tractor.ContextCancelled))


# --- registry ---------------------------------------------------------------


@acm
async def _open_registry(addr: tuple[str, int]) -> AsyncIterator[Portal]:
    """A portal to the registry at ``addr``.  *a5's ``get_arbiter``, in
    an actor that is itself a registry, answers from its own registry
    whatever address it is given*: a program on host b with a registry of
    its own never reached host a's.  Only this actor's own registry
    address is answered locally; any other is connected to."""
    actor = current_actor()
    if actor is not None and actor.is_arbiter and _is_own_addr(actor, addr):
        async with tractor.get_arbiter(*addr) as portal:
            yield portal
        return
    async with open_portal(addr) as portal:
        yield portal


def _is_own_addr(actor: Actor, addr: tuple[str, int]) -> bool:
    """Is ``addr`` where this actor listens (its registry address)?"""
    own = {tuple(actor._arb_addr)}
    try:
        own.add(tuple(actor.accept_addr))
    except (AttributeError, IndexError, OSError, TypeError):
        pass
    host, port = addr
    if (host, port) in own:
        return True
    # ``localhost`` and the like: the same port on one of our loopbacks
    return any(p == port and is_loopback(h) and is_loopback(host) for h, p in own)


async def find_actor_addr(
    name: str,
    addr: tuple[str, int],
    timeout: float = REGISTRY_TIMEOUT_S,
) -> tuple[str, int] | None:
    """Ask the registry at ``addr`` (that one, even from an actor that is
    a registry itself) where ``name`` is; an answer that does not come
    within ``timeout`` s raises :class:`RegistryUnreachable` (*a5's query
    waits for ever on a frozen registry*).  A loopback address that an
    actor on another host registered raises
    :class:`~tractor_services._addr.UnreachableService` saying how to
    start its root."""
    addr = parse_addr(addr)
    with trio.move_on_after(timeout):
        try:
            async with _open_registry(addr) as reg:
                sockaddr = await reg.run_from_ns('self', 'find_actor', name=name)
        except OSError as err:
            raise RegistryUnreachable(
                f'cannot reach the registry at {addr[0]}:{addr[1]}: {err}'
            ) from None
        if not sockaddr:
            return None
        found = check_reachable(name, parse_addr(sockaddr), addr)
        if _elsewhere(found, addr) and not await actor_answers(found):
            log.info(
                f'the registry at {addr[0]}:{addr[1]} has a stale entry for {name!r} '
                f'({found[0]}:{found[1]} does not answer): not handed out'
            )
            return None
        return found
    raise RegistryUnreachable(
        f'no answer from the registry at {addr[0]}:{addr[1]} within {timeout:g} s'
    )


#: seconds an actor on another host than its registry has to answer a
#: lookup's check (a connect and a5's id exchange)
VERIFY_TIMEOUT_S: float = 2.0


def _elsewhere(sockaddr: tuple[str, int], registry_addr: tuple[str, int]) -> bool:
    """Is the actor at ``sockaddr`` on another host than its registry (so
    that the registry cannot know it died: *a5 keeps a dead actor's entry*)?"""
    return not is_loopback(sockaddr[0]) and sockaddr[0] != registry_addr[0]


async def actor_answers(
    sockaddr: tuple[str, int], timeout: float = VERIFY_TIMEOUT_S
) -> bool:
    """Does a tractor actor answer at ``sockaddr`` within ``timeout`` s (a
    connect and a5's id exchange)?  A dead host, a cut link, a closed port
    or a silent listener all answer ``False``."""
    import struct
    import uuid

    import msgspec

    with trio.move_on_after(timeout):
        try:
            stream = await trio.open_tcp_stream(*sockaddr)
        except OSError:
            return False
        async with stream:
            data = msgspec.msgpack.encode(['liveness_probe', str(uuid.uuid4())])
            try:
                await stream.send_all(struct.pack('<I', len(data)) + data)
                head = await stream.receive_some(4)
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                return False
            return len(head) > 0
    return False


@acm
async def open_portal(sockaddr: tuple[str, int]) -> AsyncIterator[Portal]:
    """A portal over a new connection to the actor at ``sockaddr``, its
    message loop ended and the connection closed when the block exits.

    *a5's ``open_portal`` starts the connection's message loop, shielded,
    with ``nursery.start``: when the caller is cancelled right then (after
    the task is spawned, before it runs), trio leaves the task in
    ``start``'s own nursery, and a5 never gets the scope it would cancel:
    ``start`` waits for the shielded loop, i.e. for the peer to close the
    connection, for ever* (a root's metrics refresh cancelled by SIGTERM
    there hung the root's teardown).  Here the loop's shielded scope is
    ours before the task exists, so the exit always ends it, and the
    connection is closed even when the block is cancelled."""
    from tractor._ipc import Channel

    actor = tractor.current_actor()
    chan = Channel(sockaddr)
    await chan.connect()
    loop_cs = trio.CancelScope(shield=True)

    async def message_loop() -> None:
        with loop_cs:
            await actor._process_messages(chan)

    try:
        async with trio.open_nursery() as tn:
            try:
                if chan.uid is None:
                    await actor._do_handshake(chan)
                tn.start_soon(message_loop)
                portal = Portal(chan)
                try:
                    yield portal
                finally:
                    with trio.CancelScope(shield=True), trio.move_on_after(2):
                        await portal.aclose()  # a5: closes the portal's streams
            finally:
                loop_cs.cancel()  # also when the task has not run yet
    finally:
        with trio.CancelScope(shield=True):
            await chan.aclose()


@acm
async def find_actor(
    name: str,
    addr: tuple[str, int],
) -> AsyncIterator[Portal | None]:
    """A portal to the actor registered as ``name``, or ``None``."""
    sockaddr = await find_actor_addr(name, addr)
    if sockaddr is None:
        yield None
        return
    async with open_portal(sockaddr) as portal:
        yield portal


#: seconds :func:`wait_for_actor` waits for a name to appear by default
WAIT_FOR_ACTOR_S: float = 60.0


@acm
async def wait_for_actor(
    name: str,
    addr: tuple[str, int],
    poll_s: float = 0.02,
    timeout: float = WAIT_FOR_ACTOR_S,
) -> AsyncIterator[Portal]:
    """Wait for ``name`` to register, then yield a portal to it.  *a5's
    ``wait_for_actor`` has no deadline*: after ``timeout`` s without the
    name, :class:`ServiceNotFound` (each query also has its own)."""
    sockaddr: tuple[str, int] | None = None
    with trio.move_on_after(timeout):
        while (sockaddr := await find_actor_addr(name, addr)) is None:
            await trio.sleep(poll_s)
    if sockaddr is None:
        raise ServiceNotFound(
            f'{name!r} did not register in the registry at {addr[0]}:{addr[1]} '
            f'within {timeout:g} s'
        )
    async with open_portal(sockaddr) as portal:
        yield portal


def _install_tolerant_unregister() -> None:
    """*a5's registry raises ``KeyError`` (logged at ERROR, and sent back)
    when an actor unregisters an entry that is not there*: a joined host's
    root leaving finds its entries already dropped by the registry root
    (see ``_join``), and its own exit then failed.  An absent entry is fine."""
    Arbiter_ = tractor._actor.Arbiter
    if getattr(Arbiter_.unregister_actor, '_tolerant', False):
        return

    async def unregister_actor(self: Any, uid: tuple[str, str]) -> None:
        self._registry.pop((str(uid[0]), str(uid[1])), None)

    unregister_actor._tolerant = True  # type: ignore[attr-defined]
    Arbiter_.unregister_actor = unregister_actor


_install_tolerant_unregister()


async def unregister_actor(uid: tuple[str, str], addr: tuple[str, int]) -> None:
    """Drop a (dead) actor's registry entry; absent entries are fine."""
    with trio.CancelScope(shield=True), trio.move_on_after(2):
        try:
            async with _open_registry(addr) as reg:
                await reg.run_from_ns('self', 'unregister_actor', uid=uid)
        except (KeyError, OSError, tractor.RemoteActorError):
            pass


# --- sending ------------------------------------------------------------------


async def send_whole(stream: MsgStream, msg: Any) -> None:
    """Send ``msg`` on ``stream`` (a stream of a connection that other
    streams and RPCs share) and never cut it part-way.

    *a5 frames each message with a 4-byte length and writes it with one
    ``send_all``*: a send cancelled after part of the message was written
    leaves the peer's connection reader waiting for the rest for ever, and
    every stream and RPC on that connection dies with it.  So the send is
    shielded from cancellation.  Bound it another way: judge the peer by
    its progress (feedbus's stall rule) and, for a send still stuck when
    its owner must go, :func:`abort_connection`."""
    with trio.CancelScope(shield=True):
        await stream.send(msg)


def _transport_socket(stream: Any) -> Any:
    chan = getattr(getattr(stream, '_ctx', None), 'chan', None)
    if chan is None:
        chan = getattr(stream, 'channel', stream)
    msgstream = getattr(chan, 'msgstream', None)
    return chan, getattr(getattr(msgstream, 'stream', None), 'socket', None)


def abort_connection(stream: MsgStream | Portal | Channel) -> None:
    """Close the whole connection under ``stream`` (a ``MsgStream``, a
    ``Portal`` or a channel) at once: a send blocked on it raises
    ``trio.ClosedResourceError`` and the peer sees the connection end, never
    half a message followed by silence.  For a send stuck on a peer that
    stopped reading when its owner must go (see :func:`send_whole`)."""
    chan, sock = _transport_socket(stream)
    if sock is not None:
        sock.close()  # trio wakes every task blocked on the socket
    if chan is not None and hasattr(chan, 'connected'):
        mark_disconnected(chan)


async def send_whole_or_abort(stream: MsgStream, msg: Any, grace: float) -> None:
    """:func:`send_whole`, for a caller that may be cancelled meanwhile:
    the send still finishes whole, but if it is stuck (the peer stopped
    reading) the caller's cancellation waits at most ``grace`` seconds for
    it, then :func:`abort_connection` ends it (the peer sees a disconnect)
    and the caller's ``Cancelled`` goes on.  Costs a task per send: for
    requests, not for a data path."""
    done = trio.Event()
    aborted = False

    async def send() -> None:
        try:
            await send_whole(stream, msg)
        except (trio.ClosedResourceError, trio.BrokenResourceError):
            if not aborted:
                raise  # else: our own abort; the caller's Cancelled goes on
        finally:
            done.set()

    async with trio.open_nursery() as tn:
        tn.start_soon(send)
        try:
            await done.wait()
        except trio.Cancelled:
            with trio.CancelScope(shield=True):
                with trio.move_on_after(grace):
                    await done.wait()
                if not done.is_set():
                    aborted = True
                    abort_connection(stream)
            raise


# --- streams ----------------------------------------------------------------


@dataclass
class StreamStats:
    received: int = 0
    dropped: int = 0
    overruns: int = 0


@dataclass(eq=False)
class SafeStream:
    """A ``MsgStream`` drained into a bounded local buffer.

    The connection never waits on the consumer and a burst never overruns
    the context: when the buffer (tractor_services' one drop-oldest queue)
    is full the oldest message is dropped and counted in :attr:`stats`."""

    stream: MsgStream
    maxlen: int
    stats: StreamStats = field(default_factory=StreamStats)
    _buf: DropOldestQueue = field(init=False)

    def __post_init__(self) -> None:
        self._buf = DropOldestQueue(self.maxlen, self.stats)

    async def send(self, msg: Any) -> None:
        await send_whole(self.stream, msg)

    async def receive(self) -> Any:
        return await self._buf.receive()

    def __aiter__(self) -> SafeStream:
        return self

    async def __anext__(self) -> Any:
        try:
            return await self.receive()
        except trio.EndOfChannel:
            raise StopAsyncIteration from None

    async def _pump(self) -> None:
        error: BaseException | None = None
        try:
            async for msg in self.stream:
                self._buf.put(msg)
                self.stats.received += 1
        except (trio.BrokenResourceError, trio.ClosedResourceError) as err:
            error = PeerDisconnected(f'stream broke: {err!r}')
        except Exception as err:
            error = err
        finally:
            self._buf.close(error)


#: messages the runtime may queue per context before our pump drains them
_CTX_QUEUE = 2**12


@acm
async def open_stream(
    ctx: Context,
    maxlen: int = 1024,
) -> AsyncIterator[SafeStream]:
    """Open the context's stream without connection-wide backpressure and
    without overruns killing the context (see :class:`SafeStream`)."""
    async with ctx.open_stream(
        backpressure=False, msg_buffer_size=_CTX_QUEUE
    ) as stream:
        try:
            safe = SafeStream(stream, maxlen)
            async with trio.open_nursery() as tn:
                tn.start_soon(safe._pump)
                try:
                    yield safe
                finally:
                    tn.cancel_scope.cancel()
        finally:
            _forget_stream(ctx, stream)


@acm
async def open_drained_stream(ctx: Context) -> AsyncIterator[MsgStream]:
    """The context's raw stream, for a caller whose receive loop never
    blocks between receives (it hands messages to bounded queues of its
    own): no connection backpressure, a large context queue, and no extra
    pump task.  Anyone else should use :func:`open_stream`."""
    async with ctx.open_stream(
        backpressure=False, msg_buffer_size=_CTX_QUEUE
    ) as stream:
        try:
            yield stream
        finally:
            _forget_stream(ctx, stream)


# --- stopping a child ----------------------------------------------------------


def _install_prompt_hard_kill() -> None:
    """*a5's hard reap of a child still alive (one whose spawn was
    cancelled, e.g. by Ctrl-C 0.7 s into ``samplerd demo``) waits 3 s for
    a process it never asked to stop, then logs ``#ZOMBIE_LORD_IS_HERE``
    at CRITICAL and kills it.*  Ask it first: SIGTERM (a child that got as
    far as our guard tears its tree down; one still starting ends at
    once), then SIGKILL what is left after :data:`CHILD_GRACE_S`."""
    from tractor import _spawn as a5_spawn

    if getattr(a5_spawn.do_hard_kill, '_asks_first', False):
        return

    async def do_hard_kill(
        proc: trio.Process, terminate_after: int = CHILD_GRACE_S
    ) -> None:
        with trio.CancelScope(shield=True):
            if proc.returncode is None:
                proc.terminate()
                with trio.move_on_after(terminate_after + 1):
                    await proc.wait()
            if proc.returncode is None:
                log.warning(f'actor process {proc.pid} ignored SIGTERM: killed')
                proc.kill()
                await proc.wait()

    do_hard_kill._asks_first = True  # type: ignore[attr-defined]
    a5_spawn.do_hard_kill = do_hard_kill


_install_prompt_hard_kill()


# --- bookkeeping of finished calls --------------------------------------------

#: the context a5 created last in this task (see :func:`_install_forgetful_rpc`)
_NEW_CTX: contextvars.ContextVar[Any] = contextvars.ContextVar(
    'tractor_services_new_ctx', default=None
)


def _install_forgetful_rpc() -> None:
    """*a5 keeps an entry in ``actor._contexts`` for every ``Portal.run``
    and every cancel request, on both ends, and removes it only for context
    endpoints* (~2 KB per call: a watcher polling once a second grew a
    daemon by ~180 MB a day).  Drop the entry when the call is over:

    - callee side: around a5's ``_invoke`` (the RPC entry, looked up as a
      module global), once a non-context call returns or fails;
    - caller side: around ``Portal._return_once`` (the wait for a
      single-result reply of ``run``, ``run_from_ns`` and cancel
      requests), and around ``Actor.start_remote_task`` when the call is
      refused at once (its ``get_context`` is remembered per task, so the
      entry of a context refused before ``started()`` is dropped by
      :func:`open_context` too)."""
    from tractor import _actor as a5_actor

    if getattr(a5_actor._invoke, '_forgets_calls', False):
        return
    a5_invoke = a5_actor._invoke
    a5_get_context = a5_actor.Actor.get_context
    a5_start_remote_task = a5_actor.Actor.start_remote_task
    a5_return_once = tractor.Portal._return_once

    async def _invoke(
        actor: Any,
        cid: str,
        chan: Any,
        func: Callable,
        kwargs: dict[str, Any],
        is_rpc: bool = True,
        task_status: Any = trio.TASK_STATUS_IGNORED,
    ) -> None:
        try:
            await a5_invoke(
                actor, cid, chan, func, kwargs, is_rpc=is_rpc, task_status=task_status
            )
        finally:
            if not getattr(
                func, '_tractor_context_function', False
            ):  # a5 pops those itself
                actor._contexts.pop((chan.uid, cid), None)

    def get_context(
        self: Any, chan: Any, cid: str, msg_buffer_size: int | None = None
    ) -> Any:
        ctx = a5_get_context(self, chan, cid, msg_buffer_size=msg_buffer_size)
        _NEW_CTX.set(ctx)
        return ctx

    async def start_remote_task(self: Any, chan: Any, *args: Any, **kwargs: Any) -> Any:
        _NEW_CTX.set(None)
        try:
            return await a5_start_remote_task(self, chan, *args, **kwargs)
        except BaseException:
            _forget_ctx(self, chan, _NEW_CTX.get())
            raise

    async def _return_once(self: Any, ctx: Any) -> Any:
        try:
            return await a5_return_once(self, ctx)
        finally:
            _forget_ctx(self.actor, self.channel, ctx)

    _invoke._forgets_calls = True  # type: ignore[attr-defined]
    a5_actor._invoke = _invoke
    a5_actor.Actor.get_context = get_context
    a5_actor.Actor.start_remote_task = start_remote_task
    tractor.Portal._return_once = _return_once


def _forget_ctx(actor: Any, chan: Any, ctx: Any) -> None:
    if actor is not None and ctx is not None and chan.uid is not None:
        actor._contexts.pop((chan.uid, ctx.cid), None)


def _forget_stream(ctx: Any, stream: Any) -> None:
    """*a5's caller-side ``open_stream`` never removes its stream from
    ``portal._streams``* (it removes the wrong object, then logs "Stream
    was already destroyed?"): remove it."""
    portal = getattr(ctx, '_portal', None)
    if portal is not None:
        portal._streams.discard(stream)


_install_forgetful_rpc()


# --- debug strings of every message --------------------------------------------

#: a5's transport and runtime log levels (``tractor.log.LEVELS``)
_TRANSPORT_LEVEL = 5
_RUNTIME_LEVEL = 15

#: where a5 formats a debug string of every message it sends or receives:
#: (module, class, method, the log calls in it to guard)
_MESSAGE_LOG_SITES: tuple[tuple[str, str, str, tuple[str, ...]], ...] = (
    # f"send `{item}`": the whole message, on every send
    ('tractor._ipc', 'Channel', 'send', ('log.transport(',)),
    # f"received header {size}", f"received {msg_bytes}": the raw bytes
    ('tractor._ipc', 'MsgpackTCPStream', '_iter_packets', ('log.transport(',)),
    # f"Received msg {msg} from {chan.uid}", and a "Waiting on next msg"
    # line after each one delivered to a context
    (
        'tractor._actor',
        'Actor',
        '_process_messages',
        ('log.transport(', 'log.runtime('),
    ),
    # f"Delivering {msg} from {chan.uid} to caller {cid}"
    ('tractor._actor', 'Actor', '_push_result', ('log.runtime(',)),
)

#: (class, method name) -> (a5's method, ours); filled at the first install
_MESSAGE_METHODS: dict[tuple[type, str], tuple[Any, Any]] = {}


def _guard_log_calls(func: Any, calls: tuple[str, ...]) -> Any:
    """``func`` (an a5 method) recompiled from its own source with every
    ``log.<level>(...)`` call in ``calls`` made conditional on that level
    being enabled (``log.isEnabledFor(n) and log.<level>(...)``): the
    f-string argument is then only built when the line is logged.  Same
    file name and line numbers as a5's, so tracebacks still point there.
    ``None`` if the source is not a5's as expected (a later tractor)."""
    try:
        src = textwrap.dedent(inspect.getsource(func))
        filename = inspect.getsourcefile(func)
    except (OSError, TypeError):  # pragma: no cover - no source shipped
        return None
    if 'super()' in src or '__class__' in src:
        return None  # would need the class cell a recompiled function lacks
    levels = {'log.transport(': _TRANSPORT_LEVEL, 'log.runtime(': _RUNTIME_LEVEL}
    for call in calls:
        if call not in src:
            return None
        src = src.replace(call, f'log.isEnabledFor({levels[call]}) and {call}')
    tree = ast.parse(src)
    ast.increment_lineno(tree, func.__code__.co_firstlineno - 1)
    code = compile(
        tree,
        filename or '<a5>',
        'exec',
        # a5's modules defer annotations: so must their recompiled methods
        flags=__future__.annotations.compiler_flag,
        dont_inherit=True,
    )
    ns: dict[str, Any] = {}
    exec(code, func.__globals__, ns)  # noqa: S102 - a5's own source, edited above
    new = ns[func.__name__]
    new.__qualname__ = func.__qualname__
    new.__doc__ = func.__doc__
    new._guards_log_strings = True
    return new


def _install_quiet_messages(quiet: bool = True) -> None:
    """*a5 formats a debug string of every message it sends and receives,
    whole (``f"send `{item}`"`` in ``Channel.send``; on the receive path
    the raw bytes in ``MsgpackTCPStream._iter_packets`` and the decoded
    message in ``Actor._process_messages`` and ``Actor._push_result``),
    even though nothing logs them*: its cost grows with the message (a
    128-quote batch: ~100 µs to send, ~350 µs to receive) and was up to a
    third of a busy feed's CPU.  Those methods are replaced by a5's own
    code with each such log call guarded by its level, so the lines are
    still logged, whole, when tractor's log is at ``transport`` level.

    Installed at import (in every actor we spawn, which imports this
    module).  ``quiet=False`` puts a5's methods back: for the before /
    after figures of ``benchmarks/bench_feedbus.py`` only."""
    if not _MESSAGE_METHODS:
        for modname, clsname, meth, calls in _MESSAGE_LOG_SITES:
            cls = getattr(importlib.import_module(modname), clsname)
            a5_meth = cls.__dict__[meth]
            ours = _guard_log_calls(a5_meth, calls)
            if ours is None:  # pragma: no cover - not a5's source
                log.debug(f'{clsname}.{meth}: not as in tractor 0.1.0a5, left alone')
                continue
            _MESSAGE_METHODS[(cls, meth)] = (a5_meth, ours)
    for (cls, meth), (a5_meth, ours) in _MESSAGE_METHODS.items():
        setattr(cls, meth, ours if quiet else a5_meth)
    # that replaced ``_process_messages``: wrap whichever one is installed
    # again, or connections that end would no longer be marked (liveness
    # across hosts, joined roots)
    _install_loop_end_marks()


_install_quiet_messages()


async def runtime_counts() -> dict[str, int | None]:
    """(Runs in any actor: the adapter is an RPC module of every actor we
    spawn.)  The sizes of a5's per-call bookkeeping and this process's
    resident memory, for leak checks."""
    return local_runtime_counts()


def local_runtime_counts() -> dict[str, int | None]:
    """:func:`runtime_counts` of this actor."""
    actor = tractor.current_actor()
    return {
        'contexts': len(actor._contexts),
        'rpc_tasks': len(actor._rpc_tasks),
        'peer_channels': sum(len(chans) for chans in actor._peers.values()),
        'rss': rss_bytes(),
    }


# --- logging ----------------------------------------------------------------

#: a5's records that only repeat an error on its way to the caller, who
#: reports it: dropped at the default level (kept at debug)
_ECHOES = (
    'Root actor crashed',  # around any error leaving open_root_actor, even the user's own
    'Remote context error for',  # a callee's error, relayed to the caller
    'Nursery for ',  # "... errored with": the error propagates
    'Stream was already destroyed?',  # a5 removes the wrong object from portal._streams
    'Failed to ship error to caller',  # the caller is gone (its connection ended)
)


def _runtime_verbose() -> bool:
    """Is tractor's log at debug level (or finer)?"""
    return logging.getLogger('tractor').getEffectiveLevel() <= logging.DEBUG


class _QuietCancels(logging.Filter):
    """Keep a5's noise out of the default log level:

    - *a5 logs a full traceback at ERROR for every ``ctx.cancel()``*: those
      records are dropped;
    - *a refused call (an endpoint raising) logs "Actor crashed:" with a
      traceback, though the actor serves on*: one line with the error's
      type and message instead, the traceback only at debug level;
    - *a5 logs an error again at each hop on its way to the caller* (the
      "Root actor crashed" of a client, even around an error of the user's
      own code; a relayed context error; a nursery's): dropped, the caller
      reports it; kept at debug level."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if exc is not None and is_cancellation(exc):
            return False
        msg = record.getMessage()
        if 'ContextCancelled' in msg or 'Cancelled' in msg.split(':', 1)[0]:
            return False
        if _runtime_verbose():
            return True
        if msg.startswith(_ECHOES):
            return False
        if msg.startswith('Actor crashed') and exc is not None:
            err = unwrap_error(exc)
            text = str(err).strip().splitlines()
            record.msg = f'call failed: {type(err).__name__}' + (
                f': {text[0]}' if text else ''
            )
            record.args = ()
            record.exc_info = None
            record.exc_text = None
        return True


def quiet_runtime_logs() -> None:
    """Keep a5's cancellation noise out of the default log level."""
    logger = logging.getLogger('tractor')
    # the logger's own filter sees records logged on 'tractor' itself; the
    # handlers' see those of its children ('tractor._portal', ...), and a5
    # may add its console handler after a first call: check every one
    for f_owner in (logger, *logger.handlers):
        if not any(isinstance(f, _QuietCancels) for f in f_owner.filters):
            f_owner.addFilter(_QuietCancels())


def ignore_runtime_warnings() -> None:
    """a5 uses ``trio.MultiError``, deprecated since trio 0.22."""
    for mod in _NOISY_MODULES:
        warnings.filterwarnings(
            'ignore', category=trio.TrioDeprecationWarning, module=mod
        )


ignore_runtime_warnings()


# --- RPC modules --------------------------------------------------------------


def expose_module(modname: str) -> None:
    """Let peers call functions in ``modname`` on this actor (a5 fixes its
    RPC modules at startup; this adds one to a running actor)."""
    import importlib

    actor = tractor.current_actor()
    if modname not in actor._mods:
        actor._mods[modname] = importlib.import_module(modname)


__all__ = [
    # the runtime's names
    'TRACTOR_VERSION',
    'Actor',
    'ActorNursery',
    'Channel',
    'Context',
    'ContextCancelled',
    'MsgStream',
    'Portal',
    'RemoteActorError',
    'context',
    'get_logger',
    # runtime
    'CHILD_GRACE_S',
    'current_actor',
    'expose_module',
    'is_registry',
    'open_actor_nursery',
    'open_root_actor',
    'runtime_registry_addr',
    # addresses across hosts
    'own_host',
    'service_bind_addr',
    # spawning and stopping
    'SpawnedActor',
    'cancel_actor',
    'start_actor',
    # dead peers
    'KEEPALIVE_IDLE_S',
    'mark_disconnected',
    'raise_on_peer_exit',
    'set_keepalive',
    'wait_connection_end',
    'watch_remote_peer',
    'wait_disconnected',
    'watch_process',
    # contexts and remote errors
    'context_result',
    'far_end_endings',
    'is_cancellation',
    'is_context_fn',
    'open_context',
    'remote_error_message',
    'remote_error_type',
    'remote_traceback',
    'unwrap_error',
    # the registry
    'REGISTRY_TIMEOUT_S',
    'VERIFY_TIMEOUT_S',
    'actor_answers',
    'find_actor',
    'find_actor_addr',
    'open_portal',
    'registry_reachable',
    'WAIT_FOR_ACTOR_S',
    'unregister_actor',
    'wait_for_actor',
    # sending and streams
    'SafeStream',
    'StreamStats',
    'abort_connection',
    'open_drained_stream',
    'open_stream',
    'send_whole',
    'send_whole_or_abort',
    # a5's bookkeeping and logs
    'ignore_runtime_warnings',
    'local_runtime_counts',
    'quiet_runtime_logs',
    'runtime_counts',
]
