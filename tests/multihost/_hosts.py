"""Several "hosts" on one machine, for the multi-host tests.

Each host is a network namespace with one veth into a private bridge; the
bridge lives in a namespace of its own, so nothing of it shows on the
machine, and the addresses come from a private /24 (:data:`SUBNET`) with
no route out.  Each host also gets its own pid namespace and its own
``/dev/shm`` (a tmpfs): with plain ``ip netns exec`` the "hosts" would
share shared memory and pids, and a test of what crosses hosts would pass
falsely (a shm token attaches, a pid watch works).

A host is held by one process: ``ip netns exec NS unshare --pid --fork
--mount-proc --mount sh -c 'mount -t tmpfs ... /dev/shm; exec sleep
infinity'``; that ``sleep`` is pid 1 of the host's pid namespace, and
every command runs beside it (``nsenter --net --pid --mount``).  When pid
1 dies the kernel kills everything else in its pid namespace, so teardown
is: kill each host's holder, then delete the namespaces (which removes the
veths and the bridge).  :class:`Network` does it even when a test fails.

Needs root (CAP_SYS_ADMIN and CAP_NET_ADMIN) and ``ip``, ``unshare``,
``nsenter`` (util-linux, iproute2).  :func:`unavailable` says what is
missing, for the skip reason.
"""

from __future__ import annotations

import itertools
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
import trio

#: the private subnet the hosts' addresses come from (.1 is host a, ...)
SUBNET = '10.213.7'
#: namespace names start with this, then this process's pid
NS_PREFIX = 'tsmh'
TOOLS = ('ip', 'unshare', 'nsenter')
HERE = Path(__file__).parent
PROGRAMS = HERE / 'programs'
#: the interpreter every host runs: this test session's own (the workspace
#: .venv under `uv run`, the session's under nox)
PYTHON = sys.executable

_counter = itertools.count()


def _ip(*args: str) -> None:
    subprocess.run(['ip', *args], check=True, capture_output=True, timeout=30)


def _ip_quiet(*args: str) -> None:
    subprocess.run(['ip', *args], check=False, capture_output=True, timeout=30)


def unavailable() -> str | None:
    """Why hosts cannot be made here (for a skip), or ``None``."""
    if sys.platform != 'linux':
        return f'network namespaces need Linux (this is {sys.platform})'
    missing = [t for t in TOOLS if shutil.which(t) is None]
    if missing:
        return f'{", ".join(missing)} not found (iproute2 / util-linux)'
    if os.geteuid() != 0:
        return 'network namespaces need root (CAP_SYS_ADMIN, CAP_NET_ADMIN)'
    probe = f'{NS_PREFIX}{os.getpid()}probe'
    res = subprocess.run(
        ['ip', 'netns', 'add', probe], capture_output=True, text=True, timeout=30
    )
    if res.returncode != 0:
        return f'cannot make a network namespace: {res.stderr.strip()}'
    try:
        res = subprocess.run(
            [
                'ip',
                'netns',
                'exec',
                probe,
                'unshare',
                '--pid',
                '--fork',
                '--mount',
                'true',
            ],
            capture_output=True,
            text=True,
            timeout=30,
        )
        if res.returncode != 0:
            return f'cannot make a pid and mount namespace: {res.stderr.strip()}'
    finally:
        _ip_quiet('netns', 'del', probe)
    return None


def leftover_namespaces() -> list[str]:
    """This process's namespaces still present (teardown must leave none)."""
    res = subprocess.run(
        ['ip', 'netns', 'list'], capture_output=True, text=True, timeout=30
    )
    mine = f'{NS_PREFIX}{os.getpid()}n'
    return [
        line.split()[0] for line in res.stdout.splitlines() if line.startswith(mine)
    ]


@dataclass(eq=False)
class Host:
    """One "host": a network, pid and mount namespace with its own
    ``/dev/shm``; :attr:`addr` is its address on the bridge."""

    name: str
    addr: str
    ns: str
    holder: subprocess.Popen | None = None
    pid1: int | None = None  # the holder's `sleep`, pid 1 inside the host
    procs: list[trio.Process] = field(default_factory=list)
    #: this host's $XDG_RUNTIME_DIR (a root writes its token file there);
    #: /tmp itself is shared by the hosts
    runtime_dir: Path | None = None

    def argv(self, *cmd: str) -> list[str]:
        """``cmd`` run inside this host."""
        assert self.pid1 is not None, f'host {self.name} is not up'
        return [
            'nsenter',
            '-t',
            str(self.pid1),
            '--net',
            '--pid',
            '--mount',
            '--',
            *cmd,
        ]

    def python(self, *args: str) -> list[str]:
        """The session's Python running ``args`` inside this host."""
        return self.argv(PYTHON, *args)

    async def run(
        self,
        *cmd: str,
        timeout: float = 120,
        check: bool = False,
        env: dict[str, str] | None = None,
    ) -> subprocess.CompletedProcess:
        """Run ``cmd`` inside this host to its end (``env``: more
        environment variables); output captured."""
        with trio.fail_after(timeout):
            return await trio.run_process(
                self.argv(*cmd),
                capture_stdout=True,
                capture_stderr=True,
                check=check,
                env=self.env(**(env or {})),
            )

    async def start(self, *cmd: str, stderr: Any = None) -> trio.Process:
        """Start ``cmd`` inside this host, stdout piped (see
        :func:`read_line`), stderr to ``stderr`` (a file) if given; it is
        killed with the host at teardown."""
        proc = await trio.lowlevel.open_process(
            self.argv(*cmd), stdout=subprocess.PIPE, stderr=stderr, env=self.env()
        )
        self.procs.append(proc)
        return proc

    def env(self, **extra: str) -> dict[str, str]:
        """The environment of commands in this host: this session's, with
        the test programs importable, this host's runtime folder, and no
        registry address or token of its own."""
        env = dict(os.environ)
        for name in (
            'TRACTOR_REGISTRY_ADDR',
            'TRACTOR_BIND_HOST',
            'TRACTOR_SERVICES_TOKEN',
            'TRACTOR_SERVICES_TOKEN_FILE',
            'TRACTOR_SERVICES_ALLOW_MODULES',
        ):
            env.pop(name, None)
        env['PYTHONPATH'] = os.pathsep.join(
            p for p in (str(PROGRAMS), env.get('PYTHONPATH', '')) if p
        )
        env['XDG_RUNTIME_DIR'] = str(self.runtime_dir)
        env.update(extra)
        return env

    # --- lifetime (Network calls these) -----------------------------------------

    def _up(self) -> None:
        self.runtime_dir = Path(tempfile.mkdtemp(prefix=f'{self.ns}_run_'))
        mount = 'mount -t tmpfs -o size=256m,mode=1777 tmpfs /dev/shm'
        self.holder = subprocess.Popen(
            [
                'ip',
                'netns',
                'exec',
                self.ns,
                'unshare',
                '--pid',
                '--fork',
                '--mount-proc',
                '--mount',
                '--propagation',
                'private',
                '--kill-child=SIGKILL',
                'sh',
                '-c',
                f'{mount} && echo up && exec sleep infinity',
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        line = self.holder.stdout.readline() if self.holder.stdout else ''
        if line.strip() != 'up':
            err = self.holder.stderr.read() if self.holder.stderr else ''
            raise RuntimeError(f'host {self.name} did not come up: {line}{err}')
        kids = psutil.Process(self.holder.pid).children()
        if len(kids) != 1:
            raise RuntimeError(f'host {self.name}: no pid 1 under its holder ({kids})')
        self.pid1 = kids[0].pid

    def _down(self) -> None:
        """Kill everything in this host (pid 1 first: the kernel kills the
        rest), and reap what we started."""
        for pid in (self.pid1, self.holder.pid if self.holder else None):
            if pid is None:
                continue
            try:
                os.kill(pid, 9)
            except ProcessLookupError:
                pass
        if self.holder is not None:
            try:
                self.holder.wait(timeout=30)
            finally:
                for f in (self.holder.stdout, self.holder.stderr):
                    if f is not None:
                        f.close()
        for proc in self.procs:
            try:
                proc.kill()
            except ProcessLookupError:
                pass
        self.pid1 = None
        if self.runtime_dir is not None:
            shutil.rmtree(self.runtime_dir, ignore_errors=True)


class Network:
    """``hosts`` (names) on one private bridge; a context manager whose
    exit removes everything, test failure or not.  ``subnet``: the /24 the
    addresses come from (``'10.0.0'``: a is 10.0.0.1, ...); any works, the
    bridge being private."""

    def __init__(self, names: Sequence[str] = ('a', 'b'), subnet: str = SUBNET):
        tag = f'{NS_PREFIX}{os.getpid()}n{next(_counter)}'
        self.bridge_ns = f'{tag}br'
        self.hosts = {
            name: Host(name=name, addr=f'{subnet}.{i}', ns=f'{tag}{name}')
            for i, name in enumerate(names, start=1)
        }

    def __getitem__(self, name: str) -> Host:
        return self.hosts[name]

    def __enter__(self) -> Network:
        try:
            self._up()
        except BaseException:
            self._down()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self._down()

    def _up(self) -> None:
        br = self.bridge_ns
        _ip('netns', 'add', br)
        _ip('-n', br, 'link', 'add', 'br0', 'type', 'bridge')
        _ip('-n', br, 'link', 'set', 'br0', 'up')
        for host in self.hosts.values():
            _ip('netns', 'add', host.ns)
            veth = f'v{host.name}'
            _ip(
                '-n',
                br,
                'link',
                'add',
                veth,
                'type',
                'veth',
                'peer',
                'name',
                'eth0',
                'netns',
                host.ns,
            )
            _ip('-n', br, 'link', 'set', veth, 'master', 'br0', 'up')
            _ip('-n', host.ns, 'addr', 'add', f'{host.addr}/24', 'dev', 'eth0')
            _ip('-n', host.ns, 'link', 'set', 'eth0', 'up')
            _ip('-n', host.ns, 'link', 'set', 'lo', 'up')
            host._up()

    def _down(self) -> None:
        for host in self.hosts.values():
            try:
                host._down()
            finally:
                _ip_quiet('netns', 'del', host.ns)
        _ip_quiet('netns', 'del', self.bridge_ns)

    def cut(self, name: str) -> None:
        """Cut ``name`` off the bridge (its link goes down)."""
        _ip('-n', self.bridge_ns, 'link', 'set', f'v{name}', 'down')

    def heal(self, name: str) -> None:
        _ip('-n', self.bridge_ns, 'link', 'set', f'v{name}', 'up')


async def read_line(proc: trio.Process, timeout: float = 120) -> str:
    """The next line ``proc`` prints (its stdout must be a pipe)."""
    buf = getattr(proc, '_mh_buf', b'')
    with trio.fail_after(timeout):
        while b'\n' not in buf:
            chunk = await proc.stdout.receive_some()
            if not chunk:
                raise RuntimeError(
                    f'the process ended before printing a line (so far {buf!r})'
                )
            buf += chunk
    line, _, rest = buf.partition(b'\n')
    proc._mh_buf = rest  # type: ignore[attr-defined]
    return line.decode()


def inner_pid(proc: trio.Process) -> int | None:
    """The pid (as this machine sees it) of the command ``proc`` runs in a
    host: nsenter forks it into the host's pid namespace."""
    try:
        kids = psutil.Process(proc.pid).children()
    except psutil.NoSuchProcess:
        return None
    return kids[0].pid if kids else None


async def stop(proc: trio.Process, timeout: float = 30) -> int:
    """SIGTERM the command ``proc`` runs in a host (nsenter does not pass
    signals on) and wait for it; SIGKILL after ``timeout`` s."""
    pid = inner_pid(proc)
    if pid is not None:
        try:
            os.kill(pid, 15)
        except ProcessLookupError:
            pass
    with trio.move_on_after(timeout):
        return await proc.wait()
    if (pid := inner_pid(proc)) is not None:
        os.kill(pid, 9)
    return await proc.wait()
