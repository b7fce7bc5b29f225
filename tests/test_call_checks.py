"""Numeric call arguments are checked before any network runs, on every family, with diffusers-style errors that
name the argument."""

from __future__ import annotations

import math

import pytest
import torch
from conftest import ForwardCounter
from family_helpers import MAX_SEQUENCE_LENGTH, SIZE

from negguide import Negative, PerpNeg
from negguide.pipelines import (
    FluxNegGuidePipeline,
    StableDiffusion3NegGuidePipeline,
    StableDiffusionNegGuidePipeline,
    StableDiffusionXLNegGuidePipeline,
)
from negguide.testing import flux_components, sd3_components, sd_components, sdxl_components

FAMILIES = {
    "sd": (StableDiffusionNegGuidePipeline, sd_components, "unet", {}),
    "sdxl": (StableDiffusionXLNegGuidePipeline, sdxl_components, "unet", {}),
    "sd3": (StableDiffusion3NegGuidePipeline, sd3_components, "transformer", {"max_sequence_length": 16}),
    "flux": (FluxNegGuidePipeline, flux_components, "transformer", {"max_sequence_length": MAX_SEQUENCE_LENGTH}),
}

BAD = {
    "steps zero": ({"num_inference_steps": 0}, ValueError, "num_inference_steps"),
    "steps negative": ({"num_inference_steps": -1}, ValueError, "num_inference_steps"),
    "steps a string": ({"num_inference_steps": "20"}, TypeError, "num_inference_steps"),
    "steps a float": ({"num_inference_steps": 2.5}, TypeError, "num_inference_steps"),
    "scale nan": ({"guidance_scale": math.nan}, ValueError, "guidance_scale"),
    "scale inf": ({"guidance_scale": math.inf}, ValueError, "guidance_scale"),
    "scale a string": ({"guidance_scale": "7"}, TypeError, "guidance_scale"),
    "height zero": ({"height": 0}, ValueError, "height"),
    "height negative": ({"height": -64}, ValueError, "height"),
    "width a float": ({"width": 32.0}, TypeError, "width"),
    "generator of ints": ({"generator": [0]}, TypeError, "generator"),
    "generator an int": ({"generator": 0}, TypeError, "generator"),
    "too few generators": ({"generator": [torch.Generator()]}, ValueError, "generator"),
}


@pytest.fixture(scope="module", params=list(FAMILIES))
def family(request):
    pipe_class, components, denoiser, extra = FAMILIES[request.param]
    pipe = pipe_class(**components())
    pipe.set_progress_bar_config(disable=True)
    return request.param, pipe, getattr(pipe, denoiser), extra


def call(pipe, extra, **kwargs):
    size = (
        {}
        if isinstance(pipe, (StableDiffusionNegGuidePipeline, StableDiffusionXLNegGuidePipeline))
        else {
            "height": SIZE,
            "width": SIZE,
        }
    )
    kwargs = {
        "prompt": "a red circle",
        "num_images_per_prompt": 2,
        "num_inference_steps": 2,
        "output_type": "pt",
        **size,
        **extra,
        **kwargs,
    }
    return pipe(**kwargs)


@pytest.mark.parametrize("case", BAD, ids=list(BAD))
def test_bad_numbers_raise_before_any_network_runs(family, case):
    _, pipe, denoiser, extra = family
    kwargs, error, argument = BAD[case]
    counter, text_calls = ForwardCounter(denoiser), ForwardCounter(pipe.text_encoder)
    try:
        with pytest.raises(error, match=f"`{argument}`"):
            call(pipe, extra, **kwargs)
    finally:
        counter.remove()
        text_calls.remove()
    assert counter.rows == [] and text_calls.rows == []


def test_sizes_must_be_multiples_of_the_models_factor(family):
    name, pipe, _, extra = family
    if name == "flux":
        pytest.skip("Flux rounds sizes down to its factor, with a warning, as diffusers does")
    factor = pipe.vae_scale_factor * (pipe.patch_size if name == "sd3" else 1)
    if factor == 1:
        pytest.skip("the tiny SD3 VAE does not downsample, so every size is a multiple")
    with pytest.raises(ValueError, match="`height` must be divisible"):
        call(pipe, extra, height=3 * factor + 1)


def test_a_weight_that_overflows_is_an_error_not_a_black_image():
    pipe = StableDiffusionNegGuidePipeline(**sd_components())
    pipe.set_progress_bar_config(disable=True)
    with pytest.raises(ValueError, match="not finite"):
        call(pipe, {}, guidance=PerpNeg([Negative("a blue square", weight=1e308)]))
