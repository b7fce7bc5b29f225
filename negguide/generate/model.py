"""The model of a batch run, read from its configuration files only (no weights), so that a plan, a dry run
and every check happen before anything heavy is loaded."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from diffusers import AutoencoderKL, DiffusionPipeline
from diffusers.configuration_utils import ConfigMixin

from negguide.errors import InputError
from negguide.families import TRUE_CFG, family_of_index, negative_cost
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


class NetworkConfig(ConfigMixin):
    """Reads a component's ``config.json``, whatever its class (a UNet, a transformer)."""

    config_name = "config.json"


FLUX_SAMPLE_SIZE = 128
"""diffusers' `FluxPipeline.default_sample_size`, in latent pixels."""


@dataclass(frozen=True)
class ModelInfo:
    """What a plan needs to know about the model.

    Args:
        name (`str`): ``"shapes-world"`` for the embedded model, an absolute folder path, or a hub id; recorded
            in every image so that it can be regenerated.
        sampler (`str`): the scheduler's class name.
        width (`int`), height (`int`): the model's native image size.
        family (`str`): ``"sd"``, ``"sdxl"``, ``"sd3"`` or ``"flux"`` (`negguide.families`).
        family_scale (`float`): the family's stock default guidance scale.
        negative_cost (`str`): how a negative is paid for (`negguide.families.CFG_ROWS` or ``TRUE_CFG``).
    """

    name: str
    sampler: str
    width: int
    height: int
    family: str = "sd"
    family_scale: float = DEFAULT_GUIDANCE_SCALE
    negative_cost: str = "cfg rows"

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
        (it over-guides at 7.5), the family's stock default for any other (7.5 SD, 5 SDXL, 7 SD3, 3.5 Flux)."""
        return EMBEDDED_GUIDANCE_SCALE if self.embedded else self.family_scale

    @property
    def true_cfg(self) -> bool:
        """Whether negatives need ``true_cfg_scale > 1`` (Flux, guidance-distilled UNets)."""
        return self.negative_cost == TRUE_CFG


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
        family = family_of_index(index)
        if model == DISTILLED_MODEL_NAME:
            network = NetworkConfig.load_config(distilled_unet_path())
        else:
            network = NetworkConfig.load_config(location, subfolder=family.denoiser)
        vae = AutoencoderKL.load_config(location, subfolder="vae")
        sampler = index["scheduler"][1]
        scale = 2 ** (len(vae["block_out_channels"]) - 1)
        # Flux's pipeline has a fixed default sample size (128 latent pixels); the others read their network's.
        sample_size = FLUX_SAMPLE_SIZE if family.name == "flux" else network["sample_size"]
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise InputError(f"`{argument}`: cannot read the configuration of {model or name!r}: {error}") from None
    height, width = (sample_size, sample_size) if isinstance(sample_size, int) else sample_size
    return ModelInfo(
        name=name,
        sampler=sampler,
        width=width * scale,
        height=height * scale,
        family=family.name,
        family_scale=family.guidance_scale,
        negative_cost=negative_cost(family, network),
    )


def load_model(info: ModelInfo, device: str | None) -> DiffusionPipeline:
    """The negguide pipeline of ``info``, on ``device`` (CUDA when available by default), progress bars off."""
    pipe = load_pipeline(info.source, device=device)
    pipe.set_progress_bar_config(disable=True)
    return pipe
