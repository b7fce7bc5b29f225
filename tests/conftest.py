"""Tiny Stable Diffusion components built from configs (diffusers' own test sizes, `negguide.testing`), offline and
on CPU."""

from __future__ import annotations

import pytest
import torch
from diffusers import StableDiffusionPipeline

from negguide.pipelines import StableDiffusionNegGuidePipeline
from negguide.testing import sd_components

# Tiny models run fastest on one thread, and one thread keeps a busy machine responsive.
torch.set_num_threads(1)
PROMPTS = ["a red circle", "a blue square"]


def tiny_components() -> dict:
    return sd_components("tiny")


@pytest.fixture
def stock() -> StableDiffusionPipeline:
    pipe = StableDiffusionPipeline(**tiny_components())
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.fixture
def pipe(stock: StableDiffusionPipeline) -> StableDiffusionNegGuidePipeline:
    ours = StableDiffusionNegGuidePipeline.from_pipe(stock)
    ours.set_progress_bar_config(disable=True)
    return ours


def generators(*seeds: int) -> list[torch.Generator]:
    return [torch.Generator().manual_seed(seed) for seed in seeds]


class ForwardCounter:
    """Records the batch size of every forward of a module."""

    def __init__(self, module: torch.nn.Module) -> None:
        self.rows: list[int] = []
        self._handle = module.register_forward_pre_hook(self._record, with_kwargs=True)

    def _record(self, module, args, kwargs) -> None:
        sample = args[0] if args else next(iter(kwargs.values()))
        self.rows.append(len(sample))

    def remove(self) -> None:
        self._handle.remove()


@pytest.fixture
def unet_rows(pipe: StableDiffusionNegGuidePipeline):
    counter = ForwardCounter(pipe.unet)
    yield counter
    counter.remove()


@pytest.fixture
def network_calls(pipe: StableDiffusionNegGuidePipeline):
    """Forward counters on the UNet, the text encoder and the VAE decoder."""
    counters = [ForwardCounter(module) for module in (pipe.unet, pipe.text_encoder, pipe.vae.decoder)]
    yield counters
    for counter in counters:
        counter.remove()
