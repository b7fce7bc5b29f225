"""The "Analyse" tab: when the negative takes effect, step by step, and the adaptive removal of its object
(`demo.negative_analysis`), in the queue the "Compare" tab uses."""

from __future__ import annotations

import dataclasses
import tempfile
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import gradio as gr

from negguide.demo.compare_tab import GENERATE, failure
from negguide.demo.model import DemoModel
from negguide.demo.negative_analysis import NegativeRun, analyse, removal_gallery, removal_table, remove
from negguide.removal import SEARCHES

ANALYSE, REMOVE = "analyse", "remove"
"""The API names of the tab's two events."""


def analyse_tab(models: Mapping[str, DemoModel]) -> None:
    """Build the tab in the current Blocks context and wire its events; it works on the first of ``models``.
    Numbers are number boxes, checked by `NegativeRun`: a value out of range is an error naming the field."""
    model = next(iter(models.values()))
    defaults = dataclasses.asdict(NegativeRun(guidance_scale=model.info.guidance_scale))
    with gr.Row():
        with gr.Column(scale=2):
            gr.Markdown(f"Model: {model.info.name}.")
            controls = {
                "prompt": gr.Textbox(label="Prompt", value=defaults["prompt"], max_lines=2, elem_id="analyse-prompt"),
                "negative": gr.Textbox(
                    label="Negative", value=defaults["negative"], max_lines=1, elem_id="analyse-negative"
                ),
            }
            with gr.Row():
                controls["seed"] = gr.Number(label="Seed", value=defaults["seed"], elem_id="analyse-seed")
                controls["steps"] = gr.Number(label="Steps", value=defaults["steps"], elem_id="analyse-steps")
                controls["guidance_scale"] = gr.Number(
                    label="Guidance scale", value=defaults["guidance_scale"], elem_id="analyse-guidance-scale"
                )
            with gr.Row():
                controls["start"] = gr.Number(
                    label="Negative from",
                    value=defaults["start"],
                    elem_id="analyse-start",
                    info="0 to 1: the part of the run before the negative acts",
                )
                controls["stop"] = gr.Number(
                    label="Negative until",
                    value=defaults["stop"],
                    elem_id="analyse-stop",
                    info="0 to 1: where it stops acting (1: the end)",
                )
            analyse_button = gr.Button("Analyse", variant="primary", elem_id="analyse")
            with gr.Row():
                controls["removal_start"] = gr.Number(
                    label="Removal starts at",
                    value=defaults["removal_start"],
                    elem_id="analyse-removal-start",
                    info="0 to 1: the adaptive negative acts from here on, as briefly as it can",
                )
                controls["search"] = gr.Dropdown(
                    choices=list(SEARCHES), value=defaults["search"], label="Search", elem_id="analyse-search"
                )
            remove_button = gr.Button("Remove the negative's object adaptively", elem_id="remove")
        with gr.Column(scale=3):
            plot = gr.Image(label="The negative, step by step", interactive=False, elem_id="analyse-plot")
            with gr.Row():
                image = gr.Image(
                    label="The run's image",
                    interactive=False,
                    height=288,
                    elem_id="analyse-image",
                    elem_classes=["negguide-image"],
                )
                table = gr.File(label="Per-step CSV", interactive=False, elem_id="analyse-csv")
            summary = gr.Markdown(elem_id="analyse-summary")
            trials = gr.Gallery(
                label="Adaptive removal: the plain image, then each trial (numbered as in the table)",
                columns=4,
                object_fit="contain",
                height="auto",
                elem_id="removal-gallery",
                elem_classes=["negguide-gallery"],
            )
            removal_summary = gr.Markdown(elem_id="removal-summary")
            removal_trials = gr.Markdown(elem_id="removal-trials")
    analyse_button.click(
        analyse_handler(model),
        inputs_kwargs=controls,
        outputs=[plot, image, table, summary],
        api_name=ANALYSE,
        concurrency_id=GENERATE,
    )
    remove_button.click(
        remove_handler(model),
        inputs_kwargs=controls,
        outputs=[trials, removal_summary, removal_trials],
        api_name=REMOVE,
        concurrency_id=GENERATE,
    )


def analyse_handler(model: DemoModel) -> Callable[..., Iterator[tuple[Any, ...]]]:
    """The analyse event's function: the controls' values by `NegativeRun` field -> plot, image, CSV, summary
    (yielded while the CSV's temporary folder exists: Gradio copies it then)."""

    def run_analysis(**values: Any) -> Iterator[tuple[Any, ...]]:
        with failure():
            run = NegativeRun(**values)
            with tempfile.TemporaryDirectory(prefix="negguide-analysis-") as folder:
                view = analyse(model, run, Path(folder))
                yield view.plot, view.image, str(view.csv), view.summary

    return run_analysis


def remove_handler(model: DemoModel) -> Callable[..., tuple[Any, ...]]:
    """The remove event's function: the controls' values by `NegativeRun` field -> the trials, a summary and the
    table of trials."""

    def run_removal(**values: Any) -> tuple[Any, ...]:
        with failure():
            result = remove(model, NegativeRun(**values))
            return removal_gallery(result), result.summary(), removal_table(result)

    return run_removal
