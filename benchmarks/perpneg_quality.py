"""Perp-Neg against the standard negative prompt on the shapes world: what is removed, what is kept.

    python benchmarks/perpneg_quality.py                      # the embedded model, 64 seeds, all cases
    python benchmarks/perpneg_quality.py --model /path/to/model --seeds 4 --per-case   # any SD-style folder
    python benchmarks/perpneg_quality.py --seeds 8 --weights 1 --modes 's*w' --store DIR   # a quick run

Every negative case of ``negguide.shapes.cases.negative_cases()`` runs over ``--seeds`` seeds (all seeds of a
case in one pipeline call, one CPU generator per image) with each method:

* ``none``: the prompt alone; ``standard``: the negative as ``negative_prompt`` (``e_n + s * (e_p - e_n)``);
* ``Perp-Neg <projection> <mode> w=<w>`` (Armandpour et al., arXiv 2304.04968): ``PerpNeg([Negative(negative,
  weight=w)])`` with the projection over the whole latent (``global``, the paper's) or per latent position
  (``local``, ``patch_size=1``), and the weights scaled by the guidance scale (``s*w``, every implementation)
  or not (``w``), for each ``--weights`` value.

The detector (``negguide.shapes.detect``) judges every image. *Removed* is the share of images where no object
matches the negative beyond the objects the prompt names (so an "attribute" negative like "red" under "a red
circle" counts as removed when the red companion is gone and the red circle stays); *kept* is the share of
images holding every object the prompt names (``negguide.metrics.judge(...).named``). The table gives
"removed % / kept %" per method and kind of case (``overlap-colour``, ``overlap-shape``: the negative shares a
colour or a shape with the prompt; ``attribute``: the negative is part of the prompt; ``contradiction``: the
negative is the prompt; ``companion``: no overlap); ``--per-case`` adds one row per case. The tables are printed
and stored (`record.save`).
"""

from __future__ import annotations

import argparse
import time
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

import record
import torch

import negguide
from negguide import Negative, PerpNeg
from negguide.loading import EMBEDDED_GUIDANCE_SCALE
from negguide.metrics import extra_objects, judge, negative_removed
from negguide.shapes import detect
from negguide.shapes.cases import Case, negative_cases

KINDS = ("overlap-colour", "overlap-shape", "attribute", "contradiction", "companion")
PROJECTIONS = {"global": None, "local": 1}


def methods(weights: Sequence[float], modes: Sequence[str]) -> dict[str, Any]:
    """Method label -> a function of the negative giving the pipeline arguments."""
    table: dict[str, Any] = {
        "none": lambda negative: {},
        "standard": lambda negative: {"negative_prompt": negative},
    }
    for projection, patch_size in PROJECTIONS.items():
        for mode in modes:
            for weight in weights:

                def perp_neg(negative: str, weight=weight, mode=mode, patch_size=patch_size) -> dict[str, Any]:
                    module = PerpNeg([Negative(negative, weight=weight)], weight_mode=mode, patch_size=patch_size)
                    return {"guidance": module}

                table[f"Perp-Neg {projection} {mode} w={weight:g}"] = perp_neg
    return table


def verdicts(pipe, case: Case, kwargs: dict[str, Any], args) -> list[tuple[bool, bool]]:
    """``(removed, kept)`` for every seed of ``case``."""
    results = []
    for begin in range(0, args.seeds, args.batch):
        seeds = range(begin, min(begin + args.batch, args.seeds))
        images = pipe(
            [case.prompt] * len(seeds),
            generator=[torch.Generator().manual_seed(seed) for seed in seeds],
            num_inference_steps=args.steps,
            guidance_scale=args.scale,
            **kwargs,
        ).images
        for image in images:
            detections = detect(image)
            removed = negative_removed(extra_objects(detections, case.prompt), case.negative)
            results.append((removed, judge(detections, case.prompt).named))
    return results


def cell(results: list[tuple[bool, bool]]) -> str:
    n = len(results)
    return f"{100 * sum(r for r, _ in results) / n:.0f} / {100 * sum(k for _, k in results) / n:.0f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default=None, help="model folder or hub id (default: the embedded model)")
    parser.add_argument("--seeds", type=int, default=64)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--scale", type=float, default=EMBEDDED_GUIDANCE_SCALE, help="CFG scale (the embedded model's)")
    parser.add_argument("--weights", type=float, nargs="+", default=[1.0, 5.0])
    parser.add_argument("--modes", nargs="+", choices=["s*w", "w"], default=["s*w", "w"], help="weight conventions")
    parser.add_argument("--batch", type=int, default=64, help="images per pipeline call")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--cases", type=int, default=None, help="only the first N cases (a quick check)")
    parser.add_argument("--per-case", action="store_true", help="also print one row per case")
    record.add_store_argument(parser)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    pipe = negguide.load_pipeline(args.model)
    pipe.set_progress_bar_config(disable=True)
    cases = negative_cases()[: args.cases]
    table = methods(args.weights, args.modes)
    started = time.perf_counter()
    by_case = {
        (case, name): verdicts(pipe, case, make(case.negative), args) for case in cases for name, make in table.items()
    }

    by_kind: dict[tuple[str, str], list[tuple[bool, bool]]] = defaultdict(list)
    for (case, name), results in by_case.items():
        by_kind[case.kind, name] += results
    kinds = [kind for kind in KINDS if any(case.kind == kind for case in cases)]
    run = f"{args.seeds} seeds per case, {args.steps} steps, CFG {args.scale}"
    tables = [
        record.table(
            f"Removed % / kept % by kind of case ({run})",
            ["method", *(f"{kind} ({sum(c.kind == kind for c in cases)})" for kind in kinds)],
            [[name, *(cell(by_kind[kind, name]) for kind in kinds)] for name in table],
            note="Removed: no object matches the negative beyond those the prompt names; kept: every object the "
                 "prompt names is there. Global: one projection over the whole latent (the paper's); local: per "
                 "latent position. s*w: the weights grow with the guidance scale; w: they do not.",
        )
    ]
    if args.per_case:
        tables.append(record.table(
            f"Removed % / kept % per case ({run})",
            ["kind", "prompt", "negative", *table],
            [[case.kind, case.prompt, case.negative, *(cell(by_case[case, name]) for name in table)] for case in cases],
        ))
    results = {
        "title": "Perp-Neg against the standard negative",
        "summary": (
            "How often each method removes the negative's object and keeps the prompted ones, per kind of case: the "
            "negative shares the prompted object's colour or shape (overlap), is part of the prompt (attribute), is "
            "the prompt (contradiction), or shares nothing with it (companion)."
        ),
        "tables": tables,
    }
    record.show(results)
    print(f"\n{len(cases) * len(table) * args.seeds} images in {time.perf_counter() - started:.0f} s")
    settings = {"seeds": args.seeds, "steps": args.steps, "scale": args.scale, "weights": args.weights,
                "modes": args.modes, "cases": args.cases, "per_case": args.per_case}
    print(record.save("perpneg_quality", settings, results, model=record.model_identity(args.model),
                      folder=args.store))


if __name__ == "__main__":
    main()
