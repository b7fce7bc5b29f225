"""One comparison of the demo: the plain prompt, the standard negative and the chosen methods on the same seeds.

Each column is planned as a one-prompt run of ``negguide generate`` (the same `Job` and `Batch`, the same
pipeline call, the same PNG metadata), so an image downloaded from the demo regenerates exactly with
``negguide generate --from-image``.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import PIL.Image

from negguide.demo.model import DemoModel
from negguide.generate import Batch, Defaults, Item, Job, Method, ModelInfo, build_guidance, expand, save_image
from negguide.generate.names import IMAGES
from negguide.images import image_to_json
from negguide.loading import DEFAULT_GUIDANCE_SCALE
from negguide.modules import Combiner, Negative, NegativePrompts, NegToMe
from negguide.modules.base import registered
from negguide.modules.negatives import as_negatives

SOURCE = "demo"
PLAIN = "plain"
STANDARD = NegativePrompts.name
TITLES = {
    PLAIN: "plain prompt",
    STANDARD: "standard negative",
    "perpneg": "Perp-Neg",
    "negtome": "NegToMe",
    "nag": "NAG",
}
"""Row titles; a method of several modules is titled by its parts, e.g. ``"Perp-Neg + NegToMe"``."""
MODULES = (STANDARD, "perpneg", "negtome", "nag")
"""The registered modules the demo offers, each with its settings panel."""
METHODS = ("perpneg", "negtome", "nag", "perpneg+negtome")
"""The methods compared with the standard negative, as ``NAME[+NAME...]``."""
ONE_EVALUATION = ("nag",)
"""Modules that take the negative inside the network, from the call's negative prompt: on a guidance-distilled
model their method runs without true CFG, one network evaluation per step; on a model with classifier-free
guidance the negative prompt is also the unconditional text, so there they add to the standard negative. Their
row is the standard negative's call with the module in place of the standard negative prompts."""
MAX_TRUE_CFG = 20.0
SETTINGS_CHECK_TEXT = "negative"
"""A negative prompt for building each module once to check its settings (some take no settings without one)."""
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
    """The methods to compare with the standard negative (`METHODS`)."""
    return list(METHODS)


def one_evaluation(method: str) -> bool:
    """Whether ``method`` gives its negatives to a module that acts inside the network only (`ONE_EVALUATION`)."""
    return any(name in ONE_EVALUATION for name in method.split("+"))


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
        true_cfg_scale (`float`): on a guidance-distilled model, the true classifier-free guidance scale of the
            methods whose negatives need a second evaluation (all but NAG); must be above 1 there.
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
    true_cfg_scale: float = 1.0

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
        object.__setattr__(self, "true_cfg_scale", bounded(self.true_cfg_scale, "True CFG scale", 1.0, MAX_TRUE_CFG))
        for name in ("width", "height"):
            side = whole(getattr(self, name), name.capitalize(), MIN_SIDE, MAX_SIDE)
            if side % SIDE_STEP:
                raise ValueError(f"`{name.capitalize()}` must be a multiple of {SIDE_STEP}, got {side}.")
            object.__setattr__(self, name, side)

    def columns(self, model: ModelInfo, distilled: bool = False) -> list[Row]:
        """Every row's title, pipeline call and true CFG scale, checked against the modules before anything is
        generated. ``distilled``: the model is guidance-distilled, so the negatives of every method but NAG need
        a true CFG scale above 1.

        Raises:
            ValueError: a setting a module rejects, named with its settings panel.
        """
        self._check_settings()
        self._check_negtome()
        two_evaluations = [method for method in (STANDARD, *self.methods) if not one_evaluation(method)]
        if distilled and self.true_cfg_scale <= 1 and self.negatives and two_evaluations:
            raise ValueError(
                f"`True CFG scale` is {self.true_cfg_scale:g}: on a guidance-distilled model the negatives of "
                f"{', '.join(map(title, two_evaluations))} act through true classifier-free guidance, a second "
                "evaluation per step, which needs a scale above 1 (e.g. 4). NAG needs none."
            )
        negatives = [_negative_dict(negative) for negative in self.negatives]
        plain = Item(0, SOURCE, self.prompt)
        compared = Item(1, SOURCE, self.prompt, negative_prompt=self._negative_prompt(), negatives=negatives or None)
        planned = []
        for method in (PLAIN, STANDARD, *self.methods):
            cfg = self.true_cfg_scale if distilled and method in two_evaluations else 1.0
            if one_evaluation(method):
                standard = planned[1].batch.groups[0]
                modules = self._method(method).modules
                group = tuple(dataclasses.replace(job, method=method, guidance=modules) for job in standard)
                planned.append(Row(title(method), Batch((_with_true_cfg(group, cfg),))))
                continue
            found, problems = expand(
                [plain if method == PLAIN else compared], [self._method(method)], self._defaults(), model
            )
            if problems:
                raise ValueError(problems[0].message)
            planned.extend(Row(title(group[0].method), Batch((_with_true_cfg(group, cfg),))) for group in found)
        return planned

    def _check_settings(self) -> None:
        """Build every module in use with its settings once, so that an error names its settings panel."""
        used = dict.fromkeys(name for method in (STANDARD, *self.methods) for name in method.split("+"))
        whole_run = len(self.negatives) == 1 and self.negatives[0].weight == 1 and bool(self._negative_prompt())
        if any(name in ONE_EVALUATION for name in used) and not whole_run:
            raise ValueError(
                "`Negatives`: NAG takes one negative of weight 1 acting over the whole run (0 to 1), got "
                f"{len(self.negatives)}; its own window is in the NAG settings panel (start, stop)."
            )
        for name in used:
            spec = {"name": name, **self.settings.get(name, {}), **self._images(name)}
            build_guidance([spec], SETTINGS_CHECK_TEXT, f"{title(name)} settings")

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
        if not one_evaluation(method) and not any(issubclass(registered(name, "method"), Combiner) for name in names):
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
class Row:
    """One planned row: its title and its pipeline call."""

    title: str
    batch: Batch

    @property
    def true_cfg_scale(self) -> float:
        """The call's true CFG scale (1: none)."""
        return self.batch.jobs[0].true_cfg_scale or 1.0


def _with_true_cfg(group: Sequence[Job], scale: float) -> tuple[Job, ...]:
    """``group``'s jobs with true CFG at ``scale`` (recorded in their images), or none at 1."""
    return tuple(dataclasses.replace(job, true_cfg_scale=scale if scale > 1 else None) for job in group)


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
    planned = comparison.columns(model.info, model.distilled)
    (out / IMAGES).mkdir(parents=True, exist_ok=True)
    for index, row in enumerate(planned):
        if on_column is not None:
            on_column(index, len(planned), row.title)
        images = model.generate(row.batch)
        files = tuple(save_image(out, image, row.batch, position) for position, image in enumerate(images))
        yield Column(row.title, row.batch.jobs[0].method, files, tuple(job.seed for job in row.batch.jobs))


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
