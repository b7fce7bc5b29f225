"""Time overhead of negguide's standard path against stock diffusers, same components, one process.

    python benchmarks/overhead.py [--runs 9] [--steps 10] [--threads 1] [--store DIR]

Builds the small randomly initialised Stable Diffusion components of `negguide.testing` (a UNet of a few million
parameters, 256x256 images, 32x32 latents), wraps them in diffusers' `StableDiffusionPipeline` and in
`StableDiffusionNegGuidePipeline.from_pipe` of it, checks that both give the same latents, then times them
alternately after one warm-up run each (`timing.alternating`). Prints and stores the median seconds per call and
the time ratio (goal: <= 1.02).
"""

from __future__ import annotations

import argparse

import record
import torch
from diffusers import StableDiffusionPipeline
from timing import alternating

from negguide import Negative, NegativePrompts
from negguide.pipelines import StableDiffusionNegGuidePipeline
from negguide.testing import sd_components

STOCK = "stock diffusers, negative_prompt"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=9)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--threads", type=int, default=1)
    record.add_store_argument(parser)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    stock = StableDiffusionPipeline(**sd_components("small"))
    ours = StableDiffusionNegGuidePipeline.from_pipe(stock)
    for pipe in (stock, ours):
        pipe.set_progress_bar_config(disable=True)
    unet_parameters = sum(p.numel() for p in stock.unet.parameters()) / 1e6
    call = {"prompt": "a red circle", "num_inference_steps": args.steps, "output_type": "latent"}
    variants = {
        STOCK: (stock, {"negative_prompt": "blue square"}),
        "negguide, negative_prompt": (ours, {"negative_prompt": "blue square"}),
        "negguide, windowed Negative": (ours, {"guidance": NegativePrompts([Negative("blue square", start=0.2)])}),
    }

    def runner(name: str):
        pipe, extra = variants[name]
        return lambda seed: pipe(**call, **extra, generator=torch.Generator().manual_seed(seed)).images

    if not torch.equal(runner("negguide, negative_prompt")(0), runner(STOCK)(0)):
        raise SystemExit("negguide's standard path does not reproduce stock diffusers")
    times = alternating({name: runner(name) for name in variants}, args.runs)

    baseline = times[STOCK].median
    results = {
        "title": "Overhead of the standard path",
        "summary": (
            "negguide's standard path against stock diffusers on the same randomly initialised UNet: the same "
            "latents, timed alternately in one process (goal: a ratio to stock of at most 1.02)."
        ),
        "tables": [
            record.table(
                f"UNet {unet_parameters:.1f}M parameters, 256x256, {args.steps} steps, CFG 7.5, {args.threads} "
                f"thread(s), median of {args.runs} alternating runs after warm-up",
                ["pipeline", "median s/call", "ratio to stock"],
                [[name, timing.median, timing.median / baseline] for name, timing in times.items()],
                formats=[None, ".3f", ".3f"],
            )
        ],
        "figures": [
            {
                "title": "Seconds per call",
                "kind": "bar",
                "x": list(times),
                "series": {"median s/call": [timing.median for timing in times.values()]},
                "xlabel": "pipeline",
                "ylabel": "seconds",
            }
        ],
        "timings": {name: timing.to_dict() for name, timing in times.items()},
    }
    record.show(results)
    settings = {"runs": args.runs, "steps": args.steps, "threads": args.threads}
    print(record.save("overhead", settings, results, model="sd-small-random", folder=args.store))


if __name__ == "__main__":
    main()
