"""A plugin module of a test backend whose quotes pause, loaded into feed
daemons through ``open_market_feed(..., plugins=['pausing_backends'])``.

- ``pausing``: streams like ``sim``, but after ``pause_after`` quote
  batches sends nothing for ``pause_s`` seconds (the stream itself keeps
  running), then streams on.
"""

from __future__ import annotations

from typing import Any

import trio

from tractor_sampler import hookimpl
from tractor_sampler.backends import sim


def stream_quotes(
    symbols: list[str], *, pause_after: int = 20, pause_s: float = 3.0, **config: Any
):
    source = sim.stream_quotes(symbols, **config)

    async def gen():
        n = 0
        async for batch in source:
            n += 1
            if n == pause_after:
                await trio.sleep(pause_s)  # quiet, not ended: the venue paused
            yield batch

    return gen()


@hookimpl
def tractor_sampler_register_backends(register):
    register('pausing', stream_quotes=stream_quotes, symbol_info=sim.symbol_info)
