"""The page's values, as its controls give them, read into a checked `Comparison`.

Values are keyed by control name (`FORM_DEFAULTS`) and, for module settings, by `SettingField.key`. Every
problem raises a ValueError whose message names the control, for the page to show.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import PIL.Image

from negguide.demo.comparison import MAX_SEED, Comparison
from negguide.demo.settings import SettingField, read_settings
from negguide.generate import ModelInfo
from negguide.modules import Negative

MAX_UPLOAD_PIXELS = 4096 * 4096
NEGATIVE_COLUMNS = ("negative", "weight", "start", "stop")
FORM_DEFAULTS: dict[str, Any] = {
    "prompt": "a red square",
    "negatives": [["blue triangle", 1.0, 0.0, 1.0]],
    "methods": ["perpneg", "nag"],
    "reference": None,
    "mask": None,
    "seed": 0,
    "random_seed": False,
    "images": 1,
    "steps": 20,
    "true_cfg_scale": 4.0,
}
"""The form's controls but the model, the image size, the guidance scale and the module settings, with their
initial values: a case the standard negative handles on the embedded model (a red square's companion, a blue
triangle, is in the plain image of this seed and gone with each negative)."""
NUMBERS = ("images", "steps", "guidance_scale", "width", "height", "true_cfg_scale")


def form_defaults(model: ModelInfo, fields: Sequence[SettingField]) -> dict[str, Any]:
    """Every control's initial value: `FORM_DEFAULTS`, the model's native size and guidance scale, and each
    setting's default."""
    return {
        **FORM_DEFAULTS,
        "guidance_scale": model.guidance_scale,
        "width": model.width,
        "height": model.height,
        **{f.key: f.default for f in fields},
    }


def read_form(values: Mapping[str, Any], fields: Sequence[SettingField]) -> Comparison:
    """The `Comparison` the page asks for (``values`` as `form_defaults` lists them; a missing one takes the
    `Comparison` default)."""
    numbers = {name: values[name] for name in NUMBERS if name in values}
    seed = secrets.randbelow(MAX_SEED + 1) if values.get("random_seed") else values.get("seed", 0)
    return Comparison(
        prompt=values.get("prompt", ""),
        negatives=read_negatives(values.get("negatives")),
        methods=tuple(values.get("methods") or ()),
        settings=read_settings(fields, values),
        reference=read_image(values.get("reference"), "Reference image"),
        mask=read_mask(values.get("mask")),
        seed=seed,
        **numbers,
    )


def read_negatives(rows: Sequence[Sequence[Any]] | None) -> tuple[Negative, ...]:
    """The rows of the negatives table (negative, weight, start, stop); rows without text are left out and an
    empty number takes `Negative`'s default."""
    negatives = []
    for number, row in enumerate(rows or (), start=1):
        cells = [*row, *[None] * len(NEGATIVE_COLUMNS)][: len(NEGATIVE_COLUMNS)]
        text = cells[0]
        if text is None or (isinstance(text, str) and not text.strip()):
            continue
        try:
            settings = {name: _number(cell, name) for name, cell in zip(NEGATIVE_COLUMNS[1:], cells[1:])}
            negatives.append(Negative(str(text).strip(), **{k: v for k, v in settings.items() if v is not None}))
        except (TypeError, ValueError) as error:
            raise ValueError(f"`Negatives`, row {number}: {error}") from None
    return tuple(negatives)


def _number(cell: Any, name: str) -> float | None:
    if cell is None or (isinstance(cell, str) and not cell.strip()):
        return None
    if isinstance(cell, str):
        try:
            return float(cell)
        except ValueError:
            raise ValueError(f"`{name}` must be a number, got {cell!r}.") from None
    return cell


def read_image(path: str | Path | None, label: str) -> PIL.Image.Image | None:
    """The uploaded image at ``path`` (``None`` when nothing was uploaded), at most `MAX_UPLOAD_PIXELS`. Errors
    name the file by the name it was uploaded with (the last part of ``path``), never by where the server keeps
    it."""
    if not path:
        return None
    name = Path(path).name
    try:
        with PIL.Image.open(path) as image:
            width, height = image.size
            if width * height > MAX_UPLOAD_PIXELS:
                raise ValueError(
                    f"`{label}` is {width}x{height} pixels, more than the {MAX_UPLOAD_PIXELS / 1e6:.1f} megapixels "
                    "accepted; upload a smaller image."
                )
            image.load()
            return image.copy()
    except (OSError, PIL.Image.DecompressionBombError):
        raise ValueError(f"`{label}`: {name} is not an image that can be read; upload a PNG or JPEG.") from None


def read_mask(path: str | Path | None) -> PIL.Image.Image | None:
    """The uploaded mask as black and white: grey levels from the middle up are white (may be matched)."""
    image = read_image(path, "Mask")
    if image is None:
        return None
    return image.convert("L").point(lambda level: 255 if level >= 128 else 0)
