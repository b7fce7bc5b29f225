"""The shapes-world detector against the generator's ground truth, on clean and degraded renders.

    python benchmarks/detector.py [--count 5000] [--seed 0] [--store DIR]

Prints and stores one row per condition: the exact-match rate (every object found with the right colour and
shape, nothing extra), the object recall, the extra detections per image and the time per image.
Degraded images are blurred (gaussian, radius in pixels) and then given gaussian noise (0-255 units),
as a small generative model's outputs are.
"""

from __future__ import annotations

import argparse
import time
from collections import Counter

import numpy as np
import record
from PIL import Image, ImageFilter

from negguide.shapes import detect, render, scenes

#: (name, noise sigma in 0-255 units, blur radius in pixels)
CONDITIONS: tuple[tuple[str, float, float], ...] = (
    ("clean", 0.0, 0.0),
    ("noise 8, blur 0.7", 8.0, 0.7),
    ("noise 15, blur 1.0", 15.0, 1.0),
    ("noise 20, blur 1.5", 20.0, 1.5),
)


def degrade(image: Image.Image, rng: np.random.Generator, noise: float, blur: float) -> Image.Image | np.ndarray:
    """Blur by ``blur`` px, then add gaussian noise of ``noise``; the clean image when both are 0."""
    if blur:
        image = image.filter(ImageFilter.GaussianBlur(blur))
    if not noise:
        return image
    pixels = np.asarray(image, dtype=np.float64)
    return np.clip(pixels + rng.normal(0.0, noise, pixels.shape), 0, 255).round().astype(np.uint8)


def score(truth: list[tuple[str, str]], found: list[tuple[str, str]]) -> tuple[bool, int, int]:
    """(exact match, objects found, extra detections) for one image's kinds."""
    hits = sum((Counter(truth) & Counter(found)).values())
    return sorted(truth) == sorted(found), hits, len(found) - hits


def measure(count: int, seed: int, noise: float, blur: float) -> dict[str, float]:
    """Detector statistics on ``count`` scenes of ``seed`` under one condition."""
    rng = np.random.default_rng(seed)
    exact = hits = extra = objects = 0
    elapsed = 0.0
    for scene in scenes(seed, count):
        image = degrade(render(scene.objects), rng, noise, blur)
        start = time.perf_counter()
        found = detect(image)
        elapsed += time.perf_counter() - start
        ok, h, e = score([(o.colour, o.shape) for o in scene.objects], [(d.colour, d.shape) for d in found])
        exact += ok
        hits += h
        extra += e
        objects += len(scene.objects)
    return {"exact": exact / count, "recall": hits / objects, "extra": extra / count,
            "ms": 1000 * elapsed / count}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=5000, help="scenes per condition")
    parser.add_argument("--seed", type=int, default=0, help="scene and noise seed")
    record.add_store_argument(parser)
    args = parser.parse_args()
    rows = []
    for name, noise, blur in CONDITIONS:
        row = measure(args.count, args.seed, noise, blur)
        rows.append([name, args.count, row["exact"], row["recall"], row["extra"], row["ms"]])
    results = {
        "title": "The shapes-world detector",
        "summary": (
            "The analytic detector (`negguide.shapes.detect`) against the generator's ground truth on rendered "
            "scenes, clean and degraded as a small generative model's outputs are (blurred, then given gaussian "
            "noise in 0-255 units)."
        ),
        "tables": [
            record.table(
                f"Scenes of seed {args.seed}",
                ["condition", "images", "exact match", "object recall", "extra / image", "ms / image"],
                rows,
                formats=[None, "d", ".4f", ".4f", ".4f", ".2f"],
            )
        ],
    }
    record.show(results)
    print(record.save("detector", {"count": args.count, "seed": args.seed}, results, folder=args.store))


if __name__ == "__main__":
    main()
