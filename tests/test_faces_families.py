"""``negguide generate``, ``analyze`` and ``remove`` on SD3 and Flux folders saved from tiny randomly initialised
components: the family comes from ``model_index.json``, Flux's negatives from ``--true-cfg-scale``."""

from __future__ import annotations

import json
from pathlib import Path

import PIL.Image
import pytest
from diffusers import FluxPipeline, StableDiffusion3Pipeline

from negguide.cli import main
from negguide.generate.model import read_model
from negguide.testing import flux_components, sd3_components

FAMILIES = {"sd3": (StableDiffusion3Pipeline, sd3_components, []), "flux": (FluxPipeline, flux_components, [])}
TRUE_CFG = {"sd3": [], "flux": ["--true-cfg-scale", "3"]}
METHODS = {
    "standard": ["negative_prompts"],
    "perpneg": ["perpneg"],
    "negtome": ["negative_prompts", {"name": "negtome", "threshold": -1.0, "stop": 1.0}],
}
COMMON = ["--steps", "2", "--device", "cpu"]


def never_seen(image: PIL.Image.Image, obj: str) -> bool:
    """A detector for ``negguide remove``: the object is never in the image."""
    return False


@pytest.fixture(scope="module", params=list(FAMILIES))
def folder(request, tmp_path_factory) -> tuple[str, Path]:
    pipe_class, components, _ = FAMILIES[request.param]
    path = tmp_path_factory.mktemp(request.param) / "model"
    pipe_class(**components()).save_pretrained(path)
    return request.param, path


def test_the_model_is_read_through_its_family(folder):
    family, path = folder
    info = read_model(str(path))
    assert info.family == family
    assert info.guidance_scale == {"sd3": 7.0, "flux": 3.5}[family]
    assert info.true_cfg is (family == "flux")


def test_generate_makes_images_with_every_method(folder, tmp_path):
    family, path = folder
    prompts, config = tmp_path / "prompts.txt", tmp_path / "methods.json"
    prompts.write_text("a red circle\n")
    config.write_text(json.dumps({"methods": METHODS, "negative_prompt": "blurry"}))
    out = tmp_path / "out"
    args = ["generate", str(prompts), "--out", str(out), "--model", str(path), "--config", str(config)]
    assert main([*args, "--size", "16x16", "--seeds", "0,1", *COMMON, *TRUE_CFG[family]]) == 0
    images = sorted((out / "images").glob("*.png"))
    assert len(images) == 6
    assert {PIL.Image.open(image).size for image in images} == {(16, 16)}


def test_flux_without_true_cfg_scale_is_told_how_to_ask_for_a_negative(tmp_path, capsys):
    path = tmp_path / "flux"
    FluxPipeline(**flux_components()).save_pretrained(path)
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a red circle\n")
    assert main(["generate", str(prompts), "--out", str(tmp_path / "out"), "--model", str(path), *COMMON]) == 2
    assert "give --true-cfg-scale > 1" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_analyze_measures_the_attention_mass_of_a_transformer(folder, tmp_path):
    family, path = folder
    out = tmp_path / "analysis"
    args = ["analyze", "--prompt", "a red circle", "--negative", "blue square", "--out", str(out)]
    assert main([*args, "--model", str(path), *COMMON, *TRUE_CFG[family]]) == 0
    rows = (out / "analysis.csv").read_text().splitlines()
    header = rows[0].split(",")
    assert len(rows) == 3 and "attention_mass" in header
    masses = [float(row.split(",")[header.index("attention_mass")]) for row in rows[1:]]
    assert all(0 < mass < 1 for mass in masses)


def test_remove_runs_with_a_user_detector(folder, tmp_path):
    family, path = folder
    out = tmp_path / "removal"
    args = ["remove", "--prompt", "a red circle", "--object", "blue square", "--out", str(out)]
    args += ["--detector", "test_faces_families:never_seen", "--model", str(path), *COMMON, *TRUE_CFG[family]]
    assert main(args) == 0
    assert (out / "plain.png").is_file() and (out / "removed.png").is_file()
