"""Time one image of the embedded shapes-world model: 64x64, 20 steps, CFG, batch 1.

    python benchmarks/speed.py [--runs 10] [--steps 20] [--threads 2]

Prints the median and spread of the wall time over ``--runs`` runs after one warm-up run.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

import negguide
from negguide.loading import EMBEDDED_GUIDANCE_SCALE


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--guidance-scale", type=float, default=EMBEDDED_GUIDANCE_SCALE)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    pipe = negguide.load_pipeline()
    pipe.set_progress_bar_config(disable=True)

    def one(seed: int) -> float:
        start = time.perf_counter()
        pipe("a red circle and a blue square", num_inference_steps=args.steps, guidance_scale=args.guidance_scale,
             generator=torch.Generator().manual_seed(seed))
        return time.perf_counter() - start

    one(0)
    times = [one(seed) for seed in range(1, args.runs + 1)]
    print("| model | steps | CFG | threads | runs | median s/image | min | max |")
    print("|---|---|---|---|---|---|---|---|")
    print(f"| shapes-world | {args.steps} | {args.guidance_scale} | {args.threads} | {args.runs} | "
          f"{statistics.median(times):.3f} | {min(times):.3f} | {max(times):.3f} |")


if __name__ == "__main__":
    main()
