"""Per-family facts, the one table through which the faces (``negguide generate``, ``analyze``, ``remove``, the
demo) reach a model: which component denoises, the stock default guidance scale, and how a negative is paid for.

A family is read from a folder's ``model_index.json`` (its ``_class_name``: the stock diffusers pipeline or ours)
or from a loaded pipeline's class.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from diffusers import DiffusionPipeline

CFG_ROWS = "cfg rows"
"""A negative costs one more batch row per image: classifier-free guidance evaluates it beside the prompt."""
TRUE_CFG = "true cfg"
"""The model is guidance-distilled (one evaluation per image makes a guided image); a negative needs true
classifier-free guidance, ``true_cfg_scale > 1``: one more row per image and branch."""


@dataclass(frozen=True)
class Family:
    """What the faces need to know about a model family.

    Args:
        name (`str`): ``"sd"``, ``"sdxl"``, ``"sd3"`` or ``"flux"``.
        pipeline (`str`): the stock diffusers pipeline's class name (``model_index.json``'s ``_class_name``).
        denoiser (`str`): the pipeline attribute of the denoising network, ``"unet"`` or ``"transformer"``.
        guidance_scale (`float`): the stock ``__call__``'s default ``guidance_scale``.
        negative_cost (`str`): `CFG_ROWS` or `TRUE_CFG`; a guidance-distilled UNet of the SD families is
            `TRUE_CFG` too (see `negative_cost`).
        text_tokenizer (`str`): the tokenizer whose token positions index the denoiser's text tokens (CLIP's for
            SD, SDXL and SD3, whose T5 tokens follow CLIP's; T5's, ``tokenizer_2``, for Flux).
    """

    name: str
    pipeline: str
    denoiser: str
    guidance_scale: float
    negative_cost: str
    text_tokenizer: str = "tokenizer"


FAMILIES = (
    Family("sd", "StableDiffusionPipeline", "unet", 7.5, CFG_ROWS),
    Family("sdxl", "StableDiffusionXLPipeline", "unet", 5.0, CFG_ROWS),
    Family("sd3", "StableDiffusion3Pipeline", "transformer", 7.0, CFG_ROWS),
    Family("flux", "FluxPipeline", "transformer", 3.5, TRUE_CFG, text_tokenizer="tokenizer_2"),
)
_BY_PIPELINE = {family.pipeline: family for family in FAMILIES}
_OURS = {"StableDiffusionNegGuidePipeline": "sd", "StableDiffusionXLNegGuidePipeline": "sdxl"}
_OURS |= {"StableDiffusion3NegGuidePipeline": "sd3", "FluxNegGuidePipeline": "flux"}


def family_named(class_name: str) -> Family:
    """The family of a pipeline class name (the stock one or negguide's); ValueError for any other."""
    if class_name in _OURS:
        return next(family for family in FAMILIES if family.name == _OURS[class_name])
    if class_name not in _BY_PIPELINE:
        supported = ", ".join(family.pipeline for family in FAMILIES)
        raise ValueError(f"a {class_name!r} is not a family negguide supports ({supported}).")
    return _BY_PIPELINE[class_name]


def family_of_index(index: Mapping[str, Any]) -> Family:
    """The family of a ``model_index.json``."""
    return family_named(str(index.get("_class_name")))


def family_of(pipe: DiffusionPipeline) -> Family:
    """The family of a loaded pipeline: its class or the first family class it derives from; else (an object that
    stands in for a pipeline, forwarding its attributes) the components it has."""
    for cls in type(pipe).__mro__:
        if cls.__name__ in _BY_PIPELINE or cls.__name__ in _OURS:
            return family_named(cls.__name__)
    if getattr(pipe, "unet", None) is not None:
        return family_named("StableDiffusionXLPipeline" if hasattr(pipe, "text_encoder_2") else "StableDiffusionPipeline")
    if getattr(pipe, "transformer", None) is not None:
        return family_named("StableDiffusion3Pipeline" if hasattr(pipe, "text_encoder_3") else "FluxPipeline")
    return family_named(type(pipe).__name__)


def denoiser(pipe: DiffusionPipeline) -> torch.nn.Module:
    """The pipeline's denoising network: its UNet or its transformer."""
    return getattr(pipe, family_of(pipe).denoiser)


def negative_cost(family: Family, denoiser_config: Mapping[str, Any]) -> str:
    """How a negative is paid for on a model of ``family`` whose denoiser has ``denoiser_config``: a UNet with a
    guidance-scale embedding (``time_cond_proj_dim``: LCM students, ``shapes-world-distilled``) needs true CFG."""
    if family.negative_cost == CFG_ROWS and denoiser_config.get("time_cond_proj_dim") is not None:
        return TRUE_CFG
    return family.negative_cost
