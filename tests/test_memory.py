"""Memory: the peak measure, budgets, and batches split automatically to fit a budget with the same result."""

from __future__ import annotations

import math

import pytest
import torch
from conftest import PROMPTS
from family_helpers import SIZE, flux_components, sd3_components, sdxl_components
from family_helpers import run as family_run
from test_stable_diffusion import STEPS, run

import negguide.pipelines
from negguide import NAG, Negative, NegativePrompts, NegToMe, PerpNeg
from negguide.layout import BatchLayout
from negguide.memory import AUTO, StorageTracker, parse_budget, peak_memory, rows_that_fit

CPU = torch.device("cpu")
MIB = 2**20
NEGATIVES = [Negative(text) for text in ("dark", "blurry", "ugly", "green square")]  # Perp-Neg with k = 4


@pytest.mark.parametrize(
    ("value", "expected"),
    [(None, None), ("auto", AUTO), (" Auto ", AUTO), (4096, 4096), ("6GB", 6 * 10**9), ("512MiB", 512 * MIB),
     ("1.5 kib", 1536), ("100", 100)],
)
def test_budgets_are_read(value, expected):
    assert parse_budget(value) == expected


@pytest.mark.parametrize(
    ("value", "error", "match"),
    [("lots", ValueError, "'6GB'"), ("-1GB", ValueError, "memory_budget"), (0, ValueError, "positive"),
     (1.5e9, TypeError, "memory_budget"), (True, TypeError, "memory_budget"), ("3 GHz", ValueError, "memory_budget")],
)
def test_bad_budgets_are_errors_naming_the_argument(value, error, match):
    with pytest.raises(error, match=match):
        parse_budget(value)


def test_the_peak_counts_storage_made_inside_the_block_while_it_lives():
    weights = torch.randn(512, 512)
    with peak_memory(CPU) as peak:
        a = torch.empty(MIB // 4)  # 1 MiB
        b = a * 2  # 1 MiB: 2 live
        del a  # 1 live
        b.view(-1, 4).relu_()  # in place, on a view: nothing new
        c = weights @ weights  # 1 MiB: 2 live
        weights.t().contiguous()  # a transient 1 MiB copy: 3 at its peak, then freed
        del c
        view = weights[1:]  # a view of storage made before the block: nothing
    assert peak.bytes == 3 * MIB
    assert view.shape == (511, 512)


def test_the_tracker_forgets_storage_only_when_its_last_tensor_dies():
    with StorageTracker() as tracker:
        a = torch.ones(MIB // 4)
        view = a[10:]
        del a
        assert tracker.live == MIB  # the view holds the storage
        del view
    assert tracker.live == 0 and tracker.peak == MIB


def test_rows_that_fit_is_the_floor_and_none_is_an_error():
    assert rows_that_fit(10 * MIB, 3 * MIB) == 3
    with pytest.raises(ValueError, match="one row of this network's batch needs about 3.0 MiB"):
        rows_that_fit(2 * MIB, 3 * MIB)


def test_layout_chunks_split_rows_or_whole_branches():
    layout = BatchLayout.build(["uncond", "cond", "neg"], num_images=3, num_images_per_prompt=3)
    assert layout.chunks(4, whole_branches=False) == [slice(0, 4), slice(4, 8), slice(8, 9)]
    assert layout.chunks(4, whole_branches=True) == [slice(0, 3), slice(3, 6), slice(6, 9)]
    assert layout.chunks(None) == [slice(0, 9)]
    assert layout[2:5].name(3) == "uncond[2:3]+cond[0:2]"
    assert layout[0:6].name(3) == "uncond+cond"
    assert layout.unit_of(4, whole_branches=True) == slice(3, 6)
    assert layout.unit_of(4, whole_branches=False) == slice(4, 5)


def row_bytes(pipe) -> float:
    """The peak memory of one row of the UNet at this test's size (what the core measures on its first chunk)."""
    unet = pipe.unet
    side = 64 // pipe.vae_scale_factor
    sample = torch.randn(1, unet.config.in_channels, side, side)
    context = pipe.encode_prompt(["a red circle"], "cpu", 1, False)[0]
    with torch.no_grad(), peak_memory(CPU) as peak:
        unet(sample, 999, encoder_hidden_states=context)
    return peak.bytes


class ForwardPeaks:
    """The rows and the peak memory (`peak_memory`) of every forward of a module."""

    def __init__(self, module: torch.nn.Module) -> None:
        self.rows: list[int] = []
        self.peaks: list[int] = []
        self._module = module
        self._forward = module.forward
        module.forward = self._measured

    def _measured(self, *args, **kwargs):
        with peak_memory(CPU) as peak:
            out = self._forward(*args, **kwargs)
        self.rows.append(len(args[0] if args else next(iter(kwargs.values()))))
        self.peaks.append(peak.bytes)
        return out

    def clear(self) -> None:
        self.rows.clear()
        self.peaks.clear()

    def remove(self) -> None:
        del self._module.forward


@pytest.fixture
def forwards(pipe):
    recorder = ForwardPeaks(pipe.unet)
    yield recorder
    recorder.remove()


@pytest.mark.parametrize("rows_per_chunk", [6, 4])
def test_a_budget_splits_perp_neg_into_the_fewest_chunks_with_the_same_images(pipe, forwards, rows_per_chunk):
    """Perp-Neg with 4 negatives: 6 branches of 2 images, 12 rows a step; a budget of 6 or 4 rows' memory
    runs them in 2 or 3 evaluations."""
    call = {"prompt": PROMPTS[0], "height": 64, "width": 64, "guidance": PerpNeg(NEGATIVES), "seeds": (0, 1)}
    whole = run(pipe, **call)
    budget = int((rows_per_chunk + 0.5) * row_bytes(pipe))
    assert forwards.rows[: STEPS] == [12] * STEPS
    assert max(forwards.peaks) > budget  # one evaluation of every row needs more than the budget
    forwards.clear()
    split = run(pipe, **call, memory_budget=budget)
    torch.testing.assert_close(split, whole, rtol=0, atol=1e-5)
    # The first evaluation measures one row of the prompt's branch; the rows before and after it follow in chunks
    # of at most `rows_per_chunk`; every later step runs the fewest chunks.
    first = next(i for i in range(len(forwards.rows)) if sum(forwards.rows[: i + 1]) == 12) + 1
    assert forwards.rows[0] == 1 and max(forwards.rows[:first]) <= rows_per_chunk
    step = [rows_per_chunk] * (12 // rows_per_chunk) + ([12 % rows_per_chunk] if 12 % rows_per_chunk else [])
    assert len(step) == math.ceil(12 / rows_per_chunk)
    assert forwards.rows[first:] == step * (STEPS - 1)
    assert max(forwards.peaks) <= budget


def test_a_later_call_reuses_the_measure_and_keeps_to_the_budget(pipe, forwards):
    budget = int(6.5 * row_bytes(pipe))
    call = {"prompt": PROMPTS[0], "height": 64, "width": 64, "guidance": PerpNeg(NEGATIVES), "seeds": (0, 1)}
    run(pipe, **call, memory_budget=budget)
    forwards.clear()
    run(pipe, **call, memory_budget=budget)
    assert forwards.rows == [6, 6] * STEPS
    assert max(forwards.peaks) <= budget


def test_a_budget_too_small_for_one_row_is_a_clear_error(pipe):
    with pytest.raises(ValueError, match="`memory_budget` is 1.0 KiB, but one row of this network's batch needs"):
        run(pipe, prompt=PROMPTS[0], height=64, width=64, memory_budget="1KiB", seeds=(0, 1))


def test_patchers_that_relate_a_branch_keep_it_in_one_evaluation(pipe, forwards):
    module = NegToMe(start=0.0, stop=1.0)
    one_row = row_bytes(pipe)
    call = {"prompt": PROMPTS[0], "height": 64, "width": 64, "guidance": module, "seeds": (0, 1, 2),
            "num_images_per_prompt": 3}
    with pytest.raises(ValueError, match="a branch of 3 rows must run in one evaluation"):
        run(pipe, **call, memory_budget=int(2.5 * one_row))
    forwards.clear()
    whole = run(pipe, **call)
    split = run(pipe, **call, memory_budget=int(5 * one_row))
    # Float rounding differs between a batch of 6 rows and two of 3, and NegToMe's similarity threshold turns a
    # rounding-sized difference into a merged token or not: close, not equal to 1e-5.
    torch.testing.assert_close(split, whole, rtol=0, atol=2e-3)
    assert forwards.rows == [6] * STEPS + [3] * 2 * STEPS  # then uncond and cond, one evaluation each


def test_a_bad_budget_fails_before_any_network_runs(pipe, forwards):
    with pytest.raises(ValueError, match="memory_budget"):
        run(pipe, memory_budget="a lot")
    assert forwards.rows == []


FAMILY_CALLS = {
    "sdxl": ("StableDiffusionXLNegGuidePipeline", sdxl_components, {"negative_prompt": "dark"}),
    "sd3": ("StableDiffusion3NegGuidePipeline", sd3_components, {"negative_prompt": "dark", "height": SIZE,
                                                                 "width": SIZE, "max_sequence_length": 16}),
    "flux": ("FluxNegGuidePipeline", flux_components, {"negative_prompt": "dark", "true_cfg_scale": 3.0,
                                                       "height": SIZE, "width": SIZE, "max_sequence_length": 16}),
}


@pytest.mark.parametrize("family", list(FAMILY_CALLS))
def test_every_family_splits_to_a_budget_with_the_same_images(family):
    """Perp-Neg with two negatives and NAG beside the standard negative: the budget's chunks split branches
    between evaluations (a chunk may hold part of a branch) and give the one-evaluation result."""
    name, components, call = FAMILY_CALLS[family]
    pipe = getattr(negguide.pipelines, name)(**components())
    pipe.set_progress_bar_config(disable=True)
    denoiser = pipe.transformer if hasattr(pipe, "transformer") else pipe.unet
    recorder = ForwardPeaks(denoiser)
    try:
        for guidance in (PerpNeg(["dark", "blurry"]), [NegativePrompts(), NAG(["blurry"])]):
            kwargs = {**call, "guidance": guidance, "num_images_per_prompt": 2}
            whole = family_run(pipe, seeds=(0, 1, 2, 3), **kwargs)
            one_row = max(peak // rows for peak, rows in zip(recorder.peaks, recorder.rows))
            recorder.clear()
            split = family_run(pipe, seeds=(0, 1, 2, 3), memory_budget=int(3.5 * one_row), **kwargs)
            torch.testing.assert_close(split, whole, rtol=0, atol=1e-5)
            assert max(recorder.rows) <= 3 < len(recorder.rows)
            recorder.clear()
    finally:
        recorder.remove()
