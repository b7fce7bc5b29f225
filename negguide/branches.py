"""What one denoising step asks of the network: named branches, each a text condition per prompt.

A *branch* is one text condition evaluated on the same latents as every other branch of the step:
``cond`` (the prompt), ``uncond`` (the empty prompt or the call's negative prompt), ``neg_0``, ``neg_1``,
... (a module's own negatives). Every branch holds one text per prompt of the call; the network evaluates
it once per image.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

COND = "cond"
UNCOND = "uncond"


def negative_branch(index: int) -> str:
    """Name of the branch that evaluates a module's ``index``-th negative."""
    return f"neg_{index}"


@dataclass(frozen=True)
class EmbedsRef:
    """Row ``index`` of a conditioning tensor passed to the call (``prompt_embeds``, ...) instead of a text."""

    source: str
    index: int


@dataclass(frozen=True)
class Blend:
    """A weighted sum of the encodings of several texts, field by field: ``sum_i w_i * encode(text_i)``.

    Perp-Neg's view-dependent prompting conditions on such a mix, ``r * E_front + (1 - r) * E_side``
    (Armandpour et al., arXiv 2304.04968). Each text is encoded once per call, like any other.

    Args:
        parts (`tuple[tuple[str, float], ...]`): ``(text, weight)`` pairs.
    """

    parts: tuple[tuple[str, float], ...]


@dataclass(frozen=True)
class EncoderTexts:
    """One condition written as one text per text encoder, for families with several encoders: SDXL's and
    Flux's ``prompt`` and ``prompt_2``, SD3's ``prompt``, ``prompt_2`` and ``prompt_3``. A plain string is the
    same text for every encoder.

    Args:
        texts (`tuple[str, ...]`): the text of each encoder, in the family's order.
    """

    texts: tuple[str, ...]


Text = str | EncoderTexts
"""What a family's text encoding takes: one text for all its encoders, or one text per encoder."""

TextKey = str | EncoderTexts | EmbedsRef | Blend
"""A text condition: a string for the text encoders (or one per encoder), a reference to caller-given
embeddings, or a blend of the encodings of several texts."""


@dataclass(frozen=True)
class Branch:
    """One named text condition of a step: ``texts[p]`` conditions the images of prompt ``p``."""

    name: str
    texts: tuple[TextKey, ...]


@dataclass(frozen=True)
class Step:
    """Position of a denoising step in the run.

    Args:
        index (`int`): 0-based step index.
        num_steps (`int`): number of network evaluations in the run (``len(timesteps)``).
        timestep (`float`): the scheduler's timestep at this step.
    """

    index: int
    num_steps: int
    timestep: float

    @property
    def fraction(self) -> float:
        """``index / num_steps``: the share of the run done before this step. Windows ``[start, stop)`` of
        the modules test this value."""
        return self.index / self.num_steps


@dataclass(frozen=True)
class CallInfo:
    """The prompts of one pipeline call, as text conditions, and the batch sizes.

    Images are ordered prompt-major, as in diffusers: image ``i`` belongs to prompt
    ``i // num_images_per_prompt``.

    Args:
        prompts (`tuple[TextKey, ...]`): the positive condition of each prompt.
        negative_prompts (`tuple[TextKey, ...]`): the call's negative prompt for each prompt (``""`` when the
            call has none).
        num_images_per_prompt (`int`): images generated per prompt.
    """

    prompts: tuple[TextKey, ...]
    negative_prompts: tuple[TextKey, ...]
    num_images_per_prompt: int

    @property
    def num_prompts(self) -> int:
        return len(self.prompts)

    @property
    def num_images(self) -> int:
        return self.num_prompts * self.num_images_per_prompt

    def per_prompt(self, text: str | Sequence[str], name: str) -> tuple[str, ...]:
        """``text`` broadcast to one string per prompt; a sequence must hold exactly one per prompt."""
        if isinstance(text, str):
            return (text,) * self.num_prompts
        if not isinstance(text, (list, tuple)) or not all(isinstance(item, str) for item in text):
            raise TypeError(f"`{name}` must be a string or a list of strings, got {text!r}.")
        if len(text) != self.num_prompts:
            raise ValueError(
                f"`{name}` has {len(text)} texts but the call has {self.num_prompts} prompts: give one text per "
                "prompt, or a single string for all of them."
            )
        return tuple(text)

    @classmethod
    def from_call(
        cls,
        prompt: str | list[str] | None,
        negative_prompt: str | list[str] | None,
        prompt_embeds: torch.Tensor | None,
        negative_prompt_embeds: torch.Tensor | None,
        num_images_per_prompt: int,
    ) -> CallInfo:
        """Build from a diffusers-style call. Embeddings become `EmbedsRef` rows named after their argument.

        Unlike diffusers, a single string ``negative_prompt`` also serves a list of prompts.
        """
        if isinstance(num_images_per_prompt, bool) or not isinstance(num_images_per_prompt, int):
            raise TypeError(f"`num_images_per_prompt` must be an int, got {type(num_images_per_prompt).__name__}.")
        if num_images_per_prompt < 1:
            raise ValueError(f"`num_images_per_prompt` must be at least 1, got {num_images_per_prompt}.")
        if prompt is None:
            prompts: tuple[TextKey, ...] = tuple(EmbedsRef("prompt_embeds", i) for i in range(len(prompt_embeds)))
        else:
            prompts = (prompt,) if isinstance(prompt, str) else tuple(prompt)
        if not prompts:
            raise ValueError("`prompt` is an empty list: give at least one prompt.")
        info = cls(prompts, ("",) * len(prompts), num_images_per_prompt)
        if negative_prompt_embeds is not None:
            if len(negative_prompt_embeds) != len(prompts):
                raise ValueError(
                    f"`negative_prompt_embeds` has {len(negative_prompt_embeds)} rows but the call has "
                    f"{len(prompts)} prompts: give one row per prompt."
                )
            negatives: tuple[TextKey, ...] = tuple(EmbedsRef("negative_prompt_embeds", i) for i in range(len(prompts)))
        elif negative_prompt is not None:
            negatives = info.per_prompt(negative_prompt, "negative_prompt")
        else:
            return info
        return cls(prompts, negatives, num_images_per_prompt)
