"""The "Analyse" tab's work: when a negative takes effect, and the adaptive removal of an object.

Both follow Ban et al., "Understanding the Impact of Negative Prompts: When and How Do They Take Effect?"
(arXiv 2406.02965): `analyse` runs `negguide.analyze_negative` (per step, how far the negative's prediction
is from the empty prompt's, how much of the prompt's direction it shares, how much cross-attention its tokens
get) and `remove` runs `negguide.remove_object` (the shortest delayed negative window that removes the object,
regenerated from the same initial latents), on the demo's model, one generation at a time.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import PIL.Image

from negguide.analysis import METRICS, AnalysisResult, analyze_negative
from negguide.demo.comparison import MAX_SCALE, MAX_SEED, MAX_STEPS, bounded, whole
from negguide.demo.model import DemoModel
from negguide.loading import DEFAULT_GUIDANCE_SCALE
from negguide.removal import SEARCHES, RemovalResult, remove_object

CSV_NAME = "negative-analysis.csv"
SHOWN_SIDE = 256
"""Images are shown at least this many pixels wide, enlarged by whole factors without blurring."""
VERDICTS = {
    "removed": "removed",
    "present": "still there",
    "recoloured": "recoloured in place, not removed",
    "reshaped": "reshaped in place, not removed",
    "replaced": "replaced in place by another object, not removed",
}
"""How the page words each outcome of a removal trial (`negguide.metrics.OUTCOMES`)."""


@dataclass(frozen=True)
class NegativeRun:
    """One request of the tab, checked on construction; errors name the page's controls. Its fields are the tab's
    controls, and ``NegativeRun()`` holds their initial values, but for the guidance scale: the tab starts at the
    model's (`ModelInfo.guidance_scale`).

    Args:
        prompt (`str`): the prompt.
        negative (`str`): the negative prompt: the object to remove, for `remove`.
        seed (`int`): the seed of the initial latents.
        steps (`int`), guidance_scale (`float`): the pipeline call's settings; the scale must be > 1, since the
            negative acts through classifier-free guidance.
        start (`float`), stop (`float`): the negative's window ``[start, stop)`` for `analyse`, in fractions of
            the run.
        removal_start (`float`): the fraction of the run before the adaptive negative starts, for `remove`.
        search (`str`): ``"linear"`` (the paper's scan) or ``"bisect"``, for `remove`.
    """

    prompt: str = "a red circle"
    negative: str = "red square"
    seed: int = 0
    steps: int = 20
    guidance_scale: float = DEFAULT_GUIDANCE_SCALE
    start: float = 0.0
    stop: float = 1.0
    removal_start: float = 0.2
    search: str = "linear"

    def __post_init__(self) -> None:
        for name, label, example in (("prompt", "Prompt", "a red circle"), ("negative", "Negative", "red square")):
            text = getattr(self, name)
            if not isinstance(text, str) or not text.strip():
                raise ValueError(f"`{label}` is empty: write one, e.g. {example!r}.")
            object.__setattr__(self, name, text.strip())
        object.__setattr__(self, "seed", whole(self.seed, "Seed", 0, MAX_SEED))
        object.__setattr__(self, "steps", whole(self.steps, "Steps", 1, MAX_STEPS))
        scale = bounded(self.guidance_scale, "Guidance scale", 0.0, MAX_SCALE)
        if scale <= 1:
            raise ValueError(f"`Guidance scale` must be above 1, got {scale}: a negative acts through guidance.")
        object.__setattr__(self, "guidance_scale", scale)
        start = bounded(self.start, "Negative from", 0.0, 1.0)
        stop = bounded(self.stop, "Negative until", 0.0, 1.0)
        if start >= stop:
            raise ValueError(f"`Negative from` ({start}) must be before `Negative until` ({stop}).")
        object.__setattr__(self, "start", start)
        object.__setattr__(self, "stop", stop)
        removal_start = bounded(self.removal_start, "Removal starts at", 0.0, 1.0)
        if removal_start >= 1:
            raise ValueError("`Removal starts at` must be below 1: it is the part of the run before the negative.")
        object.__setattr__(self, "removal_start", removal_start)
        if self.search not in SEARCHES:
            raise ValueError(f"`Search` must be one of {', '.join(SEARCHES)}, got {self.search!r}.")


@dataclass(frozen=True)
class AnalysisView:
    """What `analyse` shows: the plot, the run's image, the CSV file and a line on the negative's onset."""

    plot: PIL.Image.Image
    image: PIL.Image.Image
    csv: Path
    summary: str


def analyse(model: DemoModel, run: NegativeRun, folder: Path) -> AnalysisView:
    """Run `negguide.analyze_negative` at the model's native size; the per-step CSV is written into ``folder``."""
    result = model.call(
        lambda pipe: analyze_negative(
            pipe,
            run.prompt,
            run.negative,
            run.seed,
            steps=run.steps,
            guidance_scale=run.guidance_scale,
            start=run.start,
            stop=run.stop,
            height=model.info.height,
            width=model.info.width,
        )
    )
    return AnalysisView(
        result.plot_image(), enlarged(result.images[0]), result.to_csv(folder / CSV_NAME), onset_summary(result)
    )


def enlarged(image: PIL.Image.Image, side: int = SHOWN_SIDE) -> PIL.Image.Image:
    """``image`` scaled up by the smallest whole factor that makes it at least ``side`` pixels wide (nearest
    neighbour: every pixel a square block), unchanged when it is that wide already."""
    factor = -(-side // image.width)
    if factor <= 1:
        return image
    return image.resize((image.width * factor, image.height * factor), PIL.Image.Resampling.NEAREST)


def onset_summary(result: AnalysisResult) -> str:
    """Where each curve first reaches halfway between its lowest and highest values (`AnalysisResult.onset`)."""
    parts = []
    for metric in (name for name in METRICS if name in result.metrics):
        step = result.onset(metric)
        parts.append(f"{metric.replace('_', ' ')}: {'never' if step is None else f'step {step}'}")
    return f"Onset (first step halfway up each curve) of {result.num_steps}: " + "; ".join(parts) + "."


def remove(model: DemoModel, run: NegativeRun) -> RemovalResult:
    """Run `negguide.remove_object` for ``run.negative`` with the shapes-world detector.

    Raises:
        ValueError: the model is not the embedded shapes world, the only one the built-in detector can judge.
    """
    if not model.info.embedded:
        raise ValueError(
            "Adaptive removal in the demo judges images with the shapes-world detector, which only knows the "
            f"embedded model's world, not {model.info.name!r}. In Python, pass your own detector: "
            "negguide.remove_object(pipe, prompt, obj, detector=...)."
        )
    return model.call(
        lambda pipe: remove_object(
            pipe,
            run.prompt,
            run.negative,
            run.seed,
            start=run.removal_start,
            search=run.search,
            steps=run.steps,
            guidance_scale=run.guidance_scale,
            height=model.info.height,
            width=model.info.width,
        )
    )


def removal_gallery(result: RemovalResult) -> list[tuple[PIL.Image.Image, str]]:
    """The plain image, then every trial, numbered as in `removal_table`, with its window and outcome."""
    items = [(enlarged(result.plain_image), "plain prompt")]
    for number, trial in enumerate(result.trials, start=1):
        start, stop = trial.fractions
        items.append((enlarged(trial.image), f"{number}. {start:.2f}-{stop:.2f}: {trial.outcome}"))
    return items


def removal_table(result: RemovalResult) -> str:
    """Every trial as a Markdown table row: its number, the steps and part of the run the negative acted on, and
    what became of the object (only "removed" counts)."""
    if not result.trials:
        return ""
    lines = ["| trial | negative on steps | part of the run | the object |", "|---|---|---|---|"]
    for number, trial in enumerate(result.trials, start=1):
        (first, end), (start, stop) = trial.window, trial.fractions
        verdict = VERDICTS.get(trial.outcome, trial.outcome)
        lines.append(f"| {number} | {first}-{end - 1} of {result.steps} | {start:.2f}-{stop:.2f} | {verdict} |")
    return "\n".join(lines)
