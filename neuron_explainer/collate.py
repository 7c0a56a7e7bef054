"""Build neuron records ("collated activations") for any model over a text corpus.

    python -m neuron_explainer.collate --model PATH_OR_NAME [--mlp-autoencoder NAME_OR_FOLDER]
        [--attention-autoencoder NAME_OR_FOLDER] --corpus FILE... --out FOLDER
        [--seed 0] [--top-k 20] [--context 64] [--random-sample 20] [--quantile-sample 5] ...

Writes, in the published layout (see `activations.records` and `activations.datasets`), one
record per node for every MLP neuron (`mlp_post_act`), attention head (`attn_write_norm`, by token
pair) and, when autoencoders are given, every MLP latent (`mlp_autoencoder_latent`), attention
latent (`attention_autoencoder_latent`) and attention latent by token pair
(`flattened_attn_write_to_latent_summed_over_heads`), plus `dataset.json` describing them, so
that the server reads the folder with `--dataset NAME=FOLDER`.

What an example is: the corpus files are tokenized (documents separated by the end-of-text
token) into one stream, cut into consecutive sequences of `--context` tokens (a final partial
sequence is dropped). Each sequence is one candidate example for every node; its score for a node
is the node's largest value in it (over tokens, or over token pairs for the by-token-pair dsts),
and a record stores the node's values over the whole sequence (the flattened lower triangle for
token pairs: query 0 -> key 0, query 1 -> keys 0..1, ...), as the published records do.

Per node the builder keeps, with torch ops on the device:
- the top `--top-k` sequences by score (ties: earlier sequence first);
- a uniform random sample of `--random-sample` sequences (bottom-k of a random key per
  (sequence, node), so independent per node and deterministic for `--seed`);
- per activation-quantile bin, a random sample of `--quantile-sample` sequences. The bin
  boundaries (`--quantiles`, default 0.5, 0.9, 0.99, 0.999) are a streaming approximation: the
  quantiles of the per-sequence scores over the first `--quantile-calibration` sequences (one
  extra forward pass over those), after which every sequence is binned by them;
- mean, variance, skewness and excess kurtosis of all its values (power sums, float32 within
  a batch, float64 across batches).

Values: `mlp_post_act` and the latents are the activations; `attn_write_norm` for head h and
token pair (q, k) is ||A_h(q, k) v_k W_O^h|| (computed as A_h(q, k) sqrt(v_k G_h v_k) with
G_h = W_O^h^T W_O^h); the attention latent by token pair is the attribution
sum_h A_h(q, k) dL_q/dA_h(q, k), i.e. the head writes projected on the latent's encoder row where
the latent is active (zero elsewhere), computed only for latents active in a sequence.

One forward pass per batch, with hooks recording exactly the activations needed (MLP post
activations, attention probabilities and values, autoencoder latents); the pass stops after the
last block (no unembedding). Memory is bounded by the kept examples (`state_bytes`), never the
corpus; it grows with nodes x kept examples x values per example, which is large for attention
latents by token pair (context (context + 1) / 2 values each): leave them out with `--dsts` if
needed. Records are JSON by default (`--format pt` writes torch.save'd dicts, much slower).

Resumable: the corpus is processed in numbered shards of `--shard-sequences` sequences; after
each shard the whole running state is written atomically to `<out>/.collate/checkpoint.pt`. A rerun
with the same arguments resumes after the last completed shard and writes byte-identical output
(records are written to a temp file and renamed). `--stop-after-shards N` stops after N shards
(for testing interrupts). Results are deterministic for a given seed, device, dtype and thread
count.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import io
import math
import os
import secrets
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, cast

import orjson
import torch
from torch import Tensor
from tqdm import tqdm

from neuron_explainer.activations.datasets import DATASET_JSON, DST_FOLDERS, TOKEN_PAIR_DSTS
from neuron_explainer.activations.records import (
    ActivationRecord,
    NeuronId,
    NeuronRecord,
    RecordFormat,
    dumps_record,
)
from neuron_explainer.file_utils import FetchError, atomic_write_bytes

__all__ = [
    "CollateConfig",
    "FamilySpec",
    "Recorder",
    "build",
    "family_specs",
    "iter_sequences",
    "main",
    "state_bytes",
]

ALL_DSTS = tuple(DST_FOLDERS)
CHECKPOINT = Path(".collate") / "checkpoint.pt"
STATE_VERSION = 1


@dataclass(frozen=True)
class CollateConfig:
    """What to build; every field affects the output (and the checkpoint fingerprint)."""

    context: int = 64
    top_k: int = 20
    random_sample: int = 20
    quantile_sample: int = 5
    quantiles: tuple[float, ...] = (0.5, 0.9, 0.99, 0.999)
    quantile_calibration: int = 128
    batch_size: int = 32
    shard_sequences: int = 1024
    seed: int = 0
    max_tokens: int | None = None
    dsts: tuple[str, ...] | None = None  # None: every dst the model (and autoencoders) has
    format: str = "json"  # or "pt" (torch.save of the same structure; much slower to write)

    def __post_init__(self) -> None:
        if self.context < 1 or self.top_k < 1 or self.batch_size < 1 or self.shard_sequences < 1:
            raise ValueError("context, top-k, batch size and shard size must be positive")
        if self.random_sample < 0 or self.quantile_sample < 0 or self.quantile_calibration < 0:
            raise ValueError("sample sizes must be non-negative")
        if list(self.quantiles) != sorted(self.quantiles) or not all(
            0 < q < 1 for q in self.quantiles
        ):
            raise ValueError("quantiles must be increasing and inside (0, 1)")
        if self.format not in ("json", "pt"):
            raise ValueError(f"unknown format {self.format!r}")
        for d in self.dsts or ():
            if d not in ALL_DSTS:
                raise ValueError(f"unknown dst {d!r}; known: {', '.join(ALL_DSTS)}")

    def record_format(self, dst: str) -> RecordFormat:
        return "pt" if self.format == "pt" else "json"


@dataclass(frozen=True)
class FamilySpec:
    """The nodes of one dst in one layer."""

    dst: str
    layer: int
    n_nodes: int

    @property
    def token_pair(self) -> bool:
        return self.dst in TOKEN_PAIR_DSTS

    @property
    def key(self) -> str:
        return f"{self.dst}/{self.layer}"


# --- which activations ------------------------------------------------------------------------


def _autoencoders(model: Any) -> dict[str, list[tuple[str, Any, str]]]:
    """kind ("mlp" / "attention") -> [(hook point read, autoencoder, latents hook name)]."""
    out: dict[str, list[tuple[str, Any, str]]] = {}
    for at, (ae, latents) in getattr(model, "_autoencoders", {}).items():
        kind = "mlp" if ".mlp_autoencoder." in latents else "attention"
        out.setdefault(kind, []).append((at, ae, latents))
    return out


def family_specs(model: Any, dsts: Sequence[str] | None = None) -> list[FamilySpec]:
    """The node families a model (with its attached autoencoders) has, in build order."""
    cfg = model.cfg
    aes = _autoencoders(model)
    specs = []
    for layer in range(cfg.n_layers):
        specs.append(FamilySpec("mlp_post_act", layer, cfg.d_mlp))
        specs.append(FamilySpec("attn_write_norm", layer, cfg.n_heads))
        for _at, ae, latents in aes.get("mlp", []):
            if latents.startswith(f"blocks.{layer}."):
                specs.append(FamilySpec("mlp_autoencoder_latent", layer, ae.n_latents))
        for at, ae, latents in aes.get("attention", []):
            if latents.startswith(f"blocks.{layer}."):
                specs.append(FamilySpec("attention_autoencoder_latent", layer, ae.n_latents))
                if at == f"blocks.{layer}.resid.delta_attn":
                    specs.append(
                        FamilySpec(
                            "flattened_attn_write_to_latent_summed_over_heads", layer, ae.n_latents
                        )
                    )
    if dsts is not None:
        specs = [s for s in specs if s.dst in dsts]
    return specs


_PAIR_LATENTS = "flattened_attn_write_to_latent_summed_over_heads"


class _Stop(Exception):
    """Raised by the hook after the last block: the rest of the forward pass is not needed."""


@dataclass
class FamilyBatch:
    """What the running state needs from one family's values on some sequences of a batch:
    per (sequence, node) scores (the max value), per node power sums of all values, and a way
    to get the value rows of the few (sequence, node) pairs that enter the kept examples."""

    scores: Tensor  # (b, n)
    sums: Tensor  # (4, n) float64: sum of x, x^2, x^3, x^4
    count: int  # values per node (b * V)
    rows: Callable[[Tensor, Tensor], Tensor]  # (sequence index, node index) -> (M, V)
    v: int

    @classmethod
    def dense(cls, vals: Tensor) -> FamilyBatch:
        """From all values (b, n, V); power sums in float32 within the batch (torch reduces
        pairwise), float64 across batches."""
        vals = vals.contiguous()
        b, n, v = vals.shape
        x2 = vals * vals
        sums = torch.stack(
            [vals.sum((0, 2)), x2.sum((0, 2)), (x2 * vals).sum((0, 2)), (x2 * x2).sum((0, 2))]
        ).double()
        flat = vals.view(-1, v)
        return cls(vals.amax(-1), sums, b * v, lambda bi, ni: flat.index_select(0, bi * n + ni), v)


class Recorder:
    """Runs the model on batches of sequences and yields each family's values per sequence.

    `values(tokens)` yields (spec, node slice, tensor (batch, nodes in slice, V)) where V is the
    sequence length, or the number of token pairs s(s+1)/2 (flattened lower triangle) for the
    by-token-pair dsts. Large token-pair latent families come in slices of nodes to bound memory.
    """

    def __init__(self, model: Any, specs: Sequence[FamilySpec], chunk_elements: int = 1 << 24):
        self.model = model
        self.specs = list(specs)
        self.chunk_elements = chunk_elements
        cfg = model.cfg
        self.h, self.dh = cfg.n_heads, cfg.d_head
        dsts = {s.dst for s in self.specs}
        layers = {s.layer for s in self.specs}
        names: set[str] = set()
        self._latents: dict[tuple[str, int], str] = {}
        self._encoders: dict[int, Tensor] = {}
        aes = _autoencoders(model)
        # a head's write passes through the post-attention norm, when the family has one
        self._scale = model.write_scale_location("attn")
        for s in self.specs:
            p = f"blocks.{s.layer}."
            if s.dst == "mlp_post_act":
                names.add(p + "mlp.post_act")
            elif s.dst in TOKEN_PAIR_DSTS:
                names |= {p + "attn.qk_probs", p + "attn.v"}
                if self._scale is not None:
                    names.add(p + self._scale)
            if s.dst in (
                "mlp_autoencoder_latent",
                "attention_autoencoder_latent",
                "flattened_attn_write_to_latent_summed_over_heads",
            ):
                kind = "mlp" if s.dst == "mlp_autoencoder_latent" else "attention"
                for _at, ae, latents in aes.get(kind, []):
                    if latents.startswith(p):
                        names.add(latents)
                        self._latents[(kind, s.layer)] = latents
                        if s.dst == "flattened_attn_write_to_latent_summed_over_heads":
                            self._encoders[s.layer] = ae.encoder.weight
        self.names = sorted(names)
        # Gram matrices W_O_h^T W_O_h: ||v W_O_h|| = sqrt(v G_h v) without materialising writes.
        self._gram: dict[int, Tensor] = {}
        self._w_to_latent: dict[int, Tensor] = {}
        for layer in layers:
            w = model.head_write(layer).float()  # (h, d_head, d_model)
            if "attn_write_norm" in dsts:
                self._gram[layer] = torch.einsum("hed,hfd->hef", w, w)
            if layer in self._encoders:
                # (h, d_head, n_latents): what each value channel writes onto each encoder row
                self._w_to_latent[layer] = torch.einsum("hed,ld->hel", w, self._encoders[layer].float())
        self.n_layers = cfg.n_layers
        self._tril: dict[tuple[int, str], Tensor] = {}

    def _tril_flat(self, s: int, device: torch.device) -> Tensor:
        """Flat indices q * s + k of the lower triangle, row by row (the published order)."""
        key = (s, str(device))
        if key not in self._tril:
            rows, cols = torch.tril_indices(s, s, device=device)
            self._tril[key] = rows * s + cols
        return self._tril[key]

    def _pair_inputs(self, cache: dict[str, Tensor], p: str) -> tuple[Tensor, Tensor]:
        """Attention probabilities (b, h, q, k), divided by the post-attention norm's scale at
        each query when there is one (so that probs * value write is what joins the residual
        stream), and values per query head (b, k, h, e)."""
        probs = cache[p + "attn.qk_probs"].float()
        if self._scale is not None:
            probs = probs / cache[p + self._scale].float()[:, None, :, :]
        return probs, self.model.expand_kv(cache[p + "attn.v"].float())

    @torch.no_grad()
    def capture(self, tokens: Tensor) -> dict[str, Tensor]:
        cache: dict[str, Tensor] = {}

        def save(name: str) -> Any:
            def fn(x: Tensor) -> None:
                cache[name] = x

            return fn

        def stop(x: Tensor) -> None:
            raise _Stop

        fwd: dict[str, Any] = {n: [save(n)] for n in self.names}
        fwd.setdefault(f"blocks.{self.n_layers - 1}.resid.post_mlp", []).append(stop)
        with self.model.hooks(fwd=fwd), contextlib.suppress(_Stop):
            self.model(tokens)
        return cache

    @torch.no_grad()
    def values(self, tokens: Tensor) -> Iterator[tuple[FamilySpec, slice, Tensor]]:
        """Contiguous (batch, nodes, V) values per family (see the class docstring), all dense:
        the reference the builder's sparse path is tested against."""
        yield from self._values(tokens, self.capture(tokens), self.specs)

    def _values(
        self, tokens: Tensor, cache: dict[str, Tensor], specs: Sequence[FamilySpec]
    ) -> Iterator[tuple[FamilySpec, slice, Tensor]]:
        b, s = tokens.shape
        tril = self._tril_flat(s, tokens.device)
        for spec in specs:
            p = f"blocks.{spec.layer}."
            if spec.dst in (
                "mlp_post_act",
                "mlp_autoencoder_latent",
                "attention_autoencoder_latent",
            ):
                if spec.dst == "mlp_post_act":
                    acts = cache[p + "mlp.post_act"]
                else:
                    kind = "mlp" if spec.dst == "mlp_autoencoder_latent" else "attention"
                    acts = cache[self._latents[(kind, spec.layer)]]
                yield spec, slice(0, spec.n_nodes), acts.float().transpose(1, 2).contiguous()
            elif spec.dst == "attn_write_norm":
                probs, v = self._pair_inputs(cache, p)  # (b, h, q, k), (b, k, h, e)
                vg = torch.einsum("bkhe,hef->bkhf", v, self._gram[spec.layer])
                norms = (vg * v).sum(-1).clamp(min=0).sqrt()  # (b, k, h)
                wn = probs * norms.permute(0, 2, 1)[:, :, None, :]  # (b, h, q, k)
                yield spec, slice(0, spec.n_nodes), wn.reshape(b, -1, s * s).index_select(2, tril)
            else:  # flattened_attn_write_to_latent_summed_over_heads
                probs, v = self._pair_inputs(cache, p)
                # d latent / d pre-activation: 1 where the latent is active (ReLU / TopK)
                active = (cache[self._latents[("attention", spec.layer)]] != 0).float()
                active = active.transpose(1, 2)  # (b, l, q)
                w = self._w_to_latent[spec.layer]
                per_chunk = max(1, self.chunk_elements // max(1, b * s * s))
                for l0 in range(0, spec.n_nodes, per_chunk):
                    l1 = min(spec.n_nodes, l0 + per_chunk)
                    onto = torch.einsum("bkhe,hel->bkhl", v, w[:, :, l0:l1])  # (b, k, h, c)
                    attr = torch.einsum("bhqk,bkhl->blqk", probs, onto)
                    attr = attr * active[:, l0:l1, :, None]
                    yield spec, slice(l0, l1), attr.reshape(b, l1 - l0, s * s).index_select(2, tril)

    @torch.no_grad()
    def batches(self, tokens: Tensor) -> Iterator[tuple[FamilySpec, slice, slice, FamilyBatch]]:
        """What the builder consumes: (spec, node slice, sequence slice, FamilyBatch).

        Like `values`, but attention latents by token pair are computed sparsely: only latents
        active somewhere in a sequence get values (their attribution is zero at queries where
        they are inactive), which for sparse autoencoders is a small fraction of the dense
        (latents x token pairs) tensor."""
        pair_latents = [s for s in self.specs if s.dst == _PAIR_LATENTS]
        dense = [s for s in self.specs if s.dst != _PAIR_LATENTS]
        cache = self.capture(tokens)
        for spec, sl, vals in self._values(tokens, cache, dense):
            yield spec, sl, slice(0, tokens.shape[0]), FamilyBatch.dense(vals)
        for spec in pair_latents:
            yield from self._sparse_pair_latents(spec, tokens, cache)

    def _sparse_pair_latents(
        self, spec: FamilySpec, tokens: Tensor, cache: dict[str, Tensor]
    ) -> Iterator[tuple[FamilySpec, slice, slice, FamilyBatch]]:
        b, s = tokens.shape
        p = f"blocks.{spec.layer}."
        probs, v = self._pair_inputs(cache, p)  # (b, h, q, k), (b, k, h, e)
        active = cache[self._latents[("attention", spec.layer)]] != 0  # (b, q, l)
        w = self._w_to_latent[spec.layer]  # (h, e, l)
        tril = self._tril_flat(s, tokens.device)
        n, t = spec.n_nodes, tril.numel()
        start = 0
        while start < b:
            # sequences [start, stop) whose active latents' rows fit the chunk budget
            rows: list[Tensor] = []
            index = torch.full((b, n), -1, dtype=torch.long, device=tokens.device)
            scores = torch.zeros(b, n, device=tokens.device)
            sums = torch.zeros(4, n, dtype=torch.float64, device=tokens.device)
            used = 0
            stop = start
            while stop < b and (stop == start or used * t < self.chunk_elements):
                lat = active[stop].any(0).nonzero().squeeze(1)
                if lat.numel():
                    onto = torch.einsum("khe,hel->khl", v[stop], w[:, :, lat])
                    attr = torch.einsum("hqk,khl->lqk", probs[stop], onto)
                    attr = attr * active[stop][:, lat].T[:, :, None].float()
                    flat = attr.reshape(lat.numel(), s * s).index_select(1, tril)
                    scores[stop, lat] = flat.amax(1)
                    x2 = flat * flat
                    sums[:, lat] += torch.stack(
                        [flat.sum(1), x2.sum(1), (x2 * flat).sum(1), (x2 * x2).sum(1)]
                    ).double()
                    index[stop, lat] = torch.arange(used, used + lat.numel(), device=tokens.device)
                    used += lat.numel()
                    rows.append(flat)
                stop += 1
            table = torch.cat([*rows, torch.zeros(1, t, device=tokens.device)])
            sub = index[start:stop]

            def take(bi: Tensor, ni: Tensor, sub: Tensor = sub, table: Tensor = table) -> Tensor:
                i = sub[bi, ni]
                return table.index_select(0, torch.where(i < 0, table.shape[0] - 1, i))

            batch = FamilyBatch(scores[start:stop], sums, (stop - start) * t, take, t)
            yield spec, slice(0, n), slice(start, stop), batch
            start = stop


# --- corpus -----------------------------------------------------------------------------------


def iter_sequences(
    files: Sequence[str | os.PathLike[str]], enc: Any, context: int, chunk_bytes: int = 1 << 20
) -> Iterator[list[int]]:
    """Consecutive `context`-token sequences of the corpus (files in the given order, each
    followed by the end-of-text token; read and tokenized in chunks of whole lines)."""
    buffer: list[int] = []
    eot = getattr(enc, "eot_token", None)
    for path in files:
        with open(path, encoding="utf-8", errors="replace") as f:
            while True:
                lines = f.readlines(chunk_bytes)
                if not lines:
                    break
                buffer.extend(enc.encode("".join(lines), disallowed_special=()))
                while len(buffer) >= context:
                    yield buffer[:context]
                    del buffer[:context]
        if eot is not None:
            buffer.append(eot)
            while len(buffer) >= context:
                yield buffer[:context]
                del buffer[:context]


# --- running state ----------------------------------------------------------------------------


@dataclass
class _Family:
    """Running state of one family: kept examples (keys, sequence ids, values) and moments."""

    spec: FamilySpec
    v: int
    top_keys: Tensor  # (K, N), best first
    top_ids: Tensor  # (K, N) sequence ids, -1 for empty
    top_slots: Tensor  # (K, N) where each rank's values are stored in top_vals
    top_vals: Tensor  # (K, N, V)
    rnd_keys: Tensor
    rnd_ids: Tensor
    rnd_slots: Tensor
    rnd_vals: Tensor
    q_keys: Tensor  # (bins, Q, N)
    q_ids: Tensor
    q_slots: Tensor
    q_vals: Tensor  # (bins, Q, N, V)
    boundaries: Tensor | None  # (n_quantiles, N)
    sums: Tensor  # (4, N) float64: sum x, x^2, x^3, x^4
    count: int = 0

    @classmethod
    def empty(cls, spec: FamilySpec, cfg: CollateConfig, v: int, device: torch.device) -> _Family:
        n = spec.n_nodes
        nb = len(cfg.quantiles) + 1

        def slots(*shape: int, fill: float) -> tuple[Tensor, Tensor, Tensor, Tensor]:
            ranks = torch.arange(shape[-1], device=device)[:, None].expand(shape[-1], n)
            return (
                torch.full((*shape, n), fill, device=device),
                torch.full((*shape, n), -1, dtype=torch.long, device=device),
                ranks.expand(*shape, n).clone(),
                torch.zeros((*shape, n, v), device=device),
            )

        top = slots(cfg.top_k, fill=-math.inf)
        rnd = slots(cfg.random_sample, fill=math.inf)
        qs = slots(nb, cfg.quantile_sample, fill=math.inf)
        return cls(
            spec, v, *top, *rnd, *qs, None, torch.zeros(4, n, dtype=torch.float64, device=device)
        )

    def tensors(self) -> dict[str, Any]:
        d = {k: getattr(self, k) for k in _STATE_TENSORS}
        d["count"] = self.count
        return d


_STATE_TENSORS = (
    "top_keys",
    "top_ids",
    "top_slots",
    "top_vals",
    "rnd_keys",
    "rnd_ids",
    "rnd_slots",
    "rnd_vals",
    "q_keys",
    "q_ids",
    "q_slots",
    "q_vals",
    "boundaries",
    "sums",
)


def _merge(
    keys: Tensor,
    ids: Tensor,
    slots: Tensor,
    vals: Tensor,
    new_keys: Tensor,
    new_ids: Tensor,
    batch: FamilyBatch,
    descending: bool,
) -> None:
    """Keep, in place, the best `len(keys)` of kept + new candidates per node.

    keys/ids/slots (K, N) are sorted best first (on ties: kept ones, then earlier new ones win,
    i.e. smaller sequence ids); vals (K, N, V) holds the values in storage slots: rank r of node
    n is vals[slots[r, n], n]. So entering candidates only write their own values into the slots
    of the entries they evict (always the worst kept ones), and nothing else moves. Views are
    fine: everything is written in place. new_keys (B, N), new_ids (B,); `batch.rows` gives the
    values of the entering candidates.
    Only nodes where some candidate beats the worst kept key are touched.
    """
    k = keys.shape[0]
    if k == 0:
        return
    worst = keys[-1]
    beats = (new_keys > worst) if descending else (new_keys < worst)
    cols = beats.any(0).nonzero().squeeze(1)
    if cols.numel() == 0:
        return
    every = cols.numel() == keys.shape[1]

    def pick(t: Tensor) -> Tensor:
        return t if every else t.index_select(1, cols)

    def put(t: Tensor, value: Tensor) -> None:
        if every:
            t.copy_(value)
        else:
            t.index_copy_(1, cols, value)

    cand = torch.cat([pick(keys), pick(new_keys)], 0)
    order = torch.sort(cand, dim=0, descending=descending, stable=True).indices[:k]
    from_new = order >= k
    n_new = from_new.sum(0)
    # the t-th entering candidate of a node takes the slot of its (k - n_new + t)-th kept entry
    freed = (k - n_new)[None, :] + from_new.cumsum(0) - 1
    old_slots = pick(slots)
    old_i = order.clamp(max=k - 1)
    new_slots = torch.where(
        from_new, old_slots.gather(0, freed.clamp(0, k - 1)), old_slots.gather(0, old_i)
    )
    put(keys, cand.gather(0, order))
    put(ids, torch.where(from_new, new_ids[(order - k).clamp(min=0)], pick(ids).gather(0, old_i)))
    put(slots, new_slots)
    flat = from_new.view(-1).nonzero().squeeze(1)  # entering (rank, column) pairs, row-major
    c = from_new.shape[1]
    node = cols.index_select(0, flat % c)
    v = batch.v
    src = batch.rows(order.view(-1)[flat] - k, node)
    # scatter rows into a flat (slots * nodes, V) view: much faster than 2-d advanced indexing
    dst_slots = new_slots.view(-1)[flat]
    if vals.is_contiguous():
        vals.view(-1, v).index_copy_(0, dst_slots * vals.shape[1] + node, src)
    else:
        vals[dst_slots, node] = src


def _by_rank(vals: Tensor, slots: Tensor) -> Tensor:
    """vals (..., K, N, V) in storage slots -> values by rank (..., K, N, V)."""
    return vals.gather(-3, slots[..., None].expand(*slots.shape, vals.shape[-1]))


class _State:
    def __init__(self, specs: Sequence[FamilySpec], cfg: CollateConfig, device: torch.device):
        self.cfg = cfg
        self.device = device
        self.families = {
            s.key: _Family.empty(s, cfg, _vector_length(s, cfg.context), device) for s in specs
        }
        self.shards_done = 0
        self.n_sequences = 0
        self.n_tokens = 0
        self.token_ids = torch.zeros(0, dtype=torch.long)  # sorted sequence ids kept
        self.token_table = torch.zeros(0, cfg.context, dtype=torch.int32)
        self.calibrated = not cfg.quantiles or cfg.quantile_sample == 0

    # -- updates

    def update(
        self,
        spec: FamilySpec,
        sl: slice,
        batch: FamilyBatch,
        seq_ids: Tensor,
        gen: torch.Generator,
    ) -> None:
        """Fold one FamilyBatch (nodes `sl`, sequences `seq_ids`) into the running state."""
        f = self.families[spec.key]
        b = batch.scores.shape[0]
        scores = batch.scores
        f.sums[:, sl] += batch.sums
        if sl.start == 0:
            f.count += batch.count
        self._merge_into(f, "top", sl, scores, seq_ids, batch, descending=True)
        n = sl.stop - sl.start
        if self.cfg.random_sample:
            keys = torch.rand(b, n, generator=gen).to(self.device)
            self._merge_into(f, "rnd", sl, keys, seq_ids, batch, descending=False)
        if f.boundaries is not None and self.cfg.quantile_sample:
            keys = torch.rand(b, n, generator=gen).to(self.device)
            bins = (scores[:, None, :] > f.boundaries[None, :, sl]).sum(1)  # (b, n)
            for q in range(f.q_keys.shape[0]):
                masked = torch.where(bins == q, keys, math.inf)
                _merge(
                    f.q_keys[q, :, sl],
                    f.q_ids[q, :, sl],
                    f.q_slots[q, :, sl],
                    f.q_vals[q, :, sl],
                    masked,
                    seq_ids,
                    batch,
                    descending=False,
                )

    @staticmethod
    def _merge_into(
        f: _Family,
        which: str,
        sl: slice,
        keys: Tensor,
        ids: Tensor,
        batch: FamilyBatch,
        descending: bool,
    ) -> None:
        k_, i_, s_, v_ = (getattr(f, f"{which}_{x}") for x in ("keys", "ids", "slots", "vals"))
        _merge(k_[:, sl], i_[:, sl], s_[:, sl], v_[:, sl], keys, ids, batch, descending)

    def referenced_ids(self) -> Tensor:
        parts = []
        for f in self.families.values():
            for t in (f.top_ids, f.rnd_ids, f.q_ids):
                parts.append(t.reshape(-1).cpu())
        ids = torch.cat(parts) if parts else torch.zeros(0, dtype=torch.long)
        ids = torch.unique(ids)
        return ids[ids >= 0]

    def keep_tokens(self, new_ids: list[Tensor], new_tokens: list[Tensor]) -> None:
        """Keep the token ids of exactly the sequences some node still references."""
        ids = torch.cat([self.token_ids, *new_ids])
        table = torch.cat([self.token_table, *new_tokens])
        keep = torch.isin(ids, self.referenced_ids())
        ids, table = ids[keep], table[keep]
        order = torch.argsort(ids)
        self.token_ids, self.token_table = ids[order], table[order]

    def tokens_of(self, seq_id: int) -> list[int]:
        i = int(torch.searchsorted(self.token_ids, seq_id))
        assert i < len(self.token_ids) and int(self.token_ids[i]) == seq_id, seq_id
        return self.token_table[i].tolist()

    # -- checkpoints

    def to_bytes(self, fingerprint: str) -> bytes:
        payload = {
            "version": STATE_VERSION,
            "fingerprint": fingerprint,
            "shards_done": self.shards_done,
            "n_sequences": self.n_sequences,
            "n_tokens": self.n_tokens,
            "calibrated": self.calibrated,
            "token_ids": self.token_ids,
            "token_table": self.token_table,
            "families": {k: _cpu(f.tensors()) for k, f in self.families.items()},
        }
        buffer = io.BytesIO()
        torch.save(payload, buffer)
        return buffer.getvalue()

    def load(self, path: Path, fingerprint: str) -> bool:
        """Restore from a checkpoint; False if it is for other arguments."""
        payload = torch.load(path, map_location="cpu", weights_only=True)
        if payload.get("version") != STATE_VERSION or payload.get("fingerprint") != fingerprint:
            return False
        for key in ("shards_done", "n_sequences", "n_tokens", "calibrated"):
            setattr(self, key, payload[key])
        self.token_ids, self.token_table = payload["token_ids"], payload["token_table"]
        for k, saved in payload["families"].items():
            f = self.families[k]
            for name in _STATE_TENSORS:
                t = saved[name]
                setattr(f, name, None if t is None else t.to(self.device))
            f.count = saved["count"]
        return True


def _cpu(d: dict[str, Any]) -> dict[str, Any]:
    return {k: v.cpu() if isinstance(v, Tensor) else v for k, v in d.items()}


def state_bytes(specs: Sequence[FamilySpec], cfg: CollateConfig) -> int:
    """Memory the kept examples take (the bulk of the running state and of each checkpoint)."""
    per_node = cfg.top_k + cfg.random_sample + (len(cfg.quantiles) + 1) * cfg.quantile_sample
    return sum(4 * s.n_nodes * per_node * _vector_length(s, cfg.context) for s in specs)


def _vector_length(spec: FamilySpec, context: int) -> int:
    return context * (context + 1) // 2 if spec.token_pair else context


# --- the build --------------------------------------------------------------------------------


@dataclass
class BuildResult:
    out: Path
    complete: bool
    shards_done: int
    n_sequences: int
    n_tokens: int
    seconds: float
    tokens_per_second: float
    families: list[FamilySpec] = field(default_factory=list)


def _fingerprint(
    cfg: CollateConfig, specs: Sequence[FamilySpec], corpus: Sequence[str], extra: dict[str, Any]
) -> str:
    h = hashlib.sha256()
    h.update(orjson.dumps(asdict(cfg)))
    h.update(orjson.dumps([asdict(s) for s in specs]))
    for path in corpus:
        st = os.stat(path)
        h.update(orjson.dumps([os.path.abspath(path), st.st_size, st.st_mtime_ns]))
    h.update(orjson.dumps(extra, default=str))
    return h.hexdigest()[:32]


def _batches(seqs: Iterator[list[int]], n: int) -> Iterator[list[list[int]]]:
    batch: list[list[int]] = []
    for s in seqs:
        batch.append(s)
        if len(batch) == n:
            yield batch
            batch = []
    if batch:
        yield batch


def _limited(seqs: Iterator[list[int]], cfg: CollateConfig) -> Iterator[list[int]]:
    if cfg.max_tokens is None:
        yield from seqs
        return
    for i, s in enumerate(seqs):
        if (i + 1) * cfg.context > cfg.max_tokens:
            return
        yield s


def build(
    model: Any,
    enc: Any,
    corpus: Sequence[str | os.PathLike[str]],
    out: str | os.PathLike[str],
    cfg: CollateConfig | None = None,
    *,
    stop_after_shards: int | None = None,
    progress: bool | None = None,
    description: dict[str, Any] | None = None,
    keep_checkpoint: bool = False,
) -> BuildResult:
    """Build (or resume building) the records of `model` (with its attached autoencoders) over
    the `corpus` files into folder `out`. `description` goes into dataset.json (model name...)."""
    cfg = cfg or CollateConfig()
    if cfg.context > model.cfg.ctx_window:
        raise ValueError(
            f"--context {cfg.context} exceeds the model's context window {model.cfg.ctx_window}"
        )
    files = [os.fspath(p) for p in corpus]
    for path in files:
        if not os.path.isfile(path):
            raise FileNotFoundError(f"corpus file not found: {path}")
    out = Path(out)
    specs = family_specs(model, cfg.dsts)
    if not specs:
        raise ValueError("nothing to build: no node family matches --dsts")
    device = model.device
    fingerprint = _fingerprint(
        cfg,
        specs,
        files,
        {"model": description or {}, "dtype": str(model.dtype), "device": device.type},
    )
    meta_path = out / DATASET_JSON
    if meta_path.is_file():
        meta = orjson.loads(meta_path.read_bytes())
        if meta.get("fingerprint") != fingerprint:
            raise ValueError(
                f"{out} holds a finished build with other arguments or corpus; pass another --out"
            )
        return BuildResult(
            out, True, meta["shards"], meta["n_sequences"], meta["n_tokens"], 0.0, 0.0, specs
        )
    state = _State(specs, cfg, device)
    checkpoint = out / CHECKPOINT
    if checkpoint.is_file() and not state.load(checkpoint, fingerprint):
        raise ValueError(
            f"{checkpoint} is from a build with other arguments or corpus; delete it or pass "
            "another --out to start afresh"
        )
    recorder = Recorder(model, specs)
    started = time.perf_counter()
    tokens_this_run = 0

    if not state.calibrated:
        _calibrate(state, recorder, files, enc, cfg)

    seqs = _limited(iter_sequences(files, enc, cfg.context), cfg)
    skip = state.n_sequences
    for _ in range(skip):
        if next(seqs, None) is None:
            break
    bar = tqdm(
        initial=state.n_tokens,
        total=cfg.max_tokens,
        unit="tok",
        unit_scale=True,
        desc="collating",
        file=sys.stderr,
        disable=(not progress) if progress is not None else None,
        dynamic_ncols=True,
        smoothing=0.1,
    )
    shards_this_run = 0
    done = False
    with bar:
        while not done:
            shard = state.shards_done
            gen = torch.Generator().manual_seed(cfg.seed * 1_000_003 + shard)
            shard_ids: list[Tensor] = []
            shard_tokens: list[Tensor] = []
            n_in_shard = 0
            for batch in _batches(_take(seqs, cfg.shard_sequences), cfg.batch_size):
                tokens = torch.tensor(batch, dtype=torch.long)
                seq_ids = torch.arange(state.n_sequences, state.n_sequences + len(batch))
                dev_ids = seq_ids.to(device)
                for spec, sl, seqs_sl, fb in recorder.batches(tokens.to(device)):
                    state.update(spec, sl, fb, dev_ids[seqs_sl], gen)
                shard_ids.append(seq_ids)
                shard_tokens.append(tokens.to(torch.int32))
                state.n_sequences += len(batch)
                state.n_tokens += tokens.numel()
                tokens_this_run += tokens.numel()
                n_in_shard += len(batch)
                bar.update(tokens.numel())
            if n_in_shard == 0:
                break
            done = n_in_shard < cfg.shard_sequences
            state.keep_tokens(shard_ids, shard_tokens)
            state.shards_done += 1
            atomic_write_bytes(checkpoint, state.to_bytes(fingerprint))
            shards_this_run += 1
            if stop_after_shards is not None and shards_this_run >= stop_after_shards and not done:
                elapsed = time.perf_counter() - started
                return BuildResult(
                    out,
                    False,
                    state.shards_done,
                    state.n_sequences,
                    state.n_tokens,
                    elapsed,
                    tokens_this_run / elapsed if elapsed > 0 else 0.0,
                    specs,
                )
        if state.n_sequences == 0:
            raise ValueError(f"the corpus has fewer than {cfg.context} tokens: nothing to collate")
    _write_records(state, enc, out, cfg)
    meta = {
        "format_version": 1,
        "fingerprint": fingerprint,
        "description": description or {},
        "config": asdict(cfg),
        "shards": state.shards_done,
        "n_sequences": state.n_sequences,
        "n_tokens": state.n_tokens,
        "corpus": [os.path.basename(p) for p in files],
        "datasets": _dataset_list(specs, cfg),
    }
    atomic_write_bytes(meta_path, orjson.dumps(meta, option=orjson.OPT_INDENT_2) + b"\n")
    if not keep_checkpoint:
        checkpoint.unlink(missing_ok=True)
        with contextlib.suppress(OSError):
            checkpoint.parent.rmdir()
    elapsed = time.perf_counter() - started
    return BuildResult(
        out,
        True,
        state.shards_done,
        state.n_sequences,
        state.n_tokens,
        elapsed,
        tokens_this_run / elapsed if elapsed > 0 else 0.0,
        specs,
    )


def _take(it: Iterator[list[int]], n: int) -> Iterator[list[int]]:
    for _ in range(n):
        x = next(it, None)
        if x is None:
            return
        yield x


def _calibrate(
    state: _State, recorder: Recorder, corpus: Sequence[str], enc: Any, cfg: CollateConfig
) -> None:
    """Quantile boundaries per node from the scores of the first sequences (see module doc)."""
    scores: dict[str, list[Tensor]] = {}
    seqs = _take(_limited(iter_sequences(corpus, enc, cfg.context), cfg), cfg.quantile_calibration)
    for batch in _batches(seqs, cfg.batch_size):
        tokens = torch.tensor(batch, dtype=torch.long, device=state.device)
        parts: dict[str, list[Tensor]] = {}
        for spec, sl, seqs_sl, fb in recorder.batches(tokens):
            zeros = torch.zeros(len(batch), spec.n_nodes, device=state.device)
            part = parts.setdefault(spec.key, [zeros])[0]
            part[seqs_sl, sl] = fb.scores
        for key, (p,) in parts.items():
            scores.setdefault(key, []).append(p)
    levels = torch.tensor(cfg.quantiles, device=state.device)
    for key, f in state.families.items():
        if key in scores:
            s = torch.cat(scores[key], 0).float()
            f.boundaries = torch.quantile(s, levels, dim=0)
    state.calibrated = True


def _dataset_list(specs: Sequence[FamilySpec], cfg: CollateConfig) -> list[dict[str, Any]]:
    by_dst: dict[str, list[int]] = {}
    for s in specs:
        nodes = by_dst.setdefault(s.dst, [])
        nodes += [0] * (s.layer + 1 - len(nodes))
        nodes[s.layer] = s.n_nodes
    return [
        {
            "dst": dst,
            "path": DST_FOLDERS[dst],
            "format": cfg.record_format(dst),
            "n_nodes": nodes,
            "description": _DESCRIPTIONS[dst],
        }
        for dst, nodes in by_dst.items()
    ]


_DESCRIPTIONS = {
    "mlp_post_act": "MLP neurons",
    "attn_write_norm": "Attention write by token pair",
    "mlp_autoencoder_latent": "MLP autoencoder latents",
    "attention_autoencoder_latent": "Attention autoencoder latents",
    "flattened_attn_write_to_latent_summed_over_heads": "Attention autoencoder latents by token pair",
}


def _moments(sums: list[float], count: int) -> tuple[float, float, float, float]:
    if count == 0:
        return (math.nan,) * 4
    m1, m2, m3, m4 = (s / count for s in sums)
    var = max(m2 - m1 * m1, 0.0)
    if var <= 0:
        return m1, var, math.nan, math.nan
    c3 = m3 - 3 * m1 * m2 + 2 * m1**3
    c4 = m4 - 4 * m1 * m3 + 6 * m1 * m1 * m2 - 3 * m1**4
    return m1, var, c3 / var**1.5, c4 / var**2 - 3.0


def _write_records(state: _State, enc: Any, out: Path, cfg: CollateConfig) -> None:
    from neuron_explainer.models.tokenizer import decode_tokens

    strings: dict[int, list[str]] = {}

    def tokens(seq_id: int) -> list[str]:
        if seq_id not in strings:
            strings[seq_id] = decode_tokens(enc, state.tokens_of(seq_id))
        return strings[seq_id]

    def records(ids: list[int], vals: Any) -> list[ActivationRecord]:
        return [
            ActivationRecord(cast(list[float], v), tokens(i))
            for i, v in zip(ids, vals, strict=True)
            if i >= 0
        ]

    for f in state.families.values():
        spec = f.spec
        fmt = cfg.record_format(spec.dst)
        folder = out / DST_FOLDERS[spec.dst] / str(spec.layer)
        folder.mkdir(parents=True, exist_ok=True)
        # float32 numpy rows: orjson writes them fast, in float32's shortest exact form
        top_ids = f.top_ids.T.tolist()
        top_vals = _numpy(_by_rank(f.top_vals, f.top_slots).transpose(0, 1))
        rnd_ids = f.rnd_ids.T.tolist()
        rnd_vals = _numpy(_by_rank(f.rnd_vals, f.rnd_slots).transpose(0, 1))
        q_ids = f.q_ids.permute(2, 0, 1).tolist()
        q_vals = _numpy(_by_rank(f.q_vals, f.q_slots).permute(2, 0, 1, 3))
        bounds = f.boundaries.T.tolist() if f.boundaries is not None else None
        sums = f.sums.T.tolist()
        for n in range(spec.n_nodes):
            mean, var, skew, kurt = _moments(sums[n], f.count)
            record = NeuronRecord(
                neuron_id=NeuronId(layer_index=spec.layer, neuron_index=n),
                random_sample=records(rnd_ids[n], rnd_vals[n]),
                random_sample_by_quantile=[
                    records(q_ids[n][q], q_vals[n][q]) for q in range(len(q_ids[n]))
                ]
                if bounds is not None
                else None,
                quantile_boundaries=bounds[n] if bounds is not None else None,
                mean=mean,
                variance=var,
                skewness=skew,
                kurtosis=kurt,
                most_positive_activation_records=records(top_ids[n], top_vals[n]),
            )
            _write_file(folder / f"{n}.{fmt}", dumps_record(record, fmt))


def _numpy(t: Tensor) -> Any:
    return t.contiguous().cpu().numpy()


def _write_file(path: Path, data: bytes) -> None:
    """Temp file + rename: a reader (or a resumed build) never sees a partial record."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.part")
    try:
        tmp.write_bytes(data)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


# --- CLI --------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    d = CollateConfig()
    p = argparse.ArgumentParser(
        prog="python -m neuron_explainer.collate",
        description="Build neuron records (top-activating examples per neuron, head and latent) "
        "for a model over a text corpus, in the published layout.",
    )
    p.add_argument(
        "--model", required=True, help="registry name (gpt2-small, ...) or model folder / URL"
    )
    p.add_argument("--mlp-autoencoder", help="MLP autoencoder set name or folder")
    p.add_argument("--attention-autoencoder", help="attention autoencoder set name or folder")
    p.add_argument("--corpus", nargs="+", required=True, help="UTF-8 text files")
    p.add_argument("--out", required=True, help="output folder (also holds the resume checkpoint)")
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--top-k", type=int, default=d.top_k, help="top-activating examples per node")
    p.add_argument("--context", type=int, default=d.context, help="tokens per example")
    p.add_argument("--random-sample", type=int, default=d.random_sample)
    p.add_argument(
        "--quantile-sample", type=int, default=d.quantile_sample, help="per quantile bin"
    )
    p.add_argument("--quantiles", default=",".join(str(q) for q in d.quantiles))
    p.add_argument(
        "--quantile-calibration",
        type=int,
        default=d.quantile_calibration,
        help="sequences whose scores set the quantile boundaries",
    )
    p.add_argument(
        "--batch-size", type=int, default=d.batch_size, help="sequences per forward pass"
    )
    p.add_argument(
        "--shard-sequences",
        type=int,
        default=d.shard_sequences,
        help="sequences per shard (checkpoint interval)",
    )
    p.add_argument("--max-tokens", type=int, help="stop after this many corpus tokens")
    p.add_argument("--dsts", help=f"comma-separated subset of: {', '.join(ALL_DSTS)}")
    p.add_argument("--format", default=d.format, choices=["json", "pt"])
    p.add_argument("--device", help="cpu, cuda, mps (default: the best available)")
    p.add_argument(
        "--stop-after-shards", type=int, help="stop after this many shards (resume later)"
    )
    p.add_argument("--keep-checkpoint", action="store_true")
    p.add_argument("--no-progress", action="store_true")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    from neuron_explainer.models.autoencoder import attach, load_autoencoder_set
    from neuron_explainer.models.loading import load_model, model_encoding

    device = args.device or (
        "cuda"
        if torch.cuda.is_available()
        else "mps"
        if torch.backends.mps.is_available()
        else "cpu"
    )
    try:
        cfg = CollateConfig(
            context=args.context,
            top_k=args.top_k,
            random_sample=args.random_sample,
            quantile_sample=args.quantile_sample,
            quantiles=tuple(float(q) for q in args.quantiles.split(",") if q.strip()),
            quantile_calibration=args.quantile_calibration,
            batch_size=args.batch_size,
            shard_sequences=args.shard_sequences,
            seed=args.seed,
            max_tokens=args.max_tokens,
            dsts=tuple(d.strip() for d in args.dsts.split(",")) if args.dsts else None,
            format=args.format,
        )
        model = load_model(args.model, device=device)
        for p in model.parameters():
            p.requires_grad_(False)
        for kind, name in (
            ("mlp", args.mlp_autoencoder),
            ("attention", args.attention_autoencoder),
        ):
            if name:
                spec, aes = load_autoencoder_set(name, model.cfg.n_layers, device=device)
                if spec.kind != kind:
                    raise ValueError(
                        f"--{kind}-autoencoder {name!r} reads {spec.reads}, not {kind} activations"
                    )
                attach(model, spec, aes)
        enc = model_encoding(model)
        specs = family_specs(model, cfg.dsts)
        print(
            f"collating {sum(s.n_nodes for s in specs)} nodes in {len(specs)} families; kept "
            f"examples take {state_bytes(specs, cfg) / 2**20:.0f} MiB",
            file=sys.stderr,
        )
        result = build(
            model,
            enc,
            args.corpus,
            args.out,
            cfg,
            stop_after_shards=args.stop_after_shards,
            progress=False if args.no_progress else None,
            keep_checkpoint=args.keep_checkpoint,
            description={
                "model": args.model,
                "mlp_autoencoder": args.mlp_autoencoder,
                "attention_autoencoder": args.attention_autoencoder,
            },
        )
    except (ValueError, OSError, FetchError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if result.complete:
        print(
            f"wrote {result.out} ({result.n_tokens} tokens, {result.n_sequences} sequences, "
            f"{result.shards_done} shards); serve it with --dataset NAME={result.out}"
        )
    else:
        print(f"stopped after shard {result.shards_done}; rerun the same command to resume")
    return 0


if __name__ == "__main__":
    sys.exit(main())
