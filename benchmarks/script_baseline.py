"""The second baseline of bench_server.py: what a researcher's own script computes with
`transformers` for the debugger's node table, written here independently of our code.

One eager forward pass with output_attentions (the probabilities the forward uses), the MLP
activations (the down projection's input) and the final norm's input kept; one backward pass of
the logit difference at the last token; then, for every MLP neuron at every token and every head
at every token pair: activation x gradient, write norm (|activation| x the norm of its write) and
direct effect (its write projected on the gradient at the final norm's input); then the top and
bottom k of each over the whole model. No scored tokens, no token-pair attribution, no JSON:
the issue's "TransformerLens script doing the core math", over transformers instead (the
TransformerLens on PyPI here has no loader for these random checkpoints offline).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor


def _parts(hf: Any) -> tuple[list[Any], Any, str]:
    """(blocks, final norm, family) of a transformers causal LM."""
    if hasattr(hf, "transformer"):  # GPT-2
        return list(hf.transformer.h), hf.transformer.ln_f, "gpt2"
    if hasattr(hf, "gpt_neox"):
        return list(hf.gpt_neox.layers), hf.gpt_neox.final_layer_norm, "neox"
    return list(hf.model.layers), hf.model.norm, "llama"


def _down_and_out(block: Any, family: str) -> tuple[Any, Any, Any]:
    """(MLP down projection, attention output projection, value projection or fused qkv)."""
    if family == "gpt2":
        return block.mlp.c_proj, block.attn.c_proj, block.attn.c_attn
    if family == "neox":
        return block.mlp.dense_4h_to_h, block.attention.dense, block.attention.query_key_value
    return block.mlp.down_proj, block.self_attn.o_proj, block.self_attn.v_proj


def _weight(module: Any, family: str) -> Tensor:
    """(out, in) weight of a linear layer (GPT-2's Conv1D stores (in, out))."""
    return module.weight.T if family == "gpt2" else module.weight


def prepare(hf: Any) -> dict[str, Any]:
    """Per-model constants the script computes once: down projections, their column norms, and
    W_O split by head."""
    blocks, _, family = _parts(hf)
    cfg = hf.config
    n_heads = cfg.num_attention_heads if hasattr(cfg, "num_attention_heads") else cfg.n_head
    d_model = cfg.hidden_size if hasattr(cfg, "hidden_size") else cfg.n_embd
    d_head = getattr(cfg, "head_dim", None) or d_model // n_heads
    out: dict[str, Any] = {"family": family, "n_heads": n_heads, "d_head": d_head, "down": [], "down_norms": [], "w_o": []}
    with torch.no_grad():
        for block in blocks:
            down, o, _ = _down_and_out(block, family)
            w = _weight(down, family).float()  # (d_model, d_mlp)
            out["down"].append(w)
            out["down_norms"].append(w.norm(dim=0))
            out["w_o"].append(_weight(o, family).float().T.reshape(n_heads, d_head, -1))  # (h, dh, d_model)
    return out


def node_table(hf: Any, consts: dict[str, Any], tokens: Tensor, target: int, distractor: int, k: int = 10) -> dict[str, Tensor]:
    """Top and bottom k values of the four node-table scalars (write norm: top only)."""
    blocks, final_norm, family = _parts(hf)
    n_heads, d_head = consts["n_heads"], consts["d_head"]
    kept: dict[str, Any] = {"mlp": [], "v": []}
    handles = []
    for block in blocks:
        down, _, v_src = _down_and_out(block, family)

        def keep_mlp(module: Any, args: tuple[Tensor, ...]) -> None:
            args[0].retain_grad()
            kept["mlp"].append(args[0])

        def keep_v(module: Any, args: tuple[Tensor, ...], out: Tensor) -> None:
            kept["v"].append(out)

        handles.append(down.register_forward_pre_hook(keep_mlp))
        handles.append(v_src.register_forward_hook(keep_v))

    def keep_final(module: Any, args: tuple[Tensor, ...]) -> None:
        args[0].retain_grad()
        kept["final"] = args[0]

    handles.append(final_norm.register_forward_pre_hook(keep_final))
    try:
        embeds = hf.get_input_embeddings()(tokens).detach().requires_grad_(True)
        out = hf(inputs_embeds=embeds, output_attentions=True, use_cache=False)
        for p in out.attentions:
            p.retain_grad()
        logits = out.logits[0, -1]
        (logits[target] - logits[distractor]).backward()
    finally:
        for h in handles:
            h.remove()
    g = kept["final"].grad[0].float()  # (T, d_model)
    groups: dict[str, list[Tensor]] = {"act_times_grad": [], "write_norm": [], "direct": [], "activation": []}
    with torch.no_grad():
        for layer, (a, v_raw, probs) in enumerate(zip(kept["mlp"], kept["v"], out.attentions, strict=True)):
            a0, ga = a[0].float(), a.grad[0].float()
            groups["act_times_grad"].append((a0 * ga).flatten())
            groups["write_norm"].append((a0.abs() * consts["down_norms"][layer]).flatten())
            groups["direct"].append((a0 * (g @ consts["down"][layer])).flatten())
            groups["activation"].append(a0.flatten())
            p, gp = probs[0].float(), probs.grad[0].float()  # (h, q, k)
            v = _values(v_raw[0].float(), family, n_heads, d_head)  # (k, h, dh)
            writes = torch.einsum("khe,hed->khd", v, consts["w_o"][layer])  # (k, h, d_model)
            groups["act_times_grad"].append((p * gp).flatten())
            groups["write_norm"].append((p * writes.norm(dim=-1).T[:, None, :]).flatten())
            groups["direct"].append((p * torch.einsum("khd,qd->hqk", writes, g)).flatten())
            groups["activation"].append(p.flatten())
        result = {}
        for name, parts in groups.items():
            values = torch.cat(parts)
            result[name + "_top"] = values.topk(k).values
            if name != "write_norm":
                result[name + "_bottom"] = values.topk(k, largest=False).values
    return result


def _values(v: Tensor, family: str, n_heads: int, d_head: int) -> Tensor:
    """Values per query head (T, h, dh) from a value projection's (or fused qkv's) output."""
    t = v.shape[0]
    if family == "gpt2":  # c_attn: [q | k | v]
        return v[:, 2 * n_heads * d_head :].reshape(t, n_heads, d_head)
    if family == "neox":  # per head [q | k | v]
        return v.reshape(t, n_heads, 3, d_head)[:, :, 2]
    kv = v.shape[1] // d_head
    return v.reshape(t, kv, d_head).repeat_interleave(n_heads // kv, dim=1)
