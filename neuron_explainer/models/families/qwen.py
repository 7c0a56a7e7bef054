"""Qwen2 / Qwen2.5 (`qwen2`) and Qwen3 (`qwen3`): the Llama layout, with biases on the query, key
and value projections (Qwen2) or an RMSNorm over each head's query and key before the rotation
(Qwen3). Optional sliding windows on the layers `layer_types` (or max_window_layers) names."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from neuron_explainer.models.config import TransformerConfig
from neuron_explainer.models.families import hf_config as hfc
from neuron_explainer.models.families import require
from neuron_explainer.models.families.llama import common, weights

MODEL_TYPES = ("qwen2", "qwen3")
IGNORED = (r"model\.layers\.\d+\.self_attn\.rotary_emb\.inv_freq",)
__all__ = ["config", "weights"]


def config(hf: Mapping[str, Any]) -> TransformerConfig:
    model_type = hf.get("model_type", "qwen2")
    n_layers = int(require(hf, "num_hidden_layers"))
    window = int(hf["sliding_window"]) if hf.get("use_sliding_window") and hf.get("sliding_window") else None
    start = int(hf.get("max_window_layers") or 0)
    default = ["sliding_attention" if window and i >= start else "full_attention" for i in range(n_layers)]
    sliding = hfc.sliding_layers(hf, n_layers, default) if window else ()
    if model_type == "qwen3":
        bias = bool(hf.get("attention_bias", False))
        return common(hf, "qwen3", qk_norm=True, qkv_bias=bias, out_bias=bias,
                      sliding_window=window if sliding else None, sliding_layers=sliding)
    return common(hf, "qwen2", qkv_bias=True, out_bias=False,
                  sliding_window=window if sliding else None, sliding_layers=sliding)
