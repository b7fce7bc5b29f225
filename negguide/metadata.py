"""Generation parameters in PNG files, in the AUTOMATIC1111 "infotext" layout plus negguide's own JSON.

The ``parameters`` text chunk holds what AUTOMATIC1111, Forge, SD.Next, civitai and many viewers read::

    a red circle
    Negative prompt: a blue square
    Steps: 20, Sampler: DPMSolverMultistepScheduler, CFG scale: 7.5, Seed: 3, Size: 64x64, Model: shapes-world

The ``negguide`` chunk holds the full configuration as JSON, enough to regenerate the image exactly.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from PIL import Image, PngImagePlugin

from negguide.atomic import write_atomic

PARAMETERS_KEY = "parameters"
CONFIG_KEY = "negguide"
NEGATIVE_PREFIX = "Negative prompt:"

_KEY = re.compile(r"\w[\w \-/]*")
_PAIR = re.compile(r'\s*(\w[\w \-/]*):\s*("(?:\\.|[^\\"])*"|[^,]*)(?:,|$)')
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PNG_END = b"\x00\x00\x00\x00IEND\xaeB`\x82"


def infotext(prompt: str, negative_prompt: str | None, params: Mapping[str, Any]) -> str:
    """The ``parameters`` text of an image.

    Args:
        prompt (`str`): the prompt, written as the first line(s).
        negative_prompt (`str`, *optional*): written as a ``Negative prompt: ...`` line; left out when empty.
        params (`Mapping[str, Any]`): ``Key: value`` pairs for the last line, in order. Keys are words,
            spaces, ``-`` or ``/``. Strings are written as they are unless they hold ``,``, ``:``, a newline
            or start with ``"``: those are written as JSON strings. Numbers are written with `str`; other
            values (lists, mappings, booleans, None) as JSON.
    """
    lines = [prompt]
    if negative_prompt:
        lines.append(f"{NEGATIVE_PREFIX} {negative_prompt}")
    pairs = []
    for key, value in params.items():
        if not isinstance(key, str) or not _KEY.fullmatch(key):
            raise ValueError(f"`params`: key {key!r} must be letters, digits, '_', ' ', '-' or '/'.")
        pairs.append(f"{key}: {_format_value(value)}")
    lines.append(", ".join(pairs))
    return "\n".join(lines)


def parse_infotext(text: str) -> dict[str, str]:
    """Read a ``parameters`` text back: ``{"Prompt": ..., "Negative prompt": ..., <key>: <value>, ...}``.

    Values stay strings (``"Seed": "3"``); quoted values are decoded. A last line with fewer than three
    ``Key: value`` pairs is taken as part of the prompt, as AUTOMATIC1111 does.
    """
    *lines, last = text.split("\n")
    pairs = _PAIR.findall(last)
    if len(pairs) < 3:
        lines.append(last)
        pairs = []
    prompt: list[str] = []
    negative: list[str] | None = None
    for line in lines:
        if negative is None and line.startswith(NEGATIVE_PREFIX):
            negative = [line.removeprefix(NEGATIVE_PREFIX).removeprefix(" ")]
        elif negative is None:
            prompt.append(line)
        else:
            negative.append(line)
    parsed = {"Prompt": "\n".join(prompt), "Negative prompt": "\n".join(negative or [])}
    for key, value in pairs:
        parsed[key.strip()] = json.loads(value) if value.startswith('"') else value.strip()
    return parsed


def save_png(
    image: Image.Image,
    path: str | os.PathLike,
    parameters: str | None = None,
    config: Mapping[str, Any] | None = None,
) -> Path:
    """Write ``image`` as a PNG atomically (see `negguide.atomic.write_atomic`), with its metadata.

    Args:
        image (`PIL.Image.Image`): the image.
        path (`str` or `os.PathLike`): where to write it; its folder must exist.
        parameters (`str`, *optional*): the ``parameters`` chunk, usually from `infotext`.
        config (`Mapping`, *optional*): JSON-ready configuration, stored under the ``negguide`` key.
    """
    info = PngImagePlugin.PngInfo()
    if parameters is not None:
        info.add_text(PARAMETERS_KEY, parameters)
    if config is not None:
        info.add_text(CONFIG_KEY, json.dumps(config, ensure_ascii=False, sort_keys=True))
    return write_atomic(path, lambda file: image.save(file, format="PNG", pnginfo=info))


def read_png_metadata(path: str | os.PathLike) -> tuple[str | None, dict[str, Any] | None]:
    """The ``parameters`` text and the ``negguide`` configuration of a PNG (``None`` where absent).

    Raises:
        OSError: the file cannot be read or is not an image.
        ValueError: the ``negguide`` chunk is not a JSON object.
    """
    with Image.open(path) as image:
        text = {key: value for key, value in image.info.items() if isinstance(value, str)}
        if CONFIG_KEY not in text and PARAMETERS_KEY not in text:
            text = dict(getattr(image, "text", {}))  # chunks after the image data need a full read
    config = text.get(CONFIG_KEY)
    if config is not None:
        try:
            config = json.loads(config)
        except json.JSONDecodeError as error:
            raise ValueError(f"{path}: the {CONFIG_KEY!r} chunk is not valid JSON ({error}).") from None
        if not isinstance(config, dict):
            raise ValueError(f"{path}: the {CONFIG_KEY!r} chunk is not a JSON object.")
    parameters = text.get(PARAMETERS_KEY)
    return (parameters if isinstance(parameters, str) else None), config


def is_complete_png(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a file that starts with the PNG signature and ends with the ``IEND`` chunk."""
    try:
        with open(path, "rb") as file:
            if file.read(len(_PNG_SIGNATURE)) != _PNG_SIGNATURE:
                return False
            file.seek(0, os.SEEK_END)
            if file.tell() < len(_PNG_SIGNATURE) + len(_PNG_END):
                return False
            file.seek(-len(_PNG_END), os.SEEK_END)
            return file.read() == _PNG_END
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
        return False


def _format_value(value: Any) -> str:
    if isinstance(value, str):
        text = value
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        text = str(value)
    else:
        text = json.dumps(value, ensure_ascii=False, sort_keys=True)
    if any(mark in text for mark in ",:\n") or text.startswith('"'):
        return json.dumps(text, ensure_ascii=False)
    return text
