"""Negative token merging: the maths, as pure tensor functions.

Singh et al., "Negative Token Merging: Image-based Adversarial Feature Guidance", arXiv 2412.01339
(CVPR 2025), section 3. Features are image tokens, shape ``(rows, tokens, channels)``; every row is merged
against its own reference frame, so rows never mix.
"""

from __future__ import annotations

import torch


def best_matches(
    tokens: torch.Tensor, reference: torch.Tensor, mask: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    r"""Each token's most similar reference token, by cosine similarity (the paper's matching).

    ``S[i, j] = cos(x_i, r_j)``, ``j*_i = argmax_j S[i, j]``, ``m_i = S[i, j*_i]``: the maximum runs over the
    *reference* tokens, one match per output token (the official code reduces over the output tokens
    instead, which pairs each position with an unrelated reference token). Similarities are computed in
    fp32; ``m`` is clamped to at most 1, so that ``threshold = 1`` merges nothing despite rounding.

    Args:
        tokens (`torch.Tensor`): ``x``, shape ``(B, N, C)``.
        reference (`torch.Tensor`): ``r``, shape ``(B, M, C)``: row ``b`` of ``tokens`` is matched within row
            ``b`` of ``reference`` only.
        mask (`torch.Tensor`, *optional*): boolean, shape ``(M,)`` or ``(B, M)``: the reference tokens that may
            be matched. A token with no allowed match gets ``m_i = -inf``.

    Returns:
        `tuple[torch.Tensor, torch.Tensor]`: ``m`` (fp32, shape ``(B, N)``) and ``j*`` (int64, ``(B, N)``).
    """
    x = torch.nn.functional.normalize(tokens.float(), dim=-1)
    r = torch.nn.functional.normalize(reference.float(), dim=-1)
    similarity = torch.bmm(x, r.transpose(1, 2))  # (B, N, M)
    if mask is not None:
        allowed = mask.to(device=similarity.device, dtype=torch.bool)
        similarity = similarity.masked_fill(~allowed.view(-1, 1, allowed.shape[-1]), float("-inf"))
    best, index = similarity.max(dim=-1)
    return best.clamp_(max=1.0), index


def negtome_merge(
    tokens: torch.Tensor,
    reference: torch.Tensor,
    alpha: float,
    threshold: float,
    mask: torch.Tensor | None = None,
) -> torch.Tensor:
    r"""Negative token merging (Singh et al., arXiv 2412.01339, eq. 2).

    With each token's best match ``j*_i`` and its similarity ``m_i`` (`best_matches`):
    ``x_i <- x_i + alpha * (x_i - r_{j*_i})`` where ``m_i > threshold``, ``x_i`` unchanged elsewhere.
    ``alpha > 0`` pushes the tokens away from the reference, ``alpha < 0`` pulls them toward it; ``alpha = 0``
    or ``threshold = 1`` returns ``tokens`` unchanged, bit for bit.

    Args:
        tokens (`torch.Tensor`): ``x``, shape ``(B, N, C)``.
        reference (`torch.Tensor`): ``r``, shape ``(B, M, C)``, same dtype.
        alpha (`float`): extrapolation strength (the paper: 0.9).
        threshold (`float`): similarity above which a token is merged, in ``[-1, 1]`` (the paper: 0.65 to 0.7).
        mask (`torch.Tensor`, *optional*): the reference tokens that may be matched, see `best_matches`.

    Returns:
        `torch.Tensor`: the merged tokens, shape and dtype of ``tokens``.
    """
    similarity, index = best_matches(tokens, reference, mask)
    matched = torch.gather(reference, 1, index.unsqueeze(-1).expand(-1, -1, reference.shape[-1]))
    # x + alpha * (x - r) is lerp(x, r, -alpha); a weight of 0 returns x exactly.
    weight = torch.where(similarity > threshold, -alpha, 0.0).unsqueeze(-1).to(tokens.dtype)
    return torch.lerp(tokens, matched, weight)
