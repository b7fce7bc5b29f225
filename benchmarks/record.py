"""Stored benchmark runs: each run's numbers as one JSON file with the date, commit, machine and model, so that
the results page is generated from data and every figure can be traced to the run that measured it.

    benchmarks/runs/<benchmark>/<UTC date-time>.json
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import subprocess
from pathlib import Path
from typing import Any

import torch

RUNS = Path(__file__).resolve().parent / "runs"


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


def commit() -> str | None:
    """The repository's commit, with ``+dirty`` when the work tree has changes; ``None`` outside a checkout."""
    root = Path(__file__).resolve().parents[1]
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
