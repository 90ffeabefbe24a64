"""
What a backend's output must look like, checked the same way by the
conformance kit (:mod:`tractor_sampler.testing`, in a backend's own tests)
and by the feed daemon (on every live call, so a backend that breaks its
contract is named, with the hook, instead of failing deep inside numpy).
Each problem says how to fix the backend: :func:`check_bars` raises a
:class:`BarsProblem`; :func:`quote_problems` and
:func:`symbol_info_problems` list what is wrong with a batch of quotes or
a symbol's info.  Both users call these same functions (the kit fails a
test with them, the feed daemon refuses or fails the topic with them, in
one line naming the backend and the hook).

"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator
from typing import Any, TypeGuard

import msgspec
import numpy as np

from feedbus import CLEARING_TICK_TYPES

from .shm import DEFAULT_DTYPE

_BARS_EXAMPLE = 'np.zeros(count, dtype=tractor_sampler.shm.DEFAULT_DTYPE), filled in'


class ContractBreach(ValueError):
    """What a backend returned or yielded breaks its hook's contract (the
    message names the backend, the call and how to fix it)."""


class BarsProblem(ContractBreach):
    """The bars a backend's ``history`` returned break the contract."""


#: a symbol info the contract accepts
SYMBOL_INFO_EXAMPLE = "{'symbol': 'AAA', 'tick_size': 0.01, 'lot_size': 1.0}"


def _is_number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def _is_finite(x: Any) -> TypeGuard[int | float]:
    return _is_number(x) and math.isfinite(x)


def example_batch(symbols: Any = ('AAA',)) -> str:
    """A well-formed batch, for the messages."""
    sym = list(symbols)[0] if symbols else 'AAA'
    return (
        f"{{{sym!r}: {{'last': 1.0, 'ticks': [{{'type': 'trade', 'price': 1.0, "
        f"'size': 2.0}}]}}}}"
    )


def quote_problems(batch: Any, symbols: Any) -> list[str]:
    """What is wrong with one batch ``stream_quotes(symbols, ...)``
    yielded, each with its fix (empty: nothing)."""
    if not isinstance(batch, dict):
        return [
            f'the batch is a {type(batch).__name__}; yield dicts mapping each '
            f'symbol to a quote dict, e.g. {example_batch(symbols)}'
        ]
    problems: list[str] = []
    wanted = set(symbols)
    for sym, quote in batch.items():
        if sym not in wanted:
            problems.append(
                f'key {sym!r} is not a requested symbol ({list(symbols)}); '
                f'key batches by the symbols stream_quotes was called with'
            )
            continue
        if not isinstance(quote, dict):
            problems.append(
                f'the quote for {sym!r} is a {type(quote).__name__}; make each '
                f"quote a dict of fields, e.g. {{'last': 1.0, 'bid': 0.99, 'ask': "
                f'1.01}}'
            )
            continue
        problems += [f'{sym!r}: {p}' for p in field_problems(quote)]
    return problems


def field_problems(quote: dict[Any, Any]) -> list[str]:
    """What is wrong with one quote's fields."""
    problems: list[str] = []
    bad_keys = [k for k in quote if not isinstance(k, str)]
    if bad_keys:
        problems.append(
            f'field names {bad_keys!r} are not str; name fields with str keys'
        )
    for key, value in quote.items():
        try:
            msgspec.msgpack.encode(value)
        except (TypeError, ValueError, OverflowError) as err:
            problems.append(
                f'field {key!r} = {value!r} is not msgpack-encodable ({err}); '
                f'quotes travel between actors as msgpack: use plain str, int, '
                f'float, bool, None, list and dict values (float() numpy scalars, '
                f'.tolist() arrays)'
            )
    if 'time' in quote and not (_is_finite(quote['time']) and quote['time'] > 0):
        problems.append(
            f"'time' = {quote['time']!r}; make it a finite float > 0: epoch "
            f'seconds (time.time())'
        )
    if 'ticks' in quote:
        ticks = quote['ticks']
        if not isinstance(ticks, (list, tuple)):
            problems.append(
                f"'ticks' is a {type(ticks).__name__}; make it a list of tick "
                f"dicts, e.g. [{{'type': 'trade', 'price': 1.0, 'size': 2.0}}]"
            )
        else:
            for i, tick in enumerate(ticks):
                problems += [f'tick #{i}: {p}' for p in tick_problems(tick)]
    return problems


def tick_problems(tick: Any) -> list[str]:
    """What is wrong with one tick of a quote's ``'ticks'``."""
    if not isinstance(tick, dict):
        return [
            f"is a {type(tick).__name__}; make each tick a dict, e.g. {{'type': "
            f"'trade', 'price': 1.0, 'size': 2.0}}"
        ]
    problems: list[str] = []
    kind = tick.get('type')
    if not isinstance(kind, str):
        problems.append(
            f"{'has no' if 'type' not in tick else 'has a non-str'} 'type' ({tick!r}); "
            f"give every tick a str 'type' (e.g. 'bid', 'ask', or one of "
            f'{sorted(CLEARING_TICK_TYPES)} for trades, which are folded into bars)'
        )
    price = tick.get('price')
    if not _is_finite(price):
        problems.append(
            f"'price' is {price!r} ({tick!r}); give every tick a finite int or float 'price'"
        )
    elif kind in CLEARING_TICK_TYPES and price <= 0:
        problems.append(
            f'a {kind!r} tick has price {price!r}; trades must have a price > 0'
        )
    size = tick.get('size')
    if not (_is_finite(size) and size >= 0):
        problems.append(
            f"'size' is {size!r} ({tick!r}); give every tick a finite 'size' >= 0"
        )
    if 'time' in tick and not (_is_finite(tick['time']) and tick['time'] > 0):
        problems.append(
            f"'time' is {tick['time']!r}; make it a finite float > 0: epoch seconds"
        )
    return problems


def symbol_info_problems(info: Any) -> list[str]:
    """What is wrong with what ``symbol_info`` returned: a dict with a
    non-empty str ``symbol`` and finite ``tick_size`` and ``lot_size`` >
    0, msgpack-encodable (empty: nothing)."""
    if not isinstance(info, dict):
        return [
            f'it is a {type(info).__name__}; return a dict, e.g. {SYMBOL_INFO_EXAMPLE}'
        ]
    problems: list[str] = []
    sym = info.get('symbol')
    if not isinstance(sym, str) or not sym:
        problems.append(
            f"'symbol' is {sym!r}; give the symbol's name as a non-empty str"
        )
    for key in ('tick_size', 'lot_size'):
        value = info.get(key)
        if not (_is_finite(value) and value > 0):
            problems.append(
                f'{key!r} is {value!r}; give the smallest price (tick_size) or '
                f'size (lot_size) increment as a finite number > 0'
            )
    try:
        msgspec.msgpack.encode(info)
    except (TypeError, ValueError, OverflowError) as err:
        problems.append(
            f'it is not msgpack-encodable ({err}); it travels between actors: use '
            f'plain str, int, float, bool, None, list and dict values'
        )
    return problems


def check_bars(
    bars: Any,
    call: str,
    period: float,
    end_time: float,
    *,
    count: int | None = None,
    exact_end: bool = True,
) -> float:
    """Check ``bars`` (what ``call`` returned, for ``period`` s bars ending
    at or before ``end_time``): a 1-d numpy structured array with the
    fields of ``DEFAULT_DTYPE``, numeric, exactly ``count`` bars (if
    given), oldest first, one per period on the period's boundaries,
    finite, O/H/L/C consistent, volume >= 0, none ending after
    ``end_time`` and (``exact_end``) the last ending at the last boundary
    before it.  Returns that boundary (where the open bar starts); raises
    :class:`BarsProblem` naming the first problem."""
    example = _BARS_EXAMPLE
    if not isinstance(bars, np.ndarray) or bars.dtype.names is None:
        raise BarsProblem(
            f'{call} returned {type(bars).__name__}'
            + (f' of dtype {bars.dtype}' if isinstance(bars, np.ndarray) else '')
            + f'; return a numpy structured array: {example}.'
        )
    names = bars.dtype.names
    assert DEFAULT_DTYPE.names is not None
    missing = [f for f in DEFAULT_DTYPE.names if f not in names]
    if missing:
        raise BarsProblem(
            f'{call} returned bars without the fields {missing} (it has '
            f'{list(names)}); return the fields of DEFAULT_DTYPE: {example}.'
        )
    not_numeric = [f for f in DEFAULT_DTYPE.names if bars.dtype[f].kind not in 'iuf']
    if not_numeric:
        raise BarsProblem(
            f'{call}: fields {not_numeric} are not numeric '
            f'({[str(bars.dtype[f]) for f in not_numeric]}); use the dtypes of '
            f'DEFAULT_DTYPE: {example}.'
        )
    if bars.ndim != 1 or (count is not None and len(bars) != count):
        raise BarsProblem(
            f'{call} returned {bars.shape} bars; return a 1-d array of exactly '
            f'count={count} bars: the latest complete ones ending '
            f'at or before end_time, oldest first (fill gaps with flat bars).'
        )
    times = bars['time'].astype(float)
    if not np.isfinite(times).all():
        raise BarsProblem(
            f"{call}: 'time' holds non-finite values; give each bar its start in epoch seconds."
        )
    if len(times) > 1:
        steps = np.diff(times)
        bad = np.flatnonzero(np.abs(steps - period) > 1e-6)
        if len(bad):
            i = int(bad[0])
            order = 'oldest first, ' if steps[i] <= 0 else ''
            raise BarsProblem(
                f'{call}: bar #{i + 1} starts {steps[i]:g} s after bar #{i} '
                f'({float(times[i])!r} -> {float(times[i + 1])!r}); bars must be {order}one per '
                f'period, each starting exactly {period:g} s after the previous '
                f'(fill gaps with flat bars: O=H=L=C=previous close, volume 0).'
            )
    off = np.abs(times / period - np.round(times / period))
    bad = np.flatnonzero(off > 1e-6)
    if len(bad):
        i = int(bad[0])
        raise BarsProblem(
            f'{call}: bar #{i} starts at {float(times[i])!r}, not on a {period:g} s '
            f'period boundary; bar times must be multiples of the period '
            f'(e.g. math.floor(t / period_s) * period_s), as samplerd steps '
            f'the buffers on wall-clock boundaries.'
        )
    open_bar = math.floor(end_time / period + 1e-9) * period
    if len(times):
        last_end = float(times[-1]) + period
        if last_end > end_time + 1e-6:
            raise BarsProblem(
                f'{call}: the last bar (at {float(times[-1])!r}) ends at {last_end!r}, '
                f'after end_time; return only bars that end at or before end_time '
                f"(the bar in progress is the feed daemon's)."
            )
        if abs(last_end - open_bar) > 1e-6:
            raise BarsProblem(
                f'{call}: the last bar (at {float(times[-1])!r}) ends at {last_end!r}, '
                f'not at the last period boundary before end_time ({open_bar!r}), '
                f"where the feed daemon's open bar starts: it prepends history "
                f'right before that bar, so end with the last complete bar '
                f'(starting at {open_bar - period!r}; fill quiet periods with flat '
                f'bars: O=H=L=C=previous close, volume 0).'
            )
    for f in ('open', 'high', 'low', 'close', 'volume'):
        col = bars[f].astype(float)
        if not np.isfinite(col).all():
            i = int(np.flatnonzero(~np.isfinite(col))[0])
            raise BarsProblem(
                f'{call}: bar #{i} has {f} = {float(col[i])!r}; give every bar finite prices and volume.'
            )
    o, h, lo, c, v = (
        bars[f].astype(float) for f in ('open', 'high', 'low', 'close', 'volume')
    )
    for what, bad_rows in (
        ('low > min(open, close)', lo > np.minimum(o, c)),
        ('high < max(open, close)', h < np.maximum(o, c)),
        ('volume < 0', v < 0),
    ):
        if bad_rows.any():
            i = int(np.flatnonzero(bad_rows)[0])
            raise BarsProblem(
                f'{call}: bar #{i} has {what} (open={float(o[i])!r}, high={float(h[i])!r}, '
                f'low={float(lo[i])!r}, close={float(c[i])!r}, volume={float(v[i])!r}); the low must be '
                f'the lowest price of the bar, the high the highest, the volume '
                f'the size traded (>= 0).'
            )
    return open_bar


def check_symbol_info(info: Any, call: str) -> None:
    """:func:`symbol_info_problems` as one :class:`ContractBreach` line
    naming ``call`` (the feed daemon refuses the topic with it)."""
    problems = symbol_info_problems(info)
    if problems:
        raise ContractBreach(
            f'{call} returned {info!r}, which breaks the contract: '
            + '; '.join(problems)
        )


#: how many batches of each quote stream the feed daemon checks with
#: :func:`quote_problems` (the first ones: the subscribers' first quotes
#: and the shape of the rest; checking every batch would cost the hot path)
FIRST_BATCHES_CHECKED = 10


async def check_first_batches(
    source: Any, symbols: list[str], call: str, n: int = FIRST_BATCHES_CHECKED
) -> AsyncIterator[Any]:
    """The first ``n`` batches of ``source``, each checked with
    :func:`quote_problems` (a :class:`ContractBreach` naming ``call`` for
    the first bad one); it leaves ``source`` open for the caller to read
    on from where it stops."""
    for i in range(n):
        try:
            batch = await source.__anext__()
        except StopAsyncIteration:
            return
        problems = quote_problems(batch, symbols)
        if problems:
            more = f' (and {len(problems) - 3} more)' if len(problems) > 3 else ''
            raise ContractBreach(
                f'{call} yielded a batch (#{i}) that breaks the quote contract: '
                + '; '.join(problems[:3])
                + more
            )
        yield batch
