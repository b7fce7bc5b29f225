"""The per-step core shared by every pipeline family.

At each step: take the combiner's branches, build one batch of rows (recorded in a `BatchLayout`), run the
denoiser once (or in chunks of whole branches), split the output per branch, combine, and run the post-combine
chain (`negguide.postprocess`: guidance rescale). Text conditions are encoded once per call and distinct text, never per step.

A family (SD, SDXL, SD3, Flux) provides two callables: ``encode(texts) -> fields`` (its text encoders; a text
is a string, or an `EncoderTexts` with one string per encoder) and ``denoise(latent_rows, fields) ->
prediction_rows`` (its network call for one timestep). *Fields* are the named conditioning tensors the network
takes per row (``encoder_hidden_states``, pooled embeddings, ...), each with the row as its first dimension.
Latent rows have whatever shape the family's network takes after the row dimension: ``(C, H, W)``, or Flux's
packed ``(tokens, channels)``.
"""

from __future__ import annotations

import dataclasses
import weakref
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, ExitStack, contextmanager, nullcontext

import torch

from negguide.branches import COND, Blend, Branch, CallInfo, EmbedsRef, EncoderTexts, Step, Text, TextKey
from negguide.checks import unit_interval
from negguide.image_conditions import ImageConditions
from negguide.layout import BatchLayout, ExtraRow
from negguide.memory import MemoryBudget, budget_bytes, parse_budget, peak_memory, rows_that_fit
from negguide.modules.base import PatchContext, PatchState
from negguide.modules.resolve import GuidanceArg, patcher_claims_negative_prompt, resolve_guidance
from negguide.postprocess import GuidanceRescale, PostCombine, Refinement

Fields = dict[str, torch.Tensor]
_ROW_BYTES: weakref.WeakKeyDictionary[torch.nn.Module, dict[tuple, float]] = weakref.WeakKeyDictionary()
"""Per network, the measured memory of one row of each row shape (see `Guide._forward`)."""
Encoder = Callable[[list[Text]], Fields]
Denoiser = Callable[[torch.Tensor, Fields], torch.Tensor]


def embeds_conditions(source: str, **fields: torch.Tensor) -> dict[TextKey, Fields]:
    """Caller-given embeddings (e.g. ``prompt_embeds``) as conditions keyed ``EmbedsRef(source, row)``."""
    num_rows = len(next(iter(fields.values())))
    return {EmbedsRef(source, i): {name: t[i : i + 1] for name, t in fields.items()} for i in range(num_rows)}


class ConditionTable:
    """The text conditions of one call: one row of fields per distinct text, encoded on first need.

    Rows that lie one after the other in one tensor (the encoder's output, caller-given embeddings) come back as
    a view of it (`_stacked`), so that a call's conditions are held once (a T5 encoding is megabytes per row),
    not copied into every batch.

    Args:
        encode: the family's text encoding, called with a list of distinct texts.
        given: conditions that are not encoded here (caller-given embeddings).
    """

    def __init__(self, encode: Encoder, given: Mapping[TextKey, Fields] | None = None) -> None:
        self._encode = encode
        self._rows: dict[TextKey, Fields] = dict(given or {})

    def prefetch(self, keys: Iterable[TextKey]) -> None:
        """Encode, in one call, the texts among ``keys`` (and inside their blends) not encoded yet."""
        keys = list(dict.fromkeys(keys))
        texts = list(dict.fromkeys(text for key in keys for text in _texts(key) if text not in self._rows))
        if texts:
            encoded = self._encode(texts)
            for i, text in enumerate(texts):
                self._rows[text] = {name: t[i : i + 1] for name, t in encoded.items()}
        for key in keys:
            if isinstance(key, Blend) and key not in self._rows:
                self._rows[key] = _blend([(self._rows[text], weight) for text, weight in key.parts])

    def rows(self, keys: Sequence[TextKey]) -> Fields:
        """The fields of ``keys``, stacked row by row."""
        self.prefetch(keys)
        rows = [self._rows[key] for key in keys]
        for name in rows[0]:
            shapes = sorted({tuple(row[name].shape[1:]) for row in rows})
            if len(shapes) > 1:
                raise ValueError(
                    f"The text conditions evaluated together have different shapes of `{name}`: {shapes}. Caller-given "
                    "embeddings (`prompt_embeds`, `negative_prompt_embeds`) must match each other and the encoded "
                    "texts of the call (e.g. the same `max_sequence_length`)."
                )
        return {name: _stacked([row[name] for row in rows]) for name in rows[0]}


class Guide:
    """The guidance of one pipeline call.

    Building it resolves ``guidance=`` and plans every step's branches, so every argument error surfaces
    before any network runs. Then `prefetch` encodes the texts, `patch` installs the patchers around the
    denoising loop, and `predict` gives each step's guided prediction.

    Args:
        guidance: the call's ``guidance=`` argument (see `resolve_guidance`).
        call (`CallInfo`): the call's prompts and batch sizes.
        timesteps (`Sequence[float]`): the run's timesteps, one per network evaluation.
        encode: the family's text encoding (see `ConditionTable`).
        given: conditions for caller-given embeddings (see `embeds_conditions`).
        negative_prompt: the call's ``negative_prompt``, for modules built from a registry name.
        guidance_rescale (`float`): the call's ``guidance_rescale``; a combiner's own non-zero value wins, and
            two different non-zero values are an error.
        image_conditions (`ImageConditions`, *optional*): per-image conditioning fields (IP-Adapter image
            embeddings, SDXL time ids): the ``cond`` rows take the positive ones, every other row the negative.
        refinements (*optional*): `Refinement` steps run after the post-combine chain, each with one more network
            evaluation of the prompt's rows (SD3's skip-layer guidance).
        forward_context (*optional*): ``forward_context(name)``: a context entered around every network
            evaluation, given the name of its rows (`BatchLayout.name`; a transformer's ``cache_context``, one per
            batched call).
        memory_budget (*optional*): the memory one network evaluation may use (`negguide.memory.parse_budget`:
            bytes, a size such as ``"6GB"``, or ``"auto"``); a step's rows that would need more run in the fewest
            chunks that fit, with the same result. ``None`` (the default): one evaluation per step. A combiner's
            ``max_rows`` overrides it.
    """

    def __init__(
        self,
        guidance: GuidanceArg,
        *,
        call: CallInfo,
        timesteps: Sequence[float],
        encode: Encoder,
        given: Mapping[TextKey, Fields] | None = None,
        negative_prompt: str | list[str] | None = None,
        guidance_rescale: float = 0.0,
        image_conditions: ImageConditions | None = None,
        refinements: Sequence[Refinement] = (),
        forward_context: Callable[[str], AbstractContextManager] | None = None,
        memory_budget: MemoryBudget = None,
    ) -> None:
        self.combiner, self.patchers = resolve_guidance(guidance, negative_prompt)
        self.negative_claimed = patcher_claims_negative_prompt(guidance, negative_prompt)
        if self.negative_claimed:
            call = dataclasses.replace(call, negative_prompts=("",) * call.num_prompts)
        self.call = call
        self.guidance_rescale = _merged_rescale(self.combiner.guidance_rescale, guidance_rescale)
        self.post_combine: tuple[PostCombine, ...] = (
            (GuidanceRescale(self.guidance_rescale),) if self.guidance_rescale > 0 else ()
        )
        self.steps = tuple(Step(i, len(timesteps), float(t)) for i, t in enumerate(timesteps))
        self._plan = tuple(self._checked(self.combiner.branches(call, step)) for step in self.steps)
        self._patcher_texts = tuple(text for patcher in self.patchers for text in patcher.texts(call))
        self.conditions = ConditionTable(encode, given)
        self.image_conditions = image_conditions
        self.refinements = tuple(refinements)
        self._forward_context = forward_context or (lambda name: nullcontext())
        self.memory_budget = parse_budget(memory_budget)
        self._whole_branches = any(patcher.whole_branches for patcher in self.patchers)
        self._row_bytes: dict[tuple, float] = {}
        self._batches: dict[tuple[Branch, ...], tuple[BatchLayout, Fields]] = {}
        self._states: list[PatchState] = []

    def _checked(self, branches: Sequence[Branch]) -> tuple[Branch, ...]:
        names = [branch.name for branch in branches]
        if names.count(COND) != 1 or len(set(names)) != len(names):
            raise ValueError(
                f"{type(self.combiner).__name__}.branches must return unique branch names with exactly one "
                f"{COND!r}, got {names}."
            )
        for branch in branches:
            if len(branch.texts) != self.call.num_prompts:
                raise ValueError(
                    f"{type(self.combiner).__name__}: branch {branch.name!r} has {len(branch.texts)} texts for "
                    f"{self.call.num_prompts} prompts."
                )
        return tuple(branches)

    def branches(self, index: int, guided: bool) -> tuple[Branch, ...]:
        """The branches of step ``index``: the combiner's when ``guided``, else ``cond`` alone."""
        plan = self._plan[index]
        return plan if guided else tuple(branch for branch in plan if branch.name == COND)

    @property
    def has_negatives(self) -> bool:
        """Whether some step has a branch other than ``cond`` whose text is not the empty prompt: a negative
        prompt, caller-given negative embeddings or a module's own negatives. Families whose guidance runs only
        when there is something to push away from (Flux's true CFG) read this."""
        return any(text != "" for plan in self._plan for branch in plan if branch.name != COND for text in branch.texts)

    def has_negative(self, negative_prompt: object, negative_prompt_embeds: object) -> bool:
        """Whether the combiner has something to guide away from: the call's ``negative_prompt`` (even ``""``) or
        ``negative_prompt_embeds`` unless a patcher took the negative (`patcher_claims_negative_prompt`), or any
        negative text of its own (`has_negatives`). Guidance-distilled families run true CFG only then."""
        given = negative_prompt is not None or negative_prompt_embeds is not None
        return (given and not self.negative_claimed) or self.has_negatives

    def prefetch(self, guided: bool) -> None:
        """Encode every text the run will use, the patchers' own included, in one text-encoder call."""
        self.conditions.prefetch(
            [
                *(
                    text
                    for index in range(len(self.steps))
                    for branch in self.branches(index, guided)
                    for text in branch.texts
                ),
                *self._patcher_texts,
            ]
        )

    def batch(self, index: int, guided: bool, extra: Sequence[ExtraRow] = ()) -> tuple[BatchLayout, Fields]:
        """Layout and conditioning fields of step ``index``'s batch (cached when there are no extra rows)."""
        branches = self.branches(index, guided)
        if not extra and branches in self._batches:
            return self._batches[branches]
        layout = BatchLayout.build(
            [branch.name for branch in branches], self.call.num_images, self.call.num_images_per_prompt, extra
        )
        texts = {branch.name: branch.texts for branch in branches}
        fields = self.conditions.rows([texts[row.branch][row.prompt] for row in layout.rows])
        if self.image_conditions is not None:
            fields.update(self.image_conditions.rows(layout, self.call.num_images_per_prompt))
        batch = layout, fields
        if not extra:
            self._batches[branches] = batch
        return batch

    def callback_fields(self, index: int, guided: bool) -> tuple[Fields, Fields | None]:
        """Conditioning of step ``index`` for step-end callbacks: all rows (like diffusers' concatenated
        ``prompt_embeds``), and the rows of the branches other than ``cond`` (``None`` without guidance)."""
        layout, fields = self.batch(index, guided)
        if not guided:
            return fields, None
        others = [i for i, row in enumerate(layout.rows) if row.branch != COND]
        return fields, {name: t[others] for name, t in fields.items()}

    @contextmanager
    def patch(self, model: torch.nn.Module, context: PatchContext | None = None) -> Iterator[Guide]:
        """Install every patcher on ``model`` for the duration of the block; always removed on exit.

        ``context`` is what the pipeline lends its patchers (see `PatchContext`); none by default. The core adds
        the call's text conditions (`PatchContext.conditions`). Enter the block before any network evaluation of
        the call, so that a patcher's errors cost nothing.
        """
        context = dataclasses.replace(context or PatchContext(), conditions=self.conditions.rows)
        self._row_bytes = _ROW_BYTES.setdefault(model, {})
        with ExitStack() as stack:
            self._states = [stack.enter_context(patcher.patch(model, self.call, context)) for patcher in self.patchers]
            try:
                yield self
            finally:
                self._states = []

    def predict(
        self, index: int, latents: torch.Tensor, denoise: Denoiser, guidance_scale: float, guided: bool
    ) -> torch.Tensor:
        """The guided prediction for step ``index``.

        Args:
            index (`int`): the step.
            latents (`torch.Tensor`): current latents, one row per image, ``(num_images, ...)``.
            denoise: the network for this step's timestep (see the module docstring).
            guidance_scale (`float`): ``s`` for the combiner (read per step: callbacks may change it).
            guided (`bool`): whether guidance is on; off, only ``cond`` is evaluated and returned as is.
        """
        step = self.steps[index]
        branches = self.branches(index, guided)
        extra = [row for state in self._states for row in state.extra_rows(step, branches)]
        layout, fields = self.batch(index, guided, extra)
        rows = torch.cat([part for branch in layout.branches for part in _latent_parts(latents, branch, extra)])
        out = self._forward(step, layout, rows, fields, denoise)
        preds = {branch.name: out[layout.image_rows(branch.name)] for branch in branches}
        if not guided:
            return preds[COND]
        pred = self.combiner.combine(preds, self.call, step, guidance_scale)
        if not torch.isfinite(pred).all():
            raise ValueError(
                f"The guided prediction of step {index} is not finite (guidance scale {guidance_scale}, "
                f"{type(self.combiner).__name__}): a scale or weight overflows the network's dtype; use smaller ones."
            )
        for post in self.post_combine:
            pred = post(pred, preds, step)
        for refine in self.refinements:
            pred = refine(pred, preds, step, lambda network: self._rerun_cond(step, layout, latents, fields, network))
        return pred

    def _rerun_cond(
        self, step: Step, layout: BatchLayout, latents: torch.Tensor, fields: Fields, denoise: Denoiser
    ) -> torch.Tensor:
        """``denoise`` on the ``cond`` branch's image rows alone, as one more evaluation the patchers see."""
        rows = layout.image_rows(COND)
        cond = BatchLayout(layout.rows[rows])
        return self._forward(step, cond, latents, {name: t[rows] for name, t in fields.items()}, denoise)

    def _forward(
        self, step: Step, layout: BatchLayout, rows: torch.Tensor, fields: Fields, denoise: Denoiser
    ) -> torch.Tensor:
        """The network on ``rows``: in one evaluation, or in chunks of at most the combiner's ``max_rows``, or in
        the fewest chunks that fit the memory budget (the first evaluation of a row shape measures what a row
        needs, on the smallest unit holding a row of the prompt's branch, the one patchers add the most work to)."""
        outputs: dict[int, torch.Tensor] = {}
        parts = [slice(0, len(layout))]
        max_rows = self.combiner.max_rows
        if max_rows is None and self.memory_budget is not None:
            key = _row_key(rows, fields, self.patchers)
            if key not in self._row_bytes:
                probe = layout.unit_of(layout.image_rows(COND).start, self._whole_branches)
                with peak_memory(rows.device) as peak:
                    outputs[probe.start] = self._evaluate(step, layout, probe, rows, fields, denoise)
                self._row_bytes[key] = peak.bytes / (probe.stop - probe.start)
                parts = [slice(0, probe.start), slice(probe.stop, len(layout))]
            max_rows = rows_that_fit(budget_bytes(self.memory_budget, rows.device), self._row_bytes[key])
            largest = max(layout.unit_sizes(self._whole_branches))
            if largest > max_rows:
                raise ValueError(
                    f"`memory_budget` holds {max_rows} rows of this network's batch, but a branch of {largest} rows "
                    "must run in one evaluation (a guidance module relates its images): raise the budget, or make "
                    "fewer images per call."
                )
        for part in parts:
            if part.stop > part.start:
                for chunk in layout[part].chunks(max_rows, self._whole_branches):
                    chunk = slice(chunk.start + part.start, chunk.stop + part.start)
                    outputs[chunk.start] = self._evaluate(step, layout, chunk, rows, fields, denoise)
        ordered = [outputs[start] for start in sorted(outputs)]
        return ordered[0] if len(ordered) == 1 else torch.cat(ordered)

    def _evaluate(
        self, step: Step, layout: BatchLayout, chunk: slice, rows: torch.Tensor, fields: Fields, denoise: Denoiser
    ) -> torch.Tensor:
        """One network evaluation of ``layout``'s rows ``chunk``, with the patchers told which rows they are."""
        part = layout[chunk]
        for state in self._states:
            state.before_forward(step, part)
        with self._forward_context(part.name(self.call.num_images)):
            return denoise(rows[chunk], {name: t[chunk] for name, t in fields.items()})


def _texts(key: TextKey) -> tuple[Text, ...]:
    """The texts the encoder must see for ``key``."""
    if isinstance(key, (str, EncoderTexts)):
        return (key,)
    if isinstance(key, Blend):
        return tuple(text for text, _ in key.parts)
    return ()


def _stacked(parts: Sequence[torch.Tensor]) -> torch.Tensor:
    """``parts`` concatenated along the rows: a view when they lie one after the other in one tensor, else a copy."""
    first = parts[0]
    offset = first.storage_offset()
    for part in parts:
        if (
            part.untyped_storage().data_ptr() != first.untyped_storage().data_ptr()
            or part.dtype != first.dtype
            or part.stride() != first.stride()
            or part.storage_offset() != offset
        ):
            return torch.cat(list(parts))
        offset += len(part) * first.stride(0)
    return first.as_strided((sum(map(len, parts)), *first.shape[1:]), first.stride(), first.storage_offset())


def _blend(parts: Sequence[tuple[Fields, float]]) -> Fields:
    """``sum_i w_i * fields_i``, field by field."""
    return {name: sum(weight * fields[name] for fields, weight in parts) for name in parts[0][0]}


def _latent_parts(latents: torch.Tensor, branch: str, extra: Sequence[ExtraRow]) -> list[torch.Tensor]:
    """A branch's rows of latents: every image, then the branch's extra rows."""
    return [latents, *(row.latents[None] for row in extra if row.branch == branch)]


def _merged_rescale(module_value: float, call_value: float) -> float:
    call_value = unit_interval(call_value, "guidance_rescale")
    if module_value and call_value and module_value != call_value:
        raise ValueError(
            f"`guidance_rescale` is {call_value} in the call but {module_value} in the guidance module: set it in "
            "one place."
        )
    return module_value or call_value


def _row_key(rows: torch.Tensor, fields: Fields, patchers: Sequence[object]) -> tuple:
    """What a row's memory depends on: the shapes and dtypes of a row of latents and of its fields, and the
    patchers."""
    return (
        tuple(rows.shape[1:]),
        rows.dtype,
        tuple((name, tuple(t.shape[1:]), t.dtype) for name, t in sorted(fields.items())),
        tuple(type(patcher).__name__ for patcher in patchers),
    )
