"""An analytic detector for the shapes world: which shapes of which colours an image holds.

The detector inverts the renderer. Every pixel is modelled as a blend of the background and one palette
colour, ``pixel = background - alpha * (background - colour)``; the colour whose direction from the
background is closest in angle to the pixel's is its label and ``alpha`` its coverage. Pixels covered
at least half by a colour, within ``max_angle`` degrees of it, are that colour's foreground. The
8-connected components of each colour's foreground are the candidate objects: components lighter than
``min_area`` pixels are specks, and components too thin to survive a 3x3 erosion are edge slivers (the
blurred rim of an object read as a neighbouring colour), both dropped. Because labels are per pixel and
components per colour, a blended rim pixel joins whichever object it touches instead of founding an
object of a third colour.

Each object is classified from two scale-free features of its coverage, measured with sub-pixel
accuracy from the soft ``alpha`` values (so they survive anti-aliasing and blur):

* fill, the area over the product of the widest row and the tallest column: 1 for a square, pi/4 for a
  circle, 1/2 for a triangle;
* skew, the skewness of the mass along the vertical axis: 0 for a circle or a square, about -0.57 for a
  triangle whose apex is up (its mass sits low).

Skew tells a triangle from the rest; fill then tells a square from a circle (see :func:`classify`).

Limits: two objects of one colour that touch (the world keeps their boxes ``world.GAP`` px apart, a blurry
image may not) merge into one detection; objects of different colours that touch stay apart.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image

from negguide.shapes.world import BACKGROUND, COLOURS

#: The features of the ideal shapes: a triangle's vertical skew, a circle's and a square's fill.
TRIANGLE_SKEW = -2 * math.sqrt(2) / 5
CIRCLE_FILL = math.pi / 4
SQUARE_FILL = 1.0
#: The decision thresholds, halfway between the ideal values.
SKEW_SPLIT = TRIANGLE_SKEW / 2
FILL_SPLIT = (CIRCLE_FILL + SQUARE_FILL) / 2


@dataclass(frozen=True)
class Detection:
    """One detected object.

    Args:
        colour: the palette colour's name, e.g. ``"red"``.
        shape: ``"circle"``, ``"square"`` or ``"triangle"``.
        box: ``(x0, y0, x1, y1)`` pixel edges of the object's foreground pixels (``x1``, ``y1``
            exclusive), the same frame as :attr:`ShapeObject.box`.
        area: the object's area in pixels, the sum of its coverage.
        score: in ``[0, 1]``, how clearly the shape features pick the shape (see :func:`classify`).
    """

    colour: str
    shape: str
    box: tuple[int, int, int, int]
    area: float
    score: float

    @property
    def name(self) -> str:
        return f"{self.colour} {self.shape}"


def image_array(image: Any) -> np.ndarray:
    """An image as a ``(H, W, 3)`` float64 array in ``[0, 1]``.

    Accepts a PIL image (any mode, converted to RGB), a numpy ``(H, W, 3)`` array (uint8 in
    ``[0, 255]``, or floating point in ``[0, 1]``) or a torch tensor ``(3, H, W)`` or ``(H, W, 3)``
    in ``[0, 1]``. Raises ``TypeError`` for other types and ``ValueError`` for other shapes or ranges.
    """
    if isinstance(image, Image.Image):
        return np.asarray(image.convert("RGB"), dtype=np.float64) / 255.0
    if type(image).__module__.startswith("torch"):
        tensor = image.detach().cpu().double().numpy()
        if tensor.ndim == 3 and tensor.shape[0] == 3 and tensor.shape[-1] != 3:
            tensor = tensor.transpose(1, 2, 0)
        return _float_array(tensor, "tensor")
    if isinstance(image, np.ndarray):
        if image.dtype == np.uint8:
            _check_hwc(image, "array")
            return image.astype(np.float64) / 255.0
        if np.issubdtype(image.dtype, np.floating):
            return _float_array(image, "array")
        raise ValueError(f"an image array must be uint8 or floating point, got dtype {image.dtype}")
    raise TypeError(f"expected a PIL image, a numpy array or a torch tensor, got {type(image).__name__}")


def _check_hwc(array: np.ndarray, what: str) -> None:
    if array.ndim != 3 or array.shape[-1] != 3:
        raise ValueError(f"an image {what} must have shape (H, W, 3) or (3, H, W), got {array.shape}")


def _float_array(array: np.ndarray, what: str) -> np.ndarray:
    _check_hwc(array, what)
    array = array.astype(np.float64)
    if not np.isfinite(array).all() or array.min() < 0.0 or array.max() > 1.0:
        raise ValueError(f"a floating point image {what} must hold finite values in [0, 1]")
    return array


def components(mask: np.ndarray) -> tuple[np.ndarray, int]:
    """Label the 8-connected components of a boolean mask.

    Returns ``(labels, count)``: ``labels`` holds ``1..count`` on the mask, in raster order of each
    component's first pixel, and 0 elsewhere. Minimum-label propagation with pointer jumping.
    """
    h, w = mask.shape
    none = h * w
    flat_mask = mask.ravel()
    labels = np.where(flat_mask, np.arange(none), none)
    while True:
        padded = np.pad(labels.reshape(h, w), 1, constant_values=none)
        smallest = np.min([padded[dy:dy + h, dx:dx + w] for dy in range(3) for dx in range(3)], axis=0)
        updated = np.where(flat_mask, smallest.ravel(), none)
        updated[flat_mask] = updated[updated[flat_mask]]
        if np.array_equal(updated, labels):
            break
        labels = updated
    roots, dense = np.unique(labels[flat_mask], return_inverse=True)
    out = np.zeros(none, dtype=np.int64)
    out[flat_mask] = dense + 1
    return out.reshape(h, w), len(roots)


def _dilate(mask: np.ndarray) -> np.ndarray:
    h, w = mask.shape
    padded = np.pad(mask, 1)
    return np.any([padded[dy:dy + h, dx:dx + w] for dy in range(3) for dx in range(3)], axis=0)


def _erode(mask: np.ndarray) -> np.ndarray:
    h, w = mask.shape
    padded = np.pad(mask, 1)
    return np.all([padded[dy:dy + h, dx:dx + w] for dy in range(3) for dx in range(3)], axis=0)


def coverage(pixels: np.ndarray, palette: dict[str, tuple[int, int, int]] = COLOURS,
             background: tuple[int, int, int] = BACKGROUND) -> tuple[np.ndarray, np.ndarray]:
    """Per pixel and palette colour, the blend weight ``alpha`` and the angle to the colour.

    ``pixels`` is ``(H, W, 3)`` in ``[0, 1]``. With ``v = background - pixel`` and
    ``d = background - colour`` (0-255 units), ``alpha = <v, d> / |d|^2`` (1 for the flat colour, 0 for
    the background) and the angle (degrees) is between ``v`` and ``d``. Returns two ``(H, W, K)``
    arrays in the palette's order.
    """
    v = np.asarray(background, dtype=np.float64) - pixels * 255.0  # (H, W, 3)
    d = np.asarray(background, dtype=np.float64) - np.asarray(list(palette.values()), dtype=np.float64)
    dots = v @ d.T  # (H, W, K)
    d_norm = np.linalg.norm(d, axis=1)
    cos = dots / (np.linalg.norm(v, axis=-1, keepdims=True) * d_norm + 1e-9)
    return dots / d_norm**2, np.degrees(np.arccos(np.clip(cos, -1.0, 1.0)))


def shape_features(mass: np.ndarray) -> tuple[float, float]:
    """(fill, skew) of a non-negative coverage map holding one object.

    fill = total mass / (largest row sum * largest column sum); skew = the third standardised moment
    of the row sums along y (downwards positive, so a triangle with its apex up is negative).
    """
    rows = mass.sum(axis=1)
    total = rows.sum()
    fill = total / (rows.max() * mass.sum(axis=0).max())
    y = np.arange(len(rows)) + 0.5
    mean = (rows * y).sum() / total
    var = (rows * (y - mean) ** 2).sum() / total
    skew = (rows * (y - mean) ** 3).sum() / total / max(var, 1e-9) ** 1.5
    return float(fill), float(skew)


def classify(fill: float, skew: float) -> tuple[str, float]:
    """The shape for (fill, skew) and a score in ``[0, 1]``.

    A skew below :data:`SKEW_SPLIT` is a triangle (skew is the sturdier feature: blur raises a small
    triangle's fill towards a circle's but leaves its mass low). Otherwise a fill above
    :data:`FILL_SPLIT` is a square, else a circle. The score is the smallest margin to a deciding
    threshold, relative to the ideal shape's margin, clipped to ``[0, 1]``; near 0 the shape is
    ambiguous.
    """
    skew_margin = (skew - SKEW_SPLIT) / -SKEW_SPLIT
    if skew_margin < 0:
        return "triangle", min(1.0, -skew_margin)
    if fill > FILL_SPLIT:
        shape, fill_margin = "square", (fill - FILL_SPLIT) / (SQUARE_FILL - FILL_SPLIT)
    else:
        shape, fill_margin = "circle", (FILL_SPLIT - fill) / (FILL_SPLIT - CIRCLE_FILL)
    return shape, min(1.0, skew_margin, fill_margin)


def detect(image: Any, min_area: float = 30.0, max_angle: float = 20.0,
           palette: dict[str, tuple[int, int, int]] = COLOURS,
           background: tuple[int, int, int] = BACKGROUND) -> list[Detection]:
    """The objects an image of the shapes world holds, in reading order of their boxes.

    Args:
        image: a PIL image, numpy array or torch tensor (see :func:`image_array`).
        min_area (`float`, defaults to 30): components with less coverage (pixels) are specks and
            dropped. The smallest object of the world, a 14 px triangle, covers 98 px. Components at
            most 2 px thick (nothing left after a 3x3 erosion) are dropped as edge slivers.
        max_angle (`float`, defaults to 20): a pixel further than this (degrees) from every palette
            colour's direction, seen from the background, is no colour's foreground.
        palette (`dict`, defaults to the world's ``COLOURS``): colour names to RGB.
        background (`tuple`, defaults to white): the background RGB.
    """
    pixels = image_array(image)
    alpha, angle = coverage(pixels, palette, background)
    best = np.argmin(angle, axis=-1)
    best_alpha = np.take_along_axis(alpha, best[..., None], axis=-1)[..., 0]
    best_angle = np.take_along_axis(angle, best[..., None], axis=-1)[..., 0]
    foreground = (best_alpha >= 0.5) & (best_angle <= max_angle)
    found: list[Detection] = []
    for k, colour in enumerate(palette):
        labels, count = components(foreground & (best == k))
        for label in range(1, count + 1):
            detection = _measure(labels == label, foreground, alpha[..., k], colour)
            if detection.area >= min_area and _erode(labels == label).any():
                found.append(detection)
    return sorted(found, key=lambda det: (det.box[1], det.box[0], det.colour))


def _measure(component: np.ndarray, foreground: np.ndarray, alpha: np.ndarray, colour: str) -> Detection:
    """Box, area and shape of one component; its coverage includes the one-pixel rim around it."""
    ys, xs = np.nonzero(component)
    box = (int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1)
    region = _dilate(component) & ~(foreground & ~component)
    mass = np.where(region, np.clip(alpha, 0.0, 1.0), 0.0)
    shape, score = classify(*shape_features(mass))
    return Detection(colour, shape, box, float(mass.sum()), score)
