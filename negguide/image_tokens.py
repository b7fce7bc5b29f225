"""The attention outputs of a transformer denoiser (SD3, Flux), seen as image tokens by token-level patchers.

In a UNet every attention layer returns image tokens, ``(rows, tokens, channels)``, which is what patchers such
as `NegToMe` hook. A transformer's attention layers carry the text stream too: a joint block's attention
returns ``(image tokens, text tokens)`` (plus IP-Adapter tokens in Flux), and a Flux single block's attention
returns one sequence, the text tokens first, then the image tokens. While `image_token_outputs` is entered,
every attention module of the model hands the forward hooks installed before it just its image tokens, and
puts their result back in its own output, so patchers never see or change a text token. The text length is
read from each output (all tokens less the image tokens), never assumed (not a hard-coded 512).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch

from negguide.modules.layers import ATTENTION_TYPES

Rebuild = Callable[[torch.Tensor], Any]


@contextmanager
def image_token_outputs(model: torch.nn.Module, num_image_tokens: int) -> Iterator[None]:
    """Show the forward hooks of ``model``'s attention modules only the image tokens of their outputs.

    Enter it after the patchers have installed their hooks (`negguide.core.Guide.patch`): its own two hooks on
    each attention module run first (keep the image tokens) and last (put them back). Removed on exit.

    Args:
        model (`torch.nn.Module`): the transformer.
        num_image_tokens (`int`): image tokens per row, the same at every layer of the call.
    """
    pending: dict[torch.nn.Module, Rebuild] = {}

    def keep_image_tokens(module: torch.nn.Module, args: tuple, output: Any) -> torch.Tensor | None:
        if isinstance(output, tuple):
            pending[module] = lambda tokens: (tokens, *output[1:])
            return output[0]
        num_text_tokens = output.shape[1] - num_image_tokens
        if num_text_tokens <= 0:
            return None
        pending[module] = lambda tokens: torch.cat([output[:, :num_text_tokens], tokens], dim=1)
        return output[:, num_text_tokens:]

    def put_back(module: torch.nn.Module, args: tuple, output: Any) -> Any:
        rebuild = pending.pop(module, None)
        return None if rebuild is None else rebuild(output)

    handles = []
    try:
        for module in model.modules():
            if isinstance(module, ATTENTION_TYPES):
                handles.append(module.register_forward_hook(keep_image_tokens, prepend=True))
                handles.append(module.register_forward_hook(put_back))
        yield
    finally:
        for handle in handles:
            handle.remove()
        pending.clear()
