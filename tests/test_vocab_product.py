"""The vocabulary product every scored token and logit lens goes through
(`transformer._times_vocab`): on the CPU it calls oneDNN's inner product directly, not aten's
matmul; the numbers are the matmul's to float32 rounding, and under autograd it stays
differentiable."""

from __future__ import annotations

import pytest
import torch

from neuron_explainer.models.transformer import _times_vocab


@pytest.mark.parametrize("n_rows", [1, 7, 136])
def test_vocab_product_is_the_matmul(n_rows: int) -> None:
    g = torch.Generator().manual_seed(n_rows)
    vocab = torch.randn(5003, 96, generator=g)
    rows = torch.randn(n_rows, 96, generator=g)
    with torch.no_grad():
        got = _times_vocab(rows, vocab)
    expected = (rows.double() @ vocab.double().T).float()
    assert got.shape == (n_rows, 5003) and got.is_contiguous()
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    # a strided view of the rows (not contiguous) gives the same numbers
    wide = torch.randn(n_rows, 192, generator=g)
    with torch.no_grad():
        got_view = _times_vocab(wide[:, ::2], vocab)
    torch.testing.assert_close(got_view, (wide[:, ::2].double() @ vocab.double().T).float(), rtol=1e-5, atol=1e-5)


def test_vocab_product_under_autograd_has_the_matmuls_gradient() -> None:
    g = torch.Generator().manual_seed(0)
    vocab = torch.randn(300, 16, generator=g)
    rows = torch.randn(5, 16, generator=g, requires_grad=True)
    weights = torch.randn(5, 300, generator=g)
    (grad,) = torch.autograd.grad((_times_vocab(rows, vocab) * weights).sum(), rows)
    torch.testing.assert_close(grad, weights @ vocab, rtol=1e-5, atol=1e-5)
