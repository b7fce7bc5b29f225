"""Argument checks shared by the guidance modules and the pipelines."""

from __future__ import annotations

import math
from numbers import Real


def finite_float(value: object, name: str) -> float:
    """``value`` as a float; TypeError when it is not a real number, ValueError when NaN or infinite."""
    if isinstance(value, bool) or not isinstance(value, Real):
        raise TypeError(f"`{name}` must be a number, got {type(value).__name__} {value!r}.")
    number = float(value)
    if not math.isfinite(number):
        raise ValueError(f"`{name}` must be a finite number, got {number}.")
    return number


def unit_interval(value: object, name: str) -> float:
    """``value`` as a float in ``[0, 1]``, else a ValueError naming ``name``."""
    number = finite_float(value, name)
    if not 0.0 <= number <= 1.0:
        raise ValueError(f"`{name}` must lie in [0, 1], got {number}.")
    return number


def positive_int_or_none(value: object, name: str) -> int | None:
    """``value`` when it is ``None`` or an int >= 1; TypeError or ValueError naming ``name`` otherwise."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"`{name}` must be an int or None, got {type(value).__name__} {value!r}.")
    if value < 1:
        raise ValueError(f"`{name}` must be at least 1 (or None), got {value}.")
    return value
