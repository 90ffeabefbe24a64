"""
The package's old top-level names, kept importable for one release.

``tractor_sampler.open_feed`` / ``Feed`` collided with feedbus' own
``open_feed(portal, topics)`` / ``Feed``: they are now
:func:`~tractor_sampler.open_market_feed` / :class:`~tractor_sampler.MarketFeed`.
The IPC endpoints moved to :mod:`tractor_sampler.endpoints`, shared-memory
groups to :mod:`tractor_sampler.shm`.  Each old name still works and warns
(``DeprecationWarning``) where it is used.

"""

from __future__ import annotations

import importlib
import warnings
from typing import Any

#: old top-level name -> (module, name) it is now
MOVED: dict[str, tuple[str, str]] = {
    'open_feed': ('tractor_sampler', 'open_market_feed'),
    'Feed': ('tractor_sampler', 'MarketFeed'),
    **{
        name: ('tractor_sampler.endpoints', name)
        for name in ('attach_feed', 'feed_info', 'feedd', 'sampler_info', 'samplerd')
    },
    **{
        name: ('tractor_sampler.shm', name)
        for name in ('ShmGroup', 'attach_shm_group', 'open_shm_group')
    },
    'StatusStream': ('tractor_sampler._feed', 'StatusStream'),
    'FEEDD_PREFIX': ('tractor_sampler._feedd', 'FEEDD_PREFIX'),
    'DEFAULT_BUFFERS': ('tractor_sampler._feedd', 'DEFAULT_BUFFERS'),
}

#: names of the spec served quietly: importable, not advertised
QUIET: dict[str, tuple[str, str]] = {
    'register_with_sampler': ('tractor_sampler.endpoints', 'register_with_sampler'),
}


def module_getattr(name: str) -> Any:
    """``tractor_sampler.__getattr__``: an old name, with a warning that
    names the new one."""
    if name in QUIET:
        mod, new = QUIET[name]
        return getattr(importlib.import_module(mod), new)
    if name not in MOVED:
        raise AttributeError(f"module 'tractor_sampler' has no attribute {name!r}")
    mod, new = MOVED[name]
    warnings.warn(
        f'tractor_sampler.{name} is deprecated: use {mod}.{new}',
        DeprecationWarning,
        stacklevel=2,
    )
    return getattr(importlib.import_module(mod), new)
