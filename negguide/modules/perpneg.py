"""Perp-Neg: negatives that act only perpendicular to the prompt (Armandpour et al., arXiv 2304.04968)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch

from negguide import functional as F
from negguide.branches import COND, UNCOND, Blend, Branch, CallInfo, EmbedsRef, Step, TextKey, negative_branch
from negguide.checks import finite_float, positive_int_or_none, unit_interval
from negguide.modules.base import Combiner, dataclass_kwargs, register_guidance
from negguide.modules.negatives import Negative, as_negatives
from negguide.views import View, view_text


def view_branch(view: str) -> str:
    """Name of the branch that evaluates the negative of view ``view`` (``"front"``, ``"side"``)."""
    return f"view_{view}"


@register_guidance("perpneg")
@dataclass(frozen=True)
class PerpNeg(Combiner):
    r"""Perp-Neg guidance (Armandpour et al., "Re-imagine the Negative Prompt Algorithm", arXiv 2304.04968).

    ``d_p = e_p - e_u``, ``d_i = e(n_i) - e_u``, ``e = e_u + s * (d_p - sum_i w_i * perp(d_i, d_p))`` with
    ``e_u`` the *empty* prompt's prediction and ``perp`` the part of ``d_i`` perpendicular to ``d_p``, per
    sample in fp32 (`negguide.functional.perp_neg`). The part of a negative along the prompt is dropped, so a
    negative that overlaps the prompt ("red square" under "a red circle") cannot delete what the prompt asks
    for: a negative equal to the prompt gives plain classifier-free guidance, one orthogonal to it acts fully.

    The negatives of a step are the `Negative`\ s whose window holds it and the view negatives of ``view``.
    All ``2 + k`` branches run in one batched forward (chunked by ``max_rows``). ``pipe(prompt,
    negative_prompt="blue square", guidance="perpneg")`` is ``PerpNeg(["blue square"])``; a call's
    ``negative_prompt`` must otherwise be one of the module's negatives (the empty prompt stays the baseline).

    Args:
        negatives (`Sequence[Negative | str]`, defaults to none): the negatives, each with its weight ``w_i``
            and step window; strings become ``Negative(text)``, mappings ``Negative(**mapping)``.
        negative_scale (`float`, defaults to 1.0): multiplies every negative's weight (ComfyUI's ``neg_scale``);
            0 turns the negatives off (their branches are not evaluated).
        weight_mode (`str`, defaults to ``"s*w"``): ``"s*w"`` scales the negatives with the guidance scale, as the
            paper and every public implementation do; ``"w"`` applies ``w_i`` as it is:
            ``e = e_u + s * d_p - sum_i w_i * perp(d_i, d_p)``.
        patch_size (`int`, *optional*): ``None`` (the default) projects over the whole latent of each image, as
            the paper does; ``k`` projects each ``k x k`` patch of latent positions on its own (``1``: each
            position), so a negative is dropped only where the prompt's direction matches it locally.
        view (`View`, *optional*): generate this view of the prompt (view-dependent prompting): the positive is
            the blend of the view prompts' embeddings and the view negatives join the others (`negguide.views`).
        eps (`float`, defaults to 1e-6): floor of ``||d_p||^2`` in the projection.
        guidance_rescale (`float`, defaults to 0.0): rescale factor phi in ``[0, 1]`` (Lin et al., arXiv
            2305.08891); the call's ``guidance_rescale`` is used when this is 0.
        max_rows (`int`, *optional*): most rows per network evaluation; larger batches are split (same result,
            less memory). The pipelines' ``memory_budget`` sizes the split from the memory instead.
    """

    negatives: tuple[Negative, ...] = ()
    negative_scale: float = 1.0
    weight_mode: str = "s*w"
    patch_size: int | None = None
    view: View | None = None
    eps: float = 1e-6
    guidance_rescale: float = 0.0
    max_rows: int | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "negatives", as_negatives(self.negatives, type(self).__name__))
        negative_scale = finite_float(self.negative_scale, "negative_scale")
        if negative_scale < 0:
            raise ValueError(
                f"`negative_scale` must be >= 0, got {negative_scale}: negatives push away from their text; "
                "for the opposite, put the text in the prompt."
            )
        object.__setattr__(self, "negative_scale", negative_scale)
        if self.weight_mode not in F.PERP_NEG_WEIGHT_MODES:
            raise ValueError(
                f"`weight_mode` must be one of {F.PERP_NEG_WEIGHT_MODES}, got {self.weight_mode!r}: 's*w' multiplies "
                "the weights by the guidance scale, 'w' does not."
            )
        positive_int_or_none(self.patch_size, "patch_size")
        if isinstance(self.view, Mapping):
            object.__setattr__(self, "view", View(**dataclass_kwargs(View, self.view)))
        elif self.view is not None and not isinstance(self.view, View):
            raise TypeError(f"`view` must be a negguide.View or None, got {type(self.view).__name__} {self.view!r}.")
        eps = finite_float(self.eps, "eps")
        if eps <= 0:
            raise ValueError(f"`eps` must be > 0, got {eps}; it keeps the projection finite when e_p == e_u.")
        object.__setattr__(self, "eps", eps)
        object.__setattr__(self, "guidance_rescale", unit_interval(self.guidance_rescale, "guidance_rescale"))
        positive_int_or_none(self.max_rows, "max_rows")

    @classmethod
    def from_negative_prompt(cls, negative_prompt: str | list[str] | None) -> PerpNeg:
        """``guidance="perpneg"``: the call's ``negative_prompt`` as the one negative (none when it is empty)."""
        texts = [negative_prompt] if isinstance(negative_prompt, str) else list(negative_prompt or [])
        return cls([Negative(negative_prompt)] if any(texts) else [])

    def _check_call_negatives(self, call: CallInfo) -> None:
        """The call's negative prompts must be among the module's own: the baseline stays the empty prompt."""
        for p, text in enumerate(call.negative_prompts):
            own = {call.per_prompt(n.text, f"negatives[{i}].text")[p] for i, n in enumerate(self.negatives)}
            if isinstance(text, EmbedsRef):
                raise TypeError(
                    "PerpNeg takes its negatives as texts and does not use `negative_prompt_embeds`: pass the "
                    "negative texts, e.g. PerpNeg(['blue square'])."
                )
            if text != "" and text not in own:
                raise ValueError(
                    f"PerpNeg keeps the empty prompt as its baseline and takes its negatives from `negatives`; the "
                    f"call's negative prompt {text!r} is not one of them: add it, e.g. PerpNeg([{text!r}]), or use "
                    "guidance='perpneg', which builds the module from `negative_prompt`."
                )

    def _view_prompts(self, call: CallInfo) -> tuple[str, ...]:
        """The call's prompts as texts to write view prompts from."""
        for prompt in call.prompts:
            if not isinstance(prompt, str) or not prompt.strip():
                raise ValueError(
                    f"PerpNeg(view=...) writes the view prompts ('<prompt>, back view', ...) from the call's "
                    f"`prompt`, but got {prompt!r}: pass a non-empty prompt text instead of prompt_embeds."
                )
        return call.prompts

    def _negatives(self, call: CallInfo, step: Step) -> list[tuple[Branch, float]]:
        """The step's negative branches with their weights (``negative_scale`` applied)."""
        if not (self.negatives or self.view):
            raise ValueError(
                "PerpNeg has no negative: give `negatives` (PerpNeg([Negative('blue square')])), a `view`, or a "
                "`negative_prompt` with guidance='perpneg'."
            )
        self._check_call_negatives(call)
        if self.negative_scale == 0:
            return []
        found = [
            (Branch(negative_branch(i), call.per_prompt(negative.text, f"negatives[{i}].text")), negative.weight)
            for i, negative in enumerate(self.negatives)
            if negative.is_active(step)
        ]
        if self.view is not None:
            prompts = self._view_prompts(call)
            found += [
                (Branch(view_branch(view), tuple(view_text(p, view) for p in prompts)), weight)
                for view, weight in self.view.mix().negatives
                if weight > 0
            ]
        return [(branch, weight * self.negative_scale) for branch, weight in found]

    def _positive(self, call: CallInfo) -> tuple[TextKey, ...]:
        if self.view is None:
            return call.prompts
        positive = self.view.mix().positive
        return tuple(
            Blend(tuple((view_text(p, view), weight) for view, weight in positive if weight))
            for p in self._view_prompts(call)
        )

    def branches(self, call: CallInfo, step: Step) -> tuple[Branch, ...]:
        negatives = tuple(branch for branch, _ in self._negatives(call, step))
        return Branch(UNCOND, ("",) * call.num_prompts), *negatives, Branch(COND, self._positive(call))

    def combine(
        self, preds: Mapping[str, torch.Tensor], call: CallInfo, step: Step, guidance_scale: float
    ) -> torch.Tensor:
        negatives = self._negatives(call, step)
        return F.perp_neg(
            preds[UNCOND],
            preds[COND],
            [preds[branch.name] for branch, _ in negatives],
            [weight for _, weight in negatives],
            guidance_scale,
            self.eps,
            weight_mode=self.weight_mode,
            patch_size=self.patch_size,
        )
