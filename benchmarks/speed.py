"""Time one image of the embedded shapes-world model: 64x64, 20 steps, CFG, batch 1.

    python benchmarks/speed.py [--runs 10] [--steps 20] [--threads 2] [--store DIR]

Prints and stores the median and spread of the wall time over ``--runs`` runs after one warm-up run
(`timing.alternating` with one variant). Goal: under 1 s an image on 2 CPU threads.
"""

from __future__ import annotations

import argparse

import record
import torch
from timing import alternating

import negguide
from negguide.loading import EMBEDDED_GUIDANCE_SCALE


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--guidance-scale", type=float, default=EMBEDDED_GUIDANCE_SCALE)
    parser.add_argument("--threads", type=int, default=2)
    record.add_store_argument(parser)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    pipe = negguide.load_pipeline()
    pipe.set_progress_bar_config(disable=True)

    def one(seed: int) -> None:
        pipe("a red circle and a blue square", num_inference_steps=args.steps, guidance_scale=args.guidance_scale,
             generator=torch.Generator().manual_seed(seed))

    timing = alternating({"one image": one}, args.runs)["one image"]
    model = record.model_identity(None)
    results = {
        "title": "Speed of the embedded model",
        "summary": "One 64x64 image of the embedded shapes-world model, batch 1 (goal: under 1 s on 2 CPU threads).",
        "tables": [
            record.table(
                "Wall seconds per image after one warm-up run",
                ["model", "steps", "CFG", "threads", "runs", "median s/image", "min", "max"],
                [[model, args.steps, args.guidance_scale, args.threads, args.runs, timing.median, min(timing.times),
                  max(timing.times)]],
                formats=[None, "d", ".1f", "d", "d", ".3f", ".3f", ".3f"],
            )
        ],
        "timings": {"one image": timing.to_dict()},
    }
    record.show(results)
    settings = {"runs": args.runs, "steps": args.steps, "guidance_scale": args.guidance_scale, "threads": args.threads}
    print(record.save("speed", settings, results, model=model, folder=args.store))


if __name__ == "__main__":
    main()
