"""Tiny SDXL, SD3 and Flux components built from configs (the sizes of diffusers' own tests), with the committed
CLIP and T5 tokenizer fixtures; offline and on CPU."""

from __future__ import annotations

from pathlib import Path

import torch
from diffusers import (
    AutoencoderKL,
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

FIXTURES = Path(__file__).parent / "fixtures"
PROMPTS = ["a red circle", "a blue square"]
STEPS = 2
SIZE = 16
"""Image side of the SD3 and Flux tests: their tiny VAEs do not downsample, so 16 x 16 latents, 64 image tokens."""
MAX_SEQUENCE_LENGTH = 16


def clip_config() -> CLIPTextConfig:
    return CLIPTextConfig(
        bos_token_id=0,
        eos_token_id=2,
        hidden_size=32,
        intermediate_size=37,
        layer_norm_eps=1e-05,
        num_attention_heads=4,
        num_hidden_layers=2,
        pad_token_id=1,
        vocab_size=1000,
        hidden_act="gelu",
        projection_dim=32,
    )


def t5_encoder() -> T5EncoderModel:
    torch.manual_seed(0)
    config = T5Config(
        vocab_size=1000,
        d_model=32,
        d_kv=8,
        d_ff=37,
        num_layers=2,
        num_heads=4,
        relative_attention_num_buckets=8,
        dropout_rate=0.0,
    )
    return T5EncoderModel(config)


def clip_tokenizer() -> CLIPTokenizer:
    return CLIPTokenizer.from_pretrained(FIXTURES / "tokenizer")


def t5_tokenizer() -> T5TokenizerFast:
    return T5TokenizerFast.from_pretrained(FIXTURES / "t5_tokenizer")


def flow_vae(latent_channels: int) -> AutoencoderKL:
    torch.manual_seed(0)
    return AutoencoderKL(
        sample_size=32,
        in_channels=3,
        out_channels=3,
        block_out_channels=(4,),
        layers_per_block=1,
        latent_channels=latent_channels,
        norm_num_groups=1,
        use_quant_conv=False,
        use_post_quant_conv=False,
        shift_factor=0.0609,
        scaling_factor=1.5035,
    )


def sdxl_components() -> dict:
    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        block_out_channels=(4, 8),
        layers_per_block=1,
        sample_size=32,
        in_channels=4,
        out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        attention_head_dim=(2, 4),
        use_linear_projection=True,
        addition_embed_type="text_time",
        addition_time_embed_dim=8,
        transformer_layers_per_block=(1, 1),
        projection_class_embeddings_input_dim=80,  # 6 time ids * 8 + 32 pooled
        cross_attention_dim=64,
        norm_num_groups=1,
    )
    scheduler = EulerDiscreteScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        steps_offset=1,
        beta_schedule="scaled_linear",
        timestep_spacing="leading",
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
        sample_size=64,
    )
    torch.manual_seed(0)
    text_encoder = CLIPTextModel(clip_config())
    torch.manual_seed(0)
    text_encoder_2 = CLIPTextModelWithProjection(clip_config())
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


def sd3_components() -> dict:
    torch.manual_seed(0)
    transformer = SD3Transformer2DModel(
        sample_size=SIZE,
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
    torch.manual_seed(0)
    text_encoder = CLIPTextModelWithProjection(clip_config())
    torch.manual_seed(1)
    text_encoder_2 = CLIPTextModelWithProjection(clip_config())
    return {
        "transformer": transformer,
        "scheduler": FlowMatchEulerDiscreteScheduler(),
        "vae": flow_vae(latent_channels=4),
        "text_encoder": text_encoder,
        "text_encoder_2": text_encoder_2,
        "text_encoder_3": t5_encoder(),
        "tokenizer": clip_tokenizer(),
        "tokenizer_2": clip_tokenizer(),
        "tokenizer_3": t5_tokenizer(),
        "image_encoder": None,
        "feature_extractor": None,
    }


def flux_components() -> dict:
    torch.manual_seed(0)
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
    torch.manual_seed(0)
    text_encoder = CLIPTextModel(clip_config())
    return {
        "transformer": transformer,
        "scheduler": FlowMatchEulerDiscreteScheduler(),
        "vae": flow_vae(latent_channels=1),
        "text_encoder": text_encoder,
        "text_encoder_2": t5_encoder(),
        "tokenizer": clip_tokenizer(),
        "tokenizer_2": t5_tokenizer(),
        "image_encoder": None,
        "feature_extractor": None,
    }


def generators(*seeds: int) -> list[torch.Generator]:
    return [torch.Generator().manual_seed(seed) for seed in seeds]


def run(pipeline, *, seeds=(0, 1, 2, 3), **kwargs) -> torch.Tensor:
    """Two prompts, two images each, two steps, as a tensor; ``kwargs`` override."""
    kwargs = {
        "prompt": PROMPTS,
        "num_images_per_prompt": 2,
        "num_inference_steps": STEPS,
        "output_type": "pt",
        **kwargs,
    }
    return pipeline(generator=generators(*seeds), **kwargs).images


def max_difference(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a - b).abs().max().item()


def hook_count(model: torch.nn.Module) -> int:
    """Forward hooks and pre-hooks installed anywhere in ``model``."""
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())


def latents_per_step(pipeline, **kwargs) -> list[torch.Tensor]:
    """The latents after each of 4 steps of a one-image call."""
    seen = []

    def record(pipe, step, timestep, tensors):
        seen.append(tensors["latents"].clone())
        return tensors

    run(pipeline, num_inference_steps=4, callback_on_step_end=record, **kwargs)
    return seen
