"""Time per step of Perp-Neg with k = 1, 2, 4 negatives against standard CFG, same components, one process.

    python benchmarks/perpneg_cost.py [--runs 5] [--steps 5] [--threads 1] [--ks 1 2 4]

Uses the randomly initialised UNet of `benchmarks/overhead.py` (256x256 images, 32x32 latents), one image
per call. Perp-Neg (Armandpour et al., arXiv 2304.04968) needs 2 + k branches per step; negguide evaluates
them in one batched forward. The comparison is the official code's way, one network call per branch
(negguide's chunking with ``max_rows=1``). Variants run alternately after one warm-up each; the table gives
the median seconds per denoising step, the ratio to CFG, the ideal ratio (2 + k) / 2, and the speed-up of one
forward over separate forwards. Goal: within 5% of the ideal ratio, and faster than separate forwards.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from overhead import components

from negguide import PerpNeg
from negguide.pipelines import StableDiffusionNegGuidePipeline

NEGATIVES = ("blue square", "green triangle", "yellow circle", "red square")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--ks", type=int, nargs="+", default=[1, 2, 4])
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    pipe = StableDiffusionNegGuidePipeline(**components())
    pipe.set_progress_bar_config(disable=True)
    call = {"prompt": "a red circle", "num_inference_steps": args.steps, "output_type": "latent"}
    variants: dict[str, dict] = {"CFG, negative_prompt": {"negative_prompt": "blue square"}}
    for k in args.ks:
        negatives = list(NEGATIVES[:k])
        variants[f"Perp-Neg k={k}, one forward"] = {"guidance": PerpNeg(negatives)}
        variants[f"Perp-Neg k={k}, separate forwards"] = {"guidance": PerpNeg(negatives, max_rows=1)}

    def timed(name: str, seed: int) -> tuple[float, torch.Tensor]:
        start = time.perf_counter()
        latents = pipe(**call, **variants[name], generator=torch.Generator().manual_seed(seed)).images
        return (time.perf_counter() - start) / args.steps, latents

    for k in args.ks:
        one, separate = (timed(f"Perp-Neg k={k}, {how}", 0)[1] for how in ("one forward", "separate forwards"))
        if not torch.allclose(one, separate, atol=1e-4):
            raise SystemExit(f"k={k}: one batched forward and separate forwards disagree")
    timed("CFG, negative_prompt", 0)
    times: dict[str, list[float]] = {name: [] for name in variants}
    for run in range(1, args.runs + 1):
        for name in variants:
            times[name].append(timed(name, run)[0])

    medians = {name: statistics.median(values) for name, values in times.items()}
    cfg = medians["CFG, negative_prompt"]
    unet_parameters = sum(p.numel() for p in pipe.unet.parameters()) / 1e6
    print(
        f"UNet {unet_parameters:.1f}M parameters, 256x256, 1 image, {args.steps} steps, {args.threads} thread(s), "
        f"median of {args.runs} alternating runs after warm-up"
    )
    print("| variant | median ms/step | ratio to CFG | ideal (2+k)/2 | vs ideal | separate / one forward |")
    print("|---|---|---|---|---|---|")
    print(f"| CFG, negative_prompt | {1000 * cfg:.1f} | 1.000 | 1.000 | 1.000 | |")
    for k in args.ks:
        ideal = (2 + k) / 2
        one, separate = medians[f"Perp-Neg k={k}, one forward"], medians[f"Perp-Neg k={k}, separate forwards"]
        print(
            f"| Perp-Neg k={k}, one forward | {1000 * one:.1f} | {one / cfg:.3f} | {ideal:.1f} | "
            f"{one / cfg / ideal:.3f} | {separate / one:.3f} |"
        )
        print(
            f"| Perp-Neg k={k}, separate forwards | {1000 * separate:.1f} | {separate / cfg:.3f} | {ideal:.1f} | "
            f"{separate / cfg / ideal:.3f} | |"
        )


if __name__ == "__main__":
    main()
