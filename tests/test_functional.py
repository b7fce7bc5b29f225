"""The guidance maths against hand-written references, per sample."""

from __future__ import annotations

import torch
from diffusers.pipelines.stable_diffusion.pipeline_stable_diffusion import rescale_noise_cfg as diffusers_rescale

from negguide import functional as F


def randn(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def test_cfg_formula():
    u, c = randn(2, 4, 8, 8, seed=0), randn(2, 4, 8, 8, seed=1)
    assert torch.equal(F.cfg(u, c, 7.5), u + 7.5 * (c - u))
    assert torch.equal(F.cfg(u, c, 1.0), u + (c - u))


def test_weighted_mean_formula():
    preds = [randn(3, 4, 8, 8, seed=s) for s in range(3)]
    weights = [1.0, 2.5, 0.5]
    expected = sum(w * p for w, p in zip(weights, preds)) / sum(weights)
    torch.testing.assert_close(F.weighted_mean(preds, weights), expected, rtol=0, atol=1e-6)
    assert torch.equal(F.weighted_mean(preds[:1], [0.3]), preds[0])


def test_rescale_matches_diffusers_bit_for_bit():
    guided, cond = randn(3, 4, 8, 8, seed=0) * 3, randn(3, 4, 8, 8, seed=1)
    for phi in (0.0, 0.5, 0.7, 1.0):
        assert torch.equal(F.rescale_noise_cfg(guided, cond, phi), diffusers_rescale(guided, cond, phi))


def test_rescale_is_per_sample():
    guided, cond = randn(4, 4, 8, 8, seed=0) * 3, randn(4, 4, 8, 8, seed=1)
    whole = F.rescale_noise_cfg(guided, cond, 0.7)
    for i in range(4):
        torch.testing.assert_close(whole[i : i + 1], F.rescale_noise_cfg(guided[i : i + 1], cond[i : i + 1], 0.7))


def perp_neg_reference(u, c, negatives, weights, s):
    out = []
    for i in range(len(u)):
        d_p = (c[i] - u[i]).flatten().double()
        push = torch.zeros_like(d_p)
        for n, w in zip(negatives, weights):
            d = (n[i] - u[i]).flatten().double()
            push += w * (d - (d @ d_p) / max(d_p @ d_p, 1e-6) * d_p)
        out.append((u[i].flatten().double() + s * (d_p - push)).reshape(u[i].shape))
    return torch.stack(out).float()


def test_perp_neg_matches_reference_per_sample():
    u, c = randn(3, 4, 8, 8, seed=0), randn(3, 4, 8, 8, seed=1)
    negatives, weights = [randn(3, 4, 8, 8, seed=2), randn(3, 4, 8, 8, seed=3)], [1.0, 1.5]
    result = F.perp_neg(u, c, negatives, weights, 7.5)
    torch.testing.assert_close(result, perp_neg_reference(u, c, negatives, weights, 7.5), rtol=0, atol=1e-4)
    torch.testing.assert_close(result[1:2], F.perp_neg(u[1:2], c[1:2], [n[1:2] for n in negatives], weights, 7.5))


def test_perp_neg_invariants():
    u, c = randn(2, 4, 8, 8, seed=0), randn(2, 4, 8, 8, seed=1)
    torch.testing.assert_close(F.perp_neg(u, c, [c], [1.0], 7.5), F.cfg(u, c, 7.5), rtol=0, atol=1e-5)
    d_p = c - u
    orthogonal = randn(2, 4, 8, 8, seed=2)
    orthogonal = (
        orthogonal
        - (orthogonal * d_p).sum(dim=(1, 2, 3), keepdim=True) / (d_p * d_p).sum(dim=(1, 2, 3), keepdim=True) * d_p
    )
    expected = u + 7.5 * (d_p - 2.0 * orthogonal)
    torch.testing.assert_close(F.perp_neg(u, c, [u + orthogonal], [2.0], 7.5), expected, rtol=0, atol=1e-4)


def test_perp_neg_stays_finite_without_a_positive_direction():
    u = randn(2, 4, 8, 8, seed=0)
    for dtype in (torch.float32, torch.float16):
        result = F.perp_neg(u.to(dtype), u.to(dtype), [randn(2, 4, 8, 8, seed=1).to(dtype)], [1.0], 7.5)
        assert torch.isfinite(result).all() and result.dtype == dtype
