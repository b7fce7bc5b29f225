"""The per-step analysis of a negative: what it records, the CSV and plot, the attention hooks, bad input."""

from __future__ import annotations

import csv
import math
import re

import numpy as np
import pytest
import torch
from conftest import generators
from generate_helpers import save_tiny_model

from negguide import analyze_negative, functional
from negguide.analysis import (
    AnalysisResult,
    AttentionMass,
    MassRecord,
    NegativeProbe,
    ProbeRecord,
    attention_probabilities,
    cross_attention_layers,
    token_positions,
)
from negguide.branches import COND, UNCOND, CallInfo, Step
from negguide.cli import main
from negguide.modules import Negative
from negguide.modules.base import PatchContext

PROMPT, NEGATIVE = "a red circle", "blue square"
STEPS = 3


def pixels(images) -> np.ndarray:
    return np.stack([np.asarray(image, dtype=np.float64) for image in images])


def hook_counts(pipe) -> list[int]:
    return [len(m._forward_hooks) + len(m._forward_pre_hooks) for m in cross_attention_layers(pipe.unet).values()]


def test_the_csv_has_one_row_per_step_with_finite_values(pipe, tmp_path):
    result = analyze_negative(pipe, PROMPT, NEGATIVE, [0, 1], steps=STEPS)
    assert result.norm.shape == result.cosine.shape == result.attention_mass.shape == (STEPS, 2)
    path = result.to_csv(tmp_path / "analysis.csv", per_image=True)
    with path.open() as file:
        rows = list(csv.DictReader(file))
    assert [int(row["step"]) for row in rows] == list(range(STEPS))
    assert {"fraction", "timestep", "active", "norm", "cosine", "attention_mass", "cosine_1"} <= set(rows[0])
    assert all(math.isfinite(float(value)) for row in rows for value in row.values())
    assert all(0 < float(row["attention_mass"]) < 1 and -1 <= float(row["cosine"]) <= 1 for row in rows)


def acting_on(active: tuple[bool, ...]) -> AnalysisResult:
    """A result of two images whose negative acted on the steps ``active`` says, without a pipeline."""
    values = np.linspace(0.0, 1.0, 2 * len(active)).reshape(len(active), 2)
    return AnalysisResult((PROMPT,) * 2, (NEGATIVE,) * 2, (0, 1), tuple(range(len(active))), active, values, values,
                          values, ())  # fmt: skip


@pytest.mark.parametrize(
    "active, spans, label",
    [
        ((True,) * 4, [], "step (the negative acts on every step)"),
        ((False, True, True, False), [(0.5, 1.5), (1.5, 2.5)], "step (shaded: the negative acts)"),
        ((False,) * 4, [], "step (the negative is measured, not applied)"),
    ],
)
def test_the_plot_shades_the_steps_where_the_negative_acts_unless_it_acts_on_every_step(active, spans, label):
    figure = acting_on(active).figure()
    assert len(figure.axes) == 3
    for ax in figure.axes:
        assert [tuple(np.round(patch.get_x() + np.array([0, patch.get_width()]), 6)) for patch in ax.patches] == spans
    assert figure.axes[-1].get_xlabel() == label


def test_the_plot_is_a_png(pipe, tmp_path):
    result = analyze_negative(pipe, PROMPT, NEGATIVE, 0, steps=2)
    assert (result.plot(tmp_path / "analysis.png")).read_bytes().startswith(b"\x89PNG")
    assert result.plot_image().mode == "RGB"


def test_applied_it_is_the_standard_negative_prompt_and_observed_the_plain_run(pipe):
    applied = analyze_negative(pipe, PROMPT, NEGATIVE, [0, 1], steps=STEPS)
    standard = pipe([PROMPT] * 2, negative_prompt=NEGATIVE, generator=generators(0, 1), num_inference_steps=STEPS)
    assert np.abs(pixels(applied.images) - pixels(standard.images)).max() <= 1
    observed = analyze_negative(pipe, PROMPT, NEGATIVE, [0, 1], steps=STEPS, apply=False)
    plain = pipe([PROMPT] * 2, generator=generators(0, 1), num_inference_steps=STEPS)
    assert np.abs(pixels(observed.images) - pixels(plain.images)).max() <= 1
    assert applied.active == (True,) * STEPS and observed.active == (False,) * STEPS
    delayed = analyze_negative(pipe, PROMPT, NEGATIVE, 0, steps=STEPS, start=0.5)
    assert delayed.active == (False, False, True)


def test_probe_records_the_per_sample_norm_and_cosine():
    torch.manual_seed(0)
    e_u, e_n, e_p = (torch.randn(3, 4, 8, 8) for _ in range(3))
    record = ProbeRecord()
    probe = NegativeProbe(Negative(NEGATIVE, start=0.5), record)
    call = CallInfo.from_call(["a", "b", "c"], None, None, None, 1)
    early, late = Step(0, 4, 999.0), Step(2, 4, 499.0)
    preds = {UNCOND: e_u, "neg_0": e_n, COND: e_p}
    assert torch.equal(probe.combine(preds, call, early, 5.0), functional.cfg(e_u, e_p, 5.0))
    assert torch.equal(probe.combine(preds, call, late, 5.0), functional.cfg(e_n, e_p, 5.0))
    d_n, d_p = (e_n - e_u).flatten(1), (e_p - e_u).flatten(1)
    expected_cosine = torch.nn.functional.cosine_similarity(d_n, d_p, dim=1)
    assert np.allclose(record.norm[0], d_n.norm(dim=1).numpy(), rtol=1e-5)
    assert np.allclose(record.cosine[1], expected_cosine.numpy(), atol=1e-6)
    assert record.active == [False, True]
    alone = NegativeProbe(Negative(NEGATIVE, start=0.5), ProbeRecord())
    alone.combine({name: t[1:2] for name, t in preds.items()}, call, late, 5.0)
    assert np.allclose(alone.record.cosine[0], record.cosine[1][1:2], atol=1e-6)  # per sample, not per batch


def test_sample_cosine_of_a_zero_sample_is_zero():
    zero = torch.zeros(2, 3)
    assert torch.equal(functional.sample_cosine(zero, torch.ones(2, 3)), torch.zeros(2))
    assert torch.allclose(functional.sample_norm(torch.full((2, 4), 2.0)), torch.tensor([4.0, 4.0]))


def test_attention_probabilities_are_the_module_attention(pipe):
    torch.manual_seed(0)
    name, attn = next(iter(cross_attention_layers(pipe.unet).items()))
    hidden = torch.randn(2, 16, attn.to_q.in_features)
    context = torch.randn(2, 77, attn.to_k.in_features)
    probs = attention_probabilities(attn, hidden, context)
    assert name.endswith("attn2") and probs.shape == (2, attn.heads, 16, 77)
    assert torch.allclose(probs.sum(dim=-1), torch.ones(2, attn.heads, 16), atol=1e-5)
    value = attn.head_to_batch_dim(attn.to_v(context))
    mixed = attn.batch_to_head_dim(torch.bmm(probs.flatten(0, 1), value))
    assert torch.allclose(attn.to_out[0](mixed), attn(hidden, encoder_hidden_states=context), atol=1e-5)


def test_hooks_are_removed_after_the_call_and_after_an_error(pipe):
    before = hook_counts(pipe)
    analyze_negative(pipe, PROMPT, NEGATIVE, 0, steps=2)
    assert hook_counts(pipe) == before

    def fail(pipeline, step, timestep, tensors):
        assert hook_counts(pipe) != before  # the hooks are in place during the run
        raise RuntimeError("stop")

    with pytest.raises(RuntimeError, match="stop"):
        analyze_negative(pipe, PROMPT, NEGATIVE, 0, steps=2, callback_on_step_end=fail)
    assert hook_counts(pipe) == before


def test_attention_mass_needs_cross_attention_layers():
    call = CallInfo.from_call(["a"], None, None, None, 1)
    mass = AttentionMass(((1,),), MassRecord("neg_0", ((1,),)))
    with (
        pytest.raises(ValueError, match="no cross-attention modules named"),
        mass.patch(torch.nn.Linear(2, 2), call, PatchContext()),
    ):
        pass


def test_token_positions_skip_the_special_tokens(pipe):
    assert token_positions(pipe.tokenizer, "red square") == (1, 2)
    with pytest.raises(ValueError, match="no tokens of its own"):
        token_positions(pipe.tokenizer, "")


def test_onset_is_the_first_step_at_half_the_range():
    curve = np.array([[0.0], [0.1], [0.6], [1.0], [0.9]])
    result = AnalysisResult(("p",), ("n",), (0,), tuple(range(5)), (True,) * 5, curve, curve, None, ())
    assert result.onset("cosine") == 2 and result.onset("norm", threshold=0.95) == 3
    assert result.onset("cosine", threshold=2.0) is None
    assert result.metrics == ("norm", "cosine")
    with pytest.raises(ValueError, match="`metric` must be one of norm, cosine"):
        result.mean("attention_mass")


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"negative": ""}, "`negative` must be a non-empty string"),
        ({"prompt": [PROMPT, PROMPT], "seed": 0}, "`prompt` has 2 texts for 1 seeds"),
        ({"guidance_scale": 1.0}, "`guidance_scale` must be > 1"),
        ({"seed": -3}, "`seed` must be a non-negative int"),
        ({"start": 0.5, "stop": 0.5}, r"`Negative.start` \(0.5\) must be smaller"),
        ({"negative_prompt": "blurry"}, "takes no negative_prompt"),
    ],
)
def test_bad_input(pipe, unet_rows, kwargs, match):
    arguments = {"prompt": PROMPT, "negative": NEGATIVE, "steps": 2, **kwargs}
    with pytest.raises((ValueError, TypeError), match=match):
        analyze_negative(pipe, **arguments)
    assert unet_rows.rows == []


def test_analyze_command_writes_csv_plot_and_images(tmp_path, capsys):
    model = save_tiny_model(tmp_path / "model")
    out = tmp_path / "out"
    code = main(["analyze", "--prompt", PROMPT, "--negative", NEGATIVE, "--seeds", "0-1", "--steps", "2",
                 "--model", str(model), "--device", "cpu", "--out", str(out)])  # fmt: skip
    assert code == 0
    assert {path.name for path in out.iterdir()} == {"analysis.csv", "analysis.png", "image-s0.png", "image-s1.png"}
    assert "cosine: onset at step" in capsys.readouterr().out


def test_analyze_command_bad_input_writes_nothing(tmp_path, capsys):
    out = tmp_path / "out"
    code = main(["analyze", "--prompt", PROMPT, "--negative", NEGATIVE, "--start", "0.6", "--stop", "0.2",
                 "--out", str(out)])  # fmt: skip
    assert code == 2 and re.search(r"`--start` \(0.6\) must be smaller", capsys.readouterr().err)
    assert not out.exists()
