"""pytest plugin that runs diffusers' own pipeline tests offline, against the stock classes or negguide's.

Loaded by ``tests/peer/run.py`` (``-p plugin``); reads two environment variables:

* ``NEGGUIDE_PEER_CLASSES``: ``stock`` (diffusers' classes, the reference count) or ``ours`` (every test class
  whose ``pipeline_class`` is a stock class of a negguide family gets the negguide class instead);
* ``NEGGUIDE_PEER_FIXTURES``: the folder with the committed tokenizer fixtures (``tokenizer``: CLIP,
  ``t5_tokenizer``: T5), which stand in for the hub's ``hf-internal-testing/tiny-random-*`` repositories.

With ``ours``, every pipeline call in a test also runs the stock ``__call__`` on the same instance (the same
components), with the same inputs and random state, and fails when the two outputs differ: golden slices that a
test compares against are thereby compared against the stock class's own output on the same components.
"""

from __future__ import annotations

import copy
import functools
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import diffusers.pipelines
import numpy as np
import PIL.Image
import pytest
import torch
import transformers
from diffusers import FluxPipeline, StableDiffusion3Pipeline, StableDiffusionPipeline, StableDiffusionXLPipeline

from negguide.pipelines import (
    FluxNegGuidePipeline,
    StableDiffusion3NegGuidePipeline,
    StableDiffusionNegGuidePipeline,
    StableDiffusionXLNegGuidePipeline,
)

OURS = {
    StableDiffusionPipeline: StableDiffusionNegGuidePipeline,
    StableDiffusionXLPipeline: StableDiffusionXLNegGuidePipeline,
    StableDiffusion3Pipeline: StableDiffusion3NegGuidePipeline,
    FluxPipeline: FluxNegGuidePipeline,
}
TOLERANCE = 1e-4
"""Largest difference between ours and stock on float outputs."""
IMAGE_TOLERANCE = 1.0 / 255.0 + 1e-9
"""Largest difference on PIL images scaled to [0, 1]: one level of 8 bits (rounding near a half)."""

FIXTURES = Path(os.environ["NEGGUIDE_PEER_FIXTURES"])
TINY_T5 = {
    "model_type": "t5",
    "vocab_size": 1000,
    "d_model": 32,
    "d_kv": 8,
    "d_ff": 37,
    "num_layers": 2,
    "num_heads": 4,
    "relative_attention_num_buckets": 8,
    "dropout_rate": 0.0,
}
"""The config of the hub's ``hf-internal-testing/tiny-random-t5`` the tests read, sized to the T5 fixture."""


def _local(name: str) -> str | None:
    """The fixture folder standing in for hub repository ``name``, if any."""
    if not isinstance(name, str) or not name.startswith("hf-internal-testing/tiny-random-"):
        return None
    kind = name.removeprefix("hf-internal-testing/tiny-random-")
    if kind == "clip":
        return str(FIXTURES / "tokenizer")
    if kind == "t5":
        return str(FIXTURES / "t5_tokenizer")
    return None


def _redirect(owner: type, attribute: str, config_folder: str | None = None) -> None:
    original = getattr(owner, attribute).__func__

    @functools.wraps(original)
    def from_pretrained(cls: type, name: Any, *args: Any, **kwargs: Any) -> Any:
        local = _local(name)
        if local is not None:
            name = config_folder if config_folder and local.endswith("t5_tokenizer") else local
        return original(cls, name, *args, **kwargs)

    setattr(owner, attribute, classmethod(from_pretrained))


def _t5_config_folder() -> str:
    folder = Path(tempfile.mkdtemp(prefix="negguide-peer-t5-"))
    transformers.T5Config(**{key: value for key, value in TINY_T5.items() if key != "model_type"}).save_pretrained(
        folder
    )
    return str(folder)


def pytest_configure(config: pytest.Config) -> None:
    _redirect(transformers.PreTrainedTokenizerBase, "from_pretrained")
    _redirect(transformers.AutoTokenizer, "from_pretrained")
    _redirect(transformers.AutoConfig, "from_pretrained", config_folder=_t5_config_folder())


def pytest_collection_modifyitems(session: pytest.Session, config: pytest.Config, items: list[pytest.Item]) -> None:
    if os.environ.get("NEGGUIDE_PEER_CLASSES", "stock") != "ours":
        return
    for item in items:
        cls = getattr(item, "cls", None)
        stock = getattr(cls, "pipeline_class", None)
        if stock in OURS:
            cls.pipeline_class = OURS[stock]
    for stock, ours in OURS.items():
        # diffusers' test utilities look the class under test up by name in `diffusers.pipelines`.
        setattr(diffusers.pipelines, ours.__name__, ours)
        if "__call__" in vars(ours) and not hasattr(vars(ours)["__call__"], "__peer_shadowed__"):
            ours.__call__ = _shadowed(ours.__call__, stock.__call__)


def _shadowed(ours: Callable[..., Any], stock: Callable[..., Any]) -> Callable[..., Any]:
    """``ours``, also running ``stock`` first on the same pipeline and inputs; their outputs must agree.

    Calls with a step-end callback are not shadowed (a callback may count its calls or change the pipeline).
    A call the stock class refuses runs ours alone: the test itself says whether ours must refuse it too.
    """

    @functools.wraps(ours)
    def call(pipe: Any, *args: Any, **kwargs: Any) -> Any:
        if kwargs.get("callback_on_step_end") is not None or kwargs.get("guidance") is not None:
            return ours(pipe, *args, **kwargs)
        states = _random_states(args, kwargs)
        try:
            expected = stock(pipe, *_cloned(args), **_cloned(kwargs))
        except (ValueError, TypeError, AttributeError, RuntimeError, AssertionError):
            _restore(states)
            return ours(pipe, *args, **kwargs)
        _restore(states)
        got = ours(pipe, *args, **kwargs)
        _assert_close(_arrays(got), _arrays(expected))
        return got

    call.__peer_shadowed__ = True
    return call


def _generators(args: tuple, kwargs: dict) -> list[torch.Generator]:
    generator = kwargs.get("generator")
    if isinstance(generator, torch.Generator):
        return [generator]
    if isinstance(generator, list):
        return [g for g in generator if isinstance(g, torch.Generator)]
    return []


def _random_states(args: tuple, kwargs: dict) -> list[tuple[Any, Any]]:
    states: list[tuple[Any, Any]] = [(None, torch.random.get_rng_state())]
    states += [(g, g.get_state()) for g in _generators(args, kwargs)]
    return states


def _restore(states: list[tuple[Any, Any]]) -> None:
    for generator, state in states:
        if generator is None:
            torch.random.set_rng_state(state)
        else:
            generator.set_state(state)


def _cloned(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.clone()
    if isinstance(value, (list, tuple)):
        return type(value)(_cloned(item) for item in value)
    if isinstance(value, dict):
        return {key: _cloned(item) for key, item in value.items()}
    if isinstance(value, (torch.Generator, PIL.Image.Image)) or callable(value):
        return value
    return copy.copy(value)


def _arrays(output: Any) -> list[tuple[np.ndarray, float]]:
    """Every image of a pipeline output as a float array, with the tolerance of its type (PIL images scaled to
    [0, 1])."""
    if hasattr(output, "images"):
        output = output.images
    if isinstance(output, tuple):
        output = output[0]
    if isinstance(output, torch.Tensor):
        return [(output.detach().float().cpu().numpy(), TOLERANCE)]
    if isinstance(output, np.ndarray):
        return [(output.astype(np.float64), TOLERANCE)]
    if isinstance(output, list):
        return [(np.asarray(image, dtype=np.float64) / 255.0, IMAGE_TOLERANCE) for image in output]
    return []


def _assert_close(got: list[tuple[np.ndarray, float]], expected: list[tuple[np.ndarray, float]]) -> None:
    assert len(got) == len(expected), f"ours returned {len(got)} outputs, stock {len(expected)}"
    for (ours, tolerance), (stock, _) in zip(got, expected):
        assert ours.shape == stock.shape, f"ours has shape {ours.shape}, stock {stock.shape}"
        difference = float(np.abs(ours - stock).max()) if ours.size else 0.0
        assert difference <= tolerance, f"ours differs from stock by {difference} (tolerance {tolerance})"
