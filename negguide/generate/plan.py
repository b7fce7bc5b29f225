"""The plan of a batch run: every image (`Job`) and the pipeline calls (`Batch`) that make them.

Items x methods x seeds give the jobs. The images of one item under one method (one per seed) are the
images of one prompt of a call, so that a method acting across the images of a prompt (NegToMe's batch
mode) sees them together, while different items never influence each other. Prompts whose settings match
share a call, up to the batch size. The plan is a pure function of its inputs: every process of a run and
every re-run computes the same batches, so images come out the same, pixel for pixel.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from negguide.branches import CallInfo
from negguide.core import Guide
from negguide.generate.methods import Method, build_guidance, checked, method_from_config, parse_method, with_negatives
from negguide.generate.model import ModelInfo
from negguide.generate.names import image_name
from negguide.generate.prompts import Item, Problem
from negguide.modules.base import GuidanceModule


@dataclass(frozen=True)
class Defaults:
    """Settings of a run that an item may override.

    Args:
        seeds (`tuple[int, ...]`, defaults to ``(0,)``): one image per seed.
        steps (`int`, defaults to 20): denoising steps.
        guidance_scale (`float`, *optional*): classifier-free guidance scale; the model's
            (`ModelInfo.guidance_scale`) by default.
        guidance_rescale (`float`, defaults to 0.0): guidance rescale factor in ``[0, 1]``.
        width (`int`, *optional*), height (`int`, *optional*): image size; the model's native size by default.
        negative_prompt (`str`, defaults to ``""``): the negative prompt of items that give none.
    """

    seeds: tuple[int, ...] = (0,)
    steps: int = 20
    guidance_scale: float | None = None
    guidance_rescale: float = 0.0
    width: int | None = None
    height: int | None = None
    negative_prompt: str = ""


@dataclass(frozen=True)
class Job:
    """One image: everything that decides its pixels, plus where it comes from and where it goes."""

    item: int
    source: str
    method: str
    guidance: tuple[dict[str, Any], ...]
    prompt: str
    negative_prompt: str
    seed: int
    steps: int
    guidance_scale: float
    guidance_rescale: float
    width: int
    height: int
    model: str
    sampler: str

    @property
    def file(self) -> str:
        """Path relative to the output folder."""
        return image_name(self.item, self.method, self.seed, self.prompt)

    def generation(self) -> dict[str, Any]:
        """The settings that decide the image's pixels, apart from the call it is made in (see `Batch`)."""
        fields = ("prompt", "negative_prompt", "seed", "steps", "guidance_scale", "guidance_rescale")
        return {
            **{name: getattr(self, name) for name in fields},
            "guidance": [dict(module) for module in self.guidance],
            "width": self.width,
            "height": self.height,
            "model": self.model,
        }

    def record(self) -> dict[str, Any]:
        """The job as a JSON-ready mapping: its manifest line, and the ``job`` of its PNG configuration."""
        return {
            "file": self.file,
            "item": self.item,
            "source": self.source,
            "method": self.method,
            "sampler": self.sampler,
            **self.generation(),
        }

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> Job:
        """Inverse of `record`."""
        names = [field.name for field in dataclasses.fields(cls)]
        missing = [name for name in names if name not in record]
        if missing:
            raise ValueError(f"the record lacks {', '.join(missing)}.")
        return cls(
            **{name: record[name] for name in names if name != "guidance"},
            guidance=tuple(dict(module) for module in record["guidance"]),
        )

    def call_key(self) -> str:
        """What prompts must share to be generated in one call: everything but the texts and the seed."""
        shared = {
            key: value for key, value in self.generation().items() if key not in ("prompt", "negative_prompt", "seed")
        }
        return json.dumps(shared, sort_keys=True)


@dataclass(frozen=True)
class Batch:
    """One pipeline call: ``groups[p]`` are the images of prompt ``p``, one per seed, all groups the same size."""

    groups: tuple[tuple[Job, ...], ...]

    @property
    def jobs(self) -> tuple[Job, ...]:
        """The images in the call's order (prompt-major, as in diffusers)."""
        return tuple(job for group in self.groups for job in group)

    def layout(self) -> list[dict[str, Any]]:
        """The call's prompts, negative prompts and seeds, as JSON: enough to rebuild it around one of its jobs."""
        return [
            {
                "prompt": group[0].prompt,
                "negative_prompt": group[0].negative_prompt,
                "seeds": [job.seed for job in group],
            }
            for group in self.groups
        ]

    @classmethod
    def from_layout(cls, job: Job, layout: list[dict[str, Any]]) -> Batch:
        """The batch `layout` describes, with ``job``'s settings for every image."""
        return cls(
            tuple(
                tuple(
                    dataclasses.replace(job, prompt=row["prompt"], negative_prompt=row["negative_prompt"], seed=seed)
                    for seed in row["seeds"]
                )
                for row in layout
            )
        )

    def guidance(self) -> list[GuidanceModule]:
        """The call's guidance modules, built for its negative prompts."""
        return build_guidance(self.groups[0][0].guidance, [group[0].negative_prompt for group in self.groups])

    def generators(self) -> list[torch.Generator]:
        """One CPU generator per image, seeded with the image's own seed."""
        return [torch.Generator("cpu").manual_seed(job.seed) for job in self.jobs]


def expand(
    items: Sequence[Item], methods: Sequence[Method], defaults: Defaults, model: ModelInfo
) -> tuple[list[list[Job]], list[Problem]]:
    """Every item x method as a group of jobs (one per seed), and the problems of items that cannot run."""
    groups: list[list[Job]] = []
    problems: list[Problem] = []
    for item in items:
        try:
            groups.extend(_item_groups(item, methods, defaults, model))
        except (TypeError, ValueError) as error:
            problems.append(Problem(item.source, str(error)))
    return groups, problems


def batches(groups: Sequence[Sequence[Job]], batch_size: int) -> list[Batch]:
    """Groups with matching settings and seed counts, in calls of at most ``batch_size`` images (one group
    per call when a group alone is larger), in the order the groups first appear."""
    buckets: dict[tuple[str, int], list[Sequence[Job]]] = {}
    for group in groups:
        buckets.setdefault((group[0].call_key(), len(group)), []).append(group)
    planned = []
    for (_, size), members in buckets.items():
        per_call = max(1, batch_size // size)
        planned.extend(Batch(tuple(map(tuple, members[i : i + per_call]))) for i in range(0, len(members), per_call))
    return planned


def _item_groups(item: Item, methods: Sequence[Method], defaults: Defaults, model: ModelInfo) -> Iterator[list[Job]]:
    settings = {**dataclasses.asdict(defaults), **item.settings}
    negative_prompt = defaults.negative_prompt if item.negative_prompt is None else item.negative_prompt
    seeds = item.seeds or defaults.seeds
    scale = model.guidance_scale if settings["guidance_scale"] is None else settings["guidance_scale"]
    for method in _item_methods(item, methods):
        if item.negatives is not None:
            method = checked(with_negatives(method, item.negatives), "negatives")
        jobs = [
            Job(
                item=item.index,
                source=item.source,
                method=method.label,
                guidance=method.modules,
                prompt=item.prompt,
                negative_prompt=negative_prompt,
                seed=seed,
                steps=settings["steps"],
                guidance_scale=scale,
                guidance_rescale=settings["guidance_rescale"],
                width=settings["width"] or model.width,
                height=settings["height"] or model.height,
                model=model.name,
                sampler=model.sampler,
            )
            for seed in seeds
        ]
        _check_call(Batch((tuple(jobs),)), method.label)
        yield jobs


def _item_methods(item: Item, methods: Sequence[Method]) -> list[Method]:
    if item.guidance is not None:
        return [method_from_config(item.method, item.guidance, "guidance")]
    if item.method is None:
        return list(methods)
    named = [method for method in methods if method.label == item.method]
    return named or [parse_method(item.method, "method")]


def _check_call(batch: Batch, label: str) -> None:
    """Plan the guidance of ``batch`` step by step without running a network, so that settings the modules
    reject only at call time (a method without any negative, ...) are reported before generation."""
    job = batch.groups[0][0]
    negative_prompts = [group[0].negative_prompt for group in batch.groups]
    call = CallInfo.from_call(
        [group[0].prompt for group in batch.groups], negative_prompts, None, None, len(batch.groups[0])
    )
    try:
        Guide(
            batch.guidance(),
            call=call,
            timesteps=[float(t) for t in range(job.steps, 0, -1)],
            encode=_no_encoding,
            negative_prompt=negative_prompts,
            guidance_rescale=job.guidance_rescale,
        )
    except (TypeError, ValueError) as error:
        raise ValueError(f"method {label!r}: {error}") from None


def _no_encoding(texts: list[str]) -> dict[str, torch.Tensor]:
    raise AssertionError("planning encodes no text")
