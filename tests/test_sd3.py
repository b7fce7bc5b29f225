"""The SD3 pipeline against stock diffusers, with every guidance module."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from conftest import ForwardCounter
from diffusers import DiffusionPipeline, StableDiffusion3Pipeline
from family_helpers import (
    MAX_SEQUENCE_LENGTH,
    PROMPTS,
    SIZE,
    hook_count,
    latents_per_step,
    max_difference,
    run,
    sd3_components,
)

import negguide
from negguide import Negative, NegativePrompts, NegToMe, PerpNeg
from negguide.branches import EncoderTexts
from negguide.family import call_info
from negguide.pipelines import StableDiffusion3NegGuidePipeline

REPO = Path(__file__).resolve().parents[1]
CALL = {"height": SIZE, "width": SIZE, "max_sequence_length": MAX_SEQUENCE_LENGTH}
EVERYWHERE = {"threshold": -1.0, "stop": 1.0}  # default layers: the transformer blocks


@pytest.fixture(scope="module")
def stock() -> StableDiffusion3Pipeline:
    pipe = StableDiffusion3Pipeline(**sd3_components())
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.fixture(scope="module")
def pipe(stock) -> StableDiffusion3NegGuidePipeline:
    ours = StableDiffusion3NegGuidePipeline.from_pipe(stock)
    ours.set_progress_bar_config(disable=True)
    return ours


@pytest.fixture
def transformer_rows(pipe):
    counter = ForwardCounter(pipe.transformer)
    yield counter
    counter.remove()


STOCK_CALLS = {
    "no negative": {},
    "negative prompts": {"negative_prompt": ["blurry", "dark"]},
    "texts per encoder": {
        "prompt_3": ["a big circle", "a small square"],
        "negative_prompt": "dark",
        "negative_prompt_2": "ugly",
    },
    "no guidance": {"guidance_scale": 1.0, "negative_prompt": ["blurry", "dark"]},
}


@pytest.mark.parametrize("case", STOCK_CALLS, ids=list(STOCK_CALLS))
def test_matches_stock_pipeline(stock, pipe, case):
    kwargs = {**CALL, **STOCK_CALLS[case]}
    expected = run(stock, **kwargs)
    assert max_difference(run(pipe, **kwargs), expected) <= 1e-5
    if isinstance(kwargs.get("negative_prompt"), list):
        rest = {key: value for key, value in kwargs.items() if key != "negative_prompt"}
        module = NegativePrompts([Negative(kwargs["negative_prompt"])])
        assert max_difference(run(pipe, guidance=module, **rest), expected) <= 1e-5


def test_texts_per_encoder_follow_diffusers_defaults():
    call = call_info((PROMPTS, None, ["a red circle", "a tiny square"]), (None, "dark", None), None, None, 1)
    assert call.prompts == ("a red circle", EncoderTexts(("a blue square",) * 2 + ("a tiny square",)))
    assert call.negative_prompts == (EncoderTexts(("", "dark", "")),) * 2


def test_matches_stock_with_embeddings(stock, pipe):
    embeds, negative, pooled, negative_pooled = stock.encode_prompt(
        PROMPTS, None, None, device="cpu", negative_prompt=["blurry", "dark"], max_sequence_length=MAX_SEQUENCE_LENGTH
    )
    kwargs = {
        **CALL,
        "prompt": None,
        "prompt_embeds": embeds,
        "negative_prompt_embeds": negative,
        "pooled_prompt_embeds": pooled,
        "negative_pooled_prompt_embeds": negative_pooled,
    }
    # diffusers repeats caller-given embeddings for num_images_per_prompt only in SDXL
    kwargs.update(num_images_per_prompt=1, seeds=(0, 1))
    assert max_difference(run(pipe, **kwargs), run(stock, **kwargs)) <= 1e-5


def test_perp_neg_with_the_prompt_as_negative_is_plain_guidance(pipe):
    expected = run(pipe, **CALL)
    assert max_difference(run(pipe, guidance=PerpNeg([Negative(tuple(PROMPTS))]), **CALL), expected) <= 1e-4
    assert max_difference(run(pipe, guidance=PerpNeg(["blurry"]), **CALL), expected) > 1e-3


def test_batch_equals_items_run_one_by_one(pipe):
    modules = [
        NegativePrompts([Negative("dark", weight=2.0), Negative("blurry", start=0.5)]),
        PerpNeg(["blurry", Negative("dark", stop=0.5)]),
        [NegativePrompts(["blurry"]), NegToMe(**EVERYWHERE)],
    ]
    for guidance in modules:
        batch = run(pipe, guidance=guidance, **CALL)
        singles = [
            run(pipe, prompt=prompt, num_images_per_prompt=2, guidance=guidance, seeds=seeds, **CALL)
            for prompt, seeds in zip(PROMPTS, [(0, 1), (2, 3)])
        ]
        assert max_difference(batch, torch.cat(singles)) <= 1e-4


def test_dropped_branches_cost_nothing(pipe, transformer_rows):
    run(pipe, num_inference_steps=4, guidance=PerpNeg([Negative("blurry", start=0.5)]), **CALL)
    assert transformer_rows.rows == [2 * 4, 2 * 4, 3 * 4, 3 * 4]


def test_negtome_acts_on_image_tokens_inside_its_window_only_and_leaves_no_hooks(pipe):
    before = hook_count(pipe.transformer)
    plain = latents_per_step(pipe, **CALL)
    patched = latents_per_step(pipe, guidance=NegToMe(threshold=-1.0, start=0.5, stop=1.0), **CALL)
    assert [torch.equal(a, b) for a, b in zip(plain, patched)] == [True, True, False, False]
    images, expected = run(pipe, guidance=NegToMe(**EVERYWHERE), **CALL), run(pipe, **CALL)
    assert [not torch.equal(a, b) for a, b in zip(images, expected)] == [False, True, False, True]
    assert hook_count(pipe.transformer) == before


def test_bad_prompt_3_raises_before_any_network_runs(pipe, transformer_rows):
    with pytest.raises(ValueError, match="prompt_3"):
        run(pipe, prompt_3=["a"], **CALL)
    assert transformer_rows.rows == []


def test_load_pipeline_and_custom_pipeline(stock, tmp_path):
    stock.save_pretrained(tmp_path)
    expected = run(stock, negative_prompt=["blurry", "dark"], **CALL)
    loaded = [
        negguide.load_pipeline(tmp_path, device="cpu"),
        DiffusionPipeline.from_pretrained(
            tmp_path, custom_pipeline=str(REPO / "pipelines" / "stable_diffusion_3.py"), trust_remote_code=True
        ),
    ]
    for pipeline in loaded:
        assert type(pipeline).__name__ == "StableDiffusion3NegGuidePipeline"
        pipeline.set_progress_bar_config(disable=True)
        assert max_difference(run(pipeline, negative_prompt=["blurry", "dark"], **CALL), expected) <= 1e-5
