"""The shapes world: a small synthetic text-to-image world with a known ground truth.

Images are 64x64 RGB on a white background holding one to three flat, anti-aliased shapes whose boxes
keep ``GAP`` pixels apart. Captions follow one grammar ("a red circle and a blue square"). The world is
built so that negative prompts have something to do:

* every object has a frequent *companion* that is often left out of the caption (as a street is left
  out of "a car"), so a one-object prompt shows that companion in a good share of its images;
* many multi-object images are under-described (only some objects are named);
* the phrase forms a user types as a negative ("blue square", "a blue square", "blue", "square")
  are captions of images holding a matching object, alone or among others, as "a car" captions
  photographs of cars in streets: a negative's own prediction then keeps the rest of the scene;
* some companions share a colour or a shape with their object ("a red circle and a red square"),
  the overlap cases that separate Perp-Neg from the standard negative prompt; half of the extra
  objects are drawn among the kinds that share the first object's colour or shape, so that captions
  name such pairs often.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from PIL import Image, ImageDraw

IMAGE_SIZE = 64
BACKGROUND = (255, 255, 255)
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30),
    "green": (30, 170, 30),
    "blue": (30, 60, 220),
    "yellow": (240, 200, 20),
}
SHAPES: tuple[str, ...] = ("circle", "square", "triangle")
MIN_SIZE, MAX_SIZE = 14, 30
#: The least distance (pixels) between two objects' boxes: most of a latent cell of an f=8 autoencoder, so that
#: objects drawn side by side (squares fill their boxes) stay apart in the latent grid too.
GAP = 6

#: Each object's frequent, often unmentioned companion. Some share a colour, some a shape.
COMPANIONS: dict[tuple[str, str], tuple[str, str]] = {
    ("red", "circle"): ("red", "square"),
    ("green", "circle"): ("blue", "circle"),
    ("blue", "circle"): ("yellow", "triangle"),
    ("yellow", "circle"): ("green", "square"),
    ("red", "square"): ("blue", "triangle"),
    ("green", "square"): ("green", "triangle"),
    ("blue", "square"): ("yellow", "square"),
    ("yellow", "square"): ("red", "circle"),
    ("red", "triangle"): ("green", "circle"),
    ("green", "triangle"): ("yellow", "circle"),
    ("blue", "triangle"): ("blue", "square"),
    ("yellow", "triangle"): ("red", "triangle"),
}

#: The caption-sampling probabilities of :func:`sample_scene`.
P_COMPANION = 0.5  # the primary object brings its companion
P_EXTRA = 0.4  # one more random object
P_RELATED_EXTRA = 0.5  # the extra object shares the primary's colour or shape
P_NAME_COMPANION = 0.2  # the caption names the companion
P_NAME_EXTRA = 0.6  # the caption names the extra object
P_PHRASE_FORM = 0.12  # the image is captioned "blue square", "blue" or "square" after one of its objects


@dataclass(frozen=True)
class ShapeObject:
    """One shape: its colour and kind, centre (pixels) and size (diameter / side / base, pixels)."""

    colour: str
    shape: str
    cx: float
    cy: float
    size: float

    @property
    def name(self) -> str:
        return f"{self.colour} {self.shape}"

    @property
    def box(self) -> tuple[float, float, float, float]:
        """(x0, y0, x1, y1) in pixels."""
        h = self.size / 2
        return (self.cx - h, self.cy - h, self.cx + h, self.cy + h)


@dataclass(frozen=True)
class Scene:
    """A rendered scene's ground truth: its objects and its caption."""

    objects: tuple[ShapeObject, ...]
    caption: str


def phrase(colour: str, shape: str) -> str:
    """The caption of one object: ``"a red circle"``."""
    return f"a {colour} {shape}"


def caption_of(objects: list[tuple[str, str]]) -> str:
    """The grammar of the world: ``"a red circle and a blue square"``."""
    return " and ".join(phrase(c, s) for c, s in objects)


def _polygon(obj: ShapeObject, scale: float) -> list[tuple[float, float]]:
    x0, y0, x1, y1 = (v * scale for v in obj.box)
    return [((x0 + x1) / 2, y0), (x1, y1), (x0, y1)]


def render(objects: list[ShapeObject] | tuple[ShapeObject, ...], size: int = IMAGE_SIZE,
           background: tuple[int, int, int] = BACKGROUND, supersample: int = 4) -> Image.Image:
    """Render objects as flat shapes, anti-aliased by drawing ``supersample`` times larger."""
    big = size * supersample
    canvas = Image.new("RGB", (big, big), background)
    draw = ImageDraw.Draw(canvas)
    for obj in objects:
        if obj.colour not in COLOURS or obj.shape not in SHAPES:
            raise ValueError(f"unknown object {obj.name!r}: colours are {sorted(COLOURS)}, shapes {SHAPES}")
        fill = COLOURS[obj.colour]
        box = [v * supersample for v in obj.box]
        if obj.shape == "circle":
            draw.ellipse(box, fill=fill)
        elif obj.shape == "square":
            draw.rectangle(box, fill=fill)
        else:
            draw.polygon(_polygon(obj, supersample), fill=fill)
    return canvas.resize((size, size), Image.Resampling.BOX)


def _place(rng: random.Random, kinds: list[tuple[str, str]], size: int) -> list[ShapeObject] | None:
    placed: list[ShapeObject] = []
    for colour, shape in kinds:
        for _ in range(100):
            s = rng.uniform(MIN_SIZE, MAX_SIZE)
            cx = rng.uniform(s / 2, size - s / 2)
            cy = rng.uniform(s / 2, size - s / 2)
            if all(abs(cx - o.cx) > (s + o.size) / 2 + GAP or abs(cy - o.cy) > (s + o.size) / 2 + GAP
                   for o in placed):
                placed.append(ShapeObject(colour, shape, cx, cy, s))
                break
        else:
            return None
    return placed


def _random_kind(rng: random.Random) -> tuple[str, str]:
    return rng.choice(sorted(COLOURS)), rng.choice(SHAPES)


def _related_kind(rng: random.Random, kind: tuple[str, str]) -> tuple[str, str]:
    """Another kind with ``kind``'s colour or its shape."""
    colour, shape = kind
    return rng.choice([(colour, s) for s in SHAPES if s != shape] +
                      [(c, shape) for c in sorted(COLOURS) if c != colour])


def sample_scene(rng: random.Random, size: int = IMAGE_SIZE) -> Scene:
    """Draw one scene and its caption from the world's distribution (see the module docstring)."""
    while True:
        primary = _random_kind(rng)
        kinds = [primary]
        named = [primary]
        if rng.random() < P_COMPANION:
            kinds.append(COMPANIONS[primary])
            if rng.random() < P_NAME_COMPANION:
                named.append(COMPANIONS[primary])
        if rng.random() < P_EXTRA:
            extra = _related_kind(rng, primary) if rng.random() < P_RELATED_EXTRA else _random_kind(rng)
            if extra not in kinds:
                kinds.append(extra)
                if rng.random() < P_NAME_EXTRA:
                    named.append(extra)
        objects = _place(rng, kinds, size)
        if objects is not None:
            break
    if rng.random() < P_PHRASE_FORM:
        colour, shape = rng.choice(kinds)
        caption = rng.choice([f"{colour} {shape}", colour, shape])
    else:
        rng.shuffle(named)
        caption = caption_of(named)
    rng.shuffle(objects)
    return Scene(tuple(objects), caption)


def scenes(seed: int, count: int, size: int = IMAGE_SIZE):
    """A deterministic stream of ``count`` scenes for ``seed``."""
    if count < 0:
        raise ValueError(f"count must be >= 0, got {count}")
    rng = random.Random(seed)
    for _ in range(count):
        yield sample_scene(rng, size)


def vocabulary() -> list[str]:
    """Every word a caption of this world can hold."""
    return ["a", "and", *sorted(COLOURS), *SHAPES]

