"""Load a negguide pipeline: the embedded shapes-world model, a local folder or a hub id."""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path

import torch
from diffusers import DiffusionPipeline

EMBEDDED_MODEL_NAME = "shapes-world"


def embedded_model_path() -> Path:
    """The folder of the shapes-world model shipped inside the package."""
    path = Path(str(resources.files("negguide.shapes") / "model"))
    if not (path / "model_index.json").is_file():
        raise FileNotFoundError(
            f"the embedded shapes-world model is missing from {path}; reinstall negguide or train it with "
            "`python -m negguide.shapes.train`")
    return path


def _pipeline_classes() -> dict[str, type[DiffusionPipeline]]:
    from negguide.pipelines import StableDiffusionNegGuidePipeline

    return {"StableDiffusionPipeline": StableDiffusionNegGuidePipeline,
            StableDiffusionNegGuidePipeline.__name__: StableDiffusionNegGuidePipeline}


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


def load_pipeline(model: str | os.PathLike | None = None, *, device: str | torch.device | None = None,
                  torch_dtype: torch.dtype | None = None, **kwargs) -> DiffusionPipeline:
    """Load a model as a negguide pipeline.

    Args:
        model (`str` or `os.PathLike`, *optional*): a local diffusers folder or a hub id. ``None`` (the
            default) loads the embedded shapes-world model, offline.
        device (`str` or `torch.device`, *optional*): where to put it; CUDA when available, else CPU.
        torch_dtype (`torch.dtype`, *optional*): float16 on CUDA, float32 on the CPU by default.
        kwargs: passed on to ``from_pretrained`` (``variant``, ``revision``, ``cache_dir``, ...).
    """
    device = torch.device(device or default_device())
    if torch_dtype is None:
        torch_dtype = torch.float16 if device.type == "cuda" else torch.float32
    if model is None:
        model = embedded_model_path()
    elif isinstance(model, (str, os.PathLike)):
        path = Path(model)
        if not path.exists() and (isinstance(model, os.PathLike) or str(model).count("/") != 1):
            raise ValueError(f"model {str(model)!r} is neither an existing folder nor a hub id like 'org/name'")
    else:
        raise TypeError(f"model must be a folder path, a hub id or None, got {type(model).__name__}")
    cls = pipeline_class_for(model)
    pipe = cls.from_pretrained(model, torch_dtype=torch_dtype, **kwargs)
    return pipe.to(device)
