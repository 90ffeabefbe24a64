"""
The feed daemon's buffers, in groups: one :class:`~tractor_sampler.shm.ShmGroup`
per buffer spec (period, rows, origin, stamp) holds the buffers of every
topic with that spec, one member slot per topic.

Why: a buffer of its own per topic and period costs two segments, so 2-3
file descriptors per segment in every process that maps it (the daemon,
samplerd, each client) and a registration each with samplerd.  In groups a
process holds O(specs) descriptors whatever the number of topics, samplerd
attaches each group once and steps its members in one vectorised step.

A group is created with a large capacity (:data:`DEFAULT_GROUP_MEMBERS`
slots, the ``group_members`` setting of the feed daemon): its data segment
is sparse, tmpfs allocates only the pages a member's rows touch, so an
unused slot costs nothing but address space.  A further group of the spec
is made only when every slot of the others is taken.  A topic takes a free
slot when it starts and gives it back when it ends: the window is reset to
empty and the pages its rows touched are released
(:meth:`~tractor_sampler.shm.ShmGroup.reset_member`).

Sparse segments do not reserve their memory: a page touched when
``/dev/shm`` is full kills the process with SIGBUS.  So before a topic
takes its slots the pool checks the free space (``os.statvfs``) against
the bytes its buffers can touch (history plus every live row) and refuses
with :class:`NoShmSpace` (a ``ValueError``, one line) instead.  The check
is made at start, not a reservation: many topics filling up for days can
still outgrow a small ``/dev/shm``; ``samplerd ls`` shows each buffer.

"""

from __future__ import annotations

import heapq
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from tractor_services import compat

from .shm import DEFAULT_DTYPE, ShmArray, ShmGroup, open_shm_group

log = compat.get_logger('pool', 'tractor_sampler')

#: member slots per group: sparse, so a large default costs address space
#: only (4096 slots of the default 1 s buffer, 86,400 rows of 56 bytes,
#: are a 19.8 GB segment of which a topic touches the pages of its rows)
DEFAULT_GROUP_MEMBERS: int = 4096

#: where POSIX shared memory lives (what the free-space check asks about)
SHM_DIR: str = '/dev/shm'


class NoShmSpace(ValueError):
    """``/dev/shm`` has less free space than a topic's buffers can touch."""


def check_group_members(n: Any) -> int:
    if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= 1 << 20:
        raise ValueError(f'group_members={n!r} must be an int in [1, 1048576]')
    return n


@dataclass(frozen=True)
class GroupKey:
    """What the buffers of one group share."""

    period: float
    rows: int
    origin: float = 0.0
    stamp: str = 'open'


@dataclass(eq=False)
class _Group:
    key: GroupKey
    group: ShmGroup
    #: free member slots, lowest first (members stay packed at the front)
    free: list[int] = field(default_factory=list)
    #: the same, to look up
    free_set: set[int] = field(default_factory=set)

    @property
    def used(self) -> int:
        return len(self.group) - len(self.free)


def free_bytes(path: str = SHM_DIR) -> int:
    """Bytes an unprivileged process may still allocate under ``path``."""
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


class BufferPool:
    """The groups of one feed daemon, by :class:`GroupKey`; see the module
    docstring.  ``free_space`` (for tests) replaces the ``statvfs`` call."""

    def __init__(
        self,
        members: int = DEFAULT_GROUP_MEMBERS,
        *,
        shm_dir: str = SHM_DIR,
        dtype: Any = None,
        free_space: Callable[[], int] | None = None,
    ) -> None:
        self.members = check_group_members(members)
        self.shm_dir = shm_dir
        self.dtype = np.dtype(DEFAULT_DTYPE if dtype is None else dtype)
        self._free_space = free_space or (lambda: free_bytes(self.shm_dir))
        self._groups: dict[GroupKey, list[_Group]] = {}
        self._by_name: dict[str, _Group] = {}
        #: topics refused for want of /dev/shm space
        self.refused = 0

    # --- space ----------------------------------------------------------------

    def touch_bytes(self, rows: int, history: int) -> int:
        """The most a buffer of ``rows`` rows with ``history`` history bars
        can touch: the history and every live row after the window start."""
        return (history + rows - rows // 2) * self.dtype.itemsize

    def check_space(self, need: int, what: str) -> None:
        """Refuse (:class:`NoShmSpace`) when ``need`` bytes do not fit in
        the free space of the shared-memory filesystem."""
        free = self._free_space()
        if free < need:
            self.refused += 1
            raise NoShmSpace(
                f'{what}: {self.shm_dir} has {free / 1e6:.1f} MB free, its buffers '
                f'can touch {need / 1e6:.1f} MB: refused (free space in '
                f'{self.shm_dir}, or give the topic fewer rows)'
            )

    # --- slots ------------------------------------------------------------------

    def take(self, key: GroupKey) -> ShmArray:
        """A free member of ``key``'s groups (a new group when all are
        full), its window empty at the middle."""
        groups = self._groups.setdefault(key, [])
        g = next((g for g in groups if g.free), None)
        if g is None:
            group = open_shm_group(
                self.members,
                key.rows,
                dtype=self.dtype,
                origin=key.origin,
                stamp=key.stamp,
            )
            g = _Group(key, group, list(range(self.members)), set(range(self.members)))
            groups.append(g)
            self._by_name[group.name] = g
            log.info(
                f'new buffer group {group.name} for {key.period:g} s bars: '
                f'{self.members} slots of {key.rows} rows'
            )
        member = heapq.heappop(g.free)
        g.free_set.discard(member)
        return g.group.member(member)

    def give_back(self, shm: ShmArray) -> None:
        """``shm``'s slot is free again: its window emptied, its pages
        released (nobody may step or write it any more: unregister it from
        samplerd first)."""
        g = self._by_name.get(shm.token.shm_name)
        if g is None or g.group.closed:
            return
        m = shm.token.member
        if m in g.free_set:
            return
        g.group.reset_member(m)
        heapq.heappush(g.free, m)
        g.free_set.add(m)

    # --- introspection and teardown ------------------------------------------------

    @property
    def groups(self) -> list[ShmGroup]:
        return [g.group for gs in self._groups.values() for g in gs]

    def stats(self) -> dict[str, Any]:
        return {
            'groups': len(self._by_name),
            'slots': sum(len(g.group) for g in self._by_name.values()),
            'used': sum(g.used for g in self._by_name.values()),
            'refused': self.refused,
        }

    def close(self) -> None:
        """Unlink every group (the daemon is done with them)."""
        for g in self._by_name.values():
            try:
                g.group.destroy()
            except (FileNotFoundError, ValueError):
                pass
        self._groups.clear()
        self._by_name.clear()
