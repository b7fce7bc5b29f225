"""Guidance modules: the contract, the registry and the built-in modules."""

from negguide.modules.base import (
    Combiner,
    GuidanceModule,
    Patcher,
    PatchState,
    guidance_from_dict,
    register_guidance,
)
from negguide.modules.negatives import Negative, NegativePrompts
from negguide.modules.resolve import resolve_guidance

__all__ = [
    "Combiner",
    "GuidanceModule",
    "Negative",
    "NegativePrompts",
    "PatchState",
    "Patcher",
    "guidance_from_dict",
    "register_guidance",
    "resolve_guidance",
]
