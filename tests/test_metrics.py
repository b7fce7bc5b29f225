from __future__ import annotations

import numpy as np
import pytest

from negguide.metrics import (
    ObjectSpec,
    Rates,
    Verdict,
    batch_diversity,
    box_overlap,
    change_outside_box,
    composition_diversity,
    composition_similarity,
    contains,
    extra_objects,
    has_named_objects,
    judge,
    kept,
    matching,
    negative_outcome,
    negative_removed,
    object_kinds,
    oversized,
    parse_phrase,
    parse_prompt,
    presence_rate,
    rates,
    removal_outcome,
    rms_distance,
    similarity,
)
from negguide.shapes import Detection, ShapeObject, detect, render, scenes


def det(colour: str, shape: str) -> Detection:
    return Detection(colour, shape, (0, 0, 10, 10), 100.0, 1.0)


RED_CIRCLE, RED_SQUARE, BLUE_SQUARE = det("red", "circle"), det("red", "square"), det("blue", "square")


@pytest.mark.parametrize("text, expected", [
    ("a red circle and a blue square", (("red", "circle"), ("blue", "square"))),
    ("a yellow triangle", (("yellow", "triangle"),)),
    ("  A Red  Circle  ", (("red", "circle"),)),
    ("blue square", (("blue", "square"),)),
    ("blue", (("blue", None),)),
    ("square", ((None, "square"),)),
    ("an green circle and red", (("green", "circle"), ("red", None))),
])
def test_parse_prompt(text, expected):
    assert parse_prompt(text) == expected


@pytest.mark.parametrize("text", ["", "a", "a purple circle", "circle red", "a red circle and",
                                  "red circle square", "a red circle, a blue square", "and a red circle"])
def test_parse_errors_name_the_text(text):
    with pytest.raises(ValueError) as error:
        parse_prompt(text)
    assert repr(text) in str(error.value)


def test_parse_phrase_is_one_matcher():
    assert parse_phrase("a blue square") == ObjectSpec("blue", "square")
    with pytest.raises(ValueError, match="'a red circle and a blue square'"):
        parse_phrase("a red circle and a blue square")


def test_specs_match_and_cover():
    blue = parse_phrase("blue")
    assert blue.matches(BLUE_SQUARE) and not blue.matches(RED_SQUARE)
    assert parse_phrase("square").matches(RED_SQUARE) and not parse_phrase("square").matches(RED_CIRCLE)
    assert parse_phrase("red").covers(ObjectSpec("red", "circle"))
    assert not parse_phrase("a red square").covers(ObjectSpec("red", "circle"))
    assert not parse_phrase("red").covers(ObjectSpec(None, "circle"))


def test_named_objects_need_one_detection_each():
    assert has_named_objects([RED_CIRCLE, BLUE_SQUARE], "a blue square and a red circle")
    assert not has_named_objects([RED_CIRCLE], "a red circle and a blue square")
    assert not has_named_objects([RED_CIRCLE], "a red circle and red")
    assert not has_named_objects([BLUE_SQUARE], "a red square")
    # A greedy pass would give "red" the red circle and leave "a red circle" without one.
    assert has_named_objects([RED_CIRCLE, RED_SQUARE], "red and a red circle")
    assert len(matching(parse_prompt("red and a red circle"), [RED_CIRCLE, RED_SQUARE])) == 2


def test_extra_objects():
    assert extra_objects([RED_CIRCLE, BLUE_SQUARE], "a red circle") == [BLUE_SQUARE]
    assert extra_objects([RED_CIRCLE, RED_CIRCLE], "a red circle") == [RED_CIRCLE]
    assert extra_objects([RED_CIRCLE], "a red circle") == []
    assert extra_objects([], "a red circle") == []


def test_negative_removed_and_kept():
    assert negative_removed([RED_CIRCLE], "a blue square")
    assert not negative_removed([RED_CIRCLE, BLUE_SQUARE], "blue")
    assert not negative_removed([RED_SQUARE], "a blue square and square")
    assert contains([RED_SQUARE], "square") and not contains([RED_SQUARE], "blue")
    # The contradiction case: the negative targets the only prompted object, nothing is left to keep.
    assert kept([], "a red circle", "red")
    # The overlap case: a red square as negative does not target the red circle.
    assert kept([RED_CIRCLE], "a red circle", "a red square")
    assert not kept([RED_SQUARE], "a red circle", "a red square")
    assert not kept([RED_CIRCLE], "a red circle and a blue square", "a red circle")
    assert kept([BLUE_SQUARE], "a red circle and a blue square", "a red circle")
    assert kept([RED_CIRCLE], "a red circle", None) and not kept([], "a red circle", None)


def test_judge():
    assert judge([RED_CIRCLE, RED_SQUARE], "a red circle", "a red square") == Verdict(
        named=True, extra=1, negative_removed=False, kept=True)
    assert judge([BLUE_SQUARE], "a red circle") == Verdict(
        named=False, extra=1, negative_removed=None, kept=False)
    assert judge([RED_CIRCLE], "a red circle", "").negative_removed is None
    with pytest.raises(ValueError, match="'a red blob'"):
        judge([RED_CIRCLE], "a red circle", "a red blob")


def test_rates_average_the_verdicts():
    found = {"one": [RED_CIRCLE], "two": [RED_CIRCLE, RED_SQUARE], "three": [BLUE_SQUARE, RED_SQUARE],
             "four": []}
    samples = [("one", "a red circle", "a red square"), ("two", "a red circle", "a red square"),
               ("three", "a red circle", None), ("four", "a red circle", None)]
    assert rates(samples, detector=found.__getitem__) == Rates(
        count=4, named_rate=0.5, extra_rate=0.5, mean_extra=0.75, negative_removed_rate=0.5, kept_rate=0.5)
    no_negative = rates(samples[2:], detector=found.__getitem__)
    assert no_negative.negative_removed_rate is None
    with pytest.raises(ValueError):
        rates([])


def test_presence_rate():
    assert presence_rate([[RED_CIRCLE], [RED_SQUARE], [], [BLUE_SQUARE]], "square") == 0.5
    assert presence_rate([[RED_CIRCLE]], ObjectSpec("red", "circle")) == 1.0
    with pytest.raises(ValueError):
        presence_rate([], "red")


def test_captions_of_rendered_scenes_are_adhered_to():
    sample = list(scenes(11, 150))
    result = rates((render(s.objects), s.caption, None) for s in sample)
    under_described = sum(len(parse_prompt(s.caption)) < len(s.objects) for s in sample) / len(sample)
    assert result.named_rate == 1.0
    assert result.extra_rate == pytest.approx(under_described)


def test_pixel_distances():
    white = np.ones((8, 8, 3))
    black = np.zeros((8, 8, 3))
    half = white.copy()
    half[:4] = 0.5
    assert rms_distance(white, white) == 0.0
    assert rms_distance(white, black) == pytest.approx(1.0)
    assert rms_distance(white, half) == pytest.approx(np.sqrt(0.5 * 0.25))
    assert similarity(half, white) == pytest.approx(1.0 - np.sqrt(0.125))
    assert batch_diversity([white, white, black]) == pytest.approx(2.0 / 3.0)
    assert rms_distance((white * 255).astype(np.uint8), white) == 0.0
    with pytest.raises(ValueError, match="two images"):
        batch_diversity([white])
    with pytest.raises(ValueError, match="size"):
        rms_distance(white, np.ones((4, 4, 3)))


def test_composition_measures_compare_object_kinds_not_positions():
    moved_red_circle = Detection("red", "circle", (40, 40, 60, 60), 300.0, 1.0)
    assert object_kinds([RED_CIRCLE, moved_red_circle, RED_SQUARE]) == {("red", "circle"), ("red", "square")}
    assert composition_similarity([RED_CIRCLE], [moved_red_circle]) == 1.0
    assert composition_similarity([RED_CIRCLE, RED_SQUARE], [RED_CIRCLE]) == pytest.approx(0.5)
    assert composition_similarity([RED_CIRCLE, RED_SQUARE], [RED_CIRCLE, BLUE_SQUARE]) == pytest.approx(1 / 3)
    assert composition_similarity([], []) == 1.0
    assert composition_similarity([RED_CIRCLE], []) == 0.0
    # pairs: (a, a) 0, (a, b) 1/2, (a, b) 1/2 -> mean 1/3
    batch = [[RED_CIRCLE], [moved_red_circle], [RED_CIRCLE, BLUE_SQUARE]]
    assert composition_diversity(batch) == pytest.approx(1 / 3)
    assert composition_diversity([[RED_CIRCLE], [RED_CIRCLE]]) == 0.0
    with pytest.raises(ValueError, match="two images"):
        composition_diversity([[RED_CIRCLE]])


def test_oversized_finds_touching_shapes_of_one_colour():
    apart = [ShapeObject("yellow", "square", 18, 32, 30), ShapeObject("yellow", "square", 50, 32, 26)]
    touching = [ShapeObject("yellow", "square", 18, 32, 30), ShapeObject("yellow", "square", 47, 32, 28)]
    assert not oversized(detect(render(apart)))
    found = detect(render(touching))
    assert len(found) == 1 and oversized(found) == found
    assert oversized(found, factor=2.0) == []


def test_change_outside_box():
    before = np.ones((10, 10, 3))
    after = before.copy()
    after[2:5, 3:7] = 0.0  # inside the box (3, 2, 7, 5)
    assert change_outside_box(before, after, (3, 2, 7, 5)) == 0.0
    after[5, 3:7] = 0.0  # the row just below the box: 4 of the 88 outside pixels
    assert change_outside_box(before, after, (3, 2, 7, 5)) == pytest.approx(4 / 88)
    assert change_outside_box(before, after, (3, 2, 7, 5), margin=1) == 0.0
    assert change_outside_box(before, after, (3.5, 2.5, 6.5, 5.5)) == 0.0
    with pytest.raises(ValueError, match="no pixel"):
        change_outside_box(before, after, (0, 0, 10, 10))


def at(colour: str, shape: str, box: tuple[int, int, int, int]) -> Detection:
    return Detection(colour, shape, box, 100.0, 1.0)


SQUARE_HERE = at("red", "square", (10, 10, 30, 30))
CIRCLE_THERE = at("red", "circle", (40, 40, 60, 60))


@pytest.mark.parametrize("after, target, expected", [
    ([CIRCLE_THERE], "red square", "removed"),
    ([CIRCLE_THERE, at("green", "square", (11, 10, 31, 29))], "red square", "recoloured"),
    ([CIRCLE_THERE, at("red", "circle", (12, 12, 30, 30))], "red square", "reshaped"),
    ([CIRCLE_THERE, at("blue", "triangle", (10, 14, 28, 30))], "red square", "replaced"),
    ([CIRCLE_THERE, at("red", "square", (40, 5, 60, 25))], "red square", "present"),
    ([CIRCLE_THERE, at("green", "square", (32, 10, 52, 30))], "red square", "removed"),  # beside, not in place
    ([CIRCLE_THERE, at("red", "circle", (12, 12, 30, 30))], "square", "reshaped"),
    ([CIRCLE_THERE, at("red", "circle", (12, 12, 30, 30))], "red", "present"),  # a colour-only target stays
    ([CIRCLE_THERE, at("green", "square", (11, 10, 31, 29))], "square", "present"),
])
def test_removal_outcome_tells_removed_from_changed_in_place(after, target, expected):
    assert removal_outcome([SQUARE_HERE, CIRCLE_THERE], after, target) == expected


def test_removal_outcome_without_the_object_and_over_several_phrases():
    assert removal_outcome([CIRCLE_THERE], [], "red square") == "absent"
    recoloured = [at("green", "square", (10, 10, 30, 30))]
    assert negative_outcome([SQUARE_HERE, CIRCLE_THERE], recoloured, "red square and red circle") == "recoloured"
    assert negative_outcome([SQUARE_HERE], [], "red square and blue") == "removed"
    assert box_overlap((0, 0, 10, 10), (5, 0, 15, 10)) == 0.5 and box_overlap((0, 0, 1, 1), (2, 2, 3, 3)) == 0.0


def test_a_recoloured_negative_is_not_counted_as_removed():
    plain = [SQUARE_HERE, CIRCLE_THERE]
    recoloured = [at("green", "square", (10, 10, 30, 30)), CIRCLE_THERE]
    verdict = judge(recoloured, "a red circle", "red square", plain=plain)
    assert verdict.negative_outcome == "recoloured" and verdict.negative_removed is False
    assert judge(recoloured, "a red circle", "red square").negative_removed is True  # no plain image: absence only
    assert judge([CIRCLE_THERE], "a red circle", "red square", plain=plain).negative_removed is True
    found = {"plain": plain, "recoloured": recoloured, "removed": [CIRCLE_THERE]}
    samples = [("recoloured", "a red circle", "red square", "plain"), ("removed", "a red circle", "red square", "plain")]
    result = rates(samples, detector=found.__getitem__)
    assert result.negative_removed_rate == 0.5 and result.changed_in_place_rate == 0.5
    assert rates(samples[1:], detector=found.__getitem__).changed_in_place_rate == 0.0
    with pytest.raises(ValueError, match="a sample is"):
        rates([("removed", "a red circle")], detector=found.__getitem__)
