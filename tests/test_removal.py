"""Adaptive object removal: the window search, the fixed initial latents, detectors and bad input."""

from __future__ import annotations

import csv
import re
import sys
from collections import deque

import numpy as np
import PIL.Image
import pytest
import torch
from conftest import generators
from generate_helpers import save_tiny_model

from negguide import Negative, NegativePrompts, remove_object, remove_objects
from negguide.cli import main
from negguide.removal import (
    DetectorError,
    ShapesDetector,
    change_outside,
    first_step,
    initial_noise,
    window_search,
)
from negguide.shapes import ShapeObject, render

PROMPT, OBJ = "a red circle", "red square"
STEPS, START = 5, 0.2
FIRST = 1  # the first step of a negative starting at 0.2 of 5 steps


def image_of(pipe, seed: int, end: int) -> np.ndarray:
    """The image of ``seed`` with the negative on steps ``[FIRST, end)``; ``end == FIRST``: no negative."""
    negatives = [Negative(OBJ, start=FIRST / STEPS, stop=end / STEPS)] if end > FIRST else []
    image = pipe(
        PROMPT, generator=generators(seed), num_inference_steps=STEPS, guidance=NegativePrompts(negatives)
    ).images[0]
    return np.asarray(image)


class Spy:
    """The pipeline, recording the seeds, the negative's window end and the latents of every call, and queueing
    ``(seed, end)`` for each image it returns."""

    def __init__(self, pipe) -> None:
        self.pipe = pipe
        self.calls: list[tuple[list[int], int, torch.Tensor]] = []
        self.made: deque[tuple[int, int]] = deque()

    def __getattr__(self, name: str):
        return getattr(self.pipe, name)

    def __call__(self, prompt, **kwargs):
        seeds = [generator.initial_seed() for generator in kwargs["generator"]]
        negatives = kwargs["guidance"].negatives
        end = round(negatives[0].stop * STEPS) if negatives else FIRST
        self.calls.append((seeds, end, kwargs["latents"]))
        self.made.extend((seed, end) for seed in seeds)
        return self.pipe(prompt, **kwargs)


class WindowDetector:
    """A fake detector keyed on the window: the object is there while ``end < removed_at[seed]``."""

    def __init__(self, spy: Spy, removed_at: dict[int, int]) -> None:
        self.spy = spy
        self.removed_at = removed_at
        self.calls: list[tuple[int, int]] = []

    def __call__(self, image: PIL.Image.Image, obj: str) -> bool:
        seed, end = self.spy.made.popleft()
        self.calls.append((seed, end))
        return end < self.removed_at[seed]


def search(pipe, removed_at: dict[int, int], **kwargs):
    """``remove_objects`` for the seeds of ``removed_at`` with a `WindowDetector`; the results and the spy."""
    spy = Spy(pipe)
    seeds = list(removed_at)
    results = remove_objects(
        spy, [PROMPT] * len(seeds), [OBJ] * len(seeds), seeds, detector=WindowDetector(spy, removed_at),
        start=START, steps=STEPS, **kwargs,
    )  # fmt: skip
    return results, spy


def trial_windows(result) -> list[tuple[int, int]]:
    return [trial.window for trial in result.trials]


def test_linear_search_stops_at_the_first_window_that_removes(pipe):
    (result,), spy = search(pipe, {0: 3})
    assert [end for _, end, _ in spy.calls] == [1, 2, 3]  # the plain image, then the windows [1, 2) and [1, 3)
    assert trial_windows(result) == [(1, 2), (1, 3)]
    assert [trial.present for trial in result.trials] == [True, False]
    assert result.window == (1, 3) and result.removed and result.plain_has_object
    assert result.fractions == (0.2, 0.6) and result.image is result.trials[-1].image


def test_every_image_reuses_the_seed_initial_latents(pipe):
    """The plain image (an empty window) and every trial are the seed's own images: same initial latents."""
    (result,), spy = search(pipe, {0: 99})
    latents = initial_noise(pipe, [0])
    assert len(spy.calls) == 5 and all(torch.equal(call_latents, latents) for _, _, call_latents in spy.calls)
    stock = pipe(PROMPT, generator=generators(0), num_inference_steps=STEPS).images[0]
    assert np.array_equal(np.asarray(result.plain_image), np.asarray(stock))
    for trial in result.trials:
        assert np.array_equal(np.asarray(trial.image), image_of(pipe, 0, trial.window[1]))
    never_active = NegativePrompts([Negative(OBJ, start=0.9, stop=1.0)])  # steps at 0, 0.2, ..., 0.8: none inside
    empty = pipe(PROMPT, generator=generators(0), num_inference_steps=STEPS, guidance=never_active).images[0]
    assert np.array_equal(np.asarray(empty), np.asarray(result.plain_image))


def test_no_window_removes_the_object(pipe):
    (result,), _ = search(pipe, {0: 99})
    assert trial_windows(result) == [(1, 2), (1, 3), (1, 4), (1, 5)]
    assert result.window is None and not result.removed
    assert result.image is result.trials[-1].image
    assert "No window removed" in result.summary()


def test_bisection_finds_the_linear_window_in_fewer_trials(pipe):
    (linear,), _ = search(pipe, {0: 5})
    (bisect,), _ = search(pipe, {0: 5}, search="bisect")
    assert linear.window == bisect.window == (1, 5)
    assert len(bisect.trials) < len(linear.trials) == 4
    assert trial_windows(bisect) == [(1, 3), (1, 4), (1, 5)]


@pytest.mark.parametrize("first, last", [(1, 1), (1, 2), (5, 20), (2, 17)])
def test_window_search_bisection_agrees_with_the_linear_scan(first, last):
    def run(search: str, removed_at: int) -> tuple[int | None, int]:
        search_ends = window_search(first, last, search)
        end, trials = next(search_ends), 0
        while True:
            trials += 1
            try:
                end = search_ends.send(end < removed_at)
            except StopIteration as stop:
                return stop.value, trials

    outcomes = {removed_at: (run("linear", removed_at), run("bisect", removed_at)) for removed_at in range(1, last + 3)}
    for removed_at, ((linear, linear_trials), (bisect, bisect_trials)) in outcomes.items():
        assert linear == bisect == (max(removed_at, first) if removed_at <= last else None)
        assert bisect_trials <= max(linear_trials, int(np.ceil(np.log2(last - first + 2))))
    if last - first > 8:
        late = outcomes[last]
        assert late[1][1] < late[0][1]


def test_a_batch_runs_one_search_per_image(pipe):
    results, spy = search(pipe, {0: 2, 1: 4})
    assert [result.window for result in results] == [(1, 2), (1, 4)]
    assert [len(result.trials) for result in results] == [1, 3]
    assert [seeds for seeds, _, _ in spy.calls] == [[0, 1], [0, 1], [1], [1]]  # images share a window's call
    assert torch.equal(spy.calls[-1][2], initial_noise(pipe, [1]))


def test_the_object_is_not_in_the_plain_image(pipe, unet_rows):
    calls = []

    def never(image, obj):
        calls.append(obj)
        return False

    result = remove_object(pipe, PROMPT, OBJ, 0, detector=never, steps=2)
    assert calls == [OBJ] and not result.plain_has_object and not result.removed
    assert result.trials == () and result.window is None and result.image is result.plain_image
    assert len(unet_rows.rows) == 2  # the plain image only


class BoxDetector:
    """Present until the first trial; the object's box is the top-left quarter."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, image, obj) -> bool:
        self.calls += 1
        return self.calls == 1

    def box(self, image, obj):
        return (0, 0, 32, 32)


def test_change_outside_the_box_of_a_detector_that_gives_one(pipe):
    result = remove_object(pipe, PROMPT, OBJ, 0, detector=BoxDetector(), steps=2, start=0.0)
    assert result.box == (0.0, 0.0, 32.0, 32.0) and result.window == (0, 1)
    assert result.change_outside_box is not None and 0 <= result.change_outside_box <= 1
    assert remove_object(pipe, PROMPT, OBJ, 0, detector=lambda image, obj: True, steps=2).change_outside_box is None


def test_no_change_is_measured_outside_a_box_covering_the_image():
    image = render([ShapeObject("red", "square", 20, 20, 20)])
    assert change_outside(image, image, (1, 0, 64, 64)) is None
    assert change_outside(image, image, (0, 0, 32, 32)) == 0


def test_shapes_detector_reads_phrases_and_boxes():
    square = ShapeObject("red", "square", 20, 20, 20)
    image = render([square, ShapeObject("blue", "circle", 46, 46, 20)])
    detector = ShapesDetector()
    assert detector(image, "red square") and detector(image, "a blue circle") and detector(image, "blue")
    assert not detector(image, "green triangle")
    box = detector.box(image, "red square")
    assert np.allclose(box, (10, 10, 30, 30), atol=1)
    assert detector.box(image, "yellow") is None


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"obj": ""}, ValueError, "`obj` is empty"),
        ({"obj": "   "}, ValueError, "`obj` is empty"),
        ({"obj": None}, TypeError, "`obj` must be a string"),
        ({"obj": "a car"}, ValueError, "`obj`: cannot parse 'a car'"),
        ({"start": 1.0}, ValueError, r"`start` must lie in \[0, 1\)"),
        ({"start": 1.5}, ValueError, r"`start` must lie in \[0, 1\)"),
        ({"start": 0.9, "steps": 2}, ValueError, "leaves no step"),
        ({"search": "binary"}, ValueError, "`search` must be one of"),
        ({"guidance_scale": 1.0}, ValueError, "`guidance_scale` must be > 1"),
        ({"detector": "owl-vit"}, TypeError, "`detector` must be a callable"),
        ({"latents": None}, TypeError, "sets latents itself"),
        ({"seed": -1}, ValueError, "`seed` must be a non-negative int"),
    ],
)
def test_bad_input_fails_before_any_image(pipe, unet_rows, kwargs, error, match):
    arguments = {"prompt": PROMPT, "obj": OBJ, "steps": 2, **kwargs}
    with pytest.raises(error, match=match):
        remove_object(pipe, **arguments)
    assert unet_rows.rows == []


def test_a_detector_that_raises_is_named(pipe):
    def owl_vit(image, obj):
        raise RuntimeError("weights not found")

    with pytest.raises(
        DetectorError, match=r"detector .*owl_vit raised RuntimeError .*'red square': weights not found"
    ):
        remove_object(pipe, PROMPT, OBJ, detector=owl_vit, steps=2)


@pytest.mark.parametrize("verdict", [1, "yes", None, np.float32(1.0)])
def test_a_detector_that_does_not_answer_a_bool_is_named(pipe, verdict):
    def clip_score(image, obj):
        return verdict

    with pytest.raises(DetectorError, match=r"detector .*clip_score returned .* must return True"):
        remove_object(pipe, PROMPT, OBJ, detector=clip_score, steps=2)


def test_numpy_bools_are_verdicts(pipe):
    result = remove_object(pipe, PROMPT, OBJ, detector=lambda image, obj: np.bool_(False), steps=2)
    assert not result.plain_has_object


def test_first_step_follows_the_negative_window_rule():
    assert [first_step(start, 20) for start in (0.0, 0.2, 0.21, 0.5, 0.99)] == [0, 4, 5, 10, 20]


def test_remove_command_writes_the_images_and_trials(tmp_path, capsys, monkeypatch):
    """trials.csv gives each trial's window, verdict and outcome: the recoloured trial is present, not removed."""
    monkeypatch.setattr(sys.modules[__name__], "DETECTOR", RecolouringDetector(), raising=False)
    model = save_tiny_model(tmp_path / "model")
    out = tmp_path / "out"
    code = main(["remove", "--prompt", PROMPT, "--object", OBJ, "--model", str(model), "--device", "cpu",
                 "--steps", "3", "--out", str(out), "--detector", f"{__name__}:DETECTOR"])  # fmt: skip
    assert code == 0
    assert {path.name for path in out.iterdir()} == {
        "plain.png", "removed.png", "trials.csv", "trial-0-steps-1-2.png", "trial-1-steps-1-3.png"
    }  # fmt: skip
    with (out / "trials.csv").open(newline="") as file:
        rows = [(row["end_step"], row["present"], row["outcome"]) for row in csv.DictReader(file)]
    assert rows == [("2", "1", "recoloured"), ("3", "0", "removed")]
    assert "red square" in capsys.readouterr().out


@pytest.mark.parametrize(
    "flags, match",
    [
        (["--object", " "], "`--object` must be a non-empty text"),
        (["--object", OBJ, "--start", "1"], r"`--start` must lie in \[0, 1\)"),
        (["--object", OBJ, "--detector", "no_such_module:detect"], "`--detector`: cannot import"),
    ],
)
def test_remove_command_bad_input_writes_nothing(tmp_path, capsys, flags, match):
    out = tmp_path / "out"
    assert main(["remove", "--prompt", PROMPT, "--out", str(out), *flags]) == 2
    assert re.search(match, capsys.readouterr().err)
    assert not out.exists()


def test_shapes_detector_tells_removed_from_recoloured_and_reshaped():
    circle = ShapeObject("blue", "circle", 46, 46, 20)
    plain = render([ShapeObject("red", "square", 20, 20, 20), circle])
    detector = ShapesDetector()
    outcomes = {
        "removed": render([circle]),
        "recoloured": render([ShapeObject("green", "square", 20, 20, 20), circle]),
        "reshaped": render([ShapeObject("red", "circle", 20, 20, 20), circle]),
        "present": plain,
    }
    for expected, image in outcomes.items():
        assert detector.outcome(plain, image, "red square") == expected
    assert detector.outcome(render([circle]), render([circle]), "red square") == "absent"


class RecolouringDetector:
    """The object is present in the plain image; the first trial recolours it in place, the next removes it."""

    def __init__(self) -> None:
        self.outcomes = deque(["recoloured", "removed"])

    def __call__(self, image, obj) -> bool:
        return True

    def outcome(self, plain, image, obj) -> str:
        return self.outcomes.popleft()


def test_a_recoloured_object_is_not_removed_and_the_search_goes_on(pipe):
    result = remove_object(pipe, PROMPT, OBJ, 0, detector=RecolouringDetector(), steps=STEPS, start=START)
    assert [(trial.window, trial.outcome, trial.present) for trial in result.trials] == [
        ((1, 2), "recoloured", True),
        ((1, 3), "removed", False),
    ]
    assert result.window == (1, 3) and result.outcome == "removed" and result.summary().startswith("Removed")
    stuck = RecolouringDetector()
    stuck.outcomes = deque(["recoloured"] * 4)
    never = remove_object(pipe, PROMPT, OBJ, 0, detector=stuck, steps=STEPS, start=START)
    assert not never.removed and never.outcome == "recoloured"
    assert never.summary().endswith("the longest window recoloured it in place.")


def test_a_detector_outcome_that_is_not_one_is_named(pipe):
    detector = RecolouringDetector()
    detector.outcomes = deque(["gone"])
    with pytest.raises(DetectorError, match=r"RecolouringDetector.outcome returned 'gone'.*expected one of absent"):
        remove_object(pipe, PROMPT, OBJ, 0, detector=detector, steps=STEPS, start=START)
