"""How ``negguide generate`` plans its calls: ``--batch-size`` bounds every call (methods that compare the images
of a prompt never get one alone), seed ranges stay lazy, a resumed run matches an uninterrupted one, comment
lines of .txt files, long prompts reported, and no library noise."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path

import pytest
from generate_helpers import (
    assert_same_images,
    image_files,
    run_generate,
    save_tiny_model,
    subprocess_command,
    subprocess_env,
    temporaries,
)
from transformers import CLIPTokenizer

import negguide.generate.runner
from negguide.cli import build_parser
from negguide.generate import chunk_sizes, read_items, values
from negguide.generate.names import image_name
from negguide.loading import embedded_model_path

SEEDS = "0-4"
METHODS = ["--method", "plain=negative_prompts", "--method", "nt=negtome"]


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_model(tmp_path_factory.mktemp("model"))


@pytest.fixture(scope="module")
def prompts(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("inputs") / "prompts.txt"
    path.write_text("a red circle\na blue square\n")
    return path


def args(prompts: Path, out: Path, model: Path, *extra: str) -> list[str]:
    """A run of 2 prompts x 2 methods (NegToMe among them) x 5 seeds, at most 2 images a call."""
    return ["generate", str(prompts), "--out", str(out), "--model", str(model), "--seeds", SEEDS, "--steps", "4",
            "--negative-prompt", "blurry", "--batch-size", "2", "--device", "cpu", *METHODS, *extra]  # fmt: skip


def record_calls(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, int]]:
    """(method, images) of every pipeline call the runner makes from now on."""
    calls: list[tuple[str, int]] = []
    original = negguide.generate.runner.generate_images

    def recording(pipe, batch, **options):
        calls.append((batch.jobs[0].method, len(batch.jobs)))
        return original(pipe, batch, **options)

    monkeypatch.setattr(negguide.generate.runner, "generate_images", recording)
    return calls


@pytest.mark.parametrize(
    ("count", "batch_size", "across", "expected"),
    [
        (5, 2, False, [(2, 2), (1, 1)]),
        (5, 2, True, [(2, 1), (3, 1)]),
        (9, 4, True, [(4, 1), (3, 1), (2, 1)]),
        (9, 4, False, [(4, 2), (1, 1)]),
        (8, 4, True, [(4, 2)]),
        (3, 8, True, [(3, 1)]),
        (1, 1, True, [(1, 1)]),
    ],
)
def test_chunk_sizes(count, batch_size, across, expected):
    assert chunk_sizes(count, batch_size, across) == expected


def test_chunks_are_bounded_and_never_leave_one_image_to_a_comparing_method():
    for count in range(1, 40):
        for batch_size in range(1, 10):
            for across in (False, True) if batch_size > 1 else (False,):
                sizes = [size for size, number in chunk_sizes(count, batch_size, across) for _ in range(number)]
                assert sum(sizes) == count
                assert max(sizes) <= (3 if across and batch_size == 2 else batch_size)
                if across and count > 1:
                    assert min(sizes) >= 2, (count, batch_size, sizes)
    with pytest.raises(ValueError, match="`--batch-size`: 1 .* give 2 or more"):
        chunk_sizes(3, 1, True, "--batch-size")


def test_batch_size_bounds_every_call_and_the_dry_run_counts_them(model, prompts, tmp_path, monkeypatch, capsys):
    assert run_generate(*args(prompts, tmp_path / "plan", model, "--dry-run")) == 0
    summary = capsys.readouterr().out.splitlines()[-1]
    calls = record_calls(monkeypatch)
    assert run_generate(*args(prompts, tmp_path / "out", model, "--no-grid")) == 0
    assert len(image_files(tmp_path / "out")) == 2 * 2 * 5
    plain = sorted(images for method, images in calls if method == "plain")
    compared = sorted(images for method, images in calls if method == "nt")
    assert plain == [2, 2, 2, 2, 2]  # 2 + 2 per prompt; the two prompts' lone seeds 4 share a call
    assert compared == [2, 2, 3, 3]  # NegToMe never compares a lone image: 2 + 3 per prompt
    assert f"20 images (20 to generate, 0 done) in {len(calls)} pipeline calls" in summary
    assert "(2 of 3 images, 7 of 2 images; --batch-size 2)" in summary


def test_a_run_killed_part_way_resumes_to_the_same_pixels(model, prompts, tmp_path):
    reference = tmp_path / "reference"
    assert run_generate(*args(prompts, reference, model)) == 0
    out = tmp_path / "out"
    log = tmp_path / "log.txt"
    with log.open("w") as stream:
        process = subprocess.Popen(
            subprocess_command(*args(prompts, out, model)), env=subprocess_env(), stdout=stream, stderr=stream
        )
        deadline = time.monotonic() + 180
        while not image_files(out):
            assert process.poll() is None, f"the run ended before any image appeared:\n{log.read_text()}"
            assert time.monotonic() < deadline, "no image appeared in time"
            time.sleep(0.002)
        process.send_signal(signal.SIGKILL)
        process.wait()
    assert 0 < len(image_files(out)) < 20, "the kill did not land part-way"
    assert run_generate(*args(prompts, out, model)) == 0
    assert_same_images(out, reference)
    assert not temporaries(out)


def test_seed_ranges_stay_lazy():
    seeds = values.seeds("0-100000000,200000000", "--seeds")
    assert len(seeds) == 100_000_002
    assert seeds[100_000_000] == 100_000_000 and seeds[-1] == 200_000_000
    assert 99_999_999 in seeds and 100_000_001 not in seeds
    assert seeds.ranges == (range(100_000_001), range(200_000_000, 200_000_001))
    with pytest.raises(ValueError, match="lists seed 7 more than once"):
        values.seeds("0-100000000,7", "--seeds")


def test_a_huge_seed_range_is_planned_at_once(model, prompts, tmp_path, monkeypatch, capsys):
    tracemalloc.start()
    started = time.perf_counter()
    try:
        assert run_generate(*args(prompts, tmp_path / "plan", model, "--seeds", "0-100000000", "--dry-run")) == 0
        elapsed = time.perf_counter() - started
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    lines = capsys.readouterr().out.splitlines()
    assert elapsed < 5, f"the dry run took {elapsed:.1f} s"
    assert peak < 50 * 2**20, f"the dry run peaked at {peak / 2**20:.0f} MiB"
    assert lines[-2] == "... and 399999904 more images"
    assert lines[-1].startswith("400000004 images (400000004 to generate, 0 done) in 200000001 pipeline calls")

    class FirstCall(Exception):
        pass

    def first_call(pipe, batch, **options):
        raise FirstCall(batch.jobs)

    monkeypatch.setattr(negguide.generate.runner, "generate_images", first_call)
    started = time.perf_counter()
    with pytest.raises(FirstCall) as raised:
        run_generate(*args(prompts, tmp_path / "out", model, "--seeds", "0-100000000"))
    assert time.perf_counter() - started < 5
    assert [(job.item, job.method, job.seed) for job in raised.value.args[0]] == [(0, "plain", 0), (0, "plain", 1)]


def test_txt_comment_lines_are_skipped(tmp_path):
    path = tmp_path / "p.txt"
    path.write_text("# shapes\na red circle\n\n   # an indented comment\na blue square # not a comment\n")
    items, problems = read_items(path)
    assert not problems
    assert [(item.index, item.source, item.prompt) for item in items] == [
        (0, f"{path}:2", "a red circle"),
        (1, f"{path}:5", "a blue square # not a comment"),
    ]


def test_the_help_example_names_a_file_the_command_writes():
    subparsers = next(action for action in build_parser()._actions if action.dest == "command")
    epilog = subparsers.choices["generate"].epilog
    example = re.search(r"--from-image out/(\S+)", epilog)[1]
    assert example == image_name(0, "negative_prompts", 0, "a red circle")


def test_a_prompt_longer_than_the_model_keeps_is_reported_once(tmp_path, capsys):
    long = "a red circle next to a blue square above a green triangle beside a yellow circle"
    tokens = len(CLIPTokenizer.from_pretrained(embedded_model_path() / "tokenizer")(long)["input_ids"])
    assert tokens > 16
    prompts = tmp_path / "p.txt"
    prompts.write_text(f"a red circle\n# a comment\n{long}\n")
    out = tmp_path / "out"
    methods = ["--method", "a=negative_prompts", "--method", "b=perpneg", "--negative-prompt", "a blue square"]
    assert run_generate("generate", str(prompts), "--out", str(out), "--steps", "1", "--seeds", "0,1",
                        "--device", "cpu", "--no-grid", *methods) == 0  # fmt: skip
    reported = [line for line in capsys.readouterr().err.splitlines() if "tokens" in line]
    assert reported == [
        f"negguide generate: prompt 1 ({prompts} line 3) is {tokens} tokens; the model keeps 16: the rest is cut."
    ]


NOISE = ("FutureWarning", "torch_dtype", "torchvision", "Loading pipeline components", "Loading weights")


def test_a_run_adds_no_library_noise(model, prompts, tmp_path):
    """The command prints none of the libraries' warnings, log lines or loading bars, not even the notices they
    print while they load (transformers' "requires torchvision ... falling back" lines); ``--verbose`` shows all."""
    imported = subprocess.run(
        [sys.executable, "-c", "import negguide.loading"],
        env=subprocess_env(),
        capture_output=True,
        text=True,
        check=True,
    ).stderr.splitlines()
    runs = {}
    for flag in ([], ["--verbose"]):
        command = subprocess_command(*args(prompts, tmp_path / f"out{flag}", model, "--seeds", "0", "--steps", "1"))
        result = subprocess.run([*command, *flag], env=subprocess_env(), capture_output=True, text=True, check=False)
        assert result.returncode == 0, result.stderr
        runs[bool(flag)] = result.stderr.splitlines()
    assert not [line for line in runs[False] if any(noise in line for noise in NOISE) or line in imported], runs[False]
    assert any("Loading pipeline components" in line for line in runs[True]), runs[True]
    assert set(imported) <= set(runs[True]), (imported, runs[True])


def test_nag_takes_the_items_negative_and_acts_once(model, prompts, tmp_path):
    out = tmp_path / "nag"
    command = ["generate", str(prompts), "--out", str(out), "--model", str(model), "--seeds", "0-1", "--steps", "2",
               "--negative-prompt", "blue triangle", "--device", "cpu", "--method", "nag", "--no-grid"]  # fmt: skip
    assert run_generate(*command) == 0
    assert len(image_files(out)) == 2 * 2
    manifest = (out / "manifest.jsonl").read_text()
    assert '"name": "nag"' in manifest and "blue triangle" in manifest
