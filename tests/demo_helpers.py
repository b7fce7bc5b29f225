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
from conftest import tiny_components
from gradio_client import handle_file

from negguide.demo.app import launch_demo
from negguide.demo.compare_tab import GENERATE
from negguide.demo.widgets import element_id
from negguide.pipelines import StableDiffusionNegGuidePipeline

STEPS = 2
FAST = {"steps": STEPS}
"""Form values that keep a generation short on tiny components."""
FILES = ("reference", "mask")


def tiny_pipeline(cls: type[StableDiffusionNegGuidePipeline] = StableDiffusionNegGuidePipeline):
    """The tiny test components as a negguide pipeline (64x64 images), progress bars off."""
    pipe = cls(**tiny_components())
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


def generate_arguments(demo: gr.Blocks, values: Mapping[str, Any]) -> list[Any]:
    """The generate endpoint's arguments, in its order: ``values`` by form key (``"prompt"``,
    ``"perpneg.negative_scale"``), every other input at its initial value; image files as uploads."""
    [function] = [fn for fn in demo.fns.values() if fn.api_name == GENERATE]
    by_id = {element_id(key): (key, value) for key, value in values.items()}
    arguments = []
    for component in function.inputs:
        if component.elem_id in by_id:
            key, value = by_id[component.elem_id]
            arguments.append(handle_file(str(value)) if key in FILES and value else value)
        else:
            arguments.append(component.value)
    unused = set(by_id) - {component.elem_id for component in function.inputs}
    assert not unused, f"no such inputs: {unused}"
    return arguments


def solid_png(path: Path, size: tuple[int, int], colour: tuple[int, int, int] = (30, 60, 220)) -> Path:
    PIL.Image.new("RGB", size, colour).save(path)
    return path
