"""The records builder's running state: per node, the kept examples and the moments.

Per node (of a `NodeRange`: a family's nodes [lo, hi)) the state keeps, with torch ops on the
device:
- the top `top_k` sequences by score (ties: earlier sequence first);
- a uniform random sample of `random_sample` sequences: the bottom-k of a random key per
  (sequence, node);
- per activation-quantile bin, the bottom-`quantile_sample` sequences by another random key;
- power sums of all its values (float32 within a batch, float64 across batches).

The random keys are a hash of (seed, family, sequence id, node index), not draws from a
generator, so a key does not depend on which worker, shard, batch or node range saw the pair:
that is what lets a build be split over workers and node ranges and still give the same bytes.

States of consecutive shards merge (`merge_from`) exactly as if one state had seen both: the
kept lists are sorted best first with ties going to the earlier sequence, and a shard's entries
are all later than the state's. The builder always folds each shard into a fresh state and
merges shard states in shard order, in one process or across Ray workers alike, so the float
sums are added in the same order too.
"""

from __future__ import annotations

import hashlib
import io
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

if TYPE_CHECKING:
    from neuron_explainer.collate import CollateConfig, FamilyBatch, FamilySpec

__all__ = ["NodeRange", "RunningState", "node_state_bytes", "state_bytes", "vector_length"]

STATE_VERSION = 2


@dataclass(frozen=True)
class NodeRange:
    """Nodes [lo, hi) of one family."""

    spec: FamilySpec
    lo: int
    hi: int

    @property
    def key(self) -> str:
        return self.spec.key

    @property
    def n(self) -> int:
        return self.hi - self.lo


def vector_length(spec: FamilySpec, context: int) -> int:
    """Values per example: tokens, or token pairs (flattened lower triangle)."""
    return context * (context + 1) // 2 if spec.token_pair else context


def _examples_per_node(cfg: CollateConfig) -> int:
    return cfg.top_k + cfg.random_sample + (len(cfg.quantiles) + 1) * cfg.quantile_sample


def node_state_bytes(spec: FamilySpec, cfg: CollateConfig) -> int:
    """Bytes one node of `spec` takes in a state: its kept values (float32) plus, per kept
    entry, a key, an id and a slot (4 + 8 + 8 bytes), plus 4 float64 power sums."""
    e = _examples_per_node(cfg)
    return e * (4 * vector_length(spec, cfg.context) + 20) + 32


def state_bytes(specs: Sequence[FamilySpec], cfg: CollateConfig) -> int:
    """Memory the running state of these families takes (the bulk of each checkpoint)."""
    return sum(s.n_nodes * node_state_bytes(s, cfg) for s in specs)


# --- random keys ---------------------------------------------------------------------------------

_M32 = 0xFFFFFFFF


def _mix32(x: Tensor) -> Tensor:
    """murmur3's 32-bit finalizer on int64 tensors holding 32-bit values (products wrap mod
    2^64; only their low 32 bits are kept)."""
    x = x ^ (x >> 16)
    x = (x * 0x85EBCA6B) & _M32
    x = x ^ (x >> 13)
    x = (x * 0xC2B2AE35) & _M32
    return x ^ (x >> 16)


def _stream_base(seed: int, stream: str, family: str) -> int:
    digest = hashlib.sha256(f"{seed}/{stream}/{family}".encode()).digest()
    return int.from_bytes(digest[:4], "little")


def uniform_keys(seed: int, stream: str, family: str, seq_ids: Tensor, nodes: Tensor) -> Tensor:
    """(len(seq_ids), len(nodes)) float32 keys in [0, 1), a fixed function of the arguments."""
    base = _stream_base(seed, stream, family)
    s = seq_ids.long()
    h = _mix32((s & _M32) ^ base)
    h = _mix32(h ^ ((s >> 32) & _M32))
    n = _mix32((nodes.long() + 0x9E3779B9) & _M32)
    h = _mix32(h[:, None] ^ n[None, :])
    return (h >> 8).float() * (1.0 / (1 << 24))


# --- one family ----------------------------------------------------------------------------------


@dataclass
class _Family:
    """Running state of one node range: kept examples (keys, sequence ids, values), moments."""

    nodes: NodeRange
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

    @property
    def spec(self) -> FamilySpec:
        return self.nodes.spec

    @classmethod
    def empty(cls, nodes: NodeRange, cfg: CollateConfig, device: torch.device) -> _Family:
        n = nodes.n
        v = vector_length(nodes.spec, cfg.context)
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
            nodes, v, *top, *rnd, *qs, None, torch.zeros(4, n, dtype=torch.float64, device=device)
        )

    def tensors(self) -> dict[str, Any]:
        d = {k: getattr(self, k) for k in _STATE_TENSORS}
        d["count"] = self.count
        return d

    def by_rank(self, which: str) -> tuple[Tensor, Tensor]:
        """(ids, values by rank) of `which` in top / rnd / q."""
        vals, slots = getattr(self, f"{which}_vals"), getattr(self, f"{which}_slots")
        return getattr(self, f"{which}_ids"), _by_rank(vals, slots)


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


class _Candidates:
    """Another state's kept entries as merge candidates: `rows(rank, node)` gives values."""

    def __init__(self, vals: Tensor, slots: Tensor) -> None:
        by_rank = _by_rank(vals, slots)
        self.v = by_rank.shape[-1]
        self._n = by_rank.shape[1]
        self._flat = by_rank.reshape(-1, self.v)

    def rows(self, ranks: Tensor, nodes: Tensor) -> Tensor:
        return self._flat.index_select(0, ranks * self._n + nodes)


def _merge(
    keys: Tensor,
    ids: Tensor,
    slots: Tensor,
    vals: Tensor,
    new_keys: Tensor,
    new_ids: Tensor,
    batch: Any,
    descending: bool,
) -> None:
    """Keep, in place, the best `len(keys)` of kept + new candidates per node.

    keys/ids/slots (K, N) are sorted best first (on ties: kept ones, then earlier new ones win,
    i.e. smaller sequence ids); vals (K, N, V) holds the values in storage slots: rank r of node
    n is vals[slots[r, n], n]. So entering candidates only write their own values into the slots
    of the entries they evict (always the worst kept ones), and nothing else moves. Views are
    fine: everything is written in place. new_keys (B, N); new_ids (B,) (one sequence per
    candidate row, a batch) or (B, N) (another state's entries); `batch.rows(candidate, node)`
    gives the values of the entering candidates. Only nodes where some candidate beats the
    worst kept key are touched.
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
    new_i = (order - k).clamp(min=0)
    entering_ids = new_ids[new_i] if new_ids.dim() == 1 else pick(new_ids).gather(0, new_i)
    put(keys, cand.gather(0, order))
    put(ids, torch.where(from_new, entering_ids, pick(ids).gather(0, old_i)))
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


class _Sliced:
    """A FamilyBatch restricted to nodes [offset, offset + n) of its slice."""

    def __init__(self, batch: FamilyBatch, offset: int, n: int) -> None:
        self.scores = batch.scores[:, offset : offset + n]
        self.sums = batch.sums[:, offset : offset + n]
        self.count = batch.count
        self.v = batch.v
        self._rows = batch.rows
        self._offset = offset

    def rows(self, bi: Tensor, ni: Tensor) -> Tensor:
        return self._rows(bi, ni + self._offset)


# --- the state -----------------------------------------------------------------------------------


class RunningState:
    """The running state of some node ranges over the sequences seen so far, plus the tokens of
    exactly the sequences some kept entry references."""

    def __init__(
        self, ranges: Sequence[NodeRange], cfg: CollateConfig, device: torch.device
    ) -> None:
        self.cfg = cfg
        self.device = device
        self.families = {r.key: _Family.empty(r, cfg, device) for r in ranges}
        self.shards_done = 0
        self.n_sequences = 0
        self.n_tokens = 0
        self.token_ids = torch.zeros(0, dtype=torch.long)  # sorted sequence ids kept
        self.token_table = torch.zeros(0, cfg.context, dtype=torch.int32)
        self.calibrated = not cfg.quantiles or cfg.quantile_sample == 0

    def boundaries(self) -> dict[str, Tensor | None]:
        return {k: f.boundaries for k, f in self.families.items()}

    def set_boundaries(self, boundaries: dict[str, Tensor | None]) -> None:
        for k, b in boundaries.items():
            self.families[k].boundaries = None if b is None else b.to(self.device)
        self.calibrated = True

    # -- updates

    def update(self, spec: FamilySpec, sl: slice, batch: FamilyBatch, seq_ids: Tensor) -> None:
        """Fold one FamilyBatch (the family's nodes `sl`, sequences `seq_ids`) into the state
        (only the part inside this state's node range of the family, if any)."""
        f = self.families.get(spec.key)
        if f is None:
            return
        lo, hi = max(sl.start, f.nodes.lo), min(sl.stop, f.nodes.hi)
        if lo >= hi:
            return
        part = _Sliced(batch, lo - sl.start, hi - lo)
        local = slice(lo - f.nodes.lo, hi - f.nodes.lo)
        f.sums[:, local] += part.sums
        if local.start == 0:
            f.count += part.count
        self._merge_into(f, "top", local, part.scores, seq_ids, part, descending=True)
        nodes = torch.arange(lo, hi, device=seq_ids.device)
        if self.cfg.random_sample:
            keys = uniform_keys(self.cfg.seed, "random", spec.key, seq_ids, nodes)
            self._merge_into(f, "rnd", local, keys, seq_ids, part, descending=False)
        if f.boundaries is not None and self.cfg.quantile_sample:
            keys = uniform_keys(self.cfg.seed, "quantile", spec.key, seq_ids, nodes)
            bins = (part.scores[:, None, :] > f.boundaries[None, :, local]).sum(1)  # (b, n)
            for q in range(f.q_keys.shape[0]):
                masked = torch.where(bins == q, keys, math.inf)
                _merge(
                    f.q_keys[q, :, local],
                    f.q_ids[q, :, local],
                    f.q_slots[q, :, local],
                    f.q_vals[q, :, local],
                    masked,
                    seq_ids,
                    part,
                    descending=False,
                )

    @staticmethod
    def _merge_into(
        f: _Family,
        which: str,
        sl: slice,
        keys: Tensor,
        ids: Tensor,
        batch: Any,
        descending: bool,
    ) -> None:
        k_, i_, s_, v_ = (getattr(f, f"{which}_{x}") for x in ("keys", "ids", "slots", "vals"))
        _merge(k_[:, sl], i_[:, sl], s_[:, sl], v_[:, sl], keys, ids, batch, descending)

    def merge_from(self, other: RunningState) -> None:
        """Fold in the state of the sequences after this one's (the next shard)."""
        for key, f in self.families.items():
            o = other.families[key]
            f.sums += o.sums.to(self.device)
            f.count += o.count
            for which, descending in (("top", True), ("rnd", False)):
                keys = getattr(o, f"{which}_keys").to(self.device)
                ids = getattr(o, f"{which}_ids").to(self.device)
                cand = _Candidates(
                    getattr(o, f"{which}_vals").to(self.device),
                    getattr(o, f"{which}_slots").to(self.device),
                )
                self._merge_into(f, which, slice(0, f.nodes.n), keys, ids, cand, descending)
            for q in range(f.q_keys.shape[0]):
                cand = _Candidates(o.q_vals[q].to(self.device), o.q_slots[q].to(self.device))
                _merge(
                    f.q_keys[q],
                    f.q_ids[q],
                    f.q_slots[q],
                    f.q_vals[q],
                    o.q_keys[q].to(self.device),
                    o.q_ids[q].to(self.device),
                    cand,
                    descending=False,
                )
        self.n_sequences += other.n_sequences
        self.n_tokens += other.n_tokens
        self.keep_tokens([other.token_ids], [other.token_table])

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

    # -- bytes (checkpoints, and shard states coming back from workers)

    def to_bytes(self, fingerprint: str = "") -> bytes:
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

    def load_bytes(self, data: bytes, fingerprint: str = "") -> bool:
        """Restore from `to_bytes`; False if it is for other arguments."""
        payload = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
        if payload.get("version") != STATE_VERSION or payload.get("fingerprint") != fingerprint:
            return False
        if set(payload["families"]) != set(self.families):
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

    def load(self, path: Path, fingerprint: str) -> bool:
        return self.load_bytes(path.read_bytes(), fingerprint)


def _cpu(d: dict[str, Any]) -> dict[str, Any]:
    return {k: v.cpu() if isinstance(v, Tensor) else v for k, v in d.items()}
