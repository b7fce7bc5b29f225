from __future__ import annotations

import itertools
import math
from collections import deque

import numpy as np
import pytest
from PIL import Image, ImageFilter

from negguide.shapes import COLOURS, SHAPES, Detection, ShapeObject, detect, render, scenes
from negguide.shapes.detector import classify, components, image_array

IDEAL_AREA = {"circle": math.pi / 4, "square": 1.0, "triangle": 0.5}


def kinds(items) -> list[tuple[str, str]]:
    return sorted((item.colour, item.shape) for item in items)


def degrade(image: Image.Image, rng: np.random.Generator, noise: float = 8.0, blur: float = 0.7) -> np.ndarray:
    """A gaussian blur of ``blur`` px, then gaussian noise of ``noise`` (0-255 units), as uint8."""
    pixels = np.asarray(image.filter(ImageFilter.GaussianBlur(blur)), dtype=np.float64)
    return np.clip(pixels + rng.normal(0.0, noise, pixels.shape), 0, 255).round().astype(np.uint8)


def box_error(detection: Detection, obj: ShapeObject) -> float:
    return max(abs(a - b) for a, b in zip(detection.box, obj.box, strict=True))


@pytest.fixture(scope="module")
def clean_results():
    return [(scene, detect(render(scene.objects))) for scene in scenes(0, 1000)]


def test_exact_on_a_thousand_rendered_scenes(clean_results):
    exact = sum(kinds(scene.objects) == kinds(found) for scene, found in clean_results)
    rate = exact / len(clean_results)
    print(f"detector exact-match rate on {len(clean_results)} clean scenes: {rate:.4f}")
    assert rate >= 0.99


def test_boxes_and_areas_match_ground_truth(clean_results):
    for scene, found in clean_results:
        for obj in scene.objects:
            same = [det for det in found if (det.colour, det.shape) == (obj.colour, obj.shape)]
            assert same, (obj, found)
            det = min(same, key=lambda d: box_error(d, obj))
            assert box_error(det, obj) <= 2.0
            assert det.area == pytest.approx(IDEAL_AREA[obj.shape] * obj.size**2, rel=0.1)
            assert 0.0 <= det.score <= 1.0


def test_detections_come_in_reading_order(clean_results):
    for _, found in clean_results:
        assert found == sorted(found, key=lambda d: (d.box[1], d.box[0], d.colour))


def test_noisy_blurred_scenes_still_detected():
    rng = np.random.default_rng(0)
    sample = list(scenes(1, 300))
    exact = sum(kinds(s.objects) == kinds(detect(degrade(render(s.objects), rng))) for s in sample)
    rate = exact / len(sample)
    print(f"detector exact-match rate on {len(sample)} noisy (sigma 8/255), blurred (0.7 px) scenes: {rate:.4f}")
    assert rate >= 0.95


def test_white_image_holds_nothing():
    assert detect(Image.new("RGB", (64, 64), "white")) == []


@pytest.mark.parametrize("fill", [(0, 0, 0), (255, 0, 255)])
def test_colours_off_the_palette_are_not_objects(fill):
    image = Image.new("RGB", (64, 64), "white")
    image.paste(fill, (20, 20, 44, 44))
    assert detect(image) == []


@pytest.mark.parametrize("colour", sorted(COLOURS))
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("size", [14.0, 22.5, 30.0])
def test_each_colour_and_shape_alone(colour, shape, size):
    for offset in (0.0, 0.3, 0.5, 0.8):
        obj = ShapeObject(colour, shape, 31 + offset, 30 + offset / 2, size)
        (det,) = detect(render([obj]))
        assert (det.colour, det.shape) == (colour, shape)
        assert box_error(det, obj) <= 2.0


@pytest.mark.parametrize("shape", SHAPES)
def test_shapes_touching_each_border(shape):
    for size in (14.0, 30.0):
        h = size / 2
        for cx, cy in itertools.product((h, 64 - h), (h, 64 - h)):
            obj = ShapeObject("blue", shape, cx, cy, size)
            (det,) = detect(render([obj]))
            assert (det.colour, det.shape) == ("blue", shape)
            assert box_error(det, obj) <= 2.0


def test_min_area_is_a_parameter():
    image = render([ShapeObject("green", "triangle", 30, 30, 14)])
    assert kinds(detect(image)) == [("green", "triangle")]
    assert detect(image, min_area=150) == []


def test_specks_and_slivers_are_dropped():
    pixels = np.full((64, 64, 3), 255, dtype=np.uint8)
    pixels[5:8, 5:8] = COLOURS["red"]  # a 9 px speck
    pixels[40, 10:50] = COLOURS["blue"]  # a 40 px line, one pixel thin
    assert detect(pixels) == []
    assert kinds(detect(pixels, min_area=5)) == [("red", "square")]


@pytest.mark.parametrize("first, second", list(itertools.permutations(sorted(COLOURS), 2)))
def test_blended_edges_between_colours_found_no_third_object(first, second):
    for gap, blur in itertools.product((0.0, 0.5), (0.0, 1.0)):
        objects = [ShapeObject(first, "square", 20, 32, 24), ShapeObject(second, "circle", 44 + gap, 32, 24)]
        image = render(objects)
        if blur:
            image = image.filter(ImageFilter.GaussianBlur(blur))
        assert kinds(detect(image)) == kinds(objects)


def test_classify_on_ideal_features():
    assert classify(1.0, 0.0)[0] == "square"
    assert classify(math.pi / 4, 0.0)[0] == "circle"
    assert classify(0.5, -0.566)[0] == "triangle"
    assert classify(0.79, -0.4)[0] == "triangle"
    assert classify(1.0, 0.0)[1] == pytest.approx(1.0)
    assert classify(0.89, 0.0)[1] < 0.05


def bfs_components(mask: np.ndarray) -> set[frozenset[tuple[int, int]]]:
    seen: set[tuple[int, int]] = set()
    found = set()
    for start in zip(*np.nonzero(mask), strict=True):
        if start in seen:
            continue
        queue, part = deque([start]), set()
        seen.add(start)
        while queue:
            y, x = queue.popleft()
            part.add((y, x))
            for dy, dx in itertools.product((-1, 0, 1), repeat=2):
                n = (y + dy, x + dx)
                if 0 <= n[0] < mask.shape[0] and 0 <= n[1] < mask.shape[1] and mask[n] and n not in seen:
                    seen.add(n)
                    queue.append(n)
        found.add(frozenset(part))
    return found


@pytest.mark.parametrize("density", [0.3, 0.45, 0.6])
def test_components_agree_with_breadth_first_search(density):
    rng = np.random.default_rng(int(density * 100))
    mask = rng.random((40, 50)) < density
    labels, count = components(mask)
    ours = {frozenset(zip(*np.nonzero(labels == k), strict=True)) for k in range(1, count + 1)}
    assert ours == bfs_components(mask)
    assert (labels > 0).sum() == mask.sum()


def test_components_follow_a_long_spiral_and_diagonals():
    mask = np.zeros((21, 21), dtype=bool)
    mask[1, 1:20] = mask[1:20, 19] = mask[19, 1:20] = mask[3:20, 1] = mask[3, 1:17] = mask[3:17, 17] = True
    mask[0, 0] = True  # touches the spiral only diagonally
    assert components(mask)[1] == 1
    assert components(np.eye(5, dtype=bool))[1] == 1
    assert components(np.zeros((4, 4), dtype=bool))[1] == 0


def test_input_types_agree():
    obj = ShapeObject("red", "circle", 30, 30, 20)
    image = render([obj])
    array = np.asarray(image)
    expected = detect(image)
    assert kinds(expected) == [("red", "circle")]
    assert detect(array) == expected
    assert detect(array / 255.0) == expected
    assert detect(image.convert("RGBA")) == expected
    torch = pytest.importorskip("torch")
    tensor = torch.from_numpy(array / 255.0)
    assert detect(tensor) == expected
    assert detect(tensor.permute(2, 0, 1)) == expected


def test_bad_inputs_raise_clear_errors():
    with pytest.raises(TypeError, match="PIL image"):
        detect([[0, 0, 0]])
    with pytest.raises(ValueError, match="shape"):
        detect(np.zeros((64, 64), dtype=np.uint8))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        detect(np.full((8, 8, 3), 2.0))
    with pytest.raises(ValueError, match="dtype"):
        detect(np.zeros((8, 8, 3), dtype=np.int64))
    with pytest.raises(ValueError, match="shape"):
        image_array(np.zeros((1, 3, 8, 8), dtype=np.float32))
