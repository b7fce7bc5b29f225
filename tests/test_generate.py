"""``negguide generate`` end to end on tiny components: outputs, metadata, resume after a kill, regeneration
from an image, and two processes under ``accelerate launch``."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import PIL.Image
import pytest
from generate_helpers import (
    NEGATIVE,
    PROMPTS,
    SEEDS,
    STEPS,
    assert_same_images,
    generate_args,
    image_files,
    manifest,
    pixels,
    run_generate,
    save_tiny_model,
    subprocess_command,
    subprocess_env,
    temporaries,
    write_inputs,
)

import negguide.generate.command
import negguide.generate.runner
from negguide.generate import Batch, Job, generate_images, load_model, read_model
from negguide.metadata import parse_infotext, read_png_metadata

IMAGES = len(PROMPTS) * 2 * len(SEEDS)


@dataclass(frozen=True)
class Setup:
    model: Path
    prompts: Path
    reference: Path

    def args(self, out: Path, *extra: str) -> list[str]:
        return generate_args(self.prompts, out, self.model, *extra)


@pytest.fixture(scope="session")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Setup:
    """A tiny model, the run's inputs, and one uninterrupted run in this process as the reference."""
    root = tmp_path_factory.mktemp("generate")
    model = save_tiny_model(root / "model")
    prompts, _ = write_inputs(root / "inputs")
    made = Setup(model, prompts, root / "reference")
    assert run_generate(*made.args(made.reference)) == 0
    return made


def test_makes_every_image_once_with_a_manifest_and_grids(setup):
    out = setup.reference
    names = image_files(out)
    assert len(names) == IMAGES
    for name in names:
        with PIL.Image.open(out / "images" / name) as image:
            image.load()
            assert image.size == (64, 64)
    records = manifest(out)
    assert len(records) == IMAGES
    assert sorted(Path(record["file"]).name for record in records) == names
    grids = sorted((out / "grids").glob("*.png"))
    assert len(grids) == len(PROMPTS)
    for grid in grids:
        with PIL.Image.open(grid) as image:
            assert image.size == (64 * len(SEEDS), 64 * 2)  # a column per seed, a row per method
    assert not temporaries(out)


def test_parameters_chunk_parses_back(setup):
    for record in manifest(setup.reference):
        parameters, config = read_png_metadata(setup.reference / record["file"])
        parsed = parse_infotext(parameters)
        assert parsed["Prompt"] == record["prompt"]
        assert parsed["Negative prompt"] == NEGATIVE
        assert int(parsed["Seed"]) == record["seed"]
        assert int(parsed["Steps"]) == STEPS
        assert float(parsed["CFG scale"]) == 7.5
        assert parsed["Size"] == "64x64"
        assert config["job"] == record


def test_second_run_generates_nothing(setup, monkeypatch, capsys):
    out = setup.reference
    before = {path: path.stat().st_mtime_ns for path in out.rglob("*.png")}

    def fail(*args, **kwargs):
        raise AssertionError("a finished run generated again")

    monkeypatch.setattr(negguide.generate.runner, "generate_images", fail)
    assert run_generate(*setup.args(out)) == 0
    assert "0 images generated" in capsys.readouterr().out
    assert {path: path.stat().st_mtime_ns for path in out.rglob("*.png")} == before
    assert len(manifest(out)) == IMAGES


def test_dry_run_prints_the_plan_and_writes_nothing(setup, tmp_path, capsys):
    assert run_generate(*setup.args(setup.reference, "--dry-run")) == 0
    assert f"{IMAGES} images (0 to generate, {IMAGES} done)" in capsys.readouterr().out
    assert run_generate(*setup.args(tmp_path / "out", "--dry-run")) == 0
    lines = capsys.readouterr().out.splitlines()
    assert sum(line.startswith("todo  images/") for line in lines) == IMAGES
    assert f"{IMAGES} images ({IMAGES} to generate, 0 done) in 4 pipeline calls" in lines[-1]
    assert not (tmp_path / "out").exists()


def test_from_image_reproduces_the_pixels(setup, tmp_path):
    source = next(
        setup.reference / record["file"]
        for record in manifest(setup.reference)
        if read_png_metadata(setup.reference / record["file"])[1]["batch"]["index"] == 3
    )
    assert run_generate("generate", "--from-image", str(source), "--out", str(tmp_path), "--device", "cpu") == 0
    copy = tmp_path / "images" / source.name
    assert np.array_equal(pixels(copy), pixels(source))
    assert read_png_metadata(copy) == read_png_metadata(source)


def test_an_image_does_not_depend_on_its_batch(setup):
    """Alone in its call, an image matches the one made among three others, up to float rounding."""
    record = next(r for r in manifest(setup.reference) if r["item"] == 1 and r["seed"] == 1 and r["method"] == "plain")
    job = Job.from_record(record)
    pipe = load_model(read_model(str(setup.model)), "cpu")
    alone = np.asarray(generate_images(pipe, Batch(((job,),)))[0], dtype=int)
    assert np.abs(alone - pixels(setup.reference / record["file"]).astype(int)).max() <= 1


def test_killed_run_resumes_to_the_same_images(setup, tmp_path):
    out = tmp_path / "out"
    log = tmp_path / "log.txt"
    with log.open("w") as stream:
        process = subprocess.Popen(
            subprocess_command(*setup.args(out)), env=subprocess_env(), stdout=stream, stderr=subprocess.STDOUT
        )
        deadline = time.monotonic() + 180
        while not image_files(out):
            assert process.poll() is None, f"the run ended before any image appeared:\n{log.read_text()}"
            assert time.monotonic() < deadline, "no image appeared in time"
            time.sleep(0.002)
        process.send_signal(signal.SIGKILL)
        process.wait()
    assert process.returncode == -signal.SIGKILL
    assert 0 < len(image_files(out)) < IMAGES, "the kill did not land part-way"

    assert run_generate(*setup.args(out)) == 0
    assert_same_images(out, setup.reference)
    assert not temporaries(out)
    assert sorted(record["file"] for record in manifest(out)) == sorted(
        record["file"] for record in manifest(setup.reference)
    )


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.mark.multiprocess
def test_two_processes_make_the_same_images_as_one(setup, tmp_path):
    out = tmp_path / "out"
    launch = [
        sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
        "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
        "--main_process_port", str(_free_port()), "-m", "negguide", *setup.args(out),
    ]  # fmt: skip
    result = subprocess.run(launch, check=False, env=subprocess_env(), capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"{IMAGES} images generated by 2 process(es)" in result.stdout
    assert_same_images(out, setup.reference)
    files = [record["file"] for record in manifest(out)]
    assert len(files) == len(set(files)) == IMAGES
    assert not list(out.glob("manifest.part-*"))
    assert not temporaries(out)


def test_the_memory_budget_reaches_every_call(setup, tmp_path, capsys):
    """A budget too small for one row of the network stops the run with the pipelines' message."""
    assert run_generate(*setup.args(tmp_path / "out", "--memory-budget", "1KiB")) == 2
    assert "`memory_budget` is 1.0 KiB, but one row of this network's batch needs about" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("given", "device", "expected"),
    [(None, "cuda:1", "auto"), (None, "cpu", None), ("none", "cuda", None), ("6GB", "cpu", "6GB"), (4096, "cuda", 4096)],
)
def test_the_memory_budget_is_auto_on_cuda_unless_given(given, device, expected):
    assert negguide.generate.command._memory_budget(given, device) == expected
