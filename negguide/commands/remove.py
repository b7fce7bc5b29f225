"""``negguide remove``: remove an object with the shortest delayed negative that does."""

from __future__ import annotations

import argparse
import csv
import importlib
import io

from negguide.atomic import write_atomic
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
from negguide.removal import SEARCHES, Detector, DetectorError, remove_object

EXAMPLES = """\
examples:
  negguide remove --prompt "a red circle" --object "red square" --out out/removal
  negguide remove --prompt "a red circle" --object "red square" --seed 3 --search bisect --out out/removal
  negguide remove --model path/to/sd --prompt "a street" --object "a car" --detector mydetectors:car --out out/

Writes plain.png (no negative), removed.png (the chosen window), trial-<k>-steps-<a>-<b>.png for every trial and
trials.csv (window, verdict and outcome of each trial: removed, recoloured, reshaped, replaced or present). The
built-in detector reads shapes-world phrases; --detector names any callable detector(image, object) -> bool as
module:attribute.
"""


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register ``remove`` on the ``negguide`` command's subparsers."""
    parser = subparsers.add_parser(
        "remove",
        help="remove an object with the shortest delayed negative window",
        description="Remove an object from the image of a prompt and seed: lengthen a negative's window "
        "[start, end) step by step until a detector no longer finds the object (Ban et al., arXiv 2406.02965).",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--prompt", required=True, help="the prompt")
    parser.add_argument("--object", required=True, help="the object to remove, also the negative prompt")
    parser.add_argument("--seed", default="0", help="the seed (default: 0)")
    parser.add_argument("--start", default="0.2", help="step fraction at which the negative starts (default: 0.2)")
    parser.add_argument("--search", default="linear", choices=SEARCHES, help="window search (default: linear)")
    parser.add_argument("--detector", metavar="MODULE:NAME", help="a detector(image, object) -> bool to import")
    add_run_options(parser)
    parser.set_defaults(handler=run)
    return parser


def run(args: argparse.Namespace) -> int:
    """The ``remove`` command; returns the exit code."""
    prompt = text(args.prompt, "--prompt")
    obj = text(args.object, "--object")
    seed = checked(values.seed, args.seed, "--seed")
    steps = checked(values.positive_integer, args.steps, "--steps")
    start = checked(values.number, args.start, "--start")
    if not 0 <= start < 1:
        raise InputError(f"`--start` must lie in [0, 1), got {start}.")
    detector = imported_detector(args.detector) if args.detector else None
    out = output_folder(args.out)
    model, scale = model_and_scale(args)
    pipe = load_model(model, args.device)
    try:
        result = remove_object(
            pipe,
            prompt,
            obj,
            seed,
            detector=detector,
            start=start,
            search=args.search,
            steps=steps,
            guidance_scale=scale,
            **true_cfg_kwargs(args.true_cfg_scale, model),
        )
    except (ValueError, DetectorError) as error:
        raise InputError(str(error)) from None
    save_png(result.plain_image, out / "plain.png")
    save_png(result.image, out / "removed.png")
    table = io.StringIO()
    writer = csv.writer(table, lineterminator="\n")
    writer.writerow(["trial", "start_step", "end_step", "start", "stop", "present", "outcome"])
    for k, trial in enumerate(result.trials):
        save_png(trial.image, out / f"trial-{k}-steps-{trial.window[0]}-{trial.window[1]}.png")
        writer.writerow([k, *trial.window, *(f"{f:.4f}" for f in trial.fractions), int(trial.present), trial.outcome])
    write_atomic(out / "trials.csv", lambda file: file.write(table.getvalue().encode("utf-8")))
    print(result.summary())
    return 0


def imported_detector(spec: str) -> Detector:
    """The callable ``module:attribute`` names; `InputError` when it cannot be imported or is not callable."""
    module_name, _, attribute = spec.partition(":")
    if not module_name or not attribute:
        raise InputError(f"`--detector` must be MODULE:NAME, e.g. mydetectors:has_car, got {spec!r}.")
    try:
        detector = getattr(importlib.import_module(module_name), attribute)
    except (ImportError, AttributeError) as error:
        raise InputError(f"`--detector`: cannot import {spec!r}: {error}") from None
    if not callable(detector):
        raise InputError(f"`--detector`: {spec!r} is a {type(detector).__name__}, not a callable.")
    return detector
