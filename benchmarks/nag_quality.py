"""Companion removal on an embedded model: no negative, CFG negatives and NAG side by side, with their cost.

    python benchmarks/nag_quality.py --model shapes-world-distilled      # one evaluation per step
    python benchmarks/nag_quality.py --model shapes-world --method standard \\
        --method 'standard+nag'                                          # the CFG model, NAG on top
    python benchmarks/nag_quality.py --quick                             # 8 seeds, 2 timing rounds
    python benchmarks/nag_quality.py --study --first-seed 1000 --seeds 100 --kinds companion \
        --method nag --method 'nag:{"alpha": 0.75}'                      # settings, on other seeds

Every companion case of the shapes-world suite (``negguide.shapes.cases.negative_cases``: a one-object prompt
and its frequent unnamed companion as the negative; ``companion`` cases share neither colour nor shape with the
prompted object, ``overlap-*`` cases share one) runs over ``--seeds`` seeds with each method, and the detector
says whether the companion is still there and whether the prompted object is kept. A method is ``none``,
``standard`` (the case's negative as the call's ``negative_prompt``: plain CFG on the CFG model, true CFG with
``--true-cfg-scale`` on the distilled one), or a registered module name with optional JSON settings,
``NAME:{...}``, built from the negative (``NAG``: Chen et al., arXiv 2505.21179); ``+`` joins methods into one
call (``standard+nag``: the CFG negative and NAG together).

Goal (the ``companion`` cases whose companion shows in at least ``--min-rate`` of the plain images): each NAG
method cuts the companion's rate to at most a third while keeping the prompted object in >= 90% of images.

Cost: each method's seconds per image on one case, ``--cost-images`` images a call, alternating rounds
(`benchmarks.timing.alternating`), as a ratio to ``none``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from collections.abc import Sequence
from typing import Any

import torch
from record import add_store_argument, model_identity, save, show, table
from timing import alternating

import negguide
from negguide.loading import DISTILLED_MODEL_NAME, EMBEDDED_GUIDANCE_SCALE
from negguide.metrics import judge
from negguide.modules.base import Combiner, registered
from negguide.shapes import detect
from negguide.shapes.cases import negative_cases

COMPANION_KINDS = ("companion", "overlap-colour", "overlap-shape")


def call_kwargs(method: str, negative: str, true_cfg_scale: float | None) -> dict[str, Any]:
    """The pipeline arguments that apply ``method`` (``+``-joined parts) with ``negative``."""
    if method == "none":
        return {}
    kwargs: dict[str, Any] = {}
    modules = []
    for part in method.split("+"):
        if part == "standard":
            kwargs["negative_prompt"] = negative
            continue
        name, _, settings = part.partition(":")
        module = registered(name, "--method").from_negative_prompt(negative)
        if settings:
            module = dataclasses.replace(module, **json.loads(settings))
        modules.append(module)
        if isinstance(module, Combiner):
            kwargs["negative_prompt"] = negative
    if modules:
        kwargs["guidance"] = modules
    if true_cfg_scale is not None and "negative_prompt" in kwargs:
        kwargs["true_cfg_scale"] = true_cfg_scale
    return kwargs


def generate(pipe, prompt: str, seeds: Sequence[int], kwargs: dict[str, Any], args) -> list:
    images = []
    for begin in range(0, len(seeds), args.batch):
        chunk = seeds[begin : begin + args.batch]
        images += pipe(
            [prompt] * len(chunk),
            generator=[torch.Generator().manual_seed(s) for s in chunk],
            num_inference_steps=args.steps,
            guidance_scale=args.scale,
            height=64,
            width=64,
            **kwargs,
        ).images
    return images


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default=DISTILLED_MODEL_NAME, help="an embedded model's name, or a folder")
    parser.add_argument("--seeds", type=int, default=200)
    parser.add_argument("--first-seed", type=int, default=0, help="seeds run from here (other seeds to tune on)")
    parser.add_argument("--kinds", nargs="+", choices=COMPANION_KINDS, default=list(COMPANION_KINDS),
                        help="the kinds of case to run (default: all)")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument(
        "--scale",
        type=float,
        default=EMBEDDED_GUIDANCE_SCALE,
        help="guidance_scale (the CFG scale, or the distilled model's embedded scale)",
    )
    parser.add_argument(
        "--true-cfg-scale", type=float, default=1.5, help="true CFG scale of 'standard' on a guidance-distilled model"
    )
    parser.add_argument("--method", action="append", help="repeatable; default: standard, nag")
    parser.add_argument("--min-rate", type=float, default=25.0, help="companion cases counted in the goal, %%")
    parser.add_argument("--batch", type=int, default=50)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--cost-images", type=int, default=8)
    parser.add_argument("--runs", type=int, default=5, help="timing rounds")
    parser.add_argument("--quick", action="store_true", help="8 seeds and 2 timing rounds")
    parser.add_argument("--study", action="store_true",
                        help="a study of settings: stored apart (benchmark name ending '_settings'), titled so")
    add_store_argument(parser)
    args = parser.parse_args()
    if args.quick:
        args.seeds, args.runs = 8, 2
    methods = ["none", *(args.method or ["standard", "nag"])]
    torch.set_num_threads(args.threads)
    pipe = negguide.load_pipeline(args.model, device="cpu")
    pipe.set_progress_bar_config(disable=True)
    distilled = pipe.unet.config.time_cond_proj_dim is not None
    true_cfg_scale = args.true_cfg_scale if distilled else None
    seeds = list(range(args.first_seed, args.first_seed + args.seeds))
    started = time.perf_counter()

    rows, goal = [], {method: [] for method in methods if "nag" in method}
    for case in negative_cases():
        if case.kind not in args.kinds:
            continue
        rates, plain = {}, None
        for method in methods:
            images = generate(pipe, case.prompt, seeds, call_kwargs(method, case.negative, true_cfg_scale), args)
            found = [detect(image) for image in images]
            plain = plain or found
            verdicts = [judge(d, case.prompt, case.negative, plain=p) for d, p in zip(found, plain)]
            present = 100 * sum(not v.negative_removed for v in verdicts) / len(verdicts)
            kept = 100 * sum(v.kept for v in verdicts) / len(verdicts)
            rates[method] = present, kept
            rows.append([case.kind, case.prompt, case.negative, method, present, kept])
        if case.kind == "companion" and rates["none"][0] >= args.min_rate:
            for method, met in goal.items():
                present, kept = rates[method]
                met.append(present <= rates["none"][0] / 3 and kept >= 90)

    cost_case = next(case for case in negative_cases() if case.kind == "companion")
    call = {
        "num_inference_steps": args.steps,
        "guidance_scale": args.scale,
        "height": 64,
        "width": 64,
        "output_type": "latent",
    }

    def run(method: str):
        kwargs = {**call, **call_kwargs(method, cost_case.negative, true_cfg_scale)}
        return lambda round_: pipe(
            [cost_case.prompt] * args.cost_images,
            generator=[torch.Generator().manual_seed(100 * round_ + i) for i in range(args.cost_images)],
            **kwargs,
        )

    timings = alternating({method: run(method) for method in methods}, args.runs)
    per_image = {method: timing.median / args.cost_images for method, timing in timings.items()}
    elapsed = time.perf_counter() - started

    kind = f"distilled, embedded scale {args.scale}" if distilled else f"CFG {args.scale}"
    true_cfg = f", true CFG {true_cfg_scale} for 'standard'" if distilled else ""
    results = {
        "title": (f"NAG's settings on {args.model}, seeds {seeds[0]} to {seeds[-1]}" if args.study
                  else f"Companion removal on {args.model}"),
        "summary": "Each one-object prompt with its frequent unnamed companion as the negative. 'present' is the share "
        "of images still holding the companion (recoloured, reshaped or replaced in place, against the same seed's image "
        "without a negative, counts as present), 'kept' the share holding the prompted object; overlap cases share "
        "the prompted object's colour or shape with the companion.",
        "tables": [
            table(
                f"Companion cases ({kind}{true_cfg}), {args.seeds} seeds from {args.first_seed}, {args.steps} steps",
                ["kind", "prompt", "negative", "method", "present %", "kept %"],
                rows,
                [None, None, None, None, ".1f", ".1f"],
            ),
            table(
                f"Goal: 'companion' cases whose companion shows in >= {args.min_rate:g}% without a negative, cut to at "
                "most a third with the prompted object kept in >= 90%",
                ["method", "cases meeting the goal", "cases"],
                [[method, sum(met), len(met)] for method, met in goal.items()],
            ),
            table(
                f"Cost per image ({args.cost_images} images a call, {args.steps} steps, median of {args.runs} "
                "alternating rounds)",
                ["method", "seconds per image", "ratio to none"],
                [[method, per_image[method], per_image[method] / per_image["none"]] for method in methods],
                [None, ".4f", ".3f"],
            ),
        ],
        "timings": {method: timing.to_dict() for method, timing in timings.items()},
        "elapsed_s": elapsed,
    }
    show(results)
    print(f"\n{len(rows) * args.seeds} images and the timing in {elapsed:.0f} s")
    settings = {key: value for key, value in vars(args).items() if key != "store"}
    settings["method"] = methods
    name = ("nag_quality_distilled" if distilled else "nag_quality") + ("_settings" if args.study else "")
    path = save(name, settings, results, model_identity(args.model), args.store)
    print(f"stored {path}")


if __name__ == "__main__":
    main()
