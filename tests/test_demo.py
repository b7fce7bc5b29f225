"""The web demo without a browser: the form read into a comparison, the labelled images of every method, the
examples, the settings generated from the modules' fields, and readable errors for bad input."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import PIL.Image
import pytest
from demo_helpers import FAST, solid_png, tiny_pipeline
from generate_helpers import pixels, save_tiny_model

from negguide.cli import build_parser, main
from negguide.demo.changes import changed_settings
from negguide.demo.comparison import MODULES, Comparison, compare, method_choices
from negguide.demo.examples import example_note, examples
from negguide.demo.form import form_defaults, read_form
from negguide.demo.model import DemoModel
from negguide.demo.settings import module_fields, read_settings
from negguide.loading import DEFAULT_GUIDANCE_SCALE, EMBEDDED_GUIDANCE_SCALE, embedded_model_path
from negguide.metadata import parse_infotext, read_png_metadata
from negguide.modules import Negative, PerpNeg
from negguide.views import View

FIELDS = [field for name in MODULES for field in module_fields(name)]
TITLES = ["plain prompt", "standard negative", "Perp-Neg", "NegToMe", "NAG", "Perp-Neg + NegToMe"]


@pytest.fixture(scope="module")
def model() -> DemoModel:
    return DemoModel.from_pipeline(tiny_pipeline())


def values(model: DemoModel, **changes) -> dict:
    """The form's initial values with ``changes`` (``perpneg__view`` for ``perpneg.view``) and few steps."""
    return {**form_defaults(model.info, FIELDS), **FAST, **{k.replace("__", "."): v for k, v in changes.items()}}


def run(model: DemoModel, folder: Path, **changes) -> list:
    return list(compare(model, read_form(values(model, **changes), FIELDS), folder))


def test_every_method_gives_labelled_images_on_the_same_seeds(model: DemoModel, tmp_path: Path) -> None:
    columns = run(model, tmp_path, methods=method_choices(), images=2, seed=7)
    assert [column.title for column in columns] == TITLES
    for column in columns:
        assert column.seeds == (7, 8)
        assert [PIL.Image.open(path).size for path in column.files] == [(64, 64)] * 2
    plain, standard = (pixels(column.files[0]) for column in columns[:2])
    assert not np.array_equal(plain, standard)


def test_images_carry_the_batch_commands_metadata(model: DemoModel, tmp_path: Path) -> None:
    [_, _, perpneg] = run(
        model, tmp_path, prompt="a red circle", negatives=[["red square", 1, 0, 1]], seed=3, methods=["perpneg"]
    )
    parameters, config = read_png_metadata(perpneg.files[0])
    parsed = parse_infotext(parameters)
    assert parsed["Prompt"] == "a red circle"
    assert parsed["Negative prompt"] == "red square"
    assert (parsed["Seed"], parsed["Steps"], parsed["Negative guidance"]) == ("3", "2", "perpneg")
    assert config["job"]["method"] == "perpneg"
    assert config["job"]["guidance"] == [
        {"name": "perpneg", "negatives": [{"text": "red square", "weight": 1.0, "start": 0.0, "stop": 1.0}]}
    ]


def test_a_demo_image_regenerates_exactly_from_its_file(tmp_path: Path) -> None:
    model = DemoModel.from_model(str(save_tiny_model(tmp_path / "model")), device="cpu")
    assert not model.loaded
    [_, standard] = run(model, tmp_path / "demo", methods=[], seed=5)
    assert model.loaded
    assert (
        main(["generate", "--from-image", str(standard.files[0]), "--out", str(tmp_path / "again"), "--device", "cpu"])
        == 0
    )
    [again] = (tmp_path / "again" / "images").glob("*.png")
    np.testing.assert_array_equal(pixels(again), pixels(standard.files[0]))


@pytest.mark.parametrize("example", examples(), ids=lambda example: example.title)
def test_every_example_runs(model: DemoModel, tmp_path: Path, example) -> None:
    columns = run(model, tmp_path, **example.values)
    expected = values(model, **example.values)
    assert len(columns) == 2 + len(expected["methods"])
    assert all(len(column.files) == expected["images"] for column in columns)


def test_the_first_example_is_the_initial_form_and_every_example_sets_known_controls(model: DemoModel) -> None:
    defaults = values(model)
    first = examples()[0]
    assert all(defaults[key] == value for key, value in first.values.items())
    assert example_note(defaults) == first.note != ""
    overlap = next(example for example in examples() if example.values["prompt"] == "a red circle")
    assert "Why the standard negative fails here" in overlap.note
    for example in examples():
        assert set(example.values) <= set(defaults), example.title


def test_settings_are_the_modules_dataclass_fields() -> None:
    keys = [field.key for field in module_fields("perpneg", advanced=True)]
    scalar = [f"perpneg.{f.name}" for f in dataclasses.fields(PerpNeg) if f.name not in ("negatives", "view")]
    view = [f"perpneg.view.{f.name}" for f in dataclasses.fields(View)]
    assert sorted(keys) == sorted([*scalar, "perpneg.view", *view])
    weight_mode = next(field for field in module_fields("perpneg") if field.key == "perpneg.weight_mode")
    assert weight_mode.choices == ("s*w", "w") and "guidance scale" in weight_mode.info
    assert "perpneg.eps" not in [field.key for field in module_fields("perpneg")]


def test_settings_keep_only_changes_and_nest_the_view() -> None:
    fields = module_fields("perpneg")
    assert read_settings(fields, {}) == {"perpneg": {}}
    changed = read_settings(fields, {"perpneg.view": True, "perpneg.view.azimuth": 180.0, "perpneg.patch_size": 2.0})
    assert changed["perpneg"]["patch_size"] == 2 and isinstance(changed["perpneg"]["patch_size"], int)
    assert PerpNeg(["blue"], **changed["perpneg"]).view == View(azimuth=180.0)


def test_perpneg_view_comes_from_the_azimuth_control(model: DemoModel, tmp_path: Path) -> None:
    comparison = read_form(
        values(model, methods=["perpneg"], perpneg__view=True, **{"perpneg.view.azimuth": 90.0}), FIELDS
    )
    batch = comparison.columns(model.info)[-1].batch
    assert batch.jobs[0].guidance[0]["view"]["azimuth"] == 90.0


def test_reference_and_mask_reach_negtome_at_the_image_size(model: DemoModel, tmp_path: Path) -> None:
    reference = solid_png(tmp_path / "reference.png", (128, 96))
    mask = tmp_path / "mask.png"
    PIL.Image.new("L", (128, 96), 200).save(mask)
    comparison = read_form(
        values(model, methods=["negtome"], negtome__mode="reference", reference=reference, mask=mask), FIELDS
    )
    batch = comparison.columns(model.info)[-1].batch
    negtome = batch.guidance()[-1]
    assert negtome.mode == "reference"
    assert negtome.reference_images[0].size == (64, 64) and bool(negtome.reference_masks[0].all())


BAD_INPUT = {
    "empty prompt": ({"prompt": "  "}, "`Prompt` is empty"),
    "NaN steps": ({"steps": float("nan")}, "`Steps` must be a finite number"),
    "infinite scale": ({"guidance_scale": float("inf")}, "`Guidance scale` must be a finite number"),
    "too many steps": ({"steps": 1000}, "`Steps` must lie between 1 and 100"),
    "fractional images": ({"images": 1.5}, "`Images per method` must be a whole number"),
    "negative seed": ({"seed": -1}, "`Seed` must lie between"),
    "odd width": ({"width": 100}, "`Width` must be a multiple of 8"),
    "huge height": ({"height": 8192}, "`Height` must lie between 64 and 1024"),
    "NaN weight": (
        {"negatives": [["blue", float("nan"), 0, 1]]},
        r"`Negatives`, row 1: `Negative.weight` must be a finite",
    ),
    "window backwards": ({"negatives": [["blue", 1, 0.8, 0.2]]}, r"`Negatives`, row 1: `Negative.start` \(0.8\)"),
    "weight as words": ({"negatives": [["blue", "heavy", 0, 1]]}, r"row 1: `weight` must be a number, got 'heavy'"),
    "negative scale below 0": (
        {"perpneg.negative_scale": -1.0},
        "`Perp-Neg settings`: perpneg: `negative_scale` must be >= 0",
    ),
    "NaN azimuth": ({"perpneg.view": True, "perpneg.view.azimuth": float("nan")}, "`View.azimuth` must be a finite"),
    "unknown method": ({"methods": ["sag"]}, "`Methods`: unknown 'sag'"),
    "steps 0 is not clamped": ({"steps": 0}, "`Steps` must lie between 1 and 100, got 0"),
    "steps 100000 is not clamped": ({"steps": 100000}, "`Steps` must lie between 1 and 100, got 100000"),
    "true CFG below 1": ({"true_cfg_scale": 0.5}, "`True CFG scale` must lie between 1.0 and 20.0"),
    "NAG with a windowed negative": (
        {"methods": ["nag"], "negatives": [["blue", 1, 0.2, 1]]},
        "`Negatives`: NAG takes one negative of weight 1 acting over the whole run",
    ),
    "NegToMe batch mode with one image": ({"methods": ["negtome"]}, "`Images per method`: NegToMe in batch mode"),
}


@pytest.mark.parametrize("changes, message", BAD_INPUT.values(), ids=BAD_INPUT.keys())
def test_bad_input_is_a_readable_error_naming_the_control(model: DemoModel, tmp_path: Path, changes, message) -> None:
    with pytest.raises(ValueError, match=message):
        run(model, tmp_path, **changes)
    assert not (tmp_path / "images").exists() or not any((tmp_path / "images").iterdir())


def test_uploads_that_are_not_images_or_too_large_are_refused(model: DemoModel, tmp_path: Path) -> None:
    text = tmp_path / "notes.png"
    text.write_text("not an image")
    with pytest.raises(ValueError, match="`Reference image`: notes.png is not an image that can be read") as error:
        run(model, tmp_path, methods=["negtome"], negtome__mode="reference", reference=text)
    assert str(tmp_path) not in str(error.value)
    huge = tmp_path / "huge.png"
    PIL.Image.new("L", (5000, 4000)).save(huge)
    with pytest.raises(ValueError, match=r"`Reference image` is 5000x4000 pixels, more than the 16.8 megapixels"):
        run(model, tmp_path, methods=["negtome"], negtome__mode="reference", reference=huge)
    with pytest.raises(ValueError, match="`Mask` needs a `Reference image`"):
        run(model, tmp_path, mask=solid_png(tmp_path / "mask.png", (64, 64)))


def test_the_form_starts_at_the_models_guidance_scale(model: DemoModel) -> None:
    embedded = DemoModel.from_model(None)
    assert form_defaults(embedded.info, FIELDS)["guidance_scale"] == EMBEDDED_GUIDANCE_SCALE
    assert form_defaults(model.info, FIELDS)["guidance_scale"] == DEFAULT_GUIDANCE_SCALE
    assert not embedded.loaded
    # the model's name decides, as for adaptive removal: the embedded model's name or its folder
    other = DemoModel.from_pipeline(tiny_pipeline(), name="org/another-model").info
    by_folder = DemoModel.from_pipeline(tiny_pipeline(), name=str(embedded_model_path())).info
    assert (other.embedded, other.guidance_scale) == (False, DEFAULT_GUIDANCE_SCALE)
    assert (by_folder.embedded, by_folder.guidance_scale) == (True, EMBEDDED_GUIDANCE_SCALE)


def test_a_random_seed_replaces_the_seed_field(model: DemoModel) -> None:
    seeds = {read_form(values(model, random_seed=True, seed=None), FIELDS).seed for _ in range(3)}
    assert len(seeds) > 1 and all(0 <= seed < 2**32 for seed in seeds)


def test_comparison_checks_direct_construction() -> None:
    with pytest.raises(ValueError, match="`Prompt` is empty"):
        Comparison("", negatives=(Negative("blue"),))
    assert Comparison("a red circle", steps=3.0).steps == 3


def test_the_demo_command_serves_this_machine_only_by_default() -> None:
    args = build_parser().parse_args(["demo", "--port", "9000"])
    assert (args.host, args.port, args.share, args.model) == ("127.0.0.1", 9000, False, None)


def test_nag_on_a_distilled_model_is_one_evaluation_and_the_standard_negative_needs_true_cfg(model) -> None:
    distilled = DemoModel.from_pipeline(tiny_pipeline(distilled=True), name="tiny-distilled")
    assert distilled.distilled and not model.distilled
    comparison = read_form(values(model, methods=["perpneg", "nag"], true_cfg_scale=4.0), FIELDS)
    rows = comparison.columns(distilled.info, distilled=True)
    assert [(row.title, row.true_cfg_scale) for row in rows] == [
        ("plain prompt", 1.0),
        ("standard negative", 4.0),
        ("Perp-Neg", 4.0),
        ("NAG", 1.0),
    ]
    assert [row.true_cfg_scale for row in comparison.columns(model.info)] == [1.0] * 4
    nag = rows[-1].batch
    assert [module["name"] for module in nag.jobs[0].guidance] == ["nag"]
    assert nag.jobs[0].negative_prompt == "blue triangle"
    only_nag = read_form(values(model, methods=["nag"], true_cfg_scale=1.0), FIELDS)
    with pytest.raises(ValueError, match="`True CFG scale` is 1: .* standard negative act through true"):
        only_nag.columns(distilled.info, distilled=True)


def test_texts_longer_than_the_model_reads_are_counted(model: DemoModel) -> None:
    short = model.tokens("a red square")
    assert (short.total, short.truncated) == (short.kept, False)
    long = model.tokens("a red square " * 2000)
    assert long.truncated and long.total >= 6000 and long.kept < long.total
    assert long.kept_text.split()[:3] == ["a", "red", "square"]


def test_the_settings_a_request_changed_are_listed() -> None:
    defaults = {field.key: field.default for field in FIELDS}
    changed = {**defaults, "negtome.alpha": 3.0, "negtome.anchor": "nearest", "reference": "/tmp/x/blue-triangle.png"}
    assert changed_settings(changed, defaults, FIELDS) == [
        "NegToMe alpha: 3 (initially 0.9)",
        "NegToMe anchor: nearest (initially first)",
        "NegToMe reference image: blue-triangle.png",
    ]
    assert changed_settings(defaults, defaults, FIELDS) == []


def test_page_help_texts_are_plain_words() -> None:
    infos = {field.key: field.info for field in FIELDS}
    assert "timesteps" not in infos["negtome.stop"] and "0 is the first step" in infos["negtome.stop"]
    assert "negtome.layers" not in infos and "nag.layers" not in infos
    assert all(info for info in infos.values())


def test_the_demo_takes_transformer_pipelines_by_their_family():
    from diffusers import FluxPipeline, StableDiffusion3Pipeline

    from negguide.pipelines import FluxNegGuidePipeline, StableDiffusion3NegGuidePipeline
    from negguide.testing import flux_components, sd3_components

    flux = DemoModel.from_pipeline(FluxNegGuidePipeline.from_pipe(FluxPipeline(**flux_components())))
    sd3 = DemoModel.from_pipeline(StableDiffusion3NegGuidePipeline.from_pipe(StableDiffusion3Pipeline(**sd3_components())))
    assert flux.distilled and not sd3.distilled
    assert flux.info.width > 0 and sd3.info.height > 0
