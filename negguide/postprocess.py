"""The post-combine chain: steps that run, in order, on every combiner's guided prediction (ComfyUI's
post-CFG functions). Guidance rescale is its member today; a step is any `PostCombine`."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Protocol

import torch

from negguide import functional as F
from negguide.branches import COND, Step


class PostCombine(Protocol):
    """``post(pred, preds, step) -> pred``: the guided prediction ``(num_images, ...)`` changed, given the step's
    branch predictions (branch name -> ``(num_images, ...)``)."""

    def __call__(self, pred: torch.Tensor, preds: Mapping[str, torch.Tensor], step: Step) -> torch.Tensor: ...


class Refinement(Protocol):
    """``refine(pred, preds, step, rerun) -> pred``: a step after the post-combine chain that needs one more network
    evaluation of the prompt's rows: ``rerun(denoise)`` runs ``denoise`` (a `negguide.core.Denoiser`, e.g. the
    network with some layers skipped) on the ``cond`` branch's image rows and returns its ``(num_images, ...)``
    prediction."""

    def __call__(
        self,
        pred: torch.Tensor,
        preds: Mapping[str, torch.Tensor],
        step: Step,
        rerun: Callable[[Callable[[torch.Tensor, dict[str, torch.Tensor]], torch.Tensor]], torch.Tensor],
    ) -> torch.Tensor: ...


@dataclass(frozen=True)
class GuidanceRescale:
    """Rescale the guided prediction towards the ``cond`` branch's standard deviation (Lin et al., "Common
    Diffusion Noise Schedules and Sample Steps are Flawed", arXiv 2305.08891), `F.rescale_noise_cfg`.

    Args:
        phi (`float`): the rescale factor in ``(0, 1]``.
    """

    phi: float

    def __call__(self, pred: torch.Tensor, preds: Mapping[str, torch.Tensor], step: Step) -> torch.Tensor:
        return F.rescale_noise_cfg(pred, preds[COND], self.phi)


@dataclass(frozen=True)
class SkipLayerGuidance:
    """Skip-layer guidance, as diffusers' `StableDiffusion3Pipeline` runs it (``skip_guidance_layers``; the
    spatiotemporal skip guidance of Hyung et al., arXiv 2411.18664): at steps ``i`` with
    ``start * n < i < stop * n``, ``pred + scale * (e_cond - e_skip)``, where ``e_skip`` is the network's
    prediction for the prompt's rows with the layers skipped: an evaluation of its own, after guidance.

    Args:
        denoiser: ``denoiser(step)``: the network at ``step`` with the layers skipped (a `negguide.core.Denoiser`).
        scale (`float`): ``skip_layer_guidance_scale``.
        start (`float`), stop (`float`): ``skip_layer_guidance_start`` and ``_stop``, fractions of the steps.
    """

    denoiser: Callable[[Step], Callable[[torch.Tensor, dict[str, torch.Tensor]], torch.Tensor]]
    scale: float
    start: float
    stop: float

    def __call__(
        self,
        pred: torch.Tensor,
        preds: Mapping[str, torch.Tensor],
        step: Step,
        rerun: Callable[[Callable[[torch.Tensor, dict[str, torch.Tensor]], torch.Tensor]], torch.Tensor],
    ) -> torch.Tensor:
        if not step.num_steps * self.start < step.index < step.num_steps * self.stop:
            return pred
        return pred + (preds[COND] - rerun(self.denoiser(step))) * self.scale
