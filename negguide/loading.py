"""Load a negguide pipeline: the embedded shapes-world model, a local folder or a hub id."""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path

import torch
from diffusers import DiffusionPipeline, FluxPipeline, StableDiffusion3Pipeline

EMBEDDED_MODEL_NAME = "shapes-world"
DISTILLED_MODEL_NAME = "shapes-world-distilled"
"""The embedded model distilled into one evaluation per guided step (`negguide.shapes.distill`): its UNet takes
the guidance scale as an embedding; the VAE, text encoder and tokenizer are the shapes-world model's."""
DEFAULT_GUIDANCE_SCALE = 7.5
"""The classifier-free guidance scale of diffusers' Stable Diffusion pipelines, the default for any model but
the embedded one."""
EMBEDDED_GUIDANCE_SCALE = 5.0
"""The scale the embedded shapes-world model is served and evaluated at: it over-guides at 7.5 (README,
"Shapes world")."""


def embedded_model_path() -> Path:
    """The folder of the shapes-world model shipped inside the package."""
    path = Path(str(resources.files("negguide.shapes") / "model"))
    if not (path / "model_index.json").is_file():
        raise FileNotFoundError(
            f"the embedded shapes-world model is missing from {path}; reinstall negguide or train it with "
            "`python -m negguide.shapes.train`")
    return path


def distilled_unet_path() -> Path:
    """The folder of the guidance-distilled shapes-world UNet shipped inside the package."""
    path = Path(str(resources.files("negguide.shapes") / "distilled" / "unet"))
    if not (path / "config.json").is_file():
        raise FileNotFoundError(
            f"the embedded {DISTILLED_MODEL_NAME} UNet is missing from {path}; reinstall negguide or distil it with "
            "`python -m negguide.shapes.distill`")
    return path


def is_embedded_model(model: str | os.PathLike | None) -> bool:
    """Whether ``model`` names an embedded shapes-world model: ``None``, `EMBEDDED_MODEL_NAME`,
    `DISTILLED_MODEL_NAME`, or the shapes-world folder."""
    if model is None or model in (EMBEDDED_MODEL_NAME, DISTILLED_MODEL_NAME):
        return True
    try:
        return Path(model).resolve() == embedded_model_path().resolve()
    except OSError:
        return False


def _pipeline_classes() -> dict[str, type[DiffusionPipeline]]:
    """Our class for each ``_class_name`` a ``model_index.json`` may hold: the stock pipeline's name and ours."""
    from negguide import pipelines

    ours = (pipelines.StableDiffusionNegGuidePipeline, pipelines.StableDiffusionXLNegGuidePipeline,
            pipelines.StableDiffusion3NegGuidePipeline, pipelines.FluxNegGuidePipeline)
    return {name: cls for cls in ours for name in (cls.__bases__[0].__name__, cls.__name__)}


def pipeline_class_for(model: str | os.PathLike) -> type[DiffusionPipeline]:
    """The negguide pipeline class for a model folder or hub id, read from its ``model_index.json``."""
    config = DiffusionPipeline.load_config(model)
    name = config.get("_class_name")
    classes = _pipeline_classes()
    if name not in classes:
        raise ValueError(f"model {str(model)!r} is a {name!r}, which negguide does not support; "
                         f"supported families: {sorted(set(classes))}")
    return classes[name]


def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def default_dtype(cls: type[DiffusionPipeline], device: torch.device) -> torch.dtype:
    """float32 on the CPU; on CUDA bfloat16 for the transformer families (SD3, Flux), as their model cards
    load them, and float16 for the UNet ones (SD, SDXL)."""
    if device.type != "cuda":
        return torch.float32
    transformer = issubclass(cls, (StableDiffusion3Pipeline, FluxPipeline))
    return torch.bfloat16 if transformer and torch.cuda.is_bf16_supported() else torch.float16


def load_pipeline(model: str | os.PathLike | None = None, *, device: str | torch.device | None = None,
                  dtype: torch.dtype | None = None, **kwargs) -> DiffusionPipeline:
    """Load a model as a negguide pipeline.

    Args:
        model (`str` or `os.PathLike`, *optional*): a local diffusers folder or a hub id. ``None`` (the
            default) or ``"shapes-world"`` loads the embedded shapes-world model, ``"shapes-world-distilled"`` its
            guidance-distilled student, both offline.
        device (`str` or `torch.device`, *optional*): where to put it; CUDA when available, else CPU.
        dtype (`torch.dtype`, *optional*): by default float32 on the CPU; on CUDA float16 for SD and SDXL,
            bfloat16 for SD3 and Flux.
        kwargs: passed on to ``from_pretrained`` (``variant``, ``revision``, ``cache_dir``, ...).
    """
    device = torch.device(device or default_device())
    if model == DISTILLED_MODEL_NAME:
        return _load_distilled(device, dtype, **kwargs)
    if model is None or model == EMBEDDED_MODEL_NAME:
        model = embedded_model_path()
    elif isinstance(model, (str, os.PathLike)):
        path = Path(model)
        if not path.exists() and (isinstance(model, os.PathLike) or str(model).count("/") != 1):
            raise ValueError(f"model {str(model)!r} is neither an existing folder nor a hub id like 'org/name'")
    else:
        raise TypeError(f"model must be a folder path, a hub id or None, got {type(model).__name__}")
    cls = pipeline_class_for(model)
    pipe = cls.from_pretrained(model, dtype=dtype or default_dtype(cls, device), **kwargs)
    return pipe.to(device)


def _load_distilled(device: torch.device, dtype: torch.dtype | None, **kwargs) -> DiffusionPipeline:
    """The distilled shapes-world model: its own UNet beside the shapes-world model's other components."""
    from diffusers import UNet2DConditionModel

    from negguide.pipelines import StableDiffusionNegGuidePipeline

    dtype = dtype or default_dtype(StableDiffusionNegGuidePipeline, device)
    unet = UNet2DConditionModel.from_pretrained(distilled_unet_path(), dtype=dtype)
    pipe = StableDiffusionNegGuidePipeline.from_pretrained(embedded_model_path(), unet=unet, dtype=dtype, **kwargs)
    return pipe.to(device)
