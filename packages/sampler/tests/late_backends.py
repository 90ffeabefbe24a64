"""A plugin module of a test backend with known late trades, loaded into
feed daemons through ``plugins=['late_backends']``.

- ``late``: per symbol, each second ``k`` (on the wall clock) gets two
  trades: one timed ``k + 0.2``, sent at once, and one timed ``k + 0.7``
  (before the boundary ``k + 1``), sent only at ``k + 1.9``, long after
  that boundary: a trade that arrives after the step that closed its
  bar.  Prices: ``100 + k % 50`` and ``200 + k % 50``, size 1 and 2.
"""

from __future__ import annotations

import math
import time
from typing import Any

import trio

from tractor_sampler import hookimpl
from tractor_sampler.backends import sim


async def _wall_sleep_until(t: float) -> None:
    await trio.sleep_until(trio.current_time() + max(0.0, t - time.time()))


def stream_quotes(symbols: list[str], **config: Any):
    async def gen():
        k = math.floor(time.time()) + 1
        await _wall_sleep_until(k + 0.2)
        while True:
            on_time = {
                'type': 'trade',
                'price': 100.0 + k % 50,
                'size': 1.0,
                'time': k + 0.2,
            }
            yield {s: {'last': on_time['price'], 'ticks': [on_time]} for s in symbols}
            await _wall_sleep_until(k + 1.9)
            late = {
                'type': 'trade',
                'price': 200.0 + k % 50,
                'size': 2.0,
                'time': k + 0.7,
            }
            yield {s: {'last': late['price'], 'ticks': [late]} for s in symbols}
            k += 2
            await _wall_sleep_until(k + 0.2)

    return gen()


@hookimpl
def tractor_sampler_register_backends(register):
    register('late', stream_quotes=stream_quotes, symbol_info=sim.symbol_info)
