"""The records build loop: corpus shards over workers, merged in shard order, checkpointed.

The corpus's sequences are cut into numbered shards of `shard_sequences`. Each shard is folded
into a fresh running state by a worker (`ShardWorker`: in this process, or one Ray actor per
worker / GPU, `RayShardPool`), and the shard states are merged into the build's state strictly
in shard order, whatever order workers finish in. So a build gives the same bytes with 0, 1 or
N workers (given the device, dtype and threads per worker).

Node ranges: with `max_state_bytes`, the families' nodes are split into groups whose running
state fits that budget (`node_groups`); the corpus is then run once per group. A worker holds
one group's state for one shard plus its model replica; the driver holds one group's state and
the states of the shards in flight.

Resuming: after each merged shard the state is written atomically to
`<out>/.collate/checkpoint.pt`; finished groups leave their records (or bulk parts) on disk. A
rerun with the same arguments continues after the last merged shard.
"""

from __future__ import annotations

import io
import shutil
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from tqdm import tqdm

from neuron_explainer.activations.bulk import (
    BULK_SUFFIX,
    SEQUENCES_FILE,
    BulkFileWriter,
    row_at,
    rows_per_group_for,
    write_sequences,
)
from neuron_explainer.activations.corpus import Corpus, iter_sequences
from neuron_explainer.activations.datasets import DATASET_JSON, DST_FOLDERS
from neuron_explainer.activations.record_writer import (
    bulk_rows,
    sequence_strings,
    write_node_files,
)
from neuron_explainer.activations.running_state import (
    NodeRange,
    RunningState,
    node_state_bytes,
    vector_length,
)
from neuron_explainer.activations.shard_worker import ShardWorker
from neuron_explainer.file_utils import atomic_write_bytes
from neuron_explainer.models.tokenizer import Tokenizer

if TYPE_CHECKING:
    from neuron_explainer.collate import CollateConfig, FamilySpec

__all__ = ["CHECKPOINT", "BuildResult", "node_groups", "run_build"]

WORK = Path(".collate")
CHECKPOINT = WORK / "checkpoint.pt"
PARTS = WORK / "parts"


@dataclass
class BuildResult:
    out: Path
    complete: bool
    shards_done: int
    n_sequences: int
    n_tokens: int
    seconds: float
    tokens_per_second: float
    families: list[Any] = field(default_factory=list)
    worker_peak_bytes: list[int] = field(default_factory=list)


def node_groups(
    specs: Sequence[FamilySpec], cfg: CollateConfig, max_state_bytes: int | None
) -> list[list[NodeRange]]:
    """The node ranges each pass over the corpus builds: all nodes at once, or (with a budget)
    consecutive ranges whose running state takes at most `max_state_bytes` (at least one node
    per group)."""
    if max_state_bytes is None:
        return [[NodeRange(s, 0, s.n_nodes) for s in specs]]
    groups: list[list[NodeRange]] = []
    current: list[NodeRange] = []
    used = 0
    for s in specs:
        per = node_state_bytes(s, cfg)
        lo = 0
        while lo < s.n_nodes:
            room = (max_state_bytes - used) // per
            if room < 1 and current:
                groups.append(current)
                current, used = [], 0
                continue
            take = int(max(1, min(s.n_nodes - lo, room)))
            current.append(NodeRange(s, lo, lo + take))
            used += take * per
            lo += take
    if current:
        groups.append(current)
    return groups


# --- executors -----------------------------------------------------------------------------------


class _LocalPool:
    """The Ray pool's interface, run in this process (shards are computed when collected)."""

    workers = 1

    def __init__(
        self,
        model: Any,
        cfg: CollateConfig,
        threads: int | None,
        all_specs: Sequence[FamilySpec],
    ) -> None:
        self.worker = ShardWorker(model, cfg, threads, all_specs)
        self._queue: list[tuple[Any, ...]] = []

    def calibrate(self, ranges: Sequence[NodeRange], tokens: np.ndarray) -> dict[str, Any]:
        return self.worker.calibrate(ranges, tokens)

    def submit(self, *args: Any) -> None:
        self._queue.append(args)

    def has_next(self) -> bool:
        return bool(self._queue)

    def in_flight(self) -> int:
        return len(self._queue)

    def get_next(self, ranges: Sequence[NodeRange], cfg: CollateConfig) -> RunningState:
        return self.worker.process(*self._queue.pop(0))

    def peak_memory(self) -> list[int]:
        import resource

        return [resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024]

    def close(self) -> None:
        self._queue.clear()


# --- the loop ------------------------------------------------------------------------------------


def _shards(corpus: Corpus, tok: Tokenizer, cfg: CollateConfig, skip: int) -> Iterator[np.ndarray]:
    """The corpus's shards after the first `skip` sequences, as (n, context) int32 arrays."""
    seqs = iter_sequences(corpus, tok, cfg.context, cfg.seed)
    limit = None if cfg.max_tokens is None else cfg.max_tokens // cfg.context
    taken = 0
    for _ in range(skip):
        if next(seqs, None) is None:
            return
        taken += 1
    while True:
        n = cfg.shard_sequences if limit is None else min(cfg.shard_sequences, limit - taken)
        if n <= 0:
            return
        rows = [s for _, s in zip(range(n), seqs, strict=False)]
        if not rows:
            return
        taken += len(rows)
        yield np.asarray(rows, dtype=np.int32)
        if len(rows) < n:
            return


def _first(corpus: Corpus, tok: Tokenizer, cfg: CollateConfig, n: int) -> np.ndarray:
    out: list[list[int]] = []
    limit = n if cfg.max_tokens is None else min(n, cfg.max_tokens // cfg.context)
    for s in iter_sequences(corpus, tok, cfg.context, cfg.seed):
        if len(out) >= limit:
            break
        out.append(s)
    return np.asarray(out, dtype=np.int32).reshape(len(out), cfg.context)


def _count_tokens(corpus: Corpus, tok: Tokenizer, cfg: CollateConfig) -> int | None:
    """The build's corpus tokens, for the progress bar's ETA: `--max-tokens` (an upper bound),
    else for local files a tokenizing pass; unknown for a hub dataset."""
    if cfg.max_tokens is not None:
        return cfg.max_tokens // cfg.context * cfg.context
    if corpus.files:
        return sum(1 for _ in iter_sequences(corpus, tok, cfg.context, cfg.seed)) * cfg.context
    return None


def _checkpoint(
    out: Path,
    fingerprint: str,
    groups_done: int,
    state: RunningState | None,
    totals: tuple[int, ...],
) -> None:
    buffer = io.BytesIO()
    torch.save(
        {
            "fingerprint": fingerprint,
            "groups_done": groups_done,
            "state": None if state is None else state.to_bytes(fingerprint),
            "totals": list(totals),
        },
        buffer,
    )
    atomic_write_bytes(out / CHECKPOINT, buffer.getvalue())


def run_build(
    model: Any,
    tok: Tokenizer,
    corpus: Corpus,
    out: Path,
    cfg: CollateConfig,
    specs: Sequence[FamilySpec],
    *,
    fingerprint: str,
    meta: dict[str, Any],
    workers: int | None = None,
    ray_address: str | None = None,
    threads: int | None = None,
    max_state_bytes: int | None = None,
    stop_after_shards: int | None = None,
    progress: bool | None = None,
    keep_checkpoint: bool = False,
) -> BuildResult:
    """Build (or resume) the records of `specs` into `out` (see the module docstring).
    `workers`: None or 0 for this process, N for N Ray workers (`ray_address` to join a
    cluster, where None workers means one per GPU, else per `threads` CPUs)."""
    groups = node_groups(specs, cfg, max_state_bytes)
    layout = orjson.dumps([[(r.key, r.lo, r.hi) for r in g] for g in groups]).decode()
    fp = f"{fingerprint}/{layout}"
    groups_done, resumed = 0, None
    totals: tuple[int, ...] = (
        0,
        0,
        0,
    )  # shards, sequences, tokens of the corpus (from a finished group)
    if (out / CHECKPOINT).is_file():
        saved = torch.load(out / CHECKPOINT, map_location="cpu", weights_only=True)
        if saved.get("fingerprint") != fp:
            raise ValueError(
                f"{out / CHECKPOINT} is from a build with other arguments or corpus; delete it "
                "or pass another --out to start afresh"
            )
        groups_done, resumed = saved["groups_done"], saved["state"]
        totals = tuple(saved["totals"])
    use_ray = bool(workers) or ray_address is not None
    threads = threads or torch.get_num_threads()
    pool: Any = (
        _ray_pool(model, cfg, workers or None, ray_address, threads, specs)
        if use_ray
        else _LocalPool(model, cfg, threads, specs)
    )
    started = time.perf_counter()
    tokens_this_run = 0
    shards_this_run = 0
    show = sys.stderr.isatty() if progress is None else progress
    total = _count_tokens(corpus, tok, cfg) if show else None
    bar = tqdm(
        total=None if total is None else total * len(groups),
        unit="tok",
        unit_scale=True,
        desc="collating",
        file=sys.stderr,
        disable=not show,
        dynamic_ncols=True,
        smoothing=0.1,
    )
    state: RunningState | None = None
    peaks: list[int] = []
    try:
        with bar:
            if total is not None:
                bar.update(total * groups_done)
            for g in range(groups_done, len(groups)):
                ranges = groups[g]
                state = RunningState(ranges, cfg, torch.device("cpu"))
                if resumed is not None and g == groups_done:
                    if not state.load_bytes(resumed, fp):
                        raise ValueError(f"{out / CHECKPOINT} does not match this build")
                    bar.update(state.n_tokens)
                if not state.calibrated:
                    first = _first(corpus, tok, cfg, cfg.quantile_calibration)
                    if len(first):
                        state.set_boundaries(pool.calibrate(ranges, first))
                    state.calibrated = True
                boundaries = state.boundaries()
                shards = _shards(corpus, tok, cfg, state.n_sequences)
                next_id = state.n_sequences
                exhausted = False
                while True:
                    while not exhausted and pool.in_flight() < 2 * pool.workers:
                        tokens = next(shards, None)
                        if tokens is None:
                            exhausted = True
                            break
                        pool.submit(ranges, boundaries, next_id, tokens)
                        next_id += len(tokens)
                    if not pool.has_next():
                        break
                    shard_state = pool.get_next(ranges, cfg)
                    state.merge_from(shard_state)
                    state.shards_done += 1
                    _checkpoint(out, fp, g, state, totals)
                    tokens_this_run += shard_state.n_tokens
                    shards_this_run += 1
                    bar.update(shard_state.n_tokens)
                    if stop_after_shards is not None and shards_this_run >= stop_after_shards:
                        more = pool.has_next() or not exhausted or g + 1 < len(groups)
                        if more:
                            return _result(out, False, state, started, tokens_this_run, specs)
                if state.n_sequences == 0:
                    raise ValueError(
                        f"the corpus has fewer than {cfg.context} tokens: nothing to collate"
                    )
                _finish_group(state, g, tok, out, cfg)
                totals = (state.shards_done, state.n_sequences, state.n_tokens)
                _checkpoint(out, fp, g + 1, None, totals)
            peaks = pool.peak_memory()
    finally:
        pool.close()
    if cfg.format == "bulk":
        _assemble_bulk(out, groups, tok, cfg)
    meta = {
        **meta,
        "shards": totals[0],
        "n_sequences": totals[1],
        "n_tokens": totals[2],
        "datasets": _dataset_list(specs, cfg),
    }
    if cfg.format == "bulk":
        meta["sequences"] = SEQUENCES_FILE
    atomic_write_bytes(out / DATASET_JSON, orjson.dumps(meta, option=orjson.OPT_INDENT_2) + b"\n")
    if not keep_checkpoint:
        shutil.rmtree(out / WORK, ignore_errors=True)
    elapsed = time.perf_counter() - started
    return BuildResult(
        out,
        True,
        totals[0],
        totals[1],
        totals[2],
        elapsed,
        tokens_this_run / elapsed if elapsed > 0 else 0.0,
        list(specs),
        peaks,
    )


def _ray_pool(
    model: Any,
    cfg: CollateConfig,
    workers: int | None,
    address: str | None,
    threads: int,
    specs: Sequence[FamilySpec],
) -> Any:
    from neuron_explainer.activations.ray_workers import RayShardPool

    return RayShardPool(model, cfg, workers, address, threads, specs)


def _result(
    out: Path,
    complete: bool,
    state: RunningState,
    started: float,
    tokens_this_run: int,
    specs: Sequence[FamilySpec],
) -> BuildResult:
    elapsed = time.perf_counter() - started
    return BuildResult(
        out,
        complete,
        state.shards_done,
        state.n_sequences,
        state.n_tokens,
        elapsed,
        tokens_this_run / elapsed if elapsed > 0 else 0.0,
        list(specs),
    )


def _part(out: Path, r: NodeRange) -> Path:
    return out / PARTS / f"{r.spec.dst}.{r.spec.layer}.{r.lo:010d}{BULK_SUFFIX}"


def _rows_per_group(spec: FamilySpec, cfg: CollateConfig) -> int:
    e = cfg.top_k + cfg.random_sample + (len(cfg.quantiles) + 1) * cfg.quantile_sample
    itemsize = {"float16": 2, "float32": 4, "float64": 8}[cfg.values_dtype]
    return rows_per_group_for(e * vector_length(spec, cfg.context), itemsize)


def _finish_group(
    state: RunningState, g: int, tok: Tokenizer, out: Path, cfg: CollateConfig
) -> None:
    """A finished group's output: its record files, or its bulk parts and token part."""
    if cfg.format != "bulk":
        write_node_files(state, tok, out, cfg)
        return
    for f in state.families.values():
        part = _part(out, f.nodes)
        with BulkFileWriter(part, cfg.values_dtype, 1 << 30, first_node=f.nodes.lo) as w:
            for row in bulk_rows(f, cfg.values_dtype):
                w.write(row)
    buffer = io.BytesIO()
    torch.save({"ids": state.token_ids, "table": state.token_table}, buffer)
    atomic_write_bytes(out / PARTS / f"tokens.{g:06d}.pt", buffer.getvalue())


def _assemble_bulk(
    out: Path, groups: Sequence[Sequence[NodeRange]], tok: Tokenizer, cfg: CollateConfig
) -> None:
    """Join the parts into one file per (layer, node kind), and the token table."""
    by_family: dict[str, list[NodeRange]] = {}
    for g in groups:
        for r in g:
            by_family.setdefault(r.key, []).append(r)
    for ranges in by_family.values():
        spec = ranges[0].spec
        path = out / DST_FOLDERS[spec.dst] / f"{spec.layer}{BULK_SUFFIX}"
        with BulkFileWriter(path, cfg.values_dtype, _rows_per_group(spec, cfg)) as w:
            for r in sorted(ranges, key=lambda r: r.lo):
                # in batches: a part may hold a whole family, too large to decode at once
                for batch in pq.ParquetFile(_part(out, r)).iter_batches(batch_size=256):
                    table = pa.Table.from_batches([batch])
                    for i in range(table.num_rows):
                        w.write(row_at(table, i))
    ids, tables = [], []
    for p in sorted((out / PARTS).glob("tokens.*.pt")):
        saved = torch.load(p, map_location="cpu", weights_only=True)
        ids.append(saved["ids"])
        tables.append(saved["table"])
    all_ids = torch.cat(ids)
    all_table = torch.cat(tables)
    uniq, first = np.unique(all_ids.numpy(), return_index=True)
    seq_ids, table, strings = sequence_strings(
        torch.from_numpy(uniq), all_table[torch.from_numpy(first)], tok
    )
    write_sequences(out / SEQUENCES_FILE, seq_ids, table, strings)


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
            "format": cfg.format,
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
    "residual_autoencoder_latent": "Residual-stream SAE latents",
    "transcoder_latent": "Transcoder latents",
    "flattened_attn_write_to_latent_summed_over_heads": "Attention autoencoder latents by token pair",
}
