"""Readers for the parts of Hugging Face config.json files that several families share: rotary
parameters (old and transformers-5 spellings), per-layer attention types, activations."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from neuron_explainer.models.families import UnsupportedModel, refuse_if
from neuron_explainer.models.rope import SUPPORTED_ROPE_TYPES

# HF activation names -> ours (exactly the same function)
ACTIVATIONS = {
    "gelu_new": "gelu_tanh",
    "gelu_pytorch_tanh": "gelu_tanh",
    "gelu_fast": "gelu_tanh",
    "gelu": "gelu",
    "silu": "silu",
    "swish": "silu",
    "relu": "relu",
}


def activation(hf: Mapping[str, Any], key: str, default: str) -> str:
    name = hf.get(key) or default
    if name not in ACTIVATIONS:
        raise UnsupportedModel(
            f"activation function {name!r} is not supported; supported: {', '.join(sorted(ACTIVATIONS))}"
        )
    return ACTIVATIONS[name]


def rope(hf: Mapping[str, Any], theta_key: str = "rope_theta", default_theta: float = 10000.0) -> tuple[float, dict[str, Any] | None, float]:
    """(theta, scaling or None, partial rotary factor)."""
    params = dict(hf.get("rope_parameters") or {})
    if params and all(isinstance(v, Mapping) for v in params.values()):
        raise UnsupportedModel("per-layer-type rope parameters are not supported")
    scaling = dict(hf.get("rope_scaling") or {})
    merged = {**scaling, **params}
    kind = merged.get("rope_type", merged.get("type", "default"))
    refuse_if(
        kind not in SUPPORTED_ROPE_TYPES,
        f"rope scaling {kind!r} is not supported (supported: {', '.join(SUPPORTED_ROPE_TYPES)})",
    )
    theta = float(merged.get("rope_theta") or hf.get(theta_key) or default_theta)
    partial = float(merged.get("partial_rotary_factor") or hf.get("partial_rotary_factor") or 1.0)
    if kind == "default":
        return theta, None, partial
    out = {k: v for k, v in merged.items() if k not in ("rope_theta", "partial_rotary_factor", "type")}
    out["rope_type"] = kind
    if kind == "llama3":
        out.setdefault("original_max_position_embeddings", hf.get("max_position_embeddings"))
        missing = [k for k in ("factor", "low_freq_factor", "high_freq_factor", "original_max_position_embeddings") if out.get(k) is None]
        refuse_if(bool(missing), f"llama3 rope scaling needs {', '.join(missing)}")
    if kind == "linear":
        refuse_if(out.get("factor") is None, "linear rope scaling needs a factor")
    return theta, out, partial


def sliding_layers(hf: Mapping[str, Any], n_layers: int, default: list[str] | None = None) -> tuple[int, ...]:
    """Layers whose attention is windowed, from `layer_types` or the family's default."""
    types = hf.get("layer_types") or default or ["full_attention"] * n_layers
    refuse_if(len(types) != n_layers, f"layer_types has {len(types)} entries for {n_layers} layers")
    unknown = set(types) - {"full_attention", "sliding_attention"}
    refuse_if(bool(unknown), f"attention layer types {sorted(unknown)} are not supported")
    return tuple(i for i, t in enumerate(types) if t == "sliding_attention")


def head_dim(hf: Mapping[str, Any], d_model: int, n_heads: int) -> int:
    explicit = hf.get("head_dim")
    if explicit:
        return int(explicit)
    refuse_if(d_model % n_heads != 0, f"hidden_size {d_model} does not divide into {n_heads} heads")
    return d_model // n_heads
