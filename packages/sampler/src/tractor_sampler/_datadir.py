"""Where tractor-sampler keeps data that outlives a run (the bar store, the
tick log).

One resolution rule for every user of the data directory, so `samplerd run
--data-dir`, the library settings and the tests agree on one place:

1. an explicit argument (``data_dir(path)``),
2. ``$TRACTOR_SAMPLER_DATA_DIR``,
3. ``$XDG_DATA_HOME/tractor-sampler`` (``~/.local/share/tractor-sampler``
   when ``$XDG_DATA_HOME`` is unset or empty).

The directory is created when missing and must be writable; anything else is
one :class:`DataDirError` whose message names the path and the problem (no
traceback is needed to understand it). Standard library only: the store's
optional dependencies are not needed to resolve where it lives.

The bar store is on by default wherever a feed daemon runs (``samplerd
run`` and a tree started from the library alike), in this directory; a
feed daemon's ``data_dir`` setting (:func:`check_store_setting`) is a
path, ``None`` (the rule above) or ``False`` (no bar store), and
``$TRACTOR_SAMPLER_STORE=none`` turns it off for a whole tree.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Literal

ENV_VAR = 'TRACTOR_SAMPLER_DATA_DIR'
APP_NAME = 'tractor-sampler'


class DataDirError(ValueError):
    """The data directory cannot be used: the message names the path and why."""


def default_data_dir() -> Path:
    """``$XDG_DATA_HOME/tractor-sampler``, or ``~/.local/share/tractor-sampler``."""
    xdg = os.environ.get('XDG_DATA_HOME', '').strip()
    base = Path(xdg) if xdg else Path.home() / '.local' / 'share'
    return base / APP_NAME


def resolve_data_dir(path: str | os.PathLike[str] | None = None) -> Path:
    """The data directory's path by the rule above, without touching the disk."""
    if path is not None and str(path) != '':
        return Path(path).expanduser()
    env = os.environ.get(ENV_VAR, '').strip()
    if env:
        return Path(env).expanduser()
    return default_data_dir()


def data_dir(
    path: str | os.PathLike[str] | None = None,
    *,
    create: bool = True,
) -> Path:
    """The data directory, resolved, created when missing and checked
    writable (a probe file is created and removed in it).

    Raises :class:`DataDirError` naming the directory when it cannot be made
    or written (a path under a regular file, a read-only mount, no space
    left, no permission).
    """
    p = resolve_data_dir(path).absolute()
    if p.exists() and not p.is_dir():
        raise DataDirError(f'data directory {p}: exists and is not a directory')
    if not create and not p.exists():
        raise DataDirError(f'data directory {p}: does not exist')
    try:
        p.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DataDirError(
            f'data directory {p}: cannot be created ({exc.strerror or exc})'
        ) from None
    try:
        fd, probe = tempfile.mkstemp(prefix='.probe-', dir=p)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise DataDirError(
            f'data directory {p}: not writable ({exc.strerror or exc})'
        ) from None
    return p


def check_store_setting(
    value: str | os.PathLike[str] | bool | None,
) -> str | Literal[False] | None:
    """A feed daemon's ``data_dir`` setting, checked before anything
    starts: ``None`` (the default: the bar store on, in the directory the
    rule above resolves), ``False`` (the bar store off), or a path (as a
    string, so it travels to the daemon).  ``True`` is the default too.
    Anything else is one ``ValueError`` line."""
    if value is None or value is True:
        return None
    if value is False:
        return False
    if isinstance(value, (str, os.PathLike)):
        text = os.fspath(value)
        if isinstance(text, str) and text.strip():
            return text
    raise ValueError(
        f'data_dir={value!r} must be a directory, None (the default data '
        'directory) or False (no bar store)'
    )


__all__ = [
    'ENV_VAR',
    'DataDirError',
    'check_store_setting',
    'data_dir',
    'default_data_dir',
    'resolve_data_dir',
]
