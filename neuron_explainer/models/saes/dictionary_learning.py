"""The layout of `dictionary_learning` (saprmarks; SAEBench's SAEs): a folder with `ae.pt` (a
torch state dict) and `config.json` whose "trainer" names the class, as SAELens reads it
(its "dictionary_learning_1" conversion).

    config.json  {"trainer": {"dict_class": "AutoEncoder" | "AutoEncoderTopK" | "GatedAutoEncoder"
                              | "BatchTopKSAE" | "MatryoshkaBatchTopKSAE" | "JumpReluAutoEncoder",
                              "activation_dim": 2304, "dict_size": 16384, "layer": 12,
                              "k": 80, "lm_name": "google/gemma-2-2b", ...},
                  "buffer": {"ctx_len": 1024, ...}}
    ae.pt        encoder.weight (n_latents, d_in), encoder.bias, decoder.weight (d_in, n_latents),
                 bias (b_dec); or W_enc / W_dec / b_enc / b_dec; gated: mag_bias, gate_bias,
                 r_mag; thresholds: threshold (a scalar for BatchTopK)

Every class reads `blocks.{layer}.hook_resid_post`; b_dec is subtracted from the input except by
JumpReluAutoEncoder; BatchTopK SAEs are JumpReLU SAEs at inference (their learned threshold).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from neuron_explainer.models.saes.files import read_json_object, read_torch_tensors
from neuron_explainer.models.saes.hook_names import HookConventions
from neuron_explainer.models.saes.saelens_format import sparse_coder_from_saelens
from neuron_explainer.models.saes.sparse_coder import SparseCoder

__all__ = ["AE_FILE", "CONFIG_FILE", "DICT_CLASSES", "load_dictionary_learning"]

AE_FILE = "ae.pt"
CONFIG_FILE = "config.json"
# dict_class -> (SAELens architecture, apply_b_dec_to_input)
DICT_CLASSES = {
    "AutoEncoder": ("standard", True),
    "AutoEncoderTopK": ("topk", True),
    "GatedAutoEncoder": ("gated", True),
    "BatchTopKSAE": ("jumprelu", True),
    "MatryoshkaBatchTopKSAE": ("jumprelu", True),
    "JumpReluAutoEncoder": ("jumprelu", False),
}


def _weights(ae: dict[str, Tensor], architecture: str, source: str) -> dict[str, Tensor]:
    def first(*keys: str) -> Tensor:
        for key in keys:
            if key in ae:
                return ae[key]
        raise ValueError(f"{source}: {AE_FILE} has none of {list(keys)} (has {sorted(ae)})")

    w = {
        "W_enc": ae["W_enc"] if "W_enc" in ae else first("encoder.weight").T.contiguous(),
        "W_dec": ae["W_dec"] if "W_dec" in ae else first("decoder.weight").T.contiguous(),
        "b_dec": first("b_dec", "bias", "decoder_bias"),
    }
    if architecture == "gated":
        w.update(b_mag=first("mag_bias"), b_gate=first("gate_bias"), r_mag=first("r_mag"))
    else:
        w["b_enc"] = first("b_enc", "encoder.bias")
    if architecture == "jumprelu":
        threshold = first("threshold")
        w["threshold"] = threshold.expand(w["W_enc"].shape[1]).clone() if threshold.ndim == 0 else threshold
    return w


def load_dictionary_learning(
    folder: str | os.PathLike[str],
    *,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
    conventions: HookConventions | None = None,
    source: str | None = None,
) -> SparseCoder:
    """Load a dictionary_learning SAE folder (see the module docstring)."""
    path = Path(folder)
    source = source or str(path)
    config = read_json_object(path / CONFIG_FILE)
    trainer: Any = config.get("trainer")
    if not isinstance(trainer, dict):
        raise ValueError(f"{source}: {CONFIG_FILE} has no 'trainer' object")
    dict_class = trainer.get("dict_class")
    if dict_class not in DICT_CLASSES:
        raise ValueError(f"{source}: dict_class {dict_class!r} is not supported; supported: {list(DICT_CLASSES)}")
    architecture, apply_b_dec = DICT_CLASSES[dict_class]
    layer = trainer.get("layer")
    if isinstance(layer, bool) or not isinstance(layer, int) or layer < 0:
        raise ValueError(f"{source}: trainer.layer must be a layer index, got {layer!r}")
    cfg: dict[str, Any] = {
        "architecture": architecture,
        "d_in": trainer.get("activation_dim"),
        "d_sae": trainer.get("dict_size"),
        "apply_b_dec_to_input": apply_b_dec,
        "normalize_activations": "none",
        "metadata": {
            "sae_lens_version": "6.0.0",
            "hook_name": f"blocks.{layer}.hook_resid_post",
            "model_name": trainer.get("lm_name"),
        },
    }
    if architecture == "topk":
        cfg["k"] = trainer.get("k")
    weights = _weights(read_torch_tensors(path / AE_FILE), architecture, source)
    return sparse_coder_from_saelens(
        cfg, weights, dtype=dtype, device=device, conventions=conventions, source=source, fmt="dictionary_learning"
    )
