"""The demo's "Analyse" tab: the per-step analysis of a negative and the adaptive removal, called directly and
through the served app."""

from __future__ import annotations

import csv
import dataclasses
import math
from pathlib import Path

import PIL.Image
import pytest
from demo_helpers import served, tiny_pipeline
from gradio_client import Client
from gradio_client.exceptions import AppError

from negguide.demo.analyse_tab import ANALYSE, REMOVE
from negguide.demo.app import build_demo
from negguide.demo.model import DemoModel
from negguide.demo.negative_analysis import NegativeRun, analyse, removal_gallery, remove
from negguide.loading import EMBEDDED_MODEL_NAME

STEPS = 3


@pytest.fixture(scope="module")
def pipe():
    return tiny_pipeline()


def run(**changes) -> NegativeRun:
    return NegativeRun(**{"steps": STEPS, **changes})


def test_analysis_gives_a_plot_an_image_and_a_csv_row_per_step(pipe, tmp_path: Path) -> None:
    view = analyse(DemoModel.from_pipeline(pipe), run(start=0.3), tmp_path)
    with view.csv.open() as file:
        rows = list(csv.DictReader(file))
    assert [int(row["step"]) for row in rows] == list(range(STEPS))
    assert [row["active"] for row in rows] == ["0", "1", "1"]
    assert all(math.isfinite(float(row[key])) for row in rows for key in ("norm", "cosine", "attention_mass"))
    assert view.image.size == (64, 64)
    assert view.plot.width > 200 and view.plot.height > 200
    assert view.summary.startswith(f"Onset (first step halfway up each curve) of {STEPS}: norm: ")


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"negative": "  "}, "`Negative` is empty"),
        ({"prompt": ""}, "`Prompt` is empty"),
        ({"guidance_scale": 1.0}, "`Guidance scale` must be above 1"),
        ({"start": 0.6, "stop": 0.4}, "`Negative from` (0.6) must be before `Negative until` (0.4)"),
        ({"removal_start": 1.0}, "`Removal starts at` must be below 1"),
        ({"search": "random"}, "`Search` must be one of linear, bisect"),
        ({"seed": 1.5}, "`Seed` must be a whole number"),
        ({"steps": 0}, "`Steps`"),
    ],
)
def test_bad_input_names_the_control(changes, message) -> None:
    with pytest.raises(ValueError, match="^" + message.replace("(", r"\(").replace(")", r"\)")):
        run(**changes)


def test_removal_needs_the_shapes_world_detector(pipe) -> None:
    other = DemoModel.from_pipeline(pipe, name="org/another-model")
    with pytest.raises(ValueError, match="only knows the embedded model's world, not 'org/another-model'"):
        remove(other, run())


def test_removal_shows_the_plain_image_then_each_trial(pipe) -> None:
    result = remove(DemoModel.from_pipeline(pipe, name=EMBEDDED_MODEL_NAME), run(steps=4, removal_start=0.5))
    items = removal_gallery(result)
    assert items[0] == (result.plain_image, "plain prompt")
    assert len(items) == 1 + len(result.trials)
    for (image, label), trial in zip(items[1:], result.trials):
        assert image is trial.image
        assert label.startswith(f"negative {trial.fractions[0]:.2f}-{trial.fractions[1]:.2f}: ")
    assert result.summary().startswith(("'red square'", "Removed", "No window"))


def test_the_served_tab_analyses_and_reports_bad_input(pipe, tmp_path: Path) -> None:
    demo = build_demo(pipeline=pipe)
    defaults = dataclasses.asdict(NegativeRun())
    keys = list(defaults)
    arguments = [defaults[key] for key in keys]
    arguments[keys.index("steps")] = STEPS
    with served(demo) as url:
        client = Client(url, verbose=False, download_files=str(tmp_path))
        plot, image, table, summary = client.predict(*arguments, api_name=f"/{ANALYSE}")
        with PIL.Image.open(plot) as opened:
            assert opened.width > 200
        with PIL.Image.open(image) as opened:
            assert opened.size == (64, 64)
        with open(table) as file:
            assert len(list(csv.DictReader(file))) == STEPS
        assert "Onset" in summary
        arguments[keys.index("negative")] = ""
        with pytest.raises(AppError, match="`Negative` is empty"):
            client.predict(*arguments, api_name=f"/{ANALYSE}")
        with pytest.raises(AppError, match="only knows the embedded model's world"):
            client.predict(*arguments[:1], "red square", *arguments[2:], api_name=f"/{REMOVE}")
