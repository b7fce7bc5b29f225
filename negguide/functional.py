"""Guidance maths: pure tensor functions, reduced per sample.

Every function takes denoiser outputs of shape ``(B, ...)`` (epsilon, v or flow velocity: the rules are
affine in the outputs) and never reduces over the batch dimension, so a batch of N images gives the same
result as N single runs.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch


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
    r"""Weighted mean of several negatives' predictions (ALGORITHMS.md section 1).

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


def perpendicular(delta: torch.Tensor, direction: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    r"""The part of ``delta`` perpendicular to ``direction``, per sample, in fp32.

    ``perp(d, p) = d - (<d, p> / max(||p||^2, eps)) * p`` (Armandpour et al. 2023, arXiv 2304.04968).
    The norm floor ``eps`` keeps a zero ``direction`` finite: the whole ``delta`` is then perpendicular.

    Args:
        delta (`torch.Tensor`): ``d``, shape ``(B, ...)``.
        direction (`torch.Tensor`): ``p``, same shape.
        eps (`float`, defaults to 1e-6): floor of ``||p||^2``.

    Returns:
        `torch.Tensor`: fp32 tensor of ``delta``'s shape.
    """
    d = delta.float()
    p = direction.float()
    dims = _sample_dims(p)
    dot = (d * p).sum(dim=dims, keepdim=True)
    norm2 = (p * p).sum(dim=dims, keepdim=True).clamp_min(eps)
    return d - (dot / norm2) * p


def perp_neg(
    uncond: torch.Tensor,
    cond: torch.Tensor,
    negatives: Sequence[torch.Tensor],
    weights: Sequence[float],
    guidance_scale: float,
    eps: float = 1e-6,
) -> torch.Tensor:
    r"""Perp-Neg guidance (Armandpour et al. 2023, "Re-imagine the Negative Prompt Algorithm", arXiv 2304.04968).

    ``d_p = e_p - e_u``, ``d_i = e(n_i) - e_u``,
    ``e = e_u + s * (d_p - sum_i w_i * perp(d_i, d_p))``.
    Each negative is projected against the positive on its own (negatives are not orthogonalised against
    each other), per sample, in fp32; the result has ``cond``'s dtype.

    Args:
        uncond (`torch.Tensor`): ``e_u``, the empty prompt's prediction, shape ``(B, ...)``.
        cond (`torch.Tensor`): ``e_p``, same shape.
        negatives (`Sequence[torch.Tensor]`): ``e(n_i)``, same shape each.
        weights (`Sequence[float]`): ``w_i``, one per negative.
        guidance_scale (`float`): ``s``.
        eps (`float`, defaults to 1e-6): norm floor of the projection, see `perpendicular`.
    """
    if len(negatives) != len(weights):
        raise ValueError(f"perp_neg needs one weight per negative, got {len(negatives)} and {len(weights)}.")
    e_u = uncond.float()
    d_p = cond.float() - e_u
    push = torch.zeros_like(d_p)
    for negative, weight in zip(negatives, weights):
        push = push + weight * perpendicular(negative.float() - e_u, d_p, eps)
    return (e_u + guidance_scale * (d_p - push)).to(cond.dtype)
