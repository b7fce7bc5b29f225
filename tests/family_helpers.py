"""Helpers of the SDXL, SD3 and Flux tests; their tiny components (the sizes of diffusers' own tests) come from
`negguide.testing`, offline and on CPU."""

from __future__ import annotations

import torch

# Re-exported: the tests of each family import their components from here.
from negguide.testing import flux_components, sd3_components, sdxl_components  # noqa: F401

PROMPTS = ["a red circle", "a blue square"]
STEPS = 2
SIZE = 16
"""Image side of the SD3 and Flux tests: their tiny VAEs do not downsample, so 16 x 16 latents, 64 image tokens."""
MAX_SEQUENCE_LENGTH = 16


def generators(*seeds: int) -> list[torch.Generator]:
    return [torch.Generator().manual_seed(seed) for seed in seeds]


def run(pipeline, *, seeds=(0, 1, 2, 3), **kwargs) -> torch.Tensor:
    """Two prompts, two images each, two steps, as a tensor; ``kwargs`` override."""
    kwargs = {
        "prompt": PROMPTS,
        "num_images_per_prompt": 2,
        "num_inference_steps": STEPS,
        "output_type": "pt",
        **kwargs,
    }
    return pipeline(generator=generators(*seeds), **kwargs).images


def max_difference(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a - b).abs().max().item()


def hook_count(model: torch.nn.Module) -> int:
    """Forward hooks and pre-hooks installed anywhere in ``model``."""
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())


def latents_per_step(pipeline, **kwargs) -> list[torch.Tensor]:
    """The latents after each of 4 steps of a one-image call."""
    seen = []

    def record(pipe, step, timestep, tensors):
        seen.append(tensors["latents"].clone())
        return tensors

    run(pipeline, num_inference_steps=4, callback_on_step_end=record, **kwargs)
    return seen
