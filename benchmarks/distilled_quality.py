"""The guidance-distilled shapes-world model against its teacher: quality at one evaluation per step, and cost.

    python benchmarks/distilled_quality.py                 # 200 seeds per prompt, stored in benchmarks/runs/
    python benchmarks/distilled_quality.py --quick         # 8 seeds, 2 timing rounds: a smoke run

Every prompt of the quality suite (``negguide.shapes.cases.quality_cases``: the 12 one-object and 10 two-object
prompts) runs with the same seeds through the teacher, ``"shapes-world"`` at CFG ``--scale`` (two rows per image
and step), and through the student, ``"shapes-world-distilled"`` with ``guidance_scale=--scale`` as its
embedded guidance (one row). The detector judges every image: the share holding every named object (right
colour and shape), the share with unnamed objects, and for one-object prompts how often the prompt's frequent
companion appears, so that negatives have the same work to do on both. Goal: adherence within 3 points of the
teacher's for one- and two-object prompts.

Cost: the same batch of ``--cost-images`` images, ``--steps`` steps, alternating teacher and student calls
(`benchmarks.timing.alternating`); time per step of each, and the ratio (goal: <= 0.6).
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence

import torch
from nag_quality import generate
from record import add_store_argument, model_identity, save, show, table
from timing import alternating

import negguide
from negguide.loading import DISTILLED_MODEL_NAME, EMBEDDED_GUIDANCE_SCALE, EMBEDDED_MODEL_NAME
from negguide.metrics import judge, parse_phrase, parse_prompt, presence_rate
from negguide.shapes import COMPANIONS, detect
from negguide.shapes.cases import quality_cases


def companion(prompt: str) -> str | None:
    specs = parse_prompt(prompt)
    found = COMPANIONS.get((specs[0].colour, specs[0].shape)) if len(specs) == 1 else None
    return None if found is None else " ".join(found)


def measure(pipe, prompt: str, seeds: Sequence[int], args) -> dict[str, float | None]:
    detections = [detect(image) for image in generate(pipe, prompt, seeds, {}, args)]
    verdicts = [judge(found, prompt) for found in detections]
    other = companion(prompt)
    return {
        "named": 100 * sum(v.named for v in verdicts) / len(verdicts),
        "extra": 100 * sum(v.extra > 0 for v in verdicts) / len(verdicts),
        "companion": None if other is None else 100 * presence_rate(detections, parse_phrase(other)),
    }


def mean(values: Sequence[float]) -> float:
    return sum(values) / len(values)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, default=200)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--scale", type=float, default=EMBEDDED_GUIDANCE_SCALE)
    parser.add_argument("--batch", type=int, default=50)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--cost-images", type=int, default=50, help="images a timed call (the quality run's batch)")
    parser.add_argument("--runs", type=int, default=7, help="timing rounds")
    parser.add_argument("--quick", action="store_true", help="8 seeds and 2 timing rounds")
    add_store_argument(parser)
    args = parser.parse_args()
    if args.quick:
        args.seeds, args.runs = 8, 2
    torch.set_num_threads(args.threads)
    teacher = negguide.load_pipeline(EMBEDDED_MODEL_NAME, device="cpu")
    student = negguide.load_pipeline(DISTILLED_MODEL_NAME, device="cpu")
    for pipe in (teacher, student):
        pipe.set_progress_bar_config(disable=True)
    seeds = list(range(args.seeds))
    started = time.perf_counter()

    rows, kinds = [], {"one object": [], "two objects": []}
    for case in quality_cases():
        pair = [measure(pipe, case.prompt, seeds, args) for pipe in (teacher, student)]
        kind = "one object" if case.kind == "plain" else "two objects"
        kinds[kind].append(pair)
        rows.append([case.prompt, *(pair[i][key] for key in ("named", "extra", "companion") for i in (0, 1))])
    summary = []
    for kind, pairs in kinds.items():
        named = [mean([pair[i]["named"] for pair in pairs]) for i in (0, 1)]
        companions = [[pair[i]["companion"] for pair in pairs if pair[i]["companion"] is not None] for i in (0, 1)]
        shares = [mean(values) if values else None for values in companions]
        summary.append([kind, *named, named[1] - named[0], *shares, abs(named[1] - named[0]) <= 3])

    call = {
        "prompt": ["a red circle"] * args.cost_images,
        "num_inference_steps": args.steps,
        "guidance_scale": args.scale,
        "height": 64,
        "width": 64,
        "output_type": "latent",
    }

    def run(pipe):
        return lambda round_: pipe(
            **call, generator=[torch.Generator().manual_seed(round_ * 100 + i) for i in range(args.cost_images)]
        )

    timings = alternating({"teacher": run(teacher), "student": run(student)}, args.runs)
    per_step = {name: 1000 * timing.median / args.steps for name, timing in timings.items()}
    ratio = per_step["student"] / per_step["teacher"]
    elapsed = time.perf_counter() - started

    percent = ".1f"
    results = {
        "title": "Guidance-distilled shapes world against its teacher",
        "summary": "The distilled student makes a guided image with one network evaluation per step; the teacher "
        "needs two (classifier-free guidance). Same prompts and seeds for both, judged by the shapes-world detector; "
        "the companion share says whether negatives have the same work to do on both.",
        "tables": [
            table(
                f"Prompt adherence, teacher (CFG {args.scale}, 2 rows per image and step) and distilled student "
                f"(embedded scale {args.scale}, 1 row), {args.seeds} seeds, {args.steps} steps",
                [
                    "prompt",
                    "teacher named %",
                    "student named %",
                    "teacher extra %",
                    "student extra %",
                    "teacher companion %",
                    "student companion %",
                ],
                rows,
                [None, *[percent] * 6],
            ),
            table(
                "Means (goal: student adherence within 3 points of the teacher's)",
                [
                    "prompts",
                    "teacher named %",
                    "student named %",
                    "difference",
                    "teacher companion %",
                    "student companion %",
                    "within 3 points",
                ],
                summary,
                [None, percent, percent, "+.1f", percent, percent, None],
            ),
            table(
                f"Cost: {args.cost_images} images, {args.steps} steps, median of {args.runs} alternating rounds "
                "(goal: student <= 0.6x teacher)",
                ["model", "ms per step", "ratio to the teacher"],
                [["teacher, CFG", per_step["teacher"], 1.0], ["student", per_step["student"], ratio]],
                [None, ".1f", ".3f"],
            ),
        ],
        "timings": {name: timing.to_dict() for name, timing in timings.items()},
        "elapsed_s": elapsed,
    }
    show(results)
    print(f"\n{2 * len(rows) * args.seeds} images and the timing in {elapsed:.0f} s")
    settings = {key: value for key, value in vars(args).items() if key != "store"}
    path = save("distilled_quality", settings, results, model_identity(DISTILLED_MODEL_NAME), args.store)
    print(f"stored {path}")


if __name__ == "__main__":
    main()
