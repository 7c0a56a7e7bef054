"""The node table's and the scored tokens' top-k selection (`activation_server.ranking`): read
in memory order and screened by blocks, each finds what one plain top-k over the same numbers
finds."""

from __future__ import annotations

import pytest
import torch

from neuron_explainer.activation_server.ranking import (
    BLOCK,
    StreamingTopK,
    rank,
    row_extremes,
    unravel,
)


def _cases() -> list[tuple[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(0)
    heads = torch.randn(12, 70, 70, generator=g)
    return [
        ("small", torch.randn(7, 30, generator=g)),
        ("whole blocks", torch.randn(4, 2 * BLOCK, generator=g)),
        ("blocks and a tail", torch.randn(300 * BLOCK + 17, generator=g)),
        ("fewer entries than a block", torch.randn(5, 7, generator=g)),
        ("a head scalar: (q, k, h) view of (h, q, k)", heads.permute(1, 2, 0)),
        ("transposed", torch.randn(300, 200, generator=g).T),
        ("sliced (not contiguous in any order)", torch.randn(100, 300, generator=g)[:, ::3]),
        ("expanded (stride 0)", torch.randn(1, 5000, generator=g).expand(3, 5000)),
        ("ties", torch.randint(0, 4, (9000,), generator=g).float()),
        ("the extremes crowded into one block", torch.cat([torch.linspace(5, 6, BLOCK), torch.zeros(100 * BLOCK)])),
        ("fewer entries than k", torch.randn(3, generator=g)),
    ]


@pytest.mark.parametrize("largest", [True, False])
@pytest.mark.parametrize("k", [1, 10, 37])
@pytest.mark.parametrize("case", range(len(_cases())))
def test_rank_of_one_tensor_is_its_flat_top_k(case: int, k: int, largest: bool) -> None:
    name, x = _cases()[case]
    ranked = rank([x], k, largest)
    expected = x.flatten().topk(min(k, x.numel()), largest=largest)
    assert {s for s, _ in ranked} == {0}
    indices = torch.tensor([i for _, i in ranked])
    # the indices point at the top values, best first, in x's row-major order (any order among
    # exact ties)
    assert torch.equal(x.flatten()[indices], expected.values), name
    assert len(set(indices.tolist())) == len(indices), name


@pytest.mark.parametrize("largest", [True, False])
@pytest.mark.parametrize("k", [1, 10, 300])
def test_rank_over_small_and_large_tensors_is_one_top_k_over_all(k: int, largest: bool) -> None:
    g = torch.Generator().manual_seed(1)
    segments = [
        torch.randn(7, 3072, generator=g),
        torch.randn(12, 7, 7, generator=g).permute(1, 2, 0),  # permuted
        torch.zeros(0, 5),  # empty
        torch.randn(40000, generator=g),
        torch.randn(64, 64, 12, generator=g).transpose(0, 1),  # large, transposed
        torch.randint(0, 3, (50,), generator=g).float(),  # ties
    ]
    flat = torch.cat([x.reshape(-1) for x in segments])
    expected = flat.topk(k, largest=largest).values
    ranked = rank(segments, k, largest)
    got = torch.stack([segments[s].reshape(-1)[i] for s, i in ranked])
    assert torch.equal(got, expected)
    assert len(set(ranked)) == len(ranked)
    # a flat index unravels to the entry it names
    s, i = ranked[0]
    assert float(segments[s][unravel(i, segments[s].shape)]) == float(got[0])


@pytest.mark.parametrize("largest", [True, False])
@pytest.mark.parametrize("case", range(len(_cases())))
def test_streamed_candidates_name_entries_holding_the_k_best(case: int, largest: bool) -> None:
    """What a tensor leaves behind once dropped: its candidates' row-major indices (None: all
    of it), among them its own k best entries."""
    name, x = _cases()[case]
    k = 10
    top = StreamingTopK(k, largest)
    found = top.candidates(top.add(0, x))
    if found is None:
        assert x.numel() <= 2 * k * BLOCK, name
        return
    assert len(set(found.tolist())) == found.numel(), name
    among = x.reshape(-1)[found]
    assert torch.equal(among.topk(k, largest=largest).values, x.reshape(-1).topk(k, largest=largest).values), name


def test_rank_of_nothing_is_empty() -> None:
    assert rank([torch.zeros(0)], 5, True) == []


@pytest.mark.parametrize(
    "scores",
    [
        torch.randn(13, 50257, generator=torch.Generator().manual_seed(2)),  # GPT-2's vocabulary: a ragged tail
        torch.randn(3, 40 * BLOCK, generator=torch.Generator().manual_seed(3)),  # no tail
        # the extremes crowded into one block, and ties across blocks
        torch.cat([torch.linspace(5, 6, BLOCK), torch.zeros(60 * BLOCK), torch.full((9,), 7.0)])[None]
        .repeat(2, 1),
        torch.randint(-3, 4, (4, 100 * BLOCK + 5), generator=torch.Generator().manual_seed(4)).float(),
        torch.randn(2, 50, generator=torch.Generator().manual_seed(5)),  # too few blocks to screen
    ],
)
@pytest.mark.parametrize("n", [1, 10])
def test_row_extremes_are_both_top_ks(scores: torch.Tensor, n: int) -> None:
    top_v, top_i, bot_v, bot_i = row_extremes(scores, n)
    for values, indices, largest in ((top_v, top_i, True), (bot_v, bot_i, False)):
        assert torch.equal(values, scores.topk(n, dim=-1, largest=largest).values)
        assert torch.equal(scores.gather(1, indices), values)
        assert all(len(set(row)) == n for row in indices.tolist())
