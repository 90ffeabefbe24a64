"""Every command of every docs page runs, in a clean environment, and prints
what the page shows (the conventions: docs/index.md, "Commands on these
pages are tested"; the parser: ``_doccmd.py``).

Each page runs in its own temporary directory: a copy of the repository's
files as git sees them (``git ls-files --cached --others --exclude-standard``:
tracked and new files, never the ignored .venv, .nox or caches),
a fresh venv with nothing installed (activated: ``VIRTUAL_ENV`` and first on
``PATH``), a private ``HOME``, XDG directories and
``TRACTOR_SAMPLER_DATA_DIR``, and a ``PATH`` holding only that venv, the
interpreter running this test (as ``python``/``python3``), ``uv`` and the
system's ``/usr/bin:/bin``.  Only the uv and pip caches are shared (they
make the installs quick).  The page's commands run in order in one shell
state (``cd``, ``export`` and ``source`` carry over), starting in the copy's
root.  Pages whose commands name no fixed port run at the same time
(``TRACTOR_DOCS_JOBS`` at most, default 3), the others one at a time beside
them; the fixed ports a page names must be free.

A multi-host page's commands on hosts (``a$ cmd``, ``b$``, ``a# cmd``) run
each in its host: a network, pid and mount namespace with its own
``/dev/shm`` (``tests/multihost/_hosts.py``), the hosts on one private
bridge with the page's addresses (``10.0.0.1`` is host a, ``10.0.0.2`` b,
...: :data:`HOST_SUBNET`), made at the page's first such command and
removed at its end.  Each host has a shell of its own (see
:meth:`Shell.on_host`); the hosts share the page's files.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
import pytest
from _doccmd import (
    SKIPPED,
    Block,
    Command,
    DocSyntaxError,
    fixed_ports,
    line_matches,
    match_output,
    parse_page,
)

ROOT = Path(__file__).resolve().parents[2]
#: the root of `git ls-files`-relative names, for page ids
PAGES = sorted(
    [ROOT / 'README.md', *ROOT.glob('packages/*/README.md'), *ROOT.glob('docs/*.md')]
)
#: a command with no timeout directive that runs longer than this fails
COMMAND_TIMEOUT = 900
#: a background command must print its ready line within this
READY_TIMEOUT = 300
#: a background command must exit this soon after SIGTERM (or Ctrl-C)
STOP_TIMEOUT = 60
#: packages the local index (the `local-index` directive) serves, as wheels
PACKAGES = ['packages/tractor-services', 'packages/feedbus', 'packages/sampler']
#: the /24 of a multi-host page's hosts: docs/multihost.md writes 10.0.0.1 for
#: host a, 10.0.0.2 for b, 10.0.0.3 for c (the bridge is private: these
#: collide with nothing on the machine)
HOST_SUBNET = '10.0.0'


def _rel(page: Path) -> str:
    return str(page.relative_to(ROOT))


def _pages_with_commands() -> list[Path]:
    # parsed in the test: a page the parser refuses fails there, alone
    return [
        p
        for p in PAGES
        if '```console' in p.read_text() or 'docs-test:' in p.read_text()
    ]


# --- the tools every page shares --------------------------------------------------


def _find_uv() -> str:
    uv = shutil.which('uv')
    if uv is None:
        try:
            from uv import find_uv_bin

            uv = find_uv_bin()
        except (ImportError, FileNotFoundError):
            pytest.fail('needs uv (on PATH, or the `uv` package) to run the docs')
    # a pyenv shim is a script that needs pyenv's own environment: resolve it
    if '.pyenv' in Path(uv).parts and 'shims' in Path(uv).parts:
        real = subprocess.run(
            ['pyenv', 'which', 'uv'], capture_output=True, text=True
        ).stdout.strip()
        if real:
            uv = real
    return uv


def _cache_dirs(uv: str) -> dict[str, str]:
    """The uv and pip caches of the environment running this test (shared)."""
    uv_cache = subprocess.run(
        [uv, 'cache', 'dir'], capture_output=True, text=True, check=True
    ).stdout.strip()
    pip_cache = os.environ.get('PIP_CACHE_DIR') or str(
        Path(os.environ.get('XDG_CACHE_HOME', Path.home() / '.cache')) / 'pip'
    )
    return {'UV_CACHE_DIR': uv_cache, 'PIP_CACHE_DIR': pip_cache}


def _base_python() -> str:
    """The interpreter running this test, outside any venv."""
    base = getattr(sys, '_base_executable', sys.executable)
    return os.path.realpath(base)


@dataclass
class Tools:
    bin: Path  # python, python3, uv
    caches: dict[str, str]
    wheels: Path  # the repository's packages as wheels (the local index)


@pytest.fixture(scope='module')
def tools(tmp_path_factory) -> Tools:
    top = tmp_path_factory.mktemp('docs-tools')
    uv = _find_uv()
    bindir = top / 'bin'
    bindir.mkdir()
    python = _base_python()
    version = '{}.{}'.format(*sys.version_info[:2])
    for name in ('python', 'python3', f'python{version}'):
        (bindir / name).symlink_to(python)
    (bindir / 'uv').symlink_to(os.path.realpath(uv))
    caches = _cache_dirs(uv)
    wheels = top / 'wheels'
    for package in PACKAGES:
        proc = subprocess.run(
            [uv, 'build', '--wheel', '--out-dir', str(wheels), package],
            cwd=ROOT,
            capture_output=True,
            text=True,
            env={**os.environ, **caches},
        )
        assert proc.returncode == 0, proc.stderr[-3000:]
    return Tools(bin=bindir, caches=caches, wheels=wheels)


# --- one page ------------------------------------------------------------------------


def _copy_repo(dest: Path) -> None:
    # the tracked files, and new files not yet committed (not the ignored:
    # .venv, .nox, caches, builds), as they are in the work tree
    files = subprocess.run(
        ['git', 'ls-files', '-z', '--cached', '--others', '--exclude-standard'],
        cwd=ROOT,
        capture_output=True,
        check=True,
    ).stdout.split(b'\0')
    for name in filter(None, files):
        src = ROOT / os.fsdecode(name)
        if not src.exists() and not src.is_symlink():
            continue  # deleted in the work tree
        target = dest / os.fsdecode(name)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, target, follow_symlinks=False)


def _busy_ports(page: Path) -> list[int]:
    """The fixed ports the page's commands name that something listens on
    (the commands only: an output shown in a ``text`` block may name a port
    a past run happened to get)."""
    busy = []
    for port in sorted(fixed_ports(page)):
        with socket.socket() as s:
            try:
                s.bind(('127.0.0.1', port))
            except OSError:
                busy.append(port)
    return busy


def _read_into(proc: subprocess.Popen, lines: list[str]) -> None:
    assert proc.stdout is not None
    for line in proc.stdout:
        lines.append(line.rstrip('\n'))


@dataclass
class Background:
    cmd: Command
    where: str
    proc: subprocess.Popen
    #: the command's process group (and its pid: ``exec``), the one signals go to
    pgid: int
    lines: list[str] = field(default_factory=list)
    reader: threading.Thread | None = None

    def read(self) -> None:
        _read_into(self.proc, self.lines)


class Shell:
    """The page's shell: each command is a ``bash -c`` that loads the saved
    state (directory, exported variables, functions such as a venv's
    ``deactivate``), runs the command and saves the state again.

    A shell on a host (:meth:`on_host`) runs each ``bash`` inside the host
    (``nsenter``), as the leader of a session of its own there (``setsid``):
    nsenter stays outside and passes no signal on, so Ctrl-C and SIGTERM go
    to that session's process group (:meth:`_group`)."""

    def __init__(
        self,
        tmp: Path,
        env: dict[str, str],
        cwd: Path,
        *,
        host: Any = None,
        backgrounds: list[Background] | None = None,
    ):
        self.tmp = tmp
        self.host = host  # a tests/multihost/_hosts.py Host, or None: this machine
        self.state = tmp / '.state.sh'
        self.cwdfile = tmp / '.cwd'
        self.state.write_text(
            ''.join(f'export {k}={shlex.quote(v)}\n' for k, v in env.items())
        )
        self.cwdfile.write_text(str(cwd))
        #: every background command of the page (the hosts' shells share it)
        self.backgrounds: list[Background] = [] if backgrounds is None else backgrounds

    def on_host(self, host: Any, tmp: Path, env: dict[str, str]) -> Shell:
        """A shell on *host*: this shell's state as it is now (its
        directory, exports such as the activated venv, functions), with
        *env* exported on top (the host's own ``HOME``, runtime and data
        folders).  Exports and ``cd`` on either shell do not reach the
        other from then on, as in two terminals on two machines."""
        tmp.mkdir(parents=True, exist_ok=True)
        shell = Shell(tmp, env, self.cwd, host=host, backgrounds=self.backgrounds)
        shell.state.write_text(self.state.read_text() + shell.state.read_text())
        return shell

    @property
    def cwd(self) -> Path:
        return Path(self.cwdfile.read_text().strip())

    def set_cwd(self, cwd: Path) -> None:
        cwd.mkdir(parents=True, exist_ok=True)
        self.cwdfile.write_text(str(cwd))

    def export(self, assignments: dict[str, str]) -> None:
        with self.state.open('a') as f:
            for k, v in assignments.items():
                f.write(f'export {k}={shlex.quote(v)}\n')

    def _script(self, cmd: str, *, exec_: bool) -> str:
        load = f'cd {shlex.quote(str(self.cwd))} && . {shlex.quote(str(self.state))}'
        if exec_:
            return f'{load} || exit 97\nexec {cmd}\n'
        save = (
            f'{{ export -p; declare -f; }} > {shlex.quote(str(self.state))}.new'
            f' && mv {shlex.quote(str(self.state))}.new {shlex.quote(str(self.state))}'
            f'\npwd > {shlex.quote(str(self.cwdfile))}'
        )
        return f'{load} || exit 97\n{cmd}\n__rc=$?\n{save}\nexit $__rc\n'

    def _popen(self, script: str) -> subprocess.Popen:
        argv = ['/bin/bash', '-c', script]
        if self.host is not None:
            argv = self.host.argv('setsid', *argv)
        return subprocess.Popen(
            argv,
            env={'PATH': '/usr/bin:/bin', 'HOME': str(self.tmp)},
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            errors='replace',
            start_new_session=True,
        )

    def _group(self, proc: subprocess.Popen) -> int | None:
        """The process group of *proc*'s command: *proc*'s own here
        (``start_new_session``); on a host, the session ``setsid`` made
        there for nsenter's child (``None`` once it is gone)."""
        if self.host is None:
            return proc.pid
        deadline = time.monotonic() + READY_TIMEOUT
        while time.monotonic() < deadline:
            try:
                kids = psutil.Process(proc.pid).children()
                if kids and os.getpgid(kids[0].pid) == kids[0].pid:
                    return kids[0].pid
            except (psutil.NoSuchProcess, ProcessLookupError):
                return None
            if proc.poll() is not None:
                return None
            time.sleep(0.01)  # nsenter forking, setsid starting: bounded
        return None

    def killpg(self, proc: subprocess.Popen, sig: int) -> None:
        """*sig* to the process group of *proc*'s command, if any is left."""
        group = self._group(proc)
        if group is None:
            return
        try:
            os.killpg(group, sig)
        except ProcessLookupError:
            pass

    def run(
        self, cmd: str, *, timeout: float | None, ready: str | None = None
    ) -> tuple[int, list[str], str]:
        """Run *cmd* in the foreground.  With *timeout*, press Ctrl-C (SIGINT
        to its process group, as a terminal does) that many seconds after
        its output shows the line *ready* (after it starts, without one).
        Returns (exit status, output lines, a note on how it ended)."""
        proc = self._popen(self._script(cmd, exec_=False))
        out: list[str] = []
        reader = threading.Thread(target=_read_into, args=(proc, out), daemon=True)
        reader.start()
        note = ''
        if timeout is not None:
            deadline = time.monotonic() + COMMAND_TIMEOUT
            if ready is not None:
                while proc.poll() is None and time.monotonic() < deadline:
                    if any(line_matches(ready, ln) for ln in list(out)):
                        break
                    time.sleep(0.2)  # polling the reader's lines, bounded
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.killpg(proc, signal.SIGINT)
                note = f'Ctrl-C {timeout} s after ' + (
                    'its ready line' if ready else 'its start'
                )
        try:
            rc = proc.wait(timeout=COMMAND_TIMEOUT if timeout is None else STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.killpg(proc, signal.SIGKILL)
            proc.kill()  # nsenter, for a host's shell
            rc = proc.wait()
            note = f'{note + ", " if note else ""}killed: still running'
        reader.join(timeout=10)
        return rc, out, note

    def start(self, cmd: Command, where: str) -> Background:
        """Start *cmd* in the background (``exec``: the process that gets
        the SIGTERM is the command itself) and wait for its ready line: its
        first expected line, or its first line of output."""
        proc = self._popen(self._script(cmd.cmd, exec_=True))
        group = self._group(proc)
        bg = Background(cmd, where, proc, proc.pid if group is None else group)
        bg.reader = threading.Thread(target=bg.read, daemon=True)
        bg.reader.start()
        self.backgrounds.append(bg)
        deadline = time.monotonic() + READY_TIMEOUT
        first = _first_line(cmd)
        while time.monotonic() < deadline:
            if first is None and bg.lines:
                return bg
            if first is not None and any(line_matches(first, ln) for ln in bg.lines):
                return bg
            if bg.proc.poll() is not None:
                bg.reader.join(timeout=5)
                pytest.fail(
                    f'{where}: background command `{cmd.cmd}` exited'
                    f' ({bg.proc.returncode}) before it was ready:\n'
                    + '\n'.join(bg.lines[-60:])
                )
            time.sleep(0.2)  # polling a pipe reader thread; bounded by deadline
        pytest.fail(
            f'{where}: background command `{cmd.cmd}` printed no ready line'
            f' ({first or "any line"!r}) within {READY_TIMEOUT} s:\n'
            + '\n'.join(bg.lines[-60:])
        )

    def stop_all(self) -> list[str]:
        """SIGTERM each background command (the last started first); each
        must exit 0.  Returns the problems."""
        problems = []
        for bg in reversed(self.backgrounds):
            if bg.proc.poll() is None:
                try:
                    os.kill(bg.pgid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
            try:
                rc = bg.proc.wait(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(bg.pgid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                bg.proc.kill()  # nsenter, for a command on a host
                bg.proc.wait()
                problems.append(
                    f'{bg.where}: `{bg.cmd.cmd}` still running {STOP_TIMEOUT} s after SIGTERM'
                )
                continue
            finally:
                try:
                    os.killpg(bg.pgid, signal.SIGKILL)  # anything it left
                except ProcessLookupError:
                    pass
            if bg.reader is not None:
                bg.reader.join(timeout=10)
            if rc != 0:
                problems.append(
                    f'{bg.where}: `{bg.cmd.cmd}` exited {rc} after SIGTERM (expected 0):\n'
                    + '\n'.join(bg.lines[-40:])
                )
        self.backgrounds.clear()
        return problems


# --- hosts (multi-host pages) ----------------------------------------------------


def _hosts_module() -> Any:
    """tests/multihost/_hosts.py (the same module when tests/multihost runs
    in this session too)."""
    if '_hosts' not in sys.modules:
        path = ROOT / 'tests' / 'multihost' / '_hosts.py'
        spec = importlib.util.spec_from_file_location('_hosts', path)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules['_hosts'] = module
        spec.loader.exec_module(module)
    return sys.modules['_hosts']


#: why hosts cannot be made here (None: they can), asked once per session
_HOSTS_UNAVAILABLE: list[str | None] = []
_HOSTS_LOCK = threading.Lock()


def hosts_unavailable() -> str | None:
    with _HOSTS_LOCK:
        if not _HOSTS_UNAVAILABLE:
            _HOSTS_UNAVAILABLE.append(_hosts_module().unavailable())
        return _HOSTS_UNAVAILABLE[0]


class PageHosts:
    """A page's hosts: one private network holding every host its commands
    name (host ``a`` is ``HOST_SUBNET.1``, ``b`` ``.2``, ...: all from a to
    the last letter named, so each letter keeps its address), made at the
    first command on a host, and one shell per host."""

    def __init__(self, blocks: list[Block], main: Shell, tmp: Path):
        named = sorted({c.host for b in blocks for c in b.commands if c.host})
        for name in named:
            if not re.fullmatch('[a-z]', name):
                raise DocSyntaxError(
                    f'{_rel(blocks[0].page)}: host {name!r}: hosts are single letters'
                    f' (a is {HOST_SUBNET}.1, b {HOST_SUBNET}.2, ...)'
                )
        last = ord(named[-1]) if named else ord('a') - 1
        self.names = [chr(c) for c in range(ord('a'), last + 1)]
        self.main = main
        self.tmp = tmp
        self.network: Any = None
        self.shells: dict[str, Shell] = {}

    def shell(self, name: str) -> Shell:
        if self.network is None:
            network = _hosts_module().Network(self.names, subnet=HOST_SUBNET)
            self.network = network.__enter__()  # it removes what it made on failure
        if name not in self.shells:
            host = self.network[name]
            top = self.tmp / 'hosts' / name
            env = {k: str(v) for k, v in _user_dirs(top).items()}
            # its own runtime folder (a root's token file is the host's
            # alone), and root's PATH (the sbin folders: `a# nft ...`)
            env['XDG_RUNTIME_DIR'] = str(host.runtime_dir)
            env['PATH'] = self._path() + ':/usr/sbin:/sbin'
            self.shells[name] = self.main.on_host(host, top, env)
        return self.shells[name]

    def _path(self) -> str:
        proc = self.main._popen(self.main._script('echo "$PATH"', exec_=False))
        out, _ = proc.communicate(timeout=60)
        return out.strip()

    def close(self) -> list[str]:
        """Remove the network (every process in the hosts dies with them);
        the problems: namespaces left behind."""
        if self.network is None:
            return []
        tags = {self.network.bridge_ns, *(h.ns for h in self.network.hosts.values())}
        self.network.__exit__(None, None, None)
        self.network = None
        listed = subprocess.run(
            ['ip', 'netns', 'list'], capture_output=True, text=True, timeout=30
        ).stdout.split()
        left = sorted(tags & set(listed))
        return [f'network namespaces left behind: {left}'] if left else []


def _first_line(cmd: Command) -> str | None:
    """The command's first expected line that is not ``...`` (its ready line)."""
    return next((e for e in cmd.expected if e.strip() and e.strip() != '...'), None)


def _expand(value: str, names: dict[str, str]) -> str:
    for k, v in names.items():
        value = value.replace('{' + k + '}', v)
    return value


@pytest.fixture
def page_dir(tmp_path) -> Iterator[Path]:
    yield tmp_path
    # a page's venvs and clone are ~0.5 GB: do not keep them
    shutil.rmtree(tmp_path, ignore_errors=True)


#: the machine's network settings (certificates, proxies) pass through: they
#: are how this host reaches the package index, not something installed
NETWORK_ENV = {
    'SSL_CERT_FILE',
    'SSL_CERT_DIR',
    'PIP_CERT',
    'REQUESTS_CA_BUNDLE',
    'CURL_CA_BUNDLE',
    'PIP_DEFAULT_TIMEOUT',
    'HTTP_PROXY',
    'HTTPS_PROXY',
    'NO_PROXY',
    'http_proxy',
    'https_proxy',
    'no_proxy',
    'UV_NATIVE_TLS',
    'UV_HTTP_TIMEOUT',
}


def _user_dirs(top: Path) -> dict[str, Path]:
    """A user's own folders under ``top`` (made): home, the XDG ones, the
    sampler's data directory, a temporary folder."""
    home = top / 'home'
    dirs = {
        'HOME': home,
        'XDG_CONFIG_HOME': home / '.config',
        'XDG_CACHE_HOME': home / '.cache',
        'XDG_DATA_HOME': home / '.local' / 'share',
        'XDG_STATE_HOME': home / '.local' / 'state',
        'TRACTOR_SAMPLER_DATA_DIR': top / 'sampler-data',
        'TMPDIR': top / 'tmp',
    }
    for d in dirs.values():
        d.mkdir(parents=True, exist_ok=True)
    return dirs


def _fresh_env(tmp: Path, tools: Tools) -> dict[str, str]:
    venv = tmp / 'env'
    subprocess.run(
        [str(tools.bin / 'python'), '-m', 'venv', str(venv)],
        check=True,
        capture_output=True,
        env={'PATH': '/usr/bin:/bin'},
    )
    dirs = _user_dirs(tmp)
    return {
        **{k: v for k, v in os.environ.items() if k in NETWORK_ENV},
        **{k: str(v) for k, v in dirs.items()},
        **tools.caches,
        'PATH': os.pathsep.join(
            [str(venv / 'bin'), str(tools.bin), '/usr/bin', '/bin']
        ),
        'VIRTUAL_ENV': str(venv),
        'LANG': 'C.UTF-8',
        'TERM': 'dumb',
        # compiled bytecode: a subactor spawns in ~300 ms instead of ~700
        'UV_COMPILE_BYTECODE': '1',
        'UV_PYTHON_DOWNLOADS': 'never',
        'PIP_DISABLE_PIP_VERSION_CHECK': '1',
    }


def _check(
    cmd: Command,
    directives: dict[str, str],
    where: str,
    rc: int,
    out: list[str],
    note: str,
) -> None:
    want = int(directives.get('exit', '0'))
    shown = '\n'.join(out[-80:])
    if rc != want:
        pytest.fail(
            f'{where}: `{cmd.cmd}` exited {rc} (expected {want}){" (" + note + ")" if note else ""}; its output:\n{shown}'
        )
    if cmd.expected and not match_output(cmd.expected, out):
        pytest.fail(
            f'{where}: `{cmd.cmd}` printed what the page does not show.\n'
            f'--- the page:\n' + '\n'.join(cmd.expected) + f'\n--- the output:\n{shown}'
        )


def _run_page(page: Path, tools: Tools, page_dir: Path) -> None:
    """Run every block of *page* in a fresh environment under *page_dir*;
    fails (``pytest.fail``) with what went wrong."""
    busy = _busy_ports(page)
    if busy:
        pytest.fail(
            f'{_rel(page)} uses port(s) {", ".join(map(str, busy))}, which something'
            ' on this machine already listens on: stop it and run again'
        )
    repo = page_dir / 'repo'
    _copy_repo(repo)
    names = {'repo': str(repo), 'tmp': str(page_dir)}
    shell = Shell(page_dir, _fresh_env(page_dir, tools), repo)
    blocks = parse_page(page)
    hosts = PageHosts(blocks, shell, page_dir)
    problems: list[str] = []
    try:
        for block in blocks:
            _run_block(block, shell, names, tools, hosts)
    finally:
        try:
            problems = shell.stop_all()
        finally:
            problems += hosts.close()
    if problems:
        pytest.fail('\n'.join(problems))


#: pages run at the same time, at most (``TRACTOR_DOCS_JOBS``; 1: one at a time)
JOBS = int(os.environ.get('TRACTOR_DOCS_JOBS', '3'))


@pytest.fixture(scope='module')
def started_pages(
    request, tools: Tools, tmp_path_factory
) -> Iterator[dict[Path, Future[None]]]:
    """The selected pages that name no fixed port, started at once in a
    small pool of threads (each runs its commands in processes of its own,
    so they overlap: most of a page's time is installs and waits); each
    page's test waits for its own result.  Pages with fixed ports run one
    at a time in their tests (beside the pool: their ports are theirs)."""
    pages = [
        item.callspec.params['page']
        for item in request.session.items
        if getattr(item, 'originalname', '') == 'test_page'
    ]
    concurrent = [p for p in pages if not fixed_ports(p)] if JOBS > 1 else []

    def run(page: Path) -> None:
        page_dir = tmp_path_factory.mktemp('page-' + re.sub(r'\W', '_', _rel(page)))
        try:
            _run_page(page, tools, page_dir)
        finally:
            shutil.rmtree(page_dir, ignore_errors=True)

    pool = ThreadPoolExecutor(max_workers=max(JOBS, 1), thread_name_prefix='docs')
    try:
        yield {page: pool.submit(run, page) for page in concurrent}
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


@pytest.mark.parametrize('page', _pages_with_commands(), ids=_rel)
def test_page(
    page: Path,
    tools: Tools,
    started_pages: dict[Path, Future[None]],
    request,
) -> None:
    if page in started_pages:
        started_pages[page].result()  # its failure, raised here
        return
    _run_page(page, tools, request.getfixturevalue('page_dir'))


def _missing(shell: Shell, tools: str) -> list[str]:
    """The *tools* (comma-separated) the shell does not find."""
    missing = []
    for tool in filter(None, (t.strip() for t in tools.split(','))):
        proc = shell._popen(
            shell._script(f'command -v {shlex.quote(tool)}', exec_=False)
        )
        proc.communicate(timeout=60)
        if proc.returncode != 0:
            missing.append(tool)
    return missing


def _run_block(
    block: Block,
    main: Shell,
    names: dict[str, str],
    tools: Tools,
    hosts: PageHosts,
) -> None:
    where = f'{_rel(block.page)}:{block.line}'
    d = block.directives
    if 'skip' in d:
        SKIPPED.append((where, d['skip']))
        return
    on = sorted({c.host for c in block.commands if c.host})
    if on:
        reason = hosts_unavailable()
        if reason:
            hosts_named = f'host{"s" if len(on) > 1 else ""} {", ".join(on)}'
            SKIPPED.append((where, f'commands on {hosts_named}: {reason}'))
            return
    # the shells the block's commands run in (its directives apply to each)
    shells = [hosts.shell(h) for h in on]
    if not on or any(not c.host for c in block.commands):
        shells.append(main)
    if 'needs' in d:
        missing = sorted({t for sh in shells for t in _missing(sh, d['needs'])})
        if missing:
            SKIPPED.append((where, f'needs {", ".join(missing)}: not found here'))
            return
    for shell in shells:
        if 'cwd' in d:
            shell.set_cwd(Path(shell.cwd, _expand(d['cwd'], names)))
        if 'env' in d:
            pairs = dict(
                kv.split('=', 1) for kv in shlex.split(_expand(d['env'], names))
            )
            shell.export(pairs)
        if 'local-index' in d:
            # the packages are not on the package index yet: the repository's
            # wheels stand in for it (pip and uv look there first)
            shell.export(
                {
                    'PIP_FIND_LINKS': str(tools.wheels),
                    'UV_FIND_LINKS': str(tools.wheels),
                }
            )
    if 'file' in d:
        target = Path(main.cwd, _expand(d['file'], names))
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(block.text)
        return
    block_wide = {
        k: v
        for k, v in d.items()
        if k not in ('background', 'cwd', 'env', 'local-index', 'needs')
    }
    for cmd in block.commands:
        cd = {**block_wide, **cmd.directives}
        where = f'{_rel(block.page)}:{cmd.line}'
        if 'skip' in cd:
            SKIPPED.append((f'{where} `{cmd.cmd}`', cd['skip']))
            continue
        # `background` on a block: its last command; `N background`: command N
        shell = hosts.shell(cmd.host) if cmd.host else main
        if 'background' in cmd.directives or (
            'background' in d and cmd.number == len(block.commands)
        ):
            shell.start(cmd, where)
            continue
        timeout = float(cd['timeout']) if 'timeout' in cd else None
        rc, out, note = shell.run(cmd.cmd, timeout=timeout, ready=_first_line(cmd))
        _check(cmd, cd, where, rc, out, note)
