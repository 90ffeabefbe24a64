"""
tractor-sampler-sine: an example backend plugin for tractor-sampler.

It registers one backend, ``sine``: every symbol's price follows a sine
wave of wall-clock time, each symbol with its own phase (from a hash of its
name), so the feed is deterministic, needs no network and is easy to check
by eye.  Copy this module to start a backend of your own: the hook at the
top is all tractor-sampler needs; the rest is the backend itself.

``stream_quotes(symbols, *, tick_rate=50.0, amplitude=1.0, period_s=10.0,
base=100.0)``
    ``tick_rate`` batches a second, each holding one quote per symbol.
``await history(symbol, period_s, end_time, count, **config)``
    ``count`` OHLCV bars of the same wave (``period_s`` here is the bar's).
``await symbol_info(symbol, **config)``
    ``{'symbol', 'tick_size', 'lot_size'}``.

"""

from __future__ import annotations

import hashlib
import math
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import trio

import tractor_sampler
from tractor_sampler import DEFAULT_DTYPE, check_period

NAME = 'sine'
TICK_SIZE = 0.01
LOT_SIZE = 1.0
DECIMALS = 2  # of TICK_SIZE
#: every Nth quote of a symbol carries a trade
TRADE_EVERY = 5
#: a consumer further behind than this restarts the schedule from now
MAX_LAG_S = 1.0


# -- the plugin hook -----------------------------------------------------------
#
# Called once when tractor-sampler loads its backends.  Only *register* here
# (cheap, synchronous); the feed daemon calls the functions later, inside an
# actor it owns.  With no ``version=`` the listing shows this distribution's
# version (from its metadata).


@tractor_sampler.hookimpl
def tractor_sampler_register_backends(register: Any) -> None:
    register(
        NAME, stream_quotes=stream_quotes, history=history, symbol_info=symbol_info
    )


# -- config --------------------------------------------------------------------


@dataclass(frozen=True)
class Wave:
    """The price wave: ``base + amplitude * sin(2π t / period_s + phase)``."""

    amplitude: float = 1.0
    period_s: float = 10.0
    base: float = 100.0

    def price(self, symbol: str, t: float | np.ndarray) -> Any:
        """The (unrounded) price of ``symbol`` at epoch time(s) ``t``."""
        return self.base + self.amplitude * np.sin(
            2 * np.pi * t / self.period_s + phase(symbol)
        )


def phase(symbol: str) -> float:
    """The symbol's phase in [0, 2π).  From a real hash, not ``hash()``,
    which changes from one process to the next."""
    digest = hashlib.blake2b(symbol.encode(), digest_size=8).digest()
    return int.from_bytes(digest, 'big') / 2**64 * 2 * math.pi


def _number(
    name: str, value: Any, *, minimum: float = 0.0, strict: bool = True
) -> float:
    """``value`` as a finite float above (or, not ``strict``, at) ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f'{name} must be a number, not {value!r}')
    v = float(value)
    if not math.isfinite(v) or v < minimum or (strict and v == minimum):
        raise ValueError(
            f'{name} must be a finite number {">" if strict else ">="} {minimum}, not {value!r}'
        )
    return v


def _config(
    *,
    tick_rate: float = 50.0,
    amplitude: float = 1.0,
    period_s: float = 10.0,
    base: float = 100.0,
) -> tuple[float, Wave]:
    """Check the backend's config (every function takes the same keys, so
    one config dict serves them all) and return ``(tick_rate, wave)``."""
    rate = _number('tick_rate', tick_rate)
    wave = Wave(
        amplitude=_number('amplitude', amplitude, strict=False),
        period_s=_number('period_s', period_s),
        base=_number('base', base),
    )
    if wave.base - wave.amplitude <= TICK_SIZE:  # the bid must stay above 0
        raise ValueError(
            f'base ({base}) must exceed amplitude ({amplitude}) by more than one tick'
        )
    return rate, wave


def _check_symbol(symbol: Any) -> str:
    if not isinstance(symbol, str) or not symbol:
        raise ValueError(f'bad symbol {symbol!r}')
    return symbol


def _round(price: float) -> float:
    """``price`` on the tick grid, as a plain float (quotes travel as
    msgpack, which knows nothing of numpy scalars)."""
    return round(round(float(price) / TICK_SIZE) * TICK_SIZE, DECIMALS)


# -- quotes --------------------------------------------------------------------


def stream_quotes(
    symbols: Sequence[str],
    *,
    tick_rate: float = 50.0,
    amplitude: float = 1.0,
    period_s: float = 10.0,
    base: float = 100.0,
) -> AsyncIterator[dict[str, dict[str, Any]]]:
    """A plain function, not an ``async def`` generator: it checks the
    config *now*, so a bad config raises at the call rather than on the
    first iteration, and returns the async generator doing the work."""
    if isinstance(symbols, str):
        raise TypeError(
            f'symbols must be a list of strings, not the string {symbols!r}'
        )
    syms = [_check_symbol(s) for s in symbols]
    if not syms or len(set(syms)) != len(syms):
        raise ValueError(
            f'symbols must be a non-empty list without duplicates, not {symbols!r}'
        )
    rate, wave = _config(
        tick_rate=tick_rate, amplitude=amplitude, period_s=period_s, base=base
    )
    return _stream(syms, rate, wave)


class _Quoter:
    """One symbol's quotes: top of book around the wave, and a trade every
    ``TRADE_EVERY`` quotes (lifting the ask while the wave rises, hitting
    the bid while it falls)."""

    def __init__(self, symbol: str, wave: Wave) -> None:
        self.symbol = symbol
        self.wave = wave
        self.n = 0  # quotes so far
        self.prev: float | None = None  # the previous quote's mid
        self.last = 0.0  # the last trade's price (the first quote trades)
        self.volume = 0.0  # cumulative traded size

    def quote(self, now: float) -> dict[str, Any]:
        mid = _round(self.wave.price(self.symbol, now))
        bid, ask = _round(mid - TICK_SIZE), _round(mid + TICK_SIZE)
        bsize = (1 + self.n % 10) * LOT_SIZE
        asize = (1 + (self.n + 5) % 10) * LOT_SIZE
        ticks: list[dict[str, Any]] = [
            {'type': 'bid', 'price': bid, 'size': bsize},
            {'type': 'ask', 'price': ask, 'size': asize},
        ]
        if self.n % TRADE_EVERY == 0:
            rising = self.prev is None or mid >= self.prev
            self.last = ask if rising else bid
            self.volume += LOT_SIZE
            ticks.append(
                {'type': 'trade', 'price': self.last, 'size': LOT_SIZE, 'time': now}
            )
        self.prev = mid
        self.n += 1
        return {
            'last': self.last,
            'bid': bid,
            'ask': ask,
            'bsize': bsize,
            'asize': asize,
            'volume': self.volume,
            'time': now,
            'ticks': ticks,
        }


async def _stream(
    symbols: list[str], rate: float, wave: Wave
) -> AsyncIterator[dict[str, dict[str, Any]]]:
    quoters = {s: _Quoter(s, wave) for s in symbols}
    # quote times are wall-clock epoch seconds, read through trio's clock
    # (mapped onto the wall clock once), so they agree with the pacing
    offset = time.time() - trio.current_time()
    interval = 1.0 / rate
    start = trio.current_time()
    k = 0
    while True:
        # absolute deadlines (start + k * interval), never relative sleeps,
        # so the rate does not drift however long each batch takes
        deadline = start + k * interval
        now = trio.current_time()
        if now - deadline > MAX_LAG_S:  # far behind: skip, don't replay
            start, k, deadline = now, 0, now
        await trio.sleep_until(deadline)
        t = trio.current_time() + offset
        yield {s: q.quote(t) for s, q in quoters.items()}
        k += 1


# -- history and symbol info ---------------------------------------------------

#: samples of the wave per bar, for its high and low
_SAMPLES = 17


async def history(
    symbol: str,
    period_s: float,
    end_time: float,
    count: int,
    /,
    **config: Any,
) -> np.ndarray:
    """``count`` bars of ``period_s`` seconds in ``DEFAULT_DTYPE``, oldest
    first, on period boundaries, the last one ending at or before
    ``end_time``.  Each bar opens at the wave's price at its start and
    closes at its end (so it opens at the previous close); its high and low
    are the extremes of the wave sampled across it.

    The first four parameters are positional-only (the ``/``) so that
    ``config`` may hold this backend's own ``period_s`` (the wave's), which
    is not the bar's."""
    p = check_period(period_s)  # tractor-sampler's rule for periods
    _check_symbol(symbol)
    if isinstance(count, bool) or not isinstance(count, (int, np.integer)) or count < 0:
        raise ValueError(f'count must be an int >= 0, not {count!r}')
    end_time = _number('end_time', end_time, strict=False)
    _rate, wave = _config(**config)
    await trio.lowlevel.checkpoint()  # an async API should always checkpoint

    # the last bar ends on the last period boundary at or before end_time
    k_end = math.floor(end_time / p)
    if (k_end + 1) * p <= end_time:  # the division fell just short of a boundary
        k_end += 1
    starts = np.arange(k_end - count, k_end, dtype=np.int64) * p
    # the wave across each bar: row i samples [starts[i], starts[i] + p]
    samples = wave.price(
        symbol, starts[:, None] + np.linspace(0.0, p, _SAMPLES)[None, :]
    )
    samples = np.round(np.round(samples / TICK_SIZE) * TICK_SIZE, DECIMALS)

    bars = np.zeros(count, dtype=DEFAULT_DTYPE)
    bars['index'] = np.arange(count)
    bars['time'] = starts
    bars['open'] = samples[:, 0]
    bars['close'] = samples[:, -1]
    # open and close are samples too, so low <= min(o, c) and high >= max(o, c)
    bars['high'] = samples.max(axis=1)
    bars['low'] = samples.min(axis=1)
    # a made-up volume: one lot per tick the price travelled in the bar
    bars['volume'] = np.abs(np.diff(samples, axis=1)).sum(axis=1) / TICK_SIZE * LOT_SIZE
    bars['volume'] = np.round(bars['volume'])
    return bars


async def symbol_info(symbol: str, **config: Any) -> dict[str, Any]:
    """The symbol's details (the same for every symbol here)."""
    _check_symbol(symbol)
    _config(**config)
    await trio.lowlevel.checkpoint()
    return {'symbol': symbol, 'tick_size': TICK_SIZE, 'lot_size': LOT_SIZE}
