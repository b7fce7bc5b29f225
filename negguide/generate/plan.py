"""The plan of a batch run: every image (`Job`) and the pipeline calls (`Batch`) that make them.

Items x methods x seeds give the jobs; the jobs of one item under one method (one per seed) form a `Group`.
A group's seeds are split into chunks of at most the batch size (`chunk_sizes`), and each chunk is the images
of one prompt of a call, so that a method acting across the images of a prompt (NegToMe's batch mode) sees the
images of its chunk together, while different items never influence each other. Chunks whose settings and
sizes match share a call, up to the batch size. The plan is a pure function of its inputs: every process of a
run and every re-run computes the same calls, so images come out the same, pixel for pixel. It is computed
lazily: seeds stay ranges (`negguide.generate.values.Seeds`) and calls are made as they are asked for, so a
plan of a hundred million seeds costs no more to count than one of four.
"""

from __future__ import annotations

import dataclasses
import json
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from itertools import chain, islice
from typing import Any

import torch

from negguide.branches import CallInfo
from negguide.core import Guide
from negguide.generate.methods import Method, build_guidance, checked, method_from_config, parse_method, with_negatives
from negguide.generate.model import ModelInfo
from negguide.generate.names import IMAGES, image_name, image_name_parts
from negguide.generate.prompts import Item, Problem
from negguide.modules.base import GuidanceModule
from negguide.modules.negtome import NegToMe

CHECKED_IMAGES = 2
"""Images per prompt of the call that planning checks each method on (enough for methods that compare them)."""


@dataclass(frozen=True)
class Defaults:
    """Settings of a run that an item may override.

    Args:
        seeds (`Sequence[int]`, defaults to ``(0,)``): one image per seed (a `Seeds` keeps ranges lazy).
        steps (`int`, defaults to 20): denoising steps.
        guidance_scale (`float`, *optional*): classifier-free guidance scale; the model's
            (`ModelInfo.guidance_scale`) by default.
        guidance_rescale (`float`, defaults to 0.0): guidance rescale factor in ``[0, 1]``.
        width (`int`, *optional*), height (`int`, *optional*): image size; the model's native size by default.
        negative_prompt (`str`, defaults to ``""``): the negative prompt of items that give none.
        true_cfg_scale (`float`, *optional*): the true CFG scale of guidance-distilled models (Flux,
            ``shapes-world-distilled``), whose negatives need it; unused for others.
    """

    seeds: Sequence[int] = (0,)
    steps: int = 20
    guidance_scale: float | None = None
    guidance_rescale: float = 0.0
    width: int | None = None
    height: int | None = None
    negative_prompt: str = ""
    true_cfg_scale: float | None = None


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
    true_cfg_scale: float | None = None
    """Only for guidance-distilled models; ``None`` elsewhere (and absent from the records)."""

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
            **({} if self.true_cfg_scale is None else {"true_cfg_scale": self.true_cfg_scale}),
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
        missing = [name for name in names if name not in record and name != "true_cfg_scale"]
        if missing:
            raise ValueError(f"the record lacks {', '.join(missing)}.")
        return cls(
            **{name: record[name] for name in names if name not in ("guidance", "true_cfg_scale")},
            true_cfg_scale=record.get("true_cfg_scale"),
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


@dataclass(frozen=True)
class Group:
    """The images of one item under one method, one per seed: jobs equal in all but the seed.

    Args:
        job (`Job`): the job of the first seed.
        seeds (`Sequence[int]`): the seeds, in order; a `Seeds` stays lazy.
        across (`bool`): whether the method acts across the images of a prompt (NegToMe's batch mode), so that
            a call needs at least two of them.
    """

    job: Job
    seeds: Sequence[int]
    across: bool

    @classmethod
    def of(cls, jobs: Sequence[Job]) -> Group:
        """The group of ``jobs``, which differ only in their seeds."""
        return cls(jobs[0], tuple(job.seed for job in jobs), acts_across(jobs[0].guidance))

    def __len__(self) -> int:
        return len(self.seeds)

    def jobs(self, start: int = 0, count: int | None = None) -> Iterator[Job]:
        """The jobs of seeds ``start`` to ``start + count`` (to the end by default), in order."""
        stop = len(self.seeds) if count is None else start + count
        return (dataclasses.replace(self.job, seed=self.seeds[index]) for index in range(start, stop))

    def find(self, name: str) -> Job | None:
        """The group's job whose file is ``name`` (``images/...png``), if any."""
        prefix, suffix = image_name_parts(self.job.item, self.job.method, self.job.prompt)
        if not (name.startswith(prefix) and name.endswith(suffix)) or len(name) <= len(prefix) + len(suffix):
            return None
        text = name[len(prefix) : -len(suffix)]
        if not (text.isascii() and text.isdigit()) or int(text) not in self.seeds:
            return None
        job = dataclasses.replace(self.job, seed=int(text))
        return job if job.file == name else None


def acts_across(guidance: Sequence[dict[str, Any]]) -> bool:
    """Whether a method's modules act across the images of a prompt: NegToMe in batch mode."""
    return any(
        spec["name"] == NegToMe.name and spec.get("mode", NegToMe.mode) == "batch" for spec in guidance
    )


def chunk_sizes(count: int, batch_size: int, across: bool, argument: str = "batch_size") -> list[tuple[int, int]]:
    """How the ``count`` seeds of a group are split into calls: ``(images, number of chunks)`` pairs, in order.

    Chunks hold ``batch_size`` images, the last one the rest. For a method that acts across the images of a
    prompt (``across``) no chunk is left with a single image: a lone last image takes one from the chunk before
    (..., ``batch_size - 1``, 2), or, with a batch size of 2, joins it (a call of 3 images).

    Raises:
        ValueError: naming ``argument``, when ``across`` and ``batch_size`` is 1 for two or more seeds.
    """
    if across and batch_size < 2 and count >= 2:
        raise ValueError(
            f"`{argument}`: {batch_size} would give a method that compares the images of a prompt (NegToMe in "
            "batch mode) one image per call; give 2 or more."
        )
    if count <= batch_size:
        return [(count, 1)]
    full, rest = divmod(count, batch_size)
    if not across or rest != 1:
        sizes = [(batch_size, full), (rest, 1)]
    elif batch_size == 2:
        sizes = [(2, full - 1), (3, 1)]
    else:
        sizes = [(batch_size, full - 1), (batch_size - 1, 1), (2, 1)]
    return [(size, number) for size, number in sizes if size and number]


@dataclass(frozen=True)
class _Bucket:
    """Chunks of one size whose groups share their settings: ``per_call`` of them make a call."""

    size: int
    per_call: int
    members: tuple[tuple[int, int, int], ...]  # (group index, first seed position, number of chunks)

    @property
    def chunks(self) -> int:
        return sum(number for _, _, number in self.members)

    @property
    def calls(self) -> int:
        return -(-self.chunks // self.per_call)

    def call_sizes(self) -> Counter[int]:
        full, rest = divmod(self.chunks, self.per_call)
        sizes = Counter({self.per_call * self.size: full})
        if rest:
            sizes[rest * self.size] += 1
        return +sizes


class Plan:
    """The pipeline calls of a run, computed lazily from its groups.

    Args:
        groups (`Sequence[Group]`): the run's groups, in order.
        batch_size (`int`): most images a call holds (see `chunk_sizes` for methods that compare images).
        argument (`str`, defaults to ``"batch_size"``): the name of ``batch_size`` in messages.

    Raises:
        ValueError: naming ``argument``, when a group's method cannot run in calls of ``batch_size`` images.
    """

    def __init__(self, groups: Sequence[Group], batch_size: int, argument: str = "batch_size") -> None:
        self.groups = tuple(groups)
        self.batch_size = batch_size
        buckets: dict[tuple[str, int], list[tuple[int, int, int]]] = {}
        self._by_item: dict[int, list[Group]] = {}
        for index, group in enumerate(self.groups):
            self._by_item.setdefault(group.job.item, []).append(group)
            key, start = group.job.call_key(), 0
            try:
                sizes = chunk_sizes(len(group), batch_size, group.across, argument)
            except ValueError as error:
                raise ValueError(f"{error} (method {group.job.method!r})") from None
            for size, number in sizes:
                buckets.setdefault((key, size), []).append((index, start, number))
                start += size * number
        self._buckets = tuple(
            _Bucket(size, max(1, batch_size // size), tuple(members)) for (_, size), members in buckets.items()
        )

    @property
    def images(self) -> int:
        """The number of images."""
        return sum(len(group) for group in self.groups)

    @property
    def calls(self) -> int:
        """The number of pipeline calls."""
        return sum(bucket.calls for bucket in self._buckets)

    def call_sizes(self) -> Counter[int]:
        """How many calls make each number of images."""
        return sum((bucket.call_sizes() for bucket in self._buckets), Counter())

    def batches(self) -> Iterator[Batch]:
        """The calls, in order; each is made when it is asked for."""
        for bucket in self._buckets:
            chunks = (
                (self.groups[index], start + chunk * bucket.size)
                for index, start, number in bucket.members
                for chunk in range(number)
            )
            while call := list(islice(chunks, bucket.per_call)):
                yield Batch(tuple(tuple(group.jobs(start, bucket.size)) for group, start in call))

    def jobs(self) -> Iterator[Job]:
        """Every image, group by group (item by item, then method by method), seeds in order."""
        return chain.from_iterable(group.jobs() for group in self.groups)

    def share(self, process: int, processes: int) -> int:
        """The number of images in the calls of process ``process`` of ``processes``: calls ``process``,
        ``process + processes``, ... (see `negguide.generate.run_batches`)."""
        images, first = 0, 0
        for bucket in self._buckets:
            full, rest = divmod(bucket.chunks, bucket.per_call)
            images += _count_congruent(first, first + full, process, processes) * bucket.per_call * bucket.size
            if rest and (first + full) % processes == process:
                images += rest * bucket.size
            first += bucket.calls
        return images

    def find(self, name: str) -> Job | None:
        """The job whose file is ``name`` (e.g. ``images/00003-perpneg-s7-a-red-circle.png``), if any."""
        item, _, _ = name.removeprefix(f"{IMAGES}/").partition("-")
        if not (item.isascii() and item.isdigit()):
            return None
        return next(filter(None, (group.find(name) for group in self._by_item.get(int(item), ()))), None)


def expand_groups(
    items: Sequence[Item], methods: Sequence[Method], defaults: Defaults, model: ModelInfo
) -> tuple[list[Group], list[Problem]]:
    """Every item x method as a `Group`, and the problems of items that cannot run."""
    groups: list[Group] = []
    problems: list[Problem] = []
    for item in items:
        try:
            groups.extend(_item_groups(item, methods, defaults, model))
        except (TypeError, ValueError) as error:
            problems.append(Problem(item.source, str(error)))
    return groups, problems


def expand(
    items: Sequence[Item], methods: Sequence[Method], defaults: Defaults, model: ModelInfo
) -> tuple[list[list[Job]], list[Problem]]:
    """Every item x method as a list of jobs (one per seed), and the problems of items that cannot run."""
    groups, problems = expand_groups(items, methods, defaults, model)
    return [list(group.jobs()) for group in groups], problems


def batches(groups: Sequence[Sequence[Job]], batch_size: int) -> list[Batch]:
    """The calls of `Plan` for groups given as lists of jobs (as `expand` gives them)."""
    return list(Plan([Group.of(group) for group in groups], batch_size).batches())


def _count_congruent(start: int, stop: int, remainder: int, modulus: int) -> int:
    """How many whole numbers in ``[start, stop)`` leave ``remainder`` when divided by ``modulus``."""

    def below(limit: int) -> int:
        return max(0, (limit - remainder + modulus - 1) // modulus)

    return below(stop) - below(start)


def _item_groups(item: Item, methods: Sequence[Method], defaults: Defaults, model: ModelInfo) -> Iterator[Group]:
    settings = {**vars(defaults), **item.settings}
    negative_prompt = defaults.negative_prompt if item.negative_prompt is None else item.negative_prompt
    seeds = item.seeds or defaults.seeds
    scale = model.guidance_scale if settings["guidance_scale"] is None else settings["guidance_scale"]
    for method in _item_methods(item, methods):
        if item.negatives is not None:
            method = checked(with_negatives(method, item.negatives), "negatives")
        job = Job(
            item=item.index,
            source=item.source,
            method=method.label,
            guidance=method.modules,
            prompt=item.prompt,
            negative_prompt=negative_prompt,
            seed=seeds[0],
            steps=settings["steps"],
            guidance_scale=scale,
            guidance_rescale=settings["guidance_rescale"],
            width=settings["width"] or model.width,
            height=settings["height"] or model.height,
            model=model.name,
            sampler=model.sampler,
            true_cfg_scale=defaults.true_cfg_scale if model.true_cfg else None,
        )
        group = Group(job, seeds, acts_across(method.modules))
        _check_call(Batch((tuple(group.jobs(0, min(len(group), CHECKED_IMAGES))),)), method.label)
        yield group


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
