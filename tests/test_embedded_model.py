"""The embedded shapes-world model: it loads offline, fast, and draws what it is asked for."""

from __future__ import annotations

import json

import pytest
import torch

import negguide
from negguide.loading import embedded_model_path
from negguide.metrics import judge
from negguide.pipelines import StableDiffusionNegGuidePipeline
from negguide.shapes import detect
from negguide.shapes.tokenizer import MAX_LENGTH
from negguide.shapes.world import vocabulary

# Seeds whose images the detector judges as asked on the shipped weights: a regression check on the
# verdicts, not on pixels.
SEED_ONE, SEED_TWO, SEED_NEG = 0, 1, 1


@pytest.fixture(scope="module")
def pipe():
    pipe = negguide.load_pipeline()
    pipe.set_progress_bar_config(disable=True)
    return pipe


def test_embedded_folder_is_a_small_diffusers_pipeline():
    folder = embedded_model_path()
    index = json.loads((folder / "model_index.json").read_text())
    assert index["_class_name"] == "StableDiffusionPipeline"
    size = sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())
    assert size <= 25 * 2**20


def test_load_pipeline_returns_the_negguide_pipeline_in_float32_on_cpu(pipe):
    assert isinstance(pipe, StableDiffusionNegGuidePipeline)
    assert pipe.unet.dtype == torch.float32
    assert pipe.device.type == "cpu"


def test_every_world_word_is_one_token(pipe):
    assert pipe.tokenizer.model_max_length == MAX_LENGTH
    for word in vocabulary():
        assert len(pipe.tokenizer(word, add_special_tokens=False).input_ids) == 1, word


@pytest.mark.parametrize(
    ("prompt", "seed"), [("a red circle", SEED_ONE), ("a blue square and a yellow square", SEED_TWO)]
)
def test_fixed_seed_draws_the_prompted_objects(pipe, prompt, seed):
    image = pipe(prompt, num_inference_steps=20, generator=torch.Generator().manual_seed(seed)).images[0]
    assert image.size == (64, 64)
    assert judge(detect(image), prompt).named


def test_standard_negative_removes_the_companion_for_a_fixed_seed(pipe):
    prompt, negative = "a red circle", "red square"
    plain = pipe(prompt, num_inference_steps=20, generator=torch.Generator().manual_seed(SEED_NEG)).images[0]
    guided = pipe(prompt, negative_prompt=negative, num_inference_steps=20,
                  generator=torch.Generator().manual_seed(SEED_NEG)).images[0]
    assert not judge(detect(plain), prompt, negative).negative_removed
    verdict = judge(detect(guided), prompt, negative)
    assert verdict.negative_removed and verdict.named
