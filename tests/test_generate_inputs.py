"""``negguide generate`` on bad input: exit code 2, a message naming the file, line or argument, and no
output folder; plus the inputs that must work (skipped lines, path characters in prompts, any registered
module)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pytest
from generate_helpers import image_files, manifest, run_generate, save_tiny_model
from PIL import Image

from negguide import functional as F
from negguide import register_guidance
from negguide.branches import COND, UNCOND, Branch
from negguide.generate import Defaults, Item, Method, expand, read_model
from negguide.loading import DEFAULT_GUIDANCE_SCALE, EMBEDDED_GUIDANCE_SCALE, embedded_model_path
from negguide.metadata import parse_infotext, read_png_metadata
from negguide.modules.base import Combiner


@register_guidance("test_scaled_cfg")
@dataclass(frozen=True)
class ScaledCFG(Combiner):
    """Classifier-free guidance at ``factor`` times the call's scale: a module the command has never seen."""

    factor: float = 1.0

    def __post_init__(self) -> None:
        if self.factor <= 0:
            raise ValueError(f"`factor` must be > 0, got {self.factor}.")

    def branches(self, call, step):
        return Branch(UNCOND, call.negative_prompts), Branch(COND, call.prompts)

    def combine(self, preds, call, step, guidance_scale):
        return F.cfg(preds[UNCOND], preds[COND], guidance_scale * self.factor)


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_model(tmp_path_factory.mktemp("model"))


def generate(prompts: Path, out: Path, model: Path, *extra: str) -> int:
    args = ["--model", str(model), "--steps", "2", "--size", "32x32", "--device", "cpu"]
    return run_generate("generate", str(prompts), "--out", str(out), *args, *extra)


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


@pytest.mark.parametrize(
    ("name", "content", "extra", "expected"),
    [
        ("missing.txt", None, [], "missing.txt does not exist"),
        ("empty.txt", "\n  \n", [], "empty.txt holds no prompts"),
        ("prompts.md", "a red circle\n", [], "is not a .txt, .csv or .jsonl file"),
        ("bad.csv", "prompt,seed\na red circle,1\na blue square,2,3\n", [], "bad.csv:3: 3 fields"),
        ("seed.csv", "prompt,seed\na red circle,-1\n", [], "seed.csv:2: `seed`: seed -1 is negative"),
        ("header.csv", "text\na red circle\n", [], "header.csv:1: the header row"),
        ("bad.jsonl", '{"prompt": "a red circle"}\n{"prompt": "a blue\n', [], "bad.jsonl:2: not valid JSON"),
        ("key.jsonl", '{"prompt": "a red circle", "sed": 1}\n', [], "key.jsonl:1: unknown field 'sed'"),
        ("list.jsonl", '["a red circle"]\n', [], "list.jsonl:1: each line must be a JSON object"),
        (
            "window.jsonl",
            '{"prompt": "a", "negatives": [{"text": "b", "start": 0.5, "stop": 0.2}]}\n',
            [],
            "window.jsonl:1",
        ),
        ("ok.txt", "a red circle\n", ["--method", "nosuch"], "`--method`: unknown guidance module 'nosuch'"),
        ("ok.txt", "a red circle\n", ["--set", "negative_prompts.bogus=1"], "has no setting bogus"),
        ("ok.txt", "a red circle\n", ["--set", "negtome.alpha=1"], "no method uses module 'negtome'"),
        ("ok.txt", "a red circle\n", ["--set", "negative_prompts.guidance_rescale=2"], "guidance_rescale"),
        ("ok.txt", "a red circle\n", ["--method", "test_scaled_cfg", "--set", "test_scaled_cfg.factor=0"], "factor"),
        ("ok.txt", "a red circle\n", ["--seeds=-1"], "`--seeds`: seed -1 is negative"),
        ("ok.txt", "a red circle\n", ["--seeds", "1,1"], "lists seed 1 more than once"),
        ("ok.txt", "a red circle\n", ["--size", "60x64"], "`--size` must be divisible by 8"),
        ("ok.txt", "a red circle\n", ["--steps", "0"], "`--steps` must be at least 1"),
        ("ok.txt", "a red circle\n", ["--batch-size", "x"], "`--batch-size` must be a whole number"),
        ("ok.txt", "a red circle\n", ["--memory-budget", "lots"], "`--memory-budget` must be 'auto', a number of"),
        ("ok.txt", "a red circle\n", ["--memory-budget", "0"], "`--memory-budget` must be a positive number"),
        ("ok.txt", "a red circle\n", ["--model", "no/such/folder"], "`--model`"),
    ],
)
def test_bad_input_stops_before_anything_is_written(tmp_path, model, capsys, name, content, extra, expected):
    prompts = tmp_path / name if content is None else write(tmp_path / name, content)
    out = tmp_path / "out"
    assert generate(prompts, out, model, *extra) == 2
    error = capsys.readouterr().err
    assert error.startswith("negguide generate: error: ")
    assert expected in error
    assert not out.exists()


def test_bad_config_file_is_named(tmp_path, model, capsys):
    config = write(tmp_path / "run.json", json.dumps({"methods": ["negative_prompts"], "sampler": "x"}))
    prompts = write(tmp_path / "p.txt", "a red circle\n")
    assert generate(prompts, tmp_path / "out", model, "--config", str(config)) == 2
    assert "run.json: unknown key 'sampler'" in capsys.readouterr().err
    write(tmp_path / "run.json", json.dumps({"methods": {"mine": [{"name": "negative_prompts", "rate": 1}]}}))
    assert generate(prompts, tmp_path / "out", model, "--config", str(config)) == 2
    assert "run.json: methods.mine" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("blocker", ["file", "parent-file"])
def test_an_output_folder_that_cannot_be_written(tmp_path, model, capsys, blocker):
    prompts = write(tmp_path / "p.txt", "a red circle\n")
    write(tmp_path / "taken", "a file, not a folder")
    out = tmp_path / "taken" if blocker == "file" else tmp_path / "taken" / "out"
    assert generate(prompts, out, model) == 2
    assert f"`--out`: cannot write to {out}" in capsys.readouterr().err


def test_every_bad_line_is_listed(tmp_path, model, capsys):
    prompts = write(tmp_path / "p.jsonl", '{"prompt": ""}\n{"prompt": "a red circle"}\n{"seed": 1}\n')
    assert generate(prompts, tmp_path / "out", model) == 2
    error = capsys.readouterr().err
    assert "2 bad prompt record(s); nothing was generated" in error
    assert "p.jsonl:1:" in error and "p.jsonl:3:" in error


def test_skip_bad_generates_the_good_lines(tmp_path, model, capsys):
    prompts = write(tmp_path / "p.csv", "prompt,seed\na red circle,3\na blue square,-2\n\na green triangle,\n")
    out = tmp_path / "out"
    assert generate(prompts, out, model, "--skip-bad") == 0
    assert "skipping " in capsys.readouterr().err
    assert image_files(out) == [
        "00000-negative-prompts-s3-a-red-circle.png",
        "00002-negative-prompts-s0-a-green-triangle.png",
    ]


def test_from_image_needs_negguide_metadata(tmp_path, capsys):
    Image.new("RGB", (8, 8)).save(tmp_path / "plain.png")
    assert run_generate("generate", "--from-image", str(tmp_path / "plain.png"), "--out", str(tmp_path / "o")) == 2
    assert "holds no usable negguide metadata" in capsys.readouterr().err
    assert run_generate("generate", "p.txt", "--from-image", "x.png", "--out", str(tmp_path / "o")) == 2
    assert "drop PROMPTS" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_existing_images_made_otherwise_are_not_taken_as_done(tmp_path, model, capsys):
    prompts = write(tmp_path / "p.txt", "a red circle\n")
    out = tmp_path / "out"
    assert generate(prompts, out, model) == 0
    assert generate(prompts, out, model, "--guidance-scale", "3") == 2
    assert "were made with other settings" in capsys.readouterr().err


def test_path_characters_in_prompts_stay_inside_the_output_folder(tmp_path, model):
    texts = ["../../escape", "/etc/passwd", "a\x00b", "..", "C:\\windows\\evil"]
    prompts = write(tmp_path / "p.jsonl", "".join(json.dumps({"prompt": text}) + "\n" for text in texts))
    out = tmp_path / "out"
    assert generate(prompts, out, model, "--no-grid") == 0
    assert sorted(path.relative_to(tmp_path).as_posix() for path in tmp_path.rglob("*") if path.is_file()) == sorted(
        ["p.jsonl", "out/manifest.jsonl", *(f"out/images/{name}" for name in image_files(out))]
    )
    assert image_files(out) == [
        "00000-negative-prompts-s0-escape.png",
        "00001-negative-prompts-s0-etc-passwd.png",
        "00002-negative-prompts-s0-a-b.png",
        "00003-negative-prompts-s0-prompt.png",
        "00004-negative-prompts-s0-c-windows-evil.png",
    ]
    for record, text in zip(manifest(out), texts):
        parameters, config = read_png_metadata(out / record["file"])
        assert parse_infotext(parameters)["Prompt"] == config["job"]["prompt"] == text


def test_any_registered_module_runs_with_its_settings(tmp_path, model):
    prompts = write(
        tmp_path / "p.jsonl",
        json.dumps({"prompt": "a red circle", "negatives": [{"text": "a blue square", "start": 0.5}]}) + "\n",
    )
    out = tmp_path / "out"
    args = ["--method", "mine=test_scaled_cfg", "--method", "negative_prompts", "--set", "test_scaled_cfg.factor=0.5"]
    assert generate(prompts, out, model, *args) == 2  # test_scaled_cfg is a combiner without `negatives`
    write(prompts, json.dumps({"prompt": "a red circle", "negative_prompt": "a blue square"}) + "\n")
    assert generate(prompts, out, model, *args) == 0
    records = {record["method"]: record for record in manifest(out)}
    assert records["mine"]["guidance"] == [{"name": "test_scaled_cfg", "factor": 0.5}]
    parsed = parse_infotext(read_png_metadata(out / records["mine"]["file"])[0])
    assert parsed["Negative guidance"] == "test_scaled_cfg"
    assert parsed["test_scaled_cfg factor"] == "0.5"


def test_yaml_config_and_flags(tmp_path, model, capsys):
    config = write(
        tmp_path / "run.yaml", "methods:\n  standard: [negative_prompts]\n  rescaled: negative_prompts\nseeds: [4, 5]\n"
    )
    prompts = write(tmp_path / "p.txt", "a red circle\n")
    assert generate(prompts, tmp_path / "out", model, "--config", str(config), "--seeds", "7", "--dry-run") == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[:2] == [
        "todo  images/00000-standard-s7-a-red-circle.png  [standard, seed 7, 32x32, 2 steps]",
        "todo  images/00000-rescaled-s7-a-red-circle.png  [rescaled, seed 7, 32x32, 2 steps]",
    ]


def test_guidance_scale_defaults_to_the_models(model):
    embedded, other = read_model(None), read_model(str(model))
    assert embedded.guidance_scale == EMBEDDED_GUIDANCE_SCALE == read_model("shapes-world").guidance_scale
    assert read_model(str(embedded_model_path())).guidance_scale == EMBEDDED_GUIDANCE_SCALE
    assert other.guidance_scale == DEFAULT_GUIDANCE_SCALE != EMBEDDED_GUIDANCE_SCALE
    items = [Item(0, "p:1", "a red circle"), Item(1, "p:2", "a red circle", settings={"guidance_scale": 0.0})]
    for info in (embedded, other):
        groups, problems = expand(items, [Method("plain", ())], Defaults(), info)
        assert not problems
        assert [group[0].guidance_scale for group in groups] == [info.guidance_scale, 0.0]
        groups, _ = expand(items[:1], [Method("plain", ())], Defaults(guidance_scale=3.0), info)
        assert groups[0][0].guidance_scale == 3.0
