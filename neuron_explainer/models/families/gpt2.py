"""GPT-2 (Hugging Face `gpt2`): pre-LayerNorm blocks, learned positions, tanh-GELU, tied
unembedding. HF stores GPT-2's linear layers as Conv1D, (in, out), hence the transposes; the fused
c_attn is split into q, k and v."""

from __future__ import annotations

from collections.abc import Mapping, Set
from typing import Any

from neuron_explainer.models.config import TransformerConfig
from neuron_explainer.models.families import Source, UnsupportedModel, refuse_if, same
from neuron_explainer.models.families.hf_config import ACTIVATIONS

MODEL_TYPES = ("gpt2",)
# tensors old checkpoints carry that are not weights (causal-mask buffers)
IGNORED = (r"(transformer\.)?h\.\d+\.attn\.(bias|masked_bias)",)


def config(hf: Mapping[str, Any]) -> TransformerConfig:
    act = hf.get("activation_function", "gelu_new")
    refuse_if(
        ACTIVATIONS.get(act) != "gelu_tanh",
        f"GPT-2 with activation function {act!r} is not supported: only gelu_new / gelu_pytorch_tanh",
    )
    refuse_if(
        not hf.get("scale_attn_weights", True) or bool(hf.get("scale_attn_by_inverse_layer_idx")),
        "GPT-2 with non-standard attention scaling (scale_attn_weights / "
        "scale_attn_by_inverse_layer_idx) is not supported: only 1/sqrt(d_head)",
    )
    refuse_if(bool(hf.get("reorder_and_upcast_attn")), "GPT-2 with reorder_and_upcast_attn is not supported")
    try:
        d_model, n_heads = int(hf["n_embd"]), int(hf["n_head"])
        return TransformerConfig(
            family="gpt2",
            n_layers=int(hf["n_layer"]),
            d_model=d_model,
            n_heads=n_heads,
            d_head=d_model // n_heads,
            d_mlp=int(hf.get("n_inner") or 4 * d_model),
            n_vocab=int(hf["vocab_size"]),
            ctx_window=int(hf.get("n_positions") or hf["n_ctx"]),
            norm_eps=float(hf.get("layer_norm_epsilon", 1e-5)),
            tie_embeddings=bool(hf.get("tie_word_embeddings", True)),
            tokenizer="gpt2",
            extra={"model_type": "gpt2"},
        )
    except (KeyError, TypeError, ValueError) as e:
        raise UnsupportedModel(f"invalid Hugging Face GPT-2 config: missing or bad {e}") from e


def weights(cfg: TransformerConfig, names: Set[str]) -> dict[str, Source]:
    p = "transformer." if "transformer.wte.weight" in names else ""
    d = cfg.d_attn

    def conv1d(key: str) -> Source:
        return Source((key,), lambda w: w.t())

    def qkv_part(key: str, j: int, is_bias: bool) -> Source:
        if is_bias:
            return Source((key,), lambda b: b[j * d : (j + 1) * d])
        return Source((key,), lambda w: w[:, j * d : (j + 1) * d].t())

    out: dict[str, Source] = {
        "tok_embed.weight": same(p + "wte.weight"),
        "pos_embed.weight": same(p + "wpe.weight"),
        "final_ln.weight": same(p + "ln_f.weight"),
        "final_ln.bias": same(p + "ln_f.bias"),
    }
    if "lm_head.weight" in names:
        out["unembed.weight"] = same("lm_head.weight")
    elif cfg.tie_embeddings:
        out["unembed.weight"] = same(p + "wte.weight")
    else:
        raise UnsupportedModel("untied GPT-2 checkpoint without lm_head.weight: it is incomplete")
    for i in range(cfg.n_layers):
        h, x = f"{p}h.{i}.", f"xf_layers.{i}."
        for ln in ("ln_1", "ln_2"):
            out[f"{x}{ln}.weight"] = same(f"{h}{ln}.weight")
            out[f"{x}{ln}.bias"] = same(f"{h}{ln}.bias")
        for j, name in enumerate(("q_proj", "k_proj", "v_proj")):
            out[f"{x}attn.{name}.weight"] = qkv_part(f"{h}attn.c_attn.weight", j, False)
            out[f"{x}attn.{name}.bias"] = qkv_part(f"{h}attn.c_attn.bias", j, True)
        for ours, theirs in (
            ("attn.out_proj", "attn.c_proj"),
            ("mlp.in_layer", "mlp.c_fc"),
            ("mlp.out_layer", "mlp.c_proj"),
        ):
            out[f"{x}{ours}.weight"] = conv1d(f"{h}{theirs}.weight")
            out[f"{x}{ours}.bias"] = same(f"{h}{theirs}.bias")
    return out
