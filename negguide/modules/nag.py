"""NAG, normalized attention guidance: negatives that act inside attention, at one network evaluation per step
(Chen et al., arXiv 2505.21179, NeurIPS 2025)."""

from __future__ import annotations

import functools
import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from diffusers import UNet2DConditionModel

from negguide import functional as F
from negguide.branches import COND, CallInfo, Step, TextKey
from negguide.checks import finite_float, unit_interval
from negguide.layout import BatchLayout
from negguide.modules.base import PatchContext, Patcher, PatchState, register_guidance
from negguide.modules.layers import select_attention
from negguide.modules.negatives import Negative, as_negatives
from negguide.text_stream import StreamPlan, joint_blocks, text_stream
from negguide.window import Window


@dataclass(frozen=True)
class NAGDefaults:
    """The official settings of one family of denoisers: ``scale``, ``alpha`` and the attention layers patched
    (a regular expression searched in the module names)."""

    scale: float
    alpha: float
    layers: str


FAMILY_DEFAULTS: dict[str, NAGDefaults] = {
    "UNet2DConditionModel": NAGDefaults(scale=3.0, alpha=0.5, layers=r"\.attn2$"),
    "SD3Transformer2DModel": NAGDefaults(scale=5.0, alpha=0.125, layers=r"^transformer_blocks\.\d+\.attn$"),
    "FluxTransformer2DModel": NAGDefaults(
        scale=5.0, alpha=0.25, layers=r"^(transformer_blocks|single_transformer_blocks)\.\d+\.attn$"
    ),
}
"""The official settings by the denoiser's class name: UNets (SD 1.x/2.x, SDXL) patch cross-attention only, with the
paper's SDXL phi = 2 (scale 3) and alpha 0.5; SD3 every joint block, with the SD3.5 setting (scale 5, alpha 0.125);
Flux every double and single block, with its setting (scale 5, alpha 0.25)."""


@register_guidance("nag")
@dataclass(frozen=True)
class NAG(Patcher):
    r"""Normalized attention guidance (Chen et al., "Normalized Attention Guidance: Universal Negative Guidance
    for Diffusion Models", arXiv 2505.21179, NeurIPS 2025).

    In the chosen attention layers the image queries attend twice: to the prompt's text (``Z+``) and to the
    negative's (``Z-``); the output projection then receives `negguide.functional.nag` of the two, per token:
    the extrapolation ``Z+ + (s - 1) (Z+ - Z-)`` with its norm ratio to ``Z+`` clipped at ``tau``, blended into
    ``Z+`` with ``alpha``. It needs no second network evaluation, so it gives negatives to guidance-distilled
    models (one evaluation per step, no unconditional branch) at ``guidance_scale=1``, and adds to any combiner
    (standard negatives, Perp-Neg) and to NegToMe. It acts on the rows of the ``cond`` branch, the prompt's.

    The negative's keys and values come from its own text, encoded with the call's other texts once per call.
    In a UNet's cross-attention layers the ``cond`` rows' image queries attend once more, to each negative, in the
    same attention call; the image rows are not duplicated elsewhere in the network. In a transformer (SD3, Flux)
    the negative's text runs through every joint block as a text stream of its own beside the prompt's
    (`negguide.text_stream`), modulated like the prompt's (same timestep and pooled embedding); the image tokens
    meet it inside the attention of the joint blocks and, in Flux's single blocks, which mix text and image tokens
    in one sequence, for the whole block. Several negatives each give a ``Z-``;
    their mean weighted by ``Negative.weight`` is the one ``Z-``. A negative acts at the steps both its own window
    and the module's hold.

    Family defaults (`FAMILY_DEFAULTS`), used for the settings left out:

    ========================  =====  =====  =============================================
    denoiser                  scale  alpha  layers
    ========================  =====  =====  =============================================
    UNet (SD 1.x/2.x, SDXL)   3      0.5    every cross-attention ``attn2``
    SD3                       5      0.125  every joint block's ``attn``
    Flux                      5      0.25   every double and single block's ``attn``
    ========================  =====  =====  =============================================

    Args:
        negatives (`Sequence[Negative | str]`): the negative texts (one per prompt where a `Negative` holds a
            list); ``guidance="nag"`` takes the call's ``negative_prompt``.
        scale (`float`, *optional*): ``s >= 1`` (the paper's ``phi + 1``); 1 changes nothing. The family's default
            when left out.
        tau (`float`, defaults to 2.5): clipping threshold of the norm ratio, ``>= 1``.
        alpha (`float`, *optional*): blend in ``[0, 1]``; the family's default when left out.
        start (`float`, defaults to 0.0), stop (`float`, defaults to 1.0): the module's window, fractions of the
            run (`negguide.window.Window`); the paper keeps most of the effect acting in the first quarter only.
        layers (`str`, *optional*): regular expression searched in the denoiser's module names; the matching
            attention modules are patched. The family's default when left out.
        norm (`str`, defaults to ``"l1"``): ``"l1"`` (the official UNet and SD3 code, ComfyUI-NAG) or ``"l2"``
            (the official Flux code; "visually similar, slightly worse metrics" by its author).
        projection (`str`, *optional*): ``None`` (the paper) or ``"perpendicular"``: only the part of ``Z+ - Z-``
            orthogonal to ``Z+`` acts, per token.
    """

    negatives: tuple[Negative, ...] = ()
    scale: float | None = None
    tau: float = 2.5
    alpha: float | None = None
    start: float = 0.0
    stop: float = 1.0
    layers: str | None = None
    norm: str = "l1"
    projection: str | None = None

    claims_negative_prompt: ClassVar[bool] = True
    image_tokens_only: ClassVar[bool] = False

    def __post_init__(self) -> None:
        negatives = as_negatives(self.negatives, type(self).__name__)
        if not negatives:
            raise ValueError("NAG needs a negative: NAG(['blurry']), or guidance='nag' with a `negative_prompt`.")
        object.__setattr__(self, "negatives", negatives)
        if self.scale is not None:
            scale = finite_float(self.scale, "scale")
            if scale < 1:
                raise ValueError(f"`scale` must be >= 1, got {scale}: 1 changes nothing, larger pushes further away.")
            object.__setattr__(self, "scale", scale)
        tau = finite_float(self.tau, "tau")
        if tau < 1:
            raise ValueError(f"`tau` must be >= 1, got {tau}: it caps how far the norm may grow (2.5 in the paper).")
        object.__setattr__(self, "tau", tau)
        if self.alpha is not None:
            object.__setattr__(self, "alpha", unit_interval(self.alpha, "alpha"))
        window = Window(self.start, self.stop)
        object.__setattr__(self, "start", window.start)
        object.__setattr__(self, "stop", window.stop)
        if self.layers is not None:
            if not isinstance(self.layers, str):
                raise TypeError(f"`layers` must be a regular expression string, got {type(self.layers).__name__}.")
            try:
                re.compile(self.layers)
            except re.error as error:
                raise ValueError(f"`layers` is not a valid regular expression: {error}.") from None
        if self.norm not in F.NAG_NORMS:
            raise ValueError(f"`norm` must be one of {F.NAG_NORMS}, got {self.norm!r}.")
        if self.projection not in F.NAG_PROJECTIONS:
            raise ValueError(f"`projection` must be None or 'perpendicular', got {self.projection!r}.")

    @classmethod
    def from_negative_prompt(cls, negative_prompt: str | list[str] | None) -> NAG:
        """``guidance="nag"``: the call's ``negative_prompt`` as the one negative."""
        texts = [negative_prompt] if isinstance(negative_prompt, str) else list(negative_prompt or [])
        if not any(texts):
            raise ValueError("guidance='nag' takes its negative from `negative_prompt`, which is empty: give one.")
        return cls([Negative(negative_prompt)])

    def claims(self, negative_prompt: str | list[str]) -> bool:
        """Whether ``negative_prompt`` is one of the module's own negatives (then the call's combiner leaves it to
        the module, `negguide.modules.resolve.patcher_claims_negative_prompt`)."""
        text = negative_prompt if isinstance(negative_prompt, str) else tuple(negative_prompt)
        return any(negative.text == text for negative in self.negatives)

    def defaults(self, model: torch.nn.Module) -> NAGDefaults:
        """The settings this module uses on ``model``: its own where given, the family's elsewhere."""
        family = FAMILY_DEFAULTS.get(type(model).__name__)
        if family is None:
            raise ValueError(f"NAG supports the denoisers {sorted(FAMILY_DEFAULTS)}, not {type(model).__name__}.")
        return NAGDefaults(
            scale=family.scale if self.scale is None else self.scale,
            alpha=family.alpha if self.alpha is None else self.alpha,
            layers=family.layers if self.layers is None else self.layers,
        )

    def texts(self, call: CallInfo) -> tuple[TextKey, ...]:
        """The negatives' texts, per prompt; none at ``scale=1``, where the module changes nothing."""
        if self.scale == 1:
            return ()
        return tuple(text for negative in self._texts(call) for text in negative)

    def _texts(self, call: CallInfo) -> list[tuple[str, ...]]:
        return [call.per_prompt(n.text, f"negatives[{i}].text") for i, n in enumerate(self.negatives)]

    def active(self, step: Step) -> list[int]:
        """The negatives that act at ``step``."""
        if not Window(self.start, self.stop).contains(step):
            return []
        return [i for i, negative in enumerate(self.negatives) if negative.is_active(step)]

    @contextmanager
    def patch(self, model: torch.nn.Module, call: CallInfo, context: PatchContext) -> Iterator[PatchState]:
        settings = self.defaults(model)
        state = NAGState(self, settings, self._texts(call), context)
        if isinstance(model, UNet2DConditionModel):
            with _cross_attention_hooks(state, select_cross_attention(model, settings.layers)):
                yield state
        else:
            guided = set(select_joint_attention(model, settings.layers).values())
            with text_stream(model, state.stream_plan, guided, state.combine):
                yield state


def select_cross_attention(model: torch.nn.Module, layers: str) -> dict[str, torch.nn.Module]:
    """The cross-attention modules of a UNet whose names match ``layers``; ValueError when none does or when a
    match is not a cross-attention layer NAG can patch."""
    selected = select_attention(model, layers, "NAG", "up_blocks.1.attentions.0.transformer_blocks.0.attn2")
    for name, module in selected.items():
        if not getattr(module, "is_cross_attention", False) or getattr(module, "residual_connection", True):
            raise ValueError(
                f"NAG: layer {name!r} is not a cross-attention layer (image queries, text keys and values); "
                "choose `layers` among the 'attn2' modules."
            )
    return selected


def select_joint_attention(model: torch.nn.Module, layers: str) -> dict[str, torch.nn.Module]:
    """The joint (and Flux single) blocks' attention modules of a transformer whose names match ``layers``;
    ValueError when none does or when a match is another attention (SD3.5's image-only ``attn2``)."""
    selected = select_attention(model, layers, "NAG", "transformer_blocks.0.attn")
    joint = {id(block.attn) for block in joint_blocks(model)}
    for name, module in selected.items():
        if id(module) not in joint:
            raise ValueError(
                f"NAG: layer {name!r} is not the attention of a joint block, where text and image tokens meet; "
                "choose `layers` among 'transformer_blocks.N.attn' (and Flux's 'single_transformer_blocks.N.attn')."
            )
    return selected


@contextmanager
def _cross_attention_hooks(state: NAGState, layers: dict[str, torch.nn.Module]) -> Iterator[None]:
    """A UNet's cross-attention layers: the ``cond`` rows' queries attend to each negative too, in one call."""
    handles = []
    try:
        for name, attention in layers.items():
            handles.append(attention.register_forward_pre_hook(state.extend, with_kwargs=True))
            handles.append(attention.to_out[0].register_forward_pre_hook(functools.partial(state.guide, attention)))
            handles.append(attention.register_forward_hook(functools.partial(state.check_done, name)))
        yield
    finally:
        for handle in handles:
            handle.remove()
        state.pending.clear()


@dataclass(frozen=True)
class _Plan:
    """One forward's NAG work: the ``cond`` rows with the negatives' text rows for them (`StreamPlan`), and the
    negatives' weights."""

    stream: StreamPlan
    weights: tuple[float, ...]


class NAGState(PatchState):
    """One call of `NAG`: the plan of the forward about to run, and the UNet layers between their two hooks."""

    def __init__(
        self, module: NAG, settings: NAGDefaults, texts: Sequence[tuple[str, ...]], context: PatchContext
    ) -> None:
        if context.conditions is None:
            raise ValueError("NAG needs a pipeline whose core lends it the encoded texts (PatchContext.conditions).")
        self.module = module
        self.settings = settings
        self.texts = texts
        self.conditions = context.conditions
        self.pending: dict[torch.nn.Module, _Plan] = {}
        self._plan: _Plan | None = None
        self._plans: dict[tuple[BatchLayout, tuple[int, ...]], _Plan | None] = {}

    def before_forward(self, step: Step, layout: BatchLayout) -> None:
        active = tuple(self.module.active(step)) if self.settings.scale != 1 else ()
        if not active:
            self._plan = None
            return
        key = (layout, active)
        if key not in self._plans:
            self._plans[key] = self._plan_for(layout, active)
        self._plan = self._plans[key]

    def _plan_for(self, layout: BatchLayout, active: tuple[int, ...]) -> _Plan | None:
        targets = [index for index, row in enumerate(layout.rows) if row.branch == COND]
        if not targets:
            return None
        keys = [self.texts[i][layout.rows[t].prompt] for i in active for t in targets]
        contexts = self.conditions(keys)["encoder_hidden_states"]
        weights = tuple(self.module.negatives[i].weight for i in active)
        return _Plan(StreamPlan(torch.tensor(targets, device=contexts.device), contexts, len(layout)), weights)

    def stream_plan(self) -> StreamPlan | None:
        """The text rows the negatives add to the forward about to run (`negguide.text_stream`)."""
        return None if self._plan is None else self._plan.stream

    def combine(self, rows: torch.Tensor, negatives: torch.Tensor) -> torch.Tensor:
        """``rows`` ``(N, tokens, C)`` with the ``cond`` rows' attention outputs guided away from the negatives'
        (``negatives``: ``(k * T, tokens, C)``, negative-major), `negguide.functional.nag`."""
        plan = self._plan
        targets = plan.stream.targets
        negative = F.weighted_mean(list(negatives.chunk(len(plan.weights))), plan.weights)
        module, settings = self.module, self.settings
        guided = F.nag(
            rows[targets], negative, settings.scale, module.tau, settings.alpha, module.norm, module.projection
        )
        return rows.index_copy(0, targets, guided)

    def extend(self, attention: torch.nn.Module, args: tuple, kwargs: dict[str, Any]) -> tuple[tuple, dict] | None:
        """Forward pre-hook of a UNet cross-attention layer: add, per negative, the ``cond`` rows' image queries
        with the negative's text as keys and values."""
        plan = self._plan
        if plan is None:
            return None
        hidden = args[0] if args else kwargs["hidden_states"]
        context = kwargs.get("encoder_hidden_states")
        if not isinstance(context, torch.Tensor) or len(hidden) != plan.stream.num_rows:
            raise ValueError(
                "NAG: a patched layer was called without text keys and values for every row (IP-Adapter inputs "
                "are not supported with NAG)."
            )
        if kwargs.get("attention_mask") is not None:
            raise ValueError("NAG: attention masks are not supported in the patched layers.")
        hidden = plan.stream.tile(hidden)
        kwargs = {**kwargs, "encoder_hidden_states": torch.cat([context, plan.stream.contexts.to(context.dtype)])}
        if args:
            args = (hidden, *args[1:])
        else:
            kwargs["hidden_states"] = hidden
        self.pending[attention] = plan
        return args, kwargs

    def guide(self, attention: torch.nn.Module, projection: torch.nn.Module, args: tuple) -> tuple | None:
        """Forward pre-hook of a UNet cross-attention layer's output projection: the ``cond`` rows' attention output
        guided (`combine`); the added rows dropped."""
        plan = self.pending.pop(attention, None)
        if plan is None:
            return None
        outputs = args[0]  # (N + k * T, tokens, features)
        rows = outputs[: plan.stream.num_rows]
        return (self.combine(rows, outputs[plan.stream.num_rows :]), *args[1:])

    def check_done(self, name: str, attention: torch.nn.Module, args: tuple, output: Any) -> None:
        """Forward hook of a UNet cross-attention layer: its output projection must have run (and dropped the added
        rows)."""
        if self.pending.pop(attention, None) is not None:
            raise ValueError(
                f"NAG: layer {name!r} did not pass its attention output through `to_out[0]`; its attention "
                "processor is not one NAG can patch."
            )
