"""
POSIX shared-memory segments: create, attach, unlink, close.

The one copy of the segment helpers that feedbus' quote ring
(``feedbus._ring``) and tractor-sampler's buffers
(``tractor_sampler.shm``) share: a shared internal helper, imported as
``from tractor_services._shm import ...`` by those sibling packages (it
lives here because imports flow tractor_services <- feedbus <-
tractor_sampler), not part of the public API.

Ownership rules, the same for every segment:

- the **creator** (:func:`create_segment`) stays registered with the
  stdlib resource tracker, which unlinks the segment if the process dies
  by a signal (SIGKILL included); it unlinks it itself with
  :func:`unlink_segment`, and an ``atexit`` hook unlinks whatever it
  created and did not unlink (a forked child never unlinks its parent's);
- an **attacher** (:func:`attach_segment`) is not tracked (it unregisters
  right after attaching on Python < 3.13, or the tracker would unlink the
  segment when *it* exits; the creating process itself keeps its
  registration) and never unlinks.

Closing: :func:`close_fd` closes a handle's file descriptor and keeps the
mapping (one descriptor fewer per segment); :func:`close_segment` closes
the handle: with ``unmap=True`` it unmaps at once (``BufferError`` if a
memoryview slice of it is still exported; for callers that hold none),
otherwise it drops the handle's reference to the mapping, which goes when
its last user does (numpy arrays over a segment hold a reference to its
``mmap`` but no buffer export, so an explicit unmap would leave them
pointing at nothing).
"""

from __future__ import annotations

import atexit
import os
import secrets
import sys
import threading
from multiprocessing import resource_tracker
from multiprocessing.shared_memory import SharedMemory
from pathlib import Path

__all__ = [
    'SHM_DIR',
    'attach_segment',
    'close_fd',
    'close_segment',
    'create_segment',
    'new_segment_name',
    'unlink_segment',
]

#: where POSIX shared memory lives on Linux
SHM_DIR = Path('/dev/shm')

# segments this process created and has not unlinked: unlinked at exit
_created: dict[str, SharedMemory] = {}
_created_lock = threading.Lock()
_creator_pid = os.getpid()


@atexit.register
def _unlink_created() -> None:
    if os.getpid() != _creator_pid:  # a forked child: not ours
        return
    with _created_lock:
        segs = list(_created.values())
        _created.clear()
    for seg in segs:
        try:
            seg.unlink()
        except FileNotFoundError:
            pass
        close_segment(seg)


def new_segment_name(env: str, default_prefix: str, tag: str = '') -> str:
    """A fresh segment name, ``<prefix><pid>_<tag><8 hex digits>``: the
    prefix from ``$env`` or ``default_prefix`` (a test session sets its own
    and finds exactly its segments in ``/dev/shm``)."""
    prefix = os.environ.get(env) or default_prefix
    return f'{prefix}{os.getpid()}_{tag}{secrets.token_hex(4)}'


def create_segment(name: str, nbytes: int) -> SharedMemory:
    """Create segment ``name`` of ``nbytes`` (zero-filled), owned by this
    process (see the module's ownership rules)."""
    try:
        seg = SharedMemory(name=name, create=True, size=nbytes)
    except FileExistsError as err:
        raise FileExistsError(f'shm segment {name!r} already exists') from err
    with _created_lock:
        _created[name] = seg
    return seg


def attach_segment(name: str) -> SharedMemory:
    """Attach segment ``name`` untracked; ``FileNotFoundError`` naming it
    if there is none."""
    try:
        if sys.version_info >= (3, 13):
            seg = SharedMemory(name=name, track=False)  # type: ignore[call-arg]
        else:
            seg = SharedMemory(name=name)
            # the tracker would unlink it when this process exits; if this
            # process created it, keep the creator's registration
            if name not in _created:
                resource_tracker.unregister(seg._name, 'shared_memory')  # type: ignore[attr-defined]
    except FileNotFoundError as err:
        raise FileNotFoundError(
            f'no shm segment {name!r} (its creator destroyed it or exited?)'
        ) from err
    return seg


def unlink_segment(seg: SharedMemory) -> None:
    """(creator) Remove the segment's name; mappings live on until closed."""
    with _created_lock:
        _created.pop(seg.name, None)
    try:
        seg.unlink()
    except FileNotFoundError:
        # someone else unlinked it: drop our tracker registration anyway
        if sys.version_info < (3, 13):
            resource_tracker.unregister(seg._name, 'shared_memory')  # type: ignore[attr-defined]


def close_fd(seg: SharedMemory) -> None:
    """Close the handle's file descriptor; the mapping stays."""
    fd = getattr(seg, '_fd', -1)
    if fd >= 0:
        os.close(fd)
        seg._fd = -1  # type: ignore[attr-defined]


def close_segment(seg: SharedMemory, *, unmap: bool = False) -> None:
    """Close the handle: its memoryview released, its descriptor closed.

    ``unmap=True`` unmaps now, and raises ``BufferError`` (the mapping
    kept) while a memoryview slice of the segment is still exported.
    Otherwise the handle only drops its reference to the mapping, which
    goes with its last user: never unmapped under a live numpy view."""
    buf = getattr(seg, '_buf', None)
    if buf is not None:
        try:
            buf.release()
        except BufferError:
            if unmap:
                raise
        seg._buf = None  # type: ignore[attr-defined]
    mm = getattr(seg, '_mmap', None)
    if unmap and mm is not None:
        mm.close()  # BufferError while a slice is exported
    seg._mmap = None  # type: ignore[attr-defined]
    close_fd(seg)
