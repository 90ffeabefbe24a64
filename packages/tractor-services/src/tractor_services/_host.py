"""
This host's identity, tied to its shared memory.

:func:`host_id` names the ``/dev/shm`` this process sees: two processes
get the same id if and only if they see the same ``/dev/shm``, so the same
id means "a shared-memory segment one of them creates, the other can
attach".  That is the question a peer asks before it offers shared memory
(feedbus' quote ring), and an IP address cannot answer it: one host has
many addresses, containers and network namespaces share addresses across
different ``/dev/shm`` mounts, and loopback means nothing across hosts.

How: the first process to ask creates an id file, ``/dev/shm/`` +
:data:`HOST_ID_FILE`, holding a random 128-bit id in hex; everyone after
reads it.  Creation is atomic and race-safe: the id is written to a
temporary file of its own and ``os.link()`` ed to the final name, which
fails if another process got there first (then its id wins, and ours is
thrown away), so no reader ever sees a half-written file.  The file lives
as long as the ``/dev/shm`` mount (a reboot, or a new mount in a container
or a test "host", makes a new identity).  The id is cached per directory
for the life of the process.

"""

from __future__ import annotations

import os
import re
import secrets
from pathlib import Path

from ._shm import SHM_DIR

__all__ = ['HOST_ID_FILE', 'SHM_DIR', 'host_id']

#: the id file's name inside it
HOST_ID_FILE = 'tractor_services.host_id'

_ID = re.compile(r'^[0-9a-f]{32}$')
_cache: dict[str, str] = {}


def _read(path: Path) -> str | None:
    try:
        text = path.read_text().strip()
    except FileNotFoundError:
        return None
    if not _ID.match(text):
        raise RuntimeError(
            f'the host id file {path} holds {text[:40]!r}, not a host id '
            '(32 hex digits): remove it and every process will agree on a new one'
        )
    return text


def _create(path: Path) -> None:
    """Publish a fresh id at ``path`` unless someone already has."""
    tmp = path.with_name(f'.{path.name}.{os.getpid()}.{secrets.token_hex(4)}')
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        with os.fdopen(fd, 'w') as f:
            f.write(secrets.token_hex(16) + '\n')
        try:
            os.link(tmp, path)  # atomic; fails if another process won the race
        except FileExistsError:
            pass
    finally:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass


def host_id(shm_dir: str | os.PathLike[str] | None = None) -> str | None:
    """This host's identity: a 32-hex-digit id shared by every process that
    sees the same ``shm_dir`` (default ``/dev/shm``), different for any
    other.  ``None`` where there is no such directory (not Linux): then no
    peer can tell that it shares memory with us, and callers use their
    network path."""
    d = Path(shm_dir) if shm_dir is not None else SHM_DIR
    key = str(d)
    cached = _cache.get(key)
    if cached is not None:
        return cached
    if not d.is_dir():
        return None
    path = d / HOST_ID_FILE
    hid = _read(path)
    if hid is None:
        _create(path)
        hid = _read(path)
        if hid is None:  # pragma: no cover - removed between link and read
            raise RuntimeError(f'the host id file {path} vanished as it was made')
    _cache[key] = hid
    return hid
