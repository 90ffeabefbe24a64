"""
Names that moved off ``feedbus``'s front page, still importable from it
for one release (until feedbus 0.2) with a ``DeprecationWarning`` naming
their new home.

"""

from __future__ import annotations

import importlib
import warnings
from typing import Any

#: old ``feedbus.<name>`` -> the public module that holds it now
MOVED: dict[str, str] = {
    'CtlMsg': 'feedbus.protocol',
    'Outbox': 'feedbus.protocol',
    'StreamReaders': 'feedbus.protocol',
    'decode_ctl': 'feedbus.protocol',
    'open_feed_stream': 'feedbus.endpoints',
}


def module_getattr(name: str) -> Any:
    """``feedbus.__getattr__``: a moved name, with a warning."""
    home = MOVED.get(name)
    if home is None:
        raise AttributeError(f"module 'feedbus' has no attribute {name!r}")
    warnings.warn(
        f'feedbus.{name} moved to {home}.{name}; the old name goes in feedbus 0.2',
        DeprecationWarning,
        stacklevel=2,
    )
    return getattr(importlib.import_module(home), name)
