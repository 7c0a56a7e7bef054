"""The debugger's fp32 write directions (`scalars.weights.Weights`): views of the model's weights
are kept, copies (a write scaled by a post-norm's gain) are made when asked and not held; the
writes of a few neurons come without making every neuron's. Numbers checked against the
`transformers` model's own parameters."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from neuron_explainer.debugger import scalars as sc
from neuron_explainer.models.loading import load_model
from neuron_explainer.models.random_models import save_random

pytest.importorskip("transformers")


def _hf_mlp_write(family: str, hf: Any, layer: int) -> torch.Tensor:
    """(d_model, d_mlp) from transformers' parameters: the down projection, times Gemma 2's
    post-feedforward norm gain (1 + weight)."""
    if family == "gpt2":
        return hf.transformer.h[layer].mlp.c_proj.weight.T  # Conv1D: (d_mlp, d_model)
    block = hf.model.layers[layer]
    w = block.mlp.down_proj.weight
    return w * (1 + block.post_feedforward_layernorm.weight)[:, None] if family == "gemma2" else w


@pytest.mark.parametrize("family", ["gpt2", "llama", "gemma2"])
def test_writes_are_the_models_and_only_views_are_held(family: str, tmp_path: Path) -> None:
    folder, hf = save_random(family, tmp_path)
    model = load_model(folder)
    model.requires_grad_(False)
    w = sc.Weights(model)
    layer = model.cfg.n_layers - 1
    expected = _hf_mlp_write(family, hf, layer).float()
    torch.testing.assert_close(w.mlp_write(layer), expected, rtol=1e-6, atol=1e-7)
    neurons = torch.tensor([5, 0, model.cfg.d_mlp - 1, 5])
    torch.testing.assert_close(w.mlp_write_columns(layer, neurons), expected[:, neurons], rtol=1e-6, atol=1e-7)
    w.head_write(layer)
    sandwich = family == "gemma2"
    # gain-scaled writes are recomputed (an elementwise product) rather than held
    assert (("mlp", layer) in w._cache) is not sandwich
    assert (("head", layer) in w._cache) is not sandwich
    # what is held is the model's own storage: no memory beyond the weights
    storages = {p.untyped_storage().data_ptr() for p in model.parameters()}
    assert all(t.untyped_storage().data_ptr() in storages for k, t in w._cache.items() if k[0] in ("mlp", "head"))
    # the columns come from the held matrix when there is one, and agree either way
    torch.testing.assert_close(w.mlp_write_columns(layer, neurons), w.mlp_write(layer)[:, neurons])
