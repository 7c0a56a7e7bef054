"""Gemma 2 (`gemma2`): the Llama layout with GeGLU (tanh-GELU gate), RMSNorm applied as (1 + w),
a norm before and after each sublayer, token embeddings scaled by sqrt(d_model), attention
scores scaled by query_pre_attn_scalar^-0.5 and soft-capped, a soft-capped final logit, and a
sliding window on every other layer (those `layer_types` names)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from neuron_explainer.models.config import TransformerConfig
from neuron_explainer.models.families import hf_config as hfc
from neuron_explainer.models.families import require
from neuron_explainer.models.families.llama import common, weights

MODEL_TYPES = ("gemma2",)
IGNORED = ()
__all__ = ["config", "weights"]


def config(hf: Mapping[str, Any]) -> TransformerConfig:
    n_layers = int(require(hf, "num_hidden_layers"))
    d_model = int(require(hf, "hidden_size"))
    window = int(hf["sliding_window"]) if hf.get("sliding_window") else None
    default = ["sliding_attention" if i % 2 == 0 else "full_attention" for i in range(n_layers)]
    sliding = hfc.sliding_layers(hf, n_layers, default) if window else ()
    scalar = hf.get("query_pre_attn_scalar")
    return common(
        hf,
        "gemma2",
        activation=hfc.activation(hf, "hidden_activation", "gelu_pytorch_tanh"),
        norm_offset=1.0,
        sandwich_norms=True,
        embed_scale=d_model**0.5,
        attn_scale=float(scalar) ** -0.5 if scalar else None,
        attn_softcap=float(hf["attn_logit_softcapping"]) if hf.get("attn_logit_softcapping") else None,
        final_softcap=float(hf["final_logit_softcapping"]) if hf.get("final_logit_softcapping") else None,
        sliding_window=window if sliding else None,
        sliding_layers=sliding,
        tie_embeddings=bool(hf.get("tie_word_embeddings", True)),
    )
