"""``negguide generate``: batch image generation from a prompts file, resumable, with metadata in every PNG."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from accelerate import PartialState

from negguide.errors import InputError
from negguide.generate import values
from negguide.generate.methods import (
    DEFAULT_METHOD,
    Method,
    apply_setting,
    check_labels,
    method_from_config,
    parse_method,
)
from negguide.generate.model import load_model, read_model
from negguide.generate.plan import Batch, Defaults, Job, batches, expand
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
from negguide.metadata import read_png_metadata

CONFIG_KEYS = (
    "methods",
    "seeds",
    "steps",
    "guidance_scale",
    "guidance_rescale",
    "width",
    "height",
    "negative_prompt",
    "batch_size",
    "model",
)
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
EXAMPLES = """\
examples:
  negguide generate examples/prompts.txt --out out/
  negguide generate prompts.csv --out out/ --method negative_prompts --method perpneg --seeds 0-3
  negguide generate prompts.jsonl --out out/ --config methods.json --set negtome.alpha=0.9 --batch-size 8
  negguide generate prompts.txt --out out/ --dry-run
  negguide generate --from-image out/images/00000-negative_prompts-s0-a-red-circle.png --out again/
  accelerate launch --multi_gpu --num_processes 2 -m negguide generate prompts.txt --out out/

.txt: one prompt a line. .csv: a header row naming columns among prompt, negative_prompt, seed(s), method,
steps, guidance_scale, guidance_rescale, width, height. .jsonl: one object a line with those keys, plus
negatives (e.g. [{"text": "blue square", "weight": 1.0, "start": 0.2, "stop": 1.0}]) and guidance (a list of
modules, e.g. ["perpneg"] or [{"name": "negtome", "alpha": 0.9}]). A re-run with the same --out resumes.
"""


@dataclass(frozen=True)
class Options:
    """A run's checked options: flags first, then the config file, then the defaults."""

    prompts: Path
    out: Path
    model: str | None
    methods: tuple[Method, ...]
    defaults: Defaults
    batch_size: int
    device: str | None
    skip_bad: bool
    dry_run: bool
    grids: bool


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
    parser.add_argument("--model", help="diffusers folder or hub id (default: the embedded shapes-world model)")
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
    parser.add_argument("--guidance-scale", help="classifier-free guidance scale (default: 7.5)")
    parser.add_argument("--guidance-rescale", help="guidance rescale in [0, 1] (default: 0)")
    parser.add_argument("--size", help="WIDTHxHEIGHT, multiples of 8 (default: the model's native size)")
    parser.add_argument("--batch-size", help="images per pipeline call (default: 8)")
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
    if args.from_image is not None:
        return regenerate(args)
    options = resolve_options(args)
    state = process_state(options.device)
    model = read_model(options.model)
    items, problems = read_items(options.prompts)
    groups, more = expand(items, options.methods, options.defaults, model)
    _report(problems + more, options.skip_bad, state.is_main_process)
    if not groups:
        raise InputError(f"`PROMPTS`: no usable prompt in {options.prompts}.")
    planned = batches(groups, options.batch_size)
    jobs = [job for batch in planned for job in batch.jobs]
    if options.dry_run:
        if state.is_main_process:
            _print_plan(planned, finished(options.out, jobs) if options.out.is_dir() else set(), options, model.name)
        return 0
    prepare_output(options.out)
    state.wait_for_everyone()
    if state.is_main_process:
        remove_temporaries(options.out)
    state.wait_for_everyone()
    done = finished(options.out, jobs)
    state.wait_for_everyone()
    if len(done) < len(jobs):
        run_batches(load_model(model, _device(options.device, state)), planned, options.out, state, done)
    state.wait_for_everyone()
    if state.is_main_process:
        complete, lines, grids = finish(options.out, jobs, options.grids)
        print(
            f"{options.out}: {complete - len(done)} images generated by {state.num_processes} process(es), "
            f"{len(done)} already there, {complete} of {len(jobs)} complete; manifest.jsonl has {lines} lines; "
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
    model = read_model(args.model or job.model)
    if args.model:
        batch = Batch(tuple(tuple(replace(job, model=model.name) for job in group) for group in batch.groups))
    state = process_state(args.device)
    prepare_output(args.out)
    image = generate_images(load_model(model, _device(args.device, state)), batch)[position]
    print(save_image(args.out, image, batch, position))
    return 0


def resolve_options(args: argparse.Namespace) -> Options:
    """Check the flags and the config file; InputError naming the flag or the config key."""
    if args.prompts is None:
        raise InputError("`PROMPTS`: give a prompts file (.txt, .csv or .jsonl), or --from-image.")
    config = _read_config(args.config) if args.config else {}

    def pick(key: str, flag: str, check: Callable[[object, str], Any], default: Any) -> Any:
        value = getattr(args, flag)
        if value is not None:
            return _checked(check, value, f"--{flag.replace('_', '-')}")
        if key in config:
            return _checked(check, config[key], f"{args.config}: {key}")
        return default

    if args.size is not None:
        width, height = _checked(values.size, args.size, "--size")
    else:
        width, height = (
            _checked(values.side, config[key], f"{args.config}: {key}") if key in config else None
            for key in ("width", "height")
        )
    defaults = Defaults(
        seeds=pick("seeds", "seeds", values.seeds, Defaults.seeds),
        steps=pick("steps", "steps", values.positive_integer, Defaults.steps),
        guidance_scale=pick("guidance_scale", "guidance_scale", values.number, Defaults.guidance_scale),
        guidance_rescale=pick("guidance_rescale", "guidance_rescale", values.fraction, Defaults.guidance_rescale),
        width=width,
        height=height,
        negative_prompt=pick("negative_prompt", "negative_prompt", _text, Defaults.negative_prompt),
    )
    return Options(
        prompts=args.prompts,
        out=args.out,
        model=pick("model", "model", _text, None),
        methods=_methods(args, config),
        defaults=defaults,
        batch_size=pick("batch_size", "batch_size", values.positive_integer, 8),
        device=args.device,
        skip_bad=args.skip_bad,
        dry_run=args.dry_run,
        grids=args.grids,
    )


def _methods(args: argparse.Namespace, config: dict[str, Any]) -> tuple[Method, ...]:
    try:
        if args.method:
            methods = tuple(parse_method(spec, "--method") for spec in args.method)
        elif "methods" in config:
            methods = _config_methods(config["methods"], f"{args.config}: methods")
        else:
            methods = (DEFAULT_METHOD,)
        for assignment in args.set:
            methods = apply_setting(methods, assignment, "--set")
        check_labels(methods, "--method")
    except (TypeError, ValueError) as error:
        raise InputError(str(error)) from None
    return methods


def _config_methods(value: object, argument: str) -> tuple[Method, ...]:
    if isinstance(value, dict):
        return tuple(method_from_config(str(label), spec, f"{argument}.{label}") for label, spec in value.items())
    if not isinstance(value, list) or not value:
        raise TypeError(f"`{argument}` must be a mapping of label to modules, or a non-empty list of methods.")
    methods = []
    for index, spec in enumerate(value):
        where = f"{argument}[{index}]"
        if isinstance(spec, str):
            methods.append(parse_method(spec, where))
        else:
            methods.append(method_from_config(None, [spec] if isinstance(spec, dict) else spec, where))
    return tuple(methods)


def _read_config(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise InputError(f"`--config`: cannot read {path}: {error}.") from None
    if path.suffix.lower() == ".json":
        try:
            config = json.loads(text)
        except json.JSONDecodeError as error:
            raise InputError(f"{path}:{error.lineno}: not valid JSON ({error.msg}).") from None
    elif path.suffix.lower() in (".yaml", ".yml"):
        import yaml

        try:
            config = yaml.safe_load(text)
        except yaml.YAMLError as error:
            raise InputError(f"`--config`: {path} is not valid YAML: {error}") from None
    else:
        raise InputError(f"`--config`: {path} must be a .json, .yaml or .yml file.")
    if not isinstance(config, dict):
        raise InputError(f"`--config`: {path} must hold a mapping with keys among {', '.join(CONFIG_KEYS)}.")
    unknown = sorted(set(config) - set(CONFIG_KEYS))
    if unknown:
        raise InputError(f"{path}: unknown key {', '.join(map(repr, unknown))}; known keys: {', '.join(CONFIG_KEYS)}.")
    return config


def _checked(check: Callable[[object, str], Any], value: object, argument: str) -> Any:
    try:
        return check(value, argument)
    except (TypeError, ValueError) as error:
        raise InputError(str(error)) from None


def _text(value: object, name: str) -> str:
    if not isinstance(value, str):
        raise TypeError(f"`{name}` must be text, got {value!r}.")
    return value


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


def _print_plan(planned: list[Batch], done: set[str], options: Options, model: str) -> None:
    jobs = [job for batch in planned for job in batch.jobs]
    for job in jobs:
        status = "done" if job.file in done else "todo"
        print(f"{status}  {job.file}  [{job.method}, seed {job.seed}, {job.width}x{job.height}, {job.steps} steps]")
    todo = len(jobs) - len(done)
    print(
        f"{len(jobs)} images ({todo} to generate, {len(done)} done) in {len(planned)} pipeline calls of up to "
        f"{options.batch_size} images; model {model}; output {options.out}"
    )


def _device(device: str | None, state: PartialState) -> str:
    return device if device and state.num_processes == 1 else str(state.device)
