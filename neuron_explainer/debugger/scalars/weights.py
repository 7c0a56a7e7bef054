"""Write and read directions of every node kind, from the model interface (and the attached
autoencoders), in fp32, computed once per model and cached; the sublayers' write matrices are
held only where they are views of the weights (`_cached_if_view`)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from neuron_explainer.debugger import head_writes as hw
from neuron_explainer.debugger.scalars.base import (
    ATTN,
    MLP,
    RESID_POST_ATTN,
    RESID_POST_MLP,
    Unsupported,
)
from neuron_explainer.debugger.scalars.kinds import BY_HOOK, LATENT_KINDS, LatentKind
from neuron_explainer.models.transformer import Transformer

# What an autoencoder may read for its latents' writes to be defined here, and the sublayer
# whose input its latents depend on: an MLP's or attention's output (OpenAI's kinds), or an MLP's
# input (transcoders, which write the MLP's output).
_READS_SUBLAYER = {
    "mlp.post_act": "mlp", "resid.delta_mlp": "mlp", "resid.delta_attn": "attn",
    "mlp_ln.normalized": "mlp", "resid.post_mlp_ln": "mlp",
}
# SAEs on the residual stream read no sublayer: where in the layer they sit
_RESID_POINTS = {"resid.post_attn": RESID_POST_ATTN, "resid.post_mlp": RESID_POST_MLP}


_COLUMNS = 256  # neurons' writes made at once where the whole matrix would be a copy


class Weights:
    def __init__(self, model: Transformer):
        self.model = model
        self._cache: dict[tuple[Any, ...], Tensor] = {}
        self._weight_storages: set[int] | None = None

    def _cached(self, key: tuple[Any, ...], make: Callable[[], Tensor]) -> Tensor:
        if key not in self._cache:
            with torch.no_grad():
                self._cache[key] = make().float()
        return self._cache[key]

    # ------------------------------------------------------------------ MLP and heads

    def _cached_if_view(self, key: tuple[Any, ...], make: Callable[[], Tensor]) -> Tensor:
        """`make()` in fp32, kept only when it is a view of the model's own weights: a copy (a
        write scaled by a post-norm's gain, or one in another dtype) is an elementwise product,
        cheaper to redo than to hold (Gemma-2-small-sized: 140 MB for every layer's)."""
        hit = self._cache.get(key)
        if hit is not None:
            return hit
        with torch.no_grad():
            t = make().float()
        if self._weight_storages is None:
            self._weight_storages = {p.untyped_storage().data_ptr() for p in self.model.parameters()}
        if t.untyped_storage().data_ptr() in self._weight_storages:
            self._cache[key] = t
        return t

    def mlp_write(self, layer: int) -> Tensor:
        """(d_model, d_mlp): column n is what neuron n writes per unit of activation."""
        return self._cached_if_view(("mlp", layer), lambda: self.model.mlp_write(layer))

    def mlp_write_onto(self, layer: int) -> Tensor | Callable[[Tensor], Tensor]:
        """What `project_on` takes to dot directions with every neuron's write: the held matrix,
        or the model's product that needs no gain-scaled copy of it."""
        held = self._cache.get(("mlp", layer))
        return held if held is not None else (lambda d: self.model.mlp_write_onto(layer, d))

    def mlp_write_columns(self, layer: int, neurons: Tensor) -> Tensor:
        """(d_model, m): the writes of some neurons (without making every neuron's)."""
        if ("mlp", layer) in self._cache:
            return self._cache[("mlp", layer)][:, neurons]
        with torch.no_grad():
            return self.model.mlp_write_columns(layer, neurons).float()

    def mlp_write_norms(self, layer: int) -> Tensor:
        def make() -> Tensor:  # a few columns at a time: no copy of the whole matrix
            n = self.model.cfg.d_mlp
            device = self.model.device
            return torch.cat([
                self.mlp_write_columns(layer, torch.arange(s, min(s + _COLUMNS, n), device=device)).norm(dim=0)
                for s in range(0, n, _COLUMNS)
            ])

        return self._cached(("mlp_norms", layer), make)

    def head_write(self, layer: int) -> Tensor:
        """(heads, d_head, d_model): W_O split by head."""
        return self._cached_if_view(("head", layer), lambda: self.model.head_write(layer))

    def head_write_gram(self, layer: int) -> Tensor:
        """(heads, d_head, d_head): W_h W_h^T (write norms without the writes)."""
        return self._cached(("head_gram", layer), lambda: hw.head_write_gram(self.head_write(layer)))

    # ---------------------------------------------------------------------- latents

    def autoencoder(self, kind: str, layer: int) -> tuple[Any, str]:
        """The autoencoder producing latents `kind` (a LatentKind.hook) at `layer` and the
        location it reads; KeyError if there is none."""
        name = f"blocks.{layer}.{kind}"
        for a in self.model.attachments():
            if a.latents == name:
                return a.coder, a.reads.split(".", 2)[2]
        raise KeyError(f"no autoencoder produces {name}")

    def latent_layers(self, kind: str) -> list[int]:
        layers = []
        for a in self.model.attachments():
            parts = a.latents.split(".", 2)
            if len(parts) == 3 and parts[2] == kind and parts[1].isdigit():
                layers.append(int(parts[1]))
        return sorted(layers)

    def loaded_kinds(self) -> list[LatentKind]:
        return [k for k in LATENT_KINDS if self.latent_layers(k.hook)]

    def single_kind(self) -> LatentKind:
        """The one of the seed's two kinds loaded, for its generic latent scalars."""
        kinds = [k for k in self.loaded_kinds() if k.seed]
        if len(kinds) != 1:
            loaded = " and ".join(k.label for k in kinds) or "no"
            raise Unsupported(
                f"{loaded} autoencoders are loaded: the generic autoencoder scalars need exactly one; "
                "name the kind (online_mlp_autoencoder_..., online_attention_autoencoder_...)"
            )
        return kinds[0]

    def reads(self, kind: str, layer: int) -> str:
        return self.autoencoder(kind, layer)[1]

    def is_residual(self, kind: str, layer: int) -> bool:
        """Whether the latents are an SAE's on the residual stream itself."""
        return self.reads(kind, layer) in _RESID_POINTS

    def latent_sublayer_read(self, kind: str, layer: int) -> str:
        """"mlp" or "attn": the sublayer whose input the latents depend on."""
        reads = self.reads(kind, layer)
        if reads in _RESID_POINTS:
            raise Unsupported(f"{BY_HOOK[kind].label} latents read the residual stream ({reads}), not a sublayer")
        if reads not in _READS_SUBLAYER:
            raise Unsupported(f"{BY_HOOK[kind].label} latents read {reads}; only latents of "
                              f"{', '.join(_READS_SUBLAYER)} have writes here")
        return _READS_SUBLAYER[reads]

    def latent_location(self, kind: str, layer: int) -> int:
        """Where in the layer the latents (and their writes) sit."""
        reads = self.reads(kind, layer)
        if reads in _RESID_POINTS:
            return _RESID_POINTS[reads]
        return MLP if self.latent_sublayer_read(kind, layer) == "mlp" else ATTN

    def latent_write(self, kind: str, layer: int) -> Tensor:
        """(d_model, n_latents): a latent's write to the residual stream per unit of activation
        (with sandwich norms, before the post-norm's per-token scale when it reads the MLP's
        activations; a latent of a sublayer's write already writes what joins the stream; a
        transcoder's latent writes the MLP's output; a residual SAE's latent its own row)."""
        if not self.is_residual(kind, layer):
            self.latent_sublayer_read(kind, layer)  # refuses what has no write

        def make() -> Tensor:
            ae, reads = self.autoencoder(kind, layer)
            rows = ae.write_directions()
            if rows is None:
                raise Unsupported(f"{BY_HOOK[kind].label} latents of layer {layer} write a direction that depends on their input")
            decoder = rows.T.float()  # (n_inputs, n_latents)
            return self.mlp_write(layer) @ decoder if reads == "mlp.post_act" else decoder

        return self._cached((kind, layer), make)

    def latent_write_norms(self, kind: str, layer: int) -> Tensor:
        return self._cached((kind, "norms", layer), lambda: self.latent_write(kind, layer).norm(dim=0))

    def latent_write_sublayer(self, kind: str, layer: int) -> str | None:
        """The sublayer whose post-norm a latent's write still passes through ("mlp" for latents
        of MLP activations), or None when it reads what joins the residual stream."""
        return "mlp" if self.reads(kind, layer) == "mlp.post_act" else None

    def encoder(self, kind: str, layer: int) -> Tensor:
        """(n_latents, n_inputs): the rows a latent's pre-activation is affine in (its row dotted
        with the autoencoder's input, plus a constant)."""

        def make() -> Tensor:
            rows = self.autoencoder(kind, layer)[0].affine_read_directions()
            if rows is None:
                raise Unsupported(f"{BY_HOOK[kind].label} latents of layer {layer} are not affine in their input")
            return rows

        return self._cached((kind, "encoder", layer), make)
