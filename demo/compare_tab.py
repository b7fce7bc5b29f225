"""The "Compare" tab: the form, the labelled gallery of results and the examples, wired to `compare`."""

from __future__ import annotations

import inspect
import logging
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gradio as gr

from negguide.demo.changes import changed_settings, changes_markdown
from negguide.demo.comparison import (
    MODULES,
    REFERENCE,
    Column,
    Comparison,
    compare,
    method_choices,
    takes_reference,
    title,
)
from negguide.demo.examples import example_note, examples
from negguide.demo.form import NEGATIVE_COLUMNS, form_defaults, read_form, read_image
from negguide.demo.model import DemoModel
from negguide.demo.settings import SettingField, module_fields
from negguide.demo.widgets import parameter_name, setting_control

logger = logging.getLogger(__name__)

Component = gr.components.Component
GENERATE = "generate"
"""The API name of the generate event, and the concurrency group of every event that generates."""
MAX_GALLERY_COLUMNS = 5
FIRST_ROWS = ("prompt", "negatives", "methods")
"""The controls shown above the Generate button; the others follow it."""


def compare_tab(models: Mapping[str, DemoModel]) -> None:
    """Build the tab in the current Blocks context and wire its events; ``models`` by name, the first one chosen
    at first (a choice is shown when there are several)."""
    fields = [field for name in MODULES for field in module_fields(name)]
    first = next(iter(models.values()))
    defaults = {"model": first.info.name, **form_defaults(first.info, fields)}
    with gr.Row():
        with gr.Column(scale=2):
            controls, buttons = _form(defaults, fields, models)
        with gr.Column(scale=3):
            gallery = gr.Gallery(
                label="Same seed, side by side",
                columns=MAX_GALLERY_COLUMNS,
                object_fit="contain",
                height="auto",
                buttons=["download", "fullscreen"],
                elem_id="gallery",
                elem_classes=["negguide-gallery"],
            )
            info = gr.Markdown(elem_id="info")
            changes = gr.Markdown(elem_id="changes")
            reference = gr.Image(
                label="Reference image used",
                interactive=False,
                visible=False,
                height=192,
                elem_id="reference-used",
                elem_classes=["negguide-image"],
            )
    shown = examples()
    keys = [key for key in controls if key != "model"]
    example_set = gr.Examples(
        examples=[[{**defaults, **example.values}[key] for key in keys] for example in shown],
        inputs=[controls[key] for key in keys],
        example_labels=[example.title for example in shown],
        label="Examples: one click sets the form and generates; what each one set shows beside its results",
        examples_per_page=len(shown),
    )
    outputs = Outputs(gallery, info, controls["seed"], changes, reference)
    names = {parameter_name(key): key for key in controls}
    run = {
        "fn": generate_handler(models, names, fields, outputs, defaults),
        "inputs_kwargs": {name: controls[key] for name, key in names.items()},
        "outputs": outputs.components(),
        "concurrency_id": GENERATE,
    }
    events = [
        buttons["run"].click(api_name=GENERATE, **run),
        controls["prompt"].submit(api_visibility="private", **run),
        example_set.load_input_event.then(api_visibility="private", **run),
    ]
    buttons["cancel"].click(fn=None, cancels=events)
    if len(models) > 1:
        controls["model"].change(
            model_switch(models),
            inputs=controls["model"],
            outputs=[controls["guidance_scale"], controls["true_cfg_scale"]],
            api_visibility="private",
        )


def _form(
    defaults: Mapping[str, Any], fields: Sequence[SettingField], models: Mapping[str, DemoModel]
) -> tuple[dict[str, Component], dict[str, gr.Button]]:
    """The form's controls by name (the `FORM_DEFAULTS` keys, ``"model"`` and each setting's `SettingField.key`),
    and the Generate and Cancel buttons as ``"run"`` and ``"cancel"``. Numbers are number boxes, checked by
    `Comparison`: a value out of range is an error naming the field, never moved into range."""
    controls: dict[str, Component] = {}
    buttons: dict[str, gr.Button] = {}
    first = next(iter(models.values()))
    controls["model"] = gr.Dropdown(
        choices=list(models),
        value=defaults["model"],
        label="Model",
        info="shapes-world-distilled: one network evaluation per step; its negatives need true CFG, or NAG",
        visible=len(models) > 1,
        elem_id="model",
    )
    controls["prompt"] = gr.Textbox(label="Prompt", value=defaults["prompt"], max_lines=2, elem_id="prompt")
    controls["negatives"] = gr.Dataframe(
        value=defaults["negatives"],
        headers=list(NEGATIVE_COLUMNS),
        datatype=["str", "number", "number", "number"],
        column_count=len(NEGATIVE_COLUMNS),
        type="array",
        interactive=True,
        elem_id="negatives",
        label="Negatives: text, weight, and the part of the run (0 = first step, 1 = end) in which each acts",
    )
    controls["methods"] = gr.CheckboxGroup(
        choices=[(title(method), method) for method in method_choices()],
        value=defaults["methods"],
        label="Methods, each a row after the plain prompt and the standard negative",
        elem_id="methods",
    )
    with gr.Row():
        buttons["run"] = gr.Button("Generate", variant="primary", elem_id="generate")
        buttons["cancel"] = gr.Button("Cancel", variant="stop", elem_id="cancel")
    with gr.Row():
        controls["seed"] = gr.Number(label="Seed", value=defaults["seed"], elem_id="seed")
        controls["random_seed"] = gr.Checkbox(label="random", value=defaults["random_seed"], elem_id="random-seed")
        controls["images"] = gr.Number(label="Images per method", value=defaults["images"], elem_id="images")
    with gr.Row():
        controls["steps"] = gr.Number(label="Steps", value=defaults["steps"], elem_id="steps")
        controls["guidance_scale"] = gr.Number(
            label="Guidance scale", value=defaults["guidance_scale"], elem_id="guidance-scale"
        )
        controls["true_cfg_scale"] = gr.Number(
            label="True CFG scale",
            value=defaults["true_cfg_scale"],
            info="distilled model: the negative's own scale (a second evaluation per step)",
            visible=first.distilled,
            elem_id="true-cfg-scale",
        )
    with gr.Row():
        for side in ("width", "height"):
            controls[side] = gr.Number(label=side.capitalize(), value=defaults[side], elem_id=side)
    for name in MODULES:
        with gr.Accordion(f"{title(name)} settings", open=False, elem_id=f"{name}-settings"):
            if takes_reference(name) and "reference" not in controls:
                controls.update(_reference_controls())
            for field in (field for field in fields if field.module == name):
                controls[field.key] = setting_control(field)
            mode = controls.get(f"{name}.mode")
            if "reference" in controls and isinstance(mode, gr.Dropdown):
                controls["reference"].upload(lambda: REFERENCE, outputs=mode, api_visibility="private")
    return controls, buttons


def model_switch(models: Mapping[str, DemoModel]) -> Callable[[str], tuple[Any, Any]]:
    """The model choice's event: the chosen model's guidance scale, and the true CFG scale shown for a distilled
    model only."""

    def switch(name: str) -> tuple[Any, Any]:
        model = models[name]
        return gr.Number(value=model.info.guidance_scale), gr.Number(visible=model.distilled)

    return switch


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
    """What a generation updates: the gallery, the summary, the seed (the one used, when random), what the request
    set in the closed settings panels, and the reference image it used."""

    gallery: gr.Gallery
    info: gr.Markdown
    seed: gr.Number
    changes: gr.Markdown
    reference: gr.Image

    def components(self) -> set[Component]:
        return {self.gallery, self.info, self.seed, self.changes, self.reference}

    def show(
        self,
        comparison: Comparison,
        columns: Sequence[Column],
        seconds: float,
        notes: Sequence[str],
        changes: str,
    ) -> dict[Component, Any]:
        """The updates for the rows made so far (none yet: an empty gallery): one row per method, one column per
        seed when there are several, else the methods side by side; the notes on truncated texts, what the
        request set in the settings panels (after the note of the example whose case it is) and the reference
        image it used."""
        items = [
            (str(path), column.title if comparison.images == 1 else f"{column.title}, seed {seed}")
            for column in columns
            for path, seed in zip(column.files, column.seeds)
        ]
        if comparison.images == 1:
            layout = f"{len(columns)} methods side by side, each image captioned with its method"
        else:
            layout = (
                f"{len(columns)} rows, one per method ({', '.join(column.title for column in columns)}), "
                f"{comparison.images} columns, one per seed"
            )
        summary = (
            f"{_shortened(comparison.prompt)!r}: seed {comparison.seed}, {comparison.steps} steps, guidance scale "
            f"{comparison.guidance_scale:g}, "
            f"{comparison.width}x{comparison.height}: {layout}, in {seconds:.1f} s. Each download is a PNG with "
            "its generation parameters; `negguide generate --from-image FILE --out DIR` makes it again."
        )
        return {
            self.gallery: gr.Gallery(value=items, columns=_width(comparison, len(items))),
            self.info: " ".join([*notes, summary if columns else "Generating..."]),
            self.seed: comparison.seed,
            self.changes: changes,
            self.reference: gr.Image(value=comparison.reference, visible=comparison.reference is not None),
        }


def _shortened(text: str, length: int = 60) -> str:
    return text if len(text) <= length else text[: length - 3] + "..."


def _width(comparison: Comparison, count: int) -> int:
    """The gallery's columns: one per seed with several images per method, else the methods side by side."""
    if comparison.images > 1:
        return comparison.images
    return max(1, min(count or 2 + len(comparison.methods), MAX_GALLERY_COLUMNS))


def truncation_notes(model: DemoModel, comparison: Comparison) -> list[str]:
    """A sentence for each text (the prompt, each negative) longer than the model reads."""
    texts = [("Prompt", comparison.prompt)]
    texts += [
        (f"Negatives, row {row}", n.text) for row, n in enumerate(comparison.negatives, 1) if isinstance(n.text, str)
    ]
    notes = []
    for label, text in texts:
        count = model.tokens(text)
        if count.truncated:
            notes.append(
                f"`{label}` is {count.total:,} tokens long; the model reads the first {count.kept} only: "
                f"'{count.kept_text}'."
            )
    return notes


def generate_handler(
    models: Mapping[str, DemoModel],
    names: Mapping[str, str],
    fields: Sequence[SettingField],
    outputs: Outputs,
    defaults: Mapping[str, Any],
) -> Callable[..., Iterator[dict[Component, Any]]]:
    """The generate event's function: its keyword arguments (``names`` maps them to form keys) read into a
    `Comparison` on the chosen model, whose rows are shown as they are made. Bad input and failures become
    `gr.Error` messages; a text longer than the model reads is said in the summary and as a warning."""

    def generate(
        progress: gr.Progress = gr.Progress(track_tqdm=True),  # noqa: B008 - Gradio reads it from the signature
        **arguments: Any,
    ) -> Iterator[dict[Component, Any]]:
        start = time.perf_counter()
        with failure():
            values = {names[name]: value for name, value in arguments.items()}
            chosen = values.pop("model", None) or next(iter(models))
            if chosen not in models:
                raise ValueError(f"`Model` must be one of {', '.join(models)}, got {chosen!r}.")
            model = models[chosen]
            comparison = read_form(values, fields)
            notes = truncation_notes(model, comparison)
            for note in notes:
                gr.Warning(note.replace("`", ""))
            note = example_note(values)
            changes = "\n\n".join(filter(None, [note, changes_markdown(changed_settings(values, defaults, fields))]))
            yield outputs.show(comparison, [], 0.0, notes, changes)
            with tempfile.TemporaryDirectory(prefix="negguide-demo-") as folder:
                done: list[Column] = []
                for column in compare(model, comparison, Path(folder), lambda i, n, name: progress((i, n), desc=name)):
                    done.append(column)
                    yield outputs.show(comparison, done, time.perf_counter() - start, notes, changes)

    return with_keywords(generate, {name: defaults.get(key) for name, key in names.items()})


def with_keywords(function: Callable[..., Any], defaults: Mapping[str, Any]) -> Callable[..., Any]:
    """``function`` (``(progress, **values)``) signed with a keyword parameter per name in ``defaults``, with its
    default, so that the API lists every input by name and none is required."""
    parameters = list(inspect.signature(function).parameters.values())[:1]
    parameters += [
        inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=value) for name, value in defaults.items()
    ]
    function.__signature__ = inspect.Signature(parameters)
    return function


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
