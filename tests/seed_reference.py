"""Independent computations of the seed's definitions, for the tests that check the debugger's
numbers: weights and modules from `transformers` (the random checkpoints of
`models.random_models`), activations and gradients from plain forward hooks on our model that
detach what the seed holds constant (norm scales), never through the debugger's own machinery.

The seed's definitions (neuron_explainer/activations/derived_scalars in OpenAI's code):
- a node's write: its activation times its write vector (an MLP neuron's output-matrix column,
  a latent's decoder column, through the output matrix for latents of MLP activations, a head's
  probability times its value through its slice of the output matrix); write norm = activation x
  ||write vector|| (signed);
- act x grad: the activation times the gradient of what is differentiated;
- direct effect: the write projected on the gradient of what is differentiated at the residual
  stream after the last block, or, tracing a node, just before the node's sublayer; zero for
  nodes that come after that point;
- tracing: a neuron's pre-activation, an attention score (through Q, K or both), a latent's
  pre-activation, with the scale of the norm in front of it held constant; through V: the head's
  direct effect (its probability held) on the gradient of the loss or of a downstream node at
  the residual stream just before it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

GATED = {"llama", "llama_tied", "qwen2", "qwen3", "mistral", "gemma2"}
LAYERNORM = {"gpt2", "gpt_neox", "gpt_neox_sequential"}


def hf_layers(hf: Any) -> Any:
    base = getattr(hf, "model", None) or getattr(hf, "gpt_neox", None) or hf.transformer
    return getattr(base, "layers", None) or base.h


def _gain(norm: Any, family: str) -> Tensor:
    return 1 + norm.weight if family == "gemma2" else norm.weight


def mlp_write_matrix(family: str, hf: Any, layer: int) -> Tensor:
    """(d_model, d_mlp): neuron n writes column n per unit of activation (through a post-norm's
    gain under sandwich norms)."""
    blk = hf_layers(hf)[layer]
    if family == "gpt2":
        w = blk.mlp.c_proj.weight.T  # Conv1D stores (in, out)
    elif family.startswith("gpt_neox"):
        w = blk.mlp.dense_4h_to_h.weight
    else:
        w = blk.mlp.down_proj.weight
    if family == "gemma2":
        w = w * _gain(blk.post_feedforward_layernorm, family)[:, None]
    return w.detach().float()


def head_write_matrix(family: str, hf: Any, layer: int, head: int, d_head: int) -> Tensor:
    """(d_model, d_head): what head `head`'s value output writes."""
    blk = hf_layers(hf)[layer]
    if family == "gpt2":
        w = blk.attn.c_proj.weight.T
    elif family.startswith("gpt_neox"):
        w = blk.attention.dense.weight
    else:
        w = blk.self_attn.o_proj.weight
    if family == "gemma2":
        w = w * _gain(blk.post_attention_layernorm, family)[:, None]
    return w[:, head * d_head : (head + 1) * d_head].detach().float()


def token_embeddings(family: str, hf: Any) -> Tensor:
    e = hf.get_input_embeddings().weight.detach()
    if family == "gemma2":  # Gemma scales its embeddings by sqrt(d_model), in their dtype
        e = e * torch.tensor(hf.config.hidden_size**0.5, dtype=e.dtype)
    return e.float()


def logit_lens(family: str, hf: Any, writes: Tensor) -> Tensor:
    """(n, vocab): residual-stream vectors through the final norm (its scale held constant) and
    the unembedding, before any soft-cap."""
    base = getattr(hf, "model", None) or getattr(hf, "gpt_neox", None) or hf.transformer
    norm = getattr(base, "ln_f", None) or getattr(base, "final_layer_norm", None) or base.norm
    w = writes.float()
    if family in LAYERNORM:
        w = w - w.mean(-1, keepdim=True)
    return (w * _gain(norm, family).detach().float()) @ hf.get_output_embeddings().weight.detach().float().T


def mlp_input_norm(family: str, hf: Any, layer: int) -> Any:
    blk = hf_layers(hf)[layer]
    if family == "gpt2":
        return blk.ln_2
    if family == "gemma2":
        return blk.pre_feedforward_layernorm
    return blk.post_attention_layernorm


def mlp_post_act(family: str, hf: Any, layer: int, y: Tensor) -> Tensor:
    """The MLP's activations (what its down projection reads) of the MLP input norm's output."""
    mlp = hf_layers(hf)[layer].mlp
    if family == "gpt2":
        return mlp.act(mlp.c_fc(y))
    if family.startswith("gpt_neox"):
        return mlp.act(mlp.dense_h_to_4h(y))
    return mlp.act_fn(mlp.gate_proj(y)) * mlp.up_proj(y)


def mlp_traced(family: str, hf: Any, layer: int, y: Tensor) -> Tensor:
    """What tracing a neuron differentiates: its pre-activation, or a gated one's activation."""
    mlp = hf_layers(hf)[layer].mlp
    if family == "gpt2":
        return mlp.c_fc(y)
    if family.startswith("gpt_neox"):
        return mlp.dense_h_to_4h(y)
    return mlp_post_act(family, hf, layer, y)


# ---------------------------------------------------------------------- one hooked pass


@dataclass
class Pass:
    """One forward pass of our model through plain hooks: `acts[hook name]` (batch row 0 kept
    attached, so gradients can be taken), optional ablations and detached scales, and
    gradients after `backward(objective)`."""

    model: Any
    tokens: list[int]
    record: set[str] = field(default_factory=set)
    ablate: dict[str, Callable[[Tensor], Tensor]] = field(default_factory=dict)
    detach: set[str] = field(default_factory=set)
    cut: set[str] = field(default_factory=set)  # activations whose graph is cut (Q / K traces)
    acts: dict[str, Tensor] = field(default_factory=dict)
    logits: Tensor | None = None

    def run(self) -> Pass:
        fwd: dict[str, Any] = {}
        for name in self.record | set(self.ablate) | self.detach | self.cut | {"resid.post_emb"}:
            fwd[name] = self._hook(name)
        with self.model.hooks(fwd=fwd):
            self.logits = self.model(torch.tensor([self.tokens]))
        return self

    def _hook(self, name: str) -> Callable[[Tensor], Tensor]:
        def fn(x: Tensor) -> Tensor:
            if name == "resid.post_emb":
                x = x.detach().requires_grad_(True)
            if name in self.ablate:
                x = self.ablate[name](x)
            if name in self.detach or name in self.cut:
                x = x.detach()
            if x.requires_grad and not x.is_leaf:
                x.retain_grad()
            self.acts[name] = x
            return x

        return fn

    def grads(self, objective: Tensor) -> dict[str, Tensor]:
        names = [n for n, x in self.acts.items() if x.requires_grad]
        got = torch.autograd.grad(objective, [self.acts[n] for n in names], allow_unused=True, retain_graph=True)
        return {n: (torch.zeros_like(self.acts[n]) if g is None else g)[0].detach() for n, g in zip(names, got, strict=True)}

    def act(self, name: str) -> Tensor:
        return self.acts[name][0].detach().float()
