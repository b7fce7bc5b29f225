"""Conditioning that belongs to an image row rather than to a text: IP-Adapter image embeddings, SDXL's micro-
conditioning time ids.

In the stock pipelines such inputs come in two versions, one for the prompt's half of the CFG batch and one for the
unconditional half (IP-Adapter's negative image embeddings, zeros by default; SDXL's ``negative_original_size``,
...). Here the prompt's branch (``cond``) takes the positive version and every other branch (the empty-prompt
baseline, the call's negative prompt, a module's own negatives, Perp-Neg's rows) the negative one.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from negguide.branches import COND
from negguide.layout import BatchLayout

Fields = dict[str, torch.Tensor]


@dataclass(frozen=True)
class ImageConditions:
    """Per-image conditioning fields of one call.

    Args:
        positive (`dict[str, torch.Tensor]`): field name -> ``(num_images, ...)``: what the ``cond`` rows take.
        negative (`dict[str, torch.Tensor]`): the same names and shapes: what the rows of every other branch take.
    """

    positive: Fields
    negative: Fields

    def __post_init__(self) -> None:
        if set(self.positive) != set(self.negative):
            raise ValueError(
                f"ImageConditions: positive fields {sorted(self.positive)} and negative fields "
                f"{sorted(self.negative)} must have the same names."
            )

    def rows(self, layout: BatchLayout, num_images_per_prompt: int) -> Fields:
        """The fields of every row of ``layout``: a row takes its image's conditioning (an extra row, that of its
        prompt's first image), positive on ``cond`` rows, negative elsewhere."""
        images = [row.prompt * num_images_per_prompt if row.image is None else row.image for row in layout.rows]
        index = torch.tensor(images)
        is_cond = torch.tensor([row.branch == COND for row in layout.rows])
        fields = {}
        for name, positive in self.positive.items():
            negative = self.negative[name]
            mask = is_cond.to(positive.device).view(-1, *[1] * (positive.ndim - 1))
            fields[name] = torch.where(mask, positive[index.to(positive.device)], negative[index.to(negative.device)])
        return fields

    @classmethod
    def merged(cls, *parts: ImageConditions | None) -> ImageConditions | None:
        """The fields of every part in one (``None`` when there are none)."""
        parts = [part for part in parts if part is not None]
        if not parts:
            return None
        return cls(
            {name: t for part in parts for name, t in part.positive.items()},
            {name: t for part in parts for name, t in part.negative.items()},
        )


def per_image(tensor: torch.Tensor, num_images: int, num_prompts: int, argument: str) -> torch.Tensor:
    """``tensor`` with one row per image of the call: rows for every image as they are, one row per image of a
    prompt (``num_images_per_prompt`` rows, diffusers' layout) repeated for every prompt, a single row for all.

    Args:
        tensor (`torch.Tensor`): ``(rows, ...)``.
        num_images (`int`): images of the call.
        num_prompts (`int`): prompts of the call.
        argument (`str`): the call argument it comes from, for the error.
    """
    rows = len(tensor)
    if rows == num_images:
        return tensor
    if rows * num_prompts == num_images:
        return tensor.repeat(num_prompts, *[1] * (tensor.ndim - 1))
    if rows == 1:
        return tensor.expand(num_images, *tensor.shape[1:])
    raise ValueError(
        f"`{argument}` has {rows} rows for the call's {num_images} images of {num_prompts} prompt(s): give one row "
        "per image, one per image of a prompt, or one for all."
    )


def adapter_fields(prefix: str, tensors: Sequence[torch.Tensor]) -> Fields:
    """One field per IP-Adapter, ``prefix.0``, ``prefix.1``, ...: fields are single tensors, the adapters a list."""
    return {f"{prefix}.{k}": tensor for k, tensor in enumerate(tensors)}


def adapter_list(fields: Fields, prefix: str) -> list[torch.Tensor] | None:
    """Inverse of `adapter_fields`: the adapters' tensors in order, ``None`` when ``fields`` has none."""
    tensors = []
    while f"{prefix}.{len(tensors)}" in fields:
        tensors.append(fields[f"{prefix}.{len(tensors)}"])
    return tensors or None
