"""Guidance maths: pure tensor functions, reduced per sample.

Every function takes denoiser outputs of shape ``(B, ...)`` (epsilon, v or flow velocity: the rules are
affine in the outputs) and never reduces over the batch dimension, so a batch of N images gives the same
result as N single runs.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from negguide.checks import positive_int_or_none


def _sample_dims(x: torch.Tensor) -> list[int]:
    """All dimensions but the batch dimension."""
    return list(range(1, x.ndim))


def cfg(uncond: torch.Tensor, cond: torch.Tensor, guidance_scale: float) -> torch.Tensor:
    r"""Classifier-free guidance (Ho & Salimans 2022, arXiv 2207.12598).

    ``e = e_u + s * (e_p - e_u)``; with a negative prompt ``e_u`` is the negative's prediction ``e_n``.
    The operation order is diffusers', so the result matches its pipelines bit for bit.

    Args:
        uncond (`torch.Tensor`): ``e_u`` or ``e_n``, shape ``(B, ...)``.
        cond (`torch.Tensor`): ``e_p``, the prompt's prediction, same shape.
        guidance_scale (`float`): ``s``; 1 gives ``cond``.
    """
    return uncond + guidance_scale * (cond - uncond)


def weighted_mean(preds: Sequence[torch.Tensor], weights: Sequence[float]) -> torch.Tensor:
    r"""Weighted mean of several negatives' predictions (docs/methods/negative-prompts.md).

    ``e_n = sum_i w_i e(n_i) / sum_i w_i``. The weights are normalised first, so a single prediction comes
    back unchanged, bit for bit.

    Args:
        preds (`Sequence[torch.Tensor]`): ``e(n_i)``, each of shape ``(B, ...)``.
        weights (`Sequence[float]`): ``w_i > 0``, one per prediction.
    """
    if len(preds) != len(weights) or not preds:
        raise ValueError(f"weighted_mean needs one weight per prediction, got {len(preds)} and {len(weights)}.")
    total = float(sum(weights))
    mean = preds[0] * (weights[0] / total)
    for pred, weight in zip(preds[1:], weights[1:]):
        mean = mean + pred * (weight / total)
    return mean


def rescale_noise_cfg(guided: torch.Tensor, cond: torch.Tensor, guidance_rescale: float) -> torch.Tensor:
    r"""Guidance rescale (Lin et al. 2023, "Common Diffusion Noise Schedules and Sample Steps are Flawed",
    arXiv 2305.08891, section 3.4).

    ``e_r = e * std(e_p) / std(e)``, ``e = phi * e_r + (1 - phi) * e``, std per sample. Same operations in
    the same order as diffusers' ``rescale_noise_cfg``, so results are identical.

    Args:
        guided (`torch.Tensor`): ``e``, the guided prediction, shape ``(B, ...)``.
        cond (`torch.Tensor`): ``e_p``, the prompt's prediction, same shape.
        guidance_rescale (`float`): ``phi`` in ``[0, 1]``; 0 leaves ``guided`` unchanged.
    """
    std_cond = cond.std(dim=_sample_dims(cond), keepdim=True)
    std_guided = guided.std(dim=_sample_dims(guided), keepdim=True)
    rescaled = guided * (std_cond / std_guided)
    return guidance_rescale * rescaled + (1 - guidance_rescale) * guided


def sample_norm(x: torch.Tensor) -> torch.Tensor:
    r"""The L2 norm of each sample, ``||x_b||`` over all dims but the batch dim, in fp32: shape ``(B,)``.

    Args:
        x (`torch.Tensor`): shape ``(B, ...)``.
    """
    return x.float().flatten(1).norm(dim=1)


def sample_cosine(a: torch.Tensor, b: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    r"""The cosine similarity of each pair of samples, ``<a_b, b_b> / max(||a_b|| ||b_b||, eps)``, in fp32:
    shape ``(B,)``.

    The floor ``eps`` keeps a zero sample finite: its cosine is 0.

    Args:
        a (`torch.Tensor`): shape ``(B, ...)``.
        b (`torch.Tensor`): same shape.
        eps (`float`, defaults to 1e-12): floor of the product of the norms.
    """
    a, b = a.float().flatten(1), b.float().flatten(1)
    return (a * b).sum(dim=1) / (a.norm(dim=1) * b.norm(dim=1)).clamp_min(eps)


PERP_NEG_WEIGHT_MODES = ("s*w", "w")
"""How Perp-Neg's negative weights scale: ``"s*w"`` multiplies them by the guidance scale (the paper and every
public implementation), ``"w"`` applies them as they are."""


def _check_patch_size(patch_size: int | None, x: torch.Tensor) -> None:
    if positive_int_or_none(patch_size, "patch_size") is not None and x.ndim != 4:
        raise ValueError(
            f"`patch_size` needs latents of shape (B, C, H, W), got shape {tuple(x.shape)}; use patch_size=None "
            "(one projection per sample) for other layouts."
        )


def _patch_sums(x: torch.Tensor, patch_size: int | None) -> torch.Tensor:
    """Sums of ``x`` over each sample (``patch_size=None``, shape ``(B, 1, ...)``) or over the channels and
    each ``k x k`` patch of positions (``(B, C, H, W)`` -> ``(B, 1, H, W)``, every position holding its
    patch's sum; edge patches are cut short)."""
    if patch_size is None:
        return x.sum(dim=_sample_dims(x), keepdim=True)
    k = patch_size
    b, _, h, w = x.shape
    summed = torch.nn.functional.pad(x.sum(dim=1), (0, -w % k, 0, -h % k))  # (B, H', W'), multiples of k
    patches = summed.reshape(b, summed.shape[1] // k, k, summed.shape[2] // k, k).sum(dim=(2, 4))
    return patches.repeat_interleave(k, dim=1).repeat_interleave(k, dim=2)[:, None, :h, :w]


def perpendicular(
    delta: torch.Tensor, direction: torch.Tensor, eps: float = 1e-6, patch_size: int | None = None
) -> torch.Tensor:
    r"""The part of ``delta`` perpendicular to ``direction``, per sample, in fp32.

    ``perp(d, p) = d - (<d, p> / max(||p||^2, eps)) * p`` (Armandpour et al. 2023, arXiv 2304.04968).
    The norm floor ``eps`` keeps a zero ``direction`` finite: the whole ``delta`` is then perpendicular.

    The paper takes the inner products over the whole sample. With ``patch_size=k`` they are taken over the
    channels of each ``k x k`` patch of latent positions instead (``k=1``: each position on its own), so a
    negative is projected out only where the positive points the same way *at that place*.

    Args:
        delta (`torch.Tensor`): ``d``, shape ``(B, ...)``.
        direction (`torch.Tensor`): ``p``, same shape.
        eps (`float`, defaults to 1e-6): floor of ``||p||^2`` over a sample; a patch's floor is its share of
            ``eps`` (``eps`` times its number of elements over the sample's).
        patch_size (`int`, *optional*): ``None`` (the default) projects each sample as a whole; an int ``k``
            projects each patch on its own and needs ``(B, C, H, W)`` tensors.

    Returns:
        `torch.Tensor`: fp32 tensor of ``delta``'s shape.
    """
    _check_patch_size(patch_size, direction)
    d = delta.float()
    p = direction.float()
    dot = _patch_sums(d * p, patch_size)
    norm2 = _patch_sums(p * p, patch_size)
    if patch_size is None:
        return d - (dot / norm2.clamp_min(eps)) * p
    floor = eps * _patch_sums(torch.ones_like(p[:1]), patch_size) / p[0].numel()  # each patch's share of eps
    return d - (dot / torch.maximum(norm2, floor)) * p


def _per_sample(weight: float | torch.Tensor, like: torch.Tensor) -> float | torch.Tensor:
    """A float as it is; a ``(B,)`` tensor as fp32 ``(B, 1, ..., 1)`` to broadcast against ``like``."""
    if not isinstance(weight, torch.Tensor):
        return float(weight)
    if weight.shape != like.shape[:1]:
        raise ValueError(
            f"a tensor weight must have shape ({like.shape[0]},), one per sample, got {tuple(weight.shape)}."
        )
    return weight.to(device=like.device, dtype=torch.float32).reshape(-1, *[1] * (like.ndim - 1))


def perp_neg(
    uncond: torch.Tensor,
    cond: torch.Tensor,
    negatives: Sequence[torch.Tensor],
    weights: Sequence[float | torch.Tensor],
    guidance_scale: float,
    eps: float = 1e-6,
    *,
    weight_mode: str = "s*w",
    patch_size: int | None = None,
) -> torch.Tensor:
    r"""Perp-Neg guidance (Armandpour et al. 2023, "Re-imagine the Negative Prompt Algorithm", arXiv 2304.04968).

    ``d_p = e_p - e_u``, ``d_i = e(n_i) - e_u``,
    ``e = e_u + s * (d_p - sum_i w_i * perp(d_i, d_p))`` (weight mode ``"s*w"``, the paper's), or
    ``e = e_u + s * d_p - sum_i w_i * perp(d_i, d_p)`` (weight mode ``"w"``: the weights do not grow with ``s``).
    Each negative is projected against the positive on its own (negatives are not orthogonalised against
    each other), per sample, in fp32; the result has ``cond``'s dtype.

    Args:
        uncond (`torch.Tensor`): ``e_u``, the empty prompt's prediction, shape ``(B, ...)``.
        cond (`torch.Tensor`): ``e_p``, same shape.
        negatives (`Sequence[torch.Tensor]`): ``e(n_i)``, same shape each.
        weights (`Sequence[float | torch.Tensor]`): ``w_i``, one per negative: a float, or a ``(B,)`` tensor
            with one weight per sample (e.g. view-dependent weights in score distillation).
        guidance_scale (`float`): ``s``.
        eps (`float`, defaults to 1e-6): norm floor of the projection, see `perpendicular`.
        weight_mode (`str`, defaults to ``"s*w"``): ``"s*w"`` or ``"w"``, see above.
        patch_size (`int`, *optional*): where the projection is taken, see `perpendicular`.
    """
    if len(negatives) != len(weights):
        raise ValueError(f"perp_neg needs one weight per negative, got {len(negatives)} and {len(weights)}.")
    if weight_mode not in PERP_NEG_WEIGHT_MODES:
        raise ValueError(f"`weight_mode` must be one of {PERP_NEG_WEIGHT_MODES}, got {weight_mode!r}.")
    e_u = uncond.float()
    d_p = cond.float() - e_u
    push = torch.zeros_like(d_p)
    for negative, weight in zip(negatives, weights):
        push = push + _per_sample(weight, d_p) * perpendicular(negative.float() - e_u, d_p, eps, patch_size)
    if weight_mode == "w":
        return (e_u + guidance_scale * d_p - push).to(cond.dtype)
    return (e_u + guidance_scale * (d_p - push)).to(cond.dtype)


NAG_NORMS = ("l1", "l2")
NAG_PROJECTIONS = (None, "perpendicular")


def nag(
    positive: torch.Tensor,
    negative: torch.Tensor,
    scale: float,
    tau: float,
    alpha: float,
    norm: str = "l1",
    projection: str | None = None,
    eps: float = 1e-6,
) -> torch.Tensor:
    r"""Normalized attention guidance on attention outputs, per token (Chen et al., "Normalized Attention
    Guidance: Universal Negative Guidance for Diffusion Models", arXiv 2505.21179, NeurIPS 2025).

    With ``Z+`` the attention output under the prompt and ``Z-`` under the negative (same queries):
    ``Zt = Z+ + (s - 1) * D`` with ``D = Z+ - Z-`` (the official ``s * Z+ - (s - 1) * Z-``, written so that
    ``Z- == Z+`` gives ``Z+`` bit for bit); ``r = ||Zt|| / ||Z+||`` per token over the features; ``Zh = Zt *
    min(r, tau) / r``; output ``Z+ + alpha * (Zh - Z+)`` (the official ``alpha * Zh + (1 - alpha) * Z+``).
    With ``projection="perpendicular"``, ``D`` keeps only its part orthogonal to ``Z+`` (per token), the idea of
    Perp-Neg (Armandpour et al., arXiv 2304.04968) moved into attention space: the negative cannot remove what
    the prompt's own attention output holds.

    The norms and the clipping are computed in fp32; ``||Z+||`` is floored at ``eps`` and a zero ``Zt`` is left
    unclipped, so zeros never give NaN.

    Args:
        positive (`torch.Tensor`): ``Z+``, shape ``(..., tokens, features)``.
        negative (`torch.Tensor`): ``Z-``, same shape.
        scale (`float`): ``s >= 1`` (the paper's ``phi + 1``); 1 returns ``Z+`` unchanged.
        tau (`float`): clipping threshold of the norm ratio, ``>= 1``.
        alpha (`float`): blend in ``[0, 1]`` of the normalised guidance into ``Z+``.
        norm (`str`, defaults to ``"l1"``): ``"l1"`` (the official UNet and SD3 code) or ``"l2"`` (its Flux code).
        projection (`str`, *optional*): ``None`` (the paper) or ``"perpendicular"``.
        eps (`float`, defaults to 1e-6): floor of ``||Z+||``.

    Returns:
        `torch.Tensor`: the guided attention output, ``positive``'s shape and dtype.
    """
    if norm not in NAG_NORMS:
        raise ValueError(f"`norm` must be one of {NAG_NORMS}, got {norm!r}.")
    if projection not in NAG_PROJECTIONS:
        raise ValueError(f"`projection` must be one of {NAG_PROJECTIONS}, got {projection!r}.")
    if scale == 1:
        return positive
    p = positive.float()
    difference = p - negative.float()
    if projection == "perpendicular":
        along = (difference * p).sum(-1, keepdim=True) / (p * p).sum(-1, keepdim=True).clamp_min(eps)
        difference = difference - along * p
    guided = p + (scale - 1) * difference
    order = 1 if norm == "l1" else 2
    ratio = torch.linalg.vector_norm(guided, order, dim=-1, keepdim=True) / torch.linalg.vector_norm(
        p, order, dim=-1, keepdim=True
    ).clamp_min(eps)
    clipped = guided * (tau / ratio.clamp_min(eps)).clamp_max(1.0)
    return (p + alpha * (clipped - p)).to(positive.dtype)
