"""The Stable Diffusion pipeline against stock diffusers and against hand-written references."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import PIL.Image
import pytest
import torch
from conftest import PROMPTS, generators
from diffusers import DiffusionPipeline, EulerDiscreteScheduler
from diffusers.callbacks import SDCFGCutoffCallback
from diffusers.utils.torch_utils import randn_tensor

from negguide import Negative, NegativePrompts
from negguide.pipelines import StableDiffusionNegGuidePipeline

REPO = Path(__file__).resolve().parents[1]
STEPS = 2


def run(pipeline, *, seeds=(0, 1, 2, 3), **kwargs) -> torch.Tensor:
    kwargs = {
        "prompt": PROMPTS,
        "num_images_per_prompt": 2,
        "num_inference_steps": STEPS,
        "output_type": "pt",
        **kwargs,
    }
    return pipeline(generator=generators(*seeds), **kwargs).images


@pytest.mark.parametrize("guidance_rescale", [0.0, 0.7])
def test_matches_stock_pipeline(stock, pipe, guidance_rescale):
    negatives = ["blurry", "dark"]
    expected = run(stock, negative_prompt=negatives, guidance_rescale=guidance_rescale)
    plain = run(pipe, negative_prompt=negatives, guidance_rescale=guidance_rescale)
    module = run(pipe, guidance=NegativePrompts([Negative(negatives)]), guidance_rescale=guidance_rescale)
    in_module = run(pipe, guidance=NegativePrompts([Negative(negatives)], guidance_rescale=guidance_rescale))
    by_name = run(pipe, negative_prompt=negatives, guidance="negative_prompts", guidance_rescale=guidance_rescale)
    for images in (plain, module, in_module, by_name):
        assert (images - expected).abs().max() <= 1e-5


def test_one_negative_for_all_prompts_matches_stock(stock, pipe):
    expected = run(stock, negative_prompt=["blurry", "blurry"])
    assert (run(pipe, guidance=NegativePrompts(["blurry"])) - expected).abs().max() <= 1e-5
    assert (run(pipe, negative_prompt="blurry") - expected).abs().max() <= 1e-5


def test_matches_stock_with_a_scaling_scheduler_and_embeddings(stock, pipe):
    stock.scheduler = EulerDiscreteScheduler.from_config(stock.scheduler.config)
    pipe.scheduler = stock.scheduler
    prompt_embeds, negative_embeds = stock.encode_prompt(PROMPTS, "cpu", 1, True, ["blurry", "dark"])
    kwargs = {"prompt": None, "prompt_embeds": prompt_embeds, "negative_prompt_embeds": negative_embeds}
    assert (run(pipe, **kwargs) - run(stock, **kwargs)).abs().max() <= 1e-5


def test_without_guidance_matches_stock(stock, pipe, unet_rows):
    expected = run(stock, guidance_scale=1.0, negative_prompt=["blurry", "dark"])
    unet_rows.rows.clear()
    images = run(pipe, guidance_scale=1.0, guidance=NegativePrompts(["blurry"]))
    assert (images - expected).abs().max() <= 1e-5
    assert unet_rows.rows == [4] * STEPS


def test_batch_equals_items_run_one_by_one(pipe):
    guidance = NegativePrompts([Negative("dark", weight=2.0), Negative("blurry", start=0.5)], guidance_rescale=0.5)
    negatives = ["ugly", "green"]
    batch = run(pipe, guidance=guidance, negative_prompt=negatives, seeds=(0, 1, 2, 3))
    singles = [
        run(pipe, prompt=prompt, negative_prompt=negative, num_images_per_prompt=1, guidance=guidance, seeds=(seed,))
        for seed, (prompt, negative) in enumerate((p, n) for p, n in zip(PROMPTS, negatives) for _ in range(2))
    ]
    assert (batch - torch.cat(singles)).abs().max() <= 1e-4


def test_windowed_negative_costs_two_rows_per_image(pipe, unet_rows):
    run(pipe, num_inference_steps=4, guidance=NegativePrompts([Negative("blurry", start=0.5)]))
    assert unet_rows.rows == [2 * 4] * 4


def test_overlapping_negatives_cost_one_row_each_while_active(pipe, unet_rows):
    run(
        pipe,
        num_inference_steps=4,
        guidance=NegativePrompts([Negative("blurry", stop=0.75), Negative("dark", start=0.5)]),
    )
    assert unet_rows.rows == [2 * 4, 2 * 4, 3 * 4, 2 * 4]


def test_guidance_scale_one_evaluates_one_row_per_image(pipe, unet_rows):
    run(pipe, guidance_scale=1.0, guidance=NegativePrompts([Negative("blurry", start=0.5)]))
    assert unet_rows.rows == [4] * STEPS


def _latents_per_step(pipe, text: str) -> list[torch.Tensor]:
    seen = []

    def record(pipeline, step, timestep, tensors):
        seen.append(tensors["latents"].clone())
        return tensors

    run(pipe, num_inference_steps=4, callback_on_step_end=record, guidance=NegativePrompts([Negative(text, start=0.5)]))
    return seen


def test_negative_acts_exactly_inside_its_window(pipe):
    blurry, green = _latents_per_step(pipe, "blurry"), _latents_per_step(pipe, "green")
    assert [torch.equal(a, b) for a, b in zip(blurry, green)] == [True, True, False, False]


def test_weighted_negatives_follow_the_formula(pipe):
    prompt, negatives, scale, seed = "a red circle", [("blurry", 1.0), ("dark", 3.0)], 7.5, 0
    module = NegativePrompts([Negative(text, weight=weight) for text, weight in negatives])
    latents = pipe(
        prompt,
        guidance=module,
        guidance_scale=scale,
        num_inference_steps=STEPS,
        output_type="latent",
        generator=torch.Generator().manual_seed(seed),
    ).images

    def embed(text):
        return pipe.encode_prompt([text], "cpu", 1, False)[0]

    scheduler = pipe.scheduler
    scheduler.set_timesteps(STEPS)
    expected = randn_tensor((1, 4, 32, 32), generator=torch.Generator().manual_seed(seed)) * scheduler.init_noise_sigma
    with torch.no_grad():
        for t in scheduler.timesteps:
            x = scheduler.scale_model_input(expected, t)
            e_p = pipe.unet(x, t, encoder_hidden_states=embed(prompt)).sample
            e_n = sum(w * pipe.unet(x, t, encoder_hidden_states=embed(n)).sample for n, w in negatives) / 4.0
            expected = scheduler.step(e_n + scale * (e_p - e_n), t, expected).prev_sample
    # The reference evaluates each branch alone: batching changes float rounding, which the scale amplifies.
    torch.testing.assert_close(latents, expected, rtol=1e-4, atol=1e-4)


BAD_CALLS = {
    "negative_prompt length": ({"negative_prompt": ["blurry"] * 3}, ValueError, "negative_prompt"),
    "per-prompt negative length": ({"guidance": NegativePrompts([Negative(("a", "b", "c"))])}, ValueError, "text"),
    "negative_prompt type": ({"negative_prompt": 3}, TypeError, "negative_prompt"),
    "not a module": ({"guidance": 42}, TypeError, "guidance"),
    "not a module in a list": ({"guidance": [NegativePrompts(), {"name": "x"}]}, TypeError, "guidance"),
    "unknown name": ({"guidance": "no_such_method"}, ValueError, "no_such_method"),
    "two combiners": ({"guidance": [NegativePrompts(), NegativePrompts(["dark"])]}, ValueError, "combiners"),
    "rescale out of range": ({"guidance_rescale": 1.5}, ValueError, "guidance_rescale"),
    "rescale conflict": (
        {"guidance": NegativePrompts(guidance_rescale=0.3), "guidance_rescale": 0.7},
        ValueError,
        "guidance_rescale",
    ),
    "num_images_per_prompt": ({"num_images_per_prompt": 0}, ValueError, "num_images_per_prompt"),
}


@pytest.mark.parametrize("case", BAD_CALLS, ids=list(BAD_CALLS))
def test_bad_call_raises_before_any_network_runs(pipe, network_calls, case):
    kwargs, error, name = BAD_CALLS[case]
    with pytest.raises(error, match=name):
        run(pipe, **kwargs)
    assert [counter.rows for counter in network_calls] == [[], [], []]


def test_from_pipe_shares_components(stock):
    converted = StableDiffusionNegGuidePipeline.from_pipe(stock)
    assert isinstance(converted, StableDiffusionNegGuidePipeline)
    assert converted.unet is stock.unet and converted.text_encoder is stock.text_encoder


def test_loads_with_from_pretrained_and_as_custom_pipeline(stock, tmp_path):
    stock.save_pretrained(tmp_path)
    expected = run(stock, negative_prompt=["blurry", "dark"])
    loaded = [
        StableDiffusionNegGuidePipeline.from_pretrained(tmp_path),
        DiffusionPipeline.from_pretrained(
            tmp_path, custom_pipeline=str(REPO / "pipelines" / "stable_diffusion.py"), trust_remote_code=True
        ),
    ]
    for pipeline in loaded:
        assert type(pipeline).__name__ == "StableDiffusionNegGuidePipeline"
        pipeline.set_progress_bar_config(disable=True)
        images = run(pipeline, guidance=NegativePrompts([Negative(["blurry", "dark"])]))
        assert (images - expected).abs().max() <= 1e-5


def test_callback_sees_batch_and_can_replace_latents(pipe):
    seen = {}

    def callback(pipeline, step, timestep, tensors):
        seen[step] = {name: None if t is None else tuple(t.shape) for name, t in tensors.items()}
        return {"latents": torch.zeros_like(tensors["latents"])}

    latents = run(
        pipe,
        output_type="latent",
        negative_prompt=["blurry", "dark"],
        callback_on_step_end=callback,
        callback_on_step_end_tensor_inputs=["latents", "prompt_embeds", "negative_prompt_embeds"],
    )
    assert seen[0] == {"latents": (4, 4, 32, 32), "prompt_embeds": (8, 77, 32), "negative_prompt_embeds": (4, 77, 32)}
    assert torch.count_nonzero(latents) == 0


def test_cfg_cutoff_callback_matches_stock(stock, pipe, unet_rows):
    kwargs = {
        "prompt": "a red circle",
        "negative_prompt": "blurry",
        "num_images_per_prompt": 1,
        "num_inference_steps": 3,
    }
    expected = run(
        stock,
        seeds=(0,),
        callback_on_step_end=SDCFGCutoffCallback(cutoff_step_ratio=None, cutoff_step_index=0),
        **kwargs,
    )
    unet_rows.rows.clear()
    images = run(
        pipe,
        seeds=(0,),
        callback_on_step_end=SDCFGCutoffCallback(cutoff_step_ratio=None, cutoff_step_index=0),
        **kwargs,
    )
    assert (images - expected).abs().max() <= 1e-5
    assert unet_rows.rows == [2, 1, 1]


def test_output_types_and_tuple_return(stock, pipe):
    kwargs = {"prompt": "a red circle", "num_images_per_prompt": 2, "seeds": (0, 1)}
    pil = run(pipe, output_type="pil", **kwargs)
    assert len(pil) == 2 and all(isinstance(image, PIL.Image.Image) and image.size == (64, 64) for image in pil)
    array = run(pipe, output_type="np", **kwargs)
    assert isinstance(array, np.ndarray) and array.shape == (2, 64, 64, 3)
    np.testing.assert_allclose(array, run(stock, output_type="np", **kwargs), atol=1e-5)
    assert run(pipe, output_type="latent", **kwargs).shape == (2, 4, 32, 32)
    images, nsfw = pipe("a red circle", num_inference_steps=STEPS, output_type="pt", return_dict=False)
    assert images.shape == (1, 3, 64, 64) and nsfw is None


def test_tokenizer_fixture_keeps_words_whole(pipe):
    words = ["a", "red", "circle", "and", "a", "blue", "square", "blurry", "dark"]
    ids = pipe.tokenizer(" ".join(words), add_special_tokens=False).input_ids
    assert len(ids) == len(words) and pipe.tokenizer.unk_token_id not in ids
