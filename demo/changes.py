"""What a request changed in the closed settings panels, said next to its results: an example (or a person)
may set a module's settings the page does not show until its panel is opened."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from negguide.demo.comparison import title
from negguide.demo.settings import SettingField

FILES = {"reference": "reference image", "mask": "mask"}


def changed_settings(
    values: Mapping[str, Any], defaults: Mapping[str, Any], fields: Sequence[SettingField]
) -> list[str]:
    """Each module setting in ``values`` that differs from its initial value in ``defaults``, as
    ``"NegToMe alpha: 3 (initially 0.9)"``, then the uploaded files by name (``"NegToMe reference image:
    blue-triangle.png"``), in the order of the panels."""
    changes = []
    for field in fields:
        value, default = values.get(field.key, field.default), defaults.get(field.key, field.default)
        if _differs(value, default):
            name = " ".join(part.replace("_", " ") for part in field.path)
            changes.append(f"{title(field.module)} {name}: {_shown(value)} (initially {_shown(default)})")
    for key, label in FILES.items():
        if values.get(key):
            changes.append(f"NegToMe {label}: {Path(str(values[key])).name}")
    return changes


def changes_markdown(changes: Sequence[str]) -> str:
    """`changed_settings` for the page: one line per change, or a line saying the panels are at their defaults."""
    if not changes:
        return "Settings panels: every setting at its initial value."
    return "**Set in the settings panels:** " + "; ".join(f"`{change}`" for change in changes) + "."


def _differs(value: Any, default: Any) -> bool:
    if isinstance(value, (int, float)) and isinstance(default, (int, float)) and not isinstance(value, bool):
        return float(value) != float(default)
    return (value if value != "" else None) != default


def _shown(value: Any) -> str:
    if value is None or value == "":
        return "empty"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)
