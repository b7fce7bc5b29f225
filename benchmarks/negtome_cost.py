"""Time cost of NegToMe's diversity mode against the same run without it, one process.

    python benchmarks/negtome_cost.py                          # the embedded shapes-world model
    python benchmarks/negtome_cost.py --model /path/to/model   # another diffusers folder
    python benchmarks/negtome_cost.py --sd15 --steps 5         # an SD 1.5 sized UNet, random weights, 512x512

The embedded model runs at its default settings (64x64, 20 steps, CFG 7.5) with 4 images of one prompt.
``--sd15`` builds a UNet with Stable Diffusion 1.5's configuration (860M parameters) and random weights, with a
one-layer text encoder and a small VAE (only its scale factor is used: the runs stop at the latents), and
makes 512x512 images, ``--images`` of one prompt. Each variant (no NegToMe, NegToMe anchored on the first
image, NegToMe with the nearest other image) runs once to warm up, then ``--runs`` times, the variants
alternating; the table holds the median seconds per call and the ratio to the run without NegToMe. NegToMe
acts in its default window, the first fifth of the steps, as in the paper (SDXL: timesteps 1000 -> 800).
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch
from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

import negguide
from negguide import NegToMe
from negguide.pipelines import StableDiffusionNegGuidePipeline

TOKENIZER = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "tokenizer"
PROMPT = "a red circle"


def sd15_pipeline() -> StableDiffusionNegGuidePipeline:
    """Stable Diffusion 1.5's UNet configuration with random weights; a tiny text encoder and VAE."""
    torch.manual_seed(0)
    unet = UNet2DConditionModel(sample_size=64, cross_attention_dim=768, attention_head_dim=8)
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            bos_token_id=0,
            eos_token_id=1,
            pad_token_id=1,
            hidden_size=768,
            intermediate_size=768,
            num_attention_heads=12,
            num_hidden_layers=1,
            vocab_size=1000,
        )
    )
    vae = AutoencoderKL(
        block_out_channels=[8, 8, 8, 8],
        down_block_types=["DownEncoderBlock2D"] * 4,
        up_block_types=["UpDecoderBlock2D"] * 4,
        latent_channels=4,
        norm_num_groups=8,
    )
    scheduler = DDIMScheduler(
        beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012, clip_sample=False, set_alpha_to_one=False
    )
    return StableDiffusionNegGuidePipeline(
        unet=unet,
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=CLIPTokenizer.from_pretrained(TOKENIZER),
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default=None, help="model folder or hub id (default: the embedded model)")
    parser.add_argument("--sd15", action="store_true", help="an SD 1.5 sized UNet with random weights, 512x512")
    parser.add_argument("--steps", type=int, default=None, help="default: 20 (embedded model), 5 (--sd15)")
    parser.add_argument(
        "--images", type=int, default=None, help="images of the prompt; default 4 (embedded), 2 (--sd15)"
    )
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    if args.sd15:
        pipe, size, steps, images = sd15_pipeline(), 512, args.steps or 5, args.images or 2
    else:
        pipe, size, steps, images = (
            negguide.load_pipeline(args.model, device="cpu"),
            64,
            args.steps or 20,
            args.images or 4,
        )
    pipe.set_progress_bar_config(disable=True)
    call = {
        "prompt": PROMPT,
        "num_images_per_prompt": images,
        "num_inference_steps": steps,
        "guidance_scale": 7.5,
        "height": size,
        "width": size,
        "output_type": "latent",
    }
    variants = {
        "without NegToMe": None,
        "NegToMe, anchor first": NegToMe(),
        "NegToMe, anchor nearest": NegToMe(anchor="nearest"),
    }

    def timed(name: str) -> float:
        generator = [torch.Generator().manual_seed(seed) for seed in range(images)]
        start = time.perf_counter()
        pipe(**call, guidance=variants[name], generator=generator)
        return time.perf_counter() - start

    for name in variants:
        timed(name)
    times: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(args.runs):
        for name in variants:
            times[name].append(timed(name))

    parameters = sum(p.numel() for p in pipe.unet.parameters()) / 1e6
    active = sum(NegToMe().start <= i / steps < NegToMe().stop for i in range(steps))
    print(
        f"UNet {parameters:.0f}M parameters, {size}x{size}, {images} images of one prompt, {steps} steps ({active} with "
        f"NegToMe), CFG 7.5, {args.threads} thread(s), median of {args.runs} alternating runs after warm-up\n"
    )
    print("| run | median s/call | ratio |")
    print("|---|---|---|")
    baseline = statistics.median(times["without NegToMe"])
    for name, values in times.items():
        median = statistics.median(values)
        print(f"| {name} | {median:.3f} | {median / baseline:.3f} |")


if __name__ == "__main__":
    main()
