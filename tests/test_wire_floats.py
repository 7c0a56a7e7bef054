"""Tensors on the wire. Exact ones: each float32 value reads back as exactly the same float32
(checked on values of every magnitude float32 has, subnormals included), written in at most 9
significant digits from 1e-14 to 1e30 (where the powers of ten involved are exact doubles;
outside, rare in activations, a value keeps its float64 expansion). Display-resolution ones
(sums per token pair): on a decimal grid of 10^-5 of the largest magnitude, within half a step
of each value, in at most 5 significant digits, zeros as 0. NaN and infinities are sent as
-999, as the original server sent them."""

from __future__ import annotations

import json
import math

import orjson
import torch

from neuron_explainer.activation_server import schemas as S
from neuron_explainer.activation_server.wire_floats import display_floats, short_floats, tensor_nd


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
    # small tensors go another way (numpy's shortest digits): the same values back
    for part in x.split(1000):
        small = short_floats(part).tolist()
        assert torch.equal(torch.tensor(json.loads(json.dumps(small)), dtype=torch.float64).float(), part)
        assert all(len(repr(v).lower().split("e")[0].replace("-", "").replace(".", "").strip("0")) <= 9 for v in small)
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
    big = torch.full((3000,), float("nan"))
    assert set(short_floats(big).tolist()) == {-999.0}
    assert short_floats(torch.tensor(0.1)).tolist() == 0.1


def _significant_digits(v: float) -> int:
    return len(repr(v).lower().split("e")[0].replace("-", "").replace(".", "").strip("0"))


def test_display_values_are_on_a_grid_of_a_hundred_thousandth_of_the_largest() -> None:
    gen = torch.Generator().manual_seed(1)
    for scale in (1e-9, 3e-4, 0.05, 1.0, 7e3, 2e12):
        # a spread of magnitudes, as act x grad per token pair has, and exact zeros
        x = (torch.randn(64, 64, generator=gen) * torch.pow(10.0, -4 * torch.rand(64, 64, generator=gen)) * scale).tril()
        values = display_floats(x)
        step = 10.0 ** (math.floor(math.log10(float(x.abs().max()))) - 4)
        assert float((values - x.double()).abs().max()) <= step / 2 * (1 + 1e-9)
        back = torch.tensor(json.loads(json.dumps(values.tolist())), dtype=torch.float64)
        assert torch.equal(back, values)  # the decimal printed is the value
        assert torch.allclose(back / step, (back / step).round(), rtol=0, atol=1e-6)
        assert all(_significant_digits(v) <= 5 for v in values.flatten().tolist())
        assert bool((values[x == 0] == 0).all())
        # a sum of n entries is within n half-steps of the exact one (the viewer's use)
        exact_rows = x.double().sum(1)
        assert float((values.sum(1) - exact_rows).abs().max()) <= 64 * step / 2


def test_display_tensors_send_zeros_as_0_and_non_finite_as_minus_999() -> None:
    x = torch.tensor([[1.0, 0.0, -0.0], [-1e-9, float("nan"), 2.5]])  # -1e-9 rounds to zero
    t = tensor_nd(x, display=True)
    text = orjson.dumps(t.model_dump(mode="json", by_alias=True))
    assert text == b'{"tensorType":"tensor_2d","value":[[1.0,0,0],[0,-999.0,2.5]]}'
    assert S.Tensor2D.model_validate_json(text).value == [[1.0, 0.0, 0.0], [0.0, -999.0, 2.5]]
    assert tensor_nd(torch.zeros(3), display=True).value == [0, 0, 0]
    # exact tensors keep their floats
    assert orjson.dumps(tensor_nd(torch.tensor([0.0, 1 / 3])).model_dump(mode="json")) == b'{"tensorType":"tensor_1d","value":[0.0,0.33333334]}'
