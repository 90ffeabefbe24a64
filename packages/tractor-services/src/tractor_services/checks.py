"""
Argument checks shared by tractor-services, feedbus and tractor-sampler,
so that one kind of bad input is refused in one way everywhere: before
anything starts, with one line naming the argument and its value.

"""

from __future__ import annotations

import math
from typing import Literal, overload


@overload
def check_positive(
    name: str,
    value: object,
    *,
    unit: str = '',
    allow_none: Literal[False] = False,
) -> float: ...
@overload
def check_positive(
    name: str,
    value: object,
    *,
    unit: str = '',
    allow_none: bool,
) -> float | None: ...


def check_positive(
    name: str,
    value: object,
    *,
    unit: str = '',
    allow_none: bool = False,
) -> float | None:
    """``value`` if it is a positive, finite number (an ``int`` or a
    ``float``), else ``ValueError`` naming ``name`` and the value.

    Refused: ``bool`` (``True`` is no duration), strings (even ``'1.5'``:
    a number that arrived as text is a caller's bug), ``nan``, ``inf``,
    zero and below.  ``None`` passes through when ``allow_none`` (an
    optional setting left out).  ``unit`` names what the number counts,
    for the message: ``'seconds'``, ``'Hz'``.

    The value is returned as given (an ``int`` stays an ``int``)."""
    if value is None and allow_none:
        return None
    of = f' of {unit}' if unit else ''
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(
            f'{name}={value!r} must be a positive number{of}, not a {type(value).__name__}'
        )
    if math.isnan(value) or value <= 0:
        raise ValueError(f'{name}={value!r} must be a positive number{of}')
    if math.isinf(value):
        raise ValueError(f'{name}={value!r} must be a positive number{of}, and finite')
    return value


__all__ = ['check_positive']
