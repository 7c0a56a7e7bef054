"""Llama 2 / 3 / 3.1 / 3.2 (`llama`) and Mistral (`mistral`): RMSNorm, rotary positions (with
Llama 3.1's rope scaling), grouped-query attention, SwiGLU MLP, no biases by default, tied or
untied unembedding. Mistral adds a sliding attention window on every layer.

The layout (`model.layers.{i}.self_attn.q_proj`, `mlp.gate_proj`, ...) is shared by Qwen and
Gemma 2, whose modules reuse `weights` below."""

from __future__ import annotations

from collections.abc import Mapping, Set
from typing import Any

from neuron_explainer.models.config import TransformerConfig
from neuron_explainer.models.families import Source, UnsupportedModel, require, same
from neuron_explainer.models.families import hf_config as hfc

MODEL_TYPES = ("llama", "mistral")
IGNORED = (r"model\.layers\.\d+\.self_attn\.rotary_emb\.inv_freq",)


def common(hf: Mapping[str, Any], family: str, **overrides: Any) -> TransformerConfig:
    """The fields Llama-layout families read the same way."""
    d_model, n_heads = int(require(hf, "hidden_size")), int(require(hf, "num_attention_heads"))
    theta, scaling, partial = hfc.rope(hf)
    d_head = hfc.head_dim(hf, d_model, n_heads)
    fields: dict[str, Any] = dict(
        family=family,
        n_layers=int(require(hf, "num_hidden_layers")),
        d_model=d_model,
        n_heads=n_heads,
        d_head=d_head,
        n_kv_heads=int(hf.get("num_key_value_heads") or n_heads),
        d_mlp=int(require(hf, "intermediate_size")),
        n_vocab=int(require(hf, "vocab_size")),
        ctx_window=int(hf.get("max_position_embeddings") or 4096),
        norm="rmsnorm",
        norm_eps=float(hf.get("rms_norm_eps", 1e-6)),
        positions="rotary",
        rotary_dim=int(d_head * partial),
        rope_theta=theta,
        rope_scaling=scaling,
        activation=hfc.activation(hf, "hidden_act", "silu"),
        gated_mlp=True,
        qkv_bias=bool(hf.get("attention_bias", False)),
        out_bias=bool(hf.get("attention_bias", False)),
        mlp_bias=bool(hf.get("mlp_bias", False)),
        tie_embeddings=bool(hf.get("tie_word_embeddings", False)),
        tokenizer="tokenizer.json",
        bos_token_id=hf.get("bos_token_id"),
        extra={"model_type": hf.get("model_type", family)},
    )
    fields.update(overrides)
    return TransformerConfig(**fields)


def config(hf: Mapping[str, Any]) -> TransformerConfig:
    model_type = hf.get("model_type", "llama")
    if model_type == "mistral":
        window = hf.get("sliding_window")
        n_layers = int(require(hf, "num_hidden_layers"))
        return common(
            hf,
            "mistral",
            sliding_window=int(window) if window else None,
            sliding_layers=tuple(range(n_layers)) if window else (),
        )
    return common(hf, "llama")


def weights(cfg: TransformerConfig, names: Set[str]) -> dict[str, Source]:
    out: dict[str, Source] = {
        "tok_embed.weight": same("model.embed_tokens.weight"),
        "final_ln.weight": same("model.norm.weight"),
    }
    if "lm_head.weight" in names:
        out["unembed.weight"] = same("lm_head.weight")
    elif cfg.tie_embeddings:
        out["unembed.weight"] = same("model.embed_tokens.weight")
    else:
        raise UnsupportedModel("untied checkpoint without lm_head.weight: it is incomplete")
    for i in range(cfg.n_layers):
        t, x = f"model.layers.{i}.", f"xf_layers.{i}."
        pairs = [
            ("ln_1", "input_layernorm"),
            ("attn.q_proj", "self_attn.q_proj"),
            ("attn.k_proj", "self_attn.k_proj"),
            ("attn.v_proj", "self_attn.v_proj"),
            ("attn.out_proj", "self_attn.o_proj"),
            ("mlp.gate_layer", "mlp.gate_proj"),
            ("mlp.in_layer", "mlp.up_proj"),
            ("mlp.out_layer", "mlp.down_proj"),
        ]
        if cfg.sandwich_norms:  # Gemma 2
            pairs += [
                ("post_attn_ln", "post_attention_layernorm"),
                ("ln_2", "pre_feedforward_layernorm"),
                ("post_mlp_ln", "post_feedforward_layernorm"),
            ]
        else:
            pairs.append(("ln_2", "post_attention_layernorm"))
        if cfg.qk_norm:  # Qwen3
            pairs += [("attn.q_norm", "self_attn.q_norm"), ("attn.k_norm", "self_attn.k_norm")]
        for ours, theirs in pairs:
            out[f"{x}{ours}.weight"] = same(f"{t}{theirs}.weight")
        biases = []
        if cfg.qkv_bias:
            biases += [("attn.q_proj", "self_attn.q_proj"), ("attn.k_proj", "self_attn.k_proj"), ("attn.v_proj", "self_attn.v_proj")]
        if cfg.out_bias:
            biases.append(("attn.out_proj", "self_attn.o_proj"))
        if cfg.mlp_bias:
            biases += [("mlp.gate_layer", "mlp.gate_proj"), ("mlp.in_layer", "mlp.up_proj"), ("mlp.out_layer", "mlp.down_proj")]
        for ours, theirs in biases:
            out[f"{x}{ours}.bias"] = same(f"{t}{theirs}.bias")
    return out
