"""File names of a batch run's outputs: deterministic, and always inside the output folder.

A name is built from the item's index, the method, the seed and a slug of the prompt. The slug keeps only
lower-case ASCII letters, digits and single dashes, so no prompt text (``../``, ``/``, NUL, ...) can reach
the file system as a path.
"""

from __future__ import annotations

import re
import unicodedata

IMAGES = "images"
GRIDS = "grids"
SLUG_LENGTH = 48
_NOT_SLUG = re.compile(r"[^a-z0-9]+")


def slug(text: str, length: int = SLUG_LENGTH) -> str:
    """``text`` as lower-case ASCII words joined by dashes, at most ``length`` characters; may be empty."""
    ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    return _NOT_SLUG.sub("-", ascii_text.lower())[:length].strip("-")


def image_name(item: int, method: str, seed: int, prompt: str) -> str:
    """Relative path of one image, e.g. ``images/00003-perpneg-s7-a-red-circle.png``."""
    prefix, suffix = image_name_parts(item, method, prompt)
    return f"{prefix}{seed}{suffix}"


def image_name_parts(item: int, method: str, prompt: str) -> tuple[str, str]:
    """What comes before and after the seed in `image_name`, e.g. ``("images/00003-perpneg-s",
    "-a-red-circle.png")``."""
    return f"{IMAGES}/{item:05d}-{slug(method)}-s", f"-{slug(prompt) or 'prompt'}.png"


def grid_name(item: int, prompt: str) -> str:
    """Relative path of an item's comparison grid, e.g. ``grids/00003-a-red-circle.png``."""
    return f"{GRIDS}/{item:05d}-{slug(prompt) or 'prompt'}.png"
