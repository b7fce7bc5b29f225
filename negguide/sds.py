"""Score distillation (DreamFusion's SDS, Poole et al., arXiv 2209.14988) guided by Perp-Neg (Armandpour et
al., "Re-imagine the Negative Prompt Algorithm", arXiv 2304.04968, section 4.3), for text-to-3D training loops.

Each rendered view of the object gets its own view-dependent positive and view negatives
(`negguide.views.view_embeddings`), so the denoiser is told "back view, and not the front" where the camera
looks at the back: this is what keeps text-to-3D models from growing a face on every side (the Janus problem).

Plugging it into threestudio-style guidance code (``StableDiffusionGuidance.compute_grad_sds``): replace the
``use_perp_neg`` branch, which builds the text rows and runs the UNet on ``4 * B`` rows, with::

    from negguide.sds import perp_neg_sds
    from negguide.views import view_embeddings

    # the prompt processor's view embeddings, each (1, 77, D): "<p>, front view", "<p>, side view", ...
    embeds = {"front": front, "side": side, "back": back, "overhead": overhead}
    positive, negatives, weights = view_embeddings(embeds, azimuth, elevation)  # threestudio's schedule
    out = perp_neg_sds(
        lambda x, t, c: self.forward_unet(x, t, encoder_hidden_states=c),
        latents_noisy, t, positive, uncond, negatives, weights, self.cfg.guidance_scale, noise,
        grad_weight=1 - self.alphas[t],
    )
    grad = torch.nan_to_num(out.grad)
    target = (latents - grad).detach()
    loss_sds = 0.5 * F.mse_loss(latents, target, reduction="sum") / batch_size

``weights`` are negguide's (``w >= 0`` pushes away): do not negate them as threestudio's own weights are. Rows
are laid out branch by branch (all samples' unconds, then all positives, then each negative), so every
negative is evaluated on its own sample's latents whatever the batch size.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import torch

from negguide import functional as F
from negguide.checks import finite_float

ScoreDenoiser = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]
"""``denoiser(noisy_latents, timesteps, text_embeddings) -> noise prediction``, all with one row per input row,
e.g. ``lambda x, t, c: unet(x, t, encoder_hidden_states=c).sample``."""


class ScoreDistillation(NamedTuple):
    """What `perp_neg_sds` returns.

    Args:
        noise_pred (`torch.Tensor`): the Perp-Neg guided noise prediction, ``(B, C, H, W)``.
        grad (`torch.Tensor`): the SDS gradient with respect to the clean latents,
            ``grad_weight * (noise_pred - noise)``, ``(B, C, H, W)``.
    """

    noise_pred: torch.Tensor
    grad: torch.Tensor


def _per_sample(value: torch.Tensor, batch: int, name: str, row_shape: tuple[int, ...]) -> torch.Tensor:
    """``value`` as ``(batch, *row_shape)``: a single row is repeated for every sample."""
    if value.shape == row_shape or value.shape == (1, *row_shape):
        return value.reshape(1, *row_shape).expand(batch, *row_shape)
    if value.shape != (batch, *row_shape):
        raise ValueError(f"`{name}` must have shape {(batch, *row_shape)} (or one row), got {tuple(value.shape)}.")
    return value


@torch.no_grad()
def perp_neg_sds(
    denoiser: ScoreDenoiser,
    noisy_latents: torch.Tensor,
    timesteps: torch.Tensor | int,
    positive: torch.Tensor,
    uncond: torch.Tensor,
    negatives: torch.Tensor,
    weights: torch.Tensor,
    guidance_scale: float,
    noise: torch.Tensor,
    *,
    grad_weight: float | torch.Tensor = 1.0,
    weight_mode: str = "s*w",
    patch_size: int | None = None,
    eps: float = 1e-6,
) -> ScoreDistillation:
    r"""Perp-Neg guided noise prediction and SDS gradient for a batch of views, per sample, in one forward.

    ``d_p = e(positive) - e(uncond)``, ``d_i = e(negative_i) - e(uncond)``,
    ``e = e_u + s * (d_p - sum_i w_i * perp(d_i, d_p))`` (`negguide.functional.perp_neg`; each sample with its
    own weights), and ``grad = grad_weight * (e - noise)``. The ``(2 + k) * B`` rows run in one network call
    without gradients.

    Args:
        denoiser (`ScoreDenoiser`): the noise predictor, see `ScoreDenoiser`.
        noisy_latents (`torch.Tensor`): ``x_t``, shape ``(B, C, H, W)``.
        timesteps (`torch.Tensor` or `int`): ``t`` per sample ``(B,)``, or one for all.
        positive (`torch.Tensor`): each sample's positive text embedding ``(B, L, D)`` (view-blended).
        uncond (`torch.Tensor`): the empty prompt's embedding, ``(B, L, D)`` or one row ``(L, D)``/``(1, L, D)``.
        negatives (`torch.Tensor`): each sample's ``k`` negative embeddings, ``(B, k, L, D)``.
        weights (`torch.Tensor`): their weights ``w_i >= 0`` per sample, ``(B, k)``, finite.
        guidance_scale (`float`): ``s`` (about 100 for SDS on Stable Diffusion, 7.5 for sampling).
        noise (`torch.Tensor`): the noise that made ``noisy_latents``, same shape.
        grad_weight (`float` or `torch.Tensor`, defaults to 1.0): DreamFusion's ``w(t)``, one value or ``(B,)``
            (threestudio: ``1 - alphas_cumprod[t]``).
        weight_mode, patch_size, eps: see `negguide.functional.perp_neg`.

    Returns:
        `ScoreDistillation`: ``(noise_pred, grad)``.
    """
    if noisy_latents.ndim != 4:
        raise ValueError(f"`noisy_latents` must have shape (B, C, H, W), got {tuple(noisy_latents.shape)}.")
    if noise.shape != noisy_latents.shape:
        raise ValueError(f"`noise` must have the shape of `noisy_latents`, got {tuple(noise.shape)}.")
    guidance_scale = finite_float(guidance_scale, "guidance_scale")
    batch = len(noisy_latents)
    if positive.ndim != 3 or len(positive) != batch:
        raise ValueError(
            f"`positive` must have shape ({batch}, L, D), one row per sample, got {tuple(positive.shape)}."
        )
    row = tuple(positive.shape[1:])
    if negatives.ndim != 4 or negatives.shape[0] != batch or tuple(negatives.shape[2:]) != row:
        raise ValueError(f"`negatives` must have shape ({batch}, k, *{row}), got {tuple(negatives.shape)}.")
    k = negatives.shape[1]
    if weights.shape != (batch, k):
        raise ValueError(
            f"`weights` must have shape ({batch}, {k}), one per sample and negative, got {tuple(weights.shape)}."
        )
    if not torch.isfinite(weights).all():
        raise ValueError(f"`weights` must be finite, got {weights.tolist()}.")
    uncond = _per_sample(uncond, batch, "uncond", row)
    timesteps = torch.as_tensor(timesteps, device=noisy_latents.device).reshape(-1)
    if len(timesteps) not in (1, batch):
        raise ValueError(f"`timesteps` must hold one timestep or {batch}, one per sample, got {len(timesteps)}.")
    timesteps = timesteps.expand(batch)

    branches = 2 + k
    embeds = torch.cat([uncond, positive, *negatives.unbind(dim=1)])  # (branches * B, L, D), branch-major
    out = denoiser(noisy_latents.repeat(branches, 1, 1, 1), timesteps.repeat(branches), embeds)
    e_u, e_p, *e_n = out.chunk(branches)
    noise_pred = F.perp_neg(
        e_u, e_p, e_n, list(weights.unbind(dim=1)), guidance_scale, eps, weight_mode=weight_mode, patch_size=patch_size
    )
    grad_weight = torch.as_tensor(grad_weight, device=noise_pred.device, dtype=noise_pred.dtype)
    if grad_weight.numel() not in (1, batch):
        raise ValueError(f"`grad_weight` must be one value or {batch}, one per sample, got {grad_weight.numel()}.")
    grad_weight = grad_weight.reshape(-1, 1, 1, 1)
    return ScoreDistillation(noise_pred, grad_weight * (noise_pred - noise))
