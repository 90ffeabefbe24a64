"""A plugin registering deliberately broken backends (and one minimal
correct one) for the conformance kit's own tests: each breaks exactly one
contract, so exactly the matching check fails.

- ``minimal``: correct quotes, no history, no symbol info;
- ``lists``: yields lists of quotes instead of ``{symbol: quote}`` dicts;
- ``untyped_ticks``: its ticks have no ``'type'``;
- ``lax_config``: takes ``**config`` and ignores unknown keys;
- ``late_config_error``: rejects unknown keys on the first iteration, not
  on the call (tolerated, with a warning);
- ``hangs_on_cancel``: when cancelled, waits forever in a shielded scope;
- ``off_boundary_history``: bar times half a period off the boundaries;
- ``short_history``: one bar fewer than asked;
- ``bad_symbol_info``: a zero tick size;
- ``fails_after_2s``: streams well-formed quotes, then raises 2 s after it
  started (as a venue connection dropped by a heartbeat timeout would):
  past the first 20 batches, so only the kit's minimum stream time sees it.
"""

from __future__ import annotations

import math
import time
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

import numpy as np
import trio

from tractor_sampler.hookspecs import Register, hookimpl
from tractor_sampler.shm import DEFAULT_DTYPE

INTERVAL = 0.002  # between batches


def _quote(n: int, *, typed: bool = True) -> dict[str, Any]:
    price = 100.0 + (n % 7) * 0.01
    tick: dict[str, Any] = {'price': price, 'size': 1.0}
    if typed:
        tick['type'] = 'trade'
    return {
        'last': price,
        'bid': price - 0.01,
        'ask': price + 0.01,
        'time': time.time(),
        'ticks': [tick],
    }


def _streamer(
    make: Callable[[list[str], int], Any],
    *,
    hang_on_cancel: bool = False,
) -> Callable[..., AsyncIterator[Any]]:
    """A ``stream_quotes`` with a strict config (``tick_rate`` only) that
    yields ``make(symbols, n)`` every ``INTERVAL``."""

    def stream_quotes(
        symbols: Sequence[str], *, tick_rate: float = 500.0
    ) -> AsyncIterator[Any]:
        syms = list(symbols)

        async def gen() -> AsyncIterator[Any]:
            n = 0
            try:
                while True:
                    yield make(syms, n)
                    n += 1
                    await trio.sleep(1 / tick_rate)
            except trio.Cancelled:
                if hang_on_cancel:  # "waits for a goodbye that never comes"
                    with trio.CancelScope(shield=True):
                        await trio.sleep_forever()
                raise

        return gen()

    return stream_quotes


good_stream = _streamer(lambda syms, n: {s: _quote(n) for s in syms})


def lax_stream(symbols: Sequence[str], **config: Any) -> AsyncIterator[Any]:
    return good_stream(symbols)


async def late_config_stream(
    symbols: Sequence[str], **config: Any
) -> AsyncIterator[Any]:
    if set(config) - {'tick_rate'}:
        raise TypeError(f'unknown config {sorted(config)}')
    async for batch in good_stream(symbols, **config):
        yield batch


async def good_history(
    symbol: str, period_s: float, end_time: float, count: int
) -> np.ndarray:
    await trio.lowlevel.checkpoint()
    end = math.floor(end_time / period_s) * period_s
    bars = np.zeros(count, dtype=DEFAULT_DTYPE)
    bars['time'] = end - period_s * np.arange(count, 0, -1)
    bars['open'] = bars['close'] = 100.0
    bars['high'] = 101.0
    bars['low'] = 99.0
    bars['volume'] = 5.0
    return bars


async def off_boundary_history(
    symbol: str, period_s: float, end_time: float, count: int
) -> np.ndarray:
    bars = await good_history(symbol, period_s, end_time, count)
    bars['time'] -= period_s / 2
    return bars


async def short_history(
    symbol: str, period_s: float, end_time: float, count: int
) -> np.ndarray:
    return (await good_history(symbol, period_s, end_time, count))[1:]


async def bad_symbol_info(symbol: str) -> dict[str, Any]:
    await trio.lowlevel.checkpoint()
    return {'symbol': symbol, 'tick_size': 0.0, 'lot_size': 1.0}


def fails_after_2s(
    symbols: Sequence[str], *, tick_rate: float = 500.0
) -> AsyncIterator[Any]:
    async def gen() -> AsyncIterator[Any]:
        start = trio.current_time()
        async for batch in good_stream(symbols, tick_rate=tick_rate):
            if trio.current_time() - start >= 2.0:
                raise RuntimeError('the venue dropped the connection')
            yield batch

    return gen()


@hookimpl
def tractor_sampler_register_backends(register: Register) -> None:
    register('minimal', stream_quotes=good_stream)
    register(
        'lists', stream_quotes=_streamer(lambda syms, n: [_quote(n) for _ in syms])
    )
    register(
        'untyped_ticks',
        stream_quotes=_streamer(
            lambda syms, n: {s: _quote(n, typed=False) for s in syms}
        ),
    )
    register('lax_config', stream_quotes=lax_stream)
    register('late_config_error', stream_quotes=late_config_stream)
    register(
        'hangs_on_cancel',
        stream_quotes=_streamer(
            lambda syms, n: {s: _quote(n) for s in syms},
            hang_on_cancel=True,
        ),
    )
    register(
        'off_boundary_history', stream_quotes=good_stream, history=off_boundary_history
    )
    register('short_history', stream_quotes=good_stream, history=short_history)
    register('bad_symbol_info', stream_quotes=good_stream, symbol_info=bad_symbol_info)
    register('fails_after_2s', stream_quotes=fails_after_2s)
