"""The harness that runs diffusers' own pipeline tests on our classes (tests/peer/run.py): its counting, the run it
stores for the results page, and its refusal of a tree without diffusers' tests. diffusers' test files are not part
of this repository, so the pytest runs themselves are not exercised here."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from benchmarks import record, report

HARNESS = Path(__file__).parent / "peer" / "run.py"


@pytest.fixture(scope="module")
def harness():
    spec = importlib.util.spec_from_file_location("negguide_peer_run", HARNESS)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


OUTCOMES = {
    "a::test_one": "passed",
    "a::test_two": "passed",
    "a::test_three": "failed",
    "a::test_gpu": "skipped: test requires CUDA",
    "a::test_hub": "skipped: test is slow",
    "a::test_lora": "skipped: test requires PEFT backend",
    "a::test_else": "skipped: not supported",
}


def test_counts_split_the_skips_by_why(harness):
    assert harness.counts(OUTCOMES) == {
        "passed": 2,
        "failed": 1,
        "skipped": 4,
        "skipped, GPU": 1,
        "skipped, hub": 1,
        "skipped, peft": 1,
        "skipped, other": 1,
    }
    assert harness.summary(OUTCOMES) == "2 passed, 1 failed, 4 skipped (GPU 1, hub 1, peft 1, other 1)"


def test_a_stored_run_renders_with_its_counts_and_regressions(harness, tmp_path):
    ours = {**OUTCOMES, "a::test_two": "failed"}
    found = {"sd": {"stock": OUTCOMES, "ours": ours}}
    results = harness.stored_results(found, [("sd: a::test_two", "failed")])
    path = record.save("peer", {"families": ["sd"]}, results, folder=tmp_path)
    assert json.loads(path.read_text())["results"] == results
    page = tmp_path / "results.md"
    text = report.render(tmp_path, page)
    assert "| sd | stock | 2 | 1 | 4 | 1 | 1 | 1 | 1 |" in text
    assert "| sd | ours | 1 | 2 | 4 | 1 | 1 | 1 | 1 |" in text
    assert "| sd: a::test_two | failed |" in text


def test_a_tree_without_diffusers_tests_is_refused(harness, tmp_path, capsys):
    with pytest.raises(SystemExit):
        harness.main(["--diffusers", str(tmp_path)])
    assert "no tests/pipelines/test_pipelines_common.py" in capsys.readouterr().err


def test_store_refuses_a_partial_run(harness, tmp_path):
    tree = tmp_path / "diffusers"
    (tree / "tests" / "pipelines").mkdir(parents=True)
    (tree / "tests" / "pipelines" / "test_pipelines_common.py").touch()
    with pytest.raises(SystemExit):
        harness.main(["--diffusers", str(tree), "--classes", "ours", "--store", str(tmp_path / "runs")])
    assert not (tmp_path / "runs").exists()
