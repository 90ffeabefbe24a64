"""A backend (``breaks``) that is the simulated one except for a few
symbols, each breaking one contract the conformance kit checks:

- ``BADH``: ``history`` returns a plain float matrix, not structured bars;
- ``BADI``: ``symbol_info`` returns a zero tick size;
- ``BADQ``: the stream's ticks have no ``'type'`` (silently never folded
  into bars, before the feed daemon checked them).

The feed daemon must name backend and hook in one line the client sees and
serve the other symbols on.
"""

from __future__ import annotations

import functools

import numpy as np

from tractor_sampler.backends import sim
from tractor_sampler.hookspecs import Register, hookimpl


@functools.wraps(sim.history)  # its keywords: the config it takes
async def history(symbol, period_s, end_time, count, **config):
    if symbol == 'BADH':
        return np.ones((count, 6))
    return await sim.history(symbol, period_s, end_time, count, **config)


@functools.wraps(sim.symbol_info)
async def symbol_info(symbol, **config):
    info = await sim.symbol_info(symbol, **config)
    if symbol == 'BADI':
        info['tick_size'] = 0
    return info


async def _untyped(source):
    async for batch in source:
        yield {
            sym: {
                **q,
                'ticks': [
                    {k: v for k, v in t.items() if k != 'type'}
                    for t in q.get('ticks', [])
                ],
            }
            for sym, q in batch.items()
        }


def stream_quotes(symbols, **config):
    source = sim.stream_quotes(symbols, **config)
    return _untyped(source) if 'BADQ' in symbols else source


@hookimpl
def tractor_sampler_register_backends(register: Register) -> None:
    register(
        'breaks', stream_quotes=stream_quotes, history=history, symbol_info=symbol_info
    )
