"""Adaptive object removal with a delayed negative prompt.

From Ban et al., "Understanding the Impact of Negative Prompts: When and How Do They Take Effect?" (arXiv
2406.02965, ECCV 2024): a negative prompt only acts once the positive prompt has drawn the object it names, and
applied from step 0 it can even draw that object. To remove object N from the image a prompt and a seed give,
while changing as little else as possible, keep the seed and initial latents fixed, keep the negative's start
fixed (about 0.2 of the run) and lengthen its window ``[start, end)`` one step at a time, asking a detector
after each image whether N is still there; the first window that removes N is the shortest, so it changes the
rest of the image least. A bisection over ``end`` finds the same window in fewer trials when the detector's
verdict is monotone in the window's length.

A detector is any callable ``detector(image, obj) -> bool`` (True: ``obj`` is in the PIL image): the
shapes-world detector (`ShapesDetector`) is built in; a CLIP, VLM or OWL-ViT wrapper plugs in the same way.
A detector that also has a method ``box(image, obj) -> (x0, y0, x1, y1) | None`` locates the object in the
image without the negative, and the result then reports the change outside that box. One with a method
``outcome(plain, image, obj) -> str`` (one of `negguide.metrics.OUTCOMES`) judges each trial against the image
without the negative, so that an object recoloured or reshaped in place is not taken for removed; the built-in
detector has both. Only ``"removed"`` ends the search.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import PIL.Image
import torch
from diffusers import DiffusionPipeline
from diffusers.utils.torch_utils import randn_tensor

from negguide.checks import finite_float
from negguide.families import denoiser, family_of
from negguide.metrics import OUTCOMES, ObjectSpec, change_outside_box, contains, parse_phrase, removal_outcome
from negguide.modules.negatives import Negative, NegativePrompts
from negguide.shapes.detector import detect

SEARCHES = ("linear", "bisect")
BOX_MARGIN = 2
"""Pixels around an object's box that count as the object (its anti-aliased rim) when measuring the change
outside the box."""
RESERVED_CALL_ARGUMENTS = (
    "prompt",
    "latents",
    "generator",
    "num_inference_steps",
    "guidance_scale",
    "guidance",
    "output_type",
    "return_dict",
    "num_images_per_prompt",
    "prompt_embeds",
)

Box = tuple[float, float, float, float]
Detector = Callable[[PIL.Image.Image, str], bool]
Window = tuple[int, int]


class DetectorError(RuntimeError):
    """A detector failed: it raised an error, or gave an answer that is not a bool (or a box that is not one)."""


class ShapesDetector:
    """The shapes world's analytic detector (`negguide.shapes.detect`) as a removal detector.

    ``obj`` is a phrase of the shapes world's grammar (`negguide.metrics.parse_phrase`): ``"red square"``,
    ``"a blue circle"``, ``"blue"`` (any blue object), ``"triangle"`` (any triangle). The object is present
    when any detection matches it.
    """

    def spec(self, obj: str) -> ObjectSpec:
        """``obj`` parsed; ValueError naming it when it is not a shapes-world phrase."""
        try:
            return parse_phrase(obj)
        except ValueError as error:
            raise ValueError(
                f"`obj`: {error}; the built-in shapes-world detector reads such phrases only: pass `detector=` "
                "to remove objects of another model."
            ) from None

    def __call__(self, image: PIL.Image.Image, obj: str) -> bool:
        return contains(detect(image), self.spec(obj))

    def outcome(self, plain: PIL.Image.Image, image: PIL.Image.Image, obj: str) -> str:
        """What became of ``obj`` from ``plain`` to ``image`` (`negguide.metrics.removal_outcome`): ``"removed"``,
        ``"recoloured"``, ``"reshaped"``, ``"replaced"`` (changed in place), ``"present"`` or ``"absent"``."""
        return removal_outcome(detect(plain), detect(image), self.spec(obj))

    def box(self, image: PIL.Image.Image, obj: str) -> Box | None:
        """The box around every detection of ``obj`` in ``image`` (pixel edges), ``None`` when there is none."""
        spec = self.spec(obj)
        boxes = [detection.box for detection in detect(image) if spec.matches(detection)]
        if not boxes:
            return None
        x0, y0, x1, y1 = zip(*boxes)
        return (min(x0), min(y0), max(x1), max(y1))


@dataclass(frozen=True)
class Trial:
    """One image of the search.

    Args:
        window (`tuple[int, int]`): the negative's steps ``[start, end)``.
        fractions (`tuple[float, float]`): the same window as fractions of the run.
        present (`bool`): the detector's verdict: the object is not removed (still there, or changed in place).
        image (`PIL.Image.Image`): the image.
        outcome (`str`): what became of the object, one of `negguide.metrics.OUTCOMES`: ``"removed"``,
            ``"recoloured"``, ``"reshaped"``, ``"replaced"`` or ``"present"`` from a detector with an ``outcome``
            method; ``"removed"`` or ``"present"`` from any other.
    """

    window: Window
    fractions: tuple[float, float]
    present: bool
    image: PIL.Image.Image
    outcome: str


@dataclass(frozen=True)
class RemovalResult:
    """What `remove_object` found for one prompt, object and seed.

    Args:
        prompt (`str`), obj (`str`), seed (`int`): the request.
        steps (`int`): network evaluations in the run: the unit of the windows.
        image (`PIL.Image.Image`): the image of the chosen window; the plain image when it does not hold the
            object; the image of the longest window tried when no window removes it.
        plain_image (`PIL.Image.Image`): the image without the negative, from the same initial latents.
        plain_has_object (`bool`): the detector found the object in the plain image.
        window (`tuple[int, int]`, *optional*): the shortest window ``[start, end)`` (steps) that removes the
            object; ``None`` when the plain image lacks it or no window removes it.
        trials (`tuple[Trial, ...]`): every windowed image, in the order they were made.
        box (`tuple`, *optional*): the object's box in the plain image, when the detector has a ``box`` method.
        change_outside_box (`float`, *optional*): mean absolute pixel change (pixels in ``[0, 1]``) between the
            plain image and ``image`` outside ``box`` grown by `BOX_MARGIN` pixels (`change_outside`); ``None``
            without a box, or when the box covers the whole image.
    """

    prompt: str
    obj: str
    seed: int
    steps: int
    image: PIL.Image.Image
    plain_image: PIL.Image.Image
    plain_has_object: bool
    window: Window | None
    trials: tuple[Trial, ...]
    box: Box | None
    change_outside_box: float | None

    @property
    def removed(self) -> bool:
        """Whether a window removed the object (the plain image held it, ``image`` does not)."""
        return self.window is not None

    @property
    def outcome(self) -> str:
        """What became of the object in ``image``: ``"absent"`` when the plain image lacks it, else the outcome
        of the chosen trial (``"removed"``), or of the longest window tried when none removed it."""
        if not self.trials:
            return "absent"
        return next(trial.outcome for trial in self.trials if trial.image is self.image)

    @property
    def fractions(self) -> tuple[float, float] | None:
        """``window`` as fractions of the run, e.g. ``(0.2, 0.35)``."""
        return None if self.window is None else window_fractions(self.window, self.steps)

    def summary(self) -> str:
        """One line for people: what was removed, with which window, in how many trials."""
        if not self.plain_has_object:
            return f"{self.obj!r} is not in the image of {self.prompt!r} (seed {self.seed}): nothing to remove."
        tried = f"{len(self.trials)} trial{'s' if len(self.trials) != 1 else ''}"
        if self.window is None:
            last = "" if self.outcome == "present" else f"; the longest window {self.outcome} it in place"
            return f"No window removed {self.obj!r} from {self.prompt!r} (seed {self.seed}) in {tried}{last}."
        start, stop = self.fractions
        change = "" if self.change_outside_box is None else f"; change outside its box {self.change_outside_box:.4f}"
        return (
            f"Removed {self.obj!r} from {self.prompt!r} (seed {self.seed}) with the negative on steps "
            f"{self.window[0]}-{self.window[1] - 1} of {self.steps} ({start:.2f}-{stop:.2f}) after {tried}{change}."
        )


def window_fractions(window: Window, steps: int) -> tuple[float, float]:
    """Steps ``[start, end)`` as the `Negative` window ``(start / steps, end / steps)``: active exactly on those
    steps."""
    return window[0] / steps, window[1] / steps


def change_outside(plain: PIL.Image.Image, image: PIL.Image.Image, box: Box) -> float | None:
    """Mean absolute pixel change (pixels in ``[0, 1]``) between two images outside ``box`` grown by `BOX_MARGIN`
    pixels (`negguide.metrics.change_outside_box`); ``None`` when the grown box covers the whole image."""
    try:
        return change_outside_box(plain, image, box, margin=BOX_MARGIN)
    except ValueError:  # no pixel lies outside the box
        return None


def first_step(start: float, steps: int) -> int:
    """The first step at which a negative starting at fraction ``start`` acts (`Negative.is_active`'s rule)."""
    return next(index for index in range(steps + 1) if index / steps >= start)


def window_search(first: int, last: int, search: str = "linear") -> Generator[int, bool, int | None]:
    """Propose window ends in ``[first, last]``; return the shortest end whose window removes the object.

    A generator: it yields an end to try, is sent the detector's verdict for it (True: the object is still
    there), and returns the chosen end (``None`` when no end removes the object).

    * ``"linear"`` (Ban et al., arXiv 2406.02965): ``first``, ``first + 1``, ...; stops at the first removal.
    * ``"bisect"``: binary search for the smallest removing end; the same answer when the verdict is monotone
      (present for every end below some value, absent from it on), in about ``log2(last - first + 2)`` trials.
    """
    if search == "linear":
        for end in range(first, last + 1):
            present = yield end
            if not present:
                return end
        return None
    low, high, best = first, last, None
    while low <= high:
        middle = (low + high) // 2
        present = yield middle
        if present:
            low = middle + 1
        else:
            best, high = middle, middle - 1
    return best


def initial_noise(
    pipe: DiffusionPipeline, seeds: Sequence[int], height: int | None = None, width: int | None = None
) -> torch.Tensor:
    """The initial latents of a UNet pipeline (SD, SDXL), one image per seed, before the scheduler's scaling:
    what a call with ``generator=[torch.Generator().manual_seed(seed) for seed in seeds]`` draws, so that
    passing them as ``latents=`` gives that call's images. Shape ``(len(seeds), C, height / f, width / f)``."""
    if family_of(pipe).denoiser != "unet":
        raise ValueError(f"initial_noise needs a pipeline with a UNet, got {type(pipe).__name__}.")
    default_height, default_width = _native_size(pipe)
    height, width = height or default_height, width or default_width
    unet = denoiser(pipe)
    shape = (1, unet.config.in_channels, height // pipe.vae_scale_factor, width // pipe.vae_scale_factor)
    dtype = pipe.text_encoder.dtype if pipe.text_encoder is not None else unet.dtype
    rows = [
        randn_tensor(shape, generator=torch.Generator().manual_seed(seed), device=pipe._execution_device, dtype=dtype)
        for seed in seeds
    ]
    return torch.cat(rows)


def remove_object(
    pipe: DiffusionPipeline,
    prompt: str,
    obj: str,
    seed: int = 0,
    *,
    detector: Detector | None = None,
    start: float = 0.2,
    search: str = "linear",
    steps: int = 20,
    guidance_scale: float = 7.5,
    **call_kwargs: Any,
) -> RemovalResult:
    """Remove ``obj`` from the image of ``prompt`` and ``seed`` with the shortest delayed negative that does.

    Ban et al., arXiv 2406.02965, section on adaptive negative prompts: the seed's initial latents are drawn
    once and reused by every image; the negative ``obj`` acts on steps ``[first, end)``, where ``first`` is the
    first step at fraction ``start``, for ``end = first + 1, first + 2, ...`` (``search="linear"``) or by
    bisection over ``end`` (``search="bisect"``, for detectors whose verdict is monotone in the window's
    length); the search stops at the first window whose image the detector judges free of ``obj``.

    Args:
        pipe (`DiffusionPipeline`): a negguide pipeline (e.g. `negguide.load_pipeline()`).
        prompt (`str`): the prompt.
        obj (`str`): the object to remove, used as the negative prompt and asked of the detector.
        seed (`int`, defaults to 0): the seed of the initial latents.
        detector (*optional*): ``detector(image, obj) -> bool``, True when ``obj`` is in the PIL image; an
            optional ``box(image, obj)`` method gives the object's box. Defaults to `ShapesDetector`.
        start (`float`, defaults to 0.2): fraction of the run before the negative starts; in ``[0, 1)``.
        search (`str`, defaults to ``"linear"``): ``"linear"`` or ``"bisect"``.
        steps (`int`, defaults to 20): ``num_inference_steps``.
        guidance_scale (`float`, defaults to 7.5): the classifier-free guidance scale; must be > 1.
        call_kwargs: more pipeline arguments (``height``, ``width``, ``guidance_rescale``, ...).

    Returns:
        `RemovalResult`. Bad arguments raise a ValueError or TypeError before any image is made; a detector
        that raises or returns anything but a bool gives a `DetectorError` naming it.
    """
    return remove_objects(
        pipe,
        [prompt],
        [obj],
        [seed],
        detector=detector,
        start=start,
        search=search,
        steps=steps,
        guidance_scale=guidance_scale,
        **call_kwargs,
    )[0]


def remove_objects(
    pipe: DiffusionPipeline,
    prompts: Sequence[str],
    objs: Sequence[str],
    seeds: Sequence[int],
    *,
    detector: Detector | None = None,
    start: float = 0.2,
    search: str = "linear",
    steps: int = 20,
    guidance_scale: float = 7.5,
    **call_kwargs: Any,
) -> list[RemovalResult]:
    """`remove_object` for several images at once: image ``i`` is ``prompts[i]`` with ``seeds[i]``, its object
    ``objs[i]``. Each image runs its own search; the images that ask for the same window at the same time share
    one pipeline call (one generator per image), so a batch gives the images of single runs."""
    prompts, objs, seeds = _checked_requests(prompts, objs, seeds)
    detector = _checked_detector(detector, objs)
    start = finite_float(start, "start")
    if not 0.0 <= start < 1.0:
        raise ValueError(
            f"`start` must lie in [0, 1), got {start}: it is the fraction of the run before the negative starts, "
            "e.g. start=0.2."
        )
    if search not in SEARCHES:
        raise ValueError(f"`search` must be one of {', '.join(map(repr, SEARCHES))}, got {search!r}.")
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"`steps` must be an int >= 1, got {steps!r}.")
    if finite_float(guidance_scale, "guidance_scale") <= 1:
        raise ValueError(
            f"`guidance_scale` must be > 1, got {guidance_scale}: a negative prompt acts through classifier-free "
            "guidance, which is off at scale 1 or below."
        )
    reserved = sorted(set(call_kwargs) & set(RESERVED_CALL_ARGUMENTS))
    if reserved:
        raise TypeError(f"remove_object sets {', '.join(reserved)} itself; leave them out of the call arguments.")
    num_steps = _num_evaluations(pipe, steps)
    first = first_step(start, num_steps)
    if first >= num_steps:
        raise ValueError(
            f"`start` {start} leaves no step for the negative in a run of {num_steps} steps; lower it or raise `steps`."
        )

    render = _Renderer(pipe, prompts, objs, seeds, num_steps, steps, guidance_scale, call_kwargs)
    plain = render(range(len(seeds)), (first, first))
    present = [_verdict(detector, image, obj) for image, obj in zip(plain, objs)]
    boxes = [_box(detector, image, obj) if has else None for image, obj, has in zip(plain, objs, present)]
    searches = {i: window_search(first + 1, num_steps, search) for i, has in enumerate(present) if has}
    requests = {i: next(generator) for i, generator in searches.items()}
    trials: dict[int, list[Trial]] = defaultdict(list)
    chosen: dict[int, int | None] = {}
    while requests:
        groups: dict[int, list[int]] = defaultdict(list)
        for i, end in requests.items():
            groups[end].append(i)
        for end, images in sorted(groups.items()):
            window = (first, end)
            for i, image in zip(images, render(images, window)):
                outcome = _outcome(detector, plain[i], image, objs[i])
                verdict = outcome != "removed"
                trials[i].append(Trial(window, window_fractions(window, num_steps), verdict, image, outcome))
                try:
                    requests[i] = searches[i].send(verdict)
                except StopIteration as stop:
                    chosen[i] = stop.value
                    del requests[i]
    return [
        _result(prompts[i], objs[i], seeds[i], num_steps, plain[i], present[i], chosen.get(i), trials[i], boxes[i])
        for i in range(len(seeds))
    ]


class _Renderer:
    """Images of a fixed set of requests with the negative on a window of steps, from fixed initial latents.

    UNet pipelines get the latents drawn once (`initial_noise`); other families (packed or transformer latents)
    get a freshly seeded generator per image and call, which draws the same latents every time.
    """

    def __init__(
        self,
        pipe: DiffusionPipeline,
        prompts: Sequence[str],
        objs: Sequence[str],
        seeds: Sequence[int],
        num_steps: int,
        steps: int,
        guidance_scale: float,
        call_kwargs: dict[str, Any],
    ) -> None:
        self.pipe = pipe
        self.prompts, self.objs, self.seeds = prompts, objs, seeds
        self.num_steps = num_steps
        self.kwargs = dict(call_kwargs, num_inference_steps=steps, guidance_scale=guidance_scale, output_type="pil")
        self.latents = None
        if family_of(pipe).denoiser == "unet":
            self.latents = initial_noise(pipe, seeds, call_kwargs.get("height"), call_kwargs.get("width"))

    def __call__(self, images: Sequence[int], window: Window) -> list[PIL.Image.Image]:
        """The images ``images`` (request indices) with the negative on steps ``window``; none when it is empty."""
        images = list(images)
        start, stop = window_fractions(window, self.num_steps)
        objs = tuple(self.objs[i] for i in images)
        negatives = [Negative(objs, start=start, stop=stop)] if window[1] > window[0] else []
        return self.pipe(
            [self.prompts[i] for i in images],
            latents=None if self.latents is None else self.latents[images],
            generator=[torch.Generator().manual_seed(self.seeds[i]) for i in images],
            guidance=NegativePrompts(negatives),
            **self.kwargs,
        ).images


def _result(
    prompt: str,
    obj: str,
    seed: int,
    steps: int,
    plain: PIL.Image.Image,
    present: bool,
    end: int | None,
    trials: list[Trial],
    box: Box | None,
) -> RemovalResult:
    if not trials:
        image, window = plain, None
    elif end is None:
        image, window = max(trials, key=lambda trial: trial.window[1]).image, None
    else:
        chosen = next(trial for trial in trials if trial.window[1] == end)
        image, window = chosen.image, chosen.window
    change = None if box is None else change_outside(plain, image, box)
    return RemovalResult(prompt, obj, seed, steps, image, plain, present, window, tuple(trials), box, change)


def _checked_requests(
    prompts: Sequence[str], objs: Sequence[str], seeds: Sequence[int]
) -> tuple[list[str], list[str], list[int]]:
    prompts, objs, seeds = list(prompts), list(objs), list(seeds)
    if not seeds or not len(prompts) == len(objs) == len(seeds):
        raise ValueError(
            f"give one prompt, object and seed per image, got {len(prompts)} prompts, {len(objs)} objects and "
            f"{len(seeds)} seeds."
        )
    for prompt in prompts:
        if not isinstance(prompt, str) or not prompt.strip():
            raise ValueError(f"`prompt` must be a non-empty string, got {prompt!r}.")
    for obj in objs:
        if not isinstance(obj, str):
            raise TypeError(f"`obj` must be a string naming the object to remove, got {type(obj).__name__} {obj!r}.")
        if not obj.strip():
            raise ValueError("`obj` is empty: name the object to remove, e.g. obj='red square'.")
    for seed in seeds:
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise ValueError(f"`seed` must be a non-negative int, got {seed!r}.")
    return prompts, [obj.strip() for obj in objs], seeds


def _checked_detector(detector: Detector | None, objs: Sequence[str]) -> Detector:
    """The detector to use (`ShapesDetector` by default), with the objects it must read checked up front."""
    if detector is None:
        detector = ShapesDetector()
    if not callable(detector):
        raise TypeError(
            f"`detector` must be a callable detector(image, obj) -> bool, got {type(detector).__name__} {detector!r}."
        )
    if isinstance(detector, ShapesDetector):
        for obj in objs:
            detector.spec(obj)
    return detector


def _detector_name(detector: object) -> str:
    return getattr(detector, "__qualname__", None) or type(detector).__name__


def _ask(call: Callable[[], Any], detector: object, what: str, obj: str) -> Any:
    try:
        return call()
    except Exception as error:
        raise DetectorError(
            f"detector {_detector_name(detector)} raised {type(error).__name__} in {what} for object {obj!r}: {error}"
        ) from error


def _verdict(detector: Detector, image: PIL.Image.Image, obj: str) -> bool:
    """``detector(image, obj)``, checked to be a bool."""
    verdict = _ask(lambda: detector(image, obj), detector, "its call", obj)
    if not isinstance(verdict, (bool, np.bool_)):
        raise DetectorError(
            f"detector {_detector_name(detector)} returned {type(verdict).__name__} {verdict!r} for object {obj!r}; "
            "a detector must return True when the object is in the image and False when it is not."
        )
    return bool(verdict)


def _outcome(detector: Detector, plain: PIL.Image.Image, image: PIL.Image.Image, obj: str) -> str:
    """The detector's ``outcome(plain, image, obj)`` when it has one (checked to be a removal outcome, with
    ``"absent"`` taken as ``"removed"``: the object is not there), else ``"present"`` or ``"removed"`` from its
    verdict on ``image``."""
    judge = getattr(detector, "outcome", None)
    if not callable(judge):
        return "present" if _verdict(detector, image, obj) else "removed"
    outcome = _ask(lambda: judge(plain, image, obj), detector, "outcome()", obj)
    if outcome not in OUTCOMES:
        raise DetectorError(
            f"detector {_detector_name(detector)}.outcome returned {outcome!r} for object {obj!r}; expected one of "
            f"{', '.join(OUTCOMES)}."
        )
    return "removed" if outcome == "absent" else outcome


def _box(detector: Detector, image: PIL.Image.Image, obj: str) -> Box | None:
    """The object's box from the detector's ``box`` method, ``None`` when it has none or finds no box."""
    locate = getattr(detector, "box", None)
    if not callable(locate):
        return None
    box = _ask(lambda: locate(image, obj), detector, "box()", obj)
    if box is None:
        return None
    try:
        edges = tuple(float(edge) for edge in box)
    except (TypeError, ValueError):
        edges = ()
    if len(edges) != 4:
        raise DetectorError(
            f"detector {_detector_name(detector)}.box returned {box!r} for object {obj!r}; expected "
            "(x0, y0, x1, y1) in pixels, or None."
        )
    return edges


def _native_size(pipe: DiffusionPipeline) -> tuple[int, int]:
    sample_size = denoiser(pipe).config.sample_size
    height, width = (sample_size, sample_size) if isinstance(sample_size, int) else tuple(sample_size)
    return height * pipe.vae_scale_factor, width * pipe.vae_scale_factor


def _num_evaluations(pipe: DiffusionPipeline, steps: int) -> int:
    """Network evaluations a run of ``steps`` makes (``len(timesteps)``): the unit of the windows."""
    pipe.scheduler.set_timesteps(steps)
    return len(pipe.scheduler.timesteps)
