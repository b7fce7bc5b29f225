"""Batch image generation: prompts files, methods, plans, resumable runs (``negguide generate``)."""

from negguide.generate.methods import Method, build_guidance
from negguide.generate.model import ModelInfo, load_model, read_model
from negguide.generate.plan import Batch, Defaults, Group, Job, Plan, batches, chunk_sizes, expand, expand_groups
from negguide.generate.prompts import Item, Problem, read_items
from negguide.generate.runner import finish, finished, generate_images, process_state, run_batches, save_image

__all__ = [
    "Batch",
    "Defaults",
    "Group",
    "Item",
    "Job",
    "Method",
    "ModelInfo",
    "Plan",
    "Problem",
    "batches",
    "build_guidance",
    "chunk_sizes",
    "expand",
    "expand_groups",
    "finish",
    "finished",
    "generate_images",
    "load_model",
    "process_state",
    "read_items",
    "read_model",
    "run_batches",
    "save_image",
]
