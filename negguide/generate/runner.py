"""Running a plan: pipeline calls, atomic PNG writes with metadata, the manifest, resume, grids, and the
split of the work between the processes of an ``accelerate launch``."""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from importlib.metadata import PackageNotFoundError, version
from itertools import islice
from pathlib import Path
from typing import Any

import PIL.Image
import torch
from accelerate import PartialState
from diffusers import DiffusionPipeline
from diffusers.utils import make_image_grid
from tqdm.auto import tqdm

from negguide.atomic import TEMP_PREFIX, TEMP_SUFFIX, remove_stale_temporaries
from negguide.errors import InputError
from negguide.generate.manifest import ManifestWriter, manifest_path, merge_manifest
from negguide.generate.model import model_label
from negguide.generate.names import GRIDS, IMAGES, grid_name
from negguide.generate.plan import Batch, Job, Plan
from negguide.memory import MemoryBudget
from negguide.metadata import infotext, is_complete_png, read_png_metadata, save_png


def process_state(device: str | None) -> PartialState:
    """The process's place in an ``accelerate launch`` (a single process otherwise).

    On machines without CUDA, or with ``device="cpu"``, the processes join over CPU (gloo), e.g. with
    ``accelerate launch --multi_gpu --num_processes 2 -m negguide generate ...``.
    """
    cpu = device == "cpu" or (device is None and not torch.cuda.is_available())
    state = PartialState(cpu=cpu)
    launched = int(os.environ.get("WORLD_SIZE", "1"))
    if launched != state.num_processes:
        raise InputError(
            f"`--device`: launched as {launched} processes but only {state.num_processes} joined; on the CPU use "
            "`--device cpu` (each process would otherwise make every image)."
        )
    return state


def prepare_output(out: Path) -> None:
    """Create the output folders and check that files can be written there; InputError otherwise."""
    try:
        for folder in (out, out / IMAGES, out / GRIDS):
            folder.mkdir(parents=True, exist_ok=True)
        probe = out / IMAGES / f"{TEMP_PREFIX}probe-{os.getpid()}{TEMP_SUFFIX}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as error:
        raise InputError(f"`--out`: cannot write to {out}: {error.strerror or error}.") from None


def remove_temporaries(out: Path) -> list[Path]:
    """Delete the temporary files that killed runs left in the output folders."""
    return [path for folder in (out, out / IMAGES, out / GRIDS) for path in remove_stale_temporaries(folder)]


def finished(out: Path, plan: Plan) -> set[str]:
    """The files of ``plan`` that exist complete in ``out``, found by listing ``out/images``: the cost grows
    with the files there, not with the plan.

    Raises:
        InputError: some existing files were made with other settings (another model, steps, ...).
    """
    done: set[str] = set()
    conflicts: list[str] = []
    folder = out / IMAGES
    names = sorted(entry.name for entry in os.scandir(folder)) if folder.is_dir() else []
    for name in names:
        job = plan.find(f"{IMAGES}/{name}")
        if job is None or not is_complete_png(out / job.file):
            continue
        try:
            recorded = (read_png_metadata(out / job.file)[1] or {}).get("job", {})
        except (OSError, ValueError):
            recorded = {}
        expected = job.generation()
        if isinstance(recorded, dict) and {key: recorded.get(key) for key in expected} == expected:
            done.add(job.file)
        else:
            conflicts.append(job.file)
    if conflicts:
        raise InputError(
            f"`--out`: {len(conflicts)} image(s) in {out} were made with other settings, e.g. {conflicts[0]}; "
            "choose another --out or delete them."
        )
    return done


def generate_images(
    pipe: DiffusionPipeline, batch: Batch, memory_budget: MemoryBudget = None
) -> list[PIL.Image.Image]:
    """The images of ``batch``, in its job order, from one pipeline call with one generator per image, its
    network evaluations split to fit ``memory_budget`` (`negguide.memory`) when one is given."""
    job = batch.groups[0][0]
    return pipe(
        prompt=[group[0].prompt for group in batch.groups],
        negative_prompt=[group[0].negative_prompt for group in batch.groups],
        num_images_per_prompt=len(batch.groups[0]),
        guidance=batch.guidance(),
        num_inference_steps=job.steps,
        guidance_scale=job.guidance_scale,
        width=job.width,
        height=job.height,
        generator=batch.generators(),
        output_type="pil",
        # Only the UNet families' pipelines take `guidance_rescale`, as in diffusers; modules carry their own.
        **({"guidance_rescale": job.guidance_rescale} if job.guidance_rescale else {}),
        **({} if job.true_cfg_scale is None else {"true_cfg_scale": job.true_cfg_scale}),
        **({} if memory_budget is None else {"memory_budget": memory_budget}),
    ).images


def save_image(out: Path, image: PIL.Image.Image, batch: Batch, position: int) -> Path:
    """Write image ``position`` of ``batch`` atomically, with its ``parameters`` and ``negguide`` chunks."""
    job = batch.jobs[position]
    config = {"version": _version(), "job": job.record(), "batch": {"index": position, "layout": batch.layout()}}
    return save_png(
        image, out / job.file, infotext(job.prompt, job.negative_prompt, _params(job, batch, position)), config
    )


def run_batches(
    pipe: DiffusionPipeline,
    batches: Plan | Sequence[Batch],
    out: Path,
    state: PartialState,
    done: set[str],
    memory_budget: MemoryBudget = None,
) -> int:
    """Make the images of ``batches`` not in ``done``; process ``i`` of ``n`` takes calls ``i``, ``i + n``, ...
    Each call's evaluations keep to ``memory_budget`` (`generate_images`).

    A call with some images done is run whole, so that every image comes from the same call as in an
    uninterrupted run. The calls of a `Plan` are made one at a time, as they are reached. The progress bar
    counts this process's images, those already done included. Returns the number of images this process wrote.
    """
    process, processes = state.process_index, state.num_processes
    if isinstance(batches, Plan):
        calls, total = batches.batches(), batches.share(process, processes)
    else:
        calls, total = iter(batches), sum(len(batch.jobs) for batch in batches[process::processes])
    writer = ManifestWriter(manifest_path(out, process, processes))
    written = 0
    with tqdm(total=total, unit="img", desc="generate", disable=not state.is_main_process) as progress:
        for batch in islice(calls, process, None, processes):
            if all(job.file in done for job in batch.jobs):
                progress.update(len(batch.jobs))
                continue
            try:
                images = generate_images(pipe, batch, memory_budget=memory_budget)
            except ValueError as error:  # a setting the modules can only check against the model
                first = batch.jobs[0]
                raise InputError(f"method {first.method!r} ({first.source}): {error}") from error
            for position, image in enumerate(images):
                job = batch.jobs[position]
                if job.file not in done:
                    save_image(out, image, batch, position)
                    writer.append(job.record())
                    written += 1
                progress.update()
    return written


def finish(out: Path, jobs: Iterable[Job], grids: bool) -> tuple[int, int, int]:
    """Merge the manifest and, with ``grids``, write the item grids that are missing or older than their
    images. Returns the number of complete images, the manifest's line count and the number of grids written."""
    jobs = list(jobs)
    records = [job.record() for job in jobs if is_complete_png(out / job.file)]
    lines = merge_manifest(out, records)
    return len(records), lines, (make_grids(out, jobs) if grids else 0)


def make_grids(out: Path, jobs: Iterable[Job]) -> int:
    """One grid per item (a row per method, a column per seed) with `diffusers.utils.make_image_grid`."""
    by_item: dict[int, dict[str, list[Job]]] = {}
    for job in jobs:
        by_item.setdefault(job.item, {}).setdefault(job.method, []).append(job)
    written = 0
    for item, rows in by_item.items():
        members = [job for row in rows.values() for job in row]
        paths = [out / job.file for job in members]
        if not all(is_complete_png(path) for path in paths):
            continue
        target = out / grid_name(item, members[0].prompt)
        if target.exists() and target.stat().st_mtime >= max(path.stat().st_mtime for path in paths):
            continue
        methods = list(rows)
        images = []
        for path in paths:
            with PIL.Image.open(path) as image:
                images.append(image.convert("RGB"))
        grid = make_image_grid(images, rows=len(methods), cols=len(members) // len(methods))
        layout = {"rows": methods, "columns": [job.seed for job in members[: len(members) // len(methods)]]}
        save_png(grid, target, config={"grid": {**layout, "item": item, "files": [job.file for job in members]}})
        written += 1
    return written


def _params(job: Job, batch: Batch, position: int) -> dict[str, Any]:
    params: dict[str, Any] = {
        "Steps": job.steps,
        "Sampler": job.sampler,
        "CFG scale": job.guidance_scale,
        "Seed": job.seed,
        "Size": f"{job.width}x{job.height}",
        "Model": model_label(job.model),
        "Batch size": len(batch.jobs),
        "Batch pos": position,
        "Negative guidance": "+".join(module["name"] for module in job.guidance),
    }
    for module in job.guidance:
        params.update({f"{module['name']} {key}": value for key, value in module.items() if key != "name"})
    if job.guidance_rescale:
        params["Guidance rescale"] = job.guidance_rescale
    if job.true_cfg_scale is not None:
        params["True CFG scale"] = job.true_cfg_scale
    params["Version"] = f"negguide {_version()}"
    return params


def _version() -> str:
    try:
        return version("negguide")
    except PackageNotFoundError:
        return "unknown"
