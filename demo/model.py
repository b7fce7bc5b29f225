"""The demo's model: described from its configuration at start, loaded on the first generation, used by one
generation at a time (a diffusers pipeline keeps per-call state on its scheduler)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

import PIL.Image
from diffusers import DiffusionPipeline, UNet2DConditionModel

from negguide.errors import InputError
from negguide.families import TRUE_CFG, denoiser, family_of, family_of_index, negative_cost
from negguide.generate import Batch, ModelInfo, generate_images, read_model
from negguide.loading import DISTILLED_MODEL_NAME, EMBEDDED_MODEL_NAME, load_pipeline

T = TypeVar("T")
EMBEDDED_MODELS = (EMBEDDED_MODEL_NAME, DISTILLED_MODEL_NAME)
"""The models the demo offers when none is named: those of them whose weights are installed."""


@dataclass(frozen=True)
class TokenCount:
    """How much of a text the model reads: ``total`` tokens, of which the first ``kept`` (``kept_text``)."""

    total: int
    kept: int
    kept_text: str

    @property
    def truncated(self) -> bool:
        return self.total > self.kept


@dataclass
class DemoModel:
    """A model the demo generates with.

    Args:
        info (`ModelInfo`): its name (recorded in every image), sampler and native size.
        load (`Callable[[], DiffusionPipeline]`): makes the negguide pipeline; called once, on first use.
        distilled (`bool`): a guidance-distilled model (its UNet takes the guidance scale as an embedding): one
            evaluation per step, negatives through true CFG or NAG.
    """

    info: ModelInfo
    load: Callable[[], DiffusionPipeline]
    distilled: bool = False
    _pipe: DiffusionPipeline | None = field(default=None, init=False, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)

    @classmethod
    def from_model(cls, model: str | None = None, device: str | None = None) -> DemoModel:
        """The embedded shapes-world model (``None``), a local folder or a hub id; only its configuration is read
        now (`negguide.errors.InputError` when it cannot be)."""
        info = read_model(model)
        return cls(info, lambda: load_pipeline(info.source, device=device), _distilled_config(info))

    @classmethod
    def from_pipeline(cls, pipe: DiffusionPipeline, name: str | None = None) -> DemoModel:
        """An already loaded negguide pipeline, recorded in the images as ``name`` (its folder or class by
        default)."""
        network = denoiser(pipe)
        size = network.config.get("sample_size") or pipe.default_sample_size
        height, width = (size, size) if isinstance(size, int) else size
        info = ModelInfo(
            name=name or pipe.name_or_path or type(pipe).__name__,
            sampler=type(pipe.scheduler).__name__,
            width=width * pipe.vae_scale_factor,
            height=height * pipe.vae_scale_factor,
        )
        return cls(info, lambda: pipe, negative_cost(family_of(pipe), network.config) == TRUE_CFG)

    @property
    def loaded(self) -> bool:
        """Whether the pipeline has been made."""
        return self._pipe is not None

    def call(self, work: Callable[[DiffusionPipeline], T]) -> T:
        """``work(pipeline)``, with the pipeline made on first use and one call at a time."""
        with self._lock:
            if self._pipe is None:
                self._pipe = self.load()
            return work(self._pipe)

    def generate(self, batch: Batch) -> list[PIL.Image.Image]:
        """The images of ``batch`` from one pipeline call, made exactly as ``negguide generate`` makes them (true
        classifier-free guidance where its jobs ask for it)."""
        return self.call(lambda pipe: generate_images(pipe, batch))

    def tokens(self, text: str) -> TokenCount:
        """How much of ``text`` the model's text encoder reads (loads the model)."""
        return self.call(lambda pipe: count_tokens(pipe.tokenizer, text))


def count_tokens(tokenizer: object, text: str) -> TokenCount:
    """``text``'s tokens under ``tokenizer`` (a transformers tokenizer that adds a start and an end token) and the
    part of them its encoder reads: ``model_max_length`` less those two."""
    ids = tokenizer(text, truncation=False, add_special_tokens=False).input_ids
    kept = max(tokenizer.model_max_length - 2, 0)
    return TokenCount(len(ids), min(len(ids), kept), tokenizer.decode(ids[:kept]))


def demo_models(device: str | None = None) -> dict[str, DemoModel]:
    """The embedded models whose weights are installed (`EMBEDDED_MODELS`), by name; the shapes world at least."""
    models = {}
    for name in EMBEDDED_MODELS:
        try:
            models[name] = DemoModel.from_model(name, device)
        except InputError:
            if not models:
                raise
    return models


def _distilled_config(info: ModelInfo) -> bool:
    if info.name == DISTILLED_MODEL_NAME:
        return True
    if info.source is None or info.embedded:
        return False
    try:
        family = family_of_index(DiffusionPipeline.load_config(info.source))
        config = UNet2DConditionModel.load_config(info.source, subfolder=family.denoiser)  # any denoiser's config.json
    except (OSError, ValueError):
        return False
    return negative_cost(family, config) == TRUE_CFG

