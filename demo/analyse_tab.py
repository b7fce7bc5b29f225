"""The "Analyse" tab: when the negative takes effect, step by step, and the adaptive removal of its object
(`demo.negative_analysis`), in the queue the "Compare" tab uses."""

from __future__ import annotations

import dataclasses
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import gradio as gr

from negguide.demo.compare_tab import GENERATE, failure
from negguide.demo.comparison import MAX_SCALE, MAX_SEED, MAX_STEPS
from negguide.demo.model import DemoModel
from negguide.demo.negative_analysis import NegativeRun, analyse, removal_gallery, remove
from negguide.removal import SEARCHES

ANALYSE, REMOVE = "analyse", "remove"
"""The API names of the tab's two events."""


def analyse_tab(model: DemoModel) -> None:
    """Build the tab in the current Blocks context and wire its events."""
    defaults = dataclasses.asdict(NegativeRun(guidance_scale=model.info.guidance_scale))
    with gr.Row():
        with gr.Column(scale=2):
            controls = {
                "prompt": gr.Textbox(label="Prompt", value=defaults["prompt"], max_lines=2, elem_id="analyse-prompt"),
                "negative": gr.Textbox(
                    label="Negative", value=defaults["negative"], max_lines=1, elem_id="analyse-negative"
                ),
            }
            with gr.Row():
                controls["seed"] = gr.Number(
                    label="Seed", value=defaults["seed"], minimum=0, maximum=MAX_SEED, elem_id="analyse-seed"
                )
                controls["steps"] = gr.Slider(
                    1, MAX_STEPS, value=defaults["steps"], step=1, label="Steps", elem_id="analyse-steps"
                )
                controls["guidance_scale"] = gr.Slider(
                    1.5,
                    MAX_SCALE,
                    value=defaults["guidance_scale"],
                    step=0.5,
                    label="Guidance scale",
                    elem_id="analyse-guidance-scale",
                )
            with gr.Row():
                controls["start"] = gr.Slider(
                    0,
                    1,
                    value=defaults["start"],
                    step=0.05,
                    label="Negative from",
                    elem_id="analyse-start",
                    info="part of the run before the negative acts",
                )
                controls["stop"] = gr.Slider(
                    0, 1, value=defaults["stop"], step=0.05, label="Negative until", elem_id="analyse-stop"
                )
            analyse_button = gr.Button("Analyse", variant="primary", elem_id="analyse")
            with gr.Row():
                controls["removal_start"] = gr.Slider(
                    0,
                    0.95,
                    value=defaults["removal_start"],
                    step=0.05,
                    label="Removal starts at",
                    elem_id="analyse-removal-start",
                    info="the adaptive negative acts from here on, as briefly as it can",
                )
                controls["search"] = gr.Dropdown(
                    choices=list(SEARCHES), value=defaults["search"], label="Search", elem_id="analyse-search"
                )
            remove_button = gr.Button("Remove the negative's object adaptively", elem_id="remove")
        with gr.Column(scale=3):
            plot = gr.Image(label="The negative, step by step", interactive=False, elem_id="analyse-plot")
            with gr.Row():
                image = gr.Image(label="Image", interactive=False, height=160, elem_id="analyse-image")
                table = gr.File(label="Per-step CSV", interactive=False, elem_id="analyse-csv")
            summary = gr.Markdown(elem_id="analyse-summary")
            trials = gr.Gallery(
                label="Adaptive removal: the plain image, then each window tried",
                columns=5,
                object_fit="contain",
                height="auto",
                elem_id="removal-gallery",
                elem_classes=["negguide-gallery"],
            )
            removal_summary = gr.Markdown(elem_id="removal-summary")
    inputs = list(controls.values())
    analyse_button.click(
        analyse_handler(model, list(controls)),
        inputs=inputs,
        outputs=[plot, image, table, summary],
        api_name=ANALYSE,
        concurrency_id=GENERATE,
    )
    remove_button.click(
        remove_handler(model, list(controls)),
        inputs=inputs,
        outputs=[trials, removal_summary],
        api_name=REMOVE,
        concurrency_id=GENERATE,
    )


def analyse_handler(model: DemoModel, keys: list[str]) -> Callable[..., Iterator[tuple[Any, ...]]]:
    """The analyse event's function: the controls' values in ``keys`` order -> plot, image, CSV, summary (yielded
    while the CSV's temporary folder exists: Gradio copies it then)."""

    def run_analysis(*values: Any) -> Iterator[tuple[Any, ...]]:
        with failure():
            run = NegativeRun(**dict(zip(keys, values)))
            with tempfile.TemporaryDirectory(prefix="negguide-analysis-") as folder:
                view = analyse(model, run, Path(folder))
                yield view.plot, view.image, str(view.csv), view.summary

    return run_analysis


def remove_handler(model: DemoModel, keys: list[str]) -> Callable[..., tuple[Any, ...]]:
    """The remove event's function: the controls' values in ``keys`` order -> the trials and a summary."""

    def run_removal(*values: Any) -> tuple[Any, ...]:
        with failure():
            result = remove(model, NegativeRun(**dict(zip(keys, values))))
            return removal_gallery(result), result.summary()

    return run_removal
