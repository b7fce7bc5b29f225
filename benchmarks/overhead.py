"""Time overhead of negguide's standard path against stock diffusers, same components, one process.

    python benchmarks/overhead.py [--runs 9] [--steps 10] [--threads 1]

Builds a randomly initialised UNet of a few million parameters (256x256 images, 32x32 latents), wraps it
in diffusers' `StableDiffusionPipeline` and in `StableDiffusionNegGuidePipeline.from_pipe` of it, checks
that both give the same latents, then times them alternately after one warm-up run each. Prints the
median seconds per call and the time ratio (goal: <= 1.02).
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch
from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

from negguide import Negative, NegativePrompts
from negguide.pipelines import StableDiffusionNegGuidePipeline

TOKENIZER = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "tokenizer"


def components() -> dict:
    torch.manual_seed(0)
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
    vae = AutoencoderKL(
        block_out_channels=[16, 32, 32, 32],
        down_block_types=["DownEncoderBlock2D"] * 4,
        up_block_types=["UpDecoderBlock2D"] * 4,
        latent_channels=4,
        norm_num_groups=8,
    )
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            bos_token_id=0,
            eos_token_id=1,
            pad_token_id=1,
            hidden_size=128,
            intermediate_size=256,
            num_attention_heads=4,
            num_hidden_layers=4,
            vocab_size=1000,
        )
    )
    scheduler = DDIMScheduler(
        beta_schedule="scaled_linear",
        beta_start=0.00085,
        beta_end=0.012,
        clip_sample=False,
        set_alpha_to_one=False,
        steps_offset=1,
    )
    return {
        "unet": unet,
        "vae": vae,
        "text_encoder": text_encoder,
        "tokenizer": CLIPTokenizer.from_pretrained(TOKENIZER),
        "scheduler": scheduler,
        "safety_checker": None,
        "feature_extractor": None,
        "requires_safety_checker": False,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=9)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    stock = StableDiffusionPipeline(**components())
    ours = StableDiffusionNegGuidePipeline.from_pipe(stock)
    for pipe in (stock, ours):
        pipe.set_progress_bar_config(disable=True)
    unet_parameters = sum(p.numel() for p in stock.unet.parameters()) / 1e6
    call = {"prompt": "a red circle", "num_inference_steps": args.steps, "output_type": "latent"}
    variants = {
        "stock diffusers, negative_prompt": (stock, {"negative_prompt": "blue square"}),
        "negguide, negative_prompt": (ours, {"negative_prompt": "blue square"}),
        "negguide, windowed Negative": (
            ours,
            {"guidance": NegativePrompts([Negative("blue square", start=0.2)])},
        ),
    }

    def timed(name: str, seed: int) -> tuple[float, torch.Tensor]:
        pipe, extra = variants[name]
        start = time.perf_counter()
        latents = pipe(**call, **extra, generator=torch.Generator().manual_seed(seed)).images
        return time.perf_counter() - start, latents

    reference = timed("stock diffusers, negative_prompt", 0)[1]
    if not torch.equal(timed("negguide, negative_prompt", 0)[1], reference):
        raise SystemExit("negguide's standard path does not reproduce stock diffusers")
    timed("negguide, windowed Negative", 0)
    times: dict[str, list[float]] = {name: [] for name in variants}
    for run in range(1, args.runs + 1):
        for name in variants:
            times[name].append(timed(name, run)[0])

    baseline = statistics.median(times["stock diffusers, negative_prompt"])
    print(
        f"UNet {unet_parameters:.1f}M parameters, 256x256, {args.steps} steps, CFG 7.5, {args.threads} thread(s), "
        f"median of {args.runs} alternating runs after warm-up"
    )
    print("| pipeline | median s/call | ratio to stock |")
    print("|---|---|---|")
    for name, values in times.items():
        median = statistics.median(values)
        print(f"| {name} | {median:.3f} | {median / baseline:.3f} |")


if __name__ == "__main__":
    main()
