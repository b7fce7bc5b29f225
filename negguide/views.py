"""View-dependent prompting for Perp-Neg (Armandpour et al., "Re-imagine the Negative Prompt Algorithm",
arXiv 2304.04968, sections 4.2-4.3): asking a text-to-image model for a given side of an object.

A view at azimuth ``az`` (degrees, 0 = front, 180 = back) is asked for with the interpolated embedding of
two view prompts ("<p>, front view", "<p>, side view", "<p>, back view") as the positive, and the other
views as Perp-Neg negatives whose weights decay as the view approaches them:

* ``|az| < 90``: ``r = 1 - |az| / 90``, positive ``r * E_front + (1 - r) * E_side``, negatives front and side;
* otherwise: ``r = 2 - |az| / 90``, positive ``r * E_side + (1 - r) * E_back``, negatives side and front;
* above ``overhead_elevation`` the overhead prompt alone, without view negatives.

Two weight schedules are built in. ``"threestudio"`` (the default) uses ``f(r) = a * exp(-b * r) + c`` with
threestudio's constants; ``"stable-dreamfusion"`` uses that project's decays (``negative_w = -2``, front decay
2, side decay 10, with its cut-offs at ``r`` 0.2 and 0.8). Weights here follow negguide's convention:
``w >= 0`` pushes away (both projects store the same numbers negated and add them).

`view_mix` gives the numbers for one view; `View` is the setting `negguide.PerpNeg` takes (``view=``) to
generate that view in a pipeline call; `view_embeddings` mixes caller-given embeddings per sample, for score
distillation (`negguide.sds`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch

from negguide.checks import finite_float

VIEWS = ("front", "side", "back", "overhead")
SCHEDULES = ("threestudio", "stable-dreamfusion")


def view_text(prompt: str, view: str) -> str:
    """The prompt for one view: ``"a corgi, back view"``."""
    return f"{prompt}, {view} view"


def decay(r: float, a: float, b: float, c: float) -> float:
    """``f(r) = a * exp(-b * r) + c``, the shifted exponential decay of threestudio's view weights."""
    return a * math.exp(-b * r) + c


#: threestudio's (a, b, c) for f_fs, f_sf, f_sb and f_fsb (``perp_neg_f_*`` in its prompt processor).
THREESTUDIO_F_FS = (4.0, 0.5, -2.426)
THREESTUDIO_F_SF = (4.0, 0.5, -2.426)
THREESTUDIO_F_SB = (1.0, 0.5, -0.606)
THREESTUDIO_F_FSB = (1.0, 0.5, 0.967)
#: stable-dreamfusion's ``negative_w`` (negated), ``front_decay_factor`` and ``side_decay_factor``.
DREAMFUSION_WEIGHT = 2.0
DREAMFUSION_FRONT_DECAY = 2.0
DREAMFUSION_SIDE_DECAY = 10.0


def _threestudio(r: float, front_half: bool) -> tuple[float, float]:
    if front_half:
        return decay(r, *THREESTUDIO_F_FS), decay(1 - r, *THREESTUDIO_F_SF)
    return decay(r, *THREESTUDIO_F_FSB), decay(r, *THREESTUDIO_F_SB)


def _stable_dreamfusion(r: float, front_half: bool) -> tuple[float, float]:
    if front_half:
        front = 0.0 if r > 0.8 else DREAMFUSION_WEIGHT * math.exp(-r * DREAMFUSION_FRONT_DECAY)
        side = 0.0 if r < 0.2 else DREAMFUSION_WEIGHT * math.exp(-(1 - r) * DREAMFUSION_SIDE_DECAY)
        return front, side
    side = 0.0 if r > 0.8 else DREAMFUSION_WEIGHT * math.exp(-r * DREAMFUSION_SIDE_DECAY) / 2
    return DREAMFUSION_WEIGHT, side


_SCHEDULES = {"threestudio": _threestudio, "stable-dreamfusion": _stable_dreamfusion}


@dataclass(frozen=True)
class ViewMix:
    """The conditions of one view.

    Args:
        positive (`tuple[tuple[str, float], ...]`): ``(view, weight)`` pairs whose weighted embeddings sum to
            the positive; the weights sum to 1.
        negatives (`tuple[tuple[str, float], ...]`): ``(view, weight)`` of the view negatives, always front
            then side; a weight is 0 where the schedule switches that negative off (and for overhead views).
    """

    positive: tuple[tuple[str, float], ...]
    negatives: tuple[tuple[str, float], ...]


def _check_schedule(schedule: str, name: str) -> None:
    if schedule not in SCHEDULES:
        raise ValueError(f"`{name}` must be one of {SCHEDULES}, got {schedule!r}.")


def view_mix(
    azimuth: float, elevation: float = 0.0, schedule: str = "threestudio", overhead_elevation: float | None = 60.0
) -> ViewMix:
    """The positive mix and the weighted view negatives for the view at ``azimuth`` and ``elevation``.

    Args:
        azimuth (`float`): degrees, 0 = front, 90 or -90 = side, 180 = back; any finite value (taken mod 360).
        elevation (`float`, defaults to 0.0): degrees above the horizon, in ``[-90, 90]``.
        schedule (`str`, defaults to ``"threestudio"``): ``"threestudio"`` or ``"stable-dreamfusion"``.
        overhead_elevation (`float`, *optional*, defaults to 60.0): above this elevation the view is "overhead";
            ``None``: never.
    """
    azimuth = finite_float(azimuth, "azimuth")
    elevation = finite_float(elevation, "elevation")
    if not -90.0 <= elevation <= 90.0:
        raise ValueError(f"`elevation` must lie in [-90, 90] degrees, got {elevation}.")
    _check_schedule(schedule, "schedule")
    if overhead_elevation is not None and elevation > finite_float(overhead_elevation, "overhead_elevation"):
        return ViewMix((("overhead", 1.0),), (("front", 0.0), ("side", 0.0)))
    magnitude = abs((azimuth + 180.0) % 360.0 - 180.0)  # |az| in [0, 180]
    front_half = magnitude < 90.0
    if front_half:
        r = 1.0 - magnitude / 90.0
        positive = (("front", r), ("side", 1.0 - r))
    else:
        r = 2.0 - magnitude / 90.0
        positive = (("side", r), ("back", 1.0 - r))
    front, side = _SCHEDULES[schedule](r, front_half)
    return ViewMix(positive, (("front", front), ("side", side)))


@dataclass(frozen=True)
class View:
    """The view `negguide.PerpNeg` generates (``PerpNeg(view=View(azimuth=180))``: a back view).

    The call's prompt becomes the view prompts of `view_mix`: the positive is the blend of their text
    embeddings, the view negatives join the module's other negatives.

    Args:
        azimuth (`float`): degrees, 0 = front, 90 = side, 180 = back.
        elevation (`float`, defaults to 0.0): degrees above the horizon, in ``[-90, 90]``.
        schedule (`str`, defaults to ``"threestudio"``): ``"threestudio"`` or ``"stable-dreamfusion"``.
        overhead_elevation (`float`, *optional*, defaults to 60.0): see `view_mix`.
    """

    azimuth: float
    elevation: float = 0.0
    schedule: str = "threestudio"
    overhead_elevation: float | None = 60.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "azimuth", finite_float(self.azimuth, "View.azimuth"))
        object.__setattr__(self, "elevation", finite_float(self.elevation, "View.elevation"))
        _check_schedule(self.schedule, "View.schedule")
        if self.overhead_elevation is not None:
            object.__setattr__(
                self, "overhead_elevation", finite_float(self.overhead_elevation, "View.overhead_elevation")
            )
        self.mix()

    def mix(self) -> ViewMix:
        """This view's `ViewMix`."""
        return view_mix(self.azimuth, self.elevation, self.schedule, self.overhead_elevation)


def view_embeddings(
    embeds: Mapping[str, torch.Tensor],
    azimuth: torch.Tensor | Sequence[float],
    elevation: torch.Tensor | Sequence[float] | None = None,
    schedule: str = "threestudio",
    overhead_elevation: float | None = 60.0,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-sample view conditions from the embeddings of the view prompts, for a batch of camera views.

    Args:
        embeds (`Mapping[str, torch.Tensor]`): the text embedding of each view prompt (`view_text`), keyed
            ``"front"``, ``"side"``, ``"back"`` (and ``"overhead"`` when a view can be overhead), each of shape
            ``(L, D)`` or ``(1, L, D)``.
        azimuth (`torch.Tensor` or `Sequence[float]`): one azimuth per sample, degrees, shape ``(B,)``.
        elevation (`torch.Tensor` or `Sequence[float]`, *optional*): one elevation per sample; 0 when omitted.
        schedule, overhead_elevation: see `view_mix`.

    Returns:
        ``(positive, negatives, weights)``: the blended positive embeddings ``(B, L, D)``, the view-negative
        embeddings ``(B, 2, L, D)`` (front, side), both in the embeddings' dtype, and their weights ``(B, 2)`` in fp32.
    """
    azimuths = [float(a) for a in torch.as_tensor(azimuth, dtype=torch.float64).reshape(-1)]
    elevations = (
        [0.0] * len(azimuths) if elevation is None else [float(e) for e in torch.as_tensor(elevation).reshape(-1)]
    )
    if len(elevations) != len(azimuths):
        raise ValueError(f"`elevation` has {len(elevations)} values for {len(azimuths)} azimuths: give one per sample.")
    mixes = [view_mix(a, e, schedule, overhead_elevation) for a, e in zip(azimuths, elevations)]

    def embedding(view: str) -> torch.Tensor:
        if view not in embeds:
            raise ValueError(
                f"`embeds` has no {view!r} embedding (keys: {sorted(embeds)}): encode view_text(prompt, {view!r})."
            )
        tensor = embeds[view]
        return tensor[0] if tensor.ndim == 3 else tensor

    positive = torch.stack([sum(w * embedding(v) for v, w in mix.positive if w) for mix in mixes])
    negatives = torch.stack([torch.stack([embedding(v) for v, _ in mix.negatives]) for mix in mixes])
    weights = torch.tensor([[w for _, w in mix.negatives] for mix in mixes], device=negatives.device)
    return positive, negatives, weights
