"""When does a negative prompt act? Per-step measurements of its influence.

Ban et al., "Understanding the Impact of Negative Prompts: When and How Do They Take Effect?" (arXiv
2406.02965, ECCV 2024) find that a negative prompt acts late: it starts to matter once the positive prompt
has drawn the object the negative names, and then cancels it. `analyze_negative` records, at every step of
one run and for every image:

* ``norm``: ``||e_n - e_u||``, how far the negative's prediction is from the empty prompt's (per sample);
* ``cosine``: ``cos(e_n - e_u, e_p - e_u)``, how much of the prompt's direction the negative points along:
  the "neutralisation" signal (with guidance ``e = e_n + s (e_p - e_n)`` the negative cancels the part of
  ``e_p - e_u`` it shares);
* ``attention_mass``: in the negative branch, the share of cross-attention that the image's positions give
  the negative's own tokens (special tokens excluded), averaged over heads, positions and every
  cross-attention layer (``attn2``); only for models with such layers and a tokenizer.

The three branches (``e_u``, ``e_n``, ``e_p``) are evaluated in one batched network call per step. What the
curves describe depends on ``apply``: ``True`` (the default) follows the run where the negative acts in its
window as a standard negative prompt, ``e = e_n + s (e_p - e_n)`` inside it and ``e_u + s (e_p - e_u)``
outside; ``False`` follows the prompt's own run and measures, alongside, what the negative would do at each
step of it.
"""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import PIL.Image
import torch
from diffusers import DiffusionPipeline
from diffusers.models.attention_processor import Attention
from diffusers.models.embeddings import apply_rotary_emb

from negguide import functional as F
from negguide.atomic import write_atomic
from negguide.branches import COND, UNCOND, Branch, CallInfo, Step, negative_branch
from negguide.checks import finite_float
from negguide.families import family_of
from negguide.layout import BatchLayout
from negguide.modules.base import Combiner, PatchContext, Patcher, PatchState
from negguide.modules.negatives import Negative

METRICS = ("norm", "cosine", "attention_mass")
LABELS = {
    "norm": "||e_n - e_u||",
    "cosine": "cos(e_n - e_u, e_p - e_u)",
    "attention_mass": "attention to the negative's tokens",
}
NEGATIVE = negative_branch(0)
TAKEN_CALL_ARGUMENTS = {
    "prompt",
    "prompt_embeds",
    "negative_prompt",
    "negative_prompt_embeds",
    "generator",
    "num_inference_steps",
    "guidance",
    "output_type",
    "return_dict",
}
CROSS_ATTENTION = r"attn2"
"""Last part of the names of the cross-attention modules whose attention is measured (diffusers' UNets)."""


@dataclass(frozen=True, eq=False)
class AnalysisResult:
    """Per-step measurements of one run (see the module docstring).

    Args:
        prompts (`tuple[str, ...]`), negatives (`tuple[str, ...]`), seeds (`tuple[int, ...]`): one per image.
        timesteps (`tuple[float, ...]`): the scheduler's timestep at each step.
        active (`tuple[bool, ...]`): whether the negative acted on the images at each step.
        norm (`np.ndarray`), cosine (`np.ndarray`): ``(steps, images)`` float arrays.
        attention_mass (`np.ndarray`, *optional*): ``(steps, images)``; ``None`` when the model has no
            cross-attention layers to measure.
        images (`tuple[PIL.Image.Image, ...]`): the run's images.
    """

    prompts: tuple[str, ...]
    negatives: tuple[str, ...]
    seeds: tuple[int, ...]
    timesteps: tuple[float, ...]
    active: tuple[bool, ...]
    norm: np.ndarray
    cosine: np.ndarray
    attention_mass: np.ndarray | None
    images: tuple[PIL.Image.Image, ...] = field(repr=False)

    @property
    def num_steps(self) -> int:
        return len(self.timesteps)

    @property
    def metrics(self) -> tuple[str, ...]:
        """The metrics this result holds, in `METRICS` order."""
        return tuple(name for name in METRICS if getattr(self, name) is not None)

    def values(self, metric: str) -> np.ndarray:
        """The ``(steps, images)`` array of ``metric``; ValueError for a metric the result does not hold."""
        if metric not in self.metrics:
            raise ValueError(f"`metric` must be one of {', '.join(self.metrics)}, got {metric!r}.")
        return getattr(self, metric)

    def mean(self, metric: str) -> np.ndarray:
        """``metric`` averaged over the images, one value per step."""
        return self.values(metric).mean(axis=1)

    def select(self, images: Sequence[int]) -> AnalysisResult:
        """The result restricted to the images ``images`` (indices), e.g. those whose image holds an object."""
        images = list(images)
        if not images:
            raise ValueError("`images` must name at least one image.")

        def pick(values: np.ndarray | None) -> np.ndarray | None:
            return None if values is None else values[:, images]

        return AnalysisResult(
            tuple(self.prompts[i] for i in images),
            tuple(self.negatives[i] for i in images),
            tuple(self.seeds[i] for i in images),
            self.timesteps,
            self.active,
            pick(self.norm),
            pick(self.cosine),
            pick(self.attention_mass),
            tuple(self.images[i] for i in images),
        )

    def onset(self, metric: str = "cosine", threshold: float | None = None) -> int | None:
        """The first step at which the mean of ``metric`` reaches ``threshold`` (`onset_step`)."""
        return onset_step(self.mean(metric), threshold)

    def rows(self, per_image: bool = False) -> list[dict[str, Any]]:
        """One dict per step: ``step``, ``fraction``, ``timestep``, ``active`` and the mean of every metric;
        with ``per_image``, also ``<metric>_<image>`` for every image."""
        table = []
        for index in range(self.num_steps):
            row: dict[str, Any] = {
                "step": index,
                "fraction": index / self.num_steps,
                "timestep": self.timesteps[index],
                "active": int(self.active[index]),
            }
            for metric in self.metrics:
                row[metric] = float(self.mean(metric)[index])
            if per_image:
                for metric in self.metrics:
                    for image, value in enumerate(self.values(metric)[index]):
                        row[f"{metric}_{image}"] = float(value)
            table.append(row)
        return table

    def to_csv(self, path: str | os.PathLike, per_image: bool = False) -> Path:
        """Write `rows` as CSV (a header, then one row per step), atomically; returns the path."""
        rows = self.rows(per_image)
        text = io.StringIO()
        writer = csv.DictWriter(text, fieldnames=list(rows[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        return write_atomic(path, lambda file: file.write(text.getvalue().encode("utf-8")))

    def figure(self) -> Any:
        """A matplotlib ``Figure``: one panel per metric against the step, the mean in bold over each image's
        curve, and the steps where the negative acted shaded (`shaded_steps`: none when it acted on every step)."""
        from matplotlib.figure import Figure
        from matplotlib.ticker import MaxNLocator

        metrics = self.metrics
        figure = Figure(figsize=(6.4, 1.9 * len(metrics) + 0.8), layout="constrained")
        axes = figure.subplots(len(metrics), 1, sharex=True, squeeze=False)[:, 0]
        steps = np.arange(self.num_steps)
        shaded, label = shaded_steps(self.active)
        for ax, metric in zip(axes, metrics):
            for index in shaded:
                ax.axvspan(index - 0.5, index + 0.5, color="tab:red", alpha=0.08, linewidth=0)
            if len(self.seeds) > 1:
                ax.plot(steps, self.values(metric), color="tab:blue", alpha=0.15, linewidth=0.8)
            ax.plot(steps, self.mean(metric), color="tab:blue", linewidth=2)
            ax.set_ylabel(LABELS[metric], fontsize=8)
            ax.grid(alpha=0.3)
        axes[-1].set_xlabel(label)
        axes[-1].set_xlim(-0.5, self.num_steps - 0.5)
        axes[-1].xaxis.set_major_locator(MaxNLocator(integer=True))
        title = f"{_shown(self.prompts)} / negative: {_shown(self.negatives)}, {len(self.seeds)} image(s)"
        figure.suptitle(title, fontsize=9)
        return figure

    def plot(self, path: str | os.PathLike) -> Path:
        """Write `figure` as a PNG, atomically; returns the path."""
        return write_atomic(path, lambda file: file.write(self._png()))

    def plot_image(self) -> PIL.Image.Image:
        """`figure` as a PIL image."""
        with PIL.Image.open(io.BytesIO(self._png())) as image:
            return image.convert("RGB")

    def _png(self) -> bytes:
        from matplotlib.backends.backend_agg import FigureCanvasAgg

        figure = self.figure()
        FigureCanvasAgg(figure)
        buffer = io.BytesIO()
        figure.savefig(buffer, format="png", dpi=110)
        return buffer.getvalue()


def shaded_steps(active: Sequence[bool]) -> tuple[tuple[int, ...], str]:
    """The steps a plot of a run shades, given whether the negative acted at each step, and the label of its step
    axis. Shading marks the part of the run where the negative acts, so a negative acting on every step (a
    ``[0, 1)`` window) or on none shades nothing."""
    if all(active):
        return (), "step (the negative acts on every step)"
    if not any(active):
        return (), "step (the negative is measured, not applied)"
    return tuple(index for index, is_active in enumerate(active) if is_active), "step (shaded: the negative acts)"


def onset_step(curve: np.ndarray, threshold: float | None = None) -> int | None:
    """The first step at which ``curve`` (one value per step) reaches ``threshold``: by default halfway between
    its smallest and largest values. ``None`` when it never does."""
    curve = np.asarray(curve, dtype=np.float64)
    if threshold is None:
        threshold = float(curve.min() + curve.max()) / 2
    reached = np.flatnonzero(curve >= finite_float(threshold, "threshold"))
    return int(reached[0]) if len(reached) else None


def analyze_negative(
    pipe: DiffusionPipeline,
    prompt: str | Sequence[str],
    negative: str | Sequence[str],
    seed: int | Sequence[int] = 0,
    *,
    steps: int = 20,
    guidance_scale: float = 7.5,
    start: float = 0.0,
    stop: float = 1.0,
    apply: bool = True,
    **call_kwargs: Any,
) -> AnalysisResult:
    """Generate with ``negative`` and measure its influence at every step (Ban et al., arXiv 2406.02965).

    Args:
        pipe (`DiffusionPipeline`): a negguide pipeline (e.g. `negguide.load_pipeline()`).
        prompt (`str` or a list): the prompt, or one prompt per seed.
        negative (`str` or a list): the negative prompt, or one per seed.
        seed (`int` or a list of `int`, defaults to 0): one image per seed, each with its own CPU generator.
        steps (`int`, defaults to 20): ``num_inference_steps``.
        guidance_scale (`float`, defaults to 7.5): must be > 1 (the negative acts through guidance).
        start (`float`, defaults to 0.0), stop (`float`, defaults to 1.0): the negative's window ``[start, stop)``
            in fractions of the run (`Negative`).
        apply (`bool`, defaults to True): whether the negative acts in its window; ``False`` follows the prompt's
            own run and only measures the negative alongside.
        call_kwargs: more pipeline arguments (``height``, ``width``, ``guidance_rescale``, ...).

    Returns:
        `AnalysisResult` with one row per step of the run.
    """
    seeds = [seed] if isinstance(seed, int) and not isinstance(seed, bool) else list(seed)
    if not seeds or any(isinstance(s, bool) or not isinstance(s, int) or s < 0 for s in seeds):
        raise ValueError(f"`seed` must be a non-negative int or a non-empty list of them, got {seed!r}.")
    prompts = _per_image(prompt, len(seeds), "prompt")
    negatives = _per_image(negative, len(seeds), "negative")
    if finite_float(guidance_scale, "guidance_scale") <= 1:
        raise ValueError(
            f"`guidance_scale` must be > 1, got {guidance_scale}: negatives act through classifier-free guidance."
        )
    taken = sorted(set(call_kwargs) & TAKEN_CALL_ARGUMENTS)
    if taken:
        raise TypeError(
            f"analyze_negative takes no {', '.join(taken)}: it sets the prompt, generators, steps and guidance itself "
            "and measures against the empty prompt."
        )
    probe = NegativeProbe(Negative(tuple(negatives), start=start, stop=stop), ProbeRecord(), apply=apply)
    guidance: list[Combiner | Patcher] = [probe]
    family = family_of(pipe)
    network, tokenizer = getattr(pipe, family.denoiser), getattr(pipe, family.text_tokenizer, None)
    if tokenizer is not None and cross_attention_layers(network):
        tokens = tuple(token_positions(tokenizer, text) for text in negatives)
        guidance.append(AttentionMass(tokens, MassRecord(NEGATIVE, tokens)))
    images = pipe(
        prompt=prompts,
        generator=[torch.Generator().manual_seed(s) for s in seeds],
        num_inference_steps=steps,
        guidance_scale=guidance_scale,
        guidance=guidance,
        output_type="pil",
        **call_kwargs,
    ).images
    record = probe.record
    return AnalysisResult(
        tuple(prompts),
        tuple(negatives),
        tuple(seeds),
        tuple(record.timesteps),
        tuple(record.active),
        np.stack(record.norm),
        np.stack(record.cosine),
        guidance[1].record.array(len(record.timesteps)) if len(guidance) > 1 else None,
        tuple(images),
    )


class ProbeRecord:
    """What a `NegativeProbe` saw, step by step: the timestep, whether the negative acted, and the ``(images,)``
    norm and cosine."""

    def __init__(self) -> None:
        self.timesteps: list[float] = []
        self.active: list[bool] = []
        self.norm: list[np.ndarray] = []
        self.cosine: list[np.ndarray] = []


@dataclass(frozen=True, eq=False)
class NegativeProbe(Combiner):
    r"""Standard guidance with one windowed negative that also evaluates ``e_u`` at every step and records
    ``||e_n - e_u||`` and ``cos(e_n - e_u, e_p - e_u)`` per image (Ban et al., arXiv 2406.02965).

    Branches ``uncond``, ``neg_0`` and ``cond`` every step, in one batched forward; the prediction is
    ``e_n + s (e_p - e_n)`` where ``apply`` and the negative's window hold, ``e_u + s (e_p - e_u)`` elsewhere.
    A measuring instrument rather than a method: build one per call, with a fresh record.

    Args:
        negative (`Negative`): the negative and its window (its weight plays no part).
        record (`ProbeRecord`): where the measurements go.
        apply (`bool`, defaults to True): whether the negative acts in its window.
    """

    negative: Negative
    record: ProbeRecord
    apply: bool = True

    def __post_init__(self) -> None:
        if not isinstance(self.negative, Negative):
            raise TypeError(f"`negative` must be a Negative, got {type(self.negative).__name__}.")

    def acts(self, step: Step) -> bool:
        """Whether the negative acts at ``step``."""
        return self.apply and self.negative.is_active(step)

    def branches(self, call: CallInfo, step: Step) -> tuple[Branch, ...]:
        negatives = call.per_prompt(self.negative.text, "negative")
        return Branch(UNCOND, call.negative_prompts), Branch(NEGATIVE, negatives), Branch(COND, call.prompts)

    def combine(
        self, preds: Mapping[str, torch.Tensor], call: CallInfo, step: Step, guidance_scale: float
    ) -> torch.Tensor:
        e_u, e_n, e_p = preds[UNCOND], preds[NEGATIVE], preds[COND]
        d_n, d_p = e_n.float() - e_u.float(), e_p.float() - e_u.float()
        self.record.timesteps.append(step.timestep)
        self.record.active.append(self.acts(step))
        self.record.norm.append(F.sample_norm(d_n).cpu().numpy())
        self.record.cosine.append(F.sample_cosine(d_n, d_p).cpu().numpy())
        return F.cfg(e_n if self.acts(step) else e_u, e_p, guidance_scale)


class MassRecord(PatchState):
    """The attention mass one branch's images give chosen tokens, per step and cross-attention layer.

    Args:
        branch (`str`): the branch whose rows are measured.
        tokens (`Sequence[Sequence[int]]`): per prompt of the call, the token positions to sum over.
    """

    def __init__(self, branch: str, tokens: Sequence[Sequence[int]]) -> None:
        self.branch = branch
        self.tokens = tokens
        self.step: Step | None = None
        self.rows: list[int] = []
        self.prompts: list[int] = []
        self.masks: dict[int, torch.Tensor] = {}
        self.masses: dict[int, list[torch.Tensor]] = {}

    def before_forward(self, step: Step, layout: BatchLayout) -> None:
        self.step = step
        rows = [
            (index, row) for index, row in enumerate(layout.rows) if row.branch == self.branch and row.image is not None
        ]
        self.rows = [index for index, _ in rows]  # image order: the layout keeps a branch's images in order
        self.prompts = [row.prompt for _, row in rows]
        self.masks = {}

    def hook(self, module: Attention, args: tuple, kwargs: dict[str, Any], output: Any) -> None:
        """Forward hook of a cross-attention module: record, leave the output as it is."""
        hidden = kwargs["hidden_states"] if "hidden_states" in kwargs else args[0]
        context = kwargs.get("encoder_hidden_states", args[1] if len(args) > 1 else None)
        if context is None or not self.rows:
            return
        rotary = kwargs.get("image_rotary_emb")
        probs = attention_probabilities(module, hidden[self.rows], context[self.rows], rotary)  # (R, heads, N, T)
        mask = self._mask(probs.shape[-1], probs.device)  # (R, T)
        mass = (probs.float() * mask[:, None, None, :]).sum(dim=-1).mean(dim=(1, 2))  # (R,)
        self.masses.setdefault(self.step.index, []).append(mass.cpu())

    def _mask(self, keys: int, device: torch.device) -> torch.Tensor:
        if keys not in self.masks:
            mask = torch.zeros(len(self.rows), keys)
            for row, prompt in enumerate(self.prompts):
                mask[row, [position for position in self.tokens[prompt] if position < keys]] = 1
            self.masks[keys] = mask.to(device)
        return self.masks[keys]

    def array(self, num_steps: int) -> np.ndarray:
        """The ``(steps, images)`` mass, averaged over the layers; ValueError when a step was not measured."""
        missing = [index for index in range(num_steps) if index not in self.masses]
        if missing:
            raise ValueError(f"no cross-attention was measured at steps {missing}: the model skipped its attn2 layers.")
        return torch.stack([torch.stack(self.masses[index]).mean(dim=0) for index in range(num_steps)]).numpy()


@dataclass(frozen=True, eq=False)
class AttentionMass(Patcher):
    """Measure, at every cross-attention layer (``*.attn2``) of the model instance, how much attention one branch's
    image positions give chosen text tokens. Forward hooks only: the network's outputs are unchanged, and the
    hooks are removed when the call ends, also after an error. A measuring instrument: one per call.

    Args:
        tokens (`tuple[tuple[int, ...], ...]`): per prompt of the call, the token positions to sum over
            (`token_positions`).
        record (`MassRecord`): where the measurements go.
    """

    whole_branches: ClassVar[bool] = True

    tokens: tuple[tuple[int, ...], ...]
    record: MassRecord

    @contextmanager
    def patch(self, model: torch.nn.Module, call: CallInfo, context: PatchContext) -> Iterator[PatchState]:
        layers = cross_attention_layers(model)
        if not layers:
            raise ValueError(
                f"{type(model).__name__} has no cross-attention modules named '*.{CROSS_ATTENTION}': the attention "
                "mass needs a model with diffusers Attention layers."
            )
        if len(self.tokens) != call.num_prompts:
            raise ValueError(f"`tokens` holds {len(self.tokens)} entries for the call's {call.num_prompts} prompts.")
        handles = []
        try:
            for module in layers.values():
                handles.append(module.register_forward_hook(self.record.hook, with_kwargs=True))
            yield self.record
        finally:
            for handle in handles:
                handle.remove()


def cross_attention_layers(model: torch.nn.Module) -> dict[str, torch.nn.Module]:
    """The model's attention modules where image positions attend to text: a UNet's cross-attention (diffusers
    ``Attention`` modules named ``*.attn2`` with text keys), a transformer's joint attention (modules with text
    projections, ``add_k_proj``: SD3's and Flux's joint blocks)."""
    return {
        name: module
        for name, module in model.named_modules()
        if (name.rsplit(".", 1)[-1] == CROSS_ATTENTION and isinstance(module, Attention) and module.is_cross_attention)
        or getattr(module, "add_k_proj", None) is not None
    }


def attention_probabilities(
    attn: torch.nn.Module, hidden: torch.Tensor, context: torch.Tensor, rotary: Any = None
) -> torch.Tensor:
    """The attention image positions ``hidden`` ``(B, N, C)`` (or ``(B, C, H, W)``) give text ``context``
    ``(B, T, D)``, shape ``(B, heads, N, T)``: ``softmax(q k^T * scale)`` of a cross-attention module, or, for a
    transformer's joint attention, the text columns of the softmax over text and image keys together (with the
    rotary embedding ``rotary`` of the text-then-image sequence where the model uses one, as Flux does)."""
    if getattr(attn, "add_k_proj", None) is not None:
        return _joint_attention_probabilities(attn, hidden, context, rotary)
    if hidden.ndim == 4:
        hidden = hidden.flatten(2).transpose(1, 2)
    if attn.norm_cross:
        context = attn.norm_encoder_hidden_states(context)
    query = attn.head_to_batch_dim(attn.to_q(hidden))
    key = attn.head_to_batch_dim(attn.to_k(context))
    return attn.get_attention_scores(query, key).unflatten(0, (len(hidden), attn.heads))


def _joint_attention_probabilities(
    attn: torch.nn.Module, hidden: torch.Tensor, context: torch.Tensor, rotary: Any
) -> torch.Tensor:
    """See `attention_probabilities`: SD3's and Flux's joint attention, image queries over text and image keys."""

    def heads(x: torch.Tensor, norm: torch.nn.Module | None) -> torch.Tensor:
        x = x.unflatten(-1, (attn.heads, -1))  # (B, L, heads, D)
        return x if norm is None else norm(x)

    query = heads(attn.to_q(hidden), getattr(attn, "norm_q", None))
    keys = torch.cat(
        [heads(attn.add_k_proj(context), getattr(attn, "norm_added_k", None)), heads(attn.to_k(hidden), attn.norm_k)],
        dim=1,
    )  # (B, T + N, heads, D): text first, as Flux orders its rotary embedding
    if rotary is not None:
        cos, sin = rotary
        keys = apply_rotary_emb(keys, (cos, sin), sequence_dim=1)
        query = apply_rotary_emb(query, (cos[context.shape[1] :], sin[context.shape[1] :]), sequence_dim=1)
    scores = torch.einsum("bnhd,bkhd->bhnk", query.float(), keys.float()) * query.shape[-1] ** -0.5
    return scores.softmax(dim=-1)[..., : context.shape[1]]


def token_positions(tokenizer: Any, text: str) -> tuple[int, ...]:
    """Positions of ``text``'s own tokens in its encoding (special tokens such as start and end excluded),
    below the tokenizer's length limit. ValueError when there are none."""
    ids = tokenizer(text, truncation=True, max_length=tokenizer.model_max_length).input_ids
    special = set(tokenizer.all_special_ids)
    positions = tuple(index for index, token in enumerate(ids) if token not in special)
    if not positions:
        raise ValueError(f"`negative` {text!r} has no tokens of its own: give a non-empty negative prompt.")
    return positions


def _per_image(value: str | Sequence[str], count: int, name: str) -> list[str]:
    texts = [value] * count if isinstance(value, str) else list(value)
    if len(texts) != count:
        raise ValueError(f"`{name}` has {len(texts)} texts for {count} seeds: give one per seed, or a single string.")
    for text in texts:
        if not isinstance(text, str) or not text.strip():
            raise ValueError(f"`{name}` must be a non-empty string (or a list of them), got {text!r}.")
    return texts


def _shown(texts: Sequence[str]) -> str:
    distinct = list(dict.fromkeys(texts))
    return repr(distinct[0]) if len(distinct) == 1 else f"{len(distinct)} prompts"
