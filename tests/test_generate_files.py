"""The pieces under ``negguide generate``: PNG infotext, atomic writes, the manifest, file names and values."""

from __future__ import annotations

import json

import pytest
from PIL import Image

from negguide.atomic import remove_stale_temporaries, write_atomic
from negguide.generate import values
from negguide.generate.manifest import ManifestWriter, merge_manifest
from negguide.generate.names import image_name, slug
from negguide.metadata import infotext, is_complete_png, parse_infotext, read_png_metadata, save_png


@pytest.mark.parametrize(
    ("prompt", "negative"),
    [
        ("a red circle", "a blue square"),
        ("a red circle, big: round", None),
        ("two lines\nof prompt", "a negative\nover two lines"),
        ("Steps: 1, Seed: 2, Size: 3", ""),
    ],
)
def test_infotext_round_trip(prompt, negative):
    params = {
        "Steps": 20,
        "Sampler": "DPMSolverMultistepScheduler",
        "CFG scale": 7.5,
        "Seed": 2**63,
        "Size": "64x64",
        "Model": "shapes-world",
        "negative_prompts negatives": [{"text": "blue, square", "start": 0.2}],
        "Note": '"quoted", with: marks',
    }
    text = infotext(prompt, negative, params)
    assert ("Negative prompt:" in text) == bool(negative)
    parsed = parse_infotext(text)
    assert parsed["Prompt"] == prompt
    assert parsed["Negative prompt"] == (negative or "")
    assert parsed["Steps"] == "20" and parsed["CFG scale"] == "7.5" and parsed["Seed"] == str(2**63)
    assert json.loads(parsed["negative_prompts negatives"]) == params["negative_prompts negatives"]
    assert parsed["Note"] == params["Note"]


def test_infotext_reads_automatic1111_text():
    text = 'a cat\nNegative prompt: dog\nSteps: 30, Sampler: Euler a, CFG scale: 7, Seed: 5, Lora hashes: "a: 1, b: 2"'
    assert parse_infotext(text) == {
        "Prompt": "a cat",
        "Negative prompt": "dog",
        "Steps": "30",
        "Sampler": "Euler a",
        "CFG scale": "7",
        "Seed": "5",
        "Lora hashes": "a: 1, b: 2",
    }


def test_infotext_rejects_keys_that_would_not_parse():
    with pytest.raises(ValueError, match="key"):
        infotext("a", None, {"Bad: key": 1})


def test_save_png_keeps_both_chunks_and_is_complete(tmp_path):
    path = save_png(Image.new("RGB", (8, 8), "red"), tmp_path / "a.png", "a\nSteps: 1, Seed: 2, Size: 8x8", {"x": [1]})
    assert read_png_metadata(path) == ("a\nSteps: 1, Seed: 2, Size: 8x8", {"x": [1]})
    assert is_complete_png(path)
    path.write_bytes(path.read_bytes()[:-5])
    assert not is_complete_png(path)
    assert not is_complete_png(tmp_path / "missing.png")


def test_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    target = write_atomic(tmp_path / "f.bin", lambda file: file.write(b"old"))

    def fail(file):
        file.write(b"half")
        raise RuntimeError("interrupted")

    with pytest.raises(RuntimeError):
        write_atomic(target, fail)
    assert target.read_bytes() == b"old"
    assert sorted(path.name for path in tmp_path.iterdir()) == ["f.bin"]


def test_stale_temporaries_are_removed(tmp_path):
    (tmp_path / ".negguide-abc.tmp").write_bytes(b"partial")
    (tmp_path / "keep.png").write_bytes(b"")
    assert [path.name for path in remove_stale_temporaries(tmp_path)] == [".negguide-abc.tmp"]
    assert [path.name for path in tmp_path.iterdir()] == ["keep.png"]


def test_manifest_cuts_a_torn_line_and_merges_parts(tmp_path):
    for name in ("a.png", "b.png", "c.png"):
        (tmp_path / name).write_bytes(b"")
    (tmp_path / "manifest.jsonl").write_text('{"file": "a.png", "n": 1}\n{"file": "b.pn')
    ManifestWriter(tmp_path / "manifest.jsonl").append({"file": "b.png", "n": 2})
    lines = (tmp_path / "manifest.jsonl").read_text().splitlines()
    assert [json.loads(line)["file"] for line in lines] == ["a.png", "b.png"]

    ManifestWriter(tmp_path / "manifest.part-1.jsonl").append({"file": "c.png", "n": 3})
    (tmp_path / "manifest.part-0.jsonl").write_text('{"file": "gone.png"}\n{"file": "c.png", "n": 3}\n{"tor')
    assert merge_manifest(tmp_path, [{"file": "b.png", "n": 2}]) == 3
    merged = [json.loads(line) for line in (tmp_path / "manifest.jsonl").read_text().splitlines()]
    assert [record["file"] for record in merged] == ["b.png", "a.png", "c.png"]
    assert not list(tmp_path.glob("manifest.part-*"))


@pytest.mark.parametrize(
    ("text", "expected"),
    [("../../etc/passwd", "etc-passwd"), ("a\x00b/c", "a-b-c"), ("Ünïcode café", "unicode-cafe"), ("..", "")],
)
def test_slug_keeps_only_safe_characters(text, expected):
    assert slug(text) == expected


def test_image_names_are_deterministic():
    assert image_name(3, "perp=neg", 7, "A red circle!") == "images/00003-perp-neg-s7-a-red-circle.png"
    assert image_name(3, "x", 0, "/") == "images/00003-x-s0-prompt.png"


def test_seeds_text():
    assert values.seeds("0-2,7", "s") == (0, 1, 2, 7)
    assert values.seeds([4, "5"], "s") == (4, 5)
    with pytest.raises(ValueError, match="backwards"):
        values.seeds("3-1", "s")
    with pytest.raises(ValueError, match="2\\*\\*64"):
        values.seed(2**64, "s")
    with pytest.raises(TypeError, match="whole number"):
        values.seed(1.5, "s")
