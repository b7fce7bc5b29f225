"""Checks of the values a batch run takes (seeds, sizes, step counts, scales).

Every function accepts the value as JSON gives it or as text (a CSV cell, a flag) and raises a TypeError (a
value of the wrong type) or a ValueError whose message names ``name``, the field or argument it came from.
"""

from __future__ import annotations

import re

from negguide.checks import finite_float, unit_interval

MAX_SEED = 2**64 - 1
_RANGE = re.compile(r"(\d+)-(\d+)")


def integer(value: object, name: str) -> int:
    """``value`` as an int: an int, or text holding one."""
    if isinstance(value, str):
        try:
            return int(value.strip())
        except ValueError:
            raise ValueError(f"`{name}` must be a whole number, got {value!r}.") from None
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"`{name}` must be a whole number, got {value!r}.")
    return value


def positive_integer(value: object, name: str) -> int:
    """``value`` as an int >= 1."""
    number = integer(value, name)
    if number < 1:
        raise ValueError(f"`{name}` must be at least 1, got {number}.")
    return number


def seed(value: object, name: str) -> int:
    """A seed for `torch.Generator.manual_seed`: a whole number in ``[0, 2**64 - 1]``."""
    number = integer(value, name)
    if number < 0:
        raise ValueError(f"`{name}`: seed {number} is negative; seeds are whole numbers from 0 to 2**64 - 1.")
    if number > MAX_SEED:
        raise ValueError(f"`{name}`: seed {number} is larger than 2**64 - 1.")
    return number


def seeds(value: object, name: str) -> tuple[int, ...]:
    """One or more distinct seeds: a number, a list of numbers, or text such as ``"0,1,2"`` or ``"0-7"``
    (an inclusive range)."""
    if isinstance(value, str):
        parts: list[object] = []
        for token in value.split(","):
            token = token.strip()
            match = _RANGE.fullmatch(token)
            if match:
                first, last = int(match[1]), int(match[2])
                if first > last:
                    raise ValueError(f"`{name}`: range {token!r} runs backwards; write it as {last}-{first}.")
                parts.extend(range(first, last + 1))
            else:
                parts.append(token)
    elif isinstance(value, list):
        parts = list(value)
    else:
        parts = [value]
    result = tuple(seed(part, name) for part in parts)
    if not result:
        raise ValueError(f"`{name}` must name at least one seed.")
    repeated = sorted({item for item in result if result.count(item) > 1})
    if repeated:
        raise ValueError(f"`{name}` lists seed {repeated[0]} more than once.")
    return result


def side(value: object, name: str) -> int:
    """An image width or height in pixels: a positive multiple of 8."""
    number = positive_integer(value, name)
    if number % 8:
        raise ValueError(f"`{name}` must be divisible by 8, got {number} (try {max(8, number // 8 * 8)}).")
    return number


def size(value: object, name: str) -> tuple[int, int]:
    """``(width, height)`` from ``"WxH"``, or one number for a square."""
    text = str(value).strip().lower()
    width, _, height = text.partition("x")
    if not width or (_ and not height):
        raise ValueError(f"`{name}` must be WIDTHxHEIGHT (e.g. 512x512) or one number, got {value!r}.")
    return side(width, name), side(height or width, name)


def number(value: object, name: str) -> float:
    """A finite float."""
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            raise ValueError(f"`{name}` must be a number, got {value!r}.") from None
    return finite_float(value, name)


def fraction(value: object, name: str) -> float:
    """A float in ``[0, 1]``."""
    return unit_interval(number(value, name), name)
