"""Tensors on the wire: each float32 value reads back as exactly the same float32 (checked on
values of every magnitude float32 has, subnormals included), written in at most 9 significant
digits from 1e-14 to 1e30 (where the powers of ten involved are exact doubles; outside, rare
in activations, a value keeps its float64 expansion); NaN and infinities are sent as -999, as
the original server sent them."""

from __future__ import annotations

import json

import torch

from neuron_explainer.activation_server.processing import short_floats


def test_every_value_reads_back_as_the_same_float32_in_nine_digits() -> None:
    gen = torch.Generator().manual_seed(0)
    mantissas = torch.rand(20000, generator=gen) * 2 - 1
    exponents = torch.randint(-45, 39, (20000,), generator=gen).float()
    x = (mantissas.double() * torch.pow(10.0, exponents.double())).float()
    x = torch.cat([x, torch.tensor([0.0, -0.0, 1.0, 0.1, 1 / 3, 3.4028235e38, 1.17549435e-38, 1e-45, 16777217.0])])
    x = x[torch.isfinite(x)]
    values = short_floats(x).tolist()
    text = json.dumps(values)
    back = torch.tensor(json.loads(text), dtype=torch.float64).float()
    assert torch.equal(back, x)
    for v in values:
        if not 1e-14 <= abs(v) < 1e30:
            continue
        digits = repr(v).lower().split("e")[0].replace("-", "").replace(".", "").strip("0")
        assert len(digits) <= 9, v
    plain = json.dumps(x.tolist())
    assert len(text) < 0.8 * len(plain)  # what it is for


def test_non_finite_values_are_sent_as_minus_999() -> None:
    x = torch.tensor([[float("nan"), float("inf")], [-float("inf"), 2.5]])
    assert short_floats(x).tolist() == [[-999.0, -999.0], [-999.0, 2.5]]
