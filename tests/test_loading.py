"""`negguide.load_pipeline`: the class from a folder's model_index.json, and its errors."""

from __future__ import annotations

import json

import pytest
import torch
from diffusers import FluxPipeline, StableDiffusion3Pipeline, StableDiffusionXLPipeline

from negguide.loading import default_dtype, load_pipeline, pipeline_class_for
from negguide.pipelines import (
    FluxNegGuidePipeline,
    StableDiffusion3NegGuidePipeline,
    StableDiffusionNegGuidePipeline,
    StableDiffusionXLNegGuidePipeline,
)


@pytest.mark.parametrize(
    "name, expected",
    [
        ("StableDiffusionPipeline", StableDiffusionNegGuidePipeline),
        ("StableDiffusionXLPipeline", StableDiffusionXLNegGuidePipeline),
        ("StableDiffusion3Pipeline", StableDiffusion3NegGuidePipeline),
        ("FluxPipeline", FluxNegGuidePipeline),
        ("FluxNegGuidePipeline", FluxNegGuidePipeline),
    ],
)
def test_class_from_model_index(tmp_path, name, expected):
    (tmp_path / "model_index.json").write_text(json.dumps({"_class_name": name}))
    assert pipeline_class_for(tmp_path) is expected


def test_unsupported_family_is_a_clear_error(tmp_path):
    (tmp_path / "model_index.json").write_text(json.dumps({"_class_name": "KandinskyV22Pipeline"}))
    with pytest.raises(ValueError, match="KandinskyV22Pipeline.*not support.*FluxPipeline"):
        load_pipeline(tmp_path, device="cpu")


def test_dtype_defaults():
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert default_dtype(FluxNegGuidePipeline, cpu) == torch.float32
    assert default_dtype(StableDiffusionXLPipeline, cuda) == torch.float16
    assert default_dtype(StableDiffusion3Pipeline, cuda) in (torch.bfloat16, torch.float16)
    assert default_dtype(FluxPipeline, cuda) in (torch.bfloat16, torch.float16)
