"""Time per step of Perp-Neg with k = 1, 2, 4 negatives against standard CFG, same components, one process.

    python benchmarks/perpneg_cost.py [--runs 5] [--steps 5] [--threads 1] [--ks 1 2 4] [--store DIR]

Uses the small randomly initialised Stable Diffusion components of `negguide.testing` (256x256 images, 32x32
latents), one image per call. Perp-Neg (Armandpour et al., arXiv 2304.04968) needs 2 + k branches per step; negguide evaluates
them in one batched forward. The comparison is the official code's way, one network call per branch
(negguide's chunking with ``max_rows=1``). Variants run alternately after one warm-up each
(`timing.alternating`); the table gives
the median seconds per denoising step, the ratio to CFG, the ideal ratio (2 + k) / 2, and the speed-up of one
forward over separate forwards. Goal: within 5% of the ideal ratio, and faster than separate forwards.
"""

from __future__ import annotations

import argparse

import record
import torch
from timing import alternating

from negguide import PerpNeg
from negguide.pipelines import StableDiffusionNegGuidePipeline
from negguide.testing import sd_components

NEGATIVES = ("blue square", "green triangle", "yellow circle", "red square")
CFG = "CFG, negative_prompt"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--ks", type=int, nargs="+", default=[1, 2, 4])
    record.add_store_argument(parser)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    pipe = StableDiffusionNegGuidePipeline(**sd_components("small"))
    pipe.set_progress_bar_config(disable=True)
    call = {"prompt": "a red circle", "num_inference_steps": args.steps, "output_type": "latent"}
    variants: dict[str, dict] = {CFG: {"negative_prompt": "blue square"}}
    for k in args.ks:
        negatives = list(NEGATIVES[:k])
        variants[f"Perp-Neg k={k}, one forward"] = {"guidance": PerpNeg(negatives)}
        variants[f"Perp-Neg k={k}, separate forwards"] = {"guidance": PerpNeg(negatives, max_rows=1)}

    def runner(name: str):
        return lambda seed: pipe(**call, **variants[name], generator=torch.Generator().manual_seed(seed)).images

    for k in args.ks:
        one, separate = (runner(f"Perp-Neg k={k}, {how}")(0) for how in ("one forward", "separate forwards"))
        # Batching changes only float rounding, which grows with the latents' magnitude (about 24 after 5 steps).
        difference = (one - separate).abs().max().item()
        if difference > 1e-5 * one.abs().max().item():
            raise SystemExit(f"k={k}: one batched forward and separate forwards disagree by {difference:.3g}")
    times = alternating({name: runner(name) for name in variants}, args.runs)

    per_step = {name: timing.median / args.steps for name, timing in times.items()}
    cfg = per_step[CFG]
    rows = [[CFG, 1000 * cfg, 1.0, 1.0, 1.0, None]]
    for k in args.ks:
        ideal = (2 + k) / 2
        one, separate = per_step[f"Perp-Neg k={k}, one forward"], per_step[f"Perp-Neg k={k}, separate forwards"]
        rows.append([f"Perp-Neg k={k}, one forward", 1000 * one, one / cfg, ideal, one / cfg / ideal, separate / one])
        rows.append([f"Perp-Neg k={k}, separate forwards", 1000 * separate, separate / cfg, ideal,
                     separate / cfg / ideal, None])
    unet_parameters = sum(p.numel() for p in pipe.unet.parameters()) / 1e6
    results = {
        "title": "Cost of Perp-Neg",
        "summary": (
            "Perp-Neg evaluates 2 + k branches per step. negguide runs them in one batched forward; the official "
            "code runs one network call per branch. Goal: within 5% of the ideal ratio (2 + k) / 2 to CFG, and "
            "faster than separate forwards."
        ),
        "tables": [
            record.table(
                f"UNet {unet_parameters:.1f}M parameters, 256x256, 1 image, {args.steps} steps, {args.threads} "
                f"thread(s), median of {args.runs} alternating runs after warm-up",
                ["variant", "median ms/step", "ratio to CFG", "ideal (2+k)/2", "vs ideal", "separate / one forward"],
                rows,
                formats=[None, ".1f", ".3f", ".1f", ".3f", ".3f"],
            )
        ],
        "figures": [
            {
                "title": "Time per step against the number of negatives",
                "kind": "line",
                "x": [0, *args.ks],
                "series": {
                    "one batched forward": [1000 * cfg] + [1000 * per_step[f"Perp-Neg k={k}, one forward"]
                                                           for k in args.ks],
                    "one forward per branch": [1000 * cfg] + [1000 * per_step[f"Perp-Neg k={k}, separate forwards"]
                                                              for k in args.ks],
                },
                "xlabel": "negatives k (0: CFG)",
                "ylabel": "ms per step",
            }
        ],
        "timings": {name: timing.to_dict() for name, timing in times.items()},
    }
    record.show(results)
    settings = {"runs": args.runs, "steps": args.steps, "threads": args.threads, "ks": args.ks}
    print(record.save("perpneg_cost", settings, results, model="sd-small-random", folder=args.store))


if __name__ == "__main__":
    main()
