"""The local replacement model of an attribution graph, built from the model's public hooks.

For one prompt, the model is made linear in everything an attribution graph has as a node:

- each layer's MLP is replaced by its transcoder (coders.py): the MLP's output (hook point
  `writes(L)`) keeps its value, but gradients no longer flow through the MLP; they flow only
  through the transcoder's skip term (if any) of its input `x_in` (hook point `reads(L)`). The
  output splits into the active latents' writes `a_i * W_dec[i]` (for a cross-layer
  transcoder, from the latents of this and every earlier layer), the decoder bias, the skip
  term and the *error* `mlp_out - reconstruction`, a constant per (layer, position), so the
  output stays exact;
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

from neuron_explainer.debugger.graph.coders import Coders, Transcoders, check_transcoders
from neuron_explainer.models.transformer import Transformer, hook_name

__all__ = ["LayerState", "ReplacementForward"]


@dataclass
class LayerState:
    """One layer of the replacement model for this prompt (batch dimension dropped)."""

    x_in: Tensor  # (T, d_in) the transcoder's input, detached
    latents: Tensor  # (T, n_latents) its activations
    error: Tensor  # (T, d_model) mlp_out - reconstruction


class ReplacementForward:
    """The replacement model's one forward pass over `tokens` (a list of ids), kept alive for
    the backward passes of `vjp`.

    After construction:
      layers[L]          LayerState of layer L
      logits             (T, n_vocab) the model's logits (after any final soft-cap), detached
      final_scale        (T,) the final norm's frozen divisor
    """

    def __init__(self, model: Transformer, transcoders: Transcoders, tokens: Sequence[int]):
        self.coders: Coders = check_transcoders(model, transcoders)
        self.model = model
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
            def fn(x: Tensor) -> Tensor:
                mlp_out[layer] = out = x.detach()
                if not self.coders.has_skip(layer):
                    # a leaf: its gradient is the one to read, and nothing flows into the MLP
                    replaced = out.clone().requires_grad_(True)
                else:
                    skip = self.coders.skip(layer, self.x_in[layer]).to(out.dtype)
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
        for layer in range(n):
            for loc in locations:
                if loc.endswith(".scale"):
                    add(hook_name(loc, layer), frozen)
            add(hook_name("attn.qk_probs", layer), frozen)
            add(self.coders.reads(layer), read(layer))
            # the MLP computes its (replaced) output without building a graph
            add(hook_name("resid.post_mlp_ln", layer), frozen)
            add(self.coders.writes(layer), write(layer))
            add(hook_name("resid.post_mlp", layer), block_output(layer))
        add("resid.ln_f.scale", keep("final_scale"))
        add("resid.ln_f.scale", frozen)
        add("logits", keep("logits"))
        with torch.enable_grad(), model.hooks(fwd=fwd):
            model(ids)
        self.logits = captured["logits"][0]
        self.final_scale = captured["final_scale"][0, :, 0]
        with torch.no_grad():
            x_in = [self.x_in[layer][0].detach() for layer in range(n)]
            latents = [self.coders.encode(layer, x_in[layer]) for layer in range(n)]
            self.layers = [
                LayerState(x_in[layer], latents[layer], self._error(layer, mlp_out[layer][0], latents, x_in[layer]))
                for layer in range(n)
            ]

    def _error(self, layer: int, mlp_out: Tensor, latents: list[Tensor], x_in: Tensor) -> Tensor:
        recon = self.coders.reconstruction(layer, latents, x_in)
        return mlp_out.to(recon.dtype) - recon  # in the coder's precision

    def pre_activations(self, layer: int) -> Tensor:
        """(T, n_latents): layer's transcoder pre-activations (what a feature node's incoming
        edges sum to, with its bias)."""
        with torch.no_grad():
            return self.coders.pre_activations(layer, self.layers[layer].x_in)

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
