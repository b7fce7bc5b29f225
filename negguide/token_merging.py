"""Negative token merging: the maths, as pure tensor functions.

Singh et al., "Negative Token Merging: Image-based Adversarial Feature Guidance", arXiv 2412.01339
(CVPR 2025), section 3. Features are image tokens, shape ``(rows, tokens, channels)``; every row is merged
against its own reference frame, so rows never mix.
"""

from __future__ import annotations

import torch

SIMILARITY_BYTES = 2**26
"""The most memory one block of similarities may take (64 MiB): `best_matches` works through the tokens in
blocks of this size, so its memory stays bounded at any token count (4,096 tokens per image at SDXL's 1024 px
up blocks would need 64 MiB per image and reference frame at once)."""


def best_matches(
    tokens: torch.Tensor,
    reference: torch.Tensor,
    mask: torch.Tensor | None = None,
    block_bytes: int = SIMILARITY_BYTES,
) -> tuple[torch.Tensor, torch.Tensor]:
    r"""Each token's most similar reference token, by cosine similarity (the paper's matching).

    ``S[i, j] = cos(x_i, r_j)``, ``j*_i = argmax_j S[i, j]``, ``m_i = S[i, j*_i]``: the maximum runs over the
    *reference* tokens, one match per output token (the official code reduces over the output tokens
    instead, which pairs each position with an unrelated reference token). Similarities are computed in the
    activations' dtype, a block of tokens at a time (at most ``block_bytes`` of similarities at once), and
    only each token's best match is kept; ``m`` is returned in fp32, clamped to at most 1, so that
    ``threshold = 1`` merges nothing despite rounding.

    Args:
        tokens (`torch.Tensor`): ``x``, shape ``(B, N, C)``.
        reference (`torch.Tensor`): ``r``, shape ``(B, M, C)``: row ``b`` of ``tokens`` is matched within row
            ``b`` of ``reference`` only.
        mask (`torch.Tensor`, *optional*): boolean, shape ``(M,)`` or ``(B, M)``: the reference tokens that may
            be matched. A token with no allowed match gets ``m_i = -inf``.
        block_bytes (`int`, defaults to `SIMILARITY_BYTES`): the memory of one block of similarities.

    Returns:
        `tuple[torch.Tensor, torch.Tensor]`: ``m`` (fp32, shape ``(B, N)``) and ``j*`` (int64, ``(B, N)``).
    """
    x = torch.nn.functional.normalize(tokens, dim=-1)
    r = torch.nn.functional.normalize(reference, dim=-1).transpose(1, 2)  # (B, C, M)
    allowed = None if mask is None else mask.to(device=tokens.device, dtype=torch.bool).view(-1, 1, r.shape[-1])
    rows_per_block = max(1, block_bytes // (len(x) * r.shape[-1] * x.element_size()))
    best, index = [], []
    for start in range(0, x.shape[1], rows_per_block):
        similarity = torch.bmm(x[:, start : start + rows_per_block], r)  # (B, block, M)
        if allowed is not None:
            similarity.masked_fill_(~allowed, float("-inf"))
        block_best, block_index = similarity.max(dim=-1)
        del similarity  # freed before the next block is allocated: one block alive at a time
        best.append(block_best.float())
        index.append(block_index)
    return torch.cat(best, dim=1).clamp_(max=1.0), torch.cat(index, dim=1)


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
