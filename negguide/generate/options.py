"""The options of ``negguide generate``: flags first, then a JSON or YAML config file, then the defaults."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

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
from negguide.generate.plan import Defaults
from negguide.memory import MemoryBudget

CONFIG_KEYS = (
    "methods",
    "seeds",
    "steps",
    "guidance_scale",
    "guidance_rescale",
    "width",
    "height",
    "negative_prompt",
    "true_cfg_scale",
    "batch_size",
    "memory_budget",
    "model",
)


@dataclass(frozen=True)
class Options:
    """A run's checked options: flags first, then the config file, then the defaults."""

    prompts: Path
    out: Path
    model: str | None
    methods: tuple[Method, ...]
    defaults: Defaults
    batch_size: int
    memory_budget: MemoryBudget
    device: str | None
    skip_bad: bool
    dry_run: bool
    grids: bool


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
        true_cfg_scale=pick("true_cfg_scale", "true_cfg_scale", values.number, None),
    )
    return Options(
        prompts=args.prompts,
        out=args.out,
        model=pick("model", "model", _text, None),
        methods=_methods(args, config),
        defaults=defaults,
        batch_size=pick("batch_size", "batch_size", values.positive_integer, 8),
        memory_budget=pick("memory_budget", "memory_budget", values.memory_budget, None),
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
