"""Time cost of negguide's SDXL, SD3 and Flux pipelines against stock diffusers, same components, one process.

    python benchmarks/families.py [--runs 9] [--steps 4] [--threads 1] [--families sdxl sd3 flux]

For each family, builds small randomly initialised components (256x256 images, 32x32 latents; a few million
parameters in the denoiser), wraps them in the stock pipeline and in negguide's ``from_pipe`` of it, checks that
both give the same latents (to float rounding: 1e-5 of their largest value), then times them alternately after
one warm-up run each: two images of one prompt per call, with a negative prompt (Flux: true CFG,
``true_cfg_scale=4``). Times are the process's CPU time, steadier than wall time on a shared machine. Prints
the median seconds per call, the standard path's time ratio to stock (goal: <= 1.02), and NegToMe's overhead
over negguide's standard path (batch mode, merging inside the paper's window: the first fifth of the run for
SDXL and SD3, the first tenth for Flux).
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch
from diffusers import (
    AutoencoderKL,
    EulerDiscreteScheduler,
    FlowMatchEulerDiscreteScheduler,
    FluxPipeline,
    FluxTransformer2DModel,
    SD3Transformer2DModel,
    StableDiffusion3Pipeline,
    StableDiffusionXLPipeline,
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

from negguide import NegToMe
from negguide.pipelines import FluxNegGuidePipeline, StableDiffusion3NegGuidePipeline, StableDiffusionXLNegGuidePipeline

FIXTURES = Path(__file__).resolve().parents[1] / "tests" / "fixtures"
WIDTH = 64
"""Hidden size of the text encoders and the denoisers' text inputs."""


def clip(projection: bool) -> CLIPTextModel:
    config = CLIPTextConfig(
        bos_token_id=0,
        eos_token_id=2,
        pad_token_id=1,
        hidden_size=WIDTH,
        intermediate_size=2 * WIDTH,
        num_attention_heads=4,
        num_hidden_layers=2,
        vocab_size=1000,
        projection_dim=WIDTH,
    )
    return CLIPTextModelWithProjection(config) if projection else CLIPTextModel(config)


def t5() -> T5EncoderModel:
    config = T5Config(
        vocab_size=1000, d_model=WIDTH, d_kv=16, d_ff=2 * WIDTH, num_layers=2, num_heads=4, dropout_rate=0.0
    )
    return T5EncoderModel(config)


def vae(latent_channels: int, **flow: float) -> AutoencoderKL:
    return AutoencoderKL(
        block_out_channels=[8, 16, 16, 16],
        down_block_types=["DownEncoderBlock2D"] * 4,
        up_block_types=["UpDecoderBlock2D"] * 4,
        latent_channels=latent_channels,
        norm_num_groups=8,
        **flow,
    )


def clip_tokenizer() -> CLIPTokenizer:
    return CLIPTokenizer.from_pretrained(FIXTURES / "tokenizer")


def t5_tokenizer() -> T5TokenizerFast:
    return T5TokenizerFast.from_pretrained(FIXTURES / "t5_tokenizer")


def sdxl() -> StableDiffusionXLPipeline:
    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        sample_size=32,
        block_out_channels=(64, 128),
        layers_per_block=1,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        attention_head_dim=(4, 8),
        use_linear_projection=True,
        addition_embed_type="text_time",
        addition_time_embed_dim=16,
        transformer_layers_per_block=(1, 2),
        projection_class_embeddings_input_dim=6 * 16 + WIDTH,
        cross_attention_dim=2 * WIDTH,
        norm_num_groups=32,
    )
    scheduler = EulerDiscreteScheduler(
        beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", steps_offset=1
    )
    return StableDiffusionXLPipeline(
        unet=unet,
        scheduler=scheduler,
        vae=vae(4),
        text_encoder=clip(projection=False),
        text_encoder_2=clip(projection=True),
        tokenizer=clip_tokenizer(),
        tokenizer_2=clip_tokenizer(),
        add_watermarker=False,
    )


def sd3() -> StableDiffusion3Pipeline:
    torch.manual_seed(0)
    transformer = SD3Transformer2DModel(
        sample_size=32,
        patch_size=2,
        in_channels=16,
        out_channels=16,
        num_layers=4,
        attention_head_dim=32,
        num_attention_heads=4,
        joint_attention_dim=WIDTH,
        caption_projection_dim=128,
        pooled_projection_dim=2 * WIDTH,
    )
    return StableDiffusion3Pipeline(
        transformer=transformer,
        scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0),
        vae=vae(16, shift_factor=0.0609, scaling_factor=1.5035),
        text_encoder=clip(projection=True),
        text_encoder_2=clip(projection=True),
        text_encoder_3=t5(),
        tokenizer=clip_tokenizer(),
        tokenizer_2=clip_tokenizer(),
        tokenizer_3=t5_tokenizer(),
    )


def flux() -> FluxPipeline:
    torch.manual_seed(0)
    transformer = FluxTransformer2DModel(
        patch_size=1,
        in_channels=64,
        num_layers=2,
        num_single_layers=4,
        attention_head_dim=32,
        num_attention_heads=4,
        joint_attention_dim=WIDTH,
        pooled_projection_dim=WIDTH,
        axes_dims_rope=[8, 12, 12],
        guidance_embeds=True,
    )
    return FluxPipeline(
        transformer=transformer,
        scheduler=FlowMatchEulerDiscreteScheduler(use_dynamic_shifting=True),
        vae=vae(16, shift_factor=0.1159, scaling_factor=0.3611),
        text_encoder=clip(projection=False),
        text_encoder_2=t5(),
        tokenizer=clip_tokenizer(),
        tokenizer_2=t5_tokenizer(),
    )


FAMILIES: dict[str, tuple[Callable, type, dict, NegToMe]] = {
    "sdxl": (sdxl, StableDiffusionXLNegGuidePipeline, {}, NegToMe(stop=0.2)),
    "sd3": (
        sd3,
        StableDiffusion3NegGuidePipeline,
        {"max_sequence_length": 32},
        NegToMe(layers=r"^transformer_blocks\."),
    ),
    "flux": (
        flux,
        FluxNegGuidePipeline,
        {"max_sequence_length": 32, "true_cfg_scale": 4.0},
        NegToMe(layers=r"transformer_blocks\.", threshold=0.65, stop=0.1),
    ),
}


def measure(family: str, runs: int, steps: int) -> list[tuple[str, float]]:
    """Median CPU seconds per call of stock, negguide and negguide + NegToMe."""
    build, cls, extra, negtome = FAMILIES[family]
    stock = build()
    ours = cls.from_pipe(stock)
    for pipe in (stock, ours):
        pipe.set_progress_bar_config(disable=True)
    call = {
        "prompt": "a red circle",
        "negative_prompt": "a blue square",
        "num_images_per_prompt": 2,
        "height": 256,
        "width": 256,
        "num_inference_steps": steps,
        "output_type": "latent",
        **extra,
    }
    variants = {"stock": (stock, {}), "negguide": (ours, {}), "negguide + NegToMe": (ours, {"guidance": negtome})}

    def timed(name: str, seed: int) -> tuple[float, torch.Tensor]:
        pipe, more = variants[name]
        start = time.process_time()
        latents = pipe(**call, **more, generator=torch.Generator().manual_seed(seed)).images
        return time.process_time() - start, latents

    reference = timed("stock", 0)[1]
    difference = ((timed("negguide", 0)[1] - reference).abs().max() / reference.abs().max()).item()
    if difference > 1e-5:
        raise SystemExit(
            f"{family}: negguide's standard path differs from stock diffusers by {difference:.1e} (relative)"
        )
    timed("negguide + NegToMe", 0)
    times: dict[str, list[float]] = {name: [] for name in variants}
    for run in range(1, runs + 1):
        for name in variants:
            times[name].append(timed(name, run)[0])
    return [(name, statistics.median(values)) for name, values in times.items()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=9)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--families", nargs="+", choices=list(FAMILIES), default=list(FAMILIES))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    print(
        f"256x256, 2 images, {args.steps} steps, negative prompt, {args.threads} thread(s), median of {args.runs} "
        "alternating runs after warm-up, CPU time"
    )
    print("| family | stock s/call | negguide s/call | ratio to stock | + NegToMe s/call | NegToMe overhead |")
    print("|---|---|---|---|---|---|")
    for family in args.families:
        (_, stock), (_, ours), (_, negtome) = measure(family, args.runs, args.steps)
        print(
            f"| {family} | {stock:.3f} | {ours:.3f} | {ours / stock:.3f} | {negtome:.3f} | "
            f"{100 * (negtome / ours - 1):+.1f}% |"
        )


if __name__ == "__main__":
    main()
