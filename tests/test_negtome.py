"""NegToMe: the merge against hand-written references, and the patcher inside the Stable Diffusion pipeline."""

from __future__ import annotations

import json
import math

import numpy as np
import PIL.Image
import pytest
import torch
from conftest import PROMPTS, generators
from diffusers.models.attention_processor import Attention

import negguide
from negguide import NegativePrompts, NegToMe
from negguide.branches import COND, UNCOND, Branch, CallInfo, Step
from negguide.layout import BatchLayout
from negguide.modules.base import PatchContext
from negguide.token_merging import best_matches, negtome_merge

STEPS = 2
# Threshold -1 merges every token, so the tiny random network shows the effect on every merged row.
EVERYWHERE = {"threshold": -1.0, "stop": 1.0}


def run(pipeline, *, seeds=(0, 1, 2, 3), **kwargs) -> torch.Tensor:
    kwargs = {
        "prompt": PROMPTS,
        "num_images_per_prompt": 2,
        "num_inference_steps": STEPS,
        "output_type": "pt",
        **kwargs,
    }
    return pipeline(generator=generators(*seeds), **kwargs).images


def reference_image(size=(48, 40), seed=0) -> PIL.Image.Image:
    pixels = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 4), dtype=np.uint8)
    return PIL.Image.fromarray(pixels, mode="RGBA")


# The maths


def merge_by_hand(x, r, alpha, threshold, mask=None):
    """Section 3 of the paper, token by token."""
    out = x.clone()
    for b in range(x.shape[0]):
        for i in range(x.shape[1]):
            best, best_j = -math.inf, None
            for j in range(r.shape[1]):
                if mask is not None and not mask[j]:
                    continue
                s = float(torch.dot(x[b, i], r[b, j]) / (x[b, i].norm() * r[b, j].norm()))
                if s > best:
                    best, best_j = s, j
            if best_j is not None and best > threshold:
                out[b, i] = x[b, i] + alpha * (x[b, i] - r[b, best_j])
    return out


def transposed_merge(x, r, alpha, threshold):
    """The official code's reduction: over the output tokens, for each reference position."""
    s = torch.nn.functional.normalize(x, dim=-1) @ torch.nn.functional.normalize(r, dim=-1).transpose(1, 2)
    m, j = s.max(dim=-2)
    matched = torch.gather(r, 1, j.unsqueeze(-1).expand(-1, -1, r.shape[-1]))
    return torch.where((m > threshold).unsqueeze(-1), x + alpha * (x - matched), x)


@pytest.mark.parametrize("threshold", [-1.0, 0.0, 0.2])
def test_merge_matches_the_hand_written_reference(threshold):
    g = torch.Generator().manual_seed(0)
    x, r = torch.randn(3, 7, 5, generator=g), torch.randn(3, 6, 5, generator=g)
    mask = torch.tensor([True, False, True, True, False, True])
    torch.testing.assert_close(negtome_merge(x, r, 0.9, threshold), merge_by_hand(x, r, 0.9, threshold))
    torch.testing.assert_close(negtome_merge(x, r, -0.5, threshold, mask), merge_by_hand(x, r, -0.5, threshold, mask))


def test_merge_uses_the_papers_axis_not_the_transposed_one():
    # Token 1 is far from every reference token (best: r_1, cos 0.11), but r_1 is close to token 0 (cos 0.99):
    # reducing over the output tokens would merge token 1 with r_0, an unrelated token.
    x = torch.tensor([[[1.0, 0.0], [0.0, 1.0]]])
    r = torch.tensor([[[1.0, 0.0], [0.9, 0.1]]])
    similarity, index = best_matches(x, r)
    assert index.tolist() == [[0, 1]] and similarity[0, 1] < 0.2
    torch.testing.assert_close(negtome_merge(x, r, 0.5, 0.5), x)
    torch.testing.assert_close(transposed_merge(x, r, 0.5, 0.5), torch.tensor([[[1.0, 0.0], [-0.5, 1.5]]]))


def test_merge_is_the_identity_at_alpha_zero_or_threshold_one():
    g = torch.Generator().manual_seed(1)
    x, r = torch.randn(2, 9, 4, generator=g), torch.randn(2, 9, 4, generator=g)
    assert torch.equal(negtome_merge(x, r, 0.0, -1.0), x)
    assert torch.equal(negtome_merge(x, x.clone(), 0.9, 1.0), x)


def test_fully_masked_reference_merges_nothing():
    x = torch.randn(1, 4, 3)
    assert torch.equal(negtome_merge(x, x + 0.01, 0.9, -1.0, torch.zeros(4, dtype=torch.bool)), x)


# The hook, on the tiny UNet's attention layers


def hooked_layer(pipe):
    return dict(NegToMe().select_layers(pipe.unet))


def test_default_selection_is_attention_in_up_blocks(pipe):
    layers = hooked_layer(pipe)
    assert layers and all(name.startswith("up_blocks.") and isinstance(m, Attention) for name, m in layers.items())


def test_the_papers_matching_is_what_runs_in_the_network(pipe):
    layer = next(iter(hooked_layer(pipe).values()))
    call = CallInfo.from_call(["p"], None, None, None, 3)
    layout = BatchLayout.build([UNCOND, COND], 3, 3)
    g = torch.Generator().manual_seed(0)
    hidden = torch.randn(6, 16 * 16, layer.query_dim, generator=g)
    context = torch.randn(6, 77, 32, generator=g)
    encoder = {"encoder_hidden_states": context} if layer.is_cross_attention else {}
    with torch.no_grad():
        plain = layer(hidden, **encoder)
        module = NegToMe(alpha=0.9, threshold=0.0)
        with module.patch(pipe.unet, call, PatchContext(latent_shape=(4, 32, 32))) as state:
            state.before_forward(Step(0, 10, 999.0), layout)
            merged = layer(hidden, **encoder)
    expected, transposed = plain.clone(), plain.clone()
    for rows in ([0, 1, 2], [3, 4, 5]):  # one group per branch, anchored on its first image
        anchor, others = rows[0], rows[1:]
        expected[others] = merge_by_hand(plain[others], plain[[anchor, anchor]], 0.9, 0.0)
        transposed[others] = transposed_merge(plain[others], plain[[anchor, anchor]], 0.9, 0.0)
    torch.testing.assert_close(merged, expected, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(merged, transposed, atol=1e-3)
    assert not layer._forward_hooks


def test_nearest_anchor_matches_against_every_other_image(pipe):
    layer = next(iter(hooked_layer(pipe).values()))
    call = CallInfo.from_call(["p"], None, None, None, 3)
    hidden = torch.randn(3, 16 * 16, layer.query_dim, generator=torch.Generator().manual_seed(0))
    encoder = {"encoder_hidden_states": torch.zeros(3, 77, 32)} if layer.is_cross_attention else {}
    with torch.no_grad():
        plain = layer(hidden, **encoder)
        with NegToMe(threshold=0.0, anchor="nearest").patch(pipe.unet, call, PatchContext((4, 32, 32))) as state:
            state.before_forward(Step(0, 10, 999.0), BatchLayout.build([COND], 3, 3))
            merged = layer(hidden, **encoder)
    for i in range(3):
        others = torch.cat([plain[j] for j in range(3) if j != i])[None]
        torch.testing.assert_close(
            merged[i : i + 1], merge_by_hand(plain[i : i + 1], others, 0.9, 0.0), rtol=1e-5, atol=1e-5
        )


# The pipeline


@pytest.mark.parametrize("setting", [{"alpha": 0.0}, {"threshold": 1.0}], ids=["alpha 0", "threshold 1"])
def test_no_op_settings_are_bit_identical_to_the_run_without(pipe, setting):
    expected = run(pipe, negative_prompt="blurry")
    images = run(pipe, negative_prompt="blurry", guidance=NegToMe(**{**EVERYWHERE, **setting}))
    assert torch.equal(images, expected)


@pytest.mark.parametrize("guidance_scale", [7.5, 1.0])
def test_first_anchor_changes_every_image_but_the_first_of_each_prompt(pipe, guidance_scale):
    expected = run(pipe, guidance_scale=guidance_scale)
    images = run(pipe, guidance_scale=guidance_scale, guidance=NegToMe(**EVERYWHERE))
    changed = [not torch.equal(a, b) for a, b in zip(images, expected)]
    assert changed == [False, True, False, True]


def test_nearest_anchor_changes_every_image(pipe):
    expected = run(pipe)
    images = run(pipe, guidance=NegToMe(anchor="nearest", **EVERYWHERE))
    assert all(not torch.equal(a, b) for a, b in zip(images, expected))


@pytest.mark.parametrize("anchor", ["first", "nearest"])
def test_a_prompt_with_one_image_is_left_as_it_is(pipe, anchor):
    expected = run(pipe, num_images_per_prompt=1, seeds=(0, 1))
    images = run(pipe, num_images_per_prompt=1, seeds=(0, 1), guidance=NegToMe(anchor=anchor, **EVERYWHERE))
    assert torch.equal(images, expected)


def latents_per_step(pipe, guidance) -> list[torch.Tensor]:
    seen = []

    def record(pipeline, step, timestep, tensors):
        seen.append(tensors["latents"].clone())
        return tensors

    run(pipe, num_inference_steps=4, callback_on_step_end=record, guidance=guidance)
    return seen


@pytest.mark.parametrize("mode", ["batch", "reference"])
def test_nothing_changes_outside_the_window(pipe, unet_rows, mode):
    reference = {"reference": reference_image()} if mode == "reference" else {}
    plain = latents_per_step(pipe, None)
    unet_rows.rows.clear()
    patched = latents_per_step(pipe, NegToMe(mode=mode, threshold=-1.0, start=0.5, stop=1.0, **reference))
    if mode == "batch":
        assert [torch.equal(a, b) for a, b in zip(plain, patched)] == [True, True, False, False]
        assert unet_rows.rows == [8] * 4
    else:
        # Inside the window one reference row per branch and prompt joins the batch.
        assert unet_rows.rows == [8, 8, 12, 12]
        assert [torch.equal(a, b) for a, b in zip(plain[:2], patched[:2])] == [True, True]
        assert not any(torch.allclose(a, b, atol=1e-4) for a, b in zip(plain[2:], patched[2:]))


def test_reference_rows_never_reach_the_output(pipe, unet_rows):
    references = [reference_image(seed=0), reference_image((20, 30), seed=1)]
    images = run(pipe, guidance=NegToMe(mode="reference", reference=references, **EVERYWHERE))
    assert images.shape == (4, 3, 64, 64)
    assert unet_rows.rows == [2 * (4 + 2 * 2)] * STEPS


def test_reference_rows_leave_the_images_alone_when_nothing_merges(pipe):
    expected = run(pipe, negative_prompt="blurry")
    module = NegToMe(mode="reference", reference=reference_image(), alpha=0.0, stop=1.0)
    images = run(pipe, negative_prompt="blurry", guidance=module)
    # Same generators, same image rows; only the batch size differs.
    torch.testing.assert_close(images, expected, rtol=0, atol=1e-5)


def test_reference_rows_hold_the_noised_reference(pipe):
    image = reference_image()
    seen = []
    handle = pipe.unet.register_forward_pre_hook(
        lambda module, args, kwargs: seen.append(kwargs["sample"][-1].clone()), with_kwargs=True
    )
    try:
        run(
            pipe,
            prompt="a red circle",
            num_images_per_prompt=1,
            seeds=(0,),
            guidance_scale=1.0,
            guidance=NegToMe(mode="reference", reference=image, stop=1.0, seed=3),
        )
    finally:
        handle.remove()
    pixels = pipe.image_processor.preprocess(image.convert("RGB"), height=64, width=64)
    clean = pipe.vae.encode(pixels).latent_dist.mode() * pipe.vae.config.scaling_factor
    noise = torch.Generator().manual_seed(3)
    for t, row in zip(pipe.scheduler.timesteps, seen):
        expected = pipe.scheduler.add_noise(clean, torch.randn(clean.shape, generator=noise), t[None])
        torch.testing.assert_close(row, pipe.scheduler.scale_model_input(expected, t)[0])


def test_reference_mask_limits_the_matches(pipe):
    image = reference_image((32, 32))
    white, black = np.ones((32, 32)), np.zeros((32, 32))
    plain = run(pipe)
    masked_out = run(pipe, guidance=NegToMe(mode="reference", reference=image, mask=black, **EVERYWHERE))
    open_mask = run(pipe, guidance=NegToMe(mode="reference", reference=image, mask=white, **EVERYWHERE))
    unmasked = run(pipe, guidance=NegToMe(mode="reference", reference=image, **EVERYWHERE))
    torch.testing.assert_close(masked_out, plain, rtol=0, atol=1e-5)
    assert torch.equal(open_mask, unmasked)
    assert not torch.allclose(unmasked, plain, atol=1e-3)


@pytest.mark.parametrize("mode", ["batch", "reference"])
def test_deterministic_under_seed(pipe, mode):
    reference = {"reference": reference_image()} if mode == "reference" else {}
    module = NegToMe(mode=mode, **EVERYWHERE, **reference)
    assert torch.equal(run(pipe, guidance=module), run(pipe, guidance=module))


def test_hooks_are_removed_after_a_run_and_after_an_exception(pipe):
    def hooks():
        return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in pipe.unet.modules())

    forward = Attention.forward
    before = hooks()
    run(pipe, guidance=NegToMe(**EVERYWHERE))
    assert hooks() == before

    def fail(pipeline, step, timestep, tensors):
        raise RuntimeError("stop here")

    with pytest.raises(RuntimeError, match="stop here"):
        run(
            pipe,
            guidance=NegToMe(mode="reference", reference=reference_image(), **EVERYWHERE),
            callback_on_step_end=fail,
        )
    assert hooks() == before
    assert Attention.forward is forward


def test_composes_with_negative_prompts(pipe):
    negatives = NegativePrompts(["blurry"])
    expected = run(pipe, guidance=negatives)
    images = run(pipe, guidance=[negatives, NegToMe(**EVERYWHERE)])
    assert [not torch.equal(a, b) for a, b in zip(images, expected)] == [False, True, False, True]


def test_composes_with_perp_neg(pipe):
    perp = negguide.PerpNeg(["blurry"])
    expected = run(pipe, guidance=perp)
    images = run(pipe, guidance=[perp, NegToMe(**EVERYWHERE)])
    assert [not torch.equal(a, b) for a, b in zip(images, expected)] == [False, True, False, True]
    referenced = run(pipe, guidance=[NegToMe(mode="reference", reference=reference_image(), **EVERYWHERE), perp])
    assert referenced.shape == expected.shape and not torch.allclose(referenced, expected, atol=1e-3)


def test_round_trips_through_json(tmp_path):
    path = tmp_path / "reference.png"
    reference_image().save(path)
    mask = np.zeros((40, 48))
    mask[:20] = 1
    module = NegToMe(mode="reference", reference=[reference_image(seed=2), str(path)], mask=mask, alpha=-0.5)
    data = json.loads(json.dumps(module.to_dict()))
    assert data["reference"][0].startswith("data:image/png;base64,") and data["reference"][1] == str(path)
    assert negguide.guidance_from_dict(data) == module
    assert negguide.guidance_from_dict(NegToMe(anchor="nearest").to_dict()) == NegToMe(anchor="nearest")


BAD_MODULES = {
    "alpha nan": ({"alpha": float("nan")}, ValueError, "alpha"),
    "alpha inf": ({"alpha": float("inf")}, ValueError, "alpha"),
    "threshold nan": ({"threshold": float("nan")}, ValueError, "threshold"),
    "threshold inf": ({"threshold": -float("inf")}, ValueError, "threshold"),
    "threshold above 1": ({"threshold": 1.5}, ValueError, "threshold"),
    "threshold below -1": ({"threshold": -1.01}, ValueError, "threshold"),
    "window": ({"start": 0.5, "stop": 0.5}, ValueError, "start"),
    "mode": ({"mode": "diversity"}, ValueError, "mode"),
    "anchor": ({"anchor": "last"}, ValueError, "anchor"),
    "bad pattern": ({"layers": "up_blocks.(["}, ValueError, "layers"),
    "reference in batch mode": ({"reference": reference_image()}, ValueError, "reference"),
    "no reference": ({"mode": "reference"}, ValueError, "reference"),
    "reference not an image": ({"mode": "reference", "reference": 42}, TypeError, "reference"),
    "reference array": ({"mode": "reference", "reference": np.zeros((8, 8, 3))}, TypeError, "reference"),
    "reference missing file": ({"mode": "reference", "reference": "/no/such/file.png"}, ValueError, "reference"),
    "reference not an image file": ({"mode": "reference", "reference": __file__}, ValueError, "reference"),
    "mask wrong size": (
        {"mode": "reference", "reference": reference_image((48, 40)), "mask": np.ones((40, 40))},
        ValueError,
        "mask",
    ),
    "mask not binary": (
        {"mode": "reference", "reference": reference_image((48, 40)), "mask": np.full((40, 48), 0.5)},
        ValueError,
        "binary",
    ),
    "mask out of range": (
        {"mode": "reference", "reference": reference_image((48, 40)), "mask": np.full((40, 48), 2.0)},
        ValueError,
        "mask",
    ),
    "mask count": (
        {"mode": "reference", "reference": [reference_image()] * 3, "mask": [np.ones((40, 48))] * 2},
        ValueError,
        "mask",
    ),
}


@pytest.mark.parametrize("case", BAD_MODULES, ids=list(BAD_MODULES))
def test_bad_settings_raise_before_any_network_runs(pipe, network_calls, case):
    settings, error, name = BAD_MODULES[case]
    with pytest.raises(error, match=name):
        run(pipe, guidance=NegToMe(**settings))
    assert [counter.rows for counter in network_calls] == [[], [], []]


def test_empty_layer_selection_raises_before_any_network_runs(pipe, network_calls):
    encoder_calls = []
    handle = pipe.vae.encoder.register_forward_pre_hook(lambda module, args: encoder_calls.append(1))
    try:
        with pytest.raises(ValueError, match="layers"):
            run(pipe, guidance=NegToMe(mode="reference", reference=reference_image(), layers="no_such_block"))
        with pytest.raises(ValueError, match="layers"):
            run(pipe, guidance=NegToMe(layers="conv_in"))  # matches a module, but no attention
    finally:
        handle.remove()
    assert [counter.rows for counter in network_calls] == [[], [], []] and not encoder_calls


def test_one_reference_row_per_branch_prompt_and_reference_inside_the_window_only():
    call = CallInfo.from_call(["a", "b"], None, None, None, 2)
    context = PatchContext((4, 4, 4), lambda image: torch.zeros(4, 4, 4), lambda latents, noise, step: latents + noise)
    module = NegToMe(mode="reference", reference=[reference_image(seed=0), reference_image(seed=1)], layers="attn")
    branches = [Branch(UNCOND, ("", "")), Branch(COND, ("a", "b"))]
    with module.patch(torch.nn.ModuleDict({"attn": Attention(8)}), call, context) as state:
        inside = state.extra_rows(Step(0, 4, 999.0), branches)
        outside = state.extra_rows(Step(1, 4, 500.0), branches)
    assert [(row.branch, row.prompt) for row in inside] == [
        (b, p) for b in (UNCOND, COND) for p in (0, 1) for _ in "ab"
    ]
    assert not torch.equal(inside[0].latents, inside[1].latents)  # each reference draws its own noise
    assert torch.equal(inside[0].latents, inside[2].latents)  # and shares it across branches and prompts
    assert outside == ()
