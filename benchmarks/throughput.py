"""Images per second of ``negguide generate``'s batching against a naive loop over the stock diffusers pipeline.

    python benchmarks/throughput.py [--model PATH] [--images 16] [--batch-size 8] [--steps 20] [--runs 3]
                                    [--threads 1]

One process, one set of loaded weights (the embedded shapes-world model unless ``--model`` names another).
Both sides make the same images (shapes-world prompts, one seed each, the same negative prompt, steps, scale
and size) and write them as PNGs:

* negguide: the batch command's own planner and runner: calls of ``--batch-size`` images with one generator
  per image, atomic PNG writes with metadata, and the manifest;
* naive: diffusers' stock `StableDiffusionPipeline` (sharing the same weights), called once per image, each
  image saved with ``Image.save``.

After one warm-up of each, the two alternate ``--runs`` times into fresh folders. Prints the median images per
second of each and their ratio (goal: >= 1.5 at batch 8), and the largest pixel difference between the two
sides' images (batched and single calls differ only by float rounding).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import PIL.Image
import torch
from diffusers import StableDiffusionPipeline

from negguide.generate import (
    Defaults,
    Item,
    batches,
    expand,
    finish,
    load_model,
    process_state,
    read_model,
    run_batches,
)
from negguide.generate.methods import DEFAULT_METHOD
from negguide.generate.plan import Job
from negguide.generate.runner import prepare_output
from negguide.shapes.cases import one_object_prompts, two_object_prompts

NEGATIVE_PROMPT = "a blue square"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", help="diffusers folder or hub id (default: the embedded shapes-world model)")
    parser.add_argument("--images", type=int, default=16)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--guidance-scale", type=float, default=7.5)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", help="default: CUDA when available")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    info = read_model(args.model)
    pipe = load_model(info, args.device)
    stock = StableDiffusionPipeline.from_pipe(pipe)
    stock.set_progress_bar_config(disable=True)
    state = process_state(args.device)
    texts = (one_object_prompts() + two_object_prompts()) * (args.images // 18 + 1)
    items = [Item(index=i, source="benchmark", prompt=text) for i, text in enumerate(texts[: args.images])]
    defaults = Defaults(steps=args.steps, guidance_scale=args.guidance_scale, negative_prompt=NEGATIVE_PROMPT)
    groups, problems = expand(items, [DEFAULT_METHOD], defaults, info)
    assert not problems, problems
    planned = batches(groups, args.batch_size)
    jobs = [job for batch in planned for job in batch.jobs]

    def negguide_run(out: Path) -> None:
        prepare_output(out)
        run_batches(pipe, planned, out, state, set())
        finish(out, jobs, grids=False)

    def naive_run(out: Path) -> None:
        for index, job in enumerate(jobs):
            image = stock(
                job.prompt,
                negative_prompt=job.negative_prompt,
                num_inference_steps=job.steps,
                guidance_scale=job.guidance_scale,
                width=job.width,
                height=job.height,
                generator=torch.Generator("cpu").manual_seed(job.seed),
            ).images[0]
            image.save(out / f"{index:05d}.png")

    with tempfile.TemporaryDirectory() as root:
        folders = iter(Path(root, str(i)) for i in range(2 * args.runs + 2))
        timed(negguide_run, next(folders), 1)
        timed(naive_run, next(folders), 1)
        rates: dict[str, list[float]] = {"negguide": [], "naive": []}
        last: dict[str, Path] = {}
        for _ in range(args.runs):
            for name, run in (("negguide", negguide_run), ("naive", naive_run)):
                last[name] = next(folders)
                rates[name].append(timed(run, last[name], len(jobs)))
        difference = max_difference(jobs, last["negguide"], last["naive"])

    ours, naive = statistics.median(rates["negguide"]), statistics.median(rates["naive"])
    print("| path | images | batch | steps | threads | runs | median images/s |")
    print("|---|---|---|---|---|---|---|")
    print(
        f"| stock diffusers, one image a call | {len(jobs)} | 1 | {args.steps} | {args.threads} | {args.runs} | "
        f"{naive:.3f} |"
    )
    print(
        f"| negguide generate | {len(jobs)} | {args.batch_size} | {args.steps} | {args.threads} | {args.runs} | "
        f"{ours:.3f} |"
    )
    print(
        f"\nmodel {info.name} ({info.width}x{info.height}, {info.sampler}); speed-up {ours / naive:.2f}x; largest "
        f"pixel difference between the two sides: {difference}"
    )


def timed(run: Callable[[Path], None], folder: Path, images: int) -> float:
    """Images per second of ``run(folder)`` making ``images`` images."""
    folder.mkdir()
    start = time.perf_counter()
    run(folder)
    return images / (time.perf_counter() - start)


def max_difference(jobs: list[Job], ours: Path, naive: Path) -> int:
    """The largest difference of 0-255 pixel values between the two sides' images."""
    largest = 0
    for index, job in enumerate(jobs):
        with PIL.Image.open(ours / job.file) as a, PIL.Image.open(naive / f"{index:05d}.png") as b:
            largest = max(largest, int(np.abs(np.asarray(a, dtype=int) - np.asarray(b, dtype=int)).max()))
    return largest


if __name__ == "__main__":
    main()
