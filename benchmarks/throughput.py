"""Images per second of ``negguide generate``'s batching against a naive loop over the stock diffusers pipeline.

    python benchmarks/throughput.py [--model PATH] [--images 16] [--batch-size 8] [--steps 20] [--runs 3]
                                    [--threads 1] [--store DIR]

One process, one set of loaded weights (the embedded shapes-world model unless ``--model`` names another).
Both sides make the same images (shapes-world prompts, one seed each, the same negative prompt, steps, scale
and size) and write them as PNGs:

* negguide: the batch command's own planner and runner: calls of ``--batch-size`` images with one generator
  per image, atomic PNG writes with metadata, and the manifest;
* naive: diffusers' stock `StableDiffusionPipeline` (sharing the same weights), called once per image, each
  image saved with ``Image.save``.

After one warm-up of each, the two alternate ``--runs`` times into fresh folders (`timing.alternating`). Prints and
stores the median images per second of each and their ratio (goal: >= 1.5 at batch 8), and the largest pixel difference between the two
sides' images (batched and single calls differ only by float rounding).
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
import PIL.Image
import record
import torch
from diffusers import StableDiffusionPipeline
from timing import alternating

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
    record.add_store_argument(parser)
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

        def runner(name: str, make):
            def run(round_: int) -> None:
                folder = Path(root, f"{name}-{round_}")
                folder.mkdir()
                make(folder)

            return run

        times = alternating({"negguide": runner("negguide", negguide_run), "naive": runner("naive", naive_run)},
                            args.runs)
        difference = max_difference(jobs, Path(root, f"negguide-{args.runs}"), Path(root, f"naive-{args.runs}"))

    ours, naive = (len(jobs) / times[name].median for name in ("negguide", "naive"))
    rows = [
        ["stock diffusers, one image a call", len(jobs), 1, naive],
        ["negguide generate", len(jobs), args.batch_size, ours],
    ]
    results = {
        "title": "Throughput of the batch command",
        "summary": (
            "Images per second of `negguide generate`'s batching against a loop calling the stock "
            "StableDiffusionPipeline one image at a time, same weights and settings, both writing PNGs, one process "
            "(goal: at least 1.5 times at batch 8)."
        ),
        "tables": [
            record.table(
                f"{info.name}, {info.width}x{info.height}, {args.steps} steps, {args.threads} thread(s), median of "
                f"{args.runs} alternating runs after warm-up",
                ["path", "images", "batch", "median images/s"],
                rows,
                formats=[None, "d", "d", ".3f"],
            ),
            record.table(
                "Speed-up and agreement",
                ["speed-up", "largest pixel difference (0-255)"],
                [[ours / naive, difference]],
                formats=[".2f", "d"],
                note="Batched and single calls differ only by float rounding.",
            ),
        ],
        "timings": {name: timing.to_dict() for name, timing in times.items()},
    }
    record.show(results)
    settings = {"images": args.images, "batch_size": args.batch_size, "steps": args.steps,
                "guidance_scale": args.guidance_scale, "runs": args.runs, "threads": args.threads}
    print(record.save("throughput", settings, results, model=record.model_identity(args.model), folder=args.store))


def max_difference(jobs: list[Job], ours: Path, naive: Path) -> int:
    """The largest difference of 0-255 pixel values between the two sides' images."""
    largest = 0
    for index, job in enumerate(jobs):
        with PIL.Image.open(ours / job.file) as a, PIL.Image.open(naive / f"{index:05d}.png") as b:
            largest = max(largest, int(np.abs(np.asarray(a, dtype=int) - np.asarray(b, dtype=int)).max()))
    return largest


if __name__ == "__main__":
    main()
