"""negguide: control over what a diffusion model must not draw, as a plug-in for diffusers."""

from negguide.loading import load_pipeline
from negguide.modules import (
    Combiner,
    GuidanceModule,
    Negative,
    NegativePrompts,
    NegToMe,
    Patcher,
    PatchState,
    PerpNeg,
    guidance_from_dict,
    register_guidance,
)
from negguide.views import View

__all__ = [
    "Combiner",
    "GuidanceModule",
    "NegToMe",
    "Negative",
    "NegativePrompts",
    "PatchState",
    "Patcher",
    "PerpNeg",
    "View",
    "guidance_from_dict",
    "load_pipeline",
    "register_guidance",
]
