"""What the graph needs of its transcoders, for per-layer sets (a list of `SparseCoder`, e.g. a
circuit-tracer transcoder set) and cross-layer transcoders (`CrossLayerTranscoder`) alike.

Layer L's coder reads hook point `reads(L)` and its latents write to the MLP outputs
`writes(L')` of the layers L' in `output_layers(L)`: L alone for a per-layer set, L and every
later layer for a cross-layer transcoder.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Protocol

import torch
from torch import Tensor, nn

from neuron_explainer.models.saes import SparseCoder, load_transcoder_set
from neuron_explainer.models.saes import attach as saes_attach
from neuron_explainer.models.saes.circuit_tracer import transcoder_kind
from neuron_explainer.models.saes.cross_layer import (
    CROSS_LAYER_KIND,
    CrossLayerTranscoder,
    load_cross_layer_transcoder,
)
from neuron_explainer.models.saes.hook_names import HookConventions
from neuron_explainer.models.transformer import Transformer, hook_name

__all__ = ["Coders", "Transcoders", "as_coders", "check_transcoders", "conventions_for", "load_transcoders"]

Transcoders = Sequence[SparseCoder] | CrossLayerTranscoder


class Coders(Protocol):
    n_layers: int

    def reads(self, layer: int) -> str: ...
    def writes(self, layer: int) -> str: ...
    def output_layers(self, layer: int) -> range: ...
    def has_skip(self, layer: int) -> bool: ...
    def skip(self, layer: int, x: Tensor) -> Tensor: ...
    def encode(self, layer: int, x: Tensor) -> Tensor: ...
    def pre_activations(self, layer: int, x: Tensor) -> Tensor: ...
    def encoder_vectors(self, layer: int, latents: Tensor) -> Tensor: ...
    def decoder_vectors(self, layer: int, to: int, latents: Tensor) -> Tensor: ...
    def reconstruction(self, layer: int, latents: list[Tensor], x: Tensor) -> Tensor: ...
    def modules(self) -> list[nn.Module]: ...


def conventions_for(model: Transformer) -> HookConventions:
    """The family facts the meaning of a transcoder file's TransformerLens hook names depends on."""
    return saes_attach.conventions_for(model.cfg)


class _PerLayer:
    def __init__(self, transcoders: Sequence[SparseCoder]):
        self.tcs = list(transcoders)
        self.n_layers = len(self.tcs)

    def reads(self, layer: int) -> str:
        r = self.tcs[layer].reads
        assert r is not None
        return r

    def writes(self, layer: int) -> str:
        w = self.tcs[layer].writes
        assert w is not None
        return w

    def output_layers(self, layer: int) -> range:
        return range(layer, layer + 1)

    def has_skip(self, layer: int) -> bool:
        return self.tcs[layer].has_skip

    def skip(self, layer: int, x: Tensor) -> Tensor:
        tc = self.tcs[layer]
        return x.to(tc.dtype) @ tc.W_skip.T

    def encode(self, layer: int, x: Tensor) -> Tensor:
        tc = self.tcs[layer]
        return tc.encode(x.to(tc.dtype))

    def pre_activations(self, layer: int, x: Tensor) -> Tensor:
        tc = self.tcs[layer]
        return tc.encode_pre_act(x.to(tc.dtype))

    def encoder_vectors(self, layer: int, latents: Tensor) -> Tensor:
        # the gradient of a pre-activation with respect to the input (centred: x - mean(x))
        tc = self.tcs[layer]
        vec = tc.encoder_directions()[latents]
        return vec - vec.mean(-1, keepdim=True) if tc.center_input else vec

    def decoder_vectors(self, layer: int, to: int, latents: Tensor) -> Tensor:
        return self.tcs[layer].decoder_directions()[latents]

    def reconstruction(self, layer: int, latents: list[Tensor], x: Tensor) -> Tensor:
        return self.tcs[layer].decode(latents[layer], x)

    def modules(self) -> list[nn.Module]:
        return list(self.tcs)


class _CrossLayer:
    def __init__(self, clt: CrossLayerTranscoder):
        self.clt = clt
        self.n_layers = clt.n_layers

    def reads(self, layer: int) -> str:
        return self.clt.reads[layer]

    def writes(self, layer: int) -> str:
        return self.clt.writes[layer]

    def output_layers(self, layer: int) -> range:
        return range(layer, self.n_layers)

    def has_skip(self, layer: int) -> bool:
        return self.clt.W_skip is not None

    def skip(self, layer: int, x: Tensor) -> Tensor:
        return self.clt.skip(layer, x)

    def encode(self, layer: int, x: Tensor) -> Tensor:
        return self.clt.encode(layer, x)

    def pre_activations(self, layer: int, x: Tensor) -> Tensor:
        return self.clt.pre_activations(layer, x)

    def encoder_vectors(self, layer: int, latents: Tensor) -> Tensor:
        return self.clt.W_enc[layer][latents]

    def decoder_vectors(self, layer: int, to: int, latents: Tensor) -> Tensor:
        return self.clt.W_dec[layer][latents, to - layer]

    def reconstruction(self, layer: int, latents: list[Tensor], x: Tensor) -> Tensor:
        return self.clt.decode(layer, latents, x)

    def modules(self) -> list[nn.Module]:
        return [self.clt]


def as_coders(transcoders: Transcoders) -> Coders:
    if isinstance(transcoders, CrossLayerTranscoder):
        return _CrossLayer(transcoders)
    return _PerLayer(transcoders)


# Where a transcoder may write: what the MLP adds to the residual stream, or (sandwich norms) the
# MLP's output before its post-norm.
_WRITES = ("resid.delta_mlp", "mlp.out")


def _layer_of(name: str) -> int | None:
    parts = name.split(".")
    return int(parts[1]) if len(parts) > 2 and parts[0] == "blocks" and parts[1].isdigit() else None


def check_transcoders(model: Transformer, transcoders: Transcoders) -> Coders:
    """The coders, or ValueError (one line) unless `transcoders` covers every layer of `model`
    with coders that replace each layer's MLP and whose pre-activations are affine in their
    input."""
    n = model.cfg.n_layers
    if isinstance(transcoders, CrossLayerTranscoder):
        if transcoders.n_layers != n or transcoders.d_model != model.cfg.d_model:
            raise ValueError(
                f"the cross-layer transcoder has {transcoders.n_layers} layers of width {transcoders.d_model}; "
                f"the model {n} of width {model.cfg.d_model}"
            )
    else:
        if len(transcoders) != n:
            raise ValueError(f"an attribution graph needs one transcoder per layer: the model has {n} layers, got {len(transcoders)}")
        for layer, tc in enumerate(transcoders):
            if not tc.is_transcoder:
                raise ValueError(f"layer {layer}: an SAE, not a transcoder (it must read the MLP's input and write its output)")
            if tc.reads is None or tc.writes is None:
                why = "; ".join(tc.info.unmapped_hooks) or "no hook points"
                raise ValueError(f"layer {layer}: the transcoder has no hook point on this model ({why})")
            if tc.normalizer.input_dependent:
                raise ValueError(
                    f"layer {layer}: normalize_activations={tc.normalizer.mode!r} divides by a statistic of each input; "
                    "attribution graphs need transcoders whose pre-activations are affine in their input"
                )
            if tc.n_outputs != model.cfg.d_model:
                raise ValueError(f"layer {layer}: the transcoder writes {tc.n_outputs} dimensions, the model's MLP {model.cfg.d_model}")
    coders = as_coders(transcoders)
    for layer in range(n):
        reads, writes = coders.reads(layer), coders.writes(layer)
        if writes not in (hook_name(loc, layer) for loc in _WRITES):
            raise ValueError(f"layer {layer}: the transcoder writes {writes}, not its layer's MLP output (blocks.{layer}.resid.delta_mlp)")
        block_input = "resid.post_emb" if layer == 0 else hook_name("resid.post_mlp", layer - 1)
        if _layer_of(reads) != layer and reads != block_input:
            raise ValueError(f"layer {layer}: the transcoder reads {reads}, outside its block")
    return coders


def load_transcoders(
    source: str | os.PathLike[str],
    model: Transformer,
    *,
    dtype: torch.dtype | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
) -> Transcoders:
    """A transcoder set or a cross-layer transcoder (circuit-tracer's layouts, told apart by
    config.yaml's model_kind) from a folder or hf://owner/repo[/folder], placed on `model`'s
    family, device and (by default) dtype, checked to fit it; frozen."""
    text = os.fspath(source)
    kind = transcoder_kind(text, cache_dir)
    conventions, device, dtype = conventions_for(model), model.device, dtype or model.dtype
    loaded: Transcoders
    if kind == CROSS_LAYER_KIND:
        loaded = load_cross_layer_transcoder(text, conventions=conventions, device=device, dtype=dtype, cache_dir=cache_dir)
    else:
        tset = load_transcoder_set(text, conventions=conventions, device=device, dtype=dtype, cache_dir=cache_dir)
        loaded = [tc.requires_grad_(False) for tc in tset]
    check_transcoders(model, loaded)
    return loaded
