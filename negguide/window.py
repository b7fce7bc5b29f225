"""The step window every guidance module acts in: fractions ``[start, stop)`` of the run."""

from __future__ import annotations

from dataclasses import dataclass

from negguide.branches import Step
from negguide.checks import unit_interval


@dataclass(frozen=True)
class Window:
    """Step fractions ``[start, stop)``: a module acts at step ``i`` of ``n`` when ``start <= i / n < stop``.

    ``start > 0`` makes a negative *delayed* (Ban et al., "Understanding the Impact of Negative Prompts",
    arXiv 2406.02965): negatives act once the prompt has drawn its objects.

    Args:
        start (`float`, defaults to 0.0): first step fraction at which the module acts, in ``[0, 1]``.
        stop (`float`, defaults to 1.0): step fraction from which it no longer acts, in ``[0, 1]``, above ``start``.
        owner (`str`, defaults to ``""``): prefix of the setting names in error messages (``"Negative."``).
    """

    start: float = 0.0
    stop: float = 1.0
    owner: str = ""

    def __post_init__(self) -> None:
        start = unit_interval(self.start, f"{self.owner}start")
        stop = unit_interval(self.stop, f"{self.owner}stop")
        if start >= stop:
            raise ValueError(
                f"`{self.owner}start` ({start}) must be smaller than `{self.owner}stop` ({stop}): the window "
                "[start, stop) is in fractions of the run, e.g. start=0.2, stop=1.0."
            )
        object.__setattr__(self, "start", start)
        object.__setattr__(self, "stop", stop)

    def contains(self, step: Step) -> bool:
        """Whether ``step`` lies in the window."""
        return self.start <= step.fraction < self.stop
