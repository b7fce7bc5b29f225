"""The demo's "Analyse" tab: the per-step analysis of a negative and the adaptive removal, called directly and
through the served app."""

from __future__ import annotations

import csv
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
from negguide.demo.negative_analysis import (
    SHOWN_SIDE,
    NegativeRun,
    analyse,
    enlarged,
    removal_gallery,
    removal_table,
    remove,
)
from negguide.loading import EMBEDDED_MODEL_NAME
from negguide.removal import RemovalResult, Trial

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
    assert view.image.size == (SHOWN_SIDE, SHOWN_SIDE)
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
    assert items[0][1] == "plain prompt" and items[0][0].size == (SHOWN_SIDE, SHOWN_SIDE)
    assert len(items) == 1 + len(result.trials)
    for number, ((image, label), trial) in enumerate(zip(items[1:], result.trials), start=1):
        assert image.tobytes() == enlarged(trial.image).tobytes()
        assert label == f"{number}. {trial.fractions[0]:.2f}-{trial.fractions[1]:.2f}: {trial.outcome}"
    assert result.summary().startswith(("'red square'", "Removed", "No window"))


def synthetic_removal(outcomes: list[str]) -> RemovalResult:
    """A removal of 'red square' over 10 steps whose trials end in ``outcomes``, windows [2, 3), [2, 4), ..."""
    image = PIL.Image.new("RGB", (64, 64), "white")
    trials = tuple(
        Trial((2, 3 + k), (0.2, (3 + k) / 10), outcome != "removed", image, outcome)
        for k, outcome in enumerate(outcomes)
    )
    end = next((trial.window for trial in trials if trial.outcome == "removed"), None)
    return RemovalResult("a red circle", "red square", 0, 10, image, image, True, end, trials, None, None)


def test_the_removal_table_tells_removed_from_recoloured() -> None:
    table = removal_table(synthetic_removal(["recoloured", "reshaped", "removed"]))
    rows = table.splitlines()[2:]
    assert rows == [
        "| 1 | 2-2 of 10 | 0.20-0.30 | recoloured in place, not removed |",
        "| 2 | 2-3 of 10 | 0.20-0.40 | reshaped in place, not removed |",
        "| 3 | 2-4 of 10 | 0.20-0.50 | removed |",
    ]
    assert removal_table(synthetic_removal([])) == ""


def test_the_plot_is_not_shaded_when_the_negative_acts_on_every_step(pipe, tmp_path: Path) -> None:
    model = DemoModel.from_pipeline(pipe)
    whole = analyse(model, run(start=0.0, stop=1.0), tmp_path)
    windowed = analyse(model, run(start=0.3, stop=1.0), tmp_path)

    def reddish(image) -> int:
        """Pixels of the light red that shades the steps where the negative acts."""
        return sum(1 for r, g, b in image.getdata() if r >= 248 and 230 <= g <= 244 and abs(g - b) <= 2)

    assert reddish(windowed.plot) > 1000 and reddish(whole.plot) < reddish(windowed.plot) / 10


def test_the_served_tab_analyses_and_reports_bad_input(pipe, tmp_path: Path) -> None:
    demo = build_demo(pipeline=pipe)
    with served(demo) as url:
        client = Client(url, verbose=False, download_files=str(tmp_path))
        plotted, image, table, summary = client.predict(steps=STEPS, api_name=f"/{ANALYSE}")
        with PIL.Image.open(plotted) as opened:
            assert opened.width > 200
        with PIL.Image.open(image) as opened:
            assert opened.size == (SHOWN_SIDE, SHOWN_SIDE)
        with open(table) as file:
            assert len(list(csv.DictReader(file))) == STEPS
        assert "Onset" in summary
        with pytest.raises(AppError, match="`Negative` is empty"):
            client.predict(steps=STEPS, negative="", api_name=f"/{ANALYSE}")
        with pytest.raises(AppError, match=r"`Steps` must lie between 1 and 100, got 0\."):
            client.predict(steps=0, api_name=f"/{ANALYSE}")
        with pytest.raises(AppError, match="only knows the embedded model's world"):
            client.predict(steps=STEPS, api_name=f"/{REMOVE}")
