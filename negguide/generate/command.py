"""``negguide generate``: batch image generation from a prompts file, resumable, with metadata in every PNG."""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from itertools import islice
from pathlib import Path

import torch
from accelerate import PartialState
from diffusers import DiffusionPipeline

from negguide.commands.common import add_true_cfg_option, true_cfg_kwargs
from negguide.errors import InputError
from negguide.generate.model import load_model, read_model
from negguide.generate.options import CONFIG_KEYS, Options, resolve_options
from negguide.generate.plan import Batch, Job, Plan, expand_groups
from negguide.generate.prompts import Problem, read_items
from negguide.generate.runner import (
    finish,
    finished,
    generate_images,
    prepare_output,
    process_state,
    remove_temporaries,
    run_batches,
    save_image,
)
from negguide.generate.tokens import long_prompts, token_limit
from negguide.generate.values import NO_BUDGET
from negguide.memory import AUTO, MemoryBudget
from negguide.metadata import read_png_metadata

FROM_IMAGE_CONFLICTS = (
    "prompts",
    "config",
    "method",
    "set",
    "seeds",
    "negative_prompt",
    "steps",
    "guidance_scale",
    "guidance_rescale",
    "size",
    "batch_size",
    "skip_bad",
    "dry_run",
)
MAX_LISTED_PROBLEMS = 20
MAX_LISTED_IMAGES = 100
"""Images a dry run lists one by one; the counts cover them all."""
EXAMPLES = """\
examples:
  negguide generate examples/prompts.txt --out out/
  negguide generate prompts.csv --out out/ --method negative_prompts --method perpneg --seeds 0-3
  negguide generate prompts.jsonl --out out/ --config methods.json --set negtome.alpha=0.9 --batch-size 8
  negguide generate prompts.txt --out out/ --dry-run
  negguide generate --from-image out/images/00000-negative-prompts-s0-a-red-circle.png --out again/
  accelerate launch --multi_gpu --num_processes 2 -m negguide generate prompts.txt --out out/

.txt: one prompt a line; blank lines and lines starting with # are skipped. .csv: a header row naming columns
among prompt, negative_prompt, seed(s), method, steps, guidance_scale, guidance_rescale, width, height. .jsonl:
one object a line with those keys, plus negatives (e.g. [{"text": "blue square", "weight": 1.0, "start": 0.2,
"stop": 1.0}]) and guidance (a list of modules, e.g. ["perpneg"] or [{"name": "negtome", "alpha": 0.9}]). A
re-run with the same --out resumes.

--batch-size bounds every pipeline call: the seeds of a prompt are split into calls of at most that many
images. A method that compares the images of a prompt (NegToMe in batch mode) never gets a call of one image:
a lone last image takes one from the call before, or with --batch-size 2 joins it (a call of 3 images).
"""


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register ``generate`` on the ``negguide`` command's subparsers."""
    parser = subparsers.add_parser(
        "generate",
        help="generate images for every prompt x method x seed of a prompts file",
        description="Generate images for every prompt x method x seed of a prompts file, with generation "
        "parameters in each PNG, a manifest.jsonl and a comparison grid per prompt.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("prompts", nargs="?", type=Path, metavar="PROMPTS", help="a .txt, .csv or .jsonl file")
    parser.add_argument("--out", type=Path, required=True, help="output folder (created; a re-run resumes)")
    parser.add_argument(
        "--model",
        help="diffusers folder or hub id, or an embedded model: shapes-world (the default), shapes-world-distilled",
    )
    parser.add_argument("--config", type=Path, help=f"JSON or YAML file with any of: {', '.join(CONFIG_KEYS)}")
    parser.add_argument(
        "--method",
        action="append",
        metavar="[LABEL=]NAME[+NAME]",
        help="guidance modules by registry name; repeat to compare methods (default: negative_prompts)",
    )
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="NAME.KEY=VALUE",
        help="a module setting, VALUE read as JSON when it parses (e.g. negtome.alpha=0.9)",
    )
    parser.add_argument("--seeds", help="seeds, e.g. 0,1,2 or 0-7 (default: 0)")
    parser.add_argument("--negative-prompt", help="negative prompt of the prompts that give none")
    parser.add_argument("--steps", help="denoising steps (default: 20)")
    parser.add_argument(
        "--guidance-scale",
        help="classifier-free guidance scale (default: the model's, 5 for the embedded model, 7.5 for others)",
    )
    parser.add_argument("--guidance-rescale", help="guidance rescale in [0, 1] (default: 0)")
    add_true_cfg_option(parser)
    parser.add_argument("--size", help="WIDTHxHEIGHT, multiples of 8 (default: the model's native size)")
    parser.add_argument(
        "--batch-size", help="most images per pipeline call, the seeds of a prompt split between calls (default: 8)"
    )
    parser.add_argument(
        "--memory-budget",
        help="memory one network evaluation may use, e.g. 6GB or 512MiB; a call's rows that need more run in the "
        "fewest evaluations that fit, with the same images (default: auto on CUDA, the GPU's free memory; none on "
        "the CPU)",
    )
    parser.add_argument("--device", help="cpu, cuda, cuda:1, ... (default: CUDA when available)")
    parser.add_argument("--skip-bad", action="store_true", help="skip bad prompt lines instead of stopping")
    parser.add_argument("--dry-run", action="store_true", help="print the plan and the image count, generate nothing")
    parser.add_argument("--no-grid", dest="grids", action="store_false", help="write no comparison grids")
    parser.add_argument(
        "--from-image",
        type=Path,
        metavar="PNG",
        help="regenerate this image, pixel for pixel, from its negguide metadata",
    )
    parser.set_defaults(handler=run)
    return parser


def run(args: argparse.Namespace) -> int:
    """The ``generate`` command; returns the exit code."""
    return regenerate(args) if args.from_image is not None else generate(args)


def generate(args: argparse.Namespace) -> int:
    """A run over a prompts file; returns the exit code."""
    options = resolve_options(args)
    state = process_state(options.device)
    model = read_model(options.model)
    true_cfg_kwargs(options.defaults.true_cfg_scale, model)
    items, problems = read_items(options.prompts)
    groups, more = expand_groups(items, options.methods, options.defaults, model)
    _report(problems + more, options.skip_bad, state.is_main_process)
    if not groups:
        raise InputError(f"`PROMPTS`: no usable prompt in {options.prompts}.")
    try:
        plan = Plan(groups, options.batch_size, "--batch-size")
    except ValueError as error:
        raise InputError(str(error)) from None
    if options.dry_run:
        if state.is_main_process:
            _print_plan(plan, finished(options.out, plan), options, model.name)
        return 0
    prepare_output(options.out)
    state.wait_for_everyone()
    if state.is_main_process:
        remove_temporaries(options.out)
    state.wait_for_everyone()
    done = finished(options.out, plan)
    state.wait_for_everyone()
    if len(done) < plan.images:
        device = _device(options.device, state)
        pipe = load_model(model, device)
        if state.is_main_process:
            _report_long_prompts(pipe, plan)
        run_batches(pipe, plan, options.out, state, done, _memory_budget(options.memory_budget, device))
    state.wait_for_everyone()
    if state.is_main_process:
        complete, lines, grids = finish(options.out, plan.jobs(), options.grids)
        print(
            f"{options.out}: {complete - len(done)} images generated by {state.num_processes} process(es), "
            f"{len(done)} already there, {complete} of {plan.images} complete; manifest.jsonl has {lines} lines; "
            f"{grids} grids written."
        )
    return 0


def regenerate(args: argparse.Namespace) -> int:
    """``--from-image``: rebuild the image's pipeline call from its metadata and write the image to ``--out``."""
    conflicting = [name for name in FROM_IMAGE_CONFLICTS if getattr(args, name)]
    if conflicting:
        flags = ", ".join(name.upper() if name == "prompts" else f"--{name.replace('_', '-')}" for name in conflicting)
        raise InputError(f"`--from-image` takes only --out, --model and --device; drop {flags}.")
    try:
        _, config = read_png_metadata(args.from_image)
    except (OSError, ValueError) as error:
        raise InputError(f"`--from-image`: cannot read {args.from_image}: {error}") from None
    try:
        job = Job.from_record((config or {})["job"])
        batch = Batch.from_layout(job, config["batch"]["layout"])
        position = config["batch"]["index"]
        if batch.jobs[position] != job:
            raise ValueError("its batch layout does not hold its own job")
    except (KeyError, TypeError, ValueError, IndexError) as error:
        raise InputError(f"`--from-image`: {args.from_image} holds no usable negguide metadata ({error}).") from None
    model = read_model(args.model or job.model, "--model" if args.model else "--from-image")
    if args.model:
        batch = Batch(tuple(tuple(replace(job, model=model.name) for job in group) for group in batch.groups))
    state = process_state(args.device)
    prepare_output(args.out)
    image = generate_images(load_model(model, _device(args.device, state)), batch)[position]
    print(save_image(args.out, image, batch, position))
    return 0


def _report(problems: list[Problem], skip_bad: bool, main: bool) -> None:
    if not problems:
        return
    if not skip_bad:
        listed = "\n  ".join(map(str, problems[:MAX_LISTED_PROBLEMS]))
        more = f"\n  ... and {len(problems) - MAX_LISTED_PROBLEMS} more" if len(problems) > MAX_LISTED_PROBLEMS else ""
        raise InputError(
            f"{len(problems)} bad prompt record(s); nothing was generated (--skip-bad skips them):\n  {listed}{more}"
        )
    if main:
        for problem in problems:
            print(f"negguide generate: skipping {problem}", file=sys.stderr)


def _report_long_prompts(pipe: DiffusionPipeline, plan: Plan) -> None:
    limit = token_limit(pipe)
    if limit is not None:
        for message in long_prompts(plan.groups, limit):
            print(f"negguide generate: {message}", file=sys.stderr)


def _print_plan(plan: Plan, done: set[str], options: Options, model: str) -> None:
    for job in islice(plan.jobs(), MAX_LISTED_IMAGES):
        status = "done" if job.file in done else "todo"
        print(f"{status}  {job.file}  [{job.method}, seed {job.seed}, {job.width}x{job.height}, {job.steps} steps]")
    if plan.images > MAX_LISTED_IMAGES:
        print(f"... and {plan.images - MAX_LISTED_IMAGES} more images")
    sizes = ", ".join(
        f"{calls} of {images} image{'s' * (images != 1)}" for images, calls in sorted(plan.call_sizes().items())[::-1]
    )
    print(
        f"{plan.images} images ({plan.images - len(done)} to generate, {len(done)} done) in {plan.calls} pipeline "
        f"calls ({sizes}; --batch-size {options.batch_size}); model {model}; output {options.out}"
    )


def _device(device: str | None, state: PartialState) -> str:
    return device if device and state.num_processes == 1 else str(state.device)


def _memory_budget(budget: MemoryBudget, device: str) -> MemoryBudget:
    """The pipelines' ``memory_budget``: as given, none for ``"none"``, and by default ``"auto"`` on CUDA."""
    if budget is None:
        return AUTO if torch.device(device).type == "cuda" else None
    return None if budget == NO_BUDGET else budget
