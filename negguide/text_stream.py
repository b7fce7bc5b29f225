"""An extra text stream through a transformer denoiser's blocks (SD3, Flux), beside the prompt's.

In a transformer with joint attention the text tokens are not fixed keys and values: each block updates them
(attention, AdaLN modulation, feed-forward), so a negative text that is to act inside attention must run through
every block as a stream of its own, the way the prompt's does (Chen et al., "Normalized Attention Guidance",
arXiv 2505.21179). `text_stream` does that with hooks on one model instance, for the duration of a block:

* the texts' features join the prompt's at the ``context_embedder`` as extra text rows, one per negative and
  target row (``StreamPlan``), and travel through the joint blocks as extra rows of the text stream, modulated
  by their target row's time embedding;
* the image rows are not duplicated in a joint block: only inside its attention do the target rows' image
  queries, keys and values meet each extra text row, and the attention output of those added image rows is
  handed to ``combine`` and dropped before the output projection;
* Flux's single blocks process text and image tokens as one sequence, so there the target rows' image tokens
  run beside each extra text row through the block and are dropped at its end.

An added row's image tokens are the same as its target row's until attention mixes in the other text, so the
query, key and value projections of a block's image tokens are computed for the forward's own rows only and
copied to the added rows; in a single block the MLP and the output projection, whose image-token results an added
row drops, run on the added rows' text tokens alone. An added row then costs the attention and its text tokens'
work, not a whole row, with separate or fused (``to_qkv``) projections alike.

Outside a stream step (``plan()`` returns ``None``) the hooks leave the network as it is.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch

Combine = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
"""``combine(rows, extra) -> rows``: the image-token attention outputs of a forward's rows ``(N, tokens, C)``
changed given those of the added rows ``(k * T, tokens, C)`` (extra text row ``i * T + j`` beside target
``j``)."""


@dataclass(frozen=True)
class StreamPlan:
    """The extra text rows of one forward.

    Args:
        targets (`torch.Tensor`): ``(T,)`` the rows whose image tokens meet the extra texts.
        contexts (`torch.Tensor`): ``(k * T, L, C)`` the extra texts' features as the network takes them
            (before its ``context_embedder``), text ``i`` of target ``j`` at row ``i * T + j``; ``L`` must be the
            prompt's text length.
        num_rows (`int`): rows of the forward.
    """

    targets: torch.Tensor
    contexts: torch.Tensor
    num_rows: int

    @property
    def num_texts(self) -> int:
        return len(self.contexts) // len(self.targets)

    def tile(self, rows: torch.Tensor) -> torch.Tensor:
        """``rows`` ``(N, ...)`` followed by the target rows once per extra text: ``(N + k * T, ...)``."""
        return torch.cat([rows, rows[self.targets].repeat(self.num_texts, *[1] * (rows.ndim - 1))])


def joint_blocks(model: torch.nn.Module) -> list[torch.nn.Module]:
    """The transformer's joint blocks (a text stream beside the image stream) and, for Flux, its single blocks."""
    return [*getattr(model, "transformer_blocks", ()), *getattr(model, "single_transformer_blocks", ())]


@contextmanager
def text_stream(
    model: torch.nn.Module,
    plan: Callable[[], StreamPlan | None],
    guided: set[torch.nn.Module],
    combine: Combine,
) -> Iterator[None]:
    """Run the extra text rows ``plan()`` asks for through ``model``'s blocks while the block is entered.

    Args:
        model (`torch.nn.Module`): an SD3 or Flux transformer (``context_embedder``, ``transformer_blocks``).
        plan: the plan of the forward about to run, or ``None`` for a plain forward.
        guided: the attention modules whose image-token outputs ``combine`` changes; the other blocks only carry
            the stream.
        combine: see `Combine`.
    """
    stream = _Stream(plan, guided, combine)
    handles = [model.context_embedder.register_forward_pre_hook(stream.add_texts)]
    try:
        for block in joint_blocks(model):
            if hasattr(block, "norm1_context"):
                handles += [
                    block.norm1_context.register_forward_pre_hook(stream.modulate_texts, with_kwargs=True),
                    block.attn.register_forward_pre_hook(stream.tile_queries, with_kwargs=True),
                    block.attn.to_out[0].register_forward_pre_hook(functools.partial(stream.drop_tiled, block.attn)),
                ]
                for projection in _projections(block.attn):
                    handles += [
                        projection.register_forward_pre_hook(functools.partial(stream.own_rows, block.attn)),
                        projection.register_forward_hook(functools.partial(stream.tile_rows, block.attn)),
                    ]
            else:
                handles += [
                    block.register_forward_pre_hook(stream.tile_block, with_kwargs=True),
                    block.attn.register_forward_hook(stream.combine_sequence),
                    block.register_forward_hook(stream.drop_block_rows),
                ]
                for projection, copied in [*((p, True) for p in _projections(block.attn)),
                                           (block.proj_mlp, False), (block.proj_out, False)]:
                    handles += [
                        projection.register_forward_pre_hook(functools.partial(stream.own_tokens, block)),
                        projection.register_forward_hook(functools.partial(stream.added_tokens, block, copied)),
                    ]
        yield
    finally:
        for handle in handles:
            handle.remove()
        stream.pending.clear()
        stream.added.clear()


class _Stream:
    """The hooks of `text_stream` and what passes between them within one forward."""

    def __init__(self, plan: Callable[[], StreamPlan | None], guided: set[torch.nn.Module], combine: Combine) -> None:
        self.plan = plan
        self.guided = guided
        self.combine = combine
        self.pending: dict[torch.nn.Module, StreamPlan] = {}
        self.image_tokens = 0
        self.text_tokens = 0
        self.added: dict[torch.nn.Module, torch.Tensor] = {}

    def _streaming(self, text: torch.Tensor) -> StreamPlan | None:
        """The plan when ``text`` carries the extra rows, else ``None``."""
        plan = self.plan()
        if plan is None or len(text) == plan.num_rows:
            return None
        return plan

    def add_texts(self, embedder: torch.nn.Module, args: tuple) -> tuple | None:
        plan = self.plan()
        if plan is None:
            return None
        text = args[0]  # (N, L, C)
        if plan.contexts.shape[1:] != text.shape[1:]:
            raise ValueError(
                f"the extra texts are {tuple(plan.contexts.shape[1:])} tokens x features but the prompt's are "
                f"{tuple(text.shape[1:])}: encode them with the same text length (max_sequence_length)."
            )
        return (torch.cat([text, plan.contexts.to(text.dtype)]), *args[1:])

    def modulate_texts(self, norm: torch.nn.Module, args: tuple, kwargs: dict[str, Any]) -> tuple | None:
        plan = self._streaming(args[0])
        if plan is None:
            return None
        if "emb" in kwargs:
            return args, {**kwargs, "emb": plan.tile(kwargs["emb"])}
        return (args[0], plan.tile(args[1]), *args[2:]), kwargs

    def tile_queries(self, attention: torch.nn.Module, args: tuple, kwargs: dict[str, Any]) -> tuple | None:
        plan = self._streaming(kwargs["encoder_hidden_states"])
        if plan is None:
            return None
        self.pending[attention] = plan
        return args, {**kwargs, "hidden_states": plan.tile(kwargs["hidden_states"])}

    def drop_tiled(self, attention: torch.nn.Module, projection: torch.nn.Module, args: tuple) -> tuple | None:
        plan = self.pending.pop(attention, None)
        if plan is None:
            return None
        outputs = args[0]  # (N + k * T, image tokens, C)
        rows = outputs[: plan.num_rows]
        if attention in self.guided:
            rows = self.combine(rows, outputs[plan.num_rows :])
        return (rows, *args[1:])

    def tile_block(self, block: torch.nn.Module, args: tuple, kwargs: dict[str, Any]) -> tuple | None:
        plan = self._streaming(kwargs["encoder_hidden_states"])
        if plan is None:
            return None
        self.pending[block] = plan
        self.image_tokens = kwargs["hidden_states"].shape[1]
        self.text_tokens = kwargs["encoder_hidden_states"].shape[1]
        tiled = {name: plan.tile(kwargs[name]) for name in ("hidden_states", "temb")}
        return args, {**kwargs, **tiled}

    def combine_sequence(self, attention: torch.nn.Module, args: tuple, output: torch.Tensor) -> torch.Tensor | None:
        plan = self._streaming(output)
        if plan is None or attention not in self.guided:
            return None
        image = -self.image_tokens
        guided = output.clone()
        guided[: plan.num_rows, image:] = self.combine(output[: plan.num_rows, image:], output[plan.num_rows :, image:])
        return guided

    def drop_block_rows(self, block: torch.nn.Module, args: tuple, output: tuple) -> tuple | None:
        plan = self.pending.pop(block, None)
        if plan is None:
            return None
        text, image = output
        return text, image[: plan.num_rows]

    def own_rows(self, attention: torch.nn.Module, projection: torch.nn.Module, args: tuple) -> tuple | None:
        """A joint block's image projection sees only the forward's own rows (the added ones are their copies)."""
        plan = self.pending.get(attention)
        if plan is None:
            return None
        return (args[0][: plan.num_rows], *args[1:])

    def tile_rows(self, attention: torch.nn.Module, projection: torch.nn.Module, args: tuple, output: torch.Tensor):
        plan = self.pending.get(attention)
        if plan is None:
            return None
        return plan.tile(output)

    def own_tokens(self, block: torch.nn.Module, projection: torch.nn.Module, args: tuple) -> tuple | None:
        """A single block's projection runs on the forward's own rows; the added rows wait for `added_tokens`."""
        plan = self.pending.get(block)
        if plan is None:
            return None
        self.added[projection] = args[0][plan.num_rows :, : self.text_tokens]
        return (args[0][: plan.num_rows], *args[1:])

    def added_tokens(
        self, block: torch.nn.Module, copied: bool, projection: torch.nn.Module, args: tuple, output: torch.Tensor
    ) -> torch.Tensor | None:
        """The added rows' text tokens through the projection (its own ``forward``, outside the hooks), beside their
        image tokens copied from their targets' (``copied``) or, where the added rows drop them, zeros."""
        plan = self.pending.get(block)
        if plan is None:
            return None
        text = projection.forward(self.added.pop(projection))
        if copied:
            image = output[plan.targets, self.text_tokens :].repeat(plan.num_texts, 1, 1)
        else:
            image = output.new_zeros(len(text), self.image_tokens, output.shape[-1])
        return torch.cat([output, torch.cat([text, image], dim=1)])


def _projections(attention: torch.nn.Module) -> tuple[torch.nn.Module, ...]:
    """The layers that project a block's image tokens for attention: the query, key and value projections, and
    their fused form, ``to_qkv``, where the attention has one (only the one its processor calls runs)."""
    names = ("to_q", "to_k", "to_v", "to_qkv")
    return tuple(getattr(attention, name) for name in names if getattr(attention, name, None) is not None)
