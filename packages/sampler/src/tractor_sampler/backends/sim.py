"""
The simulated backend, ``sim``: seeded, deterministic, no network.  The
default backend everywhere.

``stream_quotes(symbols, *, seed=0, tick_rate=100.0, trade_prob=0.1,
start_price=100.0, tick_size=0.01, lot_size=1.0, anchored=True,
clock=None)``

- yields one ``{symbol: quote}`` batch holding *every* symbol,
  ``tick_rate`` batches per second (so each symbol gets ``tick_rate``
  quotes per second), paced on absolute trio deadlines
  (``trio.sleep_until``), so it never drifts; quotes already due (the
  timer woke late, or the consumer fell behind) go out back to back, a
  checkpoint every :data:`MAX_BURST` of them, unless the consumer is more
  than a second behind: then the schedule restarts from now (the missed
  quotes are skipped, not replayed);
- a quote: ``last``, ``bid``, ``ask``, ``bsize``, ``asize``, ``volume``
  (cumulative traded size), ``time`` and ``ticks``: ``bid``, ``bsize``,
  ``ask``, ``asize`` ticks (``price``, ``size``) and, with probability
  ``trade_prob``, a ``trade`` tick (``price``, ``size``, ``time``) at the
  bid or the ask;
- each symbol starts where its history ends (:func:`path_price` at the
  start time; with ``anchored=False``, at ``start_price`` itself) and
  walks from there as volatile per second as its history;
- the values depend only on ``seed``, the symbol and, when anchored, the
  start time (one ``random.Random`` per symbol, seeded from
  ``f'{seed}:{symbol}'``); the times come from ``clock()`` if given, else
  trio's clock shifted to the wall clock once at the start (so it runs
  under trio's ``MockClock``).

``await history(symbol, period_s, end_time, count, *, seed=0,
start_price=100.0, tick_size=0.01)`` returns ``count`` bars in
``DEFAULT_DTYPE``, oldest first, aligned to the period, the last one ending
at the period boundary at or before ``end_time``.  Bars open and close on
one price path per ``(seed, symbol)``, a function of time (a multi-scale
value noise that moves like a random walk): pages fetched with different
``end_time`` agree where they overlap, each bar opens at the previous
bar's close, and 1 s and 1 min bars agree at their common boundaries.

``await symbol_info(symbol, *, tick_size=0.01, lot_size=1.0)`` returns
``{'symbol', 'tick_size', 'lot_size', 'asset_type': 'sim'}``.

A symbol is 1 to 32 letters, digits and ``. _ - / :``; anything else (a
space, ``'AAA,BBB'``) is refused with a ``ValueError`` naming it.

"""

from __future__ import annotations

import hashlib
import math
import random
import re
import time
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

import numpy as np
import trio

from .._schedule import check_period
from ..hookspecs import Register, hookimpl
from ..shm import DEFAULT_DTYPE

NAME = 'sim'
#: a consumer further behind than this restarts the schedule from now
MAX_LAG_S = 1.0
#: quotes that are already due go out back to back, without a checkpoint,
#: up to this many (as a socket read hands a real backend several messages
#: per wake-up); then one checkpoint lets other tasks run
MAX_BURST = 64


@hookimpl
def tractor_sampler_register_backends(register: Register) -> None:
    from .. import __version__

    register(
        NAME,
        stream_quotes=stream_quotes,
        history=history,
        symbol_info=symbol_info,
        version=__version__,
    )


def _check_positive(name: str, value: float) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise TypeError(f'{name} must be a number, not {value!r}') from None
    if not math.isfinite(v) or v <= 0:
        raise ValueError(f'{name} must be a finite number > 0, not {value!r}')
    return v


#: what a simulated symbol may look like: 1 to 32 letters, digits and
#: ``. _ - / :`` (``AAA``, ``BTC/USD``, ``ES.F``); a space or a comma is a
#: typo (``'AAA,BBB'`` is two symbols), refused rather than simulated
_SYMBOL = re.compile(r'[A-Za-z0-9._\-/:]{1,32}')


def _check_symbol(symbol: object) -> str:
    if not isinstance(symbol, str) or not _SYMBOL.fullmatch(symbol):
        raise ValueError(
            f'bad symbol {symbol!r}: a symbol is 1 to 32 letters, digits and . _ - / :'
        )
    return symbol


def _check_symbols(symbols: Sequence[str]) -> list[str]:
    if isinstance(symbols, str):
        raise TypeError(
            f'symbols must be a list of strings, not the string {symbols!r}'
        )
    syms = list(symbols)
    if not syms:
        raise ValueError('no symbols given')
    for s in syms:
        _check_symbol(s)
    if len(set(syms)) != len(syms):
        raise ValueError(f'duplicate symbols in {syms!r}')
    return syms


def _decimals(tick_size: float) -> int:
    return max(0, min(12, -math.floor(math.log10(tick_size) + 1e-9) + 1))


def stream_quotes(
    symbols: Sequence[str],
    *,
    seed: int = 0,
    tick_rate: float = 100.0,
    trade_prob: float = 0.1,
    start_price: float = 100.0,
    tick_size: float = 0.01,
    lot_size: float = 1.0,
    anchored: bool = True,
    clock: Callable[[], float] | None = None,
) -> AsyncIterator[dict[str, dict[str, Any]]]:
    """Validate the config (raising here, not on the first iteration) and
    return the quote stream; see the module docstring."""
    syms = _check_symbols(symbols)
    rate = _check_positive('tick_rate', tick_rate)
    if not 0.0 <= float(trade_prob) <= 1.0:
        raise ValueError(f'trade_prob must be in [0, 1], not {trade_prob!r}')
    price = _check_positive('start_price', start_price)
    tick = _check_positive('tick_size', tick_size)
    lot = _check_positive('lot_size', lot_size)
    if price < tick:
        raise ValueError(f'start_price {price} is below one tick ({tick})')
    return _stream(
        syms,
        int(seed),
        rate,
        float(trade_prob),
        price,
        tick,
        lot,
        bool(anchored),
        clock,
    )


class _Book:
    """One symbol's simulated book; prices in ticks."""

    def __init__(
        self, seed: int, symbol: str, price: float, tick: float, lot: float, rate: float
    ) -> None:
        self.rng = random.Random(f'{seed}:{symbol}')
        self.tick = tick
        self.lot = lot
        self.dec = _decimals(tick)
        self.mid = max(2.0, price / tick)  # in ticks, a float: it walks in small steps
        # the log-price move per quote: as volatile per second as history
        self.step = _SIGMA / math.sqrt(rate)
        self.last = round(round(self.mid) * tick, self.dec)
        self.volume = 0.0

    def px(self, ticks: int) -> float:
        return round(ticks * self.tick, self.dec)

    def quote(self, now: float, trade_prob: float) -> dict[str, Any]:
        rng = self.rng
        self.mid = max(2.0, self.mid * math.exp(rng.gauss(0.0, self.step)))
        mid = round(self.mid)
        half = rng.randint(1, 2)
        bid_t, ask_t = max(1, mid - half), mid + half
        bid, ask = self.px(bid_t), self.px(ask_t)
        bsize = rng.randint(1, 100) * self.lot
        asize = rng.randint(1, 100) * self.lot
        ticks: list[dict[str, Any]] = [
            {'type': 'bid', 'price': bid, 'size': bsize},
            {'type': 'bsize', 'price': bid, 'size': bsize},
            {'type': 'ask', 'price': ask, 'size': asize},
            {'type': 'asize', 'price': ask, 'size': asize},
        ]
        if rng.random() < trade_prob:
            price = ask if rng.random() < 0.5 else bid
            size = rng.randint(1, 20) * self.lot
            self.last = price
            self.volume += size
            ticks.append({'type': 'trade', 'price': price, 'size': size, 'time': now})
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
    symbols: list[str],
    seed: int,
    rate: float,
    trade_prob: float,
    price: float,
    tick: float,
    lot: float,
    anchored: bool,
    clock: Callable[[], float] | None,
) -> AsyncIterator[dict[str, dict[str, Any]]]:
    if clock is None:
        offset = time.time() - trio.current_time()

        def clock() -> float:
            return trio.current_time() + offset

    t0 = clock()
    books = {
        s: _Book(
            seed,
            s,
            path_price(s, t0, seed=seed, start_price=price) if anchored else price,
            tick,
            lot,
            rate,
        )
        for s in symbols
    }

    interval = 1.0 / rate
    start = trio.current_time()
    k = 0
    burst = 0
    while True:
        deadline = start + k * interval
        now = trio.current_time()
        if now - deadline > MAX_LAG_S:  # far behind: restart the schedule
            start, k, deadline = now, 0, now
        if deadline > now:
            await trio.sleep_until(deadline)
            burst = 0
        elif burst >= MAX_BURST:
            await trio.lowlevel.checkpoint()
            burst = 0
        burst += 1
        t = clock()
        yield {s: b.quote(t, trade_prob) for s, b in books.items()}
        k += 1


# -- history ---------------------------------------------------------------

_OCTAVES = 23  # wavelengths of 1 s .. 2**22 s (about 48 days)
#: log-price move per sqrt-second (roughly): 1 s bars move ~0.03 %, 1 min
#: bars ~0.25 %, a day ~9 %
_SIGMA = 0.0003


def _key(*parts: object) -> np.uint64:
    h = hashlib.blake2b(':'.join(map(str, parts)).encode(), digest_size=8).digest()
    return np.uint64(int.from_bytes(h, 'little'))


def _uniform(key: np.uint64, n: np.ndarray) -> np.ndarray:
    """splitmix64 of ``key + n`` mapped to [-1, 1); vectorised, pure."""
    with np.errstate(over='ignore'):
        z = n.astype(np.int64).astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15) + key
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z = z ^ (z >> np.uint64(31))
    return (z >> np.uint64(11)).astype(np.float64) / float(1 << 53) * 2.0 - 1.0


def _log_price(key: np.uint64, t: np.ndarray) -> np.ndarray:
    """Log-price offset at times ``t`` (seconds): value noise summed over
    octaves with amplitude ~ sqrt(wavelength), like a random walk.  One
    path per (seed, symbol), whatever the bar period, so 1 s and 1 min
    history agree at their common boundaries, and the live stream starts
    where they end."""
    t = np.asarray(t, dtype=np.float64)
    out = np.zeros(t.shape)
    for o in range(_OCTAVES):
        wl = float(1 << o)
        x = t / wl
        lo = np.floor(x)
        frac = x - lo
        lo_i = lo.astype(np.int64)
        a = _uniform(key + np.uint64(o * 7919), lo_i)
        b = _uniform(key + np.uint64(o * 7919), lo_i + 1)
        out += (a + (b - a) * frac) * (_SIGMA * math.sqrt(wl))
    return out


def path_price(
    symbol: str, t: float, *, seed: int = 0, start_price: float = 100.0
) -> float:
    """The simulated price of ``symbol`` at wall time ``t``: what history
    bars open and close on, and where a live stream starts."""
    return float(
        start_price * math.exp(_log_price(_key(seed, symbol), np.array([t]))[0])
    )


async def history(
    symbol: str,
    period_s: float,
    end_time: float,
    count: int,
    *,
    seed: int = 0,
    start_price: float = 100.0,
    tick_size: float = 0.01,
) -> np.ndarray:
    """``count`` deterministic OHLCV bars ending at or before ``end_time``;
    see the module docstring."""
    p = check_period(period_s)
    _check_symbol(symbol)
    if isinstance(count, bool) or not isinstance(count, (int, np.integer)) or count < 0:
        raise ValueError(f'count must be an int >= 0, not {count!r}')
    if not math.isfinite(end_time):
        raise ValueError(f'end_time must be finite, not {end_time!r}')
    price = _check_positive('start_price', start_price)
    tick = _check_positive('tick_size', tick_size)
    await trio.lowlevel.checkpoint()

    count = int(count)
    k_end = math.floor(end_time / p + 1e-9)  # the boundary the last bar ends at
    k = np.arange(k_end - count, k_end + 1, dtype=np.int64)  # count + 1 boundaries
    key = _key(seed, symbol)
    dec = _decimals(tick)
    edges = (
        np.round(np.maximum(price * np.exp(_log_price(key, k * p)), tick) / tick) * tick
    )
    opens, closes = edges[:-1], edges[1:]
    body_hi = np.maximum(opens, closes)
    body_lo = np.minimum(opens, closes)
    ks = k[:-1]
    pk = _key(seed, symbol, repr(p))  # wicks and volumes: per period
    wick = opens * _SIGMA * math.sqrt(p) * 0.5
    up = np.abs(_uniform(pk + np.uint64(1), ks)) * wick
    down = np.abs(_uniform(pk + np.uint64(2), ks)) * wick
    highs = np.round((body_hi + up) / tick) * tick
    lows = np.maximum(np.round((body_lo - down) / tick) * tick, tick)

    bars = np.zeros(count, dtype=DEFAULT_DTYPE)
    bars['index'] = np.arange(count)
    bars['time'] = ks * p
    bars['open'] = np.round(opens, dec)
    bars['close'] = np.round(closes, dec)
    bars['high'] = np.round(np.maximum(highs, body_hi), dec)
    bars['low'] = np.round(np.minimum(lows, body_lo), dec)
    bars['volume'] = np.floor((_uniform(pk + np.uint64(3), ks) + 1.0) * 25.0 * p)
    return bars


async def symbol_info(
    symbol: str,
    *,
    tick_size: float = 0.01,
    lot_size: float = 1.0,
) -> dict[str, Any]:
    """The simulated symbol's details."""
    _check_symbol(symbol)
    await trio.lowlevel.checkpoint()
    return {
        'symbol': symbol,
        'tick_size': _check_positive('tick_size', tick_size),
        'lot_size': _check_positive('lot_size', lot_size),
        'asset_type': 'sim',
    }
