"""Images given to guidance modules: loaded from PIL images, file paths or PNG data URIs, and written back
as JSON-ready strings."""

from __future__ import annotations

import base64
import binascii
import io
import os
from pathlib import Path

import numpy as np
import PIL.Image
import torch

ImageLike = PIL.Image.Image | str
"""A PIL image, a path to an image file, or a ``data:image/...;base64,`` URI."""

DATA_URI_PREFIX = "data:image/"


def load_image(value: object, name: str) -> PIL.Image.Image:
    """``value`` as a loaded PIL image.

    Args:
        value: a PIL image, a path (`str` or `os.PathLike`) to an image file, or a ``data:image/...;base64,...``
            URI (what `image_to_json` writes).
        name (`str`): the argument's name, for errors.
    """
    if isinstance(value, PIL.Image.Image):
        return value
    if not isinstance(value, (str, os.PathLike)):
        raise TypeError(
            f"`{name}` must be a PIL image, a path to an image file or a PNG data URI, got {type(value).__name__}."
        )
    text = str(value)
    try:
        if text.startswith(DATA_URI_PREFIX):
            source: io.BytesIO | Path = io.BytesIO(base64.b64decode(text.partition("base64,")[2], validate=True))
        else:
            source = Path(text)
            if not source.is_file():
                raise ValueError(f"`{name}`: no image file at {text!r}; give a PIL image or an existing file path.")
        with PIL.Image.open(source) as image:
            image.load()
            return image.copy()
    except (OSError, binascii.Error, PIL.UnidentifiedImageError) as error:
        raise ValueError(f"`{name}`: {text[:80]!r} is not a readable image ({error}).") from None


def image_to_json(value: ImageLike) -> str:
    """A JSON-ready form: paths and data URIs stay as given, a PIL image becomes a lossless PNG data URI."""
    if isinstance(value, str):
        return value
    buffer = io.BytesIO()
    value.save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def binary_mask(value: object, name: str) -> PIL.Image.Image:
    """A binary-like mask as a PIL ``"L"`` image holding only 0 and 255.

    Args:
        value: a PIL image or image file (as for `load_image`; read as grey levels), or a 2-D array or tensor
            with values in ``[0, 1]``. Every value must lie within 0.1 of black or white: threshold a soft
            mask first.
        name (`str`): the argument's name, for errors.
    """
    if isinstance(value, (np.ndarray, torch.Tensor)):
        levels = np.asarray(value.detach().cpu() if isinstance(value, torch.Tensor) else value, dtype=np.float64)
        if levels.ndim != 2:
            raise ValueError(f"`{name}` must be a 2-D (height, width) array, got shape {tuple(levels.shape)}.")
        if not np.isfinite(levels).all() or levels.min() < 0 or levels.max() > 1:
            raise ValueError(f"`{name}` must hold values in [0, 1].")
    else:
        levels = np.asarray(load_image(value, name).convert("L"), dtype=np.float64) / 255.0
    if levels.size == 0:
        raise ValueError(f"`{name}` is empty.")
    if (np.abs(levels - levels.round()) > 0.1).any():
        raise ValueError(
            f"`{name}` must be binary-like (every value within 0.1 of 0 or 1, white = may match); threshold it "
            "first, e.g. mask.point(lambda v: 255 if v > 127 else 0)."
        )
    return PIL.Image.fromarray((levels > 0.5).astype(np.uint8) * 255)
