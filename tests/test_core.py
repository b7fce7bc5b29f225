"""The shared per-step core with a toy network: batching, layout, chunking, encoding, patchers."""

from __future__ import annotations

import dataclasses
from contextlib import contextmanager
from dataclasses import dataclass, field

import pytest
import torch

from negguide import Negative, NegativePrompts
from negguide.branches import COND, UNCOND, CallInfo, EmbedsRef, EncoderTexts
from negguide.core import ConditionTable, Guide, embeds_conditions
from negguide.layout import BatchLayout, ExtraRow, Row
from negguide.modules import Patcher, PatchState

LATENT = (4, 8, 8)


class ToyNet(torch.nn.Module):
    """Each row's output depends on its latents and its text only."""

    def forward(self, rows: torch.Tensor, hidden: torch.Tensor) -> torch.Tensor:
        return rows * hidden.mean(dim=(1, 2))[:, None, None, None] + hidden[:, :1, :1, None]


class Encoder:
    def __init__(self) -> None:
        self.calls: list[list[str]] = []

    def __call__(self, texts: list[str]) -> dict[str, torch.Tensor]:
        self.calls.append(texts)
        rows = [torch.randn(1, 3, 5, generator=torch.Generator().manual_seed(sum(map(ord, t)) + 1)) for t in texts]
        return {"encoder_hidden_states": torch.cat(rows)}


def make_guide(guidance, prompts=("p0", "p1"), per_prompt=2, num_steps=4, encode=None, **kwargs) -> Guide:
    call = CallInfo.from_call(list(prompts), None, None, None, per_prompt)
    timesteps = [999.0 - 250 * i for i in range(num_steps)]
    return Guide(guidance, call=call, timesteps=timesteps, encode=encode or Encoder(), **kwargs)


def run(guide: Guide, net: torch.nn.Module, guided: bool = True) -> list[torch.Tensor]:
    latents = torch.randn(guide.call.num_images, *LATENT, generator=torch.Generator().manual_seed(0))
    guide.prefetch(guided)
    with guide.patch(net):
        return [
            guide.predict(i, latents, lambda x, f: net(x, f["encoder_hidden_states"]), 5.0, guided)
            for i in range(len(guide.steps))
        ]


def test_layout_rows_and_slices():
    extra = [ExtraRow(COND, 1, torch.zeros(LATENT), "reference")]
    layout = BatchLayout.build([UNCOND, COND], num_images=4, num_images_per_prompt=2, extra=extra)
    assert layout.rows[:4] == tuple(Row(UNCOND, i // 2, i) for i in range(4))
    assert layout.rows[8] == Row(COND, 1, None, "reference")
    assert layout.image_rows(COND) == slice(4, 8)
    assert layout.chunks(None) == [slice(0, 9)]
    assert layout.chunks(5) == [slice(0, 4), slice(4, 9)]
    assert layout[4:9].image_rows(COND) == slice(0, 4)


def test_texts_are_encoded_once_per_call():
    encoder = Encoder()
    guide = make_guide(NegativePrompts([Negative("a", stop=0.25), Negative("b", start=0.5)]), encode=encoder)
    run(guide, ToyNet())
    assert encoder.calls == [["a", "p0", "p1", "", "b"]]


def test_condition_rows_in_encoding_order_are_not_copied():
    encoder, outputs = Encoder(), []

    def encode(texts):
        outputs.append(encoder(texts))
        return outputs[-1]

    guide = make_guide(NegativePrompts(), encode=encode)
    guide.prefetch(True)
    [encoded] = outputs
    order = encoder.calls[0]
    together = guide.conditions.rows(order)["encoder_hidden_states"]
    assert together.data_ptr() == encoded["encoder_hidden_states"].data_ptr()
    one = guide.conditions.rows([order[1]])["encoder_hidden_states"]
    assert one.untyped_storage().data_ptr() == together.untyped_storage().data_ptr()
    shuffled = guide.conditions.rows([order[2], order[0], order[2]])["encoder_hidden_states"]
    assert torch.equal(shuffled, together[[2, 0, 2]])
    assert shuffled.untyped_storage().data_ptr() != together.untyped_storage().data_ptr()


def test_caller_given_rows_in_order_are_not_copied():
    given = torch.randn(3, 4, 5)
    table = ConditionTable(Encoder(), embeds_conditions("prompt", encoder_hidden_states=given))
    rows = table.rows([EmbedsRef("prompt", i) for i in range(3)])["encoder_hidden_states"]
    assert rows.data_ptr() == given.data_ptr() and torch.equal(rows, given)
    assert torch.equal(table.rows([EmbedsRef("prompt", 2), EmbedsRef("prompt", 0)])["encoder_hidden_states"],
                       given[[2, 0]])


def test_texts_per_encoder_are_conditions_of_their_own():
    seen = []

    def encode(texts):
        seen.append(texts)
        return {"encoder_hidden_states": torch.arange(len(texts), dtype=torch.float32).view(-1, 1, 1).expand(-1, 3, 5)}

    pair = EncoderTexts(("p0", "a big p0"))
    call = dataclasses.replace(CallInfo.from_call(["p0", "p1"], None, None, None, 1), prompts=(pair, "p1"))
    guide = Guide(NegativePrompts(["p0"]), call=call, timesteps=[999.0], encode=encode)
    guide.prefetch(True)
    assert seen == [["p0", pair, "p1"]]
    assert guide.has_negatives and not make_guide(NegativePrompts()).has_negatives


def test_batched_prediction_matches_per_branch_reference():
    guide = make_guide(NegativePrompts([Negative("a", weight=1.0), Negative("b", weight=3.0)]))
    net = ToyNet()
    latents = torch.randn(4, *LATENT, generator=torch.Generator().manual_seed(0))
    guide.prefetch(True)
    pred = guide.predict(0, latents, lambda x, f: net(x, f["encoder_hidden_states"]), 5.0, True)

    def branch(texts):
        hidden = guide.conditions.rows([texts[i // 2] for i in range(4)])["encoder_hidden_states"]
        return net(latents, hidden)

    e_p, e_a, e_b = branch(("p0", "p1")), branch(("a", "a")), branch(("b", "b"))
    e_n = (e_a + 3 * e_b) / 4
    torch.testing.assert_close(pred, e_n + 5.0 * (e_p - e_n))


@dataclass(frozen=True)
class ChunkedNegatives(NegativePrompts):
    max_rows: int | None = 4


def test_chunked_forward_equals_one_forward():
    negatives = [Negative("a"), Negative("b", weight=2.0, start=0.5)]
    rows = []
    net = ToyNet()
    net.register_forward_pre_hook(lambda module, args: rows.append(len(args[0])))
    whole = run(make_guide(NegativePrompts(negatives)), net)
    rows.clear()
    chunked = run(make_guide(ChunkedNegatives(negatives)), net)
    for a, b in zip(whole, chunked):
        torch.testing.assert_close(a, b)
    assert rows == [4, 4, 4, 4, 4, 4, 4, 4, 4, 4]


class RecordingState(PatchState):
    def __init__(self, add_rows: bool) -> None:
        self.add_rows = add_rows
        self.layouts: list[BatchLayout] = []
        self.forward_rows: list[int] = []

    def extra_rows(self, step, branches):
        if not self.add_rows:
            return ()
        return [ExtraRow(branch.name, 0, torch.full(LATENT, 100.0), "reference") for branch in branches]

    def before_forward(self, step, layout):
        self.layouts.append(layout)


@dataclass(frozen=True)
class RecordingPatcher(Patcher):
    add_rows: bool = False
    states: list[RecordingState] = field(default_factory=list, compare=False)

    @contextmanager
    def patch(self, model, call, context):
        state = RecordingState(self.add_rows)
        self.states.append(state)
        handle = model.register_forward_hook(lambda module, args, out: state.forward_rows.append(len(out)))
        try:
            yield state
        finally:
            handle.remove()


def test_patcher_sees_layouts_and_extra_rows_never_reach_the_output():
    net = ToyNet()
    plain = run(make_guide(None), net)
    patcher = RecordingPatcher(add_rows=True)
    patched = run(make_guide([patcher]), net)
    for a, b in zip(plain, patched):
        assert torch.equal(a, b)
    (state,) = patcher.states
    assert state.forward_rows == [10] * 4
    assert [row for row in state.layouts[0].rows if row.image is None] == [
        Row(UNCOND, 0, None, "reference"),
        Row(COND, 0, None, "reference"),
    ]
    assert not net._forward_hooks


def test_patcher_hooks_are_removed_when_the_run_raises():
    net = ToyNet()
    guide = make_guide([RecordingPatcher()])
    guide.prefetch(True)

    def failing(x, fields):
        net(x, fields["encoder_hidden_states"])
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"), guide.patch(net):
        assert net._forward_hooks
        guide.predict(0, torch.zeros(4, *LATENT), failing, 5.0, True)
    assert not net._forward_hooks


def test_unguided_steps_evaluate_cond_only():
    rows = []
    net = ToyNet()
    net.register_forward_pre_hook(lambda module, args: rows.append(len(args[0])))
    encoder = Encoder()
    run(make_guide(NegativePrompts(["a"]), encode=encoder), net, guided=False)
    assert rows == [4] * 4
    assert encoder.calls == [["p0", "p1"]]
