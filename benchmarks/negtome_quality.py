"""NegToMe on the shapes world: batch diversity and distance from a reference image, against prompt adherence.

    python benchmarks/negtome_quality.py                        # 78 prompts x 4 images, the embedded model
    python benchmarks/negtome_quality.py --batches 8 --model /path/to/model

Every batch is one prompt (every one-object prompt of ``negguide.shapes.cases``, then every pair of two
different objects: 78 prompts, cycled with new seeds when ``--batches`` asks for more) and ``--images`` images,
one CPU generator per image; 64x64, ``--steps`` steps, CFG ``--scale``. NegToMe uses its defaults (alpha 0.9,
threshold 0.7, the first fifth of the run) unless ``--alpha``, ``--threshold`` or ``--stop`` say otherwise. Two tables are printed:

1. *Diversity*: the mean pairwise pixel distance within a batch (`negguide.metrics.batch_diversity`) and the
   share of images holding every object their prompt names (the detector's verdict), without NegToMe and
   with NegToMe in batch mode, anchored on the first image (the paper) or on each image's nearest other.
2. *Reference*: each batch's reference is the prompt's objects rendered in a fixed layout (a "look" to
   avoid); the mean similarity of the images to it (`negguide.metrics.similarity`, 1 - RMS pixel distance)
   and the adherence, without NegToMe and with NegToMe in reference mode.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Sequence

import PIL.Image
import torch

import negguide
from negguide import NegToMe
from negguide.metrics import batch_diversity, judge, parse_prompt, similarity
from negguide.shapes import ShapeObject, detect, render
from negguide.shapes.cases import every_pair_prompts, one_object_prompts

SIZE = 64


def reference_for(prompt: str) -> PIL.Image.Image:
    """The prompt's objects side by side, mid-height, 20 px wide: one fixed look per prompt."""
    specs = parse_prompt(prompt)
    objects = [
        ShapeObject(spec.colour, spec.shape, SIZE * (i + 1) / (len(specs) + 1), SIZE / 2, 20)
        for i, spec in enumerate(specs)
    ]
    return render(objects, size=SIZE)


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


def adherence(images: Sequence[PIL.Image.Image], prompt: str) -> float:
    return sum(judge(detect(image), prompt).named for image in images) / len(images)


def pct(value: float) -> str:
    return f"{100 * value:.1f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default=None, help="model folder or hub id (default: the embedded model)")
    parser.add_argument("--batches", type=int, default=78, help="prompt batches, cycling through the 78 prompts")
    parser.add_argument("--images", type=int, default=4, help="images per batch")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--scale", type=float, default=5.0)
    parser.add_argument("--alpha", type=float, default=0.9)
    parser.add_argument("--threshold", type=float, default=0.7)
    parser.add_argument("--stop", type=float, default=0.2)
    parser.add_argument("--per-call", type=int, default=6, help="batches per pipeline call in batch mode")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    pipe = negguide.load_pipeline(args.model, device="cpu")
    pipe.set_progress_bar_config(disable=True)
    settings = {"alpha": args.alpha, "threshold": args.threshold, "stop": args.stop}
    batch_methods = {
        "without NegToMe": None,
        "NegToMe, anchor first": NegToMe(**settings),
        "NegToMe, anchor nearest": NegToMe(anchor="nearest", **settings),
    }
    reference_method = "NegToMe, reference"
    scores = {name: {"div": [], "sim": [], "named": []} for name in [*batch_methods, reference_method]}

    def score(name: str, images: Sequence[PIL.Image.Image], prompt: str) -> None:
        scores[name]["div"].append(batch_diversity(images))
        scores[name]["sim"].append(statistics.fmean(similarity(image, reference_for(prompt)) for image in images))
        scores[name]["named"].append(adherence(images, prompt))

    prompts = batch_prompts(args.batches)
    started = time.perf_counter()
    for begin in range(0, len(prompts), args.per_call):
        chunk = prompts[begin : begin + args.per_call]
        first_seed = begin * args.images
        for name, guidance in batch_methods.items():
            for prompt, images in zip(chunk, generate(pipe, chunk, args.images, first_seed, guidance, args)):
                score(name, images, prompt)
        for offset, prompt in enumerate(chunk):
            module = NegToMe(mode="reference", reference=reference_for(prompt), **settings)
            (images,) = generate(pipe, [prompt], args.images, first_seed + offset * args.images, module, args)
            score(reference_method, images, prompt)

    def mean(name: str, key: str) -> float:
        return statistics.fmean(scores[name][key])

    base = "without NegToMe"
    header = (
        f"{args.batches} batches x {args.images} images ({len(set(prompts))} prompts), {args.steps} steps, CFG {args.scale}, alpha {args.alpha}, threshold {args.threshold}, "
        f"window [0, {args.stop})"
    )
    print(f"\n### Batch diversity: {header}\n")
    print("| run | mean pairwise distance | change % | named objects % | change (points) |")
    print("|---|---|---|---|---|")
    for name in batch_methods:
        div, named = mean(name, "div"), mean(name, "named")
        print(
            f"| {name} | {div:.4f} | {100 * (div / mean(base, 'div') - 1):+.1f} | {pct(named)} | "
            f"{100 * (named - mean(base, 'named')):+.1f} |"
        )
    print(f"\n### Reference image: {header}\n")
    print("| run | mean similarity to the reference | change % | named objects % | change (points) |")
    print("|---|---|---|---|---|")
    for name in (base, reference_method):
        sim, named = mean(name, "sim"), mean(name, "named")
        print(
            f"| {name} | {sim:.4f} | {100 * (sim / mean(base, 'sim') - 1):+.1f} | {pct(named)} | "
            f"{100 * (named - mean(base, 'named')):+.1f} |"
        )
    print(f"\n{args.batches * args.images * len(scores)} images in {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
