"""Shapes-world quality harness: what a guidance configuration draws, judged by the analytic detector.

    python benchmarks/quality.py                      # the model's quality and the standard negative
    python benchmarks/quality.py --seeds 64 --method standard --method 'perpneg:{"weight_mode": "w"}'

Every case of the suite (``negguide.shapes.cases``) runs over ``--seeds`` seeds (one CPU generator per
image, so an image does not depend on its batch neighbours), 64x64, ``--steps`` steps, CFG ``--scale``,
on the embedded model unless ``--model`` names another. Two tables are printed:

1. *Quality* (no negative): per prompt, the share of images holding every object the prompt names (right
   colour and shape), the share with unnamed extra objects, and, for one-object prompts, how often the
   prompt's frequent companion (``negguide.shapes.COMPANIONS``) appears.
2. *Negatives*: per case and method, how often the negative's object is still present (``none`` is the
   same prompt without a negative), how often the prompted objects the negative does not name are kept, and
   how often an image holds an object larger than any the world draws (`negguide.metrics.oversized`: shapes
   of one colour drawn touching, e.g. a second copy of the prompted object where the negative's object was).

A method is ``none``, ``standard`` (the call's ``negative_prompt``), or a registered module name with
optional JSON settings, ``NAME:{...}``, built from the case's negative with ``from_negative_prompt`` and
called with that negative as the call's ``negative_prompt`` (which ``negative_prompts`` uses as its
negative, e.g. ``'negative_prompts:{"guidance_rescale": 0.7}'``).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from collections.abc import Sequence
from typing import Any

import torch

import negguide
from negguide.loading import EMBEDDED_GUIDANCE_SCALE
from negguide.metrics import judge, oversized, parse_phrase, parse_prompt, presence_rate
from negguide.modules.base import registered
from negguide.shapes import COMPANIONS, detect
from negguide.shapes.cases import negative_cases, quality_cases

COMPANION_KINDS = ("companion", "overlap-colour", "overlap-shape")
"""The cases whose negative names the one-object prompt's frequent companion."""


def call_kwargs(method: str, negative: str | None) -> dict[str, Any]:
    """The pipeline arguments that apply ``method`` with ``negative``."""
    if method == "none" or negative is None:
        return {}
    if method == "standard":
        return {"negative_prompt": negative}
    name, _, settings = method.partition(":")
    module = registered(name, "--method").from_negative_prompt(negative)
    if settings:
        module = dataclasses.replace(module, **json.loads(settings))
    return {"guidance": module, "negative_prompt": negative}


def generate(pipe, prompt: str, seeds: Sequence[int], kwargs: dict[str, Any], args) -> list:
    images = []
    for begin in range(0, len(seeds), args.batch):
        chunk = seeds[begin:begin + args.batch]
        images += pipe([prompt] * len(chunk), generator=[torch.Generator().manual_seed(s) for s in chunk],
                       num_inference_steps=args.steps, guidance_scale=args.scale, height=64, width=64,
                       **kwargs).images
    return images


def pct(x: float) -> str:
    return f"{100 * x:.1f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default=None, help="model folder or hub id (default: the embedded model)")
    parser.add_argument("--seeds", type=int, default=200)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--scale", type=float, default=EMBEDDED_GUIDANCE_SCALE, help="CFG scale (the embedded model's)")
    parser.add_argument("--batch", type=int, default=50)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--method", action="append", help="repeatable; default: standard")
    parser.add_argument("--suite", choices=["all", "quality", "negatives"], default="all")
    args = parser.parse_args()
    methods = args.method or ["standard"]
    torch.set_num_threads(args.threads)
    pipe = negguide.load_pipeline(args.model)
    pipe.set_progress_bar_config(disable=True)
    seeds = list(range(args.seeds))
    cache: dict[tuple[str, str, str | None], list] = {}
    started = time.perf_counter()

    def detections(prompt: str, method: str, negative: str | None) -> list:
        key = (prompt, "none", None) if method == "none" or negative is None else (prompt, method, negative)
        if key not in cache:
            images = generate(pipe, prompt, seeds, call_kwargs(method, negative), args)
            cache[key] = [detect(image) for image in images]
        return cache[key]

    if args.suite in ("all", "quality"):
        print(f"\n### Quality, no negative ({args.seeds} seeds, {args.steps} steps, CFG {args.scale})\n")
        print("| kind | prompt | named objects % | with extra objects % | companion | companion present % |")
        print("|---|---|---|---|---|---|")
        for case in quality_cases():
            dets = detections(case.prompt, "none", None)
            verdicts = [judge(d, case.prompt) for d in dets]
            specs = parse_prompt(case.prompt)
            companion = COMPANIONS.get((specs[0].colour, specs[0].shape)) if len(specs) == 1 else None
            comp_text = f"{companion[0]} {companion[1]}" if companion else "-"
            comp_rate = pct(presence_rate(dets, parse_phrase(comp_text))) if companion else "-"
            print(f"| {case.kind} | {case.prompt} | {pct(sum(v.named for v in verdicts) / len(verdicts))} | "
                  f"{pct(sum(v.extra > 0 for v in verdicts) / len(verdicts))} | {comp_text} | {comp_rate} |")
    if args.suite in ("all", "negatives"):
        print(f"\n### Negatives ({args.seeds} seeds, {args.steps} steps, CFG {args.scale})\n")
        print("| kind | prompt | negative | method | negative present % | prompted kept % | named objects % | "
              "oversized % |")
        print("|---|---|---|---|---|---|---|---|")
        goal: dict[str, list[bool]] = {method: [] for method in methods}
        for case in negative_cases():
            rates = {}
            for method in ["none", *methods]:
                dets = detections(case.prompt, method, case.negative)
                verdicts = [judge(d, case.prompt, case.negative) for d in dets]
                n = len(verdicts)
                rates[method] = (sum(not v.negative_removed for v in verdicts) / n, sum(v.kept for v in verdicts) / n)
                merged = sum(bool(oversized(d)) for d in dets) / n
                print(f"| {case.kind} | {case.prompt} | {case.negative} | {method} | {pct(rates[method][0])} | "
                      f"{pct(rates[method][1])} | {pct(sum(v.named for v in verdicts) / n)} | {pct(merged)} |")
            if case.kind in COMPANION_KINDS and rates["none"][0] >= 0.25:
                for method in methods:
                    present, kept = rates[method]
                    goal[method].append(present <= rates["none"][0] / 5 and kept >= 0.9)
        print("\nCompanion cases whose companion shows in >= 25% of images without a negative, and how many of them "
              "the method cuts to at most a fifth while keeping the prompted object in >= 90%:")
        for method, met in goal.items():
            print(f"- {method}: {sum(met)} of {len(met)}")
    print(f"\n{sum(len(v) for v in cache.values())} images in {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
