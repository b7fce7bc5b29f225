"""Arguments of the stock pipelines beyond prompts and scales, against stock diffusers: SDXL's negative
micro-conditioning, SD3's skip-layer guidance, Flux's caches, and the refusal of embeddings that cannot be
batched."""

from __future__ import annotations

import pytest
import torch
from diffusers import (
    FirstBlockCacheConfig,
    FluxPipeline,
    StableDiffusion3Pipeline,
    StableDiffusionXLPipeline,
)
from family_helpers import MAX_SEQUENCE_LENGTH, SIZE, max_difference, run

from negguide import PerpNeg
from negguide.pipelines import (
    FluxNegGuidePipeline,
    StableDiffusion3NegGuidePipeline,
    StableDiffusionXLNegGuidePipeline,
)
from negguide.testing import flux_components, sd3_components, sdxl_components

FLOW = {"height": SIZE, "width": SIZE, "max_sequence_length": MAX_SEQUENCE_LENGTH}


def pair(stock_class, ours_class, components):
    stock = stock_class(**components())
    stock.set_progress_bar_config(disable=True)
    ours = ours_class.from_pipe(stock)
    ours.set_progress_bar_config(disable=True)
    return stock, ours


def test_sdxl_negative_micro_conditioning_matches_stock():
    stock, ours = pair(StableDiffusionXLPipeline, StableDiffusionXLNegGuidePipeline, sdxl_components)
    micro = {
        "negative_original_size": (32, 32),
        "negative_crops_coords_top_left": (4, 4),
        "negative_target_size": (48, 48),
    }
    # One image: with more, stock repeats the (negative, positive) pair of time ids along its whole batch, so that
    # half of its unconditional rows get the positive ones; here every row of the negative branch gets the negative.
    one = {"prompt": "a red circle", "num_images_per_prompt": 1, "seeds": (0,), "negative_prompt": "blurry"}
    expected = run(stock, **one, **micro)
    assert max_difference(run(ours, **one, **micro), expected) <= 1e-5
    assert max_difference(run(ours, **one), expected) > 1e-4


def test_sdxl_negative_micro_conditioning_reaches_every_negative_row():
    _, ours = pair(StableDiffusionXLPipeline, StableDiffusionXLNegGuidePipeline, sdxl_components)
    seen = []
    handle = ours.unet.register_forward_pre_hook(
        lambda module, args, kwargs: seen.append(kwargs["added_cond_kwargs"]["time_ids"].clone()), with_kwargs=True
    )
    try:
        run(ours, negative_prompt="blurry", negative_original_size=(32, 32), negative_target_size=(48, 48))
    finally:
        handle.remove()
    negative, positive = torch.tensor([32.0, 32, 0, 0, 48, 48]), torch.tensor([64.0, 64, 0, 0, 64, 64])
    assert len(seen) == 2
    for time_ids in seen:  # 4 images: the negative branch's 4 rows, then the prompt's 4
        assert torch.equal(time_ids, torch.stack([negative] * 4 + [positive] * 4))


SKIP = {
    "skip_guidance_layers": [0],
    "skip_layer_guidance_scale": 50.0,
    "skip_layer_guidance_start": 0.0,
    "skip_layer_guidance_stop": 1.0,
}


def test_sd3_skip_layer_guidance_matches_stock_and_costs_one_evaluation_more():
    stock, ours = pair(StableDiffusion3Pipeline, StableDiffusion3NegGuidePipeline, sd3_components)
    expected = run(stock, negative_prompt="blurry", **FLOW, **SKIP)
    rows = []
    handle = ours.transformer.register_forward_pre_hook(
        lambda module, args, kwargs: rows.append((len(kwargs["hidden_states"]), kwargs.get("skip_layers"))),
        with_kwargs=True,
    )
    try:
        assert max_difference(run(ours, negative_prompt="blurry", **FLOW, **SKIP), expected) <= 1e-5
    finally:
        handle.remove()
    # Step 0 lies outside the window (i > start * n), step 1 inside: one more evaluation of the 4 prompt rows.
    assert rows == [(8, None), (8, None), (4, [0])]
    assert max_difference(run(ours, negative_prompt="blurry", **FLOW), expected) > 1e-4


def test_sd3_skip_layer_guidance_runs_under_perp_neg():
    _, ours = pair(StableDiffusion3Pipeline, StableDiffusion3NegGuidePipeline, sd3_components)
    plain = run(ours, guidance=PerpNeg(["a green triangle"]), **FLOW)
    skipped = run(ours, guidance=PerpNeg(["a green triangle"]), **FLOW, **SKIP)
    assert torch.isfinite(skipped).all() and max_difference(plain, skipped) > 1e-4


def test_sd3_bad_skip_layers_are_refused():
    _, ours = pair(StableDiffusion3Pipeline, StableDiffusion3NegGuidePipeline, sd3_components)
    with pytest.raises(ValueError, match="skip_guidance_layers"):
        run(ours, **FLOW, skip_guidance_layers=[7])


def cached_pair() -> tuple[FluxPipeline, FluxNegGuidePipeline]:
    """Stock and ours on two copies of the same weights, each with a FirstBlockCache that skips readily."""
    stock = FluxPipeline(**flux_components())
    ours = FluxNegGuidePipeline(**flux_components())
    for pipe in (stock, ours):
        pipe.transformer.enable_cache(FirstBlockCacheConfig(threshold=0.8))
        pipe.set_progress_bar_config(disable=True)
    return stock, ours


def test_flux_first_block_cache_gives_the_stock_images():
    stock, ours = cached_pair()
    uncached = run(FluxNegGuidePipeline(**flux_components()), **FLOW)
    expected = run(stock, **FLOW)
    assert max_difference(run(ours, **FLOW), expected) <= 1e-5
    assert max_difference(uncached, expected) > 1e-4, "the cache never skipped: the test proves nothing"


def test_flux_cache_contexts_and_current_timestep():
    _, ours = cached_pair()
    contexts, timesteps = [], []
    original = ours.transformer.cache_context

    def record(name, **kwargs):
        contexts.append(name)
        return original(name, **kwargs)

    ours.transformer.cache_context = record

    def callback(pipe, i, t, tensors):
        timesteps.append((pipe.current_timestep, t))
        return tensors

    images = run(ours, negative_prompt="blurry", true_cfg_scale=4.0, callback_on_step_end=callback, **FLOW)
    assert torch.isfinite(images).all()
    assert contexts == ["uncond+cond", "uncond+cond"]
    assert all(current is t for current, t in timesteps) and len(timesteps) == 2
    assert ours.current_timestep is None


def test_flux_negative_embeddings_of_another_length_are_a_value_error():
    _, ours = pair(FluxPipeline, FluxNegGuidePipeline, flux_components)
    given = {
        "prompt_embeds": torch.randn(1, 4, 32),
        "pooled_prompt_embeds": torch.randn(1, 32),
        "negative_prompt_embeds": torch.randn(1, 5, 32),
        "negative_pooled_prompt_embeds": torch.randn(1, 32),
    }
    call = {"height": SIZE, "width": SIZE, "num_inference_steps": 1, "output_type": "latent"}
    with pytest.raises(ValueError, match="must have the same shape when passed directly"):
        ours(**given, **call, true_cfg_scale=2.0)
    with pytest.raises(ValueError, match="different shapes of `encoder_hidden_states`"):
        ours(
            prompt_embeds=given["prompt_embeds"],
            pooled_prompt_embeds=given["pooled_prompt_embeds"],
            negative_prompt="blurry",
            true_cfg_scale=2.0,
            max_sequence_length=MAX_SEQUENCE_LENGTH,
            **call,
        )
    assert ours(**given, **call, true_cfg_scale=1.0).images.shape[0] == 1


def test_flux_negative_without_true_cfg_is_ignored_as_in_stock_unless_a_module_asks_for_it():
    stock, ours = pair(FluxPipeline, FluxNegGuidePipeline, flux_components)
    expected = run(stock, negative_prompt="blurry", **FLOW)
    assert max_difference(run(ours, negative_prompt="blurry", **FLOW), expected) <= 1e-5
    with pytest.raises(ValueError, match="would be ignored"):
        run(ours, negative_prompt="blurry", guidance="negative_prompts", **FLOW)
