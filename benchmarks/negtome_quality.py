"""NegToMe on the shapes world: batch diversity and distance from a reference image, against prompt adherence.

    python benchmarks/negtome_quality.py                        # 78 prompts x 4 images, the embedded model
    python benchmarks/negtome_quality.py --alpha 3 --threshold 0.3 --stop 0.5
    python benchmarks/negtome_quality.py --alpha 3 --threshold 0.5 --start 0.1 --stop 0.5 --mask-companion --batches 156
    python benchmarks/negtome_quality.py --batches 8 --model /path/to/model
    python benchmarks/negtome_quality.py --first-seed 1000      # the same prompts, other seeds

Every batch is one prompt (every one-object prompt of ``negguide.shapes.cases``, then every pair of two
different objects: 78 prompts, cycled with new seeds when ``--batches`` asks for more) and ``--images`` images,
one CPU generator per image, seeds counting up from ``--first-seed``; 64x64, ``--steps`` steps, CFG ``--scale``.
NegToMe uses its defaults (alpha 0.9, threshold 0.7, the first fifth of the run, the up blocks' attention layers)
unless ``--alpha``, ``--threshold``, ``--start``, ``--stop`` or ``--layers`` say otherwise.
Each measure is taken twice: on pixels (RMS distance, `negguide.metrics.batch_diversity` and `similarity`) and
on what the images hold (the detector's object kinds, `negguide.metrics.composition_diversity` and
`composition_similarity`); on this world's white background the pixel distance of two images whose objects do
not overlap does not depend on where the objects are. Two tables are printed and stored (`record.save`):

1. *Diversity*: the mean pairwise distance within a batch, the share of images holding every object their
   prompt names (the detector's verdict) and the share holding an object it does not name, without NegToMe and
   with NegToMe in batch mode, anchored on the first image (the paper) or on each image's nearest other.
2. *Reference*: each batch's reference is the picture this model often draws for the prompt, its objects with
   a frequent companion (`look_to_avoid`); the mean similarity of the images to it and the same shares, without
   NegToMe and with NegToMe in reference mode (``--mask-companion``: only the companion's tokens may be matched,
   the part of the picture to avoid).

Changes are means over the batches of the per-batch difference from the run without NegToMe (the same prompts
and seeds), with a 95% interval (1.96 standard errors).
"""

from __future__ import annotations

import argparse
import math
import statistics
import time
from collections.abc import Sequence

import PIL.Image
import record
import torch

import negguide
from negguide import NegToMe
from negguide.loading import EMBEDDED_GUIDANCE_SCALE
from negguide.metrics import (
    batch_diversity,
    composition_diversity,
    composition_similarity,
    judge,
    parse_prompt,
    similarity,
)
from negguide.modules.negtome import DEFAULT_LAYERS
from negguide.shapes import COMPANIONS, ShapeObject, detect, render
from negguide.shapes.cases import every_pair_prompts, one_object_prompts

SIZE = 64


LAYOUTS = {2: [(18, 32), (46, 32)], 3: [(18, 19), (46, 19), (32, 45)]}
"""Object centres of `look_objects`, by the number of objects: apart, 20 px objects never touch."""


def companion_of(prompt: str) -> tuple[str, str]:
    """The frequent companion of the prompt's first object that the prompt does not name (the second object's
    companion when the first's is named)."""
    named = parse_prompt(prompt)  # ObjectSpec tuples, equal to their (colour, shape)
    return next(COMPANIONS[kind] for kind in named if COMPANIONS[kind] not in named)


def look_objects(prompt: str) -> list[ShapeObject]:
    """The prompt's objects, then `companion_of` it, 20 px wide at fixed places (`LAYOUTS`)."""
    kinds = [*parse_prompt(prompt), companion_of(prompt)]
    return [ShapeObject(colour, shape, x, y, 20) for (colour, shape), (x, y) in zip(kinds, LAYOUTS[len(kinds)])]


def look_to_avoid(prompt: str) -> PIL.Image.Image:
    """The picture this model often draws for the prompt: `look_objects` rendered."""
    return render(look_objects(prompt), size=SIZE)


def companion_mask(prompt: str) -> PIL.Image.Image:
    """White where `look_to_avoid` draws the companion: reference mode may match only its tokens."""
    drawn = render(look_objects(prompt)[-1:], size=SIZE).convert("L")
    return drawn.point(lambda value: 255 if value < 250 else 0)


def batch_prompts(count: int) -> list[str]:
    """The prompt of each of ``count`` batches: every one-object prompt, then every pair (12 + 66), cycled."""
    prompts = one_object_prompts() + every_pair_prompts()
    return [prompts[i % len(prompts)] for i in range(count)]


def generate(pipe, prompts: Sequence[str], images: int, first_seed: int, guidance, args) -> list[list[PIL.Image.Image]]:
    """``images`` images of each prompt, in one call, seeds counting up from ``first_seed``; one list per prompt."""
    out = pipe(
        list(prompts),
        num_images_per_prompt=images,
        generator=[torch.Generator().manual_seed(first_seed + i) for i in range(len(prompts) * images)],
        num_inference_steps=args.steps,
        guidance_scale=args.scale,
        height=SIZE,
        width=SIZE,
        guidance=guidance,
    ).images
    return [out[i : i + images] for i in range(0, len(out), images)]


class Scores:
    """Per run, one value per batch of each measure."""

    def __init__(self) -> None:
        self.values: dict[str, dict[str, list[float]]] = {}

    def add(self, run: str, images: Sequence[PIL.Image.Image], prompt: str) -> None:
        reference = look_to_avoid(prompt)
        detections = [detect(image) for image in images]
        reference_detections = detect(reference)
        verdicts = [judge(found, prompt) for found in detections]
        batch = {
            "pixel diversity": batch_diversity(images),
            "composition diversity": composition_diversity(detections),
            "pixel similarity": statistics.fmean(similarity(image, reference) for image in images),
            "composition similarity": statistics.fmean(
                composition_similarity(found, reference_detections) for found in detections
            ),
            "named": statistics.fmean(verdict.named for verdict in verdicts),
            "extra": statistics.fmean(verdict.extra > 0 for verdict in verdicts),
        }
        run_values = self.values.setdefault(run, {})
        for measure, value in batch.items():
            run_values.setdefault(measure, []).append(value)

    def mean(self, run: str, measure: str) -> float:
        return statistics.fmean(self.values[run][measure])

    def change(self, run: str, base: str, measure: str) -> tuple[float, float]:
        """The mean per-batch difference of ``run`` from ``base`` (the same prompts and seeds) and its 95%
        half-interval, 1.96 standard errors."""
        differences = [a - b for a, b in zip(self.values[run][measure], self.values[base][measure], strict=True)]
        spread = statistics.stdev(differences) if len(differences) > 1 else 0.0
        return statistics.fmean(differences), 1.96 * spread / math.sqrt(len(differences))

    def rows(self, runs: Sequence[str], kind: str, base: str) -> list[list[str]]:
        """Rows of the ``kind`` ("diversity" or "similarity") measures, adherence and the share of images with
        unnamed objects, with each run's change from ``base`` and the change's 95% interval over the batches."""
        rows = []
        for run in runs:
            cells = [run]
            for measure in (f"pixel {kind}", f"composition {kind}"):
                reference = self.mean(base, measure)
                difference, interval = self.change(run, base, measure)
                change = "-"
                if reference:
                    change = f"{100 * difference / reference:+.1f} ± {100 * interval / reference:.1f}"
                cells += [f"{self.mean(run, measure):.4f}", change]
            for measure in ("named", "extra"):
                difference, interval = self.change(run, base, measure)
                cells += [f"{100 * self.mean(run, measure):.1f}", f"{100 * difference:+.1f} ± {100 * interval:.1f}"]
            rows.append(cells)
        return rows


def columns(kind: str) -> list[str]:
    return ["run", f"pixel {kind}", "change %", f"composition {kind}", "change %", "named objects %",
            "change (points)", "with extra objects %", "change (points)"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default=None, help="model folder or hub id (default: the embedded model)")
    parser.add_argument("--batches", type=int, default=78, help="prompt batches, cycling through the 78 prompts")
    parser.add_argument("--images", type=int, default=4, help="images per batch")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--scale", type=float, default=EMBEDDED_GUIDANCE_SCALE, help="CFG scale (the embedded model's)")
    parser.add_argument("--alpha", type=float, default=0.9)
    parser.add_argument("--threshold", type=float, default=0.7)
    parser.add_argument("--start", type=float, default=0.0, help="NegToMe's first step fraction")
    parser.add_argument("--stop", type=float, default=0.2)
    parser.add_argument("--layers", default=DEFAULT_LAYERS, help="NegToMe's layer pattern (default: the up blocks)")
    parser.add_argument("--mask-companion", action="store_true",
                        help="reference mode matches only the companion's tokens (`companion_mask`)")
    parser.add_argument("--first-seed", type=int, default=0, help="seed of the first image; the others count up")
    parser.add_argument("--per-call", type=int, default=6, help="batches per pipeline call in batch mode")
    parser.add_argument("--threads", type=int, default=2)
    record.add_store_argument(parser)
    args = parser.parse_args()
    if args.first_seed < 0:
        parser.error(f"--first-seed must be >= 0, got {args.first_seed}")
    torch.set_num_threads(args.threads)
    pipe = negguide.load_pipeline(args.model, device="cpu")
    pipe.set_progress_bar_config(disable=True)
    settings = {"alpha": args.alpha, "threshold": args.threshold, "start": args.start, "stop": args.stop,
                "layers": args.layers}
    base = "without NegToMe"
    batch_methods = {
        base: None,
        "NegToMe, anchor first": NegToMe(**settings),
        "NegToMe, anchor nearest": NegToMe(anchor="nearest", **settings),
    }
    reference_run = "NegToMe, reference"
    scores = Scores()
    prompts = batch_prompts(args.batches)
    started = time.perf_counter()
    for begin in range(0, len(prompts), args.per_call):
        chunk = prompts[begin : begin + args.per_call]
        first_seed = args.first_seed + begin * args.images
        for name, guidance in batch_methods.items():
            for prompt, images in zip(chunk, generate(pipe, chunk, args.images, first_seed, guidance, args)):
                scores.add(name, images, prompt)
        for offset, prompt in enumerate(chunk):
            mask = companion_mask(prompt) if args.mask_companion else None
            module = NegToMe(mode="reference", reference=look_to_avoid(prompt), mask=mask, **settings)
            (images,) = generate(pipe, [prompt], args.images, first_seed + offset * args.images, module, args)
            scores.add(reference_run, images, prompt)

    header = (
        f"{args.batches} batches x {args.images} images ({len(set(prompts))} prompts, seeds from {args.first_seed}), "
        f"{args.steps} steps, CFG {args.scale}, alpha {args.alpha}, threshold {args.threshold}, window "
        f"[{args.start}, {args.stop}), layers {args.layers!r}"
    )
    masking = ", reference masked to the companion" if args.mask_companion else ""
    results = {
        "title": "Quality of NegToMe",
        "summary": (
            "NegToMe on the shapes world, batch diversity and steering away from a reference, against the same "
            "prompts and seeds without it: pixel and composition measures, adherence (every named object present) "
            "and images with unnamed objects; changes are means of per-batch differences with a 95% interval."
        ),
        "tables": [
            record.table(f"Batch diversity: {header}", columns("diversity"),
                         scores.rows(list(batch_methods), "diversity", base)),
            record.table(f"Reference image: {header}{masking}", columns("similarity"),
                         scores.rows([base, reference_run], "similarity", base)),
        ],
    }
    record.show(results)
    images = args.batches * args.images * (len(batch_methods) + 1)
    print(f"\n{images} images in {time.perf_counter() - started:.0f} s")
    stored = {**settings, "batches": args.batches, "images": args.images, "steps": args.steps, "scale": args.scale,
              "mask_companion": args.mask_companion, "first_seed": args.first_seed}
    print(record.save("negtome_quality", stored, results, model=record.model_identity(args.model), folder=args.store))


if __name__ == "__main__":
    main()
