"""IP-Adapter inputs on SD and SDXL: stock parity with standard guidance, and the image embeddings every row of the
other modules receives (the prompt's rows the positive ones, every other branch's rows the negative ones)."""

from __future__ import annotations

import pytest
import torch
from diffusers import StableDiffusionPipeline, StableDiffusionXLPipeline
from family_helpers import max_difference, run
from ip_adapter_helpers import load_ip_adapter, signed_embeds

from negguide import NegToMe, PerpNeg
from negguide.pipelines import StableDiffusionNegGuidePipeline, StableDiffusionXLNegGuidePipeline
from negguide.testing import sd_components, sdxl_components

FAMILIES = {
    "sd": (StableDiffusionPipeline, StableDiffusionNegGuidePipeline, sd_components),
    "sdxl": (StableDiffusionXLPipeline, StableDiffusionXLNegGuidePipeline, sdxl_components),
}


@pytest.fixture(scope="module", params=list(FAMILIES))
def pipes(request):
    stock_class, ours_class, components = FAMILIES[request.param]
    stock = stock_class(**components())
    load_ip_adapter(stock.unet)
    stock.set_progress_bar_config(disable=True)
    ours = ours_class.from_pipe(stock)
    ours.set_progress_bar_config(disable=True)
    return stock, ours


def one_prompt(pipe, **kwargs) -> torch.Tensor:
    return run(pipe, prompt="a red circle", seeds=(0, 1), **kwargs)


def test_standard_guidance_with_ip_adapter_matches_stock(pipes):
    stock, ours = pipes
    embeds = [torch.randn(2, 1, stock.unet.config.cross_attention_dim, generator=torch.Generator().manual_seed(0))]
    for kwargs in ({}, {"negative_prompt": "blurry"}):
        expected = one_prompt(stock, ip_adapter_image_embeds=embeds, **kwargs)
        assert max_difference(one_prompt(ours, ip_adapter_image_embeds=embeds, **kwargs), expected) <= 1e-5
        without = one_prompt(ours, ip_adapter_image_embeds=[torch.zeros_like(embeds[0])], **kwargs)
        assert max_difference(without, expected) > 1e-3


def record_rows(pipe, prompt: str) -> tuple[list[tuple[list[bool], list[bool]]], torch.utils.hooks.RemovableHandle]:
    """Per UNet forward: which rows got the positive image embeddings, and which rows hold the prompt's text."""
    prompt_text = pipe.encode_prompt(
        prompt=prompt, device=pipe.device, num_images_per_prompt=1, do_classifier_free_guidance=False
    )[0][0]
    seen = []

    def hook(module, args, kwargs):
        image = kwargs["added_cond_kwargs"]["image_embeds"][0]
        text = kwargs["encoder_hidden_states"]
        seen.append(
            (
                [bool((row > 0).all()) for row in image],
                [bool(torch.equal(row, prompt_text)) for row in text],
            )
        )
        assert all(bool((row > 0).all() or (row < 0).all()) for row in image)

    return seen, pipe.unet.register_forward_pre_hook(hook, with_kwargs=True)


@pytest.mark.parametrize(
    "guidance",
    [PerpNeg(["a blue square", "a green triangle"]), NegToMe(threshold=-1.0, stop=1.0)],
    ids=["perp_neg", "negtome"],
)
def test_other_modules_give_the_negative_embeds_to_every_branch_but_the_prompts(pipes, guidance):
    _, ours = pipes
    seen, handle = record_rows(ours, "a red circle")
    try:
        images = one_prompt(
            ours, ip_adapter_image_embeds=signed_embeds(ours.unet.config.cross_attention_dim), guidance=guidance
        )
    finally:
        handle.remove()
    assert torch.isfinite(images).all()
    assert seen, "the UNet never ran"
    for positive, prompt_rows in seen:
        assert positive == prompt_rows
        assert sum(positive) == 2 and len(positive) > 2
