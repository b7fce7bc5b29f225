"""The post-combine chain: steps that run, in order, on every combiner's guided prediction (ComfyUI's
post-CFG functions). Guidance rescale is its member today; a step is any `PostCombine`."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

import torch

from negguide import functional as F
from negguide.branches import COND, Step


class PostCombine(Protocol):
    """``post(pred, preds, step) -> pred``: the guided prediction ``(num_images, ...)`` changed, given the step's
    branch predictions (branch name -> ``(num_images, ...)``)."""

    def __call__(self, pred: torch.Tensor, preds: Mapping[str, torch.Tensor], step: Step) -> torch.Tensor: ...


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
