"""Run diffusers' own fast pipeline tests for SD, SDXL, SD3 and Flux against the stock classes and negguide's.

The test files are read from a diffusers source tree given on the command line (a checkout, or any folder that
holds diffusers' ``tests/``); nothing of them is copied into this repository. Offline: the hub's tiny tokenizers
are the committed fixtures (``tests/fixtures``). See ``plugin.py`` for what changes between the two runs::

    python tests/peer/run.py --diffusers ~/src/diffusers
    python tests/peer/run.py --diffusers ~/src/diffusers --family flux --classes ours -- -k ip_adapter

Prints, per family and class set, the tests passed, failed and skipped (skips grouped by why: GPU, hub, peft,
other), then every test that passes with the stock class and not with ours. Exit code 1 when there is one. Each
run's pytest output is kept in ``<temp>/negguide-peer/<family>-<classes>.log``. diffusers' tests need the
``peer`` extra (``pip install -e ".[peer]"``: pytest, ``parameterized``, ``requests-mock``).

With ``--store DIR`` (``benchmarks/runs`` for the results page) the counts are kept as a run of ``peer``
(`benchmarks/record.py`), with the diffusers version installed and the commit of the test files where the tree is
a git checkout (``+dirty`` when that tree has changes).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET
from collections import Counter
from pathlib import Path

import diffusers

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(ROOT))
from benchmarks import record  # the repository's benchmarks folder, found from this file

FIXTURES = HERE.parent / "fixtures"
FAMILIES = {
    "sd": "tests/pipelines/stable_diffusion/test_stable_diffusion.py",
    "sdxl": "tests/pipelines/stable_diffusion_xl/test_stable_diffusion_xl.py",
    "sd3": "tests/pipelines/stable_diffusion_3/test_pipeline_stable_diffusion_3.py",
    "flux": "tests/pipelines/flux/test_pipeline_flux.py",
}
"""Each family's test file; its slow and GPU classes skip themselves here and are counted as skips."""
SKIP_KINDS = (
    ("GPU", ("cuda", "gpu", "accelerator", "xpu", "mps", "fp16", "float16", "bf16", "device")),
    ("hub", ("hub", "slow", "nightly", "internet", "remote")),
    ("peft", ("peft",)),
)


def run_family(diffusers: Path, family: str, classes: str, extra: list[str]) -> dict[str, str]:
    """``{test id: outcome}`` for one family and class set; outcome is ``passed``, ``failed`` or ``skipped: why``."""
    logs = Path(tempfile.gettempdir()) / "negguide-peer"
    logs.mkdir(exist_ok=True)
    log = logs / f"{family}-{classes}.log"
    with tempfile.TemporaryDirectory(prefix="negguide-peer-") as folder:
        report = Path(folder) / "report.xml"
        env = {
            **os.environ,
            "NEGGUIDE_PEER_CLASSES": classes,
            "NEGGUIDE_PEER_FIXTURES": str(FIXTURES),
            "PYTHONPATH": os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")]),
            "HF_HUB_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1",
        }
        command = [sys.executable, "-m", "pytest", FAMILIES[family], "-p", "plugin", "-q", "-p", "no:cacheprovider"]
        command += ["--junitxml", str(report), "-o", "junit_family=xunit2", *extra]
        with log.open("w") as output:
            subprocess.run(command, check=False, cwd=diffusers, env=env, stdout=output, stderr=subprocess.STDOUT)
        if not report.exists():
            raise SystemExit(f"pytest wrote no report for {family} ({classes}); its output: {log}")
        return _outcomes(report)


def _outcomes(report: Path) -> dict[str, str]:
    outcomes = {}
    for case in ET.parse(report).iter("testcase"):
        name = f"{case.get('classname')}::{case.get('name')}"
        skipped = case.find("skipped")
        if skipped is not None:
            outcomes[name] = f"skipped: {skipped.get('message', '')}"
        elif case.find("failure") is not None or case.find("error") is not None:
            outcomes[name] = "failed"
        else:
            outcomes[name] = "passed"
    return outcomes


def skip_kind(outcome: str) -> str:
    reason = outcome.lower()
    return next((kind for kind, words in SKIP_KINDS if any(word in reason for word in words)), "other")


SKIP_NAMES = [kind for kind, _ in SKIP_KINDS] + ["other"]


def counts(outcomes: dict[str, str]) -> dict[str, int]:
    """Tests passed, failed and skipped, and the skips by why (``skipped, <kind>`` for each of `SKIP_NAMES`)."""
    total = Counter("skipped" if o.startswith("skipped") else o for o in outcomes.values())
    skips = Counter(skip_kind(o) for o in outcomes.values() if o.startswith("skipped"))
    return {"passed": total["passed"], "failed": total["failed"], "skipped": total["skipped"]} | {
        f"skipped, {kind}": skips[kind] for kind in SKIP_NAMES
    }


def summary(outcomes: dict[str, str]) -> str:
    found = counts(outcomes)
    detail = ", ".join(f"{kind} {found[f'skipped, {kind}']}" for kind in SKIP_NAMES if found[f"skipped, {kind}"])
    return f"{found['passed']} passed, {found['failed']} failed, {found['skipped']} skipped ({detail or 'none'})"


def stored_results(found: dict[str, dict[str, dict[str, str]]], regressions: list[tuple[str, str]]) -> dict:
    """The run's ``results`` for the results page (`benchmarks/record.py`)."""
    columns = ["family", "classes", *counts({})]
    rows = [[family, which, *counts(outcomes).values()] for family, runs in found.items() for which, outcomes in runs.items()]
    return {
        "title": "diffusers' own pipeline tests on negguide's classes",
        "summary": (
            "diffusers' fast pipeline tests for each family (the PipelineTesterMixin suites of its tests/pipelines), "
            "run offline with the committed tokenizer fixtures, once with the stock classes and once with "
            "negguide's (`python tests/peer/run.py --diffusers PATH --store benchmarks/runs`). With negguide's "
            "classes every pipeline call also runs the stock __call__ on the same components and inputs and fails "
            "when the outputs differ. Skips are the suites' own: GPU-only, hub or slow, peft; a test that fails "
            "with the stock class too fails here for a reason of its own (a golden slice recorded with the hub's "
            "tiny tokenizers rather than the committed fixtures, a model to download)."
        ),
        "tables": [
            record.table("Tests by outcome", columns, rows),
            record.table(
                "Tests that pass with the stock class and not with negguide's",
                ["test", "outcome with negguide's class"],
                [list(regression) for regression in regressions] or [["none", None]],
            ),
        ],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--diffusers", type=Path, required=True, help="a diffusers source tree with tests/")
    parser.add_argument("--family", choices=sorted(FAMILIES), action="append", help="default: all four")
    parser.add_argument("--classes", choices=["stock", "ours", "both"], default="both")
    parser.add_argument("--store", type=Path, help="keep the counts as a run of `peer` in this folder of runs")
    parser.add_argument("pytest_args", nargs="*", help="after --: more pytest arguments (-k ...)")
    args = parser.parse_args(argv)
    if not (args.diffusers / "tests" / "pipelines" / "test_pipelines_common.py").is_file():
        parser.error(f"--diffusers {args.diffusers}: no tests/pipelines/test_pipelines_common.py there.")
    classes = ["stock", "ours"] if args.classes == "both" else [args.classes]
    if args.store is not None and (args.classes != "both" or args.pytest_args):
        parser.error("--store keeps whole runs only: leave out --classes and the pytest arguments.")
    regressions = []
    found = {}
    for family in args.family or list(FAMILIES):
        results = {which: run_family(args.diffusers.resolve(), family, which, args.pytest_args) for which in classes}
        found[family] = results
        for which, outcomes in results.items():
            print(f"{family:5} {which:5} {summary(outcomes)}", flush=True)
        if len(results) == 2:
            regressions += [
                (f"{family}: {name}", results["ours"].get(name, "missing").split(":")[0])
                for name, outcome in results["stock"].items()
                if outcome == "passed" and results["ours"].get(name) != "passed"
            ]
    for name, outcome in regressions:
        print(f"passes with stock, not with ours: {name} ({outcome})")
    if args.store is not None:
        settings = {"families": list(found), "diffusers": diffusers.__version__,
                    "tests_commit": record.commit(args.diffusers.resolve())}
        print(record.save("peer", settings, stored_results(found, regressions), folder=args.store))
    return 1 if regressions else 0


if __name__ == "__main__":
    sys.exit(main())
