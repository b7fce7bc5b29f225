"""Checks of the values a batch run takes (seeds, sizes, step counts, scales).

Every function accepts the value as JSON gives it or as text (a CSV cell, a flag) and raises a TypeError (a
value of the wrong type) or a ValueError whose message names ``name``, the field or argument it came from.
"""

from __future__ import annotations

import re
from bisect import bisect_right
from collections.abc import Iterable, Iterator, Sequence
from itertools import accumulate, chain
from typing import overload

from negguide.checks import finite_float, unit_interval
from negguide.memory import MemoryBudget, parse_budget

MAX_SEED = 2**64 - 1
NO_BUDGET = "none"
"""The ``--memory-budget`` that turns splitting off."""
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


class Seeds(Sequence[int]):
    """Distinct seeds in the order given, kept as ranges: ``0-100000000`` takes no more memory than ``0-3``.

    Equal to any sequence of the same seeds in the same order, e.g. ``Seeds((range(0, 3),)) == (0, 1, 2)``.
    """

    __slots__ = ("_ends", "_ranges", "_sorted")

    def __init__(self, ranges: Iterable[range]) -> None:
        merged: list[range] = []
        for part in ranges:
            if part.step != 1 or not part:
                raise ValueError(f"`ranges` must be non-empty ranges of step 1, got {part!r}.")
            if merged and merged[-1].stop == part.start:
                merged[-1] = range(merged[-1].start, part.stop)
            else:
                merged.append(part)
        self._ranges = tuple(merged)
        self._ends = tuple(accumulate(len(part) for part in merged))
        self._sorted = sorted((part.start, part.stop) for part in merged)

    @property
    def ranges(self) -> tuple[range, ...]:
        """The seeds as consecutive runs, in order."""
        return self._ranges

    def __len__(self) -> int:
        return self._ends[-1] if self._ends else 0

    @overload
    def __getitem__(self, index: int) -> int: ...

    @overload
    def __getitem__(self, index: slice) -> tuple[int, ...]: ...

    def __getitem__(self, index: int | slice) -> int | tuple[int, ...]:
        if isinstance(index, slice):
            return tuple(self[position] for position in range(*index.indices(len(self))))
        if index < 0:
            index += len(self)
        if not 0 <= index < len(self):
            raise IndexError(f"seed index {index} out of range for {len(self)} seeds.")
        part = bisect_right(self._ends, index)
        return self._ranges[part][index - (self._ends[part - 1] if part else 0)]

    def __iter__(self) -> Iterator[int]:
        return chain.from_iterable(self._ranges)

    def __contains__(self, value: object) -> bool:
        if not isinstance(value, int):
            return False
        position = bisect_right(self._sorted, (value, MAX_SEED + 2)) - 1
        return position >= 0 and value < self._sorted[position][1]

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Seeds):
            return self._ranges == other._ranges
        if isinstance(other, (tuple, list)):
            return len(other) == len(self) and all(a == b for a, b in zip(self, other))
        return NotImplemented

    def __hash__(self) -> int:
        return hash(self._ranges)

    def __repr__(self) -> str:
        return f"Seeds({', '.join(_range_text(part) for part in self._ranges)})"

    def repeated(self) -> int | None:
        """The smallest seed given more than once, or ``None``."""
        reach = -1
        for start, stop in self._sorted:
            if start < reach:
                return start
            reach = max(reach, stop)
        return None


def seeds(value: object, name: str) -> Seeds:
    """One or more distinct seeds: a number, a list of numbers, or text such as ``"0,1,2"`` or ``"0-7"``
    (an inclusive range). Ranges stay ranges (`Seeds`), however long."""
    if isinstance(value, str):
        parts = [_seed_range(token.strip(), name) for token in value.split(",")]
    elif isinstance(value, list):
        parts = [_single(part, name) for part in value]
    else:
        parts = [_single(value, name)]
    result = Seeds(parts)
    if not result:
        raise ValueError(f"`{name}` must name at least one seed.")
    repeated = result.repeated()
    if repeated is not None:
        raise ValueError(f"`{name}` lists seed {repeated} more than once.")
    return result


def _seed_range(token: str, name: str) -> range:
    match = _RANGE.fullmatch(token)
    if not match:
        return _single(token, name)
    first, last = seed(match[1], name), seed(match[2], name)
    if first > last:
        raise ValueError(f"`{name}`: range {token!r} runs backwards; write it as {last}-{first}.")
    return range(first, last + 1)


def _single(value: object, name: str) -> range:
    number = seed(value, name)
    return range(number, number + 1)


def _range_text(part: range) -> str:
    return str(part.start) if len(part) == 1 else f"{part.start}-{part.stop - 1}"


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


def memory_budget(value: object, name: str) -> MemoryBudget | str:
    """A forward's memory budget (`negguide.memory.parse_budget`: bytes, ``"6GB"``, ``"auto"``), or ``"none"``:
    no splitting."""
    if isinstance(value, str) and value.strip().lower() == NO_BUDGET:
        return NO_BUDGET
    return parse_budget(value, name)
