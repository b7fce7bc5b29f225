"""Each guidance module's settings as form fields, read from the module's dataclass fields.

A field whose type is a number, a string, a flag or a nested dataclass (``PerpNeg.view``) becomes a
`SettingField`; other fields (lists of negatives, reference images) are filled in by the form itself. Labels
come from the field names, help texts from the ``Args:`` section of the class docstring, so a setting added to
a module shows up in the demo without a change here.
"""

from __future__ import annotations

import dataclasses
import inspect
import math
import re
import types
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from negguide.functional import PERP_NEG_WEIGHT_MODES
from negguide.modules import NegToMe, PerpNeg
from negguide.modules.base import registered
from negguide.modules.negtome import ANCHORS, MODES
from negguide.views import SCHEDULES, View

SCALARS = (bool, int, float, str)
CHOICES: dict[tuple[type, str], tuple[str, ...]] = {
    (PerpNeg, "weight_mode"): PERP_NEG_WEIGHT_MODES,
    (NegToMe, "mode"): MODES,
    (NegToMe, "anchor"): ANCHORS,
    (View, "schedule"): SCHEDULES,
}
"""The accepted values of string settings that take one of a few values (shown as a drop-down)."""
RANGES: dict[tuple[type, str], tuple[float, float, float]] = {
    (View, "azimuth"): (-180.0, 180.0, 1.0),
    (View, "elevation"): (-90.0, 90.0, 1.0),
}
"""``(minimum, maximum, step)`` of number settings shown as a slider."""
ADVANCED = frozenset(
    {
        "perpneg.eps",
        "perpneg.max_rows",
        "perpneg.guidance_rescale",
        "perpneg.view.schedule",
        "perpneg.view.overhead_elevation",
        "negtome.layers",
        "negtome.min_scale",
        "negtome.seed",
        "nag.layers",
        "nag.norm",
    }
)
"""Settings the page leaves at their defaults (numerical safeguards, layer patterns, memory limits): Python and
``negguide generate`` set them."""
WINDOW = "the part of the run in which it acts: 0 is the first step, 1 the end"
HELP = {
    "negative_prompts.guidance_rescale": "0: off; towards 1 it tones down the harsh colours of a high guidance scale",
    "perpneg.negative_scale": "how hard the negatives push (it multiplies their weights); 0 turns them off",
    "perpneg.weight_mode": '"s*w": the negatives grow with the guidance scale, as in the paper; "w": they do not',
    "perpneg.patch_size": "empty: one projection per image, as in the paper; k: one per k x k patch of the image",
    "perpneg.view": "ask for one view of the object (front, side, back); the views' prompts are blended",
    "perpneg.view.azimuth": "degrees around the object: 0 front, 90 side, 180 back",
    "perpneg.view.elevation": "degrees above the horizon, -90 to 90",
    "negtome.mode": '"batch": the images of a prompt push each other apart; "reference": each image pushes away '
    "from the reference image",
    "negtome.alpha": "how hard features that look alike are pushed apart (negative: pulled together)",
    "negtome.threshold": "how alike two features must be to be pushed apart, -1 to 1 (1: never)",
    "negtome.start": f"from: {WINDOW}",
    "negtome.stop": f"until: {WINDOW}; the layout forms in the first fifth",
    "negtome.anchor": 'batch mode: push away from the first image ("first") or from the most alike ("nearest")',
    "nag.scale": "how hard the negative pushes, 1 or more (1: not at all); empty: the model's default, 3",
    "nag.tau": "caps how far any one feature may be pushed, 1 or more",
    "nag.alpha": "how much of the pushed result is kept, 0 to 1; empty: the model's default, 0.5",
    "nag.start": f"from: {WINDOW}",
    "nag.stop": f"until: {WINDOW}",
    "nag.projection": 'empty: as in the paper; "perpendicular": push away only from what the prompt does not share',
}
"""Help texts in the page's words, replacing the docstrings' where the docstring speaks the papers' language."""

_ARG = re.compile(r"(\w+) \(.*?\):\s*(.*)")


@dataclass(frozen=True)
class SettingField:
    """One setting of a guidance module, as a form field.

    Args:
        module (`str`): the module's registry name.
        path (`tuple[str, ...]`): the field, e.g. ``("alpha",)``; ``("view", "azimuth")`` for a field of a
            nested dataclass. For an optional nested dataclass, ``("view",)`` is its on/off switch.
        kind (`type`): ``bool``, ``int``, ``float`` or ``str``; ``bool`` for an on/off switch.
        default: the initial value (``None`` for an empty optional number).
        label (`str`), info (`str`): the field's label and help text.
        choices (`tuple[str, ...]`, *optional*): the accepted values of a string setting.
        bounds (`tuple[float, float, float]`, *optional*): ``(minimum, maximum, step)`` of a slider.
        switch (`bool`): whether this is the on/off switch of an optional nested dataclass.
    """

    module: str
    path: tuple[str, ...]
    kind: type
    default: Any
    label: str = ""
    info: str = ""
    choices: tuple[str, ...] | None = None
    bounds: tuple[float, float, float] | None = None
    switch: bool = False

    @property
    def key(self) -> str:
        """The field's name in the form's values, e.g. ``"perpneg.view.azimuth"``."""
        return ".".join((self.module, *self.path))


def module_fields(name: str, advanced: bool = False) -> list[SettingField]:
    """The form fields of registered module ``name``, in the order of its dataclass fields, with the page's help
    texts (`HELP`); without the `ADVANCED` ones unless ``advanced``."""
    found = [
        dataclasses.replace(field, info=HELP.get(field.key, field.info))
        for field in _fields(registered(name, "module"), name, ())
    ]
    return [field for field in found if advanced or field.key not in ADVANCED]


def _fields(cls: type, module: str, prefix: tuple[str, ...]) -> list[SettingField]:
    hints = typing.get_type_hints(cls)
    docs = field_docs(cls)
    found = []
    for field in dataclasses.fields(cls):
        kind, optional = _unwrap(hints[field.name])
        path = (*prefix, field.name)
        default = _default(field)
        common = {"label": field.name.replace("_", " "), "info": docs.get(field.name, "")}
        if kind in SCALARS:
            found.append(
                SettingField(
                    module,
                    path,
                    kind,
                    default,
                    choices=CHOICES.get((cls, field.name)),
                    bounds=RANGES.get((cls, field.name)),
                    **common,
                )
            )
        elif dataclasses.is_dataclass(kind):
            if optional:
                found.append(SettingField(module, path, bool, default is not None, switch=True, **common))
            found.extend(_fields(kind, module, path))
    return found


def _unwrap(hint: Any) -> tuple[Any, bool]:
    """``(type, optional)`` of a field's type hint: ``int | None`` gives ``(int, True)``."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        args = [arg for arg in typing.get_args(hint) if arg is not type(None)]
        if len(args) == 1:
            return args[0], True
    return hint, False


def _default(field: dataclasses.Field) -> Any:
    if field.default is not dataclasses.MISSING:
        return field.default
    if field.default_factory is not dataclasses.MISSING:
        return field.default_factory()
    return 0.0


def field_docs(cls: type) -> dict[str, str]:
    """Each field's description from the ``Args:`` section of ``cls``'s docstring, on one line."""
    docs: dict[str, str] = {}
    lines = (inspect.getdoc(cls) or "").splitlines()
    if "Args:" not in lines:
        return docs
    current = None
    for line in lines[lines.index("Args:") + 1 :]:
        if line and not line.startswith(" "):
            break
        match = _ARG.fullmatch(line.strip()) if not line.startswith(" " * 5) else None
        if match:
            current = match[1]
            docs[current] = match[2]
        elif current and line.strip():
            docs[current] += " " + line.strip()
    return {name: text.replace("``", "").replace("`", "") for name, text in docs.items()}


def read_settings(fields: Sequence[SettingField], values: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """The settings of each module from the form's ``values`` (keyed by `SettingField.key`; a missing key
    takes the field's default), nested as the modules take them: ``{"perpneg": {"view": {"azimuth": 90.0}}}``.

    Whole floats become ints for int fields; every other value is passed on as it is, for the module to check.
    A module's own settings equal to its defaults are left out, so a recorded configuration names only what was
    changed; a nested dataclass whose switch is on is given whole, one whose switch is off is ``None``.
    """
    settings: dict[str, dict[str, Any]] = {}
    off = {field.key for field in fields if field.switch and not values.get(field.key, field.default)}
    for field in fields:
        if any(field.key.startswith(f"{key}.") for key in off):
            continue  # a setting of a nested dataclass that is switched off
        target = settings.setdefault(field.module, {})
        for part in field.path[:-1]:
            target = target.setdefault(part, {})
        name = field.path[-1]
        if field.switch and field.key not in off:
            target[name] = {}
        elif field.switch and field.default:
            target[name] = None
        elif not field.switch:
            value = _whole(field, values.get(field.key, field.default))
            if len(field.path) > 1 or value != field.default:
                target[name] = value
    return settings


def _whole(field: SettingField, value: Any) -> Any:
    if field.kind is str and field.default is None and value in ("", None):
        return None  # an empty text box for an optional text
    if field.kind is int and isinstance(value, float) and math.isfinite(value) and value.is_integer():
        return int(value)
    return value
