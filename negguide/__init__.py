"""negguide: control over what a diffusion model must not draw, as a plug-in for diffusers.

The names below load on first use, so that importing the package imports neither diffusers' pipelines nor
transformers: the ``negguide`` command line sets up what the libraries print before they load.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
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

_MODULES = {
    "negguide.analysis": ("AnalysisResult", "analyze_negative"),
    "negguide.loading": ("load_pipeline",),
    "negguide.modules": (
        "NAG",
        "Combiner",
        "GuidanceModule",
        "Negative",
        "NegativePrompts",
        "NegToMe",
        "Patcher",
        "PatchState",
        "PerpNeg",
        "guidance_from_dict",
        "register_guidance",
    ),
    "negguide.removal": ("RemovalResult", "remove_object", "remove_objects"),
    "negguide.views": ("View",),
}
_HOME = {name: module for module, names in _MODULES.items() for name in names}

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


def __getattr__(name: str) -> object:
    """A public name, imported from its module on first use and kept; an AttributeError for any other name."""
    if name not in _HOME:
        raise AttributeError(f"module 'negguide' has no attribute {name!r}")
    value = getattr(importlib.import_module(_HOME[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    """The module's names with the public names not loaded yet."""
    return sorted({*globals(), *__all__})
