"""The Flux pipeline against stock diffusers' true CFG, with every guidance module."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import PIL.Image
import pytest
import torch
from conftest import ForwardCounter
from diffusers import DiffusionPipeline, FluxPipeline
from family_helpers import (
    MAX_SEQUENCE_LENGTH,
    PROMPTS,
    SIZE,
    flux_components,
    hook_count,
    latents_per_step,
    max_difference,
    run,
)

import negguide
from negguide import Negative, NegativePrompts, NegToMe, PerpNeg
from negguide.image_tokens import image_token_outputs
from negguide.pipelines import FluxNegGuidePipeline

REPO = Path(__file__).resolve().parents[1]
CALL = {"height": SIZE, "width": SIZE, "max_sequence_length": MAX_SEQUENCE_LENGTH}
TRUE_CFG = {**CALL, "true_cfg_scale": 4.0}
EVERYWHERE = {"threshold": -1.0, "stop": 1.0}  # default layers: the transformer blocks


@pytest.fixture(scope="module")
def stock() -> FluxPipeline:
    pipe = FluxPipeline(**flux_components())
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.fixture(scope="module")
def pipe(stock) -> FluxNegGuidePipeline:
    ours = FluxNegGuidePipeline.from_pipe(stock)
    ours.set_progress_bar_config(disable=True)
    return ours


@pytest.fixture
def transformer_rows(pipe):
    counter = ForwardCounter(pipe.transformer)
    yield counter
    counter.remove()


STOCK_CALLS = {
    "embedded guidance only": CALL,
    "true cfg scale without a negative": TRUE_CFG,
    "true cfg": {**TRUE_CFG, "negative_prompt": ["blurry", "dark"]},
    "true cfg, empty negative": {**TRUE_CFG, "negative_prompt": ["", ""]},
    "true cfg, texts per encoder": {
        **TRUE_CFG,
        "prompt_2": ["a big circle", "a small square"],
        "negative_prompt": ["dark", "dark"],
        "negative_prompt_2": ["ugly", "blurry"],
    },
}


@pytest.mark.parametrize("case", STOCK_CALLS, ids=list(STOCK_CALLS))
def test_matches_stock_pipeline(stock, pipe, case):
    kwargs = STOCK_CALLS[case]
    expected = run(stock, **kwargs)
    assert max_difference(run(pipe, **kwargs), expected) <= 1e-5


def test_modules_match_stock_true_cfg(stock, pipe):
    expected = run(stock, negative_prompt=["blurry", "dark"], **TRUE_CFG)
    by_module = run(pipe, guidance=NegativePrompts([Negative(["blurry", "dark"])]), **TRUE_CFG)
    by_name = run(pipe, negative_prompt=["blurry", "dark"], guidance="negative_prompts", **TRUE_CFG)
    assert max_difference(by_module, expected) <= 1e-5 and max_difference(by_name, expected) <= 1e-5


def test_matches_stock_with_embeddings(stock, pipe):
    embeds, pooled, _ = stock.encode_prompt(PROMPTS, None, device="cpu", max_sequence_length=MAX_SEQUENCE_LENGTH)
    negative, negative_pooled, _ = stock.encode_prompt(
        ["blurry", "dark"], None, device="cpu", max_sequence_length=MAX_SEQUENCE_LENGTH
    )
    kwargs = {
        **TRUE_CFG,
        "prompt": None,
        "prompt_embeds": embeds,
        "pooled_prompt_embeds": pooled,
        "negative_prompt_embeds": negative,
        "negative_pooled_prompt_embeds": negative_pooled,
    }
    # diffusers repeats caller-given embeddings for num_images_per_prompt only in SDXL
    kwargs.update(num_images_per_prompt=1, seeds=(0, 1))
    assert max_difference(run(pipe, **kwargs), run(stock, **kwargs)) <= 1e-5


def test_perp_neg_with_the_prompt_as_negative_is_true_cfg_with_the_empty_prompt(pipe):
    expected = run(pipe, negative_prompt="", **TRUE_CFG)
    assert max_difference(run(pipe, guidance=PerpNeg([Negative(tuple(PROMPTS))]), **TRUE_CFG), expected) <= 1e-4
    assert max_difference(run(pipe, guidance=PerpNeg(["blurry"]), **TRUE_CFG), expected) > 1e-3


def test_true_cfg_costs_one_row_per_branch_and_image(pipe, transformer_rows):
    run(pipe, **CALL)
    run(pipe, negative_prompt="blurry", **TRUE_CFG)
    run(pipe, guidance=PerpNeg(["blurry", Negative("dark", start=0.5)]), **TRUE_CFG)
    assert transformer_rows.rows == [4, 4] + [2 * 4, 2 * 4] + [3 * 4, 4 * 4]


def test_batch_equals_items_run_one_by_one(pipe):
    modules = [
        NegativePrompts([Negative("dark", weight=2.0), Negative("blurry", start=0.5)]),
        PerpNeg(["blurry", Negative("dark", stop=0.5)]),
        [NegativePrompts(["blurry"]), NegToMe(**EVERYWHERE)],
    ]
    for guidance in modules:
        batch = run(pipe, guidance=guidance, **TRUE_CFG)
        singles = [
            run(pipe, prompt=prompt, guidance=guidance, seeds=seeds, **TRUE_CFG)
            for prompt, seeds in zip(PROMPTS, [(0, 1), (2, 3)])
        ]
        assert max_difference(batch, torch.cat(singles)) <= 1e-4


def test_negtome_acts_inside_its_window_only_and_leaves_no_hooks(pipe):
    before = hook_count(pipe.transformer)
    plain = latents_per_step(pipe, **CALL)
    patched = latents_per_step(pipe, guidance=NegToMe(threshold=-1.0, start=0.5, stop=1.0), **CALL)
    assert [torch.equal(a, b) for a, b in zip(plain, patched)] == [True, True, False, False]
    images, expected = run(pipe, guidance=NegToMe(**EVERYWHERE), **CALL), run(pipe, **CALL)
    assert [not torch.equal(a, b) for a, b in zip(images, expected)] == [False, True, False, True]

    def fail(pipeline, step, timestep, tensors):
        raise RuntimeError("stop here")

    with pytest.raises(RuntimeError, match="stop here"):
        run(pipe, guidance=NegToMe(**EVERYWHERE), callback_on_step_end=fail, **CALL)
    assert hook_count(pipe.transformer) == before


def test_negtome_reference_rows_are_packed_latents(pipe, transformer_rows):
    pixels = np.random.default_rng(0).integers(0, 256, (24, 20, 3), dtype=np.uint8)
    module = NegToMe(mode="reference", reference=PIL.Image.fromarray(pixels), threshold=-1.0, stop=0.5)
    images = run(pipe, guidance=module, num_inference_steps=4, **CALL)
    assert images.shape == (4, 3, SIZE, SIZE)
    assert transformer_rows.rows == [4 + 2, 4 + 2, 4, 4]  # one reference row per prompt inside the window
    assert max_difference(images, run(pipe, num_inference_steps=4, **CALL)) > 1e-3


@pytest.mark.parametrize("text_tokens", [16, 24])
def test_patchers_see_and_change_image_tokens_only(pipe, text_tokens):
    """Hooks under `image_token_outputs` see the 64 image tokens of joint and single blocks, whatever the text
    length, and what they return replaces those tokens alone."""
    g = torch.Generator().manual_seed(0)
    image, text = torch.randn(2, 64, 32, generator=g), torch.randn(2, text_tokens, 32, generator=g)
    joint = pipe.transformer.transformer_blocks[0].attn
    single = pipe.transformer.single_transformer_blocks[0].attn
    seen = []

    def shift(module, args, output):
        seen.append(tuple(output.shape))
        return output + 1

    with torch.no_grad():
        plain_joint = joint(image, encoder_hidden_states=text)
        plain_single = single(torch.cat([text, image], dim=1))
        handles = [joint.register_forward_hook(shift), single.register_forward_hook(shift)]
        try:
            with image_token_outputs(pipe.transformer, num_image_tokens=64):
                shifted_joint = joint(image, encoder_hidden_states=text)
                shifted_single = single(torch.cat([text, image], dim=1))
        finally:
            for handle in handles:
                handle.remove()
    assert seen == [(2, 64, 32), (2, 64, 32)]
    torch.testing.assert_close(shifted_joint[0], plain_joint[0] + 1)
    torch.testing.assert_close(shifted_joint[1], plain_joint[1])
    torch.testing.assert_close(shifted_single[:, text_tokens:], plain_single[:, text_tokens:] + 1)
    torch.testing.assert_close(shifted_single[:, :text_tokens], plain_single[:, :text_tokens])


BAD_CALLS = {
    "negative prompt without true cfg": ({"negative_prompt": "blurry", "guidance": "negative_prompts"}, "ignored"),
    "module negatives without true cfg": ({"guidance": PerpNeg(["blurry"]), "true_cfg_scale": 1.0}, "ignored"),
    "prompt_2 length": ({"prompt_2": ["a", "b", "c"]}, "prompt_2"),
}


@pytest.mark.parametrize("case", BAD_CALLS, ids=list(BAD_CALLS))
def test_bad_call_raises_before_any_network_runs(pipe, transformer_rows, case):
    kwargs, message = BAD_CALLS[case]
    with pytest.raises(ValueError, match=message):
        run(pipe, **{**CALL, **kwargs})
    assert transformer_rows.rows == []


def test_load_pipeline_and_custom_pipeline(stock, tmp_path):
    stock.save_pretrained(tmp_path)
    expected = run(stock, negative_prompt=["blurry", "dark"], **TRUE_CFG)
    loaded = [
        negguide.load_pipeline(tmp_path, device="cpu"),
        DiffusionPipeline.from_pretrained(
            tmp_path, custom_pipeline=str(REPO / "pipelines" / "flux.py"), trust_remote_code=True
        ),
    ]
    for pipeline in loaded:
        assert type(pipeline).__name__ == "FluxNegGuidePipeline"
        pipeline.set_progress_bar_config(disable=True)
        assert max_difference(run(pipeline, negative_prompt=["blurry", "dark"], **TRUE_CFG), expected) <= 1e-5
