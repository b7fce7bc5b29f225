"""Score distillation with Perp-Neg: per-sample pairing, the formula, bad input, and the runnable example."""

from __future__ import annotations

import math
import runpy
from pathlib import Path

import pytest
import torch
from test_perpneg import reference

from negguide.sds import perp_neg_sds

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "sds_perpneg.py"
B, K, L, D = 3, 2, 5, 6


def randn(*shape: int, seed: int) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


class ToyDenoiser:
    """Each row's output depends on its latents, timestep and text only; records the rows of every call."""

    def __init__(self) -> None:
        self.rows: list[int] = []

    def __call__(self, x: torch.Tensor, t: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        self.rows.append(len(x))
        return (
            torch.tanh(x * text.mean(dim=(1, 2))[:, None, None, None])
            + t[:, None, None, None] / 1000
            + text[:, :1, :1, None]
        )


def inputs() -> dict:
    return {
        "noisy_latents": randn(B, 4, 8, 8, seed=0),
        "timesteps": torch.tensor([100, 500, 900]),
        "positive": randn(B, L, D, seed=1),
        "uncond": randn(1, L, D, seed=2),
        "negatives": randn(B, K, L, D, seed=3),
        "weights": torch.tensor([[0.0, 1.5], [2.0, 0.5], [1.0, 1.0]]),
        "guidance_scale": 7.5,
        "noise": randn(B, 4, 8, 8, seed=4),
    }


def test_matches_the_formula_per_sample_in_one_forward():
    denoiser, args = ToyDenoiser(), inputs()
    out = perp_neg_sds(denoiser, **args, grad_weight=torch.tensor([0.1, 0.5, 0.9]))
    assert denoiser.rows == [(2 + K) * B]
    x, t = args["noisy_latents"], args["timesteps"]
    e_u = denoiser(x, t, args["uncond"].expand(B, L, D))
    e_p = denoiser(x, t, args["positive"])
    e_n = [denoiser(x, t, args["negatives"][:, i]) for i in range(K)]
    expected = reference(e_u, e_p, e_n, list(args["weights"].unbind(dim=1)), 7.5).float()
    torch.testing.assert_close(out.noise_pred, expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(
        out.grad, torch.tensor([0.1, 0.5, 0.9])[:, None, None, None] * (expected - args["noise"])
    )


def test_batch_equals_samples_one_by_one():
    args = inputs()
    whole = perp_neg_sds(ToyDenoiser(), **args)
    for i in range(B):
        single = {
            name: value if name in ("uncond", "guidance_scale") else value[i : i + 1] for name, value in args.items()
        }
        out = perp_neg_sds(ToyDenoiser(), **single)
        torch.testing.assert_close(out.noise_pred, whole.noise_pred[i : i + 1])
        torch.testing.assert_close(out.grad, whole.grad[i : i + 1])


BAD_INPUTS = {
    "nan weight": ({"weights": torch.tensor([[math.nan, 1.0], [1.0, 1.0], [1.0, 1.0]])}, "weights"),
    "inf weight": ({"weights": torch.tensor([[math.inf, 1.0], [1.0, 1.0], [1.0, 1.0]])}, "weights"),
    "weights shape": ({"weights": torch.ones(B)}, "weights"),
    "negatives shape": ({"negatives": randn(B, L, D, seed=0)}, "negatives"),
    "positive rows": ({"positive": randn(1, L, D, seed=0)}, "positive"),
    "uncond rows": ({"uncond": randn(2, L, D, seed=0)}, "uncond"),
    "timesteps count": ({"timesteps": torch.tensor([1, 2])}, "timesteps"),
    "noise shape": ({"noise": randn(B, 4, 4, 4, seed=0)}, "noise"),
    "scale": ({"guidance_scale": math.nan}, "guidance_scale"),
}


@pytest.mark.parametrize("case", BAD_INPUTS, ids=list(BAD_INPUTS))
def test_bad_input_fails_before_the_denoiser_runs(case):
    changes, name = BAD_INPUTS[case]
    denoiser = ToyDenoiser()
    with pytest.raises(ValueError, match=name):
        perp_neg_sds(denoiser, **{**inputs(), **changes})
    assert denoiser.rows == []


def test_example_optimises_latents_on_a_pipeline_folder(stock, tmp_path, monkeypatch, capsys):
    stock.save_pretrained(tmp_path / "model")
    argv = ["sds_perpneg.py", "--model", str(tmp_path / "model"), "--steps", "2", "--save", str(tmp_path / "v.png")]
    monkeypatch.setattr("sys.argv", argv)
    runpy.run_path(str(EXAMPLE), run_name="__main__")
    last = capsys.readouterr().out.strip().splitlines()[-2]
    assert last.startswith("latents moved by") and float(last.split()[3]) > 0
    assert (tmp_path / "v.png").is_file()
