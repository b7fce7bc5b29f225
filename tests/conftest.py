"""Tiny Stable Diffusion components built from configs (diffusers' own test sizes), offline and on CPU."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

from negguide.pipelines import StableDiffusionNegGuidePipeline

FIXTURES = Path(__file__).parent / "fixtures"

# Tiny models run fastest on one thread, and one thread keeps a busy machine responsive.
torch.set_num_threads(1)
PROMPTS = ["a red circle", "a blue square"]


def tiny_components() -> dict:
    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        block_out_channels=(4, 8),
        layers_per_block=1,
        sample_size=32,
        in_channels=4,
        out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=32,
        norm_num_groups=2,
    )
    scheduler = DDIMScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        clip_sample=False,
        set_alpha_to_one=False,
        steps_offset=1,
    )
    torch.manual_seed(0)
    vae = AutoencoderKL(
        block_out_channels=[4, 8],
        in_channels=3,
        out_channels=3,
        down_block_types=["DownEncoderBlock2D", "DownEncoderBlock2D"],
        up_block_types=["UpDecoderBlock2D", "UpDecoderBlock2D"],
        latent_channels=4,
        norm_num_groups=2,
    )
    torch.manual_seed(0)
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            bos_token_id=0,
            eos_token_id=1,
            pad_token_id=1,
            hidden_size=32,
            intermediate_size=37,
            layer_norm_eps=1e-05,
            num_attention_heads=4,
            num_hidden_layers=5,
            vocab_size=1000,
        )
    )
    tokenizer = CLIPTokenizer.from_pretrained(FIXTURES / "tokenizer")
    return {
        "unet": unet,
        "scheduler": scheduler,
        "vae": vae,
        "text_encoder": text_encoder,
        "tokenizer": tokenizer,
        "safety_checker": None,
        "feature_extractor": None,
        "image_encoder": None,
        "requires_safety_checker": False,
    }


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
