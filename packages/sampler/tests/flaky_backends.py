"""A plugin module of test backends, loaded into feed daemons through
``open_market_feed(..., plugins=['flaky_backends'])``.

- ``flaky``: streams like ``sim``, but a symbol starting with ``fail``
  raises after ``fail_after`` quotes, every time it is (re)started;
- ``picky``: knows only the symbols ``A`` and ``B`` (its symbol_info
  raises for any other).
"""

from __future__ import annotations

from typing import Any

from tractor_sampler import hookimpl
from tractor_sampler.backends import sim


class BackendBroke(RuntimeError):
    pass


def stream_quotes(symbols: list[str], *, fail_after: int = 5, **config: Any):
    source = sim.stream_quotes(symbols, **config)

    async def gen():
        n = 0
        async for batch in source:
            n += 1
            if n > fail_after and any(s.startswith('fail') for s in symbols):
                raise BackendBroke(f'the venue hung up after {fail_after} quotes')
            yield batch

    return gen()


async def picky_info(symbol: str) -> dict[str, Any]:
    if symbol not in ('A', 'B'):
        raise KeyError(f'no such symbol {symbol!r} (try A or B)')
    return await sim.symbol_info(symbol)


@hookimpl
def tractor_sampler_register_backends(register):
    register(
        'flaky',
        stream_quotes=stream_quotes,
        history=sim.history,
        symbol_info=sim.symbol_info,
    )
    register('picky', stream_quotes=sim.stream_quotes, symbol_info=picky_info)
