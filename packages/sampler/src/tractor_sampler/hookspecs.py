"""
The backend hook specification.

One string, :data:`PROJECT`, names the pluggy project, the markers, the
entry-point group and the hook prefix (``tractor_sampler_``).  Hooks are
synchronous and declarative: a plugin *registers* named backends (plain
callables); the feed daemon runs the async work in actors it owns.

A plugin is a module (or any object) with :data:`hookimpl`-marked
functions, published under the ``tractor_sampler`` entry-point group::

    [project.entry-points.tractor_sampler]
    mybackend = "mypkg.backend"

See ``docs/hooks.md`` for the reference and the call contracts.

"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, Protocol

import numpy as np
import pluggy

#: names the pluggy project, the markers, the entry-point group and (with a
#: trailing ``_``) the hook prefix
PROJECT = 'tractor_sampler'
HOOK_PREFIX = f'{PROJECT}_'

hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)

StreamQuotes = Callable[..., AsyncIterator[dict[str, dict[str, Any]]]]
History = Callable[..., Awaitable[np.ndarray]]
SymbolInfo = Callable[..., Awaitable[dict[str, Any]]]


class Register(Protocol):
    """The callback a plugin's :func:`tractor_sampler_register_backends`
    receives."""

    def __call__(
        self,
        name: str,
        *,
        stream_quotes: StreamQuotes,
        history: History | None = None,
        symbol_info: SymbolInfo | None = None,
        version: str | None = None,
    ) -> None: ...


@hookspec
def tractor_sampler_register_backends(register: Register) -> None:
    """Register this plugin's backends: call ``register(name, *,
    stream_quotes, history=None, symbol_info=None, version=None)`` once per
    backend.  Names are unique across all installed plugins.

    Call contracts (all called by the feed daemon, inside its actor):

    - ``stream_quotes(symbols: list[str], **config)`` returns an async
      iterator of ``{topic: quote}`` batches; a quote is a dict of fields
      with an optional ``'ticks'`` list of ``{'type', 'price', 'size',
      'time'?}`` dicts (``'trade'`` ticks are folded into bars).  Invalid
      config raises on the call, not on the first iteration.
    - ``await history(symbol, period_s, end_time, count, **config)``
      returns a numpy structured array in
      :data:`tractor_sampler.shm.DEFAULT_DTYPE` (or a superset), oldest
      first, one bar per period, the last bar ending at or before
      ``end_time``.
    - ``await symbol_info(symbol, **config)`` returns a dict with at least
      ``'symbol'``, ``'tick_size'`` and ``'lot_size'``.
    """


@hookspec
def tractor_sampler_register_stores(register: Callable[..., None]) -> None:
    """Register this plugin's bar stores: call ``register(name, factory)``
    once per store.  ``factory(root: pathlib.Path, **options)`` returns an
    object with the :class:`tractor_sampler._store.BarStore` methods
    (``write(backend, topic, period_s, bars)`` and ``read(backend, topic,
    period_s, start=None, end=None, last=None)``, both blocking: the feed
    daemon calls them in a worker thread).  A time may be written more than
    once (a late trade corrected a stored bar, written again): it resolves
    to its latest write, the one ``read`` returns, each time once.  A store
    may also have ``compact(backend, topic, period_s, *, now, max_small,
    settle_s)`` (merging its small files; the feed daemon's writer calls it
    after its flushes, in the same worker thread).  The built-in
    ``'parquet'`` store is registered through this hook too;
    ``$TRACTOR_SAMPLER_STORE`` picks one (``none``: no store).  See
    ``docs/storage.md``.
    """
