"""diffusers pipelines with negguide's guidance, one module per model family."""

from .stable_diffusion import StableDiffusionNegGuidePipeline

__all__ = ["StableDiffusionNegGuidePipeline"]
