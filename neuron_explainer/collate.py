"""Build neuron records ("collated activations") for any model over a corpus.

    python -m neuron_explainer.collate --model PATH_OR_NAME [--mlp-autoencoder NAME_OR_FOLDER]
        [--attention-autoencoder NAME_OR_FOLDER] [--sae SPEC ...] [--transcoders SET]
        (--corpus FILE... | --hf-dataset NAME)
        --out FOLDER [--format json|bulk] [--workers N | --ray-address auto] ...

Writes one record per node for every MLP neuron (`mlp_post_act`), attention head
(`attn_write_norm`, by token pair) and, when autoencoders are given, every MLP latent
(`mlp_autoencoder_latent`), attention latent (`attention_autoencoder_latent`) and attention
latent by token pair (`flattened_attn_write_to_latent_summed_over_heads`), plus `dataset.json`
describing them, so that the server reads the folder with `--dataset NAME=FOLDER`. Records are
one JSON per node in the published layout (`activations.records`, `activations.datasets`), or
with `--format bulk` one Parquet file per (layer, node kind) (`activations.bulk`).

What an example is: the corpus (text files, Parquet / JSONL / Arrow files or a hub dataset, see
`activations.corpus`) is tokenized with the model's BOS / end-of-text convention and cut into
sequences of `--context` tokens. Each sequence is one candidate example for every node; its
score for a node is the node's largest value in it (over tokens, or over token pairs for the
by-token-pair dsts), and a record stores the node's values over the whole sequence (the
flattened lower triangle for token pairs: query 0 -> key 0, query 1 -> keys 0..1, ...), as the
published records do.

Per node the builder keeps the top `--top-k` sequences, a uniform random sample of
`--random-sample`, per activation-quantile bin a random sample of `--quantile-sample` (bin
boundaries: the `--quantiles` of the scores of the first `--quantile-calibration` sequences),
and the mean, variance, skewness and excess kurtosis of all its values
(`activations.running_state`).

Values: `mlp_post_act` and the latents are the activations; `attn_write_norm` for head h and
token pair (q, k) is ||A_h(q, k) v_k W_O^h|| (computed as A_h(q, k) sqrt(v_k G_h v_k) with
G_h = W_O^h^T W_O^h); the attention latent by token pair is the attribution
sum_h A_h(q, k) dL_q/dA_h(q, k), i.e. the head writes projected on the latent's encoder row where
the latent is active (zero elsewhere), computed only for latents active in a sequence.

One forward pass per batch (`Recorder`: model + token batch -> per-family values), with hooks
recording exactly the activations needed; the pass stops after the last block. Memory is bounded
by the kept examples (`state_bytes`), never the corpus; `--max-state-mib` splits the nodes into
groups that fit (one corpus pass per group).

Shards, workers, resuming (`activations.sharded_build`): the corpus is processed in numbered
shards of `--shard-sequences` sequences, in this process or on `--workers N` Ray workers (or a
cluster, `--ray-address`), merged in shard order: the output is byte-identical either way for a
given seed, device, dtype and `--threads` per worker. After each shard the running state is
written atomically to `<out>/.collate/checkpoint.pt`; a rerun with the same arguments resumes.
`--stop-after-shards N` stops after N shards (for testing interrupts).
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import orjson
import torch
from torch import Tensor

from neuron_explainer.activations.corpus import Corpus, CorpusError
from neuron_explainer.activations.corpus import iter_sequences as corpus_sequences
from neuron_explainer.activations.datasets import DATASET_JSON, DST_FOLDERS, TOKEN_PAIR_DSTS
from neuron_explainer.activations.running_state import state_bytes
from neuron_explainer.activations.sharded_build import CHECKPOINT, BuildResult, run_build
from neuron_explainer.debugger import head_writes as hw
from neuron_explainer.debugger.scalars.kinds import LATENT_KINDS
from neuron_explainer.file_utils import FetchError
from neuron_explainer.models.tokenizer import as_tokenizer

__all__ = [
    "CHECKPOINT",
    "BuildResult",
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
    format: str = "json"  # "pt" (torch.save of the same; slow), or "bulk" (activations.bulk)
    values_dtype: str = "float32"  # bulk files only: float32 (exact) or float16 (half the size)

    def __post_init__(self) -> None:
        if self.context < 1 or self.top_k < 1 or self.batch_size < 1 or self.shard_sequences < 1:
            raise ValueError("context, top-k, batch size and shard size must be positive")
        if self.random_sample < 0 or self.quantile_sample < 0 or self.quantile_calibration < 0:
            raise ValueError("sample sizes must be non-negative")
        if list(self.quantiles) != sorted(self.quantiles) or not all(
            0 < q < 1 for q in self.quantiles
        ):
            raise ValueError("quantiles must be increasing and inside (0, 1)")
        if self.format not in ("json", "pt", "bulk"):
            raise ValueError(f"unknown format {self.format!r} (json, pt or bulk)")
        if self.values_dtype not in ("float16", "float32"):
            raise ValueError(f"unknown values dtype {self.values_dtype!r} (float16 or float32)")
        for d in self.dsts or ():
            if d not in ALL_DSTS:
                raise ValueError(f"unknown dst {d!r}; known: {', '.join(ALL_DSTS)}")


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


_PAIR_LATENTS = "flattened_attn_write_to_latent_summed_over_heads"
# latents hook location (inside a block) -> the dst of their records, for every latent kind
_LATENT_DSTS = {k.hook: k.offline for k in LATENT_KINDS}
_DST_HOOKS = {dst: hook for hook, dst in _LATENT_DSTS.items()}


def _autoencoders(model: Any) -> dict[str, list[tuple[str, Any, str]]]:
    """latent records dst -> [(hook point read, coder, latents hook name)]."""
    out: dict[str, list[tuple[str, Any, str]]] = {}
    for att in model.attachments():
        location = att.latents.split(".", 2)[2] if att.latents.startswith("blocks.") else att.latents
        if location in _LATENT_DSTS:
            out.setdefault(_LATENT_DSTS[location], []).append((att.reads, att.coder, att.latents))
    return out


def family_specs(model: Any, dsts: Sequence[str] | None = None) -> list[FamilySpec]:
    """The node families a model (with its attached autoencoders) has, in build order."""
    cfg = model.cfg
    aes = _autoencoders(model)
    specs = []
    for layer in range(cfg.n_layers):
        specs.append(FamilySpec("mlp_post_act", layer, cfg.d_mlp))
        specs.append(FamilySpec("attn_write_norm", layer, cfg.n_heads))
        for dst in _LATENT_DSTS.values():
            for at, ae, latents in aes.get(dst, []):
                if not latents.startswith(f"blocks.{layer}."):
                    continue
                specs.append(FamilySpec(dst, layer, ae.n_latents))
                if dst == "attention_autoencoder_latent" and at == f"blocks.{layer}.resid.delta_attn":
                    specs.append(FamilySpec(_PAIR_LATENTS, layer, ae.n_latents))
    if dsts is not None:
        specs = [s for s in specs if s.dst in dsts]
    return specs




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
            if s.dst in _DST_HOOKS or s.dst == _PAIR_LATENTS:
                kind = "attention_autoencoder_latent" if s.dst == _PAIR_LATENTS else s.dst
                for _at, ae, latents in aes.get(kind, []):
                    if latents.startswith(p):
                        names.add(latents)
                        self._latents[(kind, s.layer)] = latents
                        if s.dst == "flattened_attn_write_to_latent_summed_over_heads":
                            self._encoders[s.layer] = ae.affine_read_directions()
        self.names = sorted(names)
        # Gram matrices (write norms without materialising writes) and each value channel's
        # write onto each encoder row: the debugger's maths (debugger.head_writes)
        self._gram: dict[int, Tensor] = {}
        self._w_to_latent: dict[int, Tensor] = {}
        for layer in layers:
            w = model.head_write(layer).float()  # (h, d_head, d_model)
            if "attn_write_norm" in dsts:
                self._gram[layer] = hw.head_write_gram(w)
            if layer in self._encoders:
                self._w_to_latent[layer] = hw.head_write_onto(w, self._encoders[layer].float())
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
        scale = cache[p + self._scale].float() if self._scale is not None else None
        probs = hw.through_post_norm(cache[p + "attn.qk_probs"].float(), scale)
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
        # stop at the final norm: coders on the last block's output (residual SAEs) have run
        fwd.setdefault("resid.ln_f.scale", []).append(stop)
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
            if spec.dst == "mlp_post_act" or spec.dst in _DST_HOOKS:
                if spec.dst == "mlp_post_act":
                    acts = cache[p + "mlp.post_act"]
                else:
                    acts = cache[self._latents[(spec.dst, spec.layer)]]
                yield spec, slice(0, spec.n_nodes), acts.float().transpose(1, 2).contiguous()
            elif spec.dst == "attn_write_norm":
                probs, v = self._pair_inputs(cache, p)  # (b, h, q, k), (b, k, h, e)
                wn = hw.write_norms(probs, v, self._gram[spec.layer])  # (b, h, q, k)
                yield spec, slice(0, spec.n_nodes), wn.reshape(b, -1, s * s).index_select(2, tril)
            else:  # flattened_attn_write_to_latent_summed_over_heads
                probs, v = self._pair_inputs(cache, p)
                # d latent / d pre-activation: 1 where the latent is active (ReLU / TopK)
                active = hw.latent_derivative(cache[self._latents[("attention_autoencoder_latent", spec.layer)]])
                active = active.transpose(1, 2)  # (b, l, q)
                w = self._w_to_latent[spec.layer]
                per_chunk = max(1, self.chunk_elements // max(1, b * s * s))
                for l0 in range(0, spec.n_nodes, per_chunk):
                    l1 = min(spec.n_nodes, l0 + per_chunk)
                    attr = hw.pair_writes_onto_rows(probs, v, w[:, :, l0:l1])  # (b, c, q, k)
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
        active = cache[self._latents[("attention_autoencoder_latent", spec.layer)]] != 0  # (b, q, l)
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
                    attr = hw.pair_writes_onto_rows(probs[stop], v[stop], w[:, :, lat])
                    attr = attr * hw.latent_derivative(active[stop][:, lat].T[:, :, None])
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
    files: Sequence[str | os.PathLike[str]] | Corpus, enc: Any, context: int, seed: int = 0
) -> Iterator[list[int]]:
    """Consecutive `context`-token sequences of the corpus (text files in the given order,
    each followed by the end-of-text token; see `activations.corpus`)."""
    corpus = (
        files if isinstance(files, Corpus) else Corpus(files=tuple(os.fspath(f) for f in files))
    )
    return corpus_sequences(corpus, enc, context, seed)


# --- the build --------------------------------------------------------------------------------


def _fingerprint(
    cfg: CollateConfig, specs: Sequence[FamilySpec], corpus: Corpus, extra: dict[str, Any]
) -> str:
    h = hashlib.sha256()
    h.update(orjson.dumps(asdict(cfg)))
    h.update(orjson.dumps([asdict(s) for s in specs]))
    h.update(corpus.fingerprint().encode())
    h.update(orjson.dumps(extra, default=str))
    return h.hexdigest()[:32]


def build(
    model: Any,
    enc: Any,
    corpus: Sequence[str | os.PathLike[str]] | Corpus,
    out: str | os.PathLike[str],
    cfg: CollateConfig | None = None,
    *,
    stop_after_shards: int | None = None,
    progress: bool | None = None,
    description: dict[str, Any] | None = None,
    keep_checkpoint: bool = False,
    workers: int | None = None,
    ray_address: str | None = None,
    threads: int | None = None,
    max_state_bytes: int | None = None,
) -> BuildResult:
    """Build (or resume building) the records of `model` (with its attached autoencoders) over
    `corpus` (text files, or a `Corpus`) into folder `out`. `description` goes into
    dataset.json (model name...). `workers` / `ray_address`: run the shards on Ray workers
    (see `activations.sharded_build`); `threads`: torch threads per worker (the output is
    byte-identical for equal device, dtype and threads); `max_state_bytes`: split the nodes into
    groups whose running state fits (one corpus pass per group)."""
    cfg = cfg or CollateConfig()
    if cfg.context > model.cfg.ctx_window:
        raise ValueError(
            f"--context {cfg.context} exceeds the model's context window {model.cfg.ctx_window}"
        )
    if not isinstance(corpus, Corpus):
        for path in corpus:
            if not os.path.isfile(path):
                raise FileNotFoundError(f"corpus file not found: {path}")
        corpus = Corpus(files=tuple(os.fspath(p) for p in corpus))
    out = Path(out)
    specs = family_specs(model, cfg.dsts)
    if not specs:
        raise ValueError("nothing to build: no node family matches --dsts")
    tokenizer = as_tokenizer(enc)
    fingerprint = _fingerprint(
        cfg,
        specs,
        corpus,
        {"model": description or {}, "dtype": str(model.dtype), "device": model.device.type},
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
    return run_build(
        model,
        tokenizer,
        corpus,
        out,
        cfg,
        specs,
        fingerprint=fingerprint,
        meta={
            "format_version": 1,
            "fingerprint": fingerprint,
            "description": description or {},
            "config": asdict(cfg),
            "corpus": corpus.describe(),
        },
        workers=workers,
        ray_address=ray_address,
        threads=threads,
        max_state_bytes=max_state_bytes,
        stop_after_shards=stop_after_shards,
        progress=progress,
        keep_checkpoint=keep_checkpoint,
    )


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
    p.add_argument("--sae", action="append", default=[], metavar="SPEC",
                   help="a community SAE (repeatable): SAELens RELEASE:SAE_ID, hf://owner/repo/path or a folder")
    p.add_argument("--transcoders", metavar="SET", help="a transcoder set (circuit-tracer's layout): a folder or hf://owner/repo")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--corpus", nargs="+", help="text (.txt), .parquet, .jsonl or .arrow files")
    src.add_argument("--hf-dataset", help="a Hugging Face hub dataset name (needs the network)")
    p.add_argument("--hf-config", help="the hub dataset's configuration")
    p.add_argument("--hf-split", default="train", help="the hub dataset's split")
    p.add_argument("--hf-revision", help="the hub dataset's revision")
    p.add_argument("--text-column", default="text", help="column holding the documents")
    p.add_argument(
        "--packing",
        default="packed",
        choices=["packed", "window"],
        help="packed: one token stream; window: each document cut on its own",
    )
    p.add_argument(
        "--shuffle-buffer", type=int, default=0, help="shuffle dataset rows (seeded by --seed)"
    )
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
    p.add_argument("--format", default=d.format, choices=["json", "pt", "bulk"])
    p.add_argument(
        "--values-dtype",
        default=d.values_dtype,
        choices=["float32", "float16"],
        help="bulk files: float32 (exact) or float16 (half the size)",
    )
    p.add_argument("--workers", type=int, help="run shards on this many Ray workers")
    p.add_argument(
        "--ray-address", help="join a Ray cluster: auto, or ray://HOST:10001 (default: local)"
    )
    p.add_argument("--threads", type=int, help="torch threads per worker (default: all)")
    p.add_argument(
        "--max-state-mib",
        type=float,
        help="split the nodes into groups whose running state fits (one corpus pass each)",
    )
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
    from neuron_explainer.models.loading import load_model, tokenizer_of

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
            values_dtype=args.values_dtype,
        )
        corpus = Corpus(
            files=tuple(args.corpus or ()),
            dataset=args.hf_dataset,
            config=args.hf_config,
            split=args.hf_split,
            revision=args.hf_revision,
            text_column=args.text_column,
            packing=args.packing,
            shuffle_buffer=args.shuffle_buffer,
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
        from neuron_explainer.models.saes.attach import attach_coders

        attach_coders(model, args.sae, args.transcoders, device)
        enc = tokenizer_of(model)
        specs = family_specs(model, cfg.dsts)
        print(
            f"collating {sum(s.n_nodes for s in specs)} nodes in {len(specs)} families; kept "
            f"examples take {state_bytes(specs, cfg) / 2**20:.0f} MiB",
            file=sys.stderr,
        )
        result = build(
            model,
            enc,
            corpus,
            args.out,
            cfg,
            workers=args.workers,
            ray_address=args.ray_address,
            threads=args.threads,
            max_state_bytes=None if args.max_state_mib is None else int(args.max_state_mib * 2**20),
            stop_after_shards=args.stop_after_shards,
            progress=False if args.no_progress else None,
            keep_checkpoint=args.keep_checkpoint,
            description={
                "model": args.model,
                "mlp_autoencoder": args.mlp_autoencoder,
                "attention_autoencoder": args.attention_autoencoder,
            },
        )
    except (ValueError, OSError, FetchError, CorpusError) as e:
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
