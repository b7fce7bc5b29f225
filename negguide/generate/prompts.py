"""Prompt files for batch runs: ``.txt`` (one prompt a line, ``#`` starting a comment line), ``.csv`` (a header
row naming the columns) and ``.jsonl`` (one JSON object a line).

Each record becomes an `Item`. A record that cannot be read becomes a `Problem` naming the file and the line,
so a run can list every bad line before it generates anything.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from negguide.errors import InputError
from negguide.generate import values
from negguide.modules.negatives import NegativePrompts

SCALAR_FIELDS = (
    "prompt",
    "negative_prompt",
    "seed",
    "seeds",
    "method",
    "steps",
    "guidance_scale",
    "guidance_rescale",
    "width",
    "height",
)
"""Fields a ``.csv`` column or a ``.jsonl`` key may name."""
COMMENT = "#"
"""Starts a comment line of a ``.txt`` prompts file."""
STRUCTURED_FIELDS = ("negatives", "guidance")
"""Fields only a ``.jsonl`` record may hold: weighted, windowed negatives and a list of guidance modules."""

_SETTINGS: dict[str, Callable[[object, str], object]] = {
    "steps": values.positive_integer,
    "guidance_scale": values.number,
    "guidance_rescale": values.fraction,
    "width": values.side,
    "height": values.side,
}


@dataclass(frozen=True)
class Item:
    """One record of a prompts file.

    Args:
        index (`int`): 0-based position among the file's records (blank and comment lines do not count, bad
            records do),
            so file names stay the same when a bad line is fixed later.
        source (`str`): ``"<file>:<line>"``, for messages.
        prompt (`str`): the prompt.
        negative_prompt (`str`, *optional*): the call's negative prompt; ``None`` takes the run's.
        negatives (`list[dict]`, *optional*): weighted, windowed negatives (`negguide.Negative` settings).
        seeds (`tuple[int, ...]`, *optional*): the item's seeds; ``None`` takes the run's.
        method (`str`, *optional*): a method label of the run or ``NAME[+NAME...]``; with ``guidance``, its label.
        guidance (`list`, *optional*): the item's own guidance modules (names or ``{"name": ..., ...}``).
        settings (`dict`): checked overrides of the run's ``steps``, ``guidance_scale``, ``guidance_rescale``,
            ``width`` and ``height``.
    """

    index: int
    source: str
    prompt: str
    negative_prompt: str | None = None
    negatives: list[dict[str, Any]] | None = None
    seeds: tuple[int, ...] | None = None
    method: str | None = None
    guidance: list[Any] | None = None
    settings: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Problem:
    """A record that cannot be used, and why."""

    source: str
    message: str

    def __str__(self) -> str:
        return f"{self.source}: {self.message}"


def read_items(path: str | Path) -> tuple[list[Item], list[Problem]]:
    """The items of a prompts file, and the problems of its bad records.

    Raises:
        InputError: the file is missing, unreadable, not UTF-8, of an unknown type, has a bad CSV header, or
            holds no records at all.
    """
    path = Path(path)
    readers = {".txt": _read_txt, ".csv": _read_csv, ".jsonl": _read_jsonl}
    reader = readers.get(path.suffix.lower())
    if reader is None:
        raise InputError(f"`PROMPTS`: {path} is not a .txt, .csv or .jsonl file.")
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise InputError(f"`PROMPTS`: {path} does not exist.") from None
    except OSError as error:
        raise InputError(f"`PROMPTS`: cannot read {path}: {error.strerror or error}.") from None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        line = data[: error.start].count(b"\n") + 1
        raise InputError(f"{path}:{line}: not UTF-8 text.") from None
    items, problems = reader(text, path)
    if not items and not problems:
        raise InputError(f"`PROMPTS`: {path} holds no prompts.")
    return items, problems


def make_item(record: Mapping[str, Any], index: int, source: str, fields: tuple[str, ...]) -> Item:
    """Check one record (JSON values, or CSV text cells) and build its `Item`; TypeError or ValueError naming
    the field."""
    unknown = sorted(set(record) - set(fields))
    if unknown:
        raise ValueError(f"unknown field {', '.join(map(repr, unknown))}; known fields: {', '.join(fields)}.")
    prompt = record.get("prompt")
    if not isinstance(prompt, str) or not prompt.strip():
        raise ValueError(f"`prompt` must be non-empty text, got {prompt!r}.")
    for name in ("negative_prompt", "method"):
        if record.get(name) is not None and not isinstance(record[name], str):
            raise ValueError(f"`{name}` must be text, got {record[name]!r}.")
    if "seed" in record and "seeds" in record:
        raise ValueError("give `seed` or `seeds`, not both.")
    seed_key = "seeds" if "seeds" in record else "seed"
    guidance = record.get("guidance")
    if guidance is not None and not isinstance(guidance, list):
        raise ValueError(f"`guidance` must be a list of modules, got {guidance!r}.")
    return Item(
        index=index,
        source=source,
        prompt=prompt,
        negative_prompt=record.get("negative_prompt"),
        negatives=_negatives(record["negatives"]) if "negatives" in record else None,
        seeds=values.seeds(record[seed_key], seed_key) if seed_key in record else None,
        method=record.get("method"),
        guidance=guidance,
        settings={name: check(record[name], name) for name, check in _SETTINGS.items() if name in record},
    )


def _negatives(value: object) -> list[dict[str, Any]]:
    return NegativePrompts(value).to_dict()["negatives"]


def _read_txt(text: str, path: Path) -> tuple[list[Item], list[Problem]]:
    """One prompt a line; blank lines and comments (lines whose first non-blank character is ``#``) skipped."""
    items = []
    for number, line in enumerate(text.split("\n"), start=1):
        prompt = line.strip()
        if prompt and not prompt.startswith(COMMENT):
            items.append(Item(index=len(items), source=f"{path}:{number}", prompt=prompt))
    return items, []


def _read_csv(text: str, path: Path) -> tuple[list[Item], list[Problem]]:
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = [name.strip().lower() for name in next(reader)]
    except StopIteration:
        return [], []
    except csv.Error as error:
        raise InputError(f"{path}:1: malformed CSV header ({error}).") from None
    unknown = sorted(set(header) - set(SCALAR_FIELDS))
    if "prompt" not in header or unknown or len(set(header)) != len(header):
        raise InputError(
            f"{path}:1: the header row must name distinct columns among {', '.join(SCALAR_FIELDS)}, including "
            f"'prompt'; got {', '.join(map(repr, header))}."
        )
    items: list[Item] = []
    problems: list[Problem] = []
    index = 0
    while True:
        try:
            row = next(reader)
        except StopIteration:
            break
        except csv.Error as error:
            problems.append(Problem(f"{path}:{reader.line_num}", f"malformed CSV ({error})."))
            break
        if not any(cell.strip() for cell in row):
            continue
        source = f"{path}:{reader.line_num}"
        try:
            if len(row) != len(header):
                raise ValueError(f"{len(row)} fields where the header has {len(header)}.")
            record = {name: cell.strip() for name, cell in zip(header, row) if cell.strip()}
            items.append(make_item(record, index, source, SCALAR_FIELDS))
        except (TypeError, ValueError) as error:
            problems.append(Problem(source, str(error)))
        index += 1
    return items, problems


def _read_jsonl(text: str, path: Path) -> tuple[list[Item], list[Problem]]:
    items: list[Item] = []
    problems: list[Problem] = []
    index = 0
    for number, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        source = f"{path}:{number}"
        try:
            try:
                record = json.loads(line)
            except json.JSONDecodeError as error:
                raise ValueError(f"not valid JSON ({error.msg} at column {error.colno}).") from None
            if not isinstance(record, dict):
                raise TypeError(f"each line must be a JSON object, got {type(record).__name__}.")
            items.append(make_item(record, index, source, SCALAR_FIELDS + STRUCTURED_FIELDS))
        except (TypeError, ValueError) as error:
            problems.append(Problem(source, str(error)))
        index += 1
    return items, problems
