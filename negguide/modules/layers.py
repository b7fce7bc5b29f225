"""Choosing the attention layers a patcher hooks: a name pattern and the attention module types."""

from __future__ import annotations

import re

import torch
from diffusers.models.attention import AttentionModuleMixin
from diffusers.models.attention_processor import Attention

ATTENTION_TYPES = (Attention, AttentionModuleMixin)


def select_attention(model: torch.nn.Module, layers: str, owner: str, example: str) -> dict[str, torch.nn.Module]:
    """The attention modules of ``model`` whose names match the regular expression ``layers``.

    Raises:
        ValueError: naming ``owner``'s ``layers`` setting and an ``example`` name, when nothing matches.
    """
    pattern = re.compile(layers)
    selected = {
        name: module
        for name, module in model.named_modules()
        if pattern.search(name) and isinstance(module, ATTENTION_TYPES)
    }
    if not selected:
        raise ValueError(
            f"{owner}: `layers` pattern {layers!r} matches no attention module of {type(model).__name__}; "
            f"attention modules are named like {example!r}."
        )
    return selected
