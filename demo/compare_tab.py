"""The "Compare" tab: the form, the labelled gallery of results and the examples, wired to `compare`."""

from __future__ import annotations

import logging
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gradio as gr

from negguide.demo.comparison import (
    MAX_IMAGES,
    MAX_SCALE,
    MAX_SEED,
    MAX_SIDE,
    MAX_STEPS,
    MIN_SIDE,
    MODULES,
    REFERENCE,
    SIDE_STEP,
    Column,
    Comparison,
    compare,
    method_choices,
    takes_reference,
    title,
)
from negguide.demo.examples import examples
from negguide.demo.form import NEGATIVE_COLUMNS, form_defaults, read_form, read_image
from negguide.demo.model import DemoModel
from negguide.demo.settings import SettingField, module_fields
from negguide.demo.widgets import setting_control

logger = logging.getLogger(__name__)

Component = gr.components.Component
GENERATE = "generate"
"""The API name of the generate event, and the concurrency group of every event that generates."""
MAX_GALLERY_COLUMNS = 5


def compare_tab(model: DemoModel) -> None:
    """Build the tab in the current Blocks context and wire its events."""
    fields = [field for name in MODULES for field in module_fields(name)]
    defaults = form_defaults(model.info, fields)
    with gr.Row():
        with gr.Column(scale=2):
            controls = _form(defaults, fields)
            with gr.Row():
                run_button = gr.Button("Generate", variant="primary", elem_id="generate")
                cancel_button = gr.Button("Cancel", variant="stop", elem_id="cancel")
        with gr.Column(scale=3):
            gallery = gr.Gallery(
                label="Same seed, side by side",
                columns=3,
                object_fit="contain",
                height="auto",
                buttons=["download", "fullscreen"],
                elem_id="gallery",
                elem_classes=["negguide-gallery"],
            )
            info = gr.Markdown(elem_id="info")
    shown = examples()
    keys = list(controls)
    example_set = gr.Examples(
        examples=[[{**defaults, **example.values}[key] for key in keys] for example in shown],
        inputs=[controls[key] for key in keys],
        example_labels=[example.title for example in shown],
        label="Examples: one click shows a method's effect",
        examples_per_page=len(shown),
    )
    outputs = Outputs(gallery, info, controls["seed"])
    run = {
        "fn": generate_handler(model, {component: key for key, component in controls.items()}, fields, outputs),
        "inputs": set(controls.values()),
        "outputs": {outputs.gallery, outputs.info, outputs.seed},
        "concurrency_id": GENERATE,
    }
    events = [
        run_button.click(api_name=GENERATE, **run),
        controls["prompt"].submit(api_visibility="private", **run),
        example_set.load_input_event.then(api_visibility="private", **run),
    ]
    cancel_button.click(fn=None, cancels=events)


def _form(defaults: Mapping[str, Any], fields: Sequence[SettingField]) -> dict[str, Component]:
    """The form's controls by name: the `FORM_DEFAULTS` keys and each setting's `SettingField.key`."""
    controls: dict[str, Component] = {}
    controls["prompt"] = gr.Textbox(label="Prompt", value=defaults["prompt"], max_lines=2, elem_id="prompt")
    controls["negatives"] = gr.Dataframe(
        value=defaults["negatives"],
        headers=list(NEGATIVE_COLUMNS),
        datatype=["str", "number", "number", "number"],
        column_count=len(NEGATIVE_COLUMNS),
        type="array",
        interactive=True,
        elem_id="negatives",
        label="Negatives: text, weight, and the part of the run [start, stop) in which each acts",
    )
    controls["methods"] = gr.CheckboxGroup(
        choices=[(title(method), method) for method in method_choices()],
        value=defaults["methods"],
        label="Methods, shown after the plain prompt and the standard negative",
        elem_id="methods",
    )
    with gr.Row():
        controls["seed"] = gr.Number(label="Seed", value=defaults["seed"], minimum=0, maximum=MAX_SEED, elem_id="seed")
        controls["random_seed"] = gr.Checkbox(label="random", value=defaults["random_seed"], elem_id="random-seed")
        controls["images"] = gr.Slider(
            1, MAX_IMAGES, value=defaults["images"], step=1, label="Images per method", elem_id="images"
        )
    with gr.Row():
        controls["steps"] = gr.Slider(1, MAX_STEPS, value=defaults["steps"], step=1, label="Steps", elem_id="steps")
        controls["guidance_scale"] = gr.Slider(
            0, MAX_SCALE, value=defaults["guidance_scale"], step=0.5, label="Guidance scale", elem_id="guidance-scale"
        )
    with gr.Row():
        for side in ("width", "height"):
            controls[side] = gr.Slider(
                MIN_SIDE, MAX_SIDE, value=defaults[side], step=SIDE_STEP, label=side.capitalize(), elem_id=side
            )
    for name in MODULES:
        with gr.Accordion(f"{title(name)} settings", open=False, elem_id=f"{name}-settings"):
            if takes_reference(name) and "reference" not in controls:
                controls.update(_reference_controls())
            for field in (field for field in fields if field.module == name):
                controls[field.key] = setting_control(field)
            mode = controls.get(f"{name}.mode")
            if "reference" in controls and isinstance(mode, gr.Dropdown):
                controls["reference"].upload(lambda: REFERENCE, outputs=mode, api_visibility="private")
    return controls


def _reference_controls() -> dict[str, Component]:
    """The reference image and its mask (uploads checked by the form, not by the browser), with a preview."""
    with gr.Row():
        reference = gr.File(label="Reference image", file_types=["image"], type="filepath", elem_id="reference")
        mask = gr.File(label="Mask (white: may be matched)", file_types=["image"], type="filepath", elem_id="mask")
        preview = gr.Image(label="Reference", interactive=False, height=160, elem_id="reference-preview")
    reference.change(_preview, inputs=reference, outputs=preview, api_visibility="private")
    return {"reference": reference, "mask": mask}


def _preview(path: str | None) -> Any:
    try:
        return read_image(path, "Reference image")
    except ValueError as error:
        raise page_error(str(error)) from None


@dataclass(frozen=True)
class Outputs:
    """What a generation updates: the gallery, the summary line and the seed (the one used, when random)."""

    gallery: gr.Gallery
    info: gr.Markdown
    seed: gr.Number

    def show(self, comparison: Comparison, columns: Sequence[Column], seconds: float) -> dict[Component, Any]:
        """The updates for the columns made so far: a row per method when it has several images."""
        items = [
            (str(path), column.title if comparison.images == 1 else f"{column.title}, seed {seed}")
            for column in columns
            for path, seed in zip(column.files, column.seeds)
        ]
        wide = comparison.images if comparison.images > 1 else min(len(items), MAX_GALLERY_COLUMNS)
        summary = (
            f"Seed {comparison.seed}, {comparison.steps} steps, guidance scale {comparison.guidance_scale}, "
            f"{comparison.width}x{comparison.height}: {len(columns)} columns in {seconds:.1f} s. Each download is a "
            "PNG with its generation parameters; `negguide generate --from-image FILE --out DIR` makes it again."
        )
        return {self.gallery: gr.Gallery(value=items, columns=wide), self.info: summary, self.seed: comparison.seed}


def generate_handler(
    model: DemoModel, keys: Mapping[Component, str], fields: Sequence[SettingField], outputs: Outputs
) -> Callable[..., Iterator[dict[Component, Any]]]:
    """The generate event's function: the page's values (component -> value) read into a `Comparison`, whose
    columns are shown as they are made. Bad input and failures become `gr.Error` messages."""

    def generate(
        values: Mapping[Component, Any],
        progress: gr.Progress = gr.Progress(track_tqdm=True),  # noqa: B008 - Gradio reads it from the signature
    ) -> Iterator[dict[Component, Any]]:
        start = time.perf_counter()
        with failure():
            comparison = read_form({keys[component]: value for component, value in values.items()}, fields)
            with tempfile.TemporaryDirectory(prefix="negguide-demo-") as folder:
                done: list[Column] = []
                for column in compare(model, comparison, Path(folder), lambda i, n, name: progress((i, n), desc=name)):
                    done.append(column)
                    yield outputs.show(comparison, done, time.perf_counter() - start)

    return generate


@contextmanager
def failure() -> Iterator[None]:
    """Turn what an event raises into a `gr.Error` for the page: bad input as its message, any other failure as
    "Generation failed" with its type (and logged with its trace)."""
    try:
        yield
    except (TypeError, ValueError) as error:
        raise page_error(str(error)) from None
    except gr.Error:
        raise
    except Exception as error:
        logger.exception("generation failed")
        raise page_error(f"Generation failed: {type(error).__name__}: {error}") from None


def page_error(message: str) -> gr.Error:
    """An error shown in the page as text (Gradio renders messages as HTML: ``&`` and ``<`` are escaped), without
    a server-side trace."""
    return gr.Error(message.replace("&", "&amp;").replace("<", "&lt;"), print_exception=False)
