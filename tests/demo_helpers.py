"""Shared pieces of the web demo tests: a tiny pipeline, the demo served on 127.0.0.1, and the generate
endpoint's arguments for `gradio_client`."""

from __future__ import annotations

import socket
from collections.abc import Iterator, Mapping
from contextlib import closing, contextmanager
from pathlib import Path
from typing import Any

import gradio as gr
import PIL.Image
import torch
from conftest import tiny_components
from diffusers import UNet2DConditionModel
from gradio_client import handle_file

from negguide.demo.app import launch_demo
from negguide.demo.widgets import parameter_name
from negguide.pipelines import StableDiffusionNegGuidePipeline

STEPS = 2
FAST = {"steps": STEPS}
"""Form values that keep a generation short on tiny components."""
FILES = ("reference", "mask")


def tiny_pipeline(
    cls: type[StableDiffusionNegGuidePipeline] = StableDiffusionNegGuidePipeline, distilled: bool = False
):
    """The tiny test components as a negguide pipeline (64x64 images), progress bars off; ``distilled``: with a
    guidance-distilled UNet (it takes the guidance scale as an embedding)."""
    components = tiny_components()
    if distilled:
        torch.manual_seed(0)
        components["unet"] = UNet2DConditionModel.from_config(components["unet"].config, time_cond_proj_dim=8)
    pipe = cls(**components)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def free_port() -> int:
    with closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextmanager
def served(demo: gr.Blocks) -> Iterator[str]:
    """``demo`` served on 127.0.0.1 at a free port while the context lasts; yields its address."""
    url = launch_demo(demo, port=free_port(), block=False)
    try:
        yield url
    finally:
        demo.close()


def generate_arguments(values: Mapping[str, Any]) -> dict[str, Any]:
    """The generate endpoint's keyword arguments for ``values`` by form key (``"prompt"``,
    ``"perpneg.negative_scale"``); image files as uploads. Every other input takes its default."""
    return {
        parameter_name(key): handle_file(str(value)) if key in FILES and value else value
        for key, value in values.items()
    }


def solid_png(path: Path, size: tuple[int, int], colour: tuple[int, int, int] = (30, 60, 220)) -> Path:
    PIL.Image.new("RGB", size, colour).save(path)
    return path
