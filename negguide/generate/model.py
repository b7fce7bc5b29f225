"""The model of a batch run, read from its configuration files only (no weights), so that a plan, a dry run
and every check happen before anything heavy is loaded."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from diffusers import AutoencoderKL, DiffusionPipeline, UNet2DConditionModel

from negguide.errors import InputError
from negguide.loading import (
    DEFAULT_GUIDANCE_SCALE,
    DISTILLED_MODEL_NAME,
    EMBEDDED_GUIDANCE_SCALE,
    EMBEDDED_MODEL_NAME,
    distilled_unet_path,
    embedded_model_path,
    is_embedded_model,
    load_pipeline,
)


@dataclass(frozen=True)
class ModelInfo:
    """What a plan needs to know about the model.

    Args:
        name (`str`): ``"shapes-world"`` for the embedded model, an absolute folder path, or a hub id; recorded
            in every image so that it can be regenerated.
        sampler (`str`): the scheduler's class name.
        width (`int`), height (`int`): the model's native image size.
    """

    name: str
    sampler: str
    width: int
    height: int

    @property
    def source(self) -> str | None:
        """The ``model`` argument of `negguide.load_pipeline`: ``None`` for the embedded model."""
        return None if self.name == EMBEDDED_MODEL_NAME else self.name

    @property
    def embedded(self) -> bool:
        """Whether ``name`` is the embedded shapes-world model, by its name or its folder."""
        return is_embedded_model(self.name)

    @property
    def guidance_scale(self) -> float:
        """The guidance scale used unless a run gives one: `EMBEDDED_GUIDANCE_SCALE` for the embedded model
        (it over-guides at 7.5), `DEFAULT_GUIDANCE_SCALE` for any other."""
        return EMBEDDED_GUIDANCE_SCALE if self.embedded else DEFAULT_GUIDANCE_SCALE


def model_label(name: str) -> str:
    """A short name for the ``Model`` key of an image's parameters: a folder's last part, else ``name``."""
    return Path(name).name if Path(name).is_absolute() else name


def read_model(model: str | None, argument: str = "--model") -> ModelInfo:
    """`ModelInfo` of an embedded model (``None`` or ``"shapes-world"``, ``"shapes-world-distilled"``), a local
    folder or a hub id."""
    if model is None or model in (EMBEDDED_MODEL_NAME, DISTILLED_MODEL_NAME):
        try:
            location: str | Path = embedded_model_path()
            if model == DISTILLED_MODEL_NAME:
                distilled_unet_path()
        except FileNotFoundError as error:
            raise InputError(f"`{argument}`: {error}; or name a model folder with --model.") from None
        name = model or EMBEDDED_MODEL_NAME
    elif Path(model).exists():
        location = Path(model).resolve()
        name = str(location)
    elif model.count("/") == 1 and not model.startswith((".", "/")):
        location = name = model
    else:
        raise InputError(f"`{argument}`: {model!r} is neither an existing folder nor a hub id like 'org/name'.")
    try:
        index = DiffusionPipeline.load_config(location)
        unet = UNet2DConditionModel.load_config(location, subfolder="unet")
        vae = AutoencoderKL.load_config(location, subfolder="vae")
        sampler = index["scheduler"][1]
        sample_size = unet["sample_size"]
        scale = 2 ** (len(vae["block_out_channels"]) - 1)
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise InputError(f"`{argument}`: cannot read the configuration of {model or name!r}: {error}") from None
    height, width = (sample_size, sample_size) if isinstance(sample_size, int) else sample_size
    return ModelInfo(name=name, sampler=sampler, width=width * scale, height=height * scale)


def load_model(info: ModelInfo, device: str | None) -> DiffusionPipeline:
    """The negguide pipeline of ``info``, on ``device`` (CUDA when available by default), progress bars off."""
    pipe = load_pipeline(info.source, device=device)
    pipe.set_progress_bar_config(disable=True)
    return pipe
