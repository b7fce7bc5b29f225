"""Guidance modules: the contract, the registry and the built-in modules."""

from negguide.modules.base import (
    Combiner,
    GuidanceModule,
    PatchContext,
    Patcher,
    PatchState,
    guidance_from_dict,
    register_guidance,
)
from negguide.modules.nag import NAG
from negguide.modules.negatives import Negative, NegativePrompts
from negguide.modules.negtome import NegToMe
from negguide.modules.perpneg import PerpNeg
from negguide.modules.resolve import resolve_guidance

__all__ = [
    "NAG",
    "Combiner",
    "GuidanceModule",
    "NegToMe",
    "Negative",
    "NegativePrompts",
    "PatchContext",
    "PatchState",
    "Patcher",
    "PerpNeg",
    "guidance_from_dict",
    "register_guidance",
    "resolve_guidance",
]
