"""Shared pieces of the ``negguide generate`` tests: a tiny model folder, the run's inputs, the command run in
this process or as a subprocess, and image comparisons."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np
import PIL.Image
from conftest import tiny_components
from diffusers import StableDiffusionPipeline

from negguide.atomic import TEMP_PREFIX
from negguide.cli import main

PROMPTS = ["a red circle", "a blue square", "a green triangle"]
METHODS = {"plain": ["negative_prompts"], "rescaled": [{"name": "negative_prompts", "guidance_rescale": 0.7}]}
NEGATIVE = "blurry"
STEPS = 8
SEEDS = (0, 1)


def save_tiny_model(folder: Path) -> Path:
    """The tiny test components saved as a diffusers pipeline folder (64x64 images)."""
    StableDiffusionPipeline(**tiny_components()).save_pretrained(folder)
    return folder


def write_inputs(folder: Path) -> tuple[Path, Path]:
    """A prompts file with `PROMPTS` and a config file with the two `METHODS`."""
    folder.mkdir(parents=True, exist_ok=True)
    prompts = folder / "prompts.txt"
    prompts.write_text("\n".join(PROMPTS) + "\n")
    config = folder / "methods.json"
    config.write_text(json.dumps({"methods": METHODS, "negative_prompt": NEGATIVE}))
    return prompts, config


def generate_args(prompts: Path, out: Path, model: Path, *extra: str) -> list[str]:
    """``generate`` arguments for a small run on the CPU: 3 prompts x 2 methods x 2 seeds, 4 images a call."""
    config = prompts.parent / "methods.json"
    seeds = ",".join(map(str, SEEDS))
    return ["generate", str(prompts), "--out", str(out), "--model", str(model), "--config", str(config),
            "--seeds", seeds, "--steps", str(STEPS), "--batch-size", "4", "--device", "cpu", *extra]  # fmt: skip


def run_generate(*args: str) -> int:
    """The command line in this process."""
    return main(list(args))


def subprocess_command(*args: str) -> list[str]:
    """``python -m negguide ...`` for `subprocess`."""
    return [sys.executable, "-m", "negguide", *args]


def subprocess_env() -> dict[str, str]:
    """The environment of command-line subprocesses: one thread, as in this process (see conftest)."""
    return {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def image_files(out: Path) -> list[str]:
    return sorted(path.name for path in (out / "images").glob("*.png"))


def temporaries(out: Path) -> list[Path]:
    return sorted(out.rglob(f"{TEMP_PREFIX}*"))


def pixels(path: Path) -> np.ndarray:
    with PIL.Image.open(path) as image:
        return np.asarray(image.convert("RGB"))


def manifest(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]


def assert_same_images(out: Path, reference: Path) -> None:
    """``out/images`` holds exactly the images of ``reference/images``, pixel for pixel."""
    assert image_files(out) == image_files(reference)
    for name in image_files(reference):
        assert np.array_equal(pixels(out / "images" / name), pixels(reference / "images" / name)), name
