"""The guidance-module contract, and the registry that builds modules by name.

A module is a frozen dataclass: a validated configuration with no per-call state, so one instance can
serve many calls. It plays one of two roles:

* a `Combiner` says which branches a step needs and combines their predictions into one (exactly one
  combiner per call);
* a `Patcher` changes the network itself while the denoising loop runs (any number per call).

Every module serialises with ``to_dict()`` and comes back with `guidance_from_dict`, so configurations
recorded by the demo, the batch command or an image's metadata rebuild the same module.
"""

from __future__ import annotations

import dataclasses
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

import torch

from negguide.branches import Branch, CallInfo, Step, TextKey
from negguide.layout import BatchLayout, ExtraRow

if TYPE_CHECKING:
    import PIL.Image
    from typing_extensions import Self

M = TypeVar("M", bound="GuidanceModule")

_REGISTRY: dict[str, type[GuidanceModule]] = {}


class GuidanceModule(ABC):
    """Base of all guidance modules. Subclasses are ``@dataclass(frozen=True)`` and validate in
    ``__post_init__``; `register_guidance` gives them their ``name``."""

    name: ClassVar[str]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready configuration: ``{"name": ..., <field>: <value>, ...}``."""
        if _REGISTRY.get(getattr(self, "name", None)) is not type(self):
            raise TypeError(f"{type(self).__name__} is not registered: decorate it with @register_guidance(name).")
        return {"name": self.name, **_plain(self)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Self:
        """Inverse of `to_dict`. Unknown keys raise a ValueError naming them."""
        name = data.get("name", cls.name)
        if name != cls.name:
            raise ValueError(f"`data` describes module {name!r}, not {cls.name!r}; use negguide.guidance_from_dict.")
        return cls(**dataclass_kwargs(cls, {key: value for key, value in data.items() if key != "name"}))

    @classmethod
    def from_negative_prompt(cls, negative_prompt: str | list[str] | None) -> Self:
        """The module a call builds when ``guidance=`` is this module's registry name.

        The default uses the module's defaults; the call's ``negative_prompt`` still reaches every combiner
        through `CallInfo.negative_prompts`. Modules that take their negatives from it override this.
        """
        return cls()


class Combiner(GuidanceModule):
    """Declares a step's branches and combines their predictions.

    Rules the core relies on:

    * every step has a branch named ``cond``, the positive (normally ``CallInfo.prompts``); when guidance
      is off (``guidance_scale <= 1``) the core evaluates only that branch and skips `combine`;
    * branch names are unique within a step and rows follow the order `branches` returns them in
      (diffusers' order is ``uncond`` then ``cond``); a branch absent from a step costs no network rows;
    * ``guidance_rescale`` (Lin et al., arXiv 2305.08891) is applied by the core after `combine`, against
      the ``cond`` prediction, whatever the combiner.
    """

    guidance_rescale: float = 0.0
    max_rows: int | None = None
    """Largest number of rows per network evaluation; the core splits larger batches (between rows, or between
    branches when a patcher relates a branch's rows: `Patcher.whole_branches`). It overrides a call's
    ``memory_budget``."""

    @abstractmethod
    def branches(self, call: CallInfo, step: Step) -> tuple[Branch, ...]:
        """The branches to evaluate at ``step``, in row order. Must be a pure function of its arguments."""

    @abstractmethod
    def combine(
        self, preds: Mapping[str, torch.Tensor], call: CallInfo, step: Step, guidance_scale: float
    ) -> torch.Tensor:
        """One prediction per image from ``preds`` (branch name -> ``(num_images, ...)`` tensor)."""


@dataclass(frozen=True)
class PatchContext:
    """What a pipeline lends its patchers for one call, beside the prompts (`CallInfo`).

    A field is ``None`` where the pipeline does not offer it; a patcher that needs it raises a ValueError.

    Args:
        latent_shape (`tuple[int, ...]`, *optional*): the shape of one image's latents as the VAE gives them,
            ``(C, H, W)`` (also for Flux, whose network takes them packed into tokens).
        encode_image (*optional*): ``encode_image(image) -> latents``: a PIL image (any size or mode) as the clean
            latents of one image of the call, at the call's size, on the network's device and dtype (the family's
            VAE encoding and latent scaling), laid out like one row of the call's latents: ``(C, H, W)``, or
            ``(tokens, channels)`` for Flux.
        add_noise (*optional*): ``add_noise(latents, noise, step) -> noisy``: clean latents ``(N, ...)`` (rows as
            ``encode_image`` gives them) noised to ``step``'s timestep by the scheduler's forward process, on the
            scale of the step's latents.
        conditions (*optional*): ``conditions(keys) -> fields``: the conditioning fields of text conditions, one
            row per key, as the network takes them (``encoder_hidden_states``, pooled embeddings, ...). The core
            sets it: the texts a patcher declares (`Patcher.texts`) are encoded with every other text of the
            call, once, before the first network evaluation; ask for them from a hook, not while entering.
    """

    latent_shape: tuple[int, ...] | None = None
    encode_image: Callable[[PIL.Image.Image], torch.Tensor] | None = None
    add_noise: Callable[[torch.Tensor, torch.Tensor, Step], torch.Tensor] | None = None
    conditions: Callable[[Sequence[TextKey]], dict[str, torch.Tensor]] | None = None


class PatchState:
    """Per-call state of a patcher, alive while its hooks are installed (see `Patcher.patch`)."""

    def extra_rows(self, step: Step, branches: Sequence[Branch]) -> Sequence[ExtraRow]:
        """Rows to add to this step's batch (e.g. a noised reference image per branch). Default: none."""
        return ()

    def before_forward(self, step: Step, layout: BatchLayout) -> None:
        """Called before every network evaluation with the layout of the rows it is about to see."""


class Patcher(GuidanceModule):
    """Changes the network while the denoising loop runs (token merging, attention guidance, ...).

    ``image_tokens_only`` says what the forward hooks a patcher puts on a transformer's attention modules see:
    ``True`` (the default), only the image tokens of their outputs (`negguide.image_tokens`); ``False``, the
    attention modules as they are, text stream included, for patchers that work on the text stream themselves.
    """

    image_tokens_only: ClassVar[bool] = True
    whole_branches: ClassVar[bool] = False
    """Whether the patcher's hooks relate the rows of a branch (its images, its extra rows), so that a batch split
    for memory (`negguide.memory`) or by ``max_rows`` must keep each branch in one evaluation; otherwise rows are
    split one by one."""

    def texts(self, call: CallInfo) -> tuple[TextKey, ...]:
        """Text conditions the patcher needs encoded (its own negatives, say); the core encodes them with the
        call's other texts and lends them through `PatchContext.conditions`. Default: none."""
        return ()

    @abstractmethod
    def patch(
        self, model: torch.nn.Module, call: CallInfo, context: PatchContext
    ) -> AbstractContextManager[PatchState]:
        """Install hooks on this ``model`` instance and yield the state they read.

        The context is entered before any network evaluation of the call (so selection errors cost nothing)
        and spans the whole denoising loop; hooks must be removed in ``finally`` so that an exception leaves
        the model as it was. Nothing may be patched at class level. ``context`` holds what the pipeline
        lends for the call (latent shape, image encoding, noising).
        """


def register_guidance(name: str):
    """Class decorator: make a module buildable by ``name`` (`guidance_from_dict`, ``guidance="name"``)."""

    def register(cls: type[M]) -> type[M]:
        if name in _REGISTRY and _REGISTRY[name] is not cls:
            raise ValueError(f"A guidance module is already registered as {name!r}: {_REGISTRY[name].__name__}.")
        cls.name = name
        _REGISTRY[name] = cls
        return cls

    return register


def registered(name: str, argument: str) -> type[GuidanceModule]:
    """The module class registered as ``name``; ValueError naming ``argument`` and the known names."""
    if name not in _REGISTRY:
        known = ", ".join(sorted(_REGISTRY))
        raise ValueError(f"`{argument}`: unknown guidance module {name!r}; known modules: {known}.")
    return _REGISTRY[name]


def guidance_from_dict(data: Mapping[str, Any]) -> GuidanceModule:
    """Rebuild a module from its ``to_dict()`` form."""
    if not isinstance(data, Mapping) or not isinstance(data.get("name"), str):
        raise TypeError(f"`data` must be a mapping with a string 'name', got {data!r}.")
    return registered(data["name"], "data['name']").from_dict(data)


def dataclass_kwargs(cls: type, data: Mapping[str, Any]) -> dict[str, Any]:
    """``data`` as keyword arguments of dataclass ``cls``; ValueError naming any key it does not take."""
    known = {field.name for field in dataclasses.fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ValueError(
            f"{cls.__name__} has no setting {', '.join(unknown)}; known settings: {', '.join(sorted(known))}."
        )
    return dict(data)


def _plain(value: Any) -> Any:
    """Dataclasses as dicts of their fields and tuples as lists, recursively: JSON-ready values."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {field.name: _plain(getattr(value, field.name)) for field in dataclasses.fields(value)}
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    return value
