"""GPT-NeoX / Pythia (`gpt_neox`): LayerNorm, attention and MLP in parallel off the block's input
(use_parallel_residual), rotary positions on the first `rotary_pct` of each head, exact GELU,
untied unembedding. The fused query_key_value weight holds, per head, its q, k and v rows."""

from __future__ import annotations

from collections.abc import Mapping, Set
from typing import Any

from neuron_explainer.models.config import TransformerConfig
from neuron_explainer.models.families import Source, UnsupportedModel, refuse_if, require, same
from neuron_explainer.models.families import hf_config as hfc

MODEL_TYPES = ("gpt_neox",)
IGNORED = (r"gpt_neox\.layers\.\d+\.attention\.(bias|masked_bias|rotary_emb\.inv_freq)",)


def config(hf: Mapping[str, Any]) -> TransformerConfig:
    d_model, n_heads = int(require(hf, "hidden_size")), int(require(hf, "num_attention_heads"))
    d_head = hfc.head_dim({}, d_model, n_heads)
    theta, scaling, partial = hfc.rope(hf, theta_key="rotary_emb_base")
    if "rotary_pct" in hf and not hf.get("rope_parameters"):
        partial = float(hf["rotary_pct"])
    rotary_dim = int(d_head * partial)
    refuse_if(rotary_dim % 2 != 0, f"rotary dimension {rotary_dim} is odd")
    bias = bool(hf.get("attention_bias", True))
    return TransformerConfig(
        family="gpt_neox",
        n_layers=int(require(hf, "num_hidden_layers")),
        d_model=d_model,
        n_heads=n_heads,
        d_head=d_head,
        d_mlp=int(require(hf, "intermediate_size")),
        n_vocab=int(require(hf, "vocab_size")),
        ctx_window=int(hf.get("max_position_embeddings") or 2048),
        norm="layernorm",
        norm_eps=float(hf.get("layer_norm_eps", 1e-5)),
        positions="rotary",
        rotary_dim=rotary_dim,
        rope_theta=theta,
        rope_scaling=scaling,
        activation=hfc.activation(hf, "hidden_act", "gelu"),  # type: ignore[arg-type]
        parallel=bool(hf.get("use_parallel_residual", True)),
        qkv_bias=bias,
        out_bias=bias,
        mlp_bias=True,
        tie_embeddings=bool(hf.get("tie_word_embeddings", False)),
        tokenizer="tokenizer.json",
        bos_token_id=hf.get("bos_token_id"),
        extra={"model_type": "gpt_neox"},
    )


def weights(cfg: TransformerConfig, names: Set[str]) -> dict[str, Source]:
    h, dh = cfg.n_heads, cfg.d_head

    def qkv_part(key: str, j: int) -> Source:
        # rows are (head, [q | k | v], d_head)
        def split(t: Any) -> Any:
            per_head = t.view(h, 3, dh, *t.shape[1:])
            return per_head[:, j].reshape(h * dh, *t.shape[1:])

        return Source((key,), split)

    out: dict[str, Source] = {
        "tok_embed.weight": same("gpt_neox.embed_in.weight"),
        "final_ln.weight": same("gpt_neox.final_layer_norm.weight"),
        "final_ln.bias": same("gpt_neox.final_layer_norm.bias"),
    }
    # embed_out in checkpoints; transformers 5 calls it lm_head in memory
    head = next((k for k in ("embed_out.weight", "lm_head.weight") if k in names), None)
    if head is not None:
        out["unembed.weight"] = same(head)
    elif cfg.tie_embeddings:
        out["unembed.weight"] = same("gpt_neox.embed_in.weight")
    else:
        raise UnsupportedModel("GPT-NeoX checkpoint without embed_out.weight: it is incomplete")
    for i in range(cfg.n_layers):
        t, x = f"gpt_neox.layers.{i}.", f"xf_layers.{i}."
        for ours, theirs in (("ln_1", "input_layernorm"), ("ln_2", "post_attention_layernorm")):
            out[f"{x}{ours}.weight"] = same(f"{t}{theirs}.weight")
            out[f"{x}{ours}.bias"] = same(f"{t}{theirs}.bias")
        for j, name in enumerate(("q_proj", "k_proj", "v_proj")):
            out[f"{x}attn.{name}.weight"] = qkv_part(f"{t}attention.query_key_value.weight", j)
            if cfg.qkv_bias:
                out[f"{x}attn.{name}.bias"] = qkv_part(f"{t}attention.query_key_value.bias", j)
        for ours, theirs, has_bias in (
            ("attn.out_proj", "attention.dense", cfg.out_bias),
            ("mlp.in_layer", "mlp.dense_h_to_4h", True),
            ("mlp.out_layer", "mlp.dense_4h_to_h", True),
        ):
            out[f"{x}{ours}.weight"] = same(f"{t}{theirs}.weight")
            if has_bias:
                out[f"{x}{ours}.bias"] = same(f"{t}{theirs}.bias")
    return out
