"""Argument checks shared by the guidance modules and the pipelines."""

from __future__ import annotations

import math
from numbers import Integral, Real

import torch


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


def positive_int(value: object, name: str) -> int:
    """``value`` when it is an int >= 1; TypeError or ValueError naming ``name`` otherwise."""
    if isinstance(value, bool) or not isinstance(value, Integral):
        raise TypeError(f"`{name}` must be an int, got {type(value).__name__} {value!r}.")
    if value < 1:
        raise ValueError(f"`{name}` must be a positive int, got {value}.")
    return int(value)


def image_size(value: object, name: str, factor: int) -> int:
    """``value`` when it is a positive int divisible by ``factor`` (the model's pixels per latent token)."""
    size = positive_int(value, name)
    if size % factor:
        raise ValueError(
            f"`{name}` must be divisible by {factor} for this model, got {size}: use e.g. "
            f"{max(factor, size - size % factor)}."
        )
    return size


def generators(value: object, num_images: int) -> None:
    """Check a call's ``generator``: ``None``, a `torch.Generator`, or a list of exactly ``num_images`` of them."""
    if value is None or isinstance(value, torch.Generator):
        return
    if not isinstance(value, list) or not all(isinstance(item, torch.Generator) for item in value):
        raise TypeError(
            f"`generator` must be a torch.Generator or a list of them, got {value!r}: use e.g. "
            "torch.Generator().manual_seed(0)."
        )
    if len(value) != num_images:
        raise ValueError(
            f"`generator` is a list of {len(value)} generators but the call makes {num_images} images: give one per "
            "image, or a single generator."
        )


def call_numbers(
    *,
    num_inference_steps: object,
    scales: dict[str, object],
    generator: object,
    num_images: int,
    schedule_given: bool = False,
) -> None:
    """The numeric arguments every pipeline call shares, checked before any network runs: steps a positive int
    (or ``None`` when the call gives its own ``timesteps`` or ``sigmas``: ``schedule_given``), every scale in
    ``scales`` (argument name -> value) a finite number, ``generator`` (see `generators`)."""
    if not (schedule_given and num_inference_steps is None):
        positive_int(num_inference_steps, "num_inference_steps")
    for name, value in scales.items():
        finite_float(value, name)
    generators(generator, num_images)
