"""Heads' writes at token pairs (`debugger.head_writes`) against the writes themselves,
materialised here: probs[h, q, k] * v[k, h] @ W_h, of shape (q, k, h, d)."""

from __future__ import annotations

import pytest
import torch

from neuron_explainer.debugger import head_writes as hw

H, T, E, D = 3, 9, 4, 8


def _case() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    probs = torch.rand(H, T, T, generator=gen).tril()
    return probs, torch.randn(T, H, E, generator=gen), torch.randn(H, E, D, generator=gen)


def _writes(probs: torch.Tensor, values: torch.Tensor, head_write: torch.Tensor) -> torch.Tensor:
    return probs.permute(1, 2, 0)[..., None] * torch.einsum("khe,hed->khd", values, head_write)[None]


@pytest.mark.parametrize("zero_rows", [[], [0, 2, 3, 5, 6, 7], list(range(T - 1)), list(range(T))])
def test_writes_onto_query_directions_are_the_writes_dotted_with_them(zero_rows: list[int]) -> None:
    """Also where some queries' directions are zero (a loss at the last token leaves one row):
    those are skipped, and still zero."""
    probs, values, head_write = _case()
    directions = torch.randn(T, D, generator=torch.Generator().manual_seed(1))
    directions[zero_rows] = 0
    expected = torch.einsum("qkhd,qd->qkh", _writes(probs, values, head_write), directions)
    got = hw.pair_writes_onto_query_directions(probs, values, head_write, directions)
    assert got.shape == (T, T, H)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    assert bool((got[zero_rows] == 0).all())
    # a batch of prompts: each its own
    batched = hw.pair_writes_onto_query_directions(probs[None].expand(2, -1, -1, -1), values[None].expand(2, -1, -1, -1), head_write, directions[None].expand(2, -1, -1))
    torch.testing.assert_close(batched[1], expected, rtol=1e-5, atol=1e-5)


def test_write_norms_are_the_norms_of_the_writes() -> None:
    probs, values, head_write = _case()
    expected = _writes(probs, values, head_write).norm(dim=-1).permute(2, 0, 1)
    got = hw.write_norms(probs, values, hw.head_write_gram(head_write))
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)
