"""The shapes world: a synthetic text-to-image world with a known ground truth, and its detector."""

from __future__ import annotations

from negguide.shapes.detector import Detection, detect
from negguide.shapes.world import COLOURS, COMPANIONS, SHAPES, Scene, ShapeObject, render, sample_scene, scenes

__all__ = [
    "COLOURS",
    "COMPANIONS",
    "SHAPES",
    "Detection",
    "Scene",
    "ShapeObject",
    "detect",
    "render",
    "sample_scene",
    "scenes",
]
