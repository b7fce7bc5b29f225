"""Guidance-distilled UNets (``time_cond_proj_dim``): one evaluation per step, negatives by true CFG or NAG."""

from __future__ import annotations

import pytest
import torch
from conftest import ForwardCounter, tiny_components
from diffusers import StableDiffusionPipeline, UNet2DConditionModel
from family_helpers import max_difference, run

from negguide import NAG, NegativePrompts, PerpNeg
from negguide.pipelines import StableDiffusionNegGuidePipeline

PROMPT = "a red circle"


@pytest.fixture
def stock() -> StableDiffusionPipeline:
    components = tiny_components()
    torch.manual_seed(0)
    components["unet"] = UNet2DConditionModel.from_config(components["unet"].config, time_cond_proj_dim=8)
    pipe = StableDiffusionPipeline(**components)
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.fixture
def pipe(stock) -> StableDiffusionNegGuidePipeline:
    ours = StableDiffusionNegGuidePipeline.from_pipe(stock)
    ours.set_progress_bar_config(disable=True)
    return ours


def one(pipeline, **kwargs) -> torch.Tensor:
    return run(pipeline, prompt=PROMPT, seeds=(0, 1), guidance_scale=5.0, **kwargs)


def test_without_a_negative_the_images_are_stock_diffusers(stock, pipe):
    assert max_difference(one(pipe), one(stock)) <= 1e-5
    assert max_difference(one(pipe, guidance=NegativePrompts()), one(stock)) <= 1e-5


def test_one_evaluation_per_image_and_step(pipe):
    counter = ForwardCounter(pipe.unet)
    one(pipe)
    assert counter.rows == [2, 2]


def test_a_negative_without_true_cfg_is_refused_before_the_network_runs(pipe):
    counter = ForwardCounter(pipe.unet)
    with pytest.raises(ValueError, match="true_cfg_scale"):
        one(pipe, negative_prompt="blue square")
    with pytest.raises(ValueError, match="true_cfg_scale"):
        one(pipe, guidance=NegativePrompts(["blue square"]))
    assert counter.rows == []


def test_true_cfg_evaluates_the_negative_and_mixes_with_its_own_scale(pipe):
    counter = ForwardCounter(pipe.unet)
    images = one(pipe, negative_prompt="blue square", true_cfg_scale=3.0)
    assert counter.rows == [4, 4]
    assert max_difference(images, one(pipe)) > 1e-4
    assert torch.isfinite(one(pipe, guidance=PerpNeg(["blue square"]), true_cfg_scale=3.0)).all()


def test_nag_takes_the_negative_at_one_evaluation_per_step(pipe):
    counter = ForwardCounter(pipe.unet)
    images = one(pipe, negative_prompt="blue square", guidance="nag")
    assert counter.rows == [2, 2]
    assert max_difference(images, one(pipe)) > 1e-4
    assert torch.equal(images, one(pipe, guidance=NAG(["blue square"])))


def test_true_cfg_scale_is_only_for_distilled_unets():
    plain = StableDiffusionNegGuidePipeline(**tiny_components())
    with pytest.raises(ValueError, match="guidance-distilled UNets"):
        one(plain, true_cfg_scale=2.0)


def test_the_embedded_distilled_model_loads_offline_by_name_and_matches_stock():
    import negguide
    from negguide.loading import DISTILLED_MODEL_NAME, distilled_unet_path, embedded_model_path
    from negguide.shapes.distill import GUIDANCE_EMBEDDING_DIM

    ours = negguide.load_pipeline(DISTILLED_MODEL_NAME, device="cpu")
    ours.set_progress_bar_config(disable=True)
    assert isinstance(ours, StableDiffusionNegGuidePipeline)
    assert ours.unet.config.time_cond_proj_dim == GUIDANCE_EMBEDDING_DIM
    assert sorted(p.name for p in distilled_unet_path().parent.iterdir()) == ["training_log.jsonl", "unet"]
    teacher = negguide.load_pipeline("shapes-world", device="cpu")
    assert all(torch.equal(a, b) for a, b in zip(ours.text_encoder.parameters(), teacher.text_encoder.parameters()))
    stock = StableDiffusionPipeline.from_pretrained(
        embedded_model_path(),
        unet=UNet2DConditionModel.from_pretrained(distilled_unet_path()),
        dtype=torch.float32,
    )
    stock.set_progress_bar_config(disable=True)
    call = {"prompt": "a blue square", "num_inference_steps": 4, "guidance_scale": 5.0, "output_type": "pt"}
    mine = ours(**call, generator=torch.Generator().manual_seed(0)).images
    theirs = stock(**call, generator=torch.Generator().manual_seed(0)).images
    assert mine.shape == (1, 3, 64, 64) and max_difference(mine, theirs) <= 1e-5


def test_an_empty_negative_prompt_is_no_negative(pipe):
    assert torch.equal(one(pipe, negative_prompt=""), one(pipe))
    assert torch.equal(one(pipe, negative_prompt=[""]), one(pipe))
    own = one(pipe, negative_prompt="blue square", guidance=NAG(["blue square"]))
    assert torch.equal(own, one(pipe, guidance=NAG(["blue square"])))
