"""
Shared-memory OHLCV buffers: numpy structured arrays in named POSIX
shared-memory segments, with their valid window also in shared memory so
every process that attaches sees the same rows.

Layout
------
Every buffer lives in two segments:

- the **data segment** (``ShmToken.shm_name``): a numpy structured array of
  shape ``(members, size)``.  A plain buffer made by :func:`open_shm_array`
  is a group of one (``members == 1``); a :class:`ShmGroup` packs many
  buffers of one dtype and size into one block so they can be stepped
  together (see below).
- the **control segment** (``ShmToken.shm_ctl_name``, named
  ``<shm_name>_ctl``): int64s.  ``ctl[0:8]`` is a header (magic, layout
  version, members, size, itemsize, a CRC of the dtype description, two
  reserved words) that an attacher checks its token against;
  ``ctl[8:]`` holds ``(first, last)`` for each member, so each member has its
  own window ``rows[first:last]`` (``last`` exclusive).  We chose one control
  segment over one segment per index: one file descriptor and one mapping
  per buffer, and the header makes a stale or mismatched token fail loudly.

Writers always write the rows first and move ``first``/``last`` after, so a
reader in another process never sees an index covering unwritten rows.
Aligned int64 stores are single machine stores; a reader may see a window
that is one push old, never a torn index.

Window start
------------
A new buffer's empty window starts at ``start`` (default ``size // 2``):
history is prepended before it (backfill), live bars are appended after it,
and both get half the buffer.  Pass ``start=0`` for an append-only buffer
or ``start=size`` for a history-only one.

Ownership
---------
The creator owns the segments: :meth:`ShmArray.destroy` (or leaving
``with open_shm_array(...)``) unlinks them, and an ``atexit`` hook unlinks
whatever the creating process did not destroy (a forked child never
unlinks its parent's segments).  The creator stays registered with the
stdlib resource tracker, so even a creator killed by a signal leaves
nothing in ``/dev/shm``.  Attachers (:func:`attach_shm_array`) unregister
from the resource tracker right after attaching (on Python < 3.13 the
tracker would otherwise unlink the segment when the attacher exits) and
can only ``close()``; ``destroy()`` on an attacher raises.

Read-only attachments (the default for clients) map the segments with
``PROT_READ``: every view has ``flags.writeable == False`` and cannot be
made writeable again, and :meth:`ShmArray.push` raises ``PermissionError``.

``close()`` closes the file descriptors and drops the handle's references
but never unmaps memory under a live numpy view (numpy keeps a reference to
the ``mmap``, not a buffer export, so an explicit unmap would leave views
pointing at nothing): the mapping goes when the last view does.  Using a
closed handle raises ``ValueError``.

Vectorised stepping
-------------------
The sampler appends one row per period to every buffer (time = the step's
boundary, open = high = low = close = previous close, volume 0, index + 1).
Doing that with a few numpy operations per buffer costs a Python loop of
1000 iterations for 1000 buffers.  Instead, buffers of one dtype and size
are allocated as members of one :class:`ShmGroup` (:func:`open_shm_group`):
one data segment holding a ``(members, size)`` block plus the per-member
windows in one ``(members, 2)`` int64 array.  A step is then a few numpy
operations on ``(members,)`` arrays: gather the last rows, compute the new
rows, scatter them one slot further, bump the ``last`` column.  The rows
move as bytes: the plan knows each member's flat row offset in the block,
and one ``np.take`` / ``np.put`` on the block viewed as plain ``void``
items of the row's size copies them (advanced indexing on the structured
dtype copies field by field, several times slower); a plan over a whole
group reads and writes the windows as one slice.  Members keep their own windows (backfill can prepend
different amounts per member), and each member is still an ordinary
:class:`ShmArray` with its own token that another process can attach alone.

:func:`step_many` / :class:`StepPlan` accept any mix of buffers: they group
them by data segment and do the vectorised step once per segment (so
standalone buffers still cost one step each; allocate them in a group to
get the vectorised path).  Members with an empty window have no previous
close and are skipped.  A step that would overrun any member's end raises
:class:`ShmOverrun` before anything is written.
"""

from __future__ import annotations

import mmap
import zlib
from collections.abc import Iterator, Sequence
from multiprocessing.shared_memory import SharedMemory
from typing import Any, overload

import msgspec
import numpy as np

from tractor_services._shm import attach_segment as _attach_segment
from tractor_services._shm import close_segment as _close_segment
from tractor_services._shm import create_segment as _create_segment
from tractor_services._shm import new_segment_name
from tractor_services._shm import unlink_segment as _unlink_segment

from ._schedule import check_origin, check_period, check_stamp

__all__ = [
    'DEFAULT_DTYPE',
    'KEY_PREFIX',
    'ShmArray',
    'ShmGroup',
    'ShmOverrun',
    'ShmToken',
    'StepPlan',
    'attach_shm_array',
    'attach_shm_group',
    'def_ohlcv_dtype',
    'open_shm_array',
    'open_shm_group',
    'step_many',
]

def_ohlcv_dtype = np.dtype(
    [
        ('index', 'i8'),
        ('time', 'f8'),
        ('open', 'f8'),
        ('high', 'f8'),
        ('low', 'f8'),
        ('close', 'f8'),
        ('volume', 'f8'),
    ]
)
DEFAULT_DTYPE = def_ohlcv_dtype

#: prefix of generated segment names (recognisable in ``/dev/shm``);
#: the environment variable overrides it (the tests give every session its
#: own prefix, inherited by child processes and subactors)
KEY_PREFIX = 'tsamp_'
KEY_PREFIX_ENV = 'TRACTOR_SAMPLER_SHM_PREFIX'
CTL_SUFFIX = '_ctl'

_MAGIC = 0x7473616D70_0001  # "tsamp" + 1
_VERSION = 1
_HEADER = 8  # int64 words before the (first, last) pairs
_H_MAGIC, _H_VERSION, _H_MEMBERS, _H_SIZE, _H_ITEMSIZE, _H_DTYPE_CRC = range(6)


class ShmOverrun(ValueError):
    """A push or step that does not fit in the buffer's free space."""


# -- dtype descriptions (msgpack friendly) ---------------------------------


def _canon_descr(descr: Any) -> tuple:
    """A numpy ``dtype.descr`` (or its msgpack'd form, lists for tuples) as
    a hashable tuple of ``(name, format[, shape])`` tuples."""
    if not isinstance(descr, (list, tuple)) or not descr:
        raise ValueError(f'dtype description must be a non-empty list, got {descr!r}')
    out: list[tuple] = []
    for entry in descr:
        if not isinstance(entry, (list, tuple)) or len(entry) not in (2, 3):
            raise ValueError(
                f'dtype description entries are [name, format] or '
                f'[name, format, shape], got {entry!r}'
            )
        name, fmt, *shape = entry
        if isinstance(name, (list, tuple)):  # (title, name)
            name = tuple(name)
        elif not isinstance(name, str):
            raise ValueError(f'dtype field name must be a string, got {name!r}')
        if isinstance(fmt, (list, tuple)):
            fmt = _canon_descr(fmt)
        elif not isinstance(fmt, str):
            raise ValueError(f'dtype field format must be a string, got {fmt!r}')
        if shape:
            shp = shape[0]
            shp = tuple(shp) if isinstance(shp, (list, tuple)) else (shp,)
            if not all(isinstance(n, int) for n in shp):
                raise ValueError(f'dtype field shape must be ints, got {shape[0]!r}')
            out.append((name, fmt, shp))
        else:
            out.append((name, fmt))
    return tuple(out)


def _descr_to_numpy(descr: tuple) -> list:
    out: list = []
    for entry in descr:
        name, fmt, *shape = entry
        if isinstance(fmt, tuple):
            fmt = _descr_to_numpy(fmt)
        out.append((name, fmt, *shape))
    return out


def _dtype_crc(descr: tuple) -> int:
    return zlib.crc32(repr(descr).encode())


# -- the token ---------------------------------------------------------------


#: checked dtype descriptions (canonical form) and their dtypes
_DTYPES: dict[tuple, np.dtype] = {}


class ShmToken(msgspec.Struct, frozen=True, kw_only=True):
    """Everything another process needs to attach a buffer; travels over
    IPC as a plain map (``msgspec.to_builtins`` / msgpack) and comes back
    with :meth:`from_msg` or ``msgspec.convert(msg, ShmToken)``.

    ``dtype_descr`` is normalised to a tuple of tuples, so tokens are
    hashable and compare equal after a round trip.  ``members``/``member``
    locate the buffer in its data segment (``1``/``0`` for a standalone
    buffer).

    ``origin`` and ``stamp`` say where the buffer's bars lie (every
    reader of row times honours them; see :class:`~tractor_sampler._schedule.Grid`):
    bar boundaries ``origin`` seconds past the period's multiples (a 60 s
    buffer with ``origin=30.0`` has bars from :30 to :30), and each row's
    ``time`` its bar's start (``'open'``) or end (``'close'``).  The
    defaults are the plain grid, and tokens without them decode to it.

    ``first_live`` and ``first_partial`` mark where live bars begin (the
    feed daemon sets them with :meth:`ShmArray.mark_live` before it hands
    the token out): the ``index`` of the first live bar (rows before it
    are history; ``None``: not marked), and whether that bar started
    mid-bar, so it holds only the trades since the feed started (or none,
    with the buffer option ``skip_first_partial``).  A reader that wants
    whole bars only drops the row whose ``index`` is ``first_live`` when
    ``first_partial`` is set.
    """

    shm_name: str
    shm_ctl_name: str
    dtype_descr: tuple
    size: int
    members: int = 1
    member: int = 0
    origin: float = 0.0
    stamp: str = 'open'
    first_live: int | None = None
    first_partial: bool = False

    def __post_init__(self) -> None:
        for field in ('shm_name', 'shm_ctl_name'):
            if not getattr(self, field):
                raise ValueError(f'ShmToken.{field} must be a non-empty string')
        if self.size <= 0:
            raise ValueError(f'ShmToken.size must be > 0, got {self.size}')
        if self.members <= 0:
            raise ValueError(f'ShmToken.members must be > 0, got {self.members}')
        if not 0 <= self.member < self.members:
            raise ValueError(
                f'ShmToken.member must be in [0, {self.members}), got {self.member}'
            )
        if type(self.origin) is not float or self.origin:
            msgspec.structs.force_setattr(self, 'origin', check_origin(self.origin))
        if self.stamp != 'open':
            check_stamp(self.stamp)
        descr = self.dtype_descr
        # a description seen before (every member's token, every topic's)
        # is not canonicalised and checked again: thousands of tokens a second
        try:
            known = isinstance(descr, tuple) and descr in _DTYPES
        except TypeError:  # lists inside: not canonical
            known = False
        if not known:
            descr = _canon_descr(descr)
            if descr not in _DTYPES:
                try:
                    dt = np.dtype(_descr_to_numpy(descr))
                except (TypeError, ValueError) as err:
                    raise ValueError(
                        f'invalid dtype description {self.dtype_descr!r}: {err}'
                    ) from err
                if len(_DTYPES) < 256:
                    _DTYPES[descr] = dt
            msgspec.structs.force_setattr(self, 'dtype_descr', descr)

    @property
    def dtype(self) -> np.dtype:
        dt = _DTYPES.get(self.dtype_descr)
        return dt if dt is not None else np.dtype(_descr_to_numpy(self.dtype_descr))

    @classmethod
    def from_msg(cls, msg: ShmToken | dict | Any) -> ShmToken:
        """Rebuild a token from its IPC form; ``ValueError`` if malformed."""
        if isinstance(msg, cls):
            return msg
        try:
            return msgspec.convert(msg, cls)
        except msgspec.ValidationError as err:
            raise ValueError(f'malformed shm token {msg!r}: {err}') from err

    def to_msg(self) -> dict:
        return msgspec.to_builtins(self)

    def for_member(self, member: int) -> ShmToken:
        return msgspec.structs.replace(self, member=member)

    @property
    def partial_index(self) -> int | None:
        """The ``index`` of the partial first live bar, ``None`` when there
        is none (the first live bar is whole, or the buffer is not marked)."""
        return self.first_live if self.first_partial else None


# -- segments ----------------------------------------------------------------

# create / attach / unlink / close, and the exit-time unlinking of what this
# process created: the helpers shared with feedbus' quote ring
# (tractor_services._shm, which says who owns what)


def _new_key() -> str:
    return new_segment_name(KEY_PREFIX_ENV, KEY_PREFIX)


class _Segments:
    """The two segments of one data block, shared by its members."""

    def __init__(
        self,
        data: SharedMemory,
        ctl: SharedMemory,
        token: ShmToken,
        readonly: bool,
        owner: bool,
    ) -> None:
        self.data = data
        self.ctl_seg = ctl
        self.token = token
        self.readonly = readonly
        self.owner = owner
        self.closed = False
        dtype = token.dtype
        # read-only attachments map the segments PROT_READ: numpy sees
        # through a read-only memoryview to the writable mmap and would let
        # a view be made writeable again, not so over a read-only mmap
        self._ro_maps: list[mmap.mmap] = []
        if readonly:
            self._ro_maps = [
                mmap.mmap(seg._fd, seg.size, access=mmap.ACCESS_READ)  # type: ignore[attr-defined]
                for seg in (data, ctl)
            ]
            dbuf: Any = self._ro_maps[0]
            cbuf: Any = self._ro_maps[1]
        else:
            dbuf, cbuf = data.buf, ctl.buf
        self.block: np.ndarray = np.ndarray(
            (token.members, token.size), dtype=dtype, buffer=dbuf
        )
        self.ctl: np.ndarray = np.ndarray(
            (_HEADER + 2 * token.members,), dtype=np.int64, buffer=cbuf
        )
        self.windows: np.ndarray = self.ctl[_HEADER:].reshape(token.members, 2)
        if readonly:
            # memory behind a read-only buffer: cannot be made writeable
            for a in (self.block, self.ctl, self.windows):
                a.flags.writeable = False

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        del self.block, self.ctl, self.windows
        self._ro_maps = []  # unmapped with their last view (see _close_segment)
        _close_segment(self.data)
        _close_segment(self.ctl_seg)

    def destroy(self) -> None:
        if not self.owner:
            raise PermissionError(
                f'shm buffer {self.token.shm_name!r} was attached, not created, '
                'here: only its creator can destroy it (use close())'
            )
        _unlink_segment(self.data)
        _unlink_segment(self.ctl_seg)
        self.close()


def _create(
    members: int,
    size: int,
    key: str | None,
    dtype: Any,
    start: int | None,
    origin: float = 0.0,
    stamp: str = 'open',
) -> _Segments:
    dt = np.dtype(DEFAULT_DTYPE if dtype is None else dtype)
    if dt.names is None:
        raise ValueError(f'shm buffers need a structured dtype, got {dt}')
    if size <= 0 or members <= 0:
        raise ValueError(f'size and members must be > 0, got {size=} {members=}')
    start = size // 2 if start is None else start
    if not 0 <= start <= size:
        raise ValueError(f'start must be in [0, {size}], got {start}')
    key = key or _new_key()
    token = ShmToken(
        shm_name=key,
        shm_ctl_name=key + CTL_SUFFIX,
        dtype_descr=tuple(dt.descr),  # canonicalised by the token
        size=size,
        members=members,
        origin=origin,
        stamp=stamp,
    )
    data = _create_segment(key, members * size * dt.itemsize)
    try:
        ctl = _create_segment(token.shm_ctl_name, 8 * (_HEADER + 2 * members))
    except BaseException:
        _unlink_segment(data)
        _close_segment(data)
        raise
    segs = _Segments(data, ctl, token, readonly=False, owner=True)
    # ftruncate zero-fills the new segment: no need to touch every page
    segs.windows[:] = start
    hdr = segs.ctl
    hdr[_H_MEMBERS] = members
    hdr[_H_SIZE] = size
    hdr[_H_ITEMSIZE] = dt.itemsize
    hdr[_H_DTYPE_CRC] = _dtype_crc(token.dtype_descr)
    hdr[_H_VERSION] = _VERSION
    hdr[_H_MAGIC] = _MAGIC  # last: marks the header complete
    return segs


def _attach(token: ShmToken | dict, readonly: bool) -> _Segments:
    token = ShmToken.from_msg(token)
    data = _attach_segment(token.shm_name)
    try:
        ctl = _attach_segment(token.shm_ctl_name)
    except BaseException:
        _close_segment(data)
        raise
    try:
        need_ctl = 8 * (_HEADER + 2 * token.members)
        need = token.members * token.size * token.dtype.itemsize
        if ctl.size < 8 * _HEADER:
            raise ValueError(f'shm control segment {token.shm_ctl_name!r} is too small')
        hdr = np.ndarray((_HEADER,), dtype=np.int64, buffer=ctl.buf)
        header = [int(x) for x in hdr]
        del hdr
        if header[_H_MAGIC] != _MAGIC or header[_H_VERSION] != _VERSION:
            raise ValueError(
                f'shm segment {token.shm_ctl_name!r} is not a tractor_sampler '
                'control segment (or not initialised yet)'
            )
        seg_members, seg_size, seg_itemsize = (
            header[_H_MEMBERS],
            header[_H_SIZE],
            header[_H_ITEMSIZE],
        )
        if (
            (seg_members, seg_size, seg_itemsize)
            != (token.members, token.size, token.dtype.itemsize)
            or ctl.size < need_ctl
            or data.size < need
        ):
            raise ValueError(
                f'shm token does not match segment {token.shm_name!r}: the token '
                f'says {token.members} x {token.size} rows of {token.dtype.itemsize} '
                f'bytes ({need} bytes), the segment holds {seg_members} x {seg_size} '
                f'rows of {seg_itemsize} bytes ({data.size} bytes)'
            )
        if header[_H_DTYPE_CRC] != _dtype_crc(token.dtype_descr):
            raise ValueError(
                f'shm token does not match segment {token.shm_name!r}: dtype '
                f'{token.dtype} differs from the one it was created with'
            )
        return _Segments(data, ctl, token, readonly=readonly, owner=False)
    except BaseException:
        _close_segment(data)
        _close_segment(ctl)
        raise


# -- one buffer ----------------------------------------------------------------


class ShmArray:
    """One buffer: a window ``[first:last]`` of a structured array in shared
    memory.  Make one with :func:`open_shm_array` (creator) or
    :func:`attach_shm_array` (any process), or take a member of a
    :class:`ShmGroup`."""

    def __init__(
        self,
        segs: _Segments,
        member: int = 0,
        *,
        group: bool = False,
        token: ShmToken | None = None,
    ) -> None:
        self._segs = segs
        self._member = member
        self._in_group = group
        # a member attached through its group keeps the marks of the token
        # it was handed (``first_live``...), when given
        self._token = (
            segs.token.for_member(member)
            if token is None
            else msgspec.structs.replace(
                token, shm_name=segs.token.shm_name, member=member
            )
        )
        self._rows: np.ndarray = segs.block[member]
        self._window: np.ndarray = segs.windows[member]

    # -- identity
    @property
    def token(self) -> ShmToken:
        return self._token

    def mark_live(self, first_live: int, partial: bool) -> ShmToken:
        """(creator) Record in this buffer's token where its live bars
        begin (see :class:`ShmToken`): the ``index`` of the first live bar
        and whether it started mid-bar.  Call it before handing the token
        out: tokens given out earlier keep their old marks (the segments
        are the same).  Returns the new token."""
        if not self._segs.owner:
            raise PermissionError(
                f'shm buffer {self.name!r} was attached, not created, here: '
                'only its creator marks it'
            )
        if not isinstance(first_live, int) or isinstance(first_live, bool):
            raise TypeError(f'first_live={first_live!r} must be a row index (int)')
        self._token = msgspec.structs.replace(
            self._token, first_live=first_live, first_partial=bool(partial)
        )
        return self._token

    @property
    def name(self) -> str:
        return (
            self._token.shm_name
            if self._token.members == 1
            else (f'{self._token.shm_name}[{self._member}]')
        )

    @property
    def dtype(self) -> np.dtype:
        return self._rows.dtype

    @property
    def size(self) -> int:
        return self._token.size

    @property
    def readonly(self) -> bool:
        return self._segs.readonly

    @property
    def is_creator(self) -> bool:
        return self._segs.owner

    @property
    def closed(self) -> bool:
        return self._segs.closed

    # -- the window
    def _bounds(self) -> tuple[int, int]:
        if self._segs.closed:
            raise ValueError(f'shm buffer {self.name!r} is closed')
        first, last = self._window.tolist()
        return first, last

    @property
    def first(self) -> int:
        return self._bounds()[0]

    @property
    def last(self) -> int:
        """One past the last valid row."""
        return self._bounds()[1]

    def __len__(self) -> int:
        first, last = self._bounds()
        return last - first

    @property
    def array(self) -> np.ndarray:
        """The valid rows (a view, read-only for read-only attachments)."""
        first, last = self._bounds()
        return self._rows[first:last]

    @property
    def rows(self) -> np.ndarray:
        """All ``size`` rows of the buffer's storage (a view into shared
        memory; read-only for read-only attachments).  Rows outside the
        window are unspecified.  For a hot path that fetches this once and
        indexes it by position (the bar writer): reading ``window`` for the
        bounds each time costs one ``tolist()`` and no checks.  Writers
        must write rows before moving the window over them."""
        if self._segs.closed:
            raise ValueError(f'shm buffer {self.name!r} is closed')
        return self._rows

    @property
    def window(self) -> np.ndarray:
        """The live ``(first, last)`` pair in shared memory, a ``(2,)``
        int64 view (``window.tolist()`` reads both at once): what
        :attr:`first`/:attr:`last` read, without their closed check, for
        a hot path that fetches it once.  Read it, never write it (only
        :meth:`push` and samplerd's steps move the window)."""
        if self._segs.closed:
            raise ValueError(f'shm buffer {self.name!r} is closed')
        return self._window

    @property
    def last_row(self) -> np.void:
        """The current (last) row; a view, so writers can update it in place."""
        first, last = self._bounds()
        if last <= first:
            raise IndexError(f'shm buffer {self.name!r} is empty')
        return self._rows[last - 1]

    def _check_writable(self) -> None:
        if self._segs.closed:
            raise ValueError(f'shm buffer {self.name!r} is closed')
        if self._segs.readonly:
            raise PermissionError(
                f'shm buffer {self.name!r} is attached read-only: cannot write'
            )

    def _as_rows(self, rows: Any) -> np.ndarray:
        arr = np.atleast_1d(np.asarray(rows))
        if arr.ndim != 1:
            raise ValueError(f'push takes a 1-d array of rows, got shape {arr.shape}')
        if arr.dtype == self.dtype:
            return arr
        if arr.dtype.names is None:
            raise TypeError(
                f'push into {self.name!r} takes rows of dtype {self.dtype}, got {arr.dtype}'
            )
        unknown = set(arr.dtype.names) - set(self.dtype.names or ())
        if unknown:
            raise ValueError(
                f'rows have fields {sorted(unknown)} that shm buffer {self.name!r} lacks'
            )
        out = np.zeros(len(arr), dtype=self.dtype)
        for field in arr.dtype.names:
            out[field] = arr[field]
        return out

    def push(self, rows: Any, prepend: bool = False) -> int:
        """Append ``rows`` after the window (or, with ``prepend``, insert
        them before it); returns the new ``last`` (or ``first``).  Rows of
        another structured dtype are copied field by field (missing fields
        are zero).  Raises :class:`ShmOverrun` if they do not fit."""
        self._check_writable()
        arr = self._as_rows(rows)
        n = len(arr)
        first, last = self._bounds()
        if prepend:
            if n > first:
                raise ShmOverrun(
                    f'shm buffer {self.name!r}: cannot prepend {n} rows before '
                    f'row {first}: only {first} free at the start (size {self.size})'
                )
            self._rows[first - n : first] = arr
            self._window[0] = first - n
            return first - n
        free = self.size - last
        if n > free:
            raise ShmOverrun(
                f'shm buffer {self.name!r}: cannot append {n} rows after row '
                f'{last}: only {free} free at the end (size {self.size})'
            )
        self._rows[last : last + n] = arr
        self._window[1] = last + n
        return last + n

    def close(self) -> None:
        """Drop this process' mapping (a group member closes the group's)."""
        self._segs.close()

    def destroy(self) -> None:
        """Unlink the segments (creator only) and close."""
        if self._in_group:
            raise PermissionError(
                f'shm buffer {self.name!r} is a member of a group: destroy the group'
            )
        self._segs.destroy()

    def __enter__(self) -> ShmArray:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._segs.owner and not self._in_group:
            self.destroy()
        else:
            self.close()

    def __repr__(self) -> str:
        state = 'closed' if self.closed else '[{}:{}]'.format(*self._bounds())
        mode = 'ro' if self.readonly else 'rw'
        return f'<ShmArray {self.name!r} {state} of {self.size} {mode}>'


def open_shm_array(
    size: int,
    key: str | None = None,
    dtype: Any = None,
    readonly: bool = False,
    *,
    start: int | None = None,
    origin: float = 0.0,
    stamp: str = 'open',
) -> ShmArray:
    """Create a buffer of ``size`` rows (the caller owns it: it is unlinked
    on :meth:`ShmArray.destroy`, on leaving ``with``, or at process exit).

    ``key`` names the data segment (default ``tsamp_<pid>_<random>``, the
    prefix overridable by ``$TRACTOR_SAMPLER_SHM_PREFIX``; the
    control segment is ``<key>_ctl``); ``dtype`` defaults to
    :data:`DEFAULT_DTYPE`; the empty window starts at ``start`` (default
    ``size // 2``: room for history before it and live rows after it).
    ``readonly`` makes the creator's own handle read-only.  ``origin`` and
    ``stamp`` go into the token: where its bars lie (see :class:`ShmToken`)."""
    segs = _create(1, size, key, dtype, start, origin, stamp)
    if readonly:
        ro = _Segments(segs.data, segs.ctl_seg, segs.token, readonly=True, owner=True)
        del segs
        return ShmArray(ro)
    return ShmArray(segs)


def attach_shm_array(token: ShmToken | dict, readonly: bool = True) -> ShmArray:
    """Attach the buffer ``token`` names (a :class:`ShmToken` or its IPC
    dict), read-only by default.  The attachment never unlinks the segment.

    Raises ``FileNotFoundError`` if the segment does not exist and
    ``ValueError`` if the token is malformed or does not match it."""
    segs = _attach(token, readonly)
    return ShmArray(segs, segs.token.member, group=segs.token.members > 1)


# -- vectorised stepping ----------------------------------------------------

_STEP_FIELDS = ('time', 'close')


class _Part:
    """One data segment's buffers in a :class:`StepPlan`, with what its
    step needs worked out once: the members (sorted), the flat offset of
    each member's row 0 in the segment's ``(members * size,)`` row array,
    and, when the members are one contiguous run (a whole group), the slice
    that reads and writes their windows without a gather or a scatter."""

    __slots__ = ('_rows', 'base', 'dtype', 'members', 'names', 'run', 'segs')

    def __init__(self, segs: _Segments, members: np.ndarray) -> None:
        self.segs = segs
        self.members = members
        self.dtype = segs.token.dtype
        self.names = frozenset(self.dtype.names or ())
        self._rows: np.ndarray | None = None
        self.base = members.astype(np.int64) * segs.token.size
        n = len(members)
        self.run: slice | None = (
            slice(int(members[0]), int(members[-1]) + 1)
            if n and int(members[-1]) - int(members[0]) == n - 1
            else None
        )

    def rows(self) -> np.ndarray:
        """The segment's ``members * size`` rows as one flat array of
        ``void`` items of the row's size: ``np.take`` / ``np.put`` on it
        copy whole rows as bytes (made on first use: the segment is open
        then; a closed segment is refused before this is reached)."""
        if self._rows is None:
            void = np.dtype((np.void, self.dtype.itemsize))
            self._rows = self.segs.block.reshape(-1).view(void)
        return self._rows


class StepPlan:
    """Precomputed stepping for a fixed set of buffers: one vectorised step
    per distinct data segment (see the module docstring)."""

    def __init__(self, shms: Sequence[ShmArray]) -> None:
        by_seg: dict[int, tuple[_Segments, list[int]]] = {}
        for shm in shms:
            segs = shm._segs
            by_seg.setdefault(id(segs), (segs, []))[1].append(shm._member)
        self._parts: list[_Part] = []
        for segs, members in by_seg.values():
            names = segs.token.dtype.names or ()
            missing = [f for f in _STEP_FIELDS if f not in names]
            if missing:
                raise ValueError(
                    f'cannot step shm buffer {segs.token.shm_name!r}: its dtype lacks {missing}'
                )
            if segs.readonly:
                raise PermissionError(
                    f'shm buffer {segs.token.shm_name!r} is attached read-only: cannot step'
                )
            self._parts.append(
                _Part(segs, np.unique(np.asarray(members, dtype=np.intp)))
            )
        #: rows not appended because the buffer's last row was already at or
        #: after the step's time
        self.waited = 0
        #: rows that jumped over boundaries (one per buffer and jump), the
        #: boundaries jumped over, and the most jumped over by the last step
        self.jumps = 0
        self.gap_bars = 0
        self.last_gap = 0

    def step(self, period_s: float, step_time: float | None = None) -> int:
        """Append one row to every non-empty buffer, with time
        ``step_time`` (a boundary of the period: samplerd passes the step's
        own time), or, when ``None``, each buffer's next boundary after its
        last row.  Returns how many buffers got a row.

        A buffer whose last row is already at or after ``step_time`` gets no
        row (counted in :attr:`waited`: it waits for the schedule to reach
        it, rows never go back in time).  A buffer whose last row is more
        than one period before ``step_time`` jumps to it: the row marks the
        gap (its time is ``gap + 1`` periods after the row before) and
        :attr:`jumps`, :attr:`gap_bars` and :attr:`last_gap` count it.

        Each buffer's token says where its bars lie (``origin``,
        ``stamp``): its rows are on its own boundaries, and a buffer
        stamped ``'close'`` gets the row of the bar opening at
        ``step_time``, whose time is ``step_time`` plus a period.

        Rows move as raw bytes: the current rows are gathered with one
        ``np.take`` on flat row offsets of the segment's block viewed as
        plain ``void`` items (advanced indexing on the structured dtype
        itself copies field by field, several times slower), the new rows
        are computed on that copy, and one ``np.put`` writes them."""
        tenths = round(check_period(period_s) * 10)
        # check every part first, so an overrun writes nothing anywhere
        todo = []
        gap = 0
        for part in self._parts:
            segs = part.segs
            if segs.closed:
                raise ValueError(f'shm buffer {segs.token.shm_name!r} is closed')
            tok = segs.token
            run = part.run
            # (k, 2) copy of the windows: one read, whatever writes them next
            win = segs.windows[run] if run is not None else segs.windows[part.members]
            last = win[:, 1].copy() if run is not None else win[:, 1]
            sel = last > win[:, 0]
            base = part.base
            # member positions in the part, only when not all of them step
            pos: np.ndarray | None = None
            if not sel.all():
                pos = np.flatnonzero(sel)
                if not len(pos):
                    continue
                run = None
                base, last = base[pos], last[pos]
            src = base + last - 1
            raw = part.rows().take(src)  # (k,) copy of the current rows
            new = raw.view(part.dtype)
            prev = new['time']
            o = round(tok.origin * 10) % tenths
            # bar numbers in float64: exact integers, and (k * tenths + o) / 10
            # is the float nearest the boundary, as the schedule's step times
            times: np.ndarray | float
            if step_time is None:
                times = ((np.rint((prev * 10 - o) / tenths) + 1) * tenths + o) / 10
                go = times > prev
                if go.all():
                    go = None
            else:
                t = float(step_time)
                if tok.stamp == 'close':  # in tenths: the float nearest the end
                    t = (round(t * 10) + tenths) / 10
                times = t
                # one reduction when every buffer is behind t (NaN is not)
                go = None if prev.max() < t else t > prev
            if go is not None:
                keep = np.flatnonzero(go)
                self.waited += len(go) - len(keep)
                if not len(keep):
                    continue
                pos = keep if pos is None else pos[keep]
                run = None
                last, src, prev = last[keep], src[keep], prev[keep]
                raw = raw[keep]
                new = raw.view(part.dtype)
                if step_time is None:
                    times = times[keep]  # type: ignore[index]
            if last.max() >= tok.size:
                idx = part.members if pos is None else part.members[pos]
                raise ShmOverrun(
                    f'shm buffer {tok.shm_name!r}: cannot step members '
                    f'{idx[last >= tok.size].tolist()[:10]}: 0 rows free at the end '
                    f'(size {tok.size})'
                )
            if step_time is not None:
                # the step's bar number less each buffer's, less one: the
                # boundaries its row jumps over (the most: the oldest row's)
                t_k = round((t * 10 - o) / tenths)
                most = t_k - round((float(prev.min()) * 10 - o) / tenths) - 1
                if most > 0:
                    skipped = t_k - np.rint((prev * 10 - o) / tenths) - 1
                    jumped = skipped > 0
                    self.jumps += int(np.count_nonzero(jumped))
                    self.gap_bars += int(skipped[jumped].sum())
                    gap = max(gap, most)
            todo.append((part, pos, run, last, src, raw, new, times))
        self.last_gap = gap
        stepped = 0
        for part, pos, run, last, src, raw, new, times in todo:
            segs = part.segs
            names = part.names
            close = new['close']
            for f in ('open', 'high', 'low'):
                if f in names:
                    new[f] = close
            if 'volume' in names:
                new['volume'] = 0
            if 'index' in names:
                new['index'] += 1
            new['time'] = times
            part.rows().put(src + 1, raw)
            # after the rows: readers see whole rows
            if run is not None:
                segs.windows[run, 1] = last + 1
            else:
                idx = part.members if pos is None else part.members[pos]
                segs.windows[idx, 1] = last + 1
            stepped += len(last)
        return stepped


def step_many(
    shms: Sequence[ShmArray], period_s: float, step_time: float | None = None
) -> int:
    """Step every buffer in ``shms`` once (one vectorised step per data
    segment; see :meth:`StepPlan.step`); returns how many were stepped.
    For a fixed set stepped every period, build a :class:`StepPlan` once
    instead."""
    return StepPlan(shms).step(period_s, step_time)


# -- groups ----------------------------------------------------------------------


class ShmGroup:
    """``members`` buffers of one dtype and size in one data segment, each
    with its own window; :meth:`step` appends a row to all of them in one
    numpy operation per column.  Members are ordinary :class:`ShmArray` s
    (``group[i]``) whose tokens attach them alone in another process."""

    def __init__(self, segs: _Segments) -> None:
        self._segs = segs
        # made on first use: a group of large capacity (the feed daemon's
        # pools) costs no object per member nobody uses
        self._members: list[ShmArray | None] = [None] * segs.token.members
        self._plan: StepPlan | None = None

    @property
    def token(self) -> ShmToken:
        """The group's token (member 0); ``token.for_member(i)`` for others."""
        return self._segs.token

    @property
    def tokens(self) -> list[ShmToken]:
        return [m.token for m in self]

    @property
    def name(self) -> str:
        """The data segment's name (what attachments are cached by)."""
        return self._segs.token.shm_name

    @property
    def closed(self) -> bool:
        return self._segs.closed

    def member(self, i: int, token: ShmToken | None = None) -> ShmArray:
        """A new handle on member ``i`` (``token``: the member's token as
        handed out, whose marks it keeps; see :meth:`ShmArray.mark_live`).
        Handles of one group share its mapping: close the group, not them."""
        if not 0 <= i < len(self._members):
            raise IndexError(f'{self!r} has no member {i}')
        return ShmArray(self._segs, i, group=True, token=token)

    def reset_member(self, i: int, start: int | None = None) -> None:
        """(creator) Empty member ``i`` for reuse: its window goes back to
        ``[start, start)`` (default ``size // 2``), then the memory its rows
        touched is given back to the system (``madvise(MADV_REMOVE)`` on
        the whole pages inside the member's rows: tmpfs frees them and they
        read as zeros again), so a free slot costs no ``/dev/shm`` space."""
        segs = self._segs
        if not segs.owner or segs.readonly:
            raise PermissionError(f'{self!r}: only its creator resets members')
        size = segs.token.size
        start = size // 2 if start is None else start
        if not 0 <= start <= size:
            raise ValueError(f'start must be in [0, {size}], got {start}')
        segs.windows[i] = (start, start)
        self._members[i] = None  # a stale handle's token marks go with it
        self._plan = None
        mm = getattr(segs.data, '_mmap', None)
        advice = getattr(mmap, 'MADV_REMOVE', None)
        if mm is None or advice is None:
            return
        row = segs.token.dtype.itemsize
        page = mmap.PAGESIZE
        lo = -(-(i * size * row) // page) * page
        hi = ((i + 1) * size * row) // page * page
        if hi > lo:
            try:
                mm.madvise(advice, lo, hi - lo)
            except OSError:  # not tmpfs (nothing to give back there)
                pass

    @property
    def block(self) -> np.ndarray:
        """The whole ``(members, size)`` block (rows outside each member's
        window are unspecified)."""
        return self._segs.block

    @property
    def windows(self) -> np.ndarray:
        """``(members, 2)`` view of every member's ``(first, last)``."""
        return self._segs.windows

    @property
    def readonly(self) -> bool:
        return self._segs.readonly

    def __len__(self) -> int:
        return len(self._members)

    @overload
    def __getitem__(self, i: int) -> ShmArray: ...

    @overload
    def __getitem__(self, i: slice) -> list[ShmArray]: ...

    def __getitem__(self, i: int | slice) -> ShmArray | list[ShmArray]:
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self._members)))]
        if i < 0:
            i += len(self._members)
        m = self._members[i]
        if m is None:
            m = self._members[i] = ShmArray(self._segs, i, group=True)
        return m

    def __iter__(self) -> Iterator[ShmArray]:
        return (self[i] for i in range(len(self._members)))

    def step(self, period_s: float, step_time: float | None = None) -> int:
        """Append one row to every non-empty member (see
        :meth:`StepPlan.step`); returns how many."""
        if self._plan is None:
            self._plan = StepPlan(list(self))
        return self._plan.step(period_s, step_time)

    def close(self) -> None:
        self._segs.close()

    def destroy(self) -> None:
        self._segs.destroy()

    def __enter__(self) -> ShmGroup:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._segs.owner:
            self.destroy()
        else:
            self.close()

    def __repr__(self) -> str:
        return (
            f'<ShmGroup {self._segs.token.shm_name!r} {len(self)} x '
            f'{self._segs.token.size}>'
        )


def open_shm_group(
    members: int,
    size: int,
    key: str | None = None,
    dtype: Any = None,
    *,
    start: int | None = None,
    origin: float = 0.0,
    stamp: str = 'open',
) -> ShmGroup:
    """Create ``members`` buffers of ``size`` rows in one segment (owned
    like :func:`open_shm_array`'s); every window starts empty at ``start``
    (default ``size // 2``); every member's bars lie on ``origin`` and
    ``stamp`` (see :class:`ShmToken`)."""
    return ShmGroup(_create(members, size, key, dtype, start, origin, stamp))


def attach_shm_group(token: ShmToken | dict, readonly: bool = False) -> ShmGroup:
    """Attach a whole group by any member's token (writable by default: the
    sampler steps it)."""
    return ShmGroup(_attach(token, readonly))
