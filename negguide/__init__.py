"""negguide: control over what a diffusion model must not draw, as a plug-in for diffusers."""

from negguide.modules import (
    Combiner,
    GuidanceModule,
    Negative,
    NegativePrompts,
    Patcher,
    PatchState,
    guidance_from_dict,
    register_guidance,
)
from negguide.loading import load_pipeline

__all__ = [
    "Combiner",
    "GuidanceModule",
    "Negative",
    "NegativePrompts",
    "PatchState",
    "Patcher",
    "guidance_from_dict",
    "load_pipeline",
    "register_guidance",
]
