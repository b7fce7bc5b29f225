"""The SDXL pipeline against stock diffusers, with every guidance module."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from conftest import ForwardCounter
from diffusers import DiffusionPipeline, StableDiffusionXLPipeline
from family_helpers import PROMPTS, STEPS, hook_count, latents_per_step, max_difference, run, sdxl_components

import negguide
from negguide import Negative, NegativePrompts, NegToMe, PerpNeg
from negguide.pipelines import StableDiffusionXLNegGuidePipeline

REPO = Path(__file__).resolve().parents[1]
EVERYWHERE = {"threshold": -1.0, "stop": 1.0}


@pytest.fixture(scope="module")
def stock() -> StableDiffusionXLPipeline:
    pipe = StableDiffusionXLPipeline(**sdxl_components())
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.fixture(scope="module")
def pipe(stock) -> StableDiffusionXLNegGuidePipeline:
    ours = StableDiffusionXLNegGuidePipeline.from_pipe(stock)
    ours.set_progress_bar_config(disable=True)
    return ours


@pytest.fixture
def unet_rows(pipe):
    counter = ForwardCounter(pipe.unet)
    yield counter
    counter.remove()


STOCK_CALLS = {
    "no negative (zero embedding)": {},
    "negative prompts": {"negative_prompt": ["blurry", "dark"]},
    "second encoder texts": {
        "prompt_2": ["a big circle", "a small square"],
        "negative_prompt": "dark",
        "negative_prompt_2": ["ugly", "blurry"],
    },
    "guidance rescale": {"negative_prompt": ["blurry", "dark"], "guidance_rescale": 0.7},
    "no guidance": {"guidance_scale": 1.0, "negative_prompt": ["blurry", "dark"]},
}


@pytest.mark.parametrize("case", STOCK_CALLS, ids=list(STOCK_CALLS))
def test_matches_stock_pipeline(stock, pipe, case):
    kwargs = STOCK_CALLS[case]
    expected = run(stock, **kwargs)
    assert max_difference(run(pipe, **kwargs), expected) <= 1e-5
    if "negative_prompt" in kwargs:
        module = NegativePrompts([Negative(kwargs["negative_prompt"])])
        rest = {key: value for key, value in kwargs.items() if key != "negative_prompt"}
        if "negative_prompt_2" not in rest:
            assert max_difference(run(pipe, guidance=module, **rest), expected) <= 1e-5


def test_matches_stock_with_embeddings(stock, pipe):
    embeds, negative, pooled, negative_pooled = stock.encode_prompt(
        PROMPTS, device="cpu", negative_prompt=["blurry", "dark"]
    )
    kwargs = {
        "prompt": None,
        "prompt_embeds": embeds,
        "negative_prompt_embeds": negative,
        "pooled_prompt_embeds": pooled,
        "negative_pooled_prompt_embeds": negative_pooled,
    }
    assert max_difference(run(pipe, **kwargs), run(stock, **kwargs)) <= 1e-5


def test_perp_neg_with_the_prompt_as_negative_is_plain_guidance(pipe):
    expected = run(pipe)
    images = run(pipe, guidance=PerpNeg([Negative(tuple(PROMPTS))]))
    assert max_difference(images, expected) <= 1e-4
    assert max_difference(run(pipe, guidance=PerpNeg(["blurry"])), expected) > 1e-3


def test_batch_equals_items_run_one_by_one(pipe):
    modules = [
        NegativePrompts([Negative("dark", weight=2.0), Negative("blurry", start=0.5)], guidance_rescale=0.5),
        PerpNeg(["blurry", Negative("dark", stop=0.5)]),
    ]
    for guidance in modules:
        batch = run(pipe, guidance=guidance, prompt_2=["a big circle", "a small square"])
        singles = [
            run(pipe, prompt=p, prompt_2=p2, num_images_per_prompt=1, guidance=guidance, seeds=(seed,))
            for seed, (p, p2) in enumerate(
                (p, p2) for p, p2 in zip(PROMPTS, ["a big circle", "a small square"]) for _ in range(2)
            )
        ]
        assert max_difference(batch, torch.cat(singles)) <= 1e-4


def test_windowed_negative_costs_two_rows_per_image(pipe, unet_rows):
    run(pipe, num_inference_steps=4, guidance=NegativePrompts([Negative("blurry", start=0.5)]))
    assert unet_rows.rows == [2 * 4] * 4


def test_negtome_acts_inside_its_window_only_and_leaves_no_hooks(pipe):
    before = hook_count(pipe.unet)
    plain = latents_per_step(pipe)
    patched = latents_per_step(pipe, guidance=NegToMe(threshold=-1.0, start=0.5, stop=1.0))
    assert [torch.equal(a, b) for a, b in zip(plain, patched)] == [True, True, False, False]
    images, expected = run(pipe, guidance=NegToMe(**EVERYWHERE)), run(pipe)
    assert [not torch.equal(a, b) for a, b in zip(images, expected)] == [False, True, False, True]
    assert hook_count(pipe.unet) == before


def test_bad_prompt_2_raises_before_any_network_runs(pipe, unet_rows):
    with pytest.raises(ValueError, match="prompt_2"):
        run(pipe, prompt_2=["a", "b", "c"])
    with pytest.raises(ValueError, match="negative_prompt_2"):
        run(pipe, negative_prompt_2=["a", "b", "c"])
    assert unet_rows.rows == []


def test_from_pipe_shares_components(stock, pipe):
    assert pipe.unet is stock.unet and pipe.text_encoder_2 is stock.text_encoder_2


def test_load_pipeline_and_custom_pipeline(stock, tmp_path):
    stock.save_pretrained(tmp_path)
    expected = run(stock, negative_prompt=["blurry", "dark"])
    loaded = [
        negguide.load_pipeline(tmp_path, device="cpu"),
        DiffusionPipeline.from_pretrained(
            tmp_path, custom_pipeline=str(REPO / "pipelines" / "stable_diffusion_xl.py"), trust_remote_code=True
        ),
    ]
    for pipeline in loaded:
        assert type(pipeline).__name__ == "StableDiffusionXLNegGuidePipeline" and pipeline.dtype == torch.float32
        pipeline.set_progress_bar_config(disable=True)
        assert max_difference(run(pipeline, guidance=NegativePrompts([Negative(["blurry", "dark"])])), expected) <= 1e-5


def test_callback_sees_the_batch_and_output_types(pipe):
    seen = {}

    def callback(pipeline, step, timestep, tensors):
        seen[step] = {name: tuple(t.shape) for name, t in tensors.items()}
        return tensors

    latents = run(
        pipe,
        output_type="latent",
        negative_prompt="blurry",
        callback_on_step_end=callback,
        callback_on_step_end_tensor_inputs=["latents", "prompt_embeds", "add_text_embeds", "add_time_ids"],
    )
    assert latents.shape == (4, 4, 32, 32)
    assert seen[STEPS - 1] == {
        "latents": (4, 4, 32, 32),
        "prompt_embeds": (8, 77, 64),
        "add_text_embeds": (8, 32),
        "add_time_ids": (8, 6),
    }
