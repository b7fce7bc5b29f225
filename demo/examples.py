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
    """One example: its title, the form values it sets (the others keep their initial values) and a note on what
    it shows, said beside its results."""

    title: str
    values: Mapping[str, Any] = field(default_factory=dict)
    note: str = ""

    def matches(self, values: Mapping[str, Any]) -> bool:
        """Whether the form's ``values`` are this example's case: its prompt and negatives."""
        return all(values.get(key) == self.values[key] for key in CASE if key in self.values)


CASE = ("prompt", "negatives")
"""The values that make an example's case."""
WORKING_NEGTOME = {"negtome.alpha": 3.0, "negtome.threshold": 0.5, "negtome.start": 0.1, "negtome.stop": 0.5}
"""NegToMe's settings under which the embedded model's images change visibly (README, "NegToMe")."""


def reference_file() -> Path:
    """A shapes-world image of a blue triangle (a red square's companion), written once to the temporary folder."""
    path = Path(tempfile.gettempdir()) / "negguide-demo" / "blue-triangle.png"
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        image = render([ShapeObject("blue", "triangle", IMAGE_SIZE / 2, IMAGE_SIZE / 2, IMAGE_SIZE / 2)])
        write_atomic(path, lambda file: image.save(file, format="PNG"))
    return path


def examples() -> list[Example]:
    """The demo's examples; the first is the form's initial case."""
    return [
        Example(
            "The standard negative removes a red square's companion",
            {"prompt": "a red square", "negatives": [["blue triangle", 1.0, 0.0, 1.0]], "methods": ["perpneg", "nag"]},
            "A red square usually comes with a blue triangle in this world; naming it as the negative removes it "
            "with each method, and the square stays.",
        ),
        Example(
            "A negative that shares the prompt's colour: Perp-Neg's case",
            {"prompt": "a red circle", "negatives": [["red square", 1.0, 0.0, 1.0]], "methods": ["perpneg"]},
            "Why the standard negative fails here: 'red square' shares the circle's colour, so pushing away from it "
            "also pushes away from the red the prompt asks for, and the model keeps the square about as often as "
            "without a negative. Perp-Neg removes only the part of the negative that the prompt does not share; on "
            "this small model that helps little (README, Perp-Neg).",
        ),
        Example(
            "A delayed negative acts once the layout is set",
            {"prompt": "a green triangle", "negatives": [["yellow circle", 1.0, 0.3, 1.0]], "methods": ["perpneg"]},
            "The negative acts from 30% of the run on, after the layout has formed.",
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
            "NAG: the negative inside attention",
            {"prompt": "a green square", "negatives": [["green triangle", 1.0, 0.0, 1.0]], "methods": ["nag"]},
            "NAG pushes the attention away from the negative's text inside the network: one evaluation per step, "
            "so it is the negative for a guidance-distilled model.",
        ),
        Example(
            "NegToMe pushes the images of a prompt apart",
            {
                "prompt": "a yellow square",
                "negatives": [["red circle", 1.0, 0.0, 1.0]],
                "methods": ["negtome"],
                "images": 3,
                "negtome.anchor": "nearest",
                **WORKING_NEGTOME,
            },
            "Compare the NegToMe row with the standard negative's: the same seeds, made more different.",
        ),
        Example(
            "NegToMe steers away from a reference image",
            {
                "prompt": "a red square",
                "negatives": [],
                "methods": ["negtome"],
                "images": 2,
                "reference": str(reference_file()),
                "negtome.mode": "reference",
                **WORKING_NEGTOME,
            },
            "The reference image (shown below) holds a blue triangle, the red square's companion: NegToMe pushes "
            "each image's features away from it.",
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


def example_note(values: Mapping[str, Any]) -> str:
    """The note of the first example whose case the form's ``values`` hold, else nothing."""
    return next((example.note for example in examples() if example.note and example.matches(values)), "")
