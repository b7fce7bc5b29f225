"""The README and the documentation site against the code: their code blocks run, their commands parse, their links
resolve, the README stays short, and the results page is the one generated from the stored runs, every number on
it taken from one."""

from __future__ import annotations

import json
import re
import shlex
import sys
import types
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement

from negguide.cli import build_parser
from negguide.modules import base

ROOT = Path(__file__).resolve().parents[1]
# benchmarks/ is a folder of scripts at the root of the checkout, not part of the installed package.
sys.path.insert(0, str(ROOT))
from benchmarks import record, report

DOCS = ROOT / "docs"
PAGES = [ROOT / "README.md", ROOT / "CHANGELOG.md", *sorted(DOCS.rglob("*.md"))]
SKIP = re.compile(r"<!-- skip: (.+?) -->")
FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.MULTILINE | re.DOTALL)
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")
NUMBER = re.compile(r"\d+(?:\.\d+)?")


@dataclass(frozen=True)
class Block:
    page: Path
    line: int
    language: str
    code: str
    skip: str | None


def blocks(page: Path) -> list[Block]:
    """The fenced code blocks of ``page``; a block right after ``<!-- skip: reason -->`` is not run."""
    text = page.read_text()
    found = []
    for match in FENCE.finditer(text):
        before = text[: match.start()].rstrip().rsplit("\n", 1)[-1]
        skip = SKIP.fullmatch(before.strip())
        line = text.count("\n", 0, match.start()) + 1
        found.append(Block(page, line, match.group(1), match.group(2), skip.group(1) if skip else None))
    return found


def name(page: Path) -> str:
    return str(page.relative_to(ROOT))


RUNNABLE = [page for page in PAGES if any(b.language == "python" and b.skip is None for b in blocks(page))]


def test_the_pages_hold_runnable_examples():
    assert {"README.md", "docs/writing-a-module.md", "docs/methods/nag.md"} <= {name(page) for page in RUNNABLE}


@pytest.mark.parametrize("page", RUNNABLE, ids=name)
def test_python_blocks_run(page: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Every Python block of a page runs on the embedded model, in order, in one namespace, as a reader would."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(base, "_REGISTRY", dict(base._REGISTRY))  # a page may register a module of its own
    module = types.ModuleType("docs_page")  # a real module, as the dataclasses a page defines need one
    monkeypatch.setitem(sys.modules, module.__name__, module)
    for block in blocks(page):
        if block.language == "python" and block.skip is None:
            # Running the documentation's own code is what this test is for.
            exec(compile(block.code, f"{name(page)}:{block.line}", "exec"), module.__dict__)  # noqa: S102


def test_only_python_blocks_are_skipped_and_each_says_why():
    skipped = [block for page in PAGES for block in blocks(page) if block.skip is not None]
    assert skipped, "the README shows code for real models, which is not run"
    for block in skipped:
        assert block.language == "python", f"{name(block.page)}:{block.line}"
        assert len(block.skip.split()) >= 2, f"{name(block.page)}:{block.line}: say what the block needs"


def commands(page: Path) -> list[tuple[int, list[str]]]:
    """The ``negguide`` command lines of a page's shell blocks, as argument lists (``...`` placeholders left out)."""
    found = []
    for block in blocks(page):
        if block.language != "bash":
            continue
        for line in block.code.replace("\\\n", " ").splitlines():
            for part in line.split("#", 1)[0].split("&&"):
                words = shlex.split(part)
                if words and Path(words[0]).name == "negguide" and "..." not in words:
                    found.append((block.line, words[1:]))
    return found


def test_documented_commands_parse():
    """Every ``negguide`` command shown takes the options it is shown with."""
    shown = [(page, line, words) for page in PAGES for line, words in commands(page)]
    assert len(shown) >= 10
    parser = build_parser()
    for page, line, words in shown:
        try:
            parser.parse_args(words)
        except SystemExit:
            pytest.fail(f"{name(page)}:{line}: negguide {shlex.join(words)} does not parse")


def headings(page: Path) -> set[str]:
    """The anchors MkDocs gives the headings of ``page``."""
    anchors = set()
    for line in page.read_text().splitlines():
        if line.startswith("#") and not line.startswith("#!"):
            title = line.lstrip("#").strip().lower()
            anchors.add(re.sub(r"[\s]+", "-", re.sub(r"[^\w\s-]", "", title)).strip("-"))
    return anchors


@pytest.mark.parametrize("page", PAGES, ids=name)
def test_links_resolve(page: Path):
    """Relative links point at files of the checkout, and anchors at headings of the page they name."""
    prose = re.sub(r"`[^`\n]*`", "", FENCE.sub("", page.read_text()))
    for target in LINK.findall(prose):
        if target.startswith(("http://", "https://")):
            assert target.startswith("https://"), f"{name(page)}: {target}"
            continue
        path, _, anchor = target.partition("#")
        file = (page.parent / path).resolve() if path else page
        assert file.is_file(), f"{name(page)}: {target} does not exist"
        if anchor:
            assert anchor in headings(file), f"{name(page)}: {target}: no such heading"


def test_readme_is_at_most_ten_kilobytes():
    assert len((ROOT / "README.md").read_bytes()) <= 10 * 1024


def test_readme_and_install_page_state_the_supported_versions():
    lower = {"python": metadata.metadata("negguide")["Requires-Python"].removeprefix(">=")}
    for requirement in map(Requirement, metadata.requires("negguide")):
        if requirement.name in ("torch", "diffusers", "transformers"):
            lower[requirement.name] = next(spec.version for spec in requirement.specifier if spec.operator == ">=")
    assert set(lower) == {"python", "torch", "diffusers", "transformers"}
    readme, install = (ROOT / "README.md").read_text(), (DOCS / "install.md").read_text()
    for package, version in lower.items():
        label = "Python" if package == "python" else package
        assert f"{label} {version} or later" in readme
        assert f"{version} or later" in install


def test_readme_keeps_its_two_commands():
    readme = (ROOT / "README.md").read_text()
    assert (
        'python3 -m venv .venv && .venv/bin/pip install torch==2.13.0 -e ".[test]" && .venv/bin/negguide generate '
        "examples/prompts.txt --out outputs" in readme
    )
    assert "python -m pytest -q tests" in readme and "python -m pytest -q tests" in (ROOT / ".ci" / "run").read_text()
    assert "mkdocs build --strict" in readme


def test_results_page_is_generated_from_the_stored_runs(tmp_path: Path):
    """docs/results.md is exactly what `python -m benchmarks.report --render-only` makes of benchmarks/runs/."""
    page = tmp_path / "results.md"
    assert report.render(report.RUNS, page) == (DOCS / "results.md").read_text()
    assert sorted(path.name for path in (tmp_path / "results").iterdir()) == sorted(
        path.name for path in (DOCS / "results").iterdir()
    )


def stored_figures() -> set[str]:
    """Every number of every stored run: as stored, and as the page formats its table cells."""
    numbers = set()
    for files in report.stored_runs(report.RUNS).values():
        for file in files:
            run = json.loads(file.read_text())
            numbers.update(NUMBER.findall(json.dumps(run, ensure_ascii=False)))
            numbers.update(NUMBER.findall(f"{file.parent.name}/{file.name}"))
            for entry in run["results"].get("tables", []):
                formats = entry.get("formats") or [None] * len(entry["columns"])
                for row in entry["rows"]:
                    for value, spec in zip(row, formats):
                        numbers.update(NUMBER.findall(record.cell(value, spec)))
    return numbers


def test_every_number_on_the_results_page_comes_from_a_stored_run():
    text = re.sub(r"\(results/[^)]+\.png\)", "", (DOCS / "results.md").read_text())
    shown = set(NUMBER.findall(text))
    assert shown, "the results page shows no figures"
    assert shown <= stored_figures(), sorted(shown - stored_figures())


def test_the_results_page_itself_types_no_figure(tmp_path: Path):
    assert NUMBER.findall(report.render(tmp_path / "no runs", tmp_path / "results.md")) == []


def test_results_page_shows_any_benchmark_folder(tmp_path: Path):
    """A benchmark the report does not know appears from its stored run alone, latest run shown."""
    store = tmp_path / "runs"
    table = record.table("Per-step cost", ["method", "ms/step"], [["NAG", 12.3456]], formats=[None, ".2f"])
    older = record.save("nag_cost", {"runs": 1}, {"title": "Cost of NAG", "tables": [table]}, "m", store)
    older.rename(older.with_name("20200101T000000Z.json"))
    figure = {"title": "Cost", "kind": "bar", "x": ["NAG"], "series": {"ms": [12.3456]}}
    results = {"title": "Cost of NAG", "summary": "NAG against CFG.", "tables": [table], "figures": [figure]}
    record.save("nag_cost", {"runs": 3}, results, "shapes-world", store)
    text = report.render(store, tmp_path / "page" / "results.md")
    assert "## Cost of NAG" in text and "| NAG | 12.35 |" in text and "NAG against CFG." in text
    assert "Earlier stored runs of `nag_cost`: `20200101T000000Z`." in text
    assert '`{"runs": 3}`' in text
    assert (tmp_path / "page" / "results" / "nag_cost-cost.png").is_file()


def test_a_malformed_run_is_refused_with_its_file(tmp_path: Path):
    bad = {"title": "t", "columns": ["a", "b"], "rows": [[1]]}
    path = record.save("broken", {}, {"tables": [bad]}, None, tmp_path)
    with pytest.raises(ValueError, match="broken.*a row of 1 cells for 2 columns"):
        report.render(tmp_path, tmp_path / "results.md")
    assert path.is_file()


def test_a_pipe_inside_a_cell_keeps_the_row_in_its_columns():
    text = record.markdown(record.table("t", ["method", "n"], [['nag:{"layers": "(a|b)"}', 1]]))
    row = text.splitlines()[-1]
    assert row == '| nag:{"layers": "(a\\|b)"} | 1 |'
    assert len(re.split(r"(?<!\\)\|", row)) == 4


def test_a_table_row_must_match_its_columns():
    with pytest.raises(ValueError, match="a row of 1 cells for 2 columns"):
        record.table("t", ["a", "b"], [[1]])
