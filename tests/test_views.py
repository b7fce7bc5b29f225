"""View-dependent prompting: the schedules, the per-sample embeddings, and view generation in the pipeline."""

from __future__ import annotations

import math

import pytest
import torch
from test_core import Encoder, make_guide
from test_stable_diffusion import run

from negguide import Negative, PerpNeg, View
from negguide.branches import Blend
from negguide.views import view_embeddings, view_mix, view_text

# azimuth -> (positive, front negative weight, side negative weight) with threestudio's schedule, the table of
# docs/methods/perp-neg.md (view-dependent prompting).
THREESTUDIO_TABLE = {
    0: ((("front", 1.0), ("side", 0.0)), 0.000, 1.574),
    45: ((("front", 0.5), ("side", 0.5)), 0.689, 0.689),
    90: ((("side", 1.0), ("back", 0.0)), 1.574, 0.000),
    135: ((("side", 0.5), ("back", 0.5)), 1.746, 0.173),
    180: ((("side", 0.0), ("back", 1.0)), 1.967, 0.394),
}
# stable-dreamfusion: negative_w -2, front decay 2, side decay 10, cut-offs at r 0.2 and 0.8.
DREAMFUSION_TABLE = {
    0: (0.0, 2.0),
    45: (2 * math.exp(-1), 2 * math.exp(-5)),
    90: (2.0, 0.0),
    135: (2.0, math.exp(-5)),
    180: (2.0, 1.0),
}


@pytest.mark.parametrize("azimuth", THREESTUDIO_TABLE)
def test_threestudio_schedule_matches_the_table(azimuth):
    positive, front, side = THREESTUDIO_TABLE[azimuth]
    mix = view_mix(azimuth)
    assert [view for view, _ in mix.positive] == [view for view, _ in positive]
    assert [w for _, w in mix.positive] == pytest.approx([w for _, w in positive])
    assert [view for view, _ in mix.negatives] == ["front", "side"]
    assert [w for _, w in mix.negatives] == pytest.approx([front, side], abs=6e-4)  # the table's 3 decimals


@pytest.mark.parametrize("azimuth", DREAMFUSION_TABLE)
def test_stable_dreamfusion_schedule(azimuth):
    mix = view_mix(azimuth, schedule="stable-dreamfusion")
    assert mix.positive == view_mix(azimuth).positive
    assert [w for _, w in mix.negatives] == pytest.approx(DREAMFUSION_TABLE[azimuth], abs=1e-9)


def test_azimuth_is_symmetric_and_periodic():
    for azimuth in (10.0, 60.0, 100.0, 170.0):
        assert view_mix(-azimuth) == view_mix(azimuth) == view_mix(azimuth + 360.0) == view_mix(azimuth - 720.0)


def test_overhead_views_have_no_view_negatives():
    mix = view_mix(135.0, elevation=70.0)
    assert mix.positive == (("overhead", 1.0),) and [w for _, w in mix.negatives] == [0.0, 0.0]
    assert view_mix(135.0, elevation=70.0, overhead_elevation=None) == view_mix(135.0)


@pytest.mark.parametrize(
    ("kwargs", "error", "name"),
    [
        ({"azimuth": math.nan}, ValueError, "azimuth"),
        ({"azimuth": math.inf}, ValueError, "azimuth"),
        ({"azimuth": "back"}, TypeError, "azimuth"),
        ({"azimuth": 0.0, "elevation": 120.0}, ValueError, "elevation"),
        ({"azimuth": 0.0, "schedule": "dreamfusion"}, ValueError, "schedule"),
    ],
)
def test_bad_views_are_rejected(kwargs, error, name):
    with pytest.raises(error, match=name):
        view_mix(**kwargs)
    with pytest.raises(error, match=name):
        View(**kwargs)


def test_view_embeddings_blend_per_sample():
    embeds = {
        view: torch.randn(1, 5, 3, generator=torch.Generator().manual_seed(i))
        for i, view in enumerate(("front", "side", "back", "overhead"))
    }
    azimuths, elevations = [0.0, 45.0, 135.0, -180.0, 30.0], [0.0, 0.0, 10.0, 0.0, 80.0]
    positive, negatives, weights = view_embeddings(embeds, torch.tensor(azimuths), elevations)
    assert positive.shape == (5, 5, 3) and negatives.shape == (5, 2, 5, 3) and weights.shape == (5, 2)
    for i, (azimuth, elevation) in enumerate(zip(azimuths, elevations)):
        mix = view_mix(azimuth, elevation)
        torch.testing.assert_close(positive[i], sum(w * embeds[v][0] for v, w in mix.positive))
        torch.testing.assert_close(negatives[i], torch.cat([embeds["front"], embeds["side"]]))
        assert weights[i].tolist() == pytest.approx([w for _, w in mix.negatives])
    with pytest.raises(ValueError, match="back"):
        view_embeddings({"front": embeds["front"], "side": embeds["side"]}, [180.0])
    with pytest.raises(ValueError, match="azimuth"):
        view_embeddings(embeds, [0.0, math.nan])


def test_blended_conditions_encode_each_text_once():
    encoder = Encoder()
    guide = make_guide(PerpNeg(view=View(45.0)), encode=encoder)
    guide.prefetch(True)
    (texts,) = encoder.calls
    assert sorted(texts) == ["", "p0, front view", "p0, side view", "p1, front view", "p1, side view"]
    blend = Blend((("p0, front view", 0.5), ("p0, side view", 0.5)))
    rows = guide.conditions.rows([blend, "p0, front view", "p0, side view"])["encoder_hidden_states"]
    torch.testing.assert_close(rows[0], 0.5 * rows[1] + 0.5 * rows[2])
    assert len(encoder.calls) == 1


def test_back_view_is_the_back_prompt_with_view_negatives(pipe):
    prompt = "a red circle"
    images = run(pipe, prompt=prompt, num_images_per_prompt=1, seeds=(0,), guidance=PerpNeg(view=View(180.0)))
    negatives = [Negative(view_text(prompt, "front"), weight=1.967), Negative(view_text(prompt, "side"), weight=0.394)]
    expected = run(
        pipe, prompt=view_text(prompt, "back"), num_images_per_prompt=1, seeds=(0,), guidance=PerpNeg(negatives)
    )
    torch.testing.assert_close(images, expected, rtol=0, atol=1e-6)


def test_in_between_view_conditions_on_the_blended_embedding(pipe, unet_rows):
    prompt, view = "a red circle", View(45.0)
    images = run(pipe, prompt=prompt, num_images_per_prompt=1, seeds=(0,), guidance=PerpNeg(["blue square"], view=view))
    assert unet_rows.rows == [5, 5]  # uncond, blue square, front and side views, the blended positive
    front, side = (pipe.encode_prompt([view_text(prompt, v)], "cpu", 1, False)[0] for v in ("front", "side"))
    weights = [w for _, w in view.mix().negatives]
    negatives = [
        Negative("blue square"),
        *(Negative(view_text(prompt, v), weight=w) for v, w in zip(("front", "side"), weights)),
    ]
    expected = run(
        pipe,
        prompt=None,
        prompt_embeds=0.5 * front + 0.5 * side,
        num_images_per_prompt=1,
        seeds=(0,),
        guidance=PerpNeg(negatives),
    )
    torch.testing.assert_close(images, expected, rtol=0, atol=1e-5)


def test_view_without_a_prompt_text_fails_before_any_network_runs(pipe, network_calls):
    embeds = torch.randn(1, 77, 32)
    for kwargs in ({"prompt": None, "prompt_embeds": embeds}, {"prompt": ""}):
        with pytest.raises(ValueError, match="prompt"):
            run(pipe, num_images_per_prompt=1, seeds=(0,), guidance=PerpNeg(view=View(90.0)), **kwargs)
    assert [counter.rows for counter in network_calls] == [[], [], []]
