"""``negguide analyze``: per-step influence of a negative prompt, as a CSV and a plot."""

from __future__ import annotations

import argparse

from negguide.analysis import analyze_negative
from negguide.commands.common import (
    add_run_options,
    checked,
    model_and_scale,
    output_folder,
    save_png,
    text,
    true_cfg_kwargs,
)
from negguide.errors import InputError
from negguide.generate import values
from negguide.generate.model import load_model

EXAMPLES = """\
examples:
  negguide analyze --prompt "a red circle" --negative "red square" --out out/analysis
  negguide analyze --prompt "a red circle" --negative "red square" --seeds 0-15 --start 0.2 --out out/delayed
  negguide analyze --prompt "a red circle" --negative "red square" --observe --out out/observed

Writes analysis.csv (one row per step: step, fraction, timestep, active, norm, cosine, attention_mass; the
means over the seeds), analysis.png and one image per seed. norm is ||e_n - e_u||, cosine is
cos(e_n - e_u, e_p - e_u), attention_mass the share of cross-attention the negative's tokens receive.
"""


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register ``analyze`` on the ``negguide`` command's subparsers."""
    parser = subparsers.add_parser(
        "analyze",
        help="measure a negative prompt's influence at every denoising step",
        description="Generate with a negative prompt and record, at every step, ||e_n - e_u||, its cosine with "
        "e_p - e_u and the cross-attention its tokens receive (Ban et al., arXiv 2406.02965).",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--prompt", required=True, help="the prompt")
    parser.add_argument("--negative", required=True, help="the negative prompt")
    parser.add_argument("--seeds", default="0", help="seeds, e.g. 0,1,2 or 0-7 (default: 0)")
    parser.add_argument("--start", default="0", help="step fraction at which the negative starts (default: 0)")
    parser.add_argument("--stop", default="1", help="step fraction at which it stops (default: 1)")
    parser.add_argument(
        "--observe",
        action="store_true",
        help="do not apply the negative: follow the prompt's own run and measure the negative alongside",
    )
    parser.add_argument("--per-image", action="store_true", help="add one column per seed and metric to the CSV")
    add_run_options(parser)
    parser.set_defaults(handler=run)
    return parser


def run(args: argparse.Namespace) -> int:
    """The ``analyze`` command; returns the exit code."""
    prompt = text(args.prompt, "--prompt")
    negative = text(args.negative, "--negative")
    seeds = checked(values.seeds, args.seeds, "--seeds")
    steps = checked(values.positive_integer, args.steps, "--steps")
    start = checked(values.fraction, args.start, "--start")
    stop = checked(values.fraction, args.stop, "--stop")
    if start >= stop:
        raise InputError(f"`--start` ({start}) must be smaller than `--stop` ({stop}).")
    out = output_folder(args.out)
    model, scale = model_and_scale(args)
    pipe = load_model(model, args.device)
    try:
        result = analyze_negative(
            pipe,
            prompt,
            negative,
            list(seeds),
            steps=steps,
            guidance_scale=scale,
            start=start,
            stop=stop,
            apply=not args.observe,
            **true_cfg_kwargs(args.true_cfg_scale, model),
        )
    except ValueError as error:
        raise InputError(str(error)) from None
    out.mkdir(parents=True, exist_ok=True)
    for seed, image in zip(seeds, result.images):
        save_png(image, out / f"image-s{seed}.png")
    csv_path = result.to_csv(out / "analysis.csv", per_image=args.per_image)
    plot_path = result.plot(out / "analysis.png")
    for metric in result.metrics:
        onset = result.onset(metric)
        print(f"{metric}: onset at step {onset} of {result.num_steps} (first step at half its range)")
    print(f"wrote {csv_path}, {plot_path} and {len(seeds)} image(s) to {out}")
    return 0
