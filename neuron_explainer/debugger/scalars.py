"""Derived scalars: small pure functions from recorded activations, gradients and weights.

Each entry of SCALARS maps a derived scalar type name (the wire name the API uses) to the node
type it scores, the activations/gradients it needs, and a function returning, for one prompt and
one layer, a tensor whose last axis is the node axis:

  mlp_neuron                     (T, d_mlp)
  attention_head                 (T_query, T_key, heads)   one node per token pair and head
  mlp/attention_autoencoder_latent (T, n_latents)
  layer (the embedding)          (T, 1)                    layerless
  vocab_token                    (T, vocab)                layerless

"final residual grad" is the gradient of the objective at the residual stream after the last
block (before the final LayerNorm); "direct effect" of a node is its write projected on it. With
the final LayerNorm scale detached, the objective is linear in the final residual stream, so the
direct effects of all nodes plus embeddings and biases sum to the objective.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from neuron_explainer.debugger.inference import Recording, Site
from neuron_explainer.models.transformer import Transformer

MLP_LATENTS = "mlp_autoencoder.latents"
ATTN_LATENTS = "attn_autoencoder.latents"


class Weights:
    """Write and read directions of every node kind, from the model interface, in fp32, computed
    once per model and cached."""

    def __init__(self, model: Transformer):
        self.model = model
        self._cache: dict[tuple[str, int], Tensor] = {}

    def _cached(self, key: tuple[str, int], make: Callable[[], Tensor]) -> Tensor:
        if key not in self._cache:
            with torch.no_grad():
                self._cache[key] = make().float()
        return self._cache[key]

    def mlp_write(self, layer: int) -> Tensor:
        """(d_model, d_mlp): column n is what neuron n writes per unit of activation."""
        return self._cached(("mlp", layer), lambda: self.model.mlp_write(layer))

    def mlp_write_norms(self, layer: int) -> Tensor:
        return self._cached(("mlp_norms", layer), lambda: self.mlp_write(layer).norm(dim=0))

    def latent_write_norms(self, kind: str, layer: int) -> Tensor:
        return self._cached((kind + "_norms", layer), lambda: self.latent_write(kind, layer).norm(dim=0))

    def head_write(self, layer: int) -> Tensor:
        """(heads, d_head, d_model): W_O split by head."""
        return self._cached(("head", layer), lambda: self.model.head_write(layer))

    def latent_write(self, kind: str, layer: int) -> Tensor:
        """(d_model, n_latents): a latent's write to the residual stream."""

        def make() -> Tensor:
            ae, reads = self.autoencoder(kind, layer)
            rows = ae.write_directions()
            if rows is None:
                raise ValueError(f"the {kind} latents of layer {layer} write a direction that depends on the input")
            decoder = rows.T.float()  # (n_inputs, n_latents)
            return self.mlp_write(layer) @ decoder if reads == "mlp.post_act" else decoder

        return self._cached((kind, layer), make)

    def read_embeddings(self, directions: Tensor) -> Tensor:
        """(n, vocab): each direction (n, d_model) dotted with every token embedding as a block's
        input norm sees it before its gain."""
        return self.model.read_tokens(directions)

    def autoencoder(self, kind: str, layer: int) -> tuple[Any, str]:
        """The autoencoder producing latents `kind` at `layer` and the location it reads."""
        name = f"blocks.{layer}.{kind}"
        for a in self.model.attachments():
            if a.latents == name:
                return a.coder, a.reads.split(".", 2)[2]
        raise KeyError(f"no autoencoder produces {name}")

    def latent_sublayer(self, kind: str, layer: int) -> str | None:
        """The sublayer whose post-norm a latent's write still passes through ("mlp" for latents
        of MLP activations), or None when it reads what joins the residual stream."""
        return "mlp" if self.autoencoder(kind, layer)[1] == "mlp.post_act" else None


@dataclass(frozen=True)
class ScalarType:
    node_type: str
    layered: bool
    acts: tuple[str, ...]  # locations whose activations are needed
    grads: tuple[str, ...]  # locations whose gradients are needed
    fn: Callable[[Recording, Weights, int | None], Tensor]


def _act(rec: Recording, location: str, layer: int | None) -> Tensor:
    return rec.activations[Site(location, layer)].float()


def _grad(rec: Recording, location: str, layer: int | None) -> Tensor:
    return rec.gradients[Site(location, layer)].float()


# Stand-ins in ScalarType.acts for the per-token divisor of a sublayer's writes (sandwich norms);
# `sites_needed` turns them into the model's hook location, or drops them when there is none.
MLP_WRITE_SCALE = "<mlp write scale>"
ATTN_WRITE_SCALE = "<attn write scale>"
_WRITE_SCALES = {MLP_WRITE_SCALE: "mlp", ATTN_WRITE_SCALE: "attn"}


def _write_scale(rec: Recording, w: Weights, layer: int, sublayer: str | None) -> Tensor | None:
    """(T, 1): what divides `sublayer`'s writes at each token before they join the residual
    stream (its post-norm's scale, held constant), or None."""
    location = w.model.write_scale_location(sublayer) if sublayer else None
    return None if location is None else _act(rec, location, layer)


def _scaled(x: Tensor, scale: Tensor | None) -> Tensor:
    """Per-token values (T, ...) divided by a per-token scale (T, 1)."""
    if scale is None:
        return x
    return x / scale.reshape(scale.shape[0], *([1] * (x.ndim - 1)))


def final_grad_site(n_layers: int) -> Site:
    return Site("resid.post_mlp", n_layers - 1)


def _final_grad(rec: Recording, w: Weights) -> Tensor:
    return rec.gradients[final_grad_site(w.model.cfg.n_layers)].float()  # (T, d_model)


# ---- embeddings: one "layer" node per token
def emb_norm(rec: Recording, w: Weights, layer: int | None) -> Tensor:
    return _act(rec, "resid.post_emb", None).norm(dim=-1, keepdim=True)


def emb_act_times_grad(rec: Recording, w: Weights, layer: int | None) -> Tensor:
    return (_act(rec, "resid.post_emb", None) * _grad(rec, "resid.post_emb", None)).sum(-1, keepdim=True)


def emb_direct(rec: Recording, w: Weights, layer: int | None) -> Tensor:
    return (_act(rec, "resid.post_emb", None) * _final_grad(rec, w)).sum(-1, keepdim=True)


def always_one(rec: Recording, w: Weights, layer: int | None) -> Tensor:
    return torch.ones(len(rec.tokens), 1, device=w.model.device)


# ---- MLP neurons
def mlp_post_act(rec: Recording, w: Weights, layer: int | None) -> Tensor:
    return _act(rec, "mlp.post_act", layer)


def mlp_pre_act(rec: Recording, w: Weights, layer: int | None) -> Tensor:
    return _act(rec, "mlp.pre_act", layer)


def mlp_write_norm(rec: Recording, w: Weights, layer: int | None) -> Tensor:
    assert layer is not None
    norms = _act(rec, "mlp.post_act", layer).abs() * w.mlp_write_norms(layer)
    return _scaled(norms, _write_scale(rec, w, layer, "mlp"))


def mlp_act_times_grad(rec: Recording, w: Weights, layer: int | None) -> Tensor:
    return _act(rec, "mlp.post_act", layer) * _grad(rec, "mlp.post_act", layer)


def _project_on_final_grad(rec: Recording, w: Weights, writes: Tensor) -> Tensor:
    """final_grad @ writes, (T, d_model) @ (d_model, n), skipping tokens whose gradient is zero
    (with a loss at the last token, all but one)."""
    g = _final_grad(rec, w)
    rows = g.abs().sum(-1).nonzero().flatten()
    out = g.new_zeros(g.shape[0], writes.shape[1])
    out[rows] = g[rows] @ writes
    return out


def mlp_direct(rec: Recording, w: Weights, layer: int | None) -> Tensor:
    assert layer is not None
    direct = _act(rec, "mlp.post_act", layer) * _project_on_final_grad(rec, w, w.mlp_write(layer))
    return _scaled(direct, _write_scale(rec, w, layer, "mlp"))


# ---- attention heads, one node per (query token, key token, head)
def attn_probs(rec: Recording, w: Weights, layer: int | None) -> Tensor:
    return _act(rec, "attn.qk_probs", layer)


def attn_logits(rec: Recording, w: Weights, layer: int | None) -> Tensor:
    return _act(rec, "attn.qk_logits", layer)


def _value_writes(rec: Recording, w: Weights, layer: int) -> Tensor:
    """(T_key, heads, d_model): what each (query) head writes per unit of attention to each key,
    before any post-norm's per-query scale."""
    key = ("_value_writes", layer)
    if key not in rec.derived:
        values = w.model.expand_kv(_act(rec, "attn.v", layer))  # (T_key, heads, d_head)
        rec.derived[key] = torch.einsum("khe,hed->khd", values, w.head_write(layer))
    return rec.derived[key]


def attn_write_norm(rec: Recording, w: Weights, layer: int | None) -> Tensor:
    assert layer is not None
    # the write of (q, k, h) is probs[q, k, h] * value_write[k, h]: a scalar times a vector
    norms = _act(rec, "attn.qk_probs", layer) * _value_writes(rec, w, layer).norm(dim=-1)
    return _scaled(norms, _write_scale(rec, w, layer, "attn"))


def attn_act_times_grad(rec: Recording, w: Weights, layer: int | None) -> Tensor:
    return _act(rec, "attn.qk_probs", layer) * _grad(rec, "attn.qk_probs", layer)


def attn_direct(rec: Recording, w: Weights, layer: int | None) -> Tensor:
    assert layer is not None
    g = _final_grad(rec, w)
    rows = g.abs().sum(-1).nonzero().flatten()
    projected = g.new_zeros(g.shape[0], *_value_writes(rec, w, layer).shape[:2])
    projected[rows] = torch.einsum("khd,qd->qkh", _value_writes(rec, w, layer), g[rows])
    return _scaled(_act(rec, "attn.qk_probs", layer) * projected, _write_scale(rec, w, layer, "attn"))


# ---- autoencoder latents (kind = MLP_LATENTS or ATTN_LATENTS)
def _latent_fns(kind: str) -> dict[str, Callable[[Recording, Weights, int | None], Tensor]]:
    def act(rec: Recording, w: Weights, layer: int | None) -> Tensor:
        return _act(rec, kind, layer)

    def write_norm(rec: Recording, w: Weights, layer: int | None) -> Tensor:
        assert layer is not None
        norms = _act(rec, kind, layer).abs() * w.latent_write_norms(kind, layer)
        return _scaled(norms, _write_scale(rec, w, layer, w.latent_sublayer(kind, layer)))

    def act_times_grad(rec: Recording, w: Weights, layer: int | None) -> Tensor:
        return _act(rec, kind, layer) * _grad(rec, kind, layer)

    def direct(rec: Recording, w: Weights, layer: int | None) -> Tensor:
        assert layer is not None
        direct = _act(rec, kind, layer) * _project_on_final_grad(rec, w, w.latent_write(kind, layer))
        return _scaled(direct, _write_scale(rec, w, layer, w.latent_sublayer(kind, layer)))

    return {"latent": act, "write_norm": write_norm, "act_times_grad": act_times_grad, "direct": direct}


# ---- vocabulary
def logits(rec: Recording, w: Weights, layer: int | None) -> Tensor:
    return _act(rec, "logits", None)


def token_write_to_input_direction(rec: Recording, w: Weights, layer: int | None) -> Tensor:
    """How much each vocabulary token's embedding, put at each position, would move the
    objective: the token embedding matrix applied to the gradient at the embeddings."""
    return _grad(rec, "resid.post_emb", None) @ w.model.token_embeddings().float().T


_FINAL = "resid.post_mlp"  # gradient site of the final residual stream (last layer)


def _make_table() -> dict[str, ScalarType]:
    t: dict[str, ScalarType] = {
        "resid_post_embedding_norm": ScalarType("layer", False, ("resid.post_emb",), (), emb_norm),
        "token_attribution": ScalarType("layer", False, ("resid.post_emb",), ("resid.post_emb",), emb_act_times_grad),
        "resid_post_embedding_proj_to_final_residual_grad": ScalarType("layer", False, ("resid.post_emb",), (_FINAL,), emb_direct),
        "always_one": ScalarType("layer", False, (), (), always_one),
        "mlp_post_act": ScalarType("mlp_neuron", True, ("mlp.post_act",), (), mlp_post_act),
        "mlp_pre_act": ScalarType("mlp_neuron", True, ("mlp.pre_act",), (), mlp_pre_act),
        "mlp_write_norm": ScalarType("mlp_neuron", True, ("mlp.post_act", MLP_WRITE_SCALE), (), mlp_write_norm),
        "mlp_act_times_grad": ScalarType("mlp_neuron", True, ("mlp.post_act",), ("mlp.post_act",), mlp_act_times_grad),
        "mlp_write_to_final_residual_grad": ScalarType("mlp_neuron", True, ("mlp.post_act", MLP_WRITE_SCALE), (_FINAL,), mlp_direct),
        "attn_qk_probs": ScalarType("attention_head", True, ("attn.qk_probs",), (), attn_probs),
        "attn_qk_logits": ScalarType("attention_head", True, ("attn.qk_logits",), (), attn_logits),
        "unflattened_attn_write_norm": ScalarType("attention_head", True, ("attn.qk_probs", "attn.v", ATTN_WRITE_SCALE), (), attn_write_norm),
        "unflattened_attn_act_times_grad": ScalarType("attention_head", True, ("attn.qk_probs",), ("attn.qk_probs",), attn_act_times_grad),
        "unflattened_attn_write_to_final_residual_grad": ScalarType("attention_head", True, ("attn.qk_probs", "attn.v", ATTN_WRITE_SCALE), (_FINAL,), attn_direct),
        "logits": ScalarType("vocab_token", False, ("logits",), (), logits),
        "vocab_token_write_to_input_direction": ScalarType("vocab_token", False, (), ("resid.post_emb",), token_write_to_input_direction),
    }
    for prefix, kind, node_type in (
        ("online_mlp_autoencoder", MLP_LATENTS, "mlp_autoencoder_latent"),
        ("online_attention_autoencoder", ATTN_LATENTS, "attention_autoencoder_latent"),
    ):
        f = _latent_fns(kind)
        # latents of MLP activations write through the MLP's post-norm, if there is one
        writes = (kind, MLP_WRITE_SCALE) if kind == MLP_LATENTS else (kind,)
        t[f"{prefix}_latent"] = ScalarType(node_type, True, (kind,), (), f["latent"])
        t[f"{prefix}_write_norm"] = ScalarType(node_type, True, writes, (), f["write_norm"])
        t[f"{prefix}_act_times_grad"] = ScalarType(node_type, True, (kind,), (kind,), f["act_times_grad"])
        t[f"{prefix}_write_to_final_residual_grad"] = ScalarType(node_type, True, writes, (_FINAL,), f["direct"])
    return t


SCALARS: dict[str, ScalarType] = _make_table()


def sites_needed(names: list[str], model: Transformer) -> tuple[set[Site], set[Site]]:
    """Activation and gradient sites that computing the scalars `names` on `model` requires."""
    n_layers = model.cfg.n_layers
    acts: set[Site] = set()
    grads: set[Site] = set()
    for name in names:
        st = SCALARS[name]
        for target, locations in ((acts, st.acts), (grads, st.grads)):
            for loc in locations:
                if loc in _WRITE_SCALES:
                    scale = model.write_scale_location(_WRITE_SCALES[loc])
                    if scale is not None:
                        target.update(Site(scale, layer) for layer in range(n_layers))
                elif loc == _FINAL and target is grads:
                    target.add(final_grad_site(n_layers))
                elif st.layered:
                    target.update(Site(loc, layer) for layer in range(n_layers))
                else:
                    target.add(Site(loc, None))
    return acts, grads


def compute(name: str, rec: Recording, w: Weights, layer: int | None) -> Tensor:
    """The scalar `name` at `layer` for one recording, computed once and then cached on it."""
    key = (name, layer)
    if key not in rec.derived:
        with torch.no_grad():
            rec.derived[key] = SCALARS[name].fn(rec, w, layer)
    return rec.derived[key]
