"""Small Stable Diffusion, SDXL, SD3 and Flux components with random weights, built from configs, offline and on
the CPU: the one set of builders the tests and the benchmarks share.

Two sizes of each family:

* ``"tiny"``: the sizes of diffusers' own tests (a few thousand parameters in the denoiser), for 2-step test runs;
* ``"small"``: a few million parameters in the denoiser, 256x256 images and 32x32 latents, large enough that a
  timing measures the network rather than Python.

The tokenizers are the committed fixtures of the source tree (``tests/fixtures``): CLIP's tiny test tokenizer and a
T5 tokenizer built by ``tests/fixtures/make_t5_tokenizer.py``, so this module needs a checkout, not only an
installed package. Every builder seeds torch itself, so two calls give the same weights.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from diffusers import (
    AutoencoderKL,
    DDIMScheduler,
    EulerDiscreteScheduler,
    FlowMatchEulerDiscreteScheduler,
    FluxTransformer2DModel,
    SD3Transformer2DModel,
    UNet2DConditionModel,
)
from transformers import (
    CLIPTextConfig,
    CLIPTextModel,
    CLIPTextModelWithProjection,
    CLIPTokenizer,
    T5Config,
    T5EncoderModel,
    T5TokenizerFast,
)

FIXTURES = Path(__file__).resolve().parents[1] / "tests" / "fixtures"
SIZES = ("tiny", "small")


def _size(size: str) -> str:
    if size not in SIZES:
        raise ValueError(f"`size` must be one of {SIZES}, got {size!r}.")
    return size


def clip_tokenizer() -> CLIPTokenizer:
    """CLIP's tiny test tokenizer (1,000 tokens)."""
    return CLIPTokenizer.from_pretrained(FIXTURES / "tokenizer")


def t5_tokenizer() -> T5TokenizerFast:
    """A small T5 tokenizer of the same words."""
    return T5TokenizerFast.from_pretrained(FIXTURES / "t5_tokenizer")


def clip_config(size: str = "tiny") -> CLIPTextConfig:
    """The text encoders of SDXL, SD3 and Flux (SD 1.x has its own, deeper one: `sd_components`)."""
    width = {"tiny": 32, "small": 64}[_size(size)]
    return CLIPTextConfig(
        bos_token_id=0,
        eos_token_id=2,
        hidden_size=width,
        intermediate_size={"tiny": 37, "small": 2 * width}[size],
        layer_norm_eps=1e-05,
        num_attention_heads=4,
        num_hidden_layers=2,
        pad_token_id=1,
        vocab_size=1000,
        hidden_act="gelu",
        projection_dim=width,
    )


def t5_encoder(size: str = "tiny") -> T5EncoderModel:
    torch.manual_seed(0)
    shape = {"tiny": {"d_model": 32, "d_kv": 8, "d_ff": 37}, "small": {"d_model": 64, "d_kv": 16, "d_ff": 128}}
    config = T5Config(
        vocab_size=1000,
        num_layers=2,
        num_heads=4,
        relative_attention_num_buckets=8,
        dropout_rate=0.0,
        **shape[_size(size)],
    )
    return T5EncoderModel(config)


def ddim() -> DDIMScheduler:
    """Stable Diffusion's training schedule, sampled with DDIM."""
    return DDIMScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        clip_sample=False,
        set_alpha_to_one=False,
        steps_offset=1,
    )


def unet_vae(size: str, **config: Any) -> AutoencoderKL:
    """The VAE of the UNet families: 2 blocks (``"tiny"``) or 4 (``"small"``, f=8)."""
    torch.manual_seed(0)
    blocks = {"tiny": [4, 8], "small": [16, 32, 32, 32]}[_size(size)]
    return AutoencoderKL(
        block_out_channels=blocks,
        in_channels=3,
        out_channels=3,
        down_block_types=["DownEncoderBlock2D"] * len(blocks),
        up_block_types=["UpDecoderBlock2D"] * len(blocks),
        latent_channels=4,
        norm_num_groups={"tiny": 2, "small": 8}[size],
        **config,
    )


def flow_vae(size: str, latent_channels: int, shift_factor: float, scaling_factor: float) -> AutoencoderKL:
    """The VAE of SD3 and Flux: ``"tiny"`` does not downsample; ``"small"`` is f=8."""
    torch.manual_seed(0)
    if _size(size) == "tiny":
        layout: dict[str, Any] = {
            "sample_size": 32,
            "block_out_channels": (4,),
            "layers_per_block": 1,
            "norm_num_groups": 1,
            "use_quant_conv": False,
            "use_post_quant_conv": False,
        }
    else:
        layout = {
            "block_out_channels": [8, 16, 16, 16],
            "down_block_types": ["DownEncoderBlock2D"] * 4,
            "up_block_types": ["UpDecoderBlock2D"] * 4,
            "norm_num_groups": 8,
        }
    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        latent_channels=latent_channels,
        shift_factor=shift_factor,
        scaling_factor=scaling_factor,
        **layout,
    )


def sd_components(size: str = "tiny") -> dict[str, Any]:
    """Stable Diffusion 1.x components for ``StableDiffusionPipeline(**components)``."""
    torch.manual_seed(0)
    if _size(size) == "tiny":
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
        text = {"hidden_size": 32, "intermediate_size": 37, "num_hidden_layers": 5}
    else:
        unet = UNet2DConditionModel(
            sample_size=32,
            block_out_channels=(64, 128, 128),
            layers_per_block=1,
            down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
            up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
            cross_attention_dim=128,
            attention_head_dim=8,
            norm_num_groups=32,
        )
        text = {"hidden_size": 128, "intermediate_size": 256, "num_hidden_layers": 4}
    scheduler = ddim()
    vae = unet_vae(size)
    torch.manual_seed(0)
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            bos_token_id=0,
            eos_token_id=1,
            pad_token_id=1,
            layer_norm_eps=1e-05,
            num_attention_heads=4,
            vocab_size=1000,
            **text,
        )
    )
    return {
        "unet": unet,
        "scheduler": scheduler,
        "vae": vae,
        "text_encoder": text_encoder,
        "tokenizer": clip_tokenizer(),
        "safety_checker": None,
        "feature_extractor": None,
        "image_encoder": None,
        "requires_safety_checker": False,
    }


def sdxl_components(size: str = "tiny") -> dict[str, Any]:
    """SDXL components for ``StableDiffusionXLPipeline(**components)``."""
    torch.manual_seed(0)
    width = clip_config(size).hidden_size
    if _size(size) == "tiny":
        shape: dict[str, Any] = {
            "block_out_channels": (4, 8),
            "attention_head_dim": (2, 4),
            "addition_time_embed_dim": 8,
            "transformer_layers_per_block": (1, 1),
            "norm_num_groups": 1,
        }
    else:
        shape = {
            "block_out_channels": (64, 128),
            "attention_head_dim": (4, 8),
            "addition_time_embed_dim": 16,
            "transformer_layers_per_block": (1, 2),
            "norm_num_groups": 32,
        }
    unet = UNet2DConditionModel(
        layers_per_block=1,
        sample_size=32,
        in_channels=4,
        out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        use_linear_projection=True,
        addition_embed_type="text_time",
        projection_class_embeddings_input_dim=6 * shape["addition_time_embed_dim"] + width,  # 6 time ids + pooled
        cross_attention_dim=2 * width,
        **shape,
    )
    scheduler = EulerDiscreteScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        steps_offset=1,
        beta_schedule="scaled_linear",
        timestep_spacing="leading",
    )
    vae = unet_vae(size, sample_size=64)
    torch.manual_seed(0)
    text_encoder = CLIPTextModel(clip_config(size))
    torch.manual_seed(0)
    text_encoder_2 = CLIPTextModelWithProjection(clip_config(size))
    return {
        "unet": unet,
        "scheduler": scheduler,
        "vae": vae,
        "text_encoder": text_encoder,
        "text_encoder_2": text_encoder_2,
        "tokenizer": clip_tokenizer(),
        "tokenizer_2": clip_tokenizer(),
        "image_encoder": None,
        "feature_extractor": None,
        "add_watermarker": False,
    }


def sd3_components(size: str = "tiny") -> dict[str, Any]:
    """SD3 components for ``StableDiffusion3Pipeline(**components)``. ``"tiny"``: 16x16 images (its VAE does not
    downsample), 64 image tokens."""
    torch.manual_seed(0)
    if _size(size) == "tiny":
        transformer = SD3Transformer2DModel(
            sample_size=16,
            patch_size=2,
            in_channels=4,
            num_layers=2,
            attention_head_dim=8,
            num_attention_heads=4,
            caption_projection_dim=32,
            joint_attention_dim=32,
            pooled_projection_dim=64,
            out_channels=4,
        )
        scheduler = FlowMatchEulerDiscreteScheduler()
    else:
        transformer = SD3Transformer2DModel(
            sample_size=32,
            patch_size=2,
            in_channels=16,
            num_layers=4,
            attention_head_dim=32,
            num_attention_heads=4,
            caption_projection_dim=128,
            joint_attention_dim=64,
            pooled_projection_dim=128,
            out_channels=16,
        )
        scheduler = FlowMatchEulerDiscreteScheduler(shift=3.0)
    latent_channels = transformer.config.in_channels
    torch.manual_seed(0)
    text_encoder = CLIPTextModelWithProjection(clip_config(size))
    torch.manual_seed(1)
    text_encoder_2 = CLIPTextModelWithProjection(clip_config(size))
    return {
        "transformer": transformer,
        "scheduler": scheduler,
        "vae": flow_vae(size, latent_channels, shift_factor=0.0609, scaling_factor=1.5035),
        "text_encoder": text_encoder,
        "text_encoder_2": text_encoder_2,
        "text_encoder_3": t5_encoder(size),
        "tokenizer": clip_tokenizer(),
        "tokenizer_2": clip_tokenizer(),
        "tokenizer_3": t5_tokenizer(),
        "image_encoder": None,
        "feature_extractor": None,
    }


def flux_components(size: str = "tiny") -> dict[str, Any]:
    """Flux components for ``FluxPipeline(**components)`` (guidance-distilled: ``guidance_embeds=True``)."""
    torch.manual_seed(0)
    if _size(size) == "tiny":
        transformer = FluxTransformer2DModel(
            patch_size=1,
            in_channels=4,
            num_layers=1,
            num_single_layers=1,
            attention_head_dim=16,
            num_attention_heads=2,
            joint_attention_dim=32,
            pooled_projection_dim=32,
            axes_dims_rope=[4, 4, 8],
            guidance_embeds=True,
        )
        scheduler = FlowMatchEulerDiscreteScheduler()
        vae = flow_vae(size, 1, shift_factor=0.0609, scaling_factor=1.5035)
    else:
        transformer = FluxTransformer2DModel(
            patch_size=1,
            in_channels=64,
            num_layers=2,
            num_single_layers=4,
            attention_head_dim=32,
            num_attention_heads=4,
            joint_attention_dim=64,
            pooled_projection_dim=64,
            axes_dims_rope=[8, 12, 12],
            guidance_embeds=True,
        )
        scheduler = FlowMatchEulerDiscreteScheduler(use_dynamic_shifting=True)
        vae = flow_vae(size, 16, shift_factor=0.1159, scaling_factor=0.3611)
    torch.manual_seed(0)
    text_encoder = CLIPTextModel(clip_config(size))
    return {
        "transformer": transformer,
        "scheduler": scheduler,
        "vae": vae,
        "text_encoder": text_encoder,
        "text_encoder_2": t5_encoder(size),
        "tokenizer": clip_tokenizer(),
        "tokenizer_2": t5_tokenizer(),
        "image_encoder": None,
        "feature_extractor": None,
    }
