"""Numbers for "did the negative remove the object and keep the rest?".

Two kinds of measurement, all pure functions:

* verdicts over detections (:func:`negguide.shapes.detect`) against the text of a prompt and a
  negative in the shapes world's grammar: the named objects are present, extra objects, the negative's
  object removed, the prompted objects kept; and :func:`rates`, their averages over a benchmark. Given the
  same seed's image without the negative, an object that changed colour or shape in place is told from one
  removed (:func:`removal_outcome`), and only removal counts;
* distances between images, on pixels in ``[0, 1]``: batch diversity, similarity to a reference, the
  change outside a box;
* the same two comparisons on what the images hold (:func:`composition_similarity`,
  :func:`composition_diversity`). On a white background the pixel distance between two images whose
  objects do not overlap is the same wherever the objects are, so pixel measures see little of a layout
  and nothing of which objects appear together; the composition measures compare the objects themselves.

Text is parsed by :func:`parse_phrase` and :func:`parse_prompt`. A phrase names one object by colour,
shape or both, with an optional article: ``"a blue square"``, ``"blue square"``, ``"blue"`` (any blue
object), ``"square"`` (any square). A prompt joins phrases with ``"and"``.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np

from negguide.shapes.detector import Detection, detect, image_array
from negguide.shapes.world import COLOURS, MAX_SIZE, SHAPES

ARTICLES = ("a", "an")


class ObjectSpec(NamedTuple):
    """What a phrase names: a colour, a shape, or both (``None`` matches any).

    A tuple, so ``ObjectSpec("red", "circle") == ("red", "circle")``.
    """

    colour: str | None
    shape: str | None

    def matches(self, detection: Detection) -> bool:
        """Whether the detection has this colour (if named) and this shape (if named)."""
        return self.colour in (None, detection.colour) and self.shape in (None, detection.shape)

    def covers(self, other: ObjectSpec) -> bool:
        """Whether every object ``other`` names is also named by this spec."""
        return self.colour in (None, other.colour) and self.shape in (None, other.shape)


def parse_phrase(text: str) -> ObjectSpec:
    """Parse one phrase: ``[a|an] [colour] [shape]`` with at least a colour or a shape.

    Case and surrounding spaces are ignored. Raises ``ValueError`` naming the text for anything else.
    """
    words = text.lower().split()
    if words and words[0] in ARTICLES:
        words = words[1:]
    colour = words.pop(0) if words and words[0] in COLOURS else None
    shape = words.pop(0) if words and words[0] in SHAPES else None
    if words or (colour is None and shape is None):
        raise ValueError(f"cannot parse {text!r}: expected '[a] [colour] [shape]' with colours "
                         f"{sorted(COLOURS)} and shapes {list(SHAPES)}")
    return ObjectSpec(colour, shape)


def parse_prompt(text: str) -> tuple[ObjectSpec, ...]:
    """Parse a prompt or a negative: phrases joined by ``"and"``.

    ``"a red circle and a blue square"`` -> ``(("red", "circle"), ("blue", "square"))``. Raises
    ``ValueError`` naming the text when a phrase does not parse (an empty text included).
    """
    phrases = " ".join(text.lower().split()).split(" and ")
    try:
        return tuple(parse_phrase(phrase) for phrase in phrases)
    except ValueError as error:
        raise ValueError(f"cannot parse prompt {text!r}: {error}") from None


def _as_specs(text_or_specs: str | Sequence[ObjectSpec]) -> tuple[ObjectSpec, ...]:
    if isinstance(text_or_specs, str):
        return parse_prompt(text_or_specs)
    return tuple(ObjectSpec(*spec) for spec in text_or_specs)


def matching(specs: Sequence[ObjectSpec], detections: Sequence[Detection]) -> dict[int, int]:
    """A maximum one-to-one matching of specs to detections that fit them: ``{spec index: detection
    index}``. Each named object needs its own detection (augmenting paths, Kuhn's algorithm)."""
    owner: dict[int, int] = {}

    def claim(i: int, seen: set[int]) -> bool:
        for j, detection in enumerate(detections):
            if j not in seen and specs[i].matches(detection):
                seen.add(j)
                if j not in owner or claim(owner[j], seen):
                    owner[j] = i
                    return True
        return False

    for i in range(len(specs)):
        claim(i, set())
    return {i: j for j, i in owner.items()}


def has_named_objects(detections: Sequence[Detection], prompt: str | Sequence[ObjectSpec]) -> bool:
    """Prompt adherence: every object the prompt names has its own detection of the right colour and
    shape (a maximum matching covers every phrase)."""
    specs = _as_specs(prompt)
    return len(matching(specs, detections)) == len(specs)


def extra_objects(detections: Sequence[Detection], prompt: str | Sequence[ObjectSpec]) -> list[Detection]:
    """The detections the prompt does not name: those left unmatched by :func:`matching`.

    A second red circle under ``"a red circle"`` is an extra object."""
    matched = set(matching(_as_specs(prompt), detections).values())
    return [det for j, det in enumerate(detections) if j not in matched]


def contains(detections: Sequence[Detection], spec: str | ObjectSpec) -> bool:
    """Whether any detection fits the spec or phrase (e.g. ``"blue"``: any blue object)."""
    spec = parse_phrase(spec) if isinstance(spec, str) else ObjectSpec(*spec)
    return any(spec.matches(det) for det in detections)


LARGEST_AREA = float(MAX_SIZE**2)
"""The area in pixels of the largest object the world draws: a square of side ``MAX_SIZE``."""


def oversized(detections: Sequence[Detection], factor: float = 1.2) -> list[Detection]:
    """The detections larger than ``factor`` x `LARGEST_AREA`: in a generated image, shapes of one colour drawn
    touching, which the detector sees as one object of no clear shape (the world's objects never touch)."""
    return [det for det in detections if det.area > factor * LARGEST_AREA]


def negative_removed(detections: Sequence[Detection], negative: str | Sequence[ObjectSpec]) -> bool:
    """True when no detection fits any phrase of the negative."""
    return not any(contains(detections, spec) for spec in _as_specs(negative))


OUTCOMES = ("absent", "removed", "recoloured", "reshaped", "replaced", "present")
"""What became of a negative's object, from success to failure (:func:`removal_outcome`): not in the image
without the negative, removed, changed in place (colour, shape or both), still there. Only ``"removed"`` (and
``"absent"``: nothing to remove) counts as removal."""
IN_PLACE = 0.5
"""A detection is in an object's place when it covers at least this share of the smaller of the two boxes."""


def box_overlap(a: tuple[float, float, float, float], b: tuple[float, float, float, float]) -> float:
    """The area two boxes ``(x0, y0, x1, y1)`` share over the area of the smaller one, in ``[0, 1]``."""
    width = min(a[2], b[2]) - max(a[0], b[0])
    height = min(a[3], b[3]) - max(a[1], b[1])
    smaller = min((a[2] - a[0]) * (a[3] - a[1]), (b[2] - b[0]) * (b[3] - b[1]))
    if width <= 0 or height <= 0 or smaller <= 0:
        return 0.0
    return width * height / smaller


def removal_outcome(before: Sequence[Detection], after: Sequence[Detection], target: str | ObjectSpec) -> str:
    """What became of the objects fitting ``target`` between an image without the negative (``before``) and one
    with it (``after``), one of `OUTCOMES`:

    * ``"absent"``: ``before`` holds no such object; ``"present"``: ``after`` still holds one;
    * otherwise, for each of ``before``'s objects, the detection of ``after`` most in its place
      (:func:`box_overlap` at least `IN_PLACE`): of the target's shape in another colour, ``"recoloured"``; of
      its colour in another shape, ``"reshaped"``; of neither, ``"replaced"``; none there, ``"removed"``. With
      several objects the outcome furthest from removal is given.

    A target naming only a colour (``"red"``) cannot be reshaped away: a red object of another shape still fits
    it; likewise a shape-only target cannot be recoloured away.
    """
    spec = parse_phrase(target) if isinstance(target, str) else ObjectSpec(*target)
    targets = [det for det in before if spec.matches(det)]
    if not targets:
        return "absent"
    if any(spec.matches(det) for det in after):
        return "present"
    return max((_in_place(obj, after) for obj in targets), key=OUTCOMES.index)


def _in_place(obj: Detection, after: Sequence[Detection]) -> str:
    overlaps = [(box_overlap(obj.box, det.box), det) for det in after]
    overlaps = [(share, det) for share, det in overlaps if share >= IN_PLACE]
    if not overlaps:
        return "removed"
    _, there = max(overlaps, key=lambda pair: pair[0])
    if there.shape == obj.shape:
        return "recoloured"
    return "reshaped" if there.colour == obj.colour else "replaced"


def negative_outcome(before: Sequence[Detection], after: Sequence[Detection],
                     negative: str | Sequence[ObjectSpec]) -> str:
    """:func:`removal_outcome` over every phrase of a negative: the outcome furthest from removal."""
    return max((removal_outcome(before, after, spec) for spec in _as_specs(negative)), key=OUTCOMES.index)


def kept(detections: Sequence[Detection], prompt: str | Sequence[ObjectSpec],
         negative: str | Sequence[ObjectSpec] | None) -> bool:
    """The prompted objects the negative does not target are all present.

    A prompted phrase is targeted when a negative phrase covers it (``"red"`` covers ``"a red
    circle"``; ``"a red square"`` does not). The untargeted phrases must be matched as in
    :func:`has_named_objects`; with nothing untargeted the answer is True.
    """
    targets = _as_specs(negative) if negative else ()
    specs = [spec for spec in _as_specs(prompt) if not any(target.covers(spec) for target in targets)]
    return len(matching(specs, detections)) == len(specs)


@dataclass(frozen=True)
class Verdict:
    """What one image shows against its prompt and negative.

    Args:
        named: every prompted object is present (:func:`has_named_objects`).
        extra: the number of detections the prompt does not name (:func:`extra_objects`).
        negative_removed: no detection fits the negative (:func:`negative_removed`) and, when the image
            without the negative is given, none of its objects was only recoloured or reshaped in place
            (:func:`negative_outcome` is ``"removed"`` or ``"absent"``); ``None`` without a negative.
        kept: the prompted objects the negative does not target are present (:func:`kept`).
        negative_outcome: :func:`negative_outcome` against the image without the negative; ``None`` without a
            negative or without that image.
    """

    named: bool
    extra: int
    negative_removed: bool | None
    kept: bool
    negative_outcome: str | None = None


def judge(detections: Sequence[Detection], prompt: str, negative: str | None = None,
          plain: Sequence[Detection] | None = None) -> Verdict:
    """The :class:`Verdict` of one image's detections; ``plain``: the detections of the same seed's image
    without the negative, to tell a removed object from one recoloured or reshaped in place. An empty negative
    counts as none."""
    specs = parse_prompt(prompt)
    targets = parse_prompt(negative) if negative else ()
    outcome = negative_outcome(plain, detections, targets) if targets and plain is not None else None
    removed = negative_removed(detections, targets) if targets else None
    return Verdict(
        named=has_named_objects(detections, specs),
        extra=len(extra_objects(detections, specs)),
        negative_removed=removed if outcome is None else outcome in ("removed", "absent"),
        kept=kept(detections, specs, targets),
        negative_outcome=outcome,
    )


@dataclass(frozen=True)
class Rates:
    """Averages of :class:`Verdict` over a set of images, each a fraction in ``[0, 1]``.

    Args:
        count: the number of images.
        named_rate: the share of images with every prompted object present.
        extra_rate: the share of images with at least one extra object.
        mean_extra: the mean number of extra objects per image.
        negative_removed_rate: the share of the images that have a negative whose negative's objects
            are all gone (:attr:`Verdict.negative_removed`: not recoloured or reshaped in place either, when
            the samples give the image without the negative); ``None`` when no image has a negative.
        kept_rate: the share of images whose untargeted prompted objects are all present.
        changed_in_place_rate: the share of the images with a negative and an image without it whose
            negative's object was recoloured, reshaped or replaced in place instead of removed; ``None`` when
            no sample gives both.
    """

    count: int
    named_rate: float
    extra_rate: float
    mean_extra: float
    negative_removed_rate: float | None
    kept_rate: float
    changed_in_place_rate: float | None = None


def rates(samples: Iterable[tuple[Any, ...]], detector: Callable[[Any], Sequence[Detection]] = detect) -> Rates:
    """Run ``detector`` on each ``(image, prompt, negative)`` or ``(image, prompt, negative, plain_image)`` (the
    same seed without the negative, see :func:`judge`) and average the verdicts (:class:`Rates`).

    Raises ``ValueError`` for an empty set.
    """
    verdicts = [_sample_verdict(sample, detector) for sample in samples]
    if not verdicts:
        raise ValueError("rates needs at least one (image, prompt, negative) sample")
    n = len(verdicts)
    removed = [v.negative_removed for v in verdicts if v.negative_removed is not None]
    outcomes = [v.negative_outcome for v in verdicts if v.negative_outcome is not None]
    in_place = ("recoloured", "reshaped", "replaced")
    return Rates(
        count=n,
        named_rate=sum(v.named for v in verdicts) / n,
        extra_rate=sum(v.extra > 0 for v in verdicts) / n,
        mean_extra=sum(v.extra for v in verdicts) / n,
        negative_removed_rate=sum(removed) / len(removed) if removed else None,
        kept_rate=sum(v.kept for v in verdicts) / n,
        changed_in_place_rate=sum(o in in_place for o in outcomes) / len(outcomes) if outcomes else None,
    )


def _sample_verdict(sample: tuple[Any, ...], detector: Callable[[Any], Sequence[Detection]]) -> Verdict:
    if len(sample) not in (3, 4):
        raise ValueError(f"a sample is (image, prompt, negative[, plain_image]), got {len(sample)} items")
    image, prompt, negative, *plain = sample
    before = detector(plain[0]) if plain and plain[0] is not None else None
    return judge(detector(image), prompt, negative, plain=before)


def presence_rate(detections_per_image: Iterable[Sequence[Detection]], spec: str | ObjectSpec) -> float:
    """The share of images holding an object that fits ``spec`` (e.g. a companion's rate)."""
    found = [contains(detections, spec) for detections in detections_per_image]
    if not found:
        raise ValueError("presence_rate needs at least one image")
    return sum(found) / len(found)


def _pair(a: Any, b: Any) -> tuple[np.ndarray, np.ndarray]:
    x, y = image_array(a), image_array(b)
    if x.shape != y.shape:
        raise ValueError(f"images differ in size: {x.shape} and {y.shape}")
    return x, y


def rms_distance(a: Any, b: Any) -> float:
    """Root mean square difference over every pixel and channel, on ``[0, 1]`` pixels: in ``[0, 1]``,
    0 for identical images, 1 for black against white."""
    x, y = _pair(a, b)
    return float(np.sqrt(np.mean((x - y) ** 2)))


def batch_diversity(images: Sequence[Any]) -> float:
    """Mean :func:`rms_distance` over all unordered pairs of a batch (at least two images)."""
    if len(images) < 2:
        raise ValueError(f"batch_diversity needs at least two images, got {len(images)}")
    return float(np.mean([rms_distance(a, b) for a, b in itertools.combinations(images, 2)]))


def similarity(image: Any, reference: Any) -> float:
    """``1 - rms_distance(image, reference)``: in ``[0, 1]``, 1 for identical images."""
    return 1.0 - rms_distance(image, reference)


def object_kinds(detections: Iterable[Detection]) -> frozenset[tuple[str, str]]:
    """The distinct ``(colour, shape)`` kinds among the detections."""
    return frozenset((det.colour, det.shape) for det in detections)


def composition_similarity(a: Sequence[Detection], b: Sequence[Detection]) -> float:
    """Jaccard similarity of the object kinds two images hold (:func:`object_kinds`): the kinds both hold
    over the kinds either holds, in ``[0, 1]``; 1 when both hold the same kinds, including none."""
    x, y = object_kinds(a), object_kinds(b)
    return len(x & y) / len(x | y) if x | y else 1.0


def composition_diversity(detections_per_image: Sequence[Sequence[Detection]]) -> float:
    """Mean ``1 - composition_similarity`` over all unordered pairs of a batch (at least two images):
    0 when every image holds the same kinds of objects."""
    if len(detections_per_image) < 2:
        raise ValueError(f"composition_diversity needs at least two images, got {len(detections_per_image)}")
    pairs = itertools.combinations(detections_per_image, 2)
    return float(np.mean([1.0 - composition_similarity(a, b) for a, b in pairs]))


def change_outside_box(a: Any, b: Any, box: tuple[float, float, float, float], margin: float = 0.0) -> float:
    """Mean absolute difference of two images over the pixels outside a box, on ``[0, 1]`` pixels.

    ``box`` is ``(x0, y0, x1, y1)`` in pixel edges (a :class:`Detection`'s or ``ShapeObject``'s box),
    grown by ``margin`` pixels on every side; a pixel touching the grown box counts as inside. The mean
    runs over the remaining pixels and the three channels. Raises ``ValueError`` when no pixel is left.
    """
    x, y = _pair(a, b)
    h, w = x.shape[:2]
    x0, y0, x1, y1 = box
    cols = np.arange(w)
    rows = np.arange(h)
    inside_x = (cols + 1 > x0 - margin) & (cols < x1 + margin)
    inside_y = (rows + 1 > y0 - margin) & (rows < y1 + margin)
    outside = ~(inside_y[:, None] & inside_x[None, :])
    if not outside.any():
        raise ValueError(f"no pixel lies outside box {box} grown by {margin}")
    return float(np.abs(x - y)[outside].mean())
