"""The one timing loop of the benchmarks: variants run alternately, medians compared within one process.

Each variant runs once to warm up, then ``runs`` rounds run every variant once, in turn, so that a slow phase
of the machine touches every variant alike. Times are wall-clock seconds (`time.perf_counter`) unless another
clock is given: `time.process_time`, the process's CPU time, is steadier on a shared machine. Time a benchmark on
a quiet machine all the same.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass


@dataclass(frozen=True)
class Timing:
    """The measured seconds of one variant.

    Args:
        times (`tuple[float, ...]`): seconds of each timed run, in order.
    """

    times: tuple[float, ...]

    @property
    def median(self) -> float:
        return statistics.median(self.times)

    def to_dict(self) -> dict[str, object]:
        return {"median_s": self.median, "runs_s": list(self.times)}


def alternating(
    variants: Mapping[str, Callable[[int], object]], runs: int, clock: Callable[[], float] = time.perf_counter
) -> dict[str, Timing]:
    """Time ``variants`` (name -> ``run(round)``) alternately, ``runs`` rounds after one warm-up each.

    ``run`` gets the round number (0 for the warm-up), e.g. to seed its generator; ``clock`` reads the time in
    seconds.
    """
    if runs < 1:
        raise ValueError(f"`runs` must be at least 1, got {runs}.")
    for run in variants.values():
        run(0)
    times: dict[str, list[float]] = {name: [] for name in variants}
    for round_ in range(1, runs + 1):
        for name, run in variants.items():
            start = clock()
            run(round_)
            times[name].append(clock() - start)
    return {name: Timing(tuple(values)) for name, values in times.items()}
