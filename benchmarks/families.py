"""Time cost of negguide's SDXL, SD3 and Flux pipelines against stock diffusers, same components, one process.

    python benchmarks/families.py [--runs 9] [--steps 4] [--threads 1] [--families sdxl sd3 flux] [--store DIR]

For each family, builds the small randomly initialised components of `negguide.testing` (256x256 images, 32x32
latents; a few million parameters in the denoiser), wraps them in the stock pipeline and in negguide's ``from_pipe`` of it, checks that
both give the same latents (to float rounding: 1e-5 of their largest value), then times them alternately after
one warm-up run each (`timing.alternating`): two images of one prompt per call, with a negative prompt (Flux: true CFG,
``true_cfg_scale=4``). Times are the process's CPU time, steadier than wall time on a shared machine. Prints
the median seconds per call, the standard path's time ratio to stock (goal: <= 1.02), and NegToMe's overhead
over negguide's standard path (batch mode, merging inside the paper's window: the first fifth of the run for
SDXL and SD3, the first tenth for Flux).
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import record
import torch
from diffusers import FluxPipeline, StableDiffusion3Pipeline, StableDiffusionXLPipeline
from timing import Timing, alternating

from negguide import NegToMe
from negguide.pipelines import FluxNegGuidePipeline, StableDiffusion3NegGuidePipeline, StableDiffusionXLNegGuidePipeline
from negguide.testing import flux_components, sd3_components, sdxl_components

FAMILIES: dict[str, tuple[Callable, type, dict, NegToMe]] = {
    "sdxl": (
        lambda: StableDiffusionXLPipeline(**sdxl_components("small")),
        StableDiffusionXLNegGuidePipeline,
        {},
        NegToMe(stop=0.2),
    ),
    "sd3": (
        lambda: StableDiffusion3Pipeline(**sd3_components("small")),
        StableDiffusion3NegGuidePipeline,
        {"max_sequence_length": 32},
        NegToMe(layers=r"^transformer_blocks\."),
    ),
    "flux": (
        lambda: FluxPipeline(**flux_components("small")),
        FluxNegGuidePipeline,
        {"max_sequence_length": 32, "true_cfg_scale": 4.0},
        NegToMe(layers=r"transformer_blocks\.", threshold=0.65, stop=0.1),
    ),
}


def measure(family: str, runs: int, steps: int) -> dict[str, Timing]:
    """CPU seconds per call of stock, negguide and negguide + NegToMe."""
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

    def runner(name: str):
        pipe, more = variants[name]
        return lambda seed: pipe(**call, **more, generator=torch.Generator().manual_seed(seed)).images

    reference = runner("stock")(0)
    difference = ((runner("negguide")(0) - reference).abs().max() / reference.abs().max()).item()
    if difference > 1e-5:
        raise SystemExit(
            f"{family}: negguide's standard path differs from stock diffusers by {difference:.1e} (relative)"
        )
    return alternating({name: runner(name) for name in variants}, runs, clock=time.process_time)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=9)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--families", nargs="+", choices=list(FAMILIES), default=list(FAMILIES))
    record.add_store_argument(parser)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    measured = {family: measure(family, args.runs, args.steps) for family in args.families}
    rows = []
    for family, times in measured.items():
        stock, ours, negtome = (times[name].median for name in ("stock", "negguide", "negguide + NegToMe"))
        rows.append([family, stock, ours, ours / stock, negtome, 100 * (negtome / ours - 1)])
    results = {
        "title": "Cost on SDXL, SD3 and Flux",
        "summary": (
            "Each family's standard path against the stock diffusers pipeline on the same small randomly "
            "initialised components (the same latents to float rounding), and NegToMe's overhead over the standard "
            "path in batch mode, merging inside the paper's window. Flux runs true CFG: the stock pipeline runs its "
            "two branches as two forwards, negguide as one batched forward."
        ),
        "tables": [
            record.table(
                f"256x256, 2 images, {args.steps} steps, negative prompt, {args.threads} thread(s), median of "
                f"{args.runs} alternating runs after warm-up, CPU seconds",
                ["family", "stock s/call", "negguide s/call", "ratio to stock", "+ NegToMe s/call",
                 "NegToMe overhead %"],
                rows,
                formats=[None, ".3f", ".3f", ".3f", ".3f", "+.1f"],
            )
        ],
        "figures": [
            {
                "title": "Time ratio to the stock pipeline",
                "kind": "bar",
                "x": list(measured),
                "series": {"negguide / stock": [row[3] for row in rows]},
                "xlabel": "family",
                "ylabel": "ratio",
            }
        ],
        "timings": {family: {name: t.to_dict() for name, t in times.items()} for family, times in measured.items()},
    }
    record.show(results)
    settings = {"runs": args.runs, "steps": args.steps, "threads": args.threads, "families": args.families}
    print(record.save("families", settings, results, model="sdxl/sd3/flux-small-random", folder=args.store))


if __name__ == "__main__":
    main()
