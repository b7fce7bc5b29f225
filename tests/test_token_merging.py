"""NegToMe's matching at real token counts: blocks of bounded memory, the same matches as all at once."""

from __future__ import annotations

import pytest
import torch

from negguide import token_merging
from negguide.memory import peak_memory
from negguide.token_merging import best_matches, negtome_merge


def test_blocks_give_the_matches_of_one_block():
    torch.manual_seed(0)
    tokens, reference = torch.randn(2, 300, 16), torch.randn(2, 500, 16)
    mask = torch.rand(500) > 0.3
    whole = best_matches(tokens, reference, mask, block_bytes=2**40)
    for block_bytes in (1, 4 * 2 * 500 * 7, 4 * 2 * 500 * 64):
        best, index = best_matches(tokens, reference, mask, block_bytes=block_bytes)
        assert torch.allclose(best, whole[0], atol=1e-6) and torch.equal(index, whole[1])


def test_no_block_of_similarities_exceeds_the_budget(monkeypatch):
    seen = []
    bmm = torch.bmm

    def recording(a, b):
        out = bmm(a, b)
        seen.append(out.numel() * out.element_size())
        return out

    monkeypatch.setattr(torch, "bmm", recording)
    tokens, reference = torch.randn(1, 4096, 8), torch.randn(1, 4096, 8)
    best_matches(tokens, reference, block_bytes=2**20)
    assert max(seen) <= 2**20 and len(seen) == 4096 * 4096 * 4 // 2**20
    assert token_merging.SIMILARITY_BYTES == 2**26


@pytest.mark.parametrize("masked", [False, True])
def test_one_block_of_similarities_is_alive_at_a_time(masked):
    tokens, reference = torch.randn(1, 4096, 8), torch.randn(1, 4096, 8)
    mask = torch.rand(4096) > 0.5 if masked else None
    with peak_memory(torch.device("cpu")) as peak:
        best_matches(tokens, reference, mask, block_bytes=2**22)
    outputs = 4096 * (4 + 8) * 2  # the best similarities (fp32) and indices (int64), per block and joined
    inputs = 2 * tokens.numel() * tokens.element_size()  # the normalised tokens and reference
    assert peak.bytes <= 2**22 + outputs + inputs + 4096 * 2


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_similarities_stay_in_the_activations_dtype(dtype, monkeypatch):
    dtypes = []
    bmm = torch.bmm

    def recording(a, b):
        dtypes.append(a.dtype)
        return bmm(a, b)

    monkeypatch.setattr(torch, "bmm", recording)
    torch.manual_seed(0)
    tokens, reference = torch.randn(1, 64, 8).to(dtype), torch.randn(1, 64, 8).to(dtype)
    merged = negtome_merge(tokens, reference, 0.9, 0.5)
    assert set(dtypes) == {dtype} and merged.dtype == dtype and torch.isfinite(merged).all()
