"""When negatives take effect, measured on the shapes world (Ban et al., arXiv 2406.02965).

    python benchmarks/negative_timing.py                                      # the embedded model, 64 seeds
    python benchmarks/negative_timing.py --model /path/to/model --seeds 8 --steps 8      # a quick check
    python benchmarks/negative_timing.py --out out/timing     # also the mean analysis curve as CSV and PNG
    python benchmarks/negative_timing.py --seeds 12 --store DIR                         # a quick run, stored elsewhere

Image ``i`` (``i < --seeds``) has seed ``i`` and the companion case ``i mod K`` of
``negguide.shapes.cases.negative_cases()``: the kinds ``companion``, ``overlap-colour`` and ``overlap-shape``,
where the prompt names one object ("a red circle") and the negative its frequent, unnamed companion ("red
square"); ``--cases K`` keeps the first K of them (``--cases 1``: every seed on "a red circle"). Every call
holds all images, one CPU generator per image. The detector (``negguide.shapes.detect``) judges every image;
the *plain* image has no negative, and the object's *box* is that of the companion detected in it.

1. Delayed effect: the negative on steps ``[start, 1)`` for ``start`` in 0, 0.1, 0.2, 0.3, 0.5. Over the images
   whose plain image holds the companion: *removed* (no companion left), *kept* (the prompt's object still
   there) and the mean absolute pixel change outside the companion's box (grown by 2 px; pixels in [0, 1]).
   Then the analysis curve (``negguide.analyze_negative(..., apply=False)``: the prompt's own run, with the
   negative measured alongside): per step, the means of ``cos(e_n - e_u, e_p - e_u)``, ``||e_n - e_u||`` and
   the attention mass of the negative's tokens, over all images and split by whether the plain image holds
   the companion, and the onset of the cosine and of the attention mass: the first step at half the range of
   the mean curve, and of the gap between the images with the companion and those without (the negative's
   signal once the prompt has drawn the object; the norm grows and shrinks with the noise level along any run).
2. Reverse activation: over the images whose plain image lacks the companion, how often the negative on
   ``[start, 1)`` makes it appear.
3. Adaptive removal (``negguide.remove_objects``, start 0.2, the linear scan of the paper and a bisection)
   against the negative on every step: success (removed), kept, change outside the box, trials per image,
   and how often bisection picks the linear scan's window.

The tables and the mean analysis curves are printed and stored (`record.save`).
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import PIL.Image
import record
import torch

import negguide
from negguide import Negative, NegativePrompts, analyze_negative, remove_objects
from negguide.analysis import onset_step
from negguide.loading import EMBEDDED_GUIDANCE_SCALE
from negguide.metrics import judge
from negguide.removal import RemovalResult, ShapesDetector, change_outside, first_step
from negguide.shapes import detect
from negguide.shapes.cases import Case, negative_cases

STARTS = (0.0, 0.1, 0.2, 0.3, 0.5)
ADAPTIVE_START = 0.2
KINDS = ("companion", "overlap-colour", "overlap-shape")
RISING = ("cosine", "attention_mass")
"""The measures whose rise marks the negative's onset; ``norm`` follows the noise level along any run."""


def companion_cases(limit: int | None) -> list[Case]:
    return [case for case in negative_cases() if case.kind in KINDS][:limit]


def windowed(pipe, prompts: Sequence[str], negatives: Sequence[str], seeds: Sequence[int], start: float, args):
    """The images with each image's negative on steps ``[start, 1)``."""
    return pipe(
        list(prompts),
        generator=[torch.Generator().manual_seed(seed) for seed in seeds],
        num_inference_steps=args.steps,
        guidance_scale=args.scale,
        guidance=NegativePrompts([Negative(tuple(negatives), start=start)]),
    ).images


def percent(flags: Sequence[bool]) -> str:
    return f"{100 * np.mean(flags):.0f}% (n={len(flags)})" if len(flags) else "n/a (n=0)"


def mean(values: Sequence[float | None], digits: int = 4) -> str:
    """The mean of the values that are not ``None`` (a box covering the whole image has no outside)."""
    values = [value for value in values if value is not None]
    return f"{np.mean(values):.{digits}f}" if values else "n/a"


def kept(image: PIL.Image.Image, prompt: str) -> bool:
    return judge(detect(image), prompt).named


def outside(result: RemovalResult, image: PIL.Image.Image) -> float | None:
    return change_outside(result.plain_image, image, result.box)


def window_cells(
    images: Sequence[PIL.Image.Image],
    present: Sequence[int],
    plain: Sequence[RemovalResult],
    prompts: Sequence[str],
    negatives: Sequence[str],
) -> list[str]:
    """Removed, kept and change outside the box of windowed images, over the images in ``present``."""
    has = ShapesDetector()
    removed = [not has(images[i], negatives[i]) for i in present]
    prompt_kept = [kept(images[i], prompts[i]) for i in present]
    change = [outside(plain[i], images[i]) for i in present]
    return [percent(removed), percent(prompt_kept), mean(change)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default=None, help="model folder or hub id (default: the embedded model)")
    parser.add_argument("--seeds", type=int, default=64, help="images (seeds 0..N-1)")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--scale", type=float, default=EMBEDDED_GUIDANCE_SCALE, help="CFG scale (the embedded model's)")
    parser.add_argument("--cases", type=int, default=None, help="only the first N companion cases")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default=None, help="folder for the mean analysis curve (analysis.csv, .png)")
    record.add_store_argument(parser)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    pipe = negguide.load_pipeline(args.model)
    pipe.set_progress_bar_config(disable=True)
    cases = companion_cases(args.cases)
    seeds = list(range(args.seeds))
    prompts = [cases[i % len(cases)].prompt for i in seeds]
    negatives = [cases[i % len(cases)].negative for i in seeds]
    has = ShapesDetector()
    timings: dict[str, float] = {}

    clock = time.perf_counter()
    linear = remove_objects(
        pipe, prompts, negatives, seeds, start=ADAPTIVE_START, steps=args.steps, guidance_scale=args.scale
    )
    timings["plain + linear scan"] = time.perf_counter() - clock
    present = [i for i, result in enumerate(linear) if result.plain_has_object]
    absent = [i for i, result in enumerate(linear) if not result.plain_has_object]

    clock = time.perf_counter()
    images = {start: windowed(pipe, prompts, negatives, seeds, start, args) for start in STARTS}
    timings["windows"] = time.perf_counter() - clock

    clock = time.perf_counter()
    bisect = []
    if present:
        bisect = remove_objects(
            pipe,
            [prompts[i] for i in present],
            [negatives[i] for i in present],
            [seeds[i] for i in present],
            start=ADAPTIVE_START,
            search="bisect",
            steps=args.steps,
            guidance_scale=args.scale,
        )
    timings["bisection"] = time.perf_counter() - clock

    clock = time.perf_counter()
    curve = analyze_negative(pipe, prompts, negatives, seeds, steps=args.steps, guidance_scale=args.scale, apply=False)
    timings["analysis"] = time.perf_counter() - clock

    kinds = sorted({case.kind for case in cases})
    run = (
        f"{args.seeds} seeds over {len(cases)} companion cases ({', '.join(kinds)}), {args.steps} steps, CFG "
        f"{args.scale}; the plain image holds the companion in {len(present)}"
    )
    tables = []
    rows = [["none (plain)", "0%", percent([kept(linear[i].plain_image, prompts[i]) for i in present]), "0"]]
    for start in STARTS:
        rows.append([f"{start:g}", *window_cells(images[start], present, linear, prompts, negatives)])
    tables.append(record.table(
        f"Delayed effect: the negative on [start, 1), images whose plain image holds the companion ({run})",
        ["start", "removed", "kept", "change outside box"],
        rows,
        note="Kept: the prompt's object is still there; change: mean absolute pixel change outside the companion's "
             "box grown by 2 px, pixels in [0, 1].",
    ))

    groups = {"all": curve}
    if present:
        groups["with companion"] = curve.select(present)
    if absent:
        groups["without"] = curve.select(absent)
    shown = [(metric, name) for metric in curve.metrics for name in groups if metric in RISING or name == "all"]
    series = {f"{metric} ({name})": [float(value) for value in groups[name].mean(metric)] for metric, name in shown}
    onsets = []
    for metric in [metric for metric in curve.metrics if metric in RISING]:
        for name, group in groups.items():
            onsets.append([metric, name, "mean curve", group.onset(metric), None])
        if present and absent:
            gap = groups["with companion"].mean(metric) - groups["without"].mean(metric)
            onsets.append([metric, "with companion minus without", "gap", onset_step(gap), float(gap.max())])
    tables.append(record.table(
        "Onset in the analysis curve (the prompt's own run, the negative measured alongside)",
        ["measure", "images", "curve", "first step at half its range", "largest value"],
        onsets,
        formats=[None, None, None, "d", ".4f"],
        note="The norm of e_n - e_u grows and shrinks with the noise level along any run; the cosine with the "
             "prompt's direction and the attention mass of the negative's tokens mark when the negative acts.",
    ))
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        print(f"wrote {curve.to_csv(out / 'analysis.csv')} and {curve.plot(out / 'analysis.png')}\n")

    rows = [[f"{start:g}", percent([has(images[start][i], negatives[i]) for i in absent])] for start in STARTS]
    tables.append(record.table(
        "Reverse activation: the companion appears where the plain image lacks it", ["start", "companion appears"], rows
    ))

    rows = []
    for start in (0.0, ADAPTIVE_START):
        cells = window_cells(images[start], present, linear, prompts, negatives)
        rows.append([f"negative on [{start:g}, 1)", *cells, "1", args.steps - first_step(start, args.steps)])
    chosen = {index: result for index, result in zip(present, bisect)}
    for name, results in (("adaptive, linear scan", [linear[i] for i in present]), ("adaptive, bisection", bisect)):
        lengths = [result.window[1] - result.window[0] for result in results if result.removed]
        rows.append(
            [
                name,
                percent([result.removed for result in results]),
                percent([kept(result.image, result.prompt) for result in results]),
                mean([outside(result, result.image) for result in results]),
                mean([len(result.trials) for result in results], 2),
                mean(lengths, 2),
            ]
        )
    same = [chosen[i].window == linear[i].window for i in present]
    tables.append(record.table(
        "Adaptive removal against the negative on every step (images whose plain image holds the companion)",
        ["method", "removed", "kept", "change outside box", "trials per image", "window (steps)"],
        rows,
    ))
    tables.append(record.table(
        "Bisection against the linear scan", ["bisection picks the linear scan's window"], [[percent(same)]]
    ))
    results = {
        "title": "When negatives take effect",
        "summary": (
            "The delayed negative (Ban et al., arXiv 2406.02965) on the shapes world: what a negative starting later "
            "removes and changes, when its influence shows in the per-step analysis, how often it draws its own "
            "object, and adaptive removal against the negative on every step."
        ),
        "tables": tables,
        "figures": [
            {
                "title": "Per-step means of the analysis curves",
                "kind": "line",
                "x": list(range(curve.num_steps)),
                "series": series,
                "xlabel": "step",
                "ylabel": "value",
            }
        ],
        "seconds": {name: round(seconds, 1) for name, seconds in timings.items()},
    }
    record.show(results)
    settings = {"seeds": args.seeds, "steps": args.steps, "scale": args.scale, "cases": args.cases}
    print(record.save("negative_timing", settings, results, model=record.model_identity(args.model),
                      folder=args.store))


if __name__ == "__main__":
    main()
