"""Pictures of each method's effect on the shapes world: one prompt and its companion as the negative, the same
seeds under every method, side by side, with the detector's verdict on each image.

    python benchmarks/gallery.py [--prompt "a red circle"] [--negative "red square"] [--seeds 4] [--steps 20]
                                 [--store DIR]

Rows: no negative, the standard negative, the same negative from a fifth of the run on (delayed), Perp-Neg, NAG,
NAG beside the standard negative, and NegToMe's batch diversity without a negative (the nearest anchor at the
embedded model's working settings: the seeds of a row are one batch); columns: seeds 0 .. N-1, one CPU generator
per image. The grid is stored as
a PNG beside the run's JSON (`record.save`; ``<run>-grid.png``) and shown on the results page; the table counts, per method, the
images that still hold the negative's object and those that keep the prompted one.
"""

from __future__ import annotations

import argparse
from typing import Any

import record
import torch
from PIL import Image, ImageDraw

import negguide
from negguide import NAG, Negative, NegativePrompts, NegToMe, PerpNeg
from negguide.loading import EMBEDDED_GUIDANCE_SCALE
from negguide.metrics import judge
from negguide.shapes import detect

LABEL = 150
"""Width of the label column, pixels."""


def methods(negative: str) -> dict[str, dict[str, Any]]:
    """Method label -> the pipeline arguments that apply it."""
    return {
        "no negative": {},
        "standard negative": {"negative_prompt": negative},
        "delayed, from 0.2": {"guidance": NegativePrompts([Negative(negative, start=0.2)])},
        "Perp-Neg": {"guidance": PerpNeg([negative])},
        "NAG": {"guidance": NAG([negative])},
        "standard + NAG": {"negative_prompt": negative, "guidance": [NegativePrompts(), NAG([negative])]},
        "NegToMe, nearest": {"guidance": NegToMe(anchor="nearest", alpha=3, threshold=0.5, start=0.1, stop=0.5)},
    }


def grid(rows: dict[str, list[Image.Image]], scale: int = 2) -> Image.Image:
    """The images, one row per method with its label, each image ``scale`` times its size."""
    size = next(iter(rows.values()))[0].size[0] * scale
    columns = max(len(images) for images in rows.values())
    sheet = Image.new("RGB", (LABEL + columns * size, len(rows) * size), "white")
    draw = ImageDraw.Draw(sheet)
    for index, (label, images) in enumerate(rows.items()):
        draw.text((6, index * size + size // 2 - 6), label, fill="black")
        for column, image in enumerate(images):
            sheet.paste(image.resize((size, size), Image.NEAREST), (LABEL + column * size, index * size))
    return sheet


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--prompt", default="a red circle")
    parser.add_argument("--negative", default="red square")
    parser.add_argument("--seeds", type=int, default=4)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--scale", type=float, default=EMBEDDED_GUIDANCE_SCALE)
    parser.add_argument("--threads", type=int, default=1)
    record.add_store_argument(parser)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    pipe = negguide.load_pipeline()
    pipe.set_progress_bar_config(disable=True)

    rows, table, plain = {}, [], None
    for label, arguments in methods(args.negative).items():
        images = pipe(
            [args.prompt] * args.seeds,
            generator=[torch.Generator().manual_seed(seed) for seed in range(args.seeds)],
            num_inference_steps=args.steps,
            guidance_scale=args.scale,
            **arguments,
        ).images
        found = [detect(image) for image in images]
        plain = plain or found  # the first method's, without a negative: a companion changed in place is not removed
        verdicts = [judge(d, args.prompt, args.negative, plain=p) for d, p in zip(found, plain)]
        rows[label] = images
        table.append([label, sum(not v.negative_removed for v in verdicts), sum(v.kept for v in verdicts), args.seeds])
    picture = f"{args.prompt} / {args.negative}"
    results = {
        "title": "Pictures of each method",
        "summary": (
            "One prompt of the shapes world with its frequent companion as the negative, the same seeds under every "
            "method (one row each, seeds left to right), judged by the detector."
        ),
        "tables": [
            record.table(
                f"{picture}: images per method ({args.steps} steps, CFG {args.scale})",
                ["method", "negative's object present", "prompted object kept", "images"],
                table,
                formats=[None, "d", "d", "d"],
            )
        ],
        "figures": [{"title": f"The methods on {picture}", "kind": "image", "file": "grid.png"}],
    }
    record.show(results)
    settings = {"prompt": args.prompt, "negative": args.negative, "seeds": args.seeds, "steps": args.steps,
                "scale": args.scale}
    path = record.save("gallery", settings, results, model=record.model_identity(None), folder=args.store)
    grid(rows).save(path.with_name(f"{path.stem}-grid.png"))
    print(path)


if __name__ == "__main__":
    main()
