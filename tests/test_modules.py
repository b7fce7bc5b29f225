"""Guidance-module configs: validation, serialisation, registry, branches per step."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass

import pytest

import negguide
from negguide import Negative, NegativePrompts
from negguide.branches import COND, UNCOND, CallInfo, Step
from negguide.modules import resolve_guidance


def steps(n: int) -> list[Step]:
    return [Step(i, n, 1000.0 - i) for i in range(n)]


@pytest.mark.parametrize(
    ("kwargs", "error", "name"),
    [
        ({"weight": 0}, ValueError, "weight"),
        ({"weight": -1.0}, ValueError, "weight"),
        ({"weight": math.nan}, ValueError, "weight"),
        ({"weight": math.inf}, ValueError, "weight"),
        ({"weight": "1"}, TypeError, "weight"),
        ({"start": 0.5, "stop": 0.5}, ValueError, "start"),
        ({"start": 0.8, "stop": 0.2}, ValueError, "start"),
        ({"start": -0.1}, ValueError, "start"),
        ({"stop": 1.5}, ValueError, "stop"),
        ({"start": math.nan}, ValueError, "start"),
    ],
)
def test_negative_rejects_bad_settings(kwargs, error, name):
    with pytest.raises(error, match=name):
        Negative("blurry", **kwargs)


@pytest.mark.parametrize("text", [3, None, [], ["a", 3]])
def test_negative_rejects_bad_text(text):
    with pytest.raises(TypeError, match="text"):
        Negative(text)


@pytest.mark.parametrize(
    ("kwargs", "error", "name"),
    [
        ({"negatives": "blurry"}, TypeError, "negatives"),
        ({"negatives": Negative("blurry")}, TypeError, "negatives"),
        ({"negatives": [3]}, TypeError, "negatives"),
        ({"negatives": [{"text": "a", "wieght": 2}]}, ValueError, "wieght"),
        ({"guidance_rescale": 1.5}, ValueError, "guidance_rescale"),
        ({"guidance_rescale": math.nan}, ValueError, "guidance_rescale"),
    ],
)
def test_negative_prompts_rejects_bad_settings(kwargs, error, name):
    with pytest.raises(error, match=name):
        NegativePrompts(**kwargs)


def test_strings_and_mappings_become_negatives():
    module = NegativePrompts(["blurry", {"text": "dark", "weight": 2.0}, Negative(["a", "b"])])
    assert module.negatives == (Negative("blurry"), Negative("dark", weight=2.0), Negative(("a", "b")))


def test_round_trip_through_json():
    module = NegativePrompts([Negative("blurry", weight=2.0, start=0.2), "dark", Negative(("a", "b"))], 0.3)
    data = json.loads(json.dumps(module.to_dict()))
    assert data["name"] == "negative_prompts"
    assert negguide.guidance_from_dict(data) == module
    assert NegativePrompts.from_dict(data) == module
    assert negguide.guidance_from_dict(NegativePrompts(["blurry"]).to_dict()) == NegativePrompts(["blurry"])


@pytest.mark.parametrize(
    ("data", "error", "name"),
    [
        ({"name": "no_such_method"}, ValueError, "no_such_method.*negative_prompts"),
        ({"negatives": []}, TypeError, "name"),
        ("negative_prompts", TypeError, "name"),
        ({"name": "negative_prompts", "scale": 2}, ValueError, "scale"),
    ],
)
def test_from_dict_rejects_bad_data(data, error, name):
    with pytest.raises(error, match=name):
        negguide.guidance_from_dict(data)


def test_windows_select_branches_per_step():
    call = CallInfo.from_call(["p0", "p1"], None, None, None, 1)
    module = NegativePrompts([Negative("late", start=0.5), Negative(("x0", "x1"), stop=0.25)])
    plan = [{b.name: b.texts for b in module.branches(call, step)} for step in steps(4)]
    assert plan == [
        {"neg_1": ("x0", "x1"), COND: ("p0", "p1")},
        {UNCOND: ("", ""), COND: ("p0", "p1")},
        {"neg_0": ("late", "late"), COND: ("p0", "p1")},
        {"neg_0": ("late", "late"), COND: ("p0", "p1")},
    ]


def test_call_negative_prompt_stands_in_when_no_negative_is_active():
    call = CallInfo.from_call("p", "ugly", None, None, 2)
    branches = NegativePrompts([Negative("late", start=0.5)]).branches(call, Step(0, 2, 999.0))
    assert [(b.name, b.texts) for b in branches] == [(UNCOND, ("ugly",)), (COND, ("p",))]


def test_resolve_guidance_defaults_to_standard_negatives():
    assert resolve_guidance(None) == (NegativePrompts(), ())
    assert resolve_guidance("negative_prompts", "blurry") == (NegativePrompts(), ())
    assert resolve_guidance([NegativePrompts(["a"])]) == (NegativePrompts(["a"]), ())


def test_unregistered_subclass_does_not_serialise_as_its_parent():
    @dataclass(frozen=True)
    class Variant(NegativePrompts):
        extra: int = 1

    with pytest.raises(TypeError, match="register_guidance"):
        Variant().to_dict()
