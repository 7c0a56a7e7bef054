"""The node table's ranking of one scalar tensor (`processing._segment_top`): read in memory
order and in parallel rows, it finds what one top-k over the row-major flattened tensor finds."""

from __future__ import annotations

import pytest
import torch

from neuron_explainer.activation_server.processing import _TOPK_ROW, _segment_top


def _cases() -> list[tuple[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(0)
    heads = torch.randn(12, 70, 70, generator=g)
    return [
        ("small", torch.randn(7, 30, generator=g)),
        ("rows, no tail", torch.randn(4, 2 * _TOPK_ROW, generator=g)),
        ("rows and a tail", torch.randn(3 * _TOPK_ROW + 17, generator=g)),
        ("a head scalar: (q, k, h) view of (h, q, k)", heads.permute(1, 2, 0)),
        ("transposed", torch.randn(300, 200, generator=g).T),
        ("sliced (not contiguous in any order)", torch.randn(100, 300, generator=g)[:, ::3]),
        ("expanded (stride 0)", torch.randn(1, 5000, generator=g).expand(3, 5000)),
        ("ties", torch.randint(0, 4, (9000,), generator=g).float()),
        ("fewer entries than k", torch.randn(3, generator=g)),
    ]


@pytest.mark.parametrize("largest", [True, False])
@pytest.mark.parametrize("k", [1, 10, 37])
@pytest.mark.parametrize("case", range(len(_cases())))
def test_segment_top_is_the_flat_top_k(case: int, k: int, largest: bool) -> None:
    name, x = _cases()[case]
    values, indices = _segment_top(x, k, largest)
    expected = x.flatten().topk(min(k, x.numel()), largest=largest)
    assert torch.equal(values, expected.values), name
    # the indices point at those values in x's row-major order (any order among exact ties)
    assert torch.equal(x.flatten()[indices], values), name
    assert len(set(indices.tolist())) == len(indices), name
