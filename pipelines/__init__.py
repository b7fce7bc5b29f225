"""diffusers pipelines with negguide's guidance, one module per model family."""

from .flux import FluxNegGuidePipeline
from .stable_diffusion import StableDiffusionNegGuidePipeline
from .stable_diffusion_3 import StableDiffusion3NegGuidePipeline
from .stable_diffusion_xl import StableDiffusionXLNegGuidePipeline

__all__ = [
    "FluxNegGuidePipeline",
    "StableDiffusion3NegGuidePipeline",
    "StableDiffusionNegGuidePipeline",
    "StableDiffusionXLNegGuidePipeline",
]
