"""What NAG costs per step: against one plain evaluation, and against true CFG, which a negative needs otherwise on
a guidance-distilled model.

    python benchmarks/nag_cost.py               # all three settings, stored in benchmarks/runs/
    python benchmarks/nag_cost.py --quick       # 2 timing rounds, fewer steps

NAG (Chen et al., arXiv 2505.21179) runs the patched attention layers' image queries once more against the
negative's keys and values; the rest of the network runs once. Three settings, each timed in one process with
alternating rounds (`benchmarks.timing.alternating`), median per denoising step:

* the distilled shapes-world model (``"shapes-world-distilled"``), ``--embedded-images`` images at 64x64: plain,
  NAG (one evaluation per step), true CFG with the negative (two), and its teacher (``"shapes-world"``) at CFG
  (two): the cost of a distilled step against a CFG step, same batch (goal: <= 0.6x);
* an SD 1.5-shaped UNet with random weights (its published configuration, 860M parameters) at ``--size`` (256 by
  default: 32x32 latents, 1,024 image tokens at the first level), ``guidance_scale=1``: plain and NAG
  (goal: NAG <= 1.25x on UNets);
* the Flux-shaped small components of `negguide.testing` (a guidance-distilled transformer with joint and single
  blocks), 256x256: plain, NAG, true CFG (goal: NAG cheaper than true CFG).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

import torch
from diffusers import FluxPipeline
from negtome_cost import sd15_pipeline
from record import add_store_argument, model_identity, save, show, table
from timing import Timing, alternating

import negguide
from negguide import NAG
from negguide.loading import DISTILLED_MODEL_NAME, EMBEDDED_GUIDANCE_SCALE, EMBEDDED_MODEL_NAME
from negguide.pipelines import FluxNegGuidePipeline
from negguide.testing import flux_components

PROMPT, NEGATIVE = "a red square", "blue triangle"


def run(pipe, call: dict, extra: dict, images: int) -> Callable[[int], object]:
    """One timed call: ``images`` images of `PROMPT`, seeded by the round."""
    return lambda round_: pipe(
        [PROMPT] * images,
        generator=[torch.Generator().manual_seed(100 * round_ + i) for i in range(images)],
        output_type="latent",
        **call,
        **extra,
    )


def timed(pipe, call: dict, variants: dict[str, dict], images: int, runs: int) -> dict[str, Timing]:
    """Alternating timings of ``variants`` (name -> extra call arguments) of ``pipe(**call)``."""
    return alternating({name: run(pipe, call, extra, images) for name, extra in variants.items()}, runs)


def rows(setting: str, timings: dict[str, Timing], steps: int, base: str) -> list[list]:
    per_step = {name: 1000 * timing.median / steps for name, timing in timings.items()}
    return [[setting, name, value, value / per_step[base]] for name, value in per_step.items()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=5, help="timing rounds")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--images", type=int, default=4, help="images a call, full-size-shaped components")
    parser.add_argument("--embedded-images", type=int, default=50, help="images a call, embedded models")
    parser.add_argument("--size", type=int, default=256, help="image side of the SD 1.5-shaped UNet")
    parser.add_argument("--true-cfg-scale", type=float, default=1.5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="2 timing rounds, 2 steps")
    add_store_argument(parser)
    args = parser.parse_args()
    if args.quick:
        args.runs, args.steps = 2, 2
    torch.set_num_threads(args.threads)
    nag = {"guidance": NAG([NEGATIVE])}
    true_cfg = {"negative_prompt": NEGATIVE, "true_cfg_scale": args.true_cfg_scale}

    teacher = negguide.load_pipeline(EMBEDDED_MODEL_NAME, device="cpu")
    distilled = negguide.load_pipeline(DISTILLED_MODEL_NAME, device="cpu")
    for pipe in (teacher, distilled):
        pipe.set_progress_bar_config(disable=True)
    call = {"num_inference_steps": args.steps, "guidance_scale": EMBEDDED_GUIDANCE_SCALE, "height": 64, "width": 64}
    variants = {"plain": {}, "NAG": nag, "true CFG": true_cfg}
    embedded = {name: run(distilled, call, extra, args.embedded_images) for name, extra in variants.items()}
    embedded[f"{EMBEDDED_MODEL_NAME} teacher, CFG"] = run(teacher, call, {}, args.embedded_images)
    table_rows = rows(
        f"{DISTILLED_MODEL_NAME}, {args.embedded_images} images, 64x64",
        alternating(embedded, args.runs),
        args.steps,
        "plain",
    )

    sd15 = sd15_pipeline()
    sd15.set_progress_bar_config(disable=True)
    call = {"num_inference_steps": args.steps, "guidance_scale": 1.0, "height": args.size, "width": args.size}
    table_rows += rows(
        f"SD 1.5-shaped UNet, random weights, {args.images} images, {args.size}x{args.size}",
        timed(sd15, call, {"plain": {}, "NAG": nag}, args.images, args.runs),
        args.steps,
        "plain",
    )

    flux = FluxNegGuidePipeline.from_pipe(FluxPipeline(**flux_components("small")))
    flux.set_progress_bar_config(disable=True)
    call = {"num_inference_steps": args.steps, "height": 256, "width": 256}
    table_rows += rows(
        f"Flux-shaped small transformer, random weights, {args.images} images, 256x256",
        timed(flux, call, {"plain": {}, "NAG": nag, "true CFG": true_cfg}, args.images, args.runs),
        args.steps,
        "plain",
    )

    results = {
        "title": "NAG's cost per step",
        "summary": "NAG evaluates the network once per step, with the patched attention layers' image queries run once "
        "more against the negative; true CFG evaluates it twice. Medians of alternating rounds in one process.",
        "tables": [
            table(
                f"Milliseconds per denoising step ({args.steps} steps, median of {args.runs} alternating rounds, "
                f"{args.threads} threads; goals: NAG <= 1.25x plain on UNets, NAG < true CFG)",
                ["setting", "variant", "ms per step", "ratio to plain"],
                table_rows,
                [None, None, ".1f", ".3f"],
            )
        ],
    }
    show(results)
    settings = {key: value for key, value in vars(args).items() if key != "store"}
    print(f"stored {save('nag_cost', settings, results, model_identity(DISTILLED_MODEL_NAME), args.store)}")


if __name__ == "__main__":
    main()
