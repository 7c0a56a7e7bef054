"""The local replacement model of an attribution graph, built from the model's public hooks.

For one prompt, the model is made linear in everything an attribution graph has as a node:

- each layer's MLP is replaced by its transcoder: the MLP's output (hook point `tc.writes`)
  keeps its value, but gradients no longer flow through the MLP; they flow only through the
  transcoder's skip term `x_in @ W_skip.T` (if any), `x_in` being the transcoder's input (hook
  point `tc.reads`). The output splits into the active latents' writes `a_i * W_dec[i]`, the
  decoder bias, the skip term and the *error* `mlp_out - reconstruction`, a constant per
  (layer, position), so the output stays exact;
- attention patterns (`attn.qk_probs`) and every norm's divisor (`*.scale`) are frozen
  (detached at their values for this prompt), so attention mixes values linearly and norms
  are affine.

What is left between nodes is residual stream, attention value paths, frozen norms and skip
terms: all linear, so a node's direct effect on another is exactly its activation times a
gradient of the replacement model, and gradients of many targets come from one backward pass
(`ReplacementForward.vjp`, batched with `torch.autograd.grad(..., is_grads_batched=True)`).

The forward pass runs once, with batch size 1; only the backward passes are batched. The
residual stream is split at block boundaries (r_0 = the embeddings, r_{L+1} = block L's output)
so that a backward pass walks down one block at a time and only ever holds one block's
gradients (memory O(batch * tokens * d_model), whatever the depth).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from neuron_explainer.models.saes import SparseCoder
from neuron_explainer.models.saes.hook_names import HookConventions
from neuron_explainer.models.transformer import Transformer, hook_name

__all__ = ["ReplacementForward", "check_transcoders", "conventions_for"]


def conventions_for(model: Transformer) -> HookConventions:
    """The family facts the meaning of a transcoder file's TransformerLens hook names depends on
    (pass them to `load_transcoder_set` so that `reads` / `writes` fit this model)."""
    cfg = model.cfg
    return HookConventions(
        parallel_attn_mlp=cfg.parallel, norms_after_sublayers=cfg.sandwich_norms, rms_norm=cfg.norm == "rmsnorm"
    )


def _layer_of(name: str) -> int | None:
    parts = name.split(".")
    return int(parts[1]) if len(parts) > 2 and parts[0] == "blocks" and parts[1].isdigit() else None


# Where a transcoder may write: what the MLP adds to the residual stream, or (sandwich norms) the
# MLP's output before its post-norm.
_WRITES = ("resid.delta_mlp", "mlp.out")


def check_transcoders(model: Transformer, transcoders: Sequence[SparseCoder]) -> None:
    """Raise ValueError (one line) unless `transcoders` is one per-layer transcoder for every
    layer of `model`, each replacing its layer's MLP with a linear encoder input."""
    n = model.cfg.n_layers
    if len(transcoders) != n:
        raise ValueError(f"an attribution graph needs one transcoder per layer: the model has {n} layers, got {len(transcoders)}")
    for layer, tc in enumerate(transcoders):
        if not tc.is_transcoder:
            raise ValueError(f"layer {layer}: an SAE, not a transcoder (it must read the MLP's input and write its output)")
        if tc.reads is None or tc.writes is None:
            why = "; ".join(tc.info.unmapped_hooks) or "no hook points"
            raise ValueError(f"layer {layer}: the transcoder has no hook point on this model ({why})")
        if tc.writes not in (hook_name(loc, layer) for loc in _WRITES):
            raise ValueError(f"layer {layer}: the transcoder writes {tc.writes}, not its layer's MLP output (blocks.{layer}.resid.delta_mlp)")
        block_input = "resid.post_emb" if layer == 0 else hook_name("resid.post_mlp", layer - 1)
        if _layer_of(tc.reads) != layer and tc.reads != block_input:
            raise ValueError(f"layer {layer}: the transcoder reads {tc.reads}, outside its block")
        if tc.normalizer.input_dependent:
            raise ValueError(
                f"layer {layer}: normalize_activations={tc.normalizer.mode!r} divides by a statistic of each input; "
                "attribution graphs need transcoders whose pre-activations are affine in their input"
            )
        d = model.cfg.d_model
        if tc.n_outputs != d:
            raise ValueError(f"layer {layer}: the transcoder writes {tc.n_outputs} dimensions, the model's MLP {d}")


@dataclass
class LayerState:
    """One layer of the replacement model for this prompt (batch dimension dropped)."""

    x_in: Tensor  # (T, d_in) the transcoder's input, detached
    latents: Tensor  # (T, n_latents) its activations
    error: Tensor  # (T, d_model) mlp_out - reconstruction


class _Stop(Exception):
    """Raised by a hook to end a forward pass early."""


class ReplacementForward:
    """The replacement model's one forward pass over `tokens` (a list of ids), kept alive for
    the backward passes of `vjp`.

    After construction:
      layers[L]          LayerState of layer L
      logits             (T, n_vocab) the model's logits (after any final soft-cap), detached
      final_scale        (T,) the final norm's frozen divisor
    """

    def __init__(self, model: Transformer, transcoders: Sequence[SparseCoder], tokens: Sequence[int]):
        check_transcoders(model, transcoders)
        self.model = model
        self.transcoders = list(transcoders)
        self.n_layers = n = model.cfg.n_layers
        self.tokens = [int(t) for t in tokens]
        ids = torch.tensor([self.tokens], device=model.device)
        self.n_pos = int(ids.shape[1])
        self.resid: list[Tensor] = []  # r_0 .. r_n, each (1, T, d_model), in the autograd graph
        self.x_in: list[Tensor] = [torch.empty(0)] * n  # each (1, T, d_in), in the graph
        self.writes: list[Tensor] = [torch.empty(0)] * n  # each (1, T, d_model), in the graph
        mlp_out: list[Tensor] = [torch.empty(0)] * n
        captured: dict[str, Tensor] = {}

        def embed(x: Tensor) -> Tensor:
            leaf = x.detach().requires_grad_(True)
            self.resid.append(leaf)
            return leaf

        def block_output(layer: int) -> Callable[[Tensor], None]:
            def fn(x: Tensor) -> None:
                assert len(self.resid) == layer + 1, "the residual stream is split at each block's output"
                self.resid.append(x)

            return fn

        def read(layer: int) -> Callable[[Tensor], None]:
            def fn(x: Tensor) -> None:
                self.x_in[layer] = x

            return fn

        def write(layer: int) -> Callable[[Tensor], Tensor]:
            tc = self.transcoders[layer]

            def fn(x: Tensor) -> Tensor:
                mlp_out[layer] = out = x.detach()
                if not tc.has_skip:
                    # a leaf: its gradient is the one to read, and nothing flows into the MLP
                    replaced = out.clone().requires_grad_(True)
                else:
                    skip = (self.x_in[layer].to(tc.dtype) @ tc.W_skip.T).to(out.dtype)
                    replaced = skip + (out - skip).detach()
                self.writes[layer] = replaced
                return replaced

            return fn

        def keep(name: str) -> Callable[[Tensor], None]:
            def fn(x: Tensor) -> None:
                captured[name] = x.detach()

            return fn

        def frozen(x: Tensor) -> Tensor:
            return x.detach()

        fwd: dict[str, list[Callable[[Tensor], Tensor | None]]] = {"resid.post_emb": [embed]}

        def add(name: str, fn: Callable[[Tensor], Tensor | None]) -> None:
            fwd.setdefault(name, []).append(fn)

        locations = model.block_locations()
        for layer, tc in enumerate(self.transcoders):
            assert tc.reads is not None and tc.writes is not None  # check_transcoders
            for loc in locations:
                if loc.endswith(".scale"):
                    add(hook_name(loc, layer), frozen)
            add(hook_name("attn.qk_probs", layer), frozen)
            add(tc.reads, read(layer))
            # the MLP computes its (replaced) output without building a graph
            add(hook_name("resid.post_mlp_ln", layer), frozen)
            add(tc.writes, write(layer))
            add(hook_name("resid.post_mlp", layer), block_output(layer))
        add("resid.ln_f.scale", keep("final_scale"))
        add("resid.ln_f.scale", frozen)
        add("logits", keep("logits"))
        with torch.enable_grad(), model.hooks(fwd=fwd):
            model(ids)
        self.logits = captured["logits"][0]
        self.final_scale = captured["final_scale"][0, :, 0]
        with torch.no_grad():
            self.layers = [self._layer_state(layer, mlp_out[layer][0]) for layer in range(n)]

    def _layer_state(self, layer: int, mlp_out: Tensor) -> LayerState:
        tc = self.transcoders[layer]
        x_in = self.x_in[layer][0].detach()
        latents = tc.encode(x_in.to(tc.dtype))
        error = mlp_out.to(tc.dtype) - tc.decode(latents, x_in)
        return LayerState(x_in=x_in, latents=latents, error=error)

    def encoder_vectors(self, layer: int, latents: Tensor) -> Tensor:
        """(k, d_in): the gradients of those latents' pre-activations with respect to the
        transcoder's input (the encoder rows; centred for coders that centre their input)."""
        tc = self.transcoders[layer]
        vec = tc.encoder_directions()[latents]
        return vec - vec.mean(-1, keepdim=True) if tc.center_input else vec

    def pre_activations(self, layer: int) -> Tensor:
        """(T, n_latents): layer's transcoder pre-activations (what a feature node's incoming
        edges sum to, with its bias)."""
        tc = self.transcoders[layer]
        with torch.no_grad():
            return tc.encode_pre_act(self.layers[layer].x_in.to(tc.dtype))

    def vjp(
        self,
        inject_inputs: dict[int, Tensor],
        inject_final: Tensor | None,
        on_write: Callable[[int, Tensor], None],
        on_embedding: Callable[[Tensor], None],
    ) -> None:
        """One batched backward pass of the replacement model.

        `inject_inputs[L]` (B, T, d_in) is a cotangent at layer L's transcoder input and
        `inject_final` (B, T, d_model) one at the final residual stream (before the final
        norm); row b of the batch is one target node. As the pass walks down, `on_write(L, g)`
        gets the gradient (B, T, d_model) at layer L's MLP write and, at the end,
        `on_embedding(g)` the gradient at the embeddings."""
        top = self.n_layers - 1 if inject_final is not None else max(inject_inputs)
        g: Tensor | None = inject_final
        for layer in range(top, -1, -1):
            outputs: list[Tensor] = []
            cotangents: list[Tensor] = []
            if g is not None:
                outputs.append(self.resid[layer + 1])
                cotangents.append(g[:, None].to(self.resid[layer + 1].dtype))
            if layer in inject_inputs:
                outputs.append(self.x_in[layer])
                cotangents.append(inject_inputs[layer][:, None].to(self.x_in[layer].dtype))
            if not outputs:
                continue
            inputs = [self.resid[layer]] + ([self.writes[layer]] if g is not None else [])
            grads = torch.autograd.grad(
                outputs, inputs, cotangents, retain_graph=True, allow_unused=True, materialize_grads=True, is_grads_batched=True
            )
            if g is not None:
                on_write(layer, grads[1][:, 0])
            g = grads[0][:, 0]
        if g is not None:
            on_embedding(g)

    def release(self) -> None:
        """Drop the autograd graph."""
        self.resid, self.x_in, self.writes = [], [], []
