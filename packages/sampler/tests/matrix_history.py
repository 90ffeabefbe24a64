"""A backend whose history breaks the contract (a plain float matrix, not
a structured array): the feed daemon must refuse the topic naming backend
and hook, never fail inside numpy."""

from __future__ import annotations

import numpy as np

from tractor_sampler.backends import sim
from tractor_sampler.hookspecs import Register, hookimpl


async def history(symbol, period_s, end_time, count, **config):
    return np.ones((count, 6))


@hookimpl
def tractor_sampler_register_backends(register: Register) -> None:
    register(
        'matrix',
        stream_quotes=sim.stream_quotes,
        history=history,
        symbol_info=sim.symbol_info,
    )
