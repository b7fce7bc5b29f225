"""Run the benchmarks, store each run as JSON, and generate the results page from the stored runs.

    python -m benchmarks.report                   # every benchmark at its documented size (hours on a CPU)
    python -m benchmarks.report --quick           # every benchmark at a size for CI (a few minutes)
    python -m benchmarks.report --only quality speed
    python -m benchmarks.report --render-only     # only regenerate docs/results.md from benchmarks/runs/

Each benchmark is a script in ``benchmarks/`` that stores its run with `record.save`
(``benchmarks/runs/<benchmark>/<date>.json``). The page shows the latest run of every folder under the store, the
benchmarks of `BENCHMARKS` first, any other folder after them: a run is rendered from its ``results`` alone
(``title``, ``summary``, ``tables``, ``figures``; the structure is in `record`), so a new benchmark needs no code
here to appear on the page. Figures are drawn with matplotlib into ``results/`` beside the page.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks.record import RUNS, markdown

ROOT = Path(__file__).resolve().parents[1]
PAGE = ROOT / "docs" / "results.md"


@dataclass(frozen=True)
class Benchmark:
    """A benchmark script's arguments at its documented size and at CI's."""

    full: tuple[str, ...]
    quick: tuple[str, ...]


BENCHMARKS: dict[str, Benchmark] = {
    "speed": Benchmark((), ("--runs", "1", "--steps", "2", "--threads", "1")),
    "overhead": Benchmark((), ("--runs", "1", "--steps", "1")),
    "families": Benchmark((), ("--runs", "1", "--steps", "1")),
    "perpneg_cost": Benchmark((), ("--runs", "1", "--steps", "1", "--ks", "1")),
    "negtome_cost": Benchmark(("--runs", "21"), ("--runs", "1", "--steps", "5")),
    "throughput": Benchmark((), ("--runs", "1", "--images", "2", "--batch-size", "2", "--steps", "2")),
    "detector": Benchmark((), ("--count", "20")),
    "quality": Benchmark(
        ("--method", "standard", "--method", "perpneg"),
        ("--seeds", "1", "--steps", "2", "--threads", "1", "--method", "standard", "--method", "perpneg"),
    ),
    "perpneg_quality": Benchmark(
        ("--weights", "1", "--per-case"),
        ("--seeds", "1", "--steps", "2", "--cases", "3", "--weights", "1", "--modes", "s*w"),
    ),
    "negative_timing": Benchmark((), ("--seeds", "2", "--steps", "2", "--cases", "2", "--threads", "1")),
    "negtome_quality": Benchmark(
        ("--alpha", "3", "--threshold", "0.5", "--start", "0.1", "--stop", "0.5", "--mask-companion"),
        ("--batches", "2", "--images", "2", "--steps", "2", "--per-call", "2", "--threads", "1"),
    ),
    "gallery": Benchmark((), ("--seeds", "1", "--steps", "2")),
    "distilled_quality": Benchmark((), ("--quick", "--steps", "2", "--cost-images", "2", "--threads", "1")),
    "nag_quality": Benchmark(
        ("--method", "standard", "--method", "nag", "--method", 'nag:{"projection": "perpendicular"}'),
        ("--quick", "--seeds", "2", "--steps", "2", "--cost-images", "2", "--threads", "1"),
    ),
    "nag_cost": Benchmark(
        ("--steps", "5"),
        ("--quick", "--embedded-images", "2", "--images", "1", "--size", "64", "--threads", "1"),
    ),
    "fullsize": Benchmark((), ("--quick", "--threads", "1")),
}
"""The benchmarks the command runs, in the page's order."""


def run_benchmarks(names: list[str], quick: bool, store: Path) -> None:
    """Run each named benchmark script, storing its run under ``store``; stop at the first that fails."""
    for name in names:
        arguments = BENCHMARKS[name].quick if quick else BENCHMARKS[name].full
        command = [sys.executable, str(ROOT / "benchmarks" / f"{name}.py"), *arguments, "--store", str(store)]
        print("$", " ".join(command[1:]), flush=True)
        subprocess.run(command, check=True, cwd=ROOT)


def stored_runs(store: Path) -> dict[str, list[Path]]:
    """Benchmark name -> its stored run files, oldest first; registered benchmarks first, then the others."""
    folders = sorted(path for path in store.iterdir() if path.is_dir()) if store.is_dir() else []
    runs = {folder.name: sorted(folder.glob("*.json")) for folder in folders}
    runs = {name: files for name, files in runs.items() if files}
    order = [name for name in BENCHMARKS if name in runs] + [name for name in runs if name not in BENCHMARKS]
    return {name: runs[name] for name in order}


def load_run(path: Path) -> dict[str, Any]:
    """A stored run, checked against the structure the page renders."""
    run = json.loads(path.read_text())
    results = run.get("results")
    if not isinstance(results, dict) or not isinstance(results.get("tables", []), list):
        raise TypeError(f"{path}: `results` must be an object with a list of `tables` (see benchmarks/record.py).")
    for entry in results.get("tables", []):
        columns = entry.get("columns")
        if not isinstance(entry.get("title"), str) or not isinstance(columns, list):
            raise TypeError(f"{path}: every table needs a `title` and a list of `columns`.")
        for row in entry.get("rows", []):
            if len(row) != len(columns):
                raise ValueError(f"{path}: table {entry['title']!r} has a row of {len(row)} cells for "
                                 f"{len(columns)} columns.")
    for figure in results.get("figures", []):
        kind = figure.get("kind", "line")
        if kind not in ("bar", "line", "image"):
            raise ValueError(f"{path}: figure {figure.get('title')!r} has kind {kind!r}, not bar, line or image.")
        if kind == "image" and not path.with_name(f"{path.stem}-{figure.get('file')}").is_file():
            raise ValueError(f"{path}: figure {figure.get('title')!r} names {figure.get('file')!r}, but "
                             f"{path.stem}-{figure.get('file')} is not beside the run.")
        if kind != "image" and any(len(values) != len(figure["x"]) for values in figure["series"].values()):
            raise ValueError(f"{path}: figure {figure.get('title')!r} has a series of another length than `x`.")
    return run


def slug(text: str) -> str:
    """Letters only, lower case, joined by dashes: a file name that carries no figure of its own."""
    return "-".join(re.findall(r"[a-z]+", text.lower()))


def plot(figure: dict[str, Any], path: Path) -> None:
    """Draw one figure of a run's ``results`` as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axis = plt.subplots(figsize=(6.4, 3.6), dpi=100)
    names = list(figure["series"])
    if figure.get("kind", "line") == "bar":
        width = 0.8 / len(names)
        positions = range(len(figure["x"]))
        for index, name in enumerate(names):
            axis.bar([p + index * width for p in positions], figure["series"][name], width, label=name)
        axis.set_xticks([p + width * (len(names) - 1) / 2 for p in positions], [str(x) for x in figure["x"]],
                        fontsize=8)
    else:
        for name in names:
            axis.plot(figure["x"], figure["series"][name], marker="o", markersize=3, label=name)
    axis.set_title(figure["title"], fontsize=10)
    axis.set_xlabel(figure.get("xlabel", ""))
    axis.set_ylabel(figure.get("ylabel", ""))
    if len(names) > 1:
        axis.legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, metadata={"Software": None})
    plt.close(fig)


def describe(run: dict[str, Any], path: Path) -> str:
    """The line that says where a run's numbers come from (its file named within the store)."""
    machine = run.get("machine") or {}
    where = f"{machine.get('cpu', 'an unknown CPU')}, {machine.get('cores')} cores, {machine.get('torch_threads')} " \
            "torch threads"
    if machine.get("gpu"):
        where += f", {machine['gpu']}"
    commit = run.get("commit") or "unknown"
    settings = json.dumps(run.get("settings", {}), sort_keys=True)
    return (
        f"Run of {run.get('date')} at commit `{commit}` on {where}; torch {machine.get('torch')}, Python "
        f"{machine.get('python')}; model `{run.get('model')}`; settings `{settings}`; stored as "
        f"`{path.parent.name}/{path.name}`."
    )


def render(store: Path = RUNS, page: Path = PAGE) -> str:
    """Write the results page (and its figures in ``results/`` beside it) from the runs under ``store``."""
    figures_folder = page.parent / "results"
    lines = [
        "# Results",
        "",
        (
            "Generated by `python -m benchmarks.report` from the stored runs in `benchmarks/runs/`, never typed by "
            "hand: each section is the latest run of one benchmark, with the date, commit, machine and model it was "
            "measured on. `python -m benchmarks.report --render-only` regenerates this page from the stored files; "
            "[Benchmarks](benchmarks.md) says how to add a benchmark or a run. Timings on a shared CPU move from run "
            "to run; compare a figure only with figures of the same run."
        ),
    ]
    for name, files in stored_runs(store).items():
        run = load_run(files[-1])
        results = run["results"]
        lines += ["", f"## {results.get('title', name)}", ""]
        if results.get("summary"):
            lines += [results["summary"], ""]
        lines.append(describe(run, files[-1]))
        if len(files) > 1:
            lines += ["", f"Earlier stored runs of `{name}`: " + ", ".join(f"`{f.stem}`" for f in files[:-1]) + "."]
        for entry in results.get("tables", []):
            lines += ["", f"### {entry['title']}", "", markdown(entry)]
            if entry.get("note"):
                lines += ["", entry["note"]]
        for figure in results.get("figures", []):
            file = figures_folder / f"{name}-{slug(figure['title'])}.png"
            if figure.get("kind") == "image":
                file.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(files[-1].with_name(f"{files[-1].stem}-{figure['file']}"), file)
            else:
                plot(figure, file)
            lines += ["", f"![{figure['title']}](results/{file.name})"]
    text = "\n".join(lines) + "\n"
    page.parent.mkdir(parents=True, exist_ok=True)
    page.write_text(text)
    return text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="every benchmark at CI's size")
    parser.add_argument("--only", nargs="+", choices=list(BENCHMARKS), help="run only these benchmarks")
    parser.add_argument("--render-only", action="store_true", help="run nothing; regenerate the page")
    parser.add_argument("--store", type=Path, default=RUNS, help="folder of stored runs (default: benchmarks/runs)")
    parser.add_argument("--page", type=Path, default=PAGE, help="the page to write (default: docs/results.md)")
    args = parser.parse_args()
    if not args.render_only:
        run_benchmarks(args.only or list(BENCHMARKS), args.quick, args.store)
    render(args.store, args.page)
    print(f"wrote {args.page}")


if __name__ == "__main__":
    main()
