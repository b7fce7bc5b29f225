"""Standard negative prompts, generalised: weights and step windows."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch

from negguide import functional as F
from negguide.branches import COND, UNCOND, Branch, CallInfo, Step, negative_branch
from negguide.checks import finite_float, unit_interval
from negguide.modules.base import Combiner, dataclass_kwargs, register_guidance
from negguide.window import Window


@dataclass(frozen=True)
class Negative:
    """One negative prompt with its weight and step window.

    Args:
        text (`str` or `tuple[str, ...]`): the negative text, or one text per prompt of the call.
        weight (`float`, defaults to 1.0): ``w > 0``; several active negatives are averaged with these weights.
        start (`float`, defaults to 0.0): first step fraction at which the negative acts.
        stop (`float`, defaults to 1.0): step fraction from which it no longer acts. The negative is active at
            step ``i`` of ``n`` when ``start <= i / n < stop``; ``start > 0`` makes it a *delayed* negative
            (Ban et al., "Understanding the Impact of Negative Prompts", arXiv 2406.02965).
    """

    text: str | tuple[str, ...]
    weight: float = 1.0
    start: float = 0.0
    stop: float = 1.0

    def __post_init__(self) -> None:
        if not isinstance(self.text, str):
            if (
                not isinstance(self.text, (list, tuple))
                or not self.text
                or not all(isinstance(t, str) for t in self.text)
            ):
                raise TypeError(
                    f"`Negative.text` must be a string or a non-empty list of strings (one per prompt), got {self.text!r}."
                )
            object.__setattr__(self, "text", tuple(self.text))
        weight = finite_float(self.weight, "Negative.weight")
        if weight <= 0:
            raise ValueError(
                f"`Negative.weight` must be > 0, got {weight}: use a smaller weight for a weaker negative, or leave "
                "the negative out."
            )
        window = Window(self.start, self.stop, "Negative.")
        object.__setattr__(self, "weight", weight)
        object.__setattr__(self, "start", window.start)
        object.__setattr__(self, "stop", window.stop)

    def is_active(self, step: Step) -> bool:
        """Whether the negative acts at ``step``."""
        return Window(self.start, self.stop).contains(step)


@register_guidance("negative_prompts")
@dataclass(frozen=True)
class NegativePrompts(Combiner):
    r"""Classifier-free guidance with any number of weighted, windowed negative prompts.

    ``e = e_n + s * (e_p - e_n)`` (Ho & Salimans 2022, arXiv 2207.12598) with
    ``e_n = sum_i w_i e(n_i) / sum_i w_i`` over the negatives active at the step. When none is active the
    call's ``negative_prompt`` (or the empty prompt) stands in, so one windowed negative costs two rows per
    image at every step. With no negatives this is exactly diffusers' standard guidance.

    Args:
        negatives (`Sequence[Negative | str]`, defaults to none): the negatives; strings become
            ``Negative(text)``, mappings ``Negative(**mapping)``.
        guidance_rescale (`float`, defaults to 0.0): rescale factor phi in ``[0, 1]`` (Lin et al., arXiv
            2305.08891); the call's ``guidance_rescale`` is used when this is 0.
    """

    negatives: tuple[Negative, ...] = ()
    guidance_rescale: float = 0.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "negatives", as_negatives(self.negatives, type(self).__name__))
        object.__setattr__(self, "guidance_rescale", unit_interval(self.guidance_rescale, "guidance_rescale"))

    def _active(self, step: Step) -> list[tuple[int, Negative]]:
        return [(i, negative) for i, negative in enumerate(self.negatives) if negative.is_active(step)]

    def branches(self, call: CallInfo, step: Step) -> tuple[Branch, ...]:
        active = self._active(step)
        if not active:
            return Branch(UNCOND, call.negative_prompts), Branch(COND, call.prompts)
        negatives = tuple(
            Branch(negative_branch(i), call.per_prompt(negative.text, f"negatives[{i}].text")) for i, negative in active
        )
        return *negatives, Branch(COND, call.prompts)

    def combine(
        self, preds: Mapping[str, torch.Tensor], call: CallInfo, step: Step, guidance_scale: float
    ) -> torch.Tensor:
        active = self._active(step)
        if active:
            negative = F.weighted_mean([preds[negative_branch(i)] for i, _ in active], [n.weight for _, n in active])
        else:
            negative = preds[UNCOND]
        return F.cfg(negative, preds[COND], guidance_scale)


def as_negatives(items: object, owner: str) -> tuple[Negative, ...]:
    """A module's ``negatives`` setting as a tuple of `Negative`: items may be `Negative`, ``str`` (a negative
    with the default settings) or mappings of `Negative`'s settings. ``owner`` names the module in errors."""
    if isinstance(items, (str, Negative)) or not isinstance(items, Sequence):
        raise TypeError(
            f"`negatives` must be a list of Negative or str, got {items!r}; wrap a single one in a list, e.g. "
            f"{owner}(['blurry'])."
        )
    return tuple(_as_negative(item) for item in items)


def _as_negative(item: Negative | str | Mapping) -> Negative:
    if isinstance(item, Negative):
        return item
    if isinstance(item, str):
        return Negative(item)
    if isinstance(item, Mapping):
        return Negative(**dataclass_kwargs(Negative, item))
    raise TypeError(f"`negatives` items must be Negative, str or a mapping of Negative's settings, got {item!r}.")
