"""Time cost of NegToMe's diversity mode against the same run without it, one process.

    python benchmarks/negtome_cost.py                          # the embedded shapes-world model
    python benchmarks/negtome_cost.py --model /path/to/model   # another diffusers folder
    python benchmarks/negtome_cost.py --sd15                   # an SD 1.5 sized UNet, random weights, 512x512

The embedded model runs at its default settings (64x64, 20 steps, CFG 5) with 4 images of one prompt.
``--sd15`` builds a UNet with Stable Diffusion 1.5's configuration (860M parameters) and random weights, a
one-layer text encoder and a small VAE (only its scale factor is used: the runs stop at the latents), and
makes 512x512 images; by default 2 images, one step, no CFG (CFG doubles every row alike), so that a CPU
can afford it. Each variant (no NegToMe, NegToMe anchored on the first image, NegToMe with the nearest
other image) runs once to warm up, then ``--runs`` times, the variants alternating (`timing.alternating`, on the
process's CPU time, the steadier measure on a shared machine). The table holds the median CPU seconds per call,
the ratio to the run without NegToMe, and that ratio projected to a run of which a fifth of the steps lie in
NegToMe's window (its default, the paper's SDXL window of timesteps 1000 -> 800): ``1 + (ratio - 1) * 0.2 /
(share of this run's steps in the window)``. ``--store DIR`` says where the run is kept.
"""

from __future__ import annotations

import argparse
import time

import record
import torch
from diffusers import AutoencoderKL, UNet2DConditionModel
from timing import alternating
from transformers import CLIPTextConfig, CLIPTextModel

import negguide
from negguide import NegToMe
from negguide.branches import Step
from negguide.loading import EMBEDDED_GUIDANCE_SCALE
from negguide.pipelines import StableDiffusionNegGuidePipeline
from negguide.testing import clip_tokenizer, ddim

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
    return StableDiffusionNegGuidePipeline(
        unet=unet,
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=clip_tokenizer(),
        scheduler=ddim(),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default=None, help="model folder or hub id (default: the embedded model)")
    parser.add_argument("--sd15", action="store_true", help="an SD 1.5 sized UNet with random weights")
    parser.add_argument("--size", type=int, default=None, help="image side; default 64, or 512 with --sd15")
    parser.add_argument("--steps", type=int, default=None, help="default 20, or 1 with --sd15")
    parser.add_argument("--images", type=int, default=None, help="images of the prompt; default 4, or 2 with --sd15")
    parser.add_argument(
        "--scale", type=float, default=None, help="CFG scale; default the embedded model's, or 1 with --sd15"
    )
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    record.add_store_argument(parser)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    defaults = (512, 1, 2, 1.0) if args.sd15 else (64, 20, 4, EMBEDDED_GUIDANCE_SCALE)
    size, steps, images, scale = (
        given if given is not None else default
        for given, default in zip((args.size, args.steps, args.images, args.scale), defaults)
    )
    pipe = sd15_pipeline() if args.sd15 else negguide.load_pipeline(args.model, device="cpu")
    pipe.set_progress_bar_config(disable=True)
    call = {
        "prompt": PROMPT,
        "num_images_per_prompt": images,
        "num_inference_steps": steps,
        "guidance_scale": scale,
        "height": size,
        "width": size,
        "output_type": "latent",
    }
    variants = {
        "without NegToMe": None,
        "NegToMe, anchor first": NegToMe(),
        "NegToMe, anchor nearest": NegToMe(anchor="nearest"),
    }

    def runner(name: str):
        return lambda _: pipe(
            **call, guidance=variants[name], generator=[torch.Generator().manual_seed(seed) for seed in range(images)]
        )

    times = alternating({name: runner(name) for name in variants}, args.runs, clock=time.process_time)

    parameters = sum(p.numel() for p in pipe.unet.parameters()) / 1e6
    active = sum(NegToMe().is_active(Step(i, steps, 0.0)) for i in range(steps))
    base = times["without NegToMe"].median
    rows = []
    for name, timing in times.items():
        ratio = timing.median / base
        rows.append([name, timing.median, ratio, 1 + (ratio - 1) * 0.2 * steps / active])
    model = "sd15-sized-random" if args.sd15 else record.model_identity(args.model)
    results = {
        "title": "Cost of NegToMe",
        "summary": (
            "NegToMe's diversity mode against the same run without it. The cost is one similarity matmul per "
            "merged image and hooked layer inside the window, as large as the layer's own attention scores; the "
            "nearest anchor matches every image against all the others of its prompt. Goal: at most 3% over the "
            "run without it."
        ),
        "tables": [
            record.table(
                f"{model}: UNet {parameters:.0f}M parameters, {size}x{size}, {images} images of one prompt, {steps} "
                f"steps ({active} in NegToMe's window), CFG {scale}, {args.threads} thread(s), median of "
                f"{args.runs} alternating runs after warm-up, CPU seconds",
                ["run", "CPU s/call", "ratio", "ratio, a fifth of the steps in the window"],
                rows,
                formats=[None, ".3f", ".3f", ".3f"],
            )
        ],
        "timings": {name: timing.to_dict() for name, timing in times.items()},
    }
    record.show(results)
    settings = {"runs": args.runs, "threads": args.threads, "sd15": args.sd15, "size": size, "steps": steps,
                "images": images, "scale": scale}
    print(record.save("negtome_cost", settings, results, model=model, folder=args.store))


if __name__ == "__main__":
    main()
