"""negguide: control over what a diffusion model must not draw, as a plug-in for diffusers."""

from negguide.analysis import AnalysisResult, analyze_negative
from negguide.loading import load_pipeline
from negguide.modules import (
    NAG,
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
from negguide.removal import RemovalResult, remove_object, remove_objects
from negguide.views import View

__all__ = [
    "NAG",
    "AnalysisResult",
    "Combiner",
    "GuidanceModule",
    "NegToMe",
    "Negative",
    "NegativePrompts",
    "PatchState",
    "Patcher",
    "PerpNeg",
    "RemovalResult",
    "View",
    "analyze_negative",
    "guidance_from_dict",
    "load_pipeline",
    "register_guidance",
    "remove_object",
    "remove_objects",
]
