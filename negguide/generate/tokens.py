"""Prompts longer than the model keeps: counted with the pipeline's own tokenizers and reported once each, since
the text encoders silently cut what does not fit."""

from __future__ import annotations

import inspect
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from diffusers import DiffusionPipeline

from negguide.generate.plan import Group, Job

TOKENIZERS = ("tokenizer", "tokenizer_2", "tokenizer_3")
"""The pipeline components that may hold a tokenizer (SD: the first; SDXL, Flux: two; SD3: three)."""


@dataclass(frozen=True)
class TokenLimit:
    """The tokenizer of the model's longest-reaching text encoder, and how many of its tokens a prompt keeps.

    Args:
        tokenizer: a `transformers` tokenizer.
        kept (`int`): tokens kept, the start and end tokens included.
    """

    tokenizer: Any
    kept: int

    def count(self, text: str) -> int:
        """The tokens of ``text``, the start and end tokens included, before any cut."""
        return len(self.tokenizer(text, truncation=False)["input_ids"])


def token_limit(pipe: DiffusionPipeline) -> TokenLimit | None:
    """The `TokenLimit` of ``pipe``: its tokenizer that keeps the most, bounded by the default of the call's
    ``max_sequence_length`` where the pipeline has one (the T5 encoder of SD3 and Flux); ``None`` without one."""
    tokenizers = [getattr(pipe, name, None) for name in TOKENIZERS]
    tokenizers = [tokenizer for tokenizer in tokenizers if tokenizer is not None]
    if not tokenizers:
        return None
    longest = max(tokenizers, key=lambda tokenizer: tokenizer.model_max_length)
    kept = longest.model_max_length
    length = inspect.signature(pipe.__call__).parameters.get("max_sequence_length")
    if length is not None and isinstance(length.default, int):
        kept = min(kept, length.default)
    return TokenLimit(longest, kept)


def long_prompts(groups: Iterable[Group], limit: TokenLimit) -> Iterator[str]:
    """A message for each prompt and negative prompt of ``groups`` that ``limit`` cuts, once per text, e.g.
    ``prompt 3 (prompts.txt line 7) is 412 tokens; the model keeps 77: the rest is cut.``"""
    seen: set[tuple[str, str]] = set()
    for group in groups:
        job = group.job
        for kind, text in (("prompt", job.prompt), ("negative prompt", job.negative_prompt)):
            if not text or (kind, text) in seen:
                continue
            seen.add((kind, text))
            tokens = limit.count(text)
            if tokens > limit.kept:
                yield f"{_where(kind, job)} is {tokens} tokens; the model keeps {limit.kept}: the rest is cut."


def _where(kind: str, job: Job) -> str:
    path, _, line = job.source.rpartition(":")
    place = f"prompt {job.item} ({path} line {line})"
    return place if kind == "prompt" else f"the negative prompt of {place}"
