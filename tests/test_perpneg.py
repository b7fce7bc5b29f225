"""Perp-Neg: the formula against a hand-written reference, its invariants, and the module in the pipeline."""

from __future__ import annotations

import math
from contextlib import contextmanager
from dataclasses import dataclass

import pytest
import torch
from conftest import PROMPTS
from test_stable_diffusion import STEPS, run

import negguide
from negguide import Negative, PerpNeg
from negguide import functional as F
from negguide.modules import Patcher, PatchState


def randn(*shape: int, seed: int = 0, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64).to(dtype)


def reference(u, c, negatives, weights, s, weight_mode="s*w", patch_size=None):
    """The formula written out in float64, one sample (and one patch) at a time."""
    out = torch.empty_like(u, dtype=torch.float64)
    h, w = u.shape[-2:]
    k = patch_size or max(h, w)
    for b in range(len(u)):
        for y in range(0, h, k):
            for x in range(0, w, k):
                region = (b, slice(None), slice(y, y + k), slice(x, x + k)) if patch_size else (b,)
                e_u = u[region].double()
                d_p = c[region].double() - e_u
                push = torch.zeros_like(d_p)
                for n, weight in zip(negatives, weights):
                    w_b = float(weight[b]) if isinstance(weight, torch.Tensor) else weight
                    d = n[region].double() - e_u
                    push += w_b * (d - (d * d_p).sum() / max(float((d_p * d_p).sum()), 1e-6) * d_p)
                out[region] = e_u + s * (d_p - push) if weight_mode == "s*w" else e_u + s * d_p - push
    return out


SETTINGS = [("s*w", None), ("w", None), ("s*w", 1), ("w", 2), ("s*w", 3)]


@pytest.mark.parametrize(("weight_mode", "patch_size"), SETTINGS)
def test_formula_matches_reference(weight_mode, patch_size):
    u, c = randn(3, 4, 7, 8, seed=0), randn(3, 4, 7, 8, seed=1)
    negatives = [randn(3, 4, 7, 8, seed=2), randn(3, 4, 7, 8, seed=3)]
    weights = [1.5, torch.tensor([0.5, 2.0, 0.0])]
    result = F.perp_neg(u, c, negatives, weights, 7.5, weight_mode=weight_mode, patch_size=patch_size)
    expected = reference(u, c, negatives, weights, 7.5, weight_mode, patch_size)
    assert result.dtype == torch.float32
    # 1e-6 of the output's scale: a few fp32 roundings (eps 1.2e-7) on values in the tens.
    assert (result.double() - expected).abs().max() <= 1e-6 * expected.abs().max()


@pytest.mark.parametrize(("weight_mode", "patch_size"), SETTINGS)
def test_negative_equal_to_positive_gives_plain_cfg(weight_mode, patch_size):
    u, c = randn(2, 4, 8, 8, seed=0), randn(2, 4, 8, 8, seed=1)
    result = F.perp_neg(u, c, [c], [3.0], 7.5, weight_mode=weight_mode, patch_size=patch_size)
    torch.testing.assert_close(result, F.cfg(u, c, 7.5), rtol=1e-6, atol=1e-5)


def _orthogonal(noise: torch.Tensor, d_p: torch.Tensor, dims: tuple[int, ...]) -> torch.Tensor:
    return noise - (noise * d_p).sum(dim=dims, keepdim=True) / (d_p * d_p).sum(dim=dims, keepdim=True) * d_p


@pytest.mark.parametrize(("patch_size", "dims"), [(None, (1, 2, 3)), (1, (1,))])
def test_orthogonal_negative_acts_fully(patch_size, dims):
    u, c = randn(2, 4, 8, 8, seed=0), randn(2, 4, 8, 8, seed=1)
    d_p = c - u
    orthogonal = _orthogonal(randn(2, 4, 8, 8, seed=2), d_p, dims)
    scaled = F.perp_neg(u, c, [u + orthogonal], [2.0], 7.5, patch_size=patch_size)
    torch.testing.assert_close(scaled, u + 7.5 * (d_p - 2.0 * orthogonal), rtol=1e-5, atol=1e-5)
    plain = F.perp_neg(u, c, [u + orthogonal], [2.0], 7.5, weight_mode="w", patch_size=patch_size)
    torch.testing.assert_close(plain, u + 7.5 * d_p - 2.0 * orthogonal, rtol=1e-5, atol=1e-5)


def test_weight_zero_is_no_negative():
    u, c, n = randn(2, 4, 8, 8, seed=0), randn(2, 4, 8, 8, seed=1), randn(2, 4, 8, 8, seed=2)
    for weight_mode, patch_size in SETTINGS:
        result = F.perp_neg(u, c, [n], [0.0], 7.5, weight_mode=weight_mode, patch_size=patch_size)
        torch.testing.assert_close(result, F.cfg(u, c, 7.5), rtol=1e-6, atol=1e-6)


def test_one_patch_over_the_whole_latent_is_the_global_projection():
    u, c, n = randn(2, 4, 8, 8, seed=0), randn(2, 4, 8, 8, seed=1), randn(2, 4, 8, 8, seed=2)
    torch.testing.assert_close(F.perp_neg(u, c, [n], [1.0], 5.0, patch_size=8), F.perp_neg(u, c, [n], [1.0], 5.0))
    assert not torch.allclose(F.perp_neg(u, c, [n], [1.0], 5.0, patch_size=1), F.perp_neg(u, c, [n], [1.0], 5.0))


def test_batch_reduces_per_sample():
    u, c, n = randn(4, 4, 8, 8, seed=0), randn(4, 4, 8, 8, seed=1), randn(4, 4, 8, 8, seed=2)
    for _, patch_size in SETTINGS:
        whole = F.perp_neg(u, c, [n], [torch.arange(4.0)], 5.0, patch_size=patch_size)
        for i in range(4):
            single = F.perp_neg(u[i : i + 1], c[i : i + 1], [n[i : i + 1]], [float(i)], 5.0, patch_size=patch_size)
            torch.testing.assert_close(whole[i : i + 1], single)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize("patch_size", [None, 1, 2])
def test_finite_without_a_positive_direction_and_in_fp16(dtype, patch_size):
    u = randn(2, 4, 8, 8, seed=0, dtype=dtype)
    n = randn(2, 4, 8, 8, seed=1, dtype=dtype)
    for cond in (u, randn(2, 4, 8, 8, seed=2, dtype=dtype)):
        result = F.perp_neg(u, cond, [n, u], [1.0, 2.0], 7.5, patch_size=patch_size)
        assert result.dtype == dtype and torch.isfinite(result).all()


def test_empty_prompt_runs_finite_end_to_end(pipe):
    for patch_size in (None, 1):
        images = run(
            pipe, prompt=["", ""], output_type="latent", guidance=PerpNeg(["blue square"], patch_size=patch_size)
        )
        assert torch.isfinite(images).all()


@pytest.mark.parametrize(
    ("kwargs", "error", "name"),
    [
        ({"patch_size": 0}, ValueError, "patch_size"),
        ({"patch_size": 1.5}, TypeError, "patch_size"),
        ({"weight_mode": "s"}, ValueError, "weight_mode"),
        ({"weights": [torch.ones(3)]}, ValueError, "shape"),
    ],
)
def test_functional_rejects_bad_settings(kwargs, error, name):
    u = randn(2, 4, 8, 8)
    kwargs = {"weights": [1.0], **kwargs}
    with pytest.raises(error, match=name):
        F.perp_neg(u, u, [u], kwargs.pop("weights"), 7.5, **kwargs)


# The module in the pipeline.


def test_flag_form_equals_the_module_and_round_trips(pipe):
    flag = run(pipe, negative_prompt="blue square", guidance="perpneg")
    assert torch.equal(flag, run(pipe, guidance=PerpNeg(["blue square"])))
    module = PerpNeg([Negative("blue square", weight=2.0, start=0.25)], weight_mode="w", patch_size=2, max_rows=4)
    assert negguide.guidance_from_dict(module.to_dict()) == module


def test_negative_equal_to_prompt_gives_plain_cfg_end_to_end(pipe):
    expected = run(pipe)
    for guidance in ("perpneg", PerpNeg([Negative(PROMPTS)], patch_size=1), PerpNeg([Negative(PROMPTS)], patch_size=2)):
        images = run(pipe, negative_prompt=None if isinstance(guidance, PerpNeg) else PROMPTS, guidance=guidance)
        torch.testing.assert_close(images, expected, rtol=0, atol=1e-4)


def test_negative_scale_zero_is_no_negative_and_costs_two_rows(pipe, unet_rows):
    expected = run(pipe)
    unet_rows.rows.clear()
    images = run(pipe, guidance=PerpNeg(["blue square", "dark"], negative_scale=0.0))
    assert torch.equal(images, expected)
    assert unet_rows.rows == [2 * 4] * STEPS


def test_negatives_change_the_images(pipe):
    plain = run(pipe)
    scaled, local = (run(pipe, guidance=PerpNeg(["blue square"], patch_size=p)) for p in (None, 1))
    absolute = run(pipe, guidance=PerpNeg(["blue square"], weight_mode="w"))
    for images in (scaled, local, absolute):
        assert (images - plain).abs().max() > 1e-3
    assert (scaled - local).abs().max() > 1e-3 and (scaled - absolute).abs().max() > 1e-3


def test_rows_per_image_follow_the_active_negatives(pipe, unet_rows):
    guidance = PerpNeg([Negative("blurry", stop=0.75), Negative("dark", start=0.5), "blue square"])
    run(pipe, num_inference_steps=4, guidance=guidance)
    assert unet_rows.rows == [4 * 4, 4 * 4, 5 * 4, 4 * 4]
    unet_rows.rows.clear()
    run(pipe, guidance_scale=1.0, guidance=guidance)
    assert unet_rows.rows == [4] * STEPS


def test_batch_equals_items_run_one_by_one(pipe):
    def guidance(text):
        return PerpNeg([Negative("dark", weight=2.0), Negative(text, start=0.5)], patch_size=2)

    negatives = ["ugly", "green"]
    batch = run(pipe, guidance=guidance(negatives), seeds=(0, 1, 2, 3))
    singles = [
        run(pipe, prompt=prompt, num_images_per_prompt=1, guidance=guidance(negative), seeds=(seed,))
        for seed, (prompt, negative) in enumerate((p, n) for p, n in zip(PROMPTS, negatives) for _ in range(2))
    ]
    torch.testing.assert_close(batch, torch.cat(singles), rtol=0, atol=1e-4)


def test_chunked_forward_equals_one_forward(pipe, unet_rows):
    negatives = [Negative("dark", weight=2.0), Negative(["blurry", "ugly"], start=0.5)]
    whole = run(pipe, guidance=PerpNeg(negatives))
    unet_rows.rows.clear()
    chunked = run(pipe, guidance=PerpNeg(negatives, max_rows=8))
    torch.testing.assert_close(chunked, whole, rtol=0, atol=1e-5)
    assert unet_rows.rows == [8, 4] + [8, 8]


def test_follows_the_formula_step_by_step(pipe):
    prompt, negatives, scale, seed = "a red circle", [("blue square", 1.0), ("dark", 0.5)], 7.5, 0
    latents = pipe(
        prompt,
        guidance=PerpNeg([Negative(text, weight=weight) for text, weight in negatives]),
        guidance_scale=scale,
        num_inference_steps=STEPS,
        output_type="latent",
        generator=torch.Generator().manual_seed(seed),
    ).images

    def embed(text):
        return pipe.encode_prompt([text], "cpu", 1, False)[0]

    scheduler = pipe.scheduler
    scheduler.set_timesteps(STEPS)
    expected = torch.randn(1, 4, 32, 32, generator=torch.Generator().manual_seed(seed)) * scheduler.init_noise_sigma
    with torch.no_grad():
        for t in scheduler.timesteps:
            x = scheduler.scale_model_input(expected, t)
            e_u, e_p, *e_n = (
                pipe.unet(x, t, encoder_hidden_states=embed(text)).sample for text in ("", prompt, *dict(negatives))
            )
            guided = reference(e_u, e_p, e_n, [w for _, w in negatives], scale).float()
            expected = scheduler.step(guided, t, expected).prev_sample
    torch.testing.assert_close(latents, expected, rtol=1e-4, atol=1e-4)


@dataclass(frozen=True)
class CountingPatcher(Patcher):
    """Counts the forwards it is told about."""

    seen: list[int]

    @contextmanager
    def patch(self, model, call, context):
        seen = self.seen

        class State(PatchState):
            def before_forward(self, step, layout):
                seen.append(len(layout))

        yield State()


def test_composes_with_a_patcher(pipe):
    seen: list[int] = []
    images = run(pipe, guidance=[PerpNeg(["blue square"]), CountingPatcher(seen)])
    assert torch.equal(images, run(pipe, guidance=PerpNeg(["blue square"])))
    assert seen == [3 * 4] * STEPS


BAD_CALLS = {
    "no negative": ({"guidance": PerpNeg()}, ValueError, "no negative"),
    "flag without negative_prompt": ({"guidance": "perpneg"}, ValueError, "negative_prompt"),
    "empty list": ({"guidance": PerpNeg([])}, ValueError, "no negative"),
    "call negative not among the module's": (
        {"guidance": PerpNeg(["dark"]), "negative_prompt": "blurry"},
        ValueError,
        "blurry",
    ),
    "negative embeddings": (
        {"guidance": PerpNeg(["dark"]), "negative_prompt_embeds": torch.zeros(2, 77, 32)},
        TypeError,
        "negative_prompt_embeds",
    ),
    "per-prompt text count": ({"guidance": PerpNeg([Negative(("a", "b", "c"))])}, ValueError, "text"),
}


@pytest.mark.parametrize("case", BAD_CALLS, ids=list(BAD_CALLS))
def test_bad_call_raises_before_any_network_runs(pipe, network_calls, case):
    kwargs, error, name = BAD_CALLS[case]
    with pytest.raises(error, match=name):
        run(pipe, **kwargs)
    assert [counter.rows for counter in network_calls] == [[], [], []]


@pytest.mark.parametrize(
    ("kwargs", "error", "name"),
    [
        ({"negatives": [Negative("x")], "negative_scale": math.nan}, ValueError, "negative_scale"),
        ({"negative_scale": math.inf}, ValueError, "negative_scale"),
        ({"negative_scale": -1.0}, ValueError, "negative_scale"),
        ({"negatives": [{"text": "x", "weight": math.nan}]}, ValueError, "weight"),
        ({"negatives": [{"text": "x", "weight": math.inf}]}, ValueError, "weight"),
        ({"negatives": "blurry"}, TypeError, "negatives"),
        ({"weight_mode": "w*s"}, ValueError, "weight_mode"),
        ({"patch_size": 0}, ValueError, "patch_size"),
        ({"eps": 0.0}, ValueError, "eps"),
        ({"max_rows": 0}, ValueError, "max_rows"),
        ({"view": 180}, TypeError, "view"),
        ({"view": {"azimuth": math.nan}}, ValueError, "azimuth"),
        ({"guidance_rescale": 2.0}, ValueError, "guidance_rescale"),
    ],
)
def test_module_rejects_bad_settings(kwargs, error, name):
    with pytest.raises(error, match=name):
        PerpNeg(**kwargs)
