"""Options and helpers shared by the ``analyze`` and ``remove`` commands."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import PIL.Image

from negguide.atomic import write_atomic
from negguide.errors import InputError
from negguide.generate import values
from negguide.generate.model import ModelInfo, read_model

T = TypeVar("T")


def add_run_options(parser: argparse.ArgumentParser) -> None:
    """``--out``, ``--model``, ``--device``, ``--steps`` and ``--guidance-scale``."""
    parser.add_argument("--out", type=Path, required=True, help="output folder (created)")
    parser.add_argument("--model", help="diffusers folder or hub id (default: the embedded shapes-world model)")
    parser.add_argument("--device", help="cpu, cuda, cuda:1, ... (default: CUDA when available)")
    parser.add_argument("--steps", default="20", help="denoising steps (default: 20)")
    parser.add_argument(
        "--guidance-scale",
        help="classifier-free guidance scale, > 1 (default: the model's, 5 for the embedded model, 7.5 for others)",
    )
    add_true_cfg_option(parser)


def add_true_cfg_option(parser: argparse.ArgumentParser) -> None:
    """``--true-cfg-scale``: the scale negatives act with on guidance-distilled models."""
    parser.add_argument(
        "--true-cfg-scale",
        help="true classifier-free guidance scale, > 1, for guidance-distilled models (Flux, shapes-world-distilled): "
        "their negatives need it; --guidance-scale stays the model's embedded scale",
    )


def checked(check: Callable[[object, str], T], value: object, argument: str) -> T:
    """``check(value, argument)`` with its TypeError or ValueError as an `InputError`."""
    try:
        return check(value, argument)
    except (TypeError, ValueError) as error:
        raise InputError(str(error)) from None


def text(value: object, argument: str) -> str:
    """A non-empty text flag."""
    if not isinstance(value, str) or not value.strip():
        raise InputError(f"`{argument}` must be a non-empty text, got {value!r}.")
    return value.strip()


def model_and_scale(args: argparse.Namespace) -> tuple[ModelInfo, float]:
    """The model of ``--model`` (its configuration only) and the run's guidance scale: ``--guidance-scale``, else
    the model's. An `InputError` unless the scale is > 1: negatives act through guidance."""
    model = read_model(args.model)
    if args.guidance_scale is None:
        scale = model.guidance_scale
    else:
        scale = checked(values.number, args.guidance_scale, "--guidance-scale")
    if scale <= 1:
        raise InputError(f"`--guidance-scale` must be > 1, got {scale}: negatives act through guidance.")
    return model, scale


def output_folder(out: Path) -> Path:
    """``--out`` checked: an `InputError` when it is a file. Create it only once there is something to write."""
    if out.exists() and not out.is_dir():
        raise InputError(f"`--out`: {out} is a file; give a folder.")
    return out


def save_png(image: PIL.Image.Image, path: Path) -> Path:
    """Write ``image`` as a PNG, atomically, creating its folder."""
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_atomic(path, lambda file: image.save(file, format="PNG"))


def true_cfg_kwargs(value: object, model: ModelInfo) -> dict[str, float]:
    """The pipeline arguments of ``--true-cfg-scale`` for ``model``: ``{"true_cfg_scale": ...}`` for a model whose
    negatives need true CFG, where the flag must be > 1; an `InputError` when it is missing there or given for a
    model that guides on its own."""
    if not model.true_cfg:
        if value is not None:
            raise InputError(
                f"`--true-cfg-scale` is for guidance-distilled models; this {model.family} model guides with "
                "--guidance-scale."
            )
        return {}
    if value is None:
        raise InputError(
            f"`--true-cfg-scale`: this {model.family} model is guidance-distilled, so a negative acts only through "
            "true classifier-free guidance: give --true-cfg-scale > 1, e.g. 4."
        )
    scale = checked(values.number, value, "--true-cfg-scale")
    if scale <= 1:
        raise InputError(f"`--true-cfg-scale` must be > 1, got {scale}: negatives act through true guidance.")
    return {"true_cfg_scale": scale}
