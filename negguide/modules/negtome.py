"""NegToMe, negative token merging: push image tokens away from other images of the batch or from a
reference image, inside the network (Singh et al., arXiv 2412.01339, CVPR 2025)."""

from __future__ import annotations

import functools
import math
import os
import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import PIL.Image
import torch
from diffusers.utils.torch_utils import randn_tensor

from negguide.branches import Branch, CallInfo, Step
from negguide.checks import finite_float, unit_interval
from negguide.images import DATA_URI_PREFIX, ImageLike, binary_mask, image_to_json, load_image
from negguide.layout import BatchLayout, ExtraRow
from negguide.modules.base import PatchContext, Patcher, PatchState, register_guidance
from negguide.modules.layers import select_attention
from negguide.token_merging import negtome_merge
from negguide.window import Window

MODES = ("batch", "reference")
ANCHORS = ("first", "nearest")
DEFAULT_LAYERS = r"^(up_blocks|transformer_blocks|single_transformer_blocks)\."


@register_guidance("negtome")
@dataclass(frozen=True)
class NegToMe(Patcher):
    r"""Negative token merging (Singh et al., "Negative Token Merging: Image-based Adversarial Feature
    Guidance", arXiv 2412.01339, CVPR 2025).

    At the outputs of the chosen attention layers, during the window ``[start, stop)`` of the run, each image
    token ``x_i`` finds its most similar token ``r_{j*}`` of a reference frame (cosine similarity) and, where
    the similarity exceeds ``threshold``, becomes ``x_i + alpha * (x_i - r_{j*})`` (`negtome_merge`).

    * ``mode="batch"`` (output diversity): the reference frame of an image is another image of the same prompt
      and the same branch. ``anchor="first"`` is the paper's choice: every image is pushed from the first
      image of its prompt, which itself is left as it is. ``anchor="nearest"`` pushes every image from the
      tokens of all the other images of its prompt, so each token moves away from its nearest counterpart.
    * ``mode="reference"`` (steer away from an image, e.g. a copyrighted look): each reference image is
      VAE-encoded once per call, noised to every step's timestep with the module's own generator (``seed``),
      and run as an extra row per branch, prompt and reference inside the window; its tokens are the reference
      frame. Those rows are never returned. ``mask`` limits which reference tokens may be matched.

    Works under any combiner (standard negatives, Perp-Neg) and with ``guidance_scale=1``. The rows of a
    forward are grouped by the `BatchLayout` the core passes, never by position.

    Args:
        mode (`str`, defaults to ``"batch"``): ``"batch"`` or ``"reference"``.
        alpha (`float`, defaults to 0.9): extrapolation strength; negative values pull toward the reference.
        threshold (`float`, defaults to 0.7): cosine similarity above which a token is merged, in ``[-1, 1]``
            (the paper: 0.7 for SDXL, 0.65 for Flux); 1 merges nothing.
        start (`float`, defaults to 0.0): first step fraction at which tokens are merged.
        stop (`float`, defaults to 0.2): step fraction from which they no longer are; the paper's SDXL window,
            timesteps 1000 -> 800, is the first fifth of the run.
        anchor (`str`, defaults to ``"first"``): batch mode only, ``"first"`` or ``"nearest"`` (see above).
        reference (`ImageLike` or a sequence of them): reference mode only: PIL images (any size and mode;
            converted to RGB and resized to the call's size), image file paths, or PNG data URIs.
        mask (*optional*): reference mode only: the reference pixels whose tokens may be matched (white). One
            mask for every reference or one per reference, each of its reference's size, binary-like: a PIL
            image, an image path or data URI, or a 2-D array or tensor in ``[0, 1]``. Stored as 0/255 images.
        layers (`str`, defaults to ``DEFAULT_LAYERS``): regular expression searched in the model's module
            names; the matching attention modules (diffusers ``Attention``) are hooked. The default takes a
            UNet's ``up_blocks`` (the paper's SDXL code) and a transformer's joint and single blocks (the
            paper's Flux code; SD3's joint blocks). A pattern that matches no attention module raises a
            ValueError when the call starts.
        min_scale (`float`, defaults to 0.25): act only on layers whose token grid side is at least this
            fraction of the latent side (the paper's SDXL code: feature maps of side >= 32 for 128 latents).
        seed (`int`, defaults to 0): seed of the generator that noises the reference images.

    ``to_dict()`` writes file paths as given and in-memory images (references and masks, given as PIL images,
    arrays or data URIs) as lossless PNG data URIs, so a configuration round-trips through JSON.
    """

    whole_branches: ClassVar[bool] = True

    mode: str = "batch"
    alpha: float = 0.9
    threshold: float = 0.7
    start: float = 0.0
    stop: float = 0.2
    anchor: str = "first"
    reference: tuple[ImageLike, ...] = ()
    mask: tuple[ImageLike, ...] | None = None
    layers: str = DEFAULT_LAYERS
    min_scale: float = 0.25
    seed: int = 0

    def __post_init__(self) -> None:
        _choice(self.mode, MODES, "mode")
        _choice(self.anchor, ANCHORS, "anchor")
        alpha = finite_float(self.alpha, "alpha")
        threshold = finite_float(self.threshold, "threshold")
        if not -1.0 <= threshold <= 1.0:
            raise ValueError(
                f"`threshold` is a cosine similarity and must lie in [-1, 1], got {threshold}; 1 merges nothing."
            )
        window = Window(self.start, self.stop)
        min_scale = unit_interval(self.min_scale, "min_scale")
        if min_scale == 0:
            raise ValueError("`min_scale` must be > 0: it is the smallest token grid side, as a share of the latent's.")
        if not isinstance(self.layers, str):
            raise TypeError(f"`layers` must be a regular expression string, got {type(self.layers).__name__}.")
        try:
            re.compile(self.layers)
        except re.error as error:
            raise ValueError(f"`layers` is not a valid regular expression: {error}.") from None
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise ValueError(f"`seed` must be a non-negative int, got {self.seed!r}.")
        object.__setattr__(self, "alpha", alpha)
        object.__setattr__(self, "threshold", threshold)
        object.__setattr__(self, "start", window.start)
        object.__setattr__(self, "stop", window.stop)
        object.__setattr__(self, "min_scale", min_scale)
        self._set_images()

    def _set_images(self) -> None:
        """Check ``reference`` and ``mask``, keep them as stored settings and as the images the call uses."""
        references = _as_tuple(self.reference)
        masks = () if self.mask is None else _as_tuple(self.mask)
        if self.mode == "batch" and (references or masks):
            raise ValueError("`reference` and `mask` are for mode='reference'; batch mode compares the batch's images.")
        if self.mode == "reference":
            if not references:
                raise ValueError("mode='reference' needs `reference`: a PIL image, an image path, or a list of them.")
            if self.anchor != "first":
                raise ValueError("`anchor` is for mode='batch'; in reference mode the references are the anchors.")
        images = tuple(load_image(item, f"reference[{i}]") for i, item in enumerate(references))
        mask_images = tuple(binary_mask(item, f"mask[{i}]") for i, item in enumerate(masks))
        _check_masks(mask_images, images)
        if len(mask_images) == 1:
            mask_images *= len(images)
        object.__setattr__(self, "reference", tuple(map(_stored, references, images)))
        object.__setattr__(self, "mask", tuple(map(_stored, masks, mask_images)) or None)
        object.__setattr__(self, "_images", tuple(image.convert("RGB") for image in images))
        object.__setattr__(self, "_masks", tuple(torch.from_numpy(np.asarray(m) > 127) for m in mask_images))

    @property
    def reference_images(self) -> tuple[PIL.Image.Image, ...]:
        """The reference images, loaded, in RGB."""
        return self._images

    @property
    def reference_masks(self) -> tuple[torch.Tensor, ...]:
        """One boolean ``(H, W)`` mask per reference image (True: may be matched), or none."""
        return self._masks

    def to_dict(self) -> dict[str, Any]:
        data = super().to_dict()
        data["reference"] = [image_to_json(item) for item in self.reference]
        data["mask"] = None if self.mask is None else [image_to_json(item) for item in self.mask]
        return data

    def is_active(self, step: Step) -> bool:
        """Whether tokens are merged at ``step``."""
        return Window(self.start, self.stop).contains(step)

    @contextmanager
    def patch(self, model: torch.nn.Module, call: CallInfo, context: PatchContext) -> Iterator[PatchState]:
        layers = self.select_layers(model)
        state = NegToMeState(self, call, context, _device(model))
        handles = []
        try:
            for name, module in layers.items():
                handles.append(module.register_forward_hook(functools.partial(state.merge, name)))
            yield state
        finally:
            for handle in handles:
                handle.remove()

    def select_layers(self, model: torch.nn.Module) -> dict[str, torch.nn.Module]:
        """The attention modules of ``model`` whose names match ``layers``; ValueError when there are none."""
        return select_attention(model, self.layers, "NegToMe", "up_blocks.1.attentions.0.transformer_blocks.0.attn1")


@dataclass(frozen=True)
class _Plan:
    """Which rows of a forward are merged (``targets``) against which rows (``sources``, one list each)."""

    targets: torch.Tensor  # (T,)
    sources: torch.Tensor  # (T, m)
    num_rows: int


class NegToMeState(PatchState):
    """One call of `NegToMe`: the clean reference latents, the reference noise generator, and the merge plan of
    the forward about to run."""

    def __init__(self, module: NegToMe, call: CallInfo, context: PatchContext, device: torch.device) -> None:
        if context.latent_shape is None:
            raise ValueError("NegToMe needs a pipeline that passes its latent shape in the PatchContext.")
        self.module = module
        self.call = call
        self.device = device
        self.tag = f"negtome-reference@{id(self):x}"
        _, self.height, self.width = context.latent_shape
        self.min_tokens = module.min_scale**2 * self.height * self.width * (1 - 1e-6)
        self._plan: _Plan | None = None
        self._plans: dict[BatchLayout, _Plan | None] = {}
        self._token_masks: dict[int, torch.Tensor | None] = {}
        self.add_noise = context.add_noise
        self.clean: torch.Tensor | None = None
        if module.mode == "reference":
            if context.encode_image is None or context.add_noise is None:
                raise ValueError("NegToMe(mode='reference') needs a pipeline that can encode and noise images.")
            # (K, C, H, W): every reference, encoded once per call
            self.clean = torch.stack([context.encode_image(image) for image in module.reference_images])
            self.generator = torch.Generator().manual_seed(module.seed)

    def extra_rows(self, step: Step, branches: Sequence[Branch]) -> Sequence[ExtraRow]:
        """Inside the window, in reference mode: every reference noised to ``step``, per branch and prompt."""
        if self.clean is None or not self.module.is_active(step):
            return ()
        noise = randn_tensor(
            self.clean.shape, generator=self.generator, device=self.clean.device, dtype=self.clean.dtype
        )
        noisy = self.add_noise(self.clean, noise, step)
        return [
            ExtraRow(branch.name, prompt, latents, self.tag)
            for branch in branches
            for prompt in range(self.call.num_prompts)
            for latents in noisy
        ]

    def before_forward(self, step: Step, layout: BatchLayout) -> None:
        if not self.module.is_active(step):
            self._plan = None
            return
        if layout not in self._plans:
            self._plans[layout] = self._plan_for(layout)
        self._plan = self._plans[layout]

    def _plan_for(self, layout: BatchLayout) -> _Plan | None:
        groups: dict[tuple[str, int], tuple[list[int], list[int]]] = {}
        for index, row in enumerate(layout.rows):
            images, references = groups.setdefault((row.branch, row.prompt), ([], []))
            if row.image is not None:
                images.append(index)
            elif row.tag == self.tag:
                references.append(index)
        targets: list[int] = []
        sources: list[list[int]] = []
        for images, references in groups.values():
            if self.module.mode == "reference":
                pairs = [(image, references) for image in images]
            elif self.module.anchor == "first":
                pairs = [(image, images[:1]) for image in images[1:]]
            else:
                pairs = [(image, [other for other in images if other != image]) for image in images]
            # A prompt with one image (or no reference row) has nothing to be pushed from.
            pairs = [(target, source) for target, source in pairs if source]
            targets.extend(target for target, _ in pairs)
            sources.extend(source for _, source in pairs)
        if not targets:
            return None
        return _Plan(torch.tensor(targets, device=self.device), torch.tensor(sources, device=self.device), len(layout))

    def merge(self, name: str, module: torch.nn.Module, args: tuple, output: Any) -> torch.Tensor | None:
        """Forward hook of a selected layer: merge the planned rows' tokens; ``None`` leaves the output as is."""
        plan = self._plan
        if plan is None:
            return None
        # Rows past the layout's are a text stream's (`negguide.text_stream`, Flux's single blocks): left as they are.
        if not isinstance(output, torch.Tensor) or output.ndim != 3 or len(output) < plan.num_rows:
            shape = tuple(output.shape) if isinstance(output, torch.Tensor) else type(output).__name__
            raise ValueError(
                f"NegToMe: layer {name!r} returned {shape}, not ({plan.num_rows} rows, tokens, channels); choose "
                "attention layers whose output holds image tokens with `layers`."
            )
        if output.shape[1] < self.min_tokens:
            return None
        tokens = output[plan.targets]  # (T, N, C)
        reference = output[plan.sources].flatten(1, 2)  # (T, m * N, C)
        merged = negtome_merge(tokens, reference, self.module.alpha, self.module.threshold, self._mask(output))
        return output.index_copy(0, plan.targets, merged)

    def _mask(self, output: torch.Tensor) -> torch.Tensor | None:
        """The reference tokens that may be matched, ``(K * N,)``, on this layer's token grid (``None``: all)."""
        tokens = output.shape[1]
        if tokens not in self._token_masks:
            masks = self.module.reference_masks
            if not masks:
                self._token_masks[tokens] = None
            else:
                grid = _token_grid(tokens, self.height, self.width)
                resized = [_resized_mask(mask, grid).flatten() for mask in masks]
                self._token_masks[tokens] = torch.cat(resized).to(output.device)
        return self._token_masks[tokens]


def _token_grid(tokens: int, height: int, width: int) -> tuple[int, int]:
    """The ``(h, w)`` grid of a layer with ``tokens`` tokens, for latents of ``height x width``."""
    factor = round(math.sqrt(height * width / tokens))
    grid = (math.ceil(height / factor), math.ceil(width / factor))
    if grid[0] * grid[1] != tokens:
        raise ValueError(f"NegToMe: cannot lay {tokens} tokens on a grid for {height}x{width} latents.")
    return grid


def _resized_mask(mask: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    resized = torch.nn.functional.interpolate(mask[None, None].float(), size=grid, mode="nearest-exact")
    return resized[0, 0] > 0.5


def _device(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device


def _choice(value: object, choices: tuple[str, ...], name: str) -> None:
    if value not in choices:
        raise ValueError(f"`{name}` must be one of {', '.join(map(repr, choices))}; got {value!r}.")


def _as_tuple(value: object) -> tuple:
    return tuple(value) if isinstance(value, (list, tuple)) else (value,)


def _stored(item: object, image: PIL.Image.Image) -> ImageLike:
    """An image setting as the configuration keeps it: a file path as its string, anything else as the image."""
    if isinstance(item, (str, os.PathLike)) and not str(item).startswith(DATA_URI_PREFIX):
        return str(item)
    return image


def _check_masks(masks: Sequence[PIL.Image.Image], images: Sequence[PIL.Image.Image]) -> None:
    if not masks:
        return
    if len(masks) not in (1, len(images)):
        raise ValueError(
            f"`mask` holds {len(masks)} masks for {len(images)} references: give one, or one per reference."
        )
    for i, image in enumerate(images):
        mask = masks[0] if len(masks) == 1 else masks[i]
        if mask.size != image.size:
            raise ValueError(
                f"`mask` is {mask.size[0]}x{mask.size[1]} but reference[{i}] is {image.size[0]}x{image.size[1]}: "
                "a mask must have its reference's size."
            )
