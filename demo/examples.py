"""Examples that show, in one click each, what every method does in the shapes world.

In that world every object has a frequent companion that captions often leave out (a red circle usually
comes with a red square), so a one-object prompt often shows the companion, and naming it as a negative
shows what each method removes and what it keeps.
"""

from __future__ import annotations

import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from negguide.atomic import write_atomic
from negguide.shapes.world import IMAGE_SIZE, ShapeObject, render


@dataclass(frozen=True)
class Example:
    """One example: its title and the form values it sets (the others keep their initial values)."""

    title: str
    values: Mapping[str, Any] = field(default_factory=dict)


def reference_file() -> Path:
    """A shapes-world image of a blue triangle (a red square's companion), written once to the temporary folder."""
    path = Path(tempfile.gettempdir()) / "negguide-demo" / "blue-triangle.png"
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        image = render([ShapeObject("blue", "triangle", IMAGE_SIZE / 2, IMAGE_SIZE / 2, IMAGE_SIZE / 2)])
        write_atomic(path, lambda file: image.save(file, format="PNG"))
    return path


def examples() -> list[Example]:
    """The demo's examples."""
    return [
        Example(
            "Perp-Neg keeps what the prompt asks for (the negative shares its colour)",
            {"prompt": "a red circle", "negatives": [["red square", 1.0, 0.0, 1.0]], "methods": ["perpneg"]},
        ),
        Example(
            "A delayed negative acts once the layout is set",
            {"prompt": "a green triangle", "negatives": [["yellow circle", 1.0, 0.3, 1.0]], "methods": ["perpneg"]},
        ),
        Example(
            "Two weighted negatives",
            {
                "prompt": "a blue circle",
                "negatives": [["yellow triangle", 1.0, 0.0, 1.0], ["blue", 0.5, 0.0, 1.0]],
                "methods": ["perpneg"],
            },
        ),
        Example(
            "NegToMe pushes the images of a prompt apart",
            {
                "prompt": "a yellow square",
                "negatives": [["red circle", 1.0, 0.0, 1.0]],
                "methods": ["negtome"],
                "images": 3,
                # The settings under which the embedded model's batches diversify (README, "NegToMe").
                "negtome.anchor": "nearest",
                "negtome.alpha": 3.0,
                "negtome.threshold": 0.5,
                "negtome.start": 0.1,
                "negtome.stop": 0.5,
            },
        ),
        Example(
            "NegToMe steers away from a reference image",
            {
                "prompt": "a red square",
                "negatives": [],
                "methods": ["negtome"],
                "reference": str(reference_file()),
                "negtome.mode": "reference",
            },
        ),
        Example(
            "Perp-Neg and NegToMe together",
            {
                "prompt": "a blue triangle",
                "negatives": [["blue square", 1.0, 0.0, 1.0]],
                "methods": ["perpneg", "negtome", "perpneg+negtome"],
                "images": 2,
            },
        ),
    ]
