"""The demo's model: described from its configuration at start, loaded on the first generation, used by one
generation at a time (a diffusers pipeline keeps per-call state on its scheduler)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

import PIL.Image
from diffusers import DiffusionPipeline

from negguide.generate import Batch, ModelInfo, generate_images, read_model
from negguide.loading import load_pipeline

T = TypeVar("T")


@dataclass
class DemoModel:
    """A model the demo generates with.

    Args:
        info (`ModelInfo`): its name (recorded in every image), sampler and native size.
        load (`Callable[[], DiffusionPipeline]`): makes the negguide pipeline; called once, on first use.
    """

    info: ModelInfo
    load: Callable[[], DiffusionPipeline]
    _pipe: DiffusionPipeline | None = field(default=None, init=False, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)

    @classmethod
    def from_model(cls, model: str | None = None, device: str | None = None) -> DemoModel:
        """The embedded shapes-world model (``None``), a local folder or a hub id; only its configuration is read
        now (`negguide.errors.InputError` when it cannot be)."""
        info = read_model(model)
        return cls(info, lambda: load_pipeline(info.source, device=device))

    @classmethod
    def from_pipeline(cls, pipe: DiffusionPipeline, name: str | None = None) -> DemoModel:
        """An already loaded negguide pipeline, recorded in the images as ``name`` (its folder or class by
        default)."""
        size = pipe.unet.config.sample_size
        height, width = (size, size) if isinstance(size, int) else size
        info = ModelInfo(
            name=name or pipe.name_or_path or type(pipe).__name__,
            sampler=type(pipe.scheduler).__name__,
            width=width * pipe.vae_scale_factor,
            height=height * pipe.vae_scale_factor,
        )
        return cls(info, lambda: pipe)

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
        """The images of ``batch`` from one pipeline call, made exactly as ``negguide generate`` makes them."""
        return self.call(lambda pipe: generate_images(pipe, batch))
