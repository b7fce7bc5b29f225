"""Stored benchmark runs: each run's numbers as one JSON file with the date, commit, machine and model, so that
the results page is generated from data and every figure can be traced to the run that measured it.

    benchmarks/runs/<benchmark>/<UTC date-time>.json

A run file holds ``benchmark``, ``date``, ``commit``, ``machine``, ``model``, ``settings`` and ``results``.
``results`` is what the results page (``python -m benchmarks.report``) renders, with no code of the benchmark's
own:

    {
      "title": "Overhead against stock diffusers",        # the page's heading for this benchmark
      "summary": "What the benchmark measures, how.",     # optional, one paragraph of prose without figures
      "tables": [                                          # rendered in order as Markdown tables
        {
          "title": "Median seconds per call",
          "columns": ["pipeline", "median s/call", "ratio to stock"],
          "rows": [["stock diffusers", 2.123, 1.0], ["negguide", 2.087, 0.983]],
          "formats": [null, ".3f", ".3f"],                # optional, a format spec per column (numbers only)
          "note": "Prose shown under the table."           # optional, without figures
        }
      ],
      "figures": [                                         # optional; each becomes a PNG beside the page
        {
          "title": "Median seconds per call",
          "kind": "bar",                                   # "bar" (one value per x) or "line"
          "x": ["stock diffusers", "negguide"],
          "series": {"s/call": [2.123, 2.087]},
          "xlabel": "pipeline", "ylabel": "seconds"
        },
        {"title": "Pictures", "kind": "image", "file": "grid.png"}   # a PNG stored beside the run as
      ]                                                                # <run file's stem>-grid.png
    }

Every figure on the page comes from these numbers: a benchmark's prose (``summary``, ``note``) states what is
measured and why, never a measured value.
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import os
import platform
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

REPOSITORY = Path(__file__).resolve().parents[1]
RUNS = REPOSITORY / "benchmarks" / "runs"


def machine() -> dict[str, Any]:
    """The CPU model, torch's thread count and the GPU, if any."""
    cpu = platform.processor() or platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        names = [
            line.split(":", 1)[1].strip() for line in cpuinfo.read_text().splitlines() if line.startswith("model name")
        ]
        cpu = names[0] if names else cpu
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "gpu": gpu,
        "torch": torch.__version__,
        "python": platform.python_version(),
    }


def commit(root: Path = REPOSITORY) -> str | None:
    """The commit of the git checkout at ``root`` (this repository by default), with ``+dirty`` when its work tree
    has changes; ``None`` outside a checkout."""
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, check=True)
        status = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=root,
            capture_output=True,
            text=True,
            check=True,
        )
    except (OSError, subprocess.CalledProcessError):
        return None
    return head.stdout.strip() + ("+dirty" if status.stdout.strip() else "")


def table(
    title: str,
    columns: Sequence[str],
    rows: Sequence[Sequence[Any]],
    formats: Sequence[str | None] | None = None,
    note: str | None = None,
) -> dict[str, Any]:
    """One table of a run's ``results`` (see the module's docstring); ``formats`` are format specs per column."""
    if formats is not None and len(formats) != len(columns):
        raise ValueError(f"{title!r}: {len(formats)} formats for {len(columns)} columns.")
    for row in rows:
        if len(row) != len(columns):
            raise ValueError(f"{title!r}: a row of {len(row)} cells for {len(columns)} columns: {row!r}.")
    entry: dict[str, Any] = {"title": title, "columns": list(columns), "rows": [list(row) for row in rows]}
    if formats is not None:
        entry["formats"] = list(formats)
    if note:
        entry["note"] = note
    return entry


def cell(value: Any, spec: str | None = None) -> str:
    """A table cell as text: numbers with ``spec`` when given, ``None`` as a dash."""
    if value is None:
        return "-"
    if spec and isinstance(value, (int, float)) and not isinstance(value, bool):
        return format(value, spec)
    return str(value)


def markdown(entry: dict[str, Any]) -> str:
    """A results table as Markdown (header, rule, rows); a ``|`` inside a cell is escaped."""
    columns = entry["columns"]
    formats = entry.get("formats") or [None] * len(columns)
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in entry["rows"]:
        cells = (cell(value, spec).replace("|", "\\|") for value, spec in zip(row, formats))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def show(results: dict[str, Any]) -> None:
    """Print a run's tables, as the benchmark scripts do before storing them."""
    for entry in results.get("tables", []):
        print(f"\n### {entry['title']}\n")
        print(markdown(entry))
        if entry.get("note"):
            print(f"\n{entry['note']}")


def model_identity(model: str | os.PathLike | None) -> str:
    """A model's name with the first 12 hex digits of its denoiser's weights' SHA-256 where they are on disk: the
    embedded models by name (``shapes-world@1a2b3c4d5e6f``), a folder by path; a hub id as given."""
    from negguide.loading import (
        DISTILLED_MODEL_NAME,
        EMBEDDED_MODEL_NAME,
        distilled_unet_path,
        embedded_model_path,
        is_embedded_model,
    )

    if model == DISTILLED_MODEL_NAME:
        name, weights = DISTILLED_MODEL_NAME, sorted(distilled_unet_path().glob("diffusion_pytorch_model*.safetensors"))
    else:
        name = EMBEDDED_MODEL_NAME if model is None else str(model)
        folder = embedded_model_path() if is_embedded_model(model) else Path(name)
        weights = sorted(folder.glob("*/diffusion_pytorch_model*.safetensors")) if folder.is_dir() else []
    if not weights:
        return name
    digest = hashlib.sha256()
    for path in weights:
        digest.update(path.read_bytes())
    return f"{name}@{digest.hexdigest()[:12]}"


def add_store_argument(parser: argparse.ArgumentParser) -> None:
    """``--store DIR``: where the run is kept (``benchmarks/runs`` by default)."""
    parser.add_argument("--store", type=Path, default=RUNS, help="folder of stored runs (default: benchmarks/runs)")


def save(benchmark: str, settings: dict[str, Any], results: Any, model: str | None = None, folder: Path = RUNS) -> Path:
    """Write one run of ``benchmark`` and return its path.

    Args:
        benchmark (`str`): the benchmark's name (its script's), the run's folder.
        settings (`dict`): what the run was asked to do (its command-line settings).
        results: the run's numbers, JSON-ready.
        model (`str`, *optional*): the model's identity (an embedded model's name, a folder, a hub id).
        folder (`Path`): where runs are kept; ``benchmarks/runs`` by default.
    """
    now = datetime.datetime.now(datetime.timezone.utc)
    run = {
        "benchmark": benchmark,
        "date": now.isoformat(timespec="seconds"),
        "commit": commit(),
        "machine": machine(),
        "model": model,
        "settings": settings,
        "results": results,
    }
    path = folder / benchmark / f"{now:%Y%m%dT%H%M%SZ}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(run, indent=1) + "\n")
    tmp.replace(path)
    return path

