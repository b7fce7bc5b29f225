"""One comparison of the demo: the plain prompt, the standard negative and the chosen methods on the same seeds.

Each column is planned as a one-prompt run of ``negguide generate`` (the same `Job` and `Batch`, the same
pipeline call, the same PNG metadata), so an image downloaded from the demo regenerates exactly with
``negguide generate --from-image``.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import PIL.Image

from negguide.demo.model import DemoModel
from negguide.generate import Batch, Defaults, Item, Method, ModelInfo, build_guidance, expand, save_image
from negguide.generate.names import IMAGES
from negguide.images import image_to_json
from negguide.loading import DEFAULT_GUIDANCE_SCALE
from negguide.modules import Combiner, Negative, NegativePrompts, NegToMe, Patcher
from negguide.modules.base import registered
from negguide.modules.negatives import as_negatives

SOURCE = "demo"
PLAIN = "plain"
STANDARD = NegativePrompts.name
TITLES = {PLAIN: "plain prompt", STANDARD: "standard negative", "perpneg": "Perp-Neg", "negtome": "NegToMe"}
"""Column titles; a method of several modules is titled by its parts, e.g. ``"Perp-Neg + NegToMe"``."""
MODULES = (STANDARD, "perpneg", "negtome")
"""The registered modules the demo offers, each with its settings panel."""
REFERENCE, MASK = "reference", "mask"
"""The settings that take the reference image and its mask, in the modules that have them."""

MAX_SEED = 2**32 - 1
MAX_STEPS = 100
MAX_SCALE = 30.0
MAX_IMAGES = 4
MIN_SIDE, MAX_SIDE, SIDE_STEP = 64, 1024, 8


def title(method: str) -> str:
    """The column title of a method given as ``NAME[+NAME...]``."""
    return " + ".join(TITLES.get(name, name) for name in method.split("+"))


def method_choices() -> list[str]:
    """The methods to compare with the standard negative: every other combiner, every patcher (on the standard
    negative), and every combiner with every patcher."""
    combiners = [name for name in MODULES if name != STANDARD and issubclass(registered(name, "method"), Combiner)]
    patchers = [name for name in MODULES if issubclass(registered(name, "method"), Patcher)]
    return combiners + patchers + [f"{combiner}+{patcher}" for combiner in combiners for patcher in patchers]


@dataclass(frozen=True)
class Comparison:
    """What to compare, checked. Labels in errors are the page's.

    Args:
        prompt (`str`): the prompt of every column.
        negatives (`Sequence[Negative | str]`): the negatives, each with its weight and window, given to every
            method with a ``negatives`` setting (the standard negative prompts when a method has no combiner).
        methods (`tuple[str, ...]`): methods as ``NAME[+NAME...]`` of `method_choices`, one column each after
            the plain prompt and the standard negative.
        settings (`Mapping[str, Mapping[str, Any]]`): module name -> settings (see `demo.settings.read_settings`).
        reference (`PIL.Image.Image`, *optional*): the reference image of modules with a ``reference`` setting
            (NegToMe), resized to the image size; ``mask`` (*optional*): its mask, white where it may be matched.
        seed (`int`): the seed of the first image of every column; image ``i`` uses ``seed + i``.
        images (`int`): images per column.
        steps (`int`), guidance_scale (`float`), width (`int`), height (`int`): the pipeline call's settings.
    """

    prompt: str
    negatives: tuple[Negative, ...] = ()
    methods: tuple[str, ...] = ("perpneg",)
    settings: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    reference: PIL.Image.Image | None = None
    mask: PIL.Image.Image | None = None
    seed: int = 0
    images: int = 1
    steps: int = 20
    guidance_scale: float = DEFAULT_GUIDANCE_SCALE
    width: int = 64
    height: int = 64

    def __post_init__(self) -> None:
        if not isinstance(self.prompt, str) or not self.prompt.strip():
            raise ValueError("`Prompt` is empty: describe the image to make, e.g. 'a red circle'.")
        object.__setattr__(self, "negatives", as_negatives(self.negatives, type(self).__name__))
        object.__setattr__(self, "methods", tuple(self.methods))
        unknown = [method for method in self.methods if method not in method_choices()]
        if unknown:
            raise ValueError(f"`Methods`: unknown {', '.join(map(repr, unknown))}; choose from {method_choices()}.")
        if self.mask is not None and self.reference is None:
            raise ValueError("`Mask` needs a `Reference image`: the mask says which of its parts may be matched.")
        if self.mask is not None and self.mask.size != self.reference.size:
            raise ValueError(
                f"`Mask` is {self.mask.size[0]}x{self.mask.size[1]} but the `Reference image` is "
                f"{self.reference.size[0]}x{self.reference.size[1]}: draw the mask at the reference's size."
            )
        object.__setattr__(self, "seed", whole(self.seed, "Seed", 0, MAX_SEED))
        object.__setattr__(self, "images", whole(self.images, "Images per method", 1, MAX_IMAGES))
        object.__setattr__(self, "steps", whole(self.steps, "Steps", 1, MAX_STEPS))
        object.__setattr__(self, "guidance_scale", bounded(self.guidance_scale, "Guidance scale", 0.0, MAX_SCALE))
        for name in ("width", "height"):
            side = whole(getattr(self, name), name.capitalize(), MIN_SIDE, MAX_SIDE)
            if side % SIDE_STEP:
                raise ValueError(f"`{name.capitalize()}` must be a multiple of {SIDE_STEP}, got {side}.")
            object.__setattr__(self, name, side)

    def columns(self, model: ModelInfo) -> list[tuple[str, Batch]]:
        """Every column's title and pipeline call, checked against the modules before anything is generated.

        Raises:
            ValueError: a setting a module rejects, named with the column.
        """
        self._check_settings()
        self._check_negtome()
        negatives = [_negative_dict(negative) for negative in self.negatives]
        plain = Item(0, SOURCE, self.prompt)
        compared = Item(1, SOURCE, self.prompt, negative_prompt=self._negative_prompt(), negatives=negatives or None)
        groups = []
        for item, methods in ((plain, [PLAIN]), (compared, [STANDARD, *self.methods])):
            built = [self._method(method) for method in methods]
            found, problems = expand([item], built, self._defaults(), model)
            if problems:
                raise ValueError(problems[0].message)
            groups.extend(found)
        return [(title(group[0].method), Batch((tuple(group),))) for group in groups]

    def _check_settings(self) -> None:
        """Build every module in use with its settings once, so that an error names its settings panel."""
        used = dict.fromkeys(name for method in (STANDARD, *self.methods) for name in method.split("+"))
        for name in used:
            build_guidance(
                [{"name": name, **self.settings.get(name, {}), **self._images(name)}], "", f"{title(name)} settings"
            )

    def _check_negtome(self) -> None:
        """NegToMe's batch mode pushes each image away from the first image of its prompt: with one image per
        method it would change nothing."""
        chosen = any(NegToMe.name in method.split("+") for method in self.methods)
        mode = self.settings.get(NegToMe.name, {}).get("mode", NegToMe.mode)
        if chosen and mode == "batch" and self.images < 2:
            raise ValueError(
                "`Images per method`: NegToMe in batch mode pushes the images of a prompt apart, so it needs 2 or "
                "more images; or upload a reference image for it to steer away from (mode 'reference')."
            )

    def _method(self, method: str) -> Method:
        names = [STANDARD] if method == PLAIN else method.split("+")
        if not any(issubclass(registered(name, "method"), Combiner) for name in names):
            names.insert(0, STANDARD)
        return Method(
            method, tuple({"name": name, **self.settings.get(name, {}), **self._images(name)} for name in names)
        )

    def _images(self, name: str) -> dict[str, Any]:
        """The reference image settings of module ``name``, as lossless PNG data URIs."""
        if self.reference is None or not takes_reference(name):
            return {}
        images = {REFERENCE: [image_to_json(self._resized(self.reference, PIL.Image.Resampling.LANCZOS))]}
        if self.mask is not None:
            images[MASK] = [image_to_json(self._resized(self.mask, PIL.Image.Resampling.NEAREST))]
        return images

    def _resized(self, image: PIL.Image.Image, resample: PIL.Image.Resampling) -> PIL.Image.Image:
        return image if image.size == (self.width, self.height) else image.resize((self.width, self.height), resample)

    def _negative_prompt(self) -> str:
        """The call's negative prompt, the ``Negative prompt:`` line of the images' parameters: the negative when
        there is one acting over the whole run (the call's negative prompt then changes nothing), else empty."""
        if len(self.negatives) == 1 and (self.negatives[0].start, self.negatives[0].stop) == (0.0, 1.0):
            text = self.negatives[0].text
            return text if isinstance(text, str) else ""
        return ""

    def _defaults(self) -> Defaults:
        return Defaults(
            seeds=tuple(range(self.seed, self.seed + self.images)),
            steps=self.steps,
            guidance_scale=self.guidance_scale,
            width=self.width,
            height=self.height,
        )


@dataclass(frozen=True)
class Column:
    """The images of one method: its title, its method label (as in the file names) and one file per seed."""

    title: str
    method: str
    files: tuple[Path, ...]
    seeds: tuple[int, ...]


def compare(
    model: DemoModel,
    comparison: Comparison,
    out: Path,
    on_column: Callable[[int, int, str], object] | None = None,
) -> Iterator[Column]:
    """Generate ``comparison`` column by column into ``out`` (``out/images/*.png``, with the batch command's
    metadata), yielding each column when it is written. Every column is checked before the first is made.

    ``on_column(index, count, title)`` is called before each column is made (for a progress bar).
    """
    planned = comparison.columns(model.info)
    (out / IMAGES).mkdir(parents=True, exist_ok=True)
    for index, (name, batch) in enumerate(planned):
        if on_column is not None:
            on_column(index, len(planned), name)
        images = model.generate(batch)
        files = tuple(save_image(out, image, batch, position) for position, image in enumerate(images))
        yield Column(name, batch.jobs[0].method, files, tuple(job.seed for job in batch.jobs))


def whole(value: object, label: str, low: int, high: int) -> int:
    """``value`` as an int in ``[low, high]``; a whole float is accepted (number fields give floats)."""
    number = bounded(value, label, low, high)
    if not number.is_integer():
        raise ValueError(f"`{label}` must be a whole number, got {value}.")
    return int(number)


def bounded(value: object, label: str, low: float, high: float) -> float:
    """``value`` as a finite float in ``[low, high]``; TypeError or ValueError naming ``label`` otherwise."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"`{label}` must be a number, got {value!r}.")
    number = float(value)
    if not math.isfinite(number):
        raise ValueError(f"`{label}` must be a finite number, got {number}.")
    if not low <= number <= high:
        raise ValueError(f"`{label}` must lie between {low} and {high}, got {value}.")
    return number


def _negative_dict(negative: Negative) -> dict[str, Any]:
    text = negative.text if isinstance(negative.text, str) else list(negative.text)
    return {"text": text, "weight": negative.weight, "start": negative.start, "stop": negative.stop}


def takes_reference(name: str) -> bool:
    """Whether registered module ``name`` has a ``reference`` image setting."""
    return REFERENCE in {item.name for item in dataclasses.fields(registered(name, "method"))}
