"""Turning a finished running state into record files: one JSON (or .pt) per node in the
published layout, or rows of the bulk format (`activations.bulk`)."""

from __future__ import annotations

import math
import os
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import numpy as np
import torch
from torch import Tensor

from neuron_explainer.activations.bulk import NodeRow
from neuron_explainer.activations.datasets import DST_FOLDERS
from neuron_explainer.activations.records import (
    ActivationRecord,
    NeuronId,
    NeuronRecord,
    RecordFormat,
    dumps_record,
)
from neuron_explainer.activations.running_state import RunningState, _Family
from neuron_explainer.models.tokenizer import Tokenizer

if TYPE_CHECKING:
    from neuron_explainer.collate import CollateConfig

__all__ = ["bulk_rows", "moments", "write_node_files"]


def moments(sums: list[float], count: int) -> tuple[float, float, float, float]:
    """Mean, variance, skewness and excess kurtosis from power sums of `count` values."""
    if count == 0:
        return (math.nan,) * 4
    m1, m2, m3, m4 = (s / count for s in sums)
    var = max(m2 - m1 * m1, 0.0)
    if var <= 0:
        return m1, var, math.nan, math.nan
    c3 = m3 - 3 * m1 * m2 + 2 * m1**3
    c4 = m4 - 4 * m1 * m3 + 6 * m1 * m1 * m2 - 3 * m1**4
    return m1, var, c3 / var**1.5, c4 / var**2 - 3.0


def _numpy(t: Tensor) -> Any:
    return t.contiguous().cpu().numpy()


class _Ranked:
    """One family's kept entries by rank, on the CPU, as the writers read them."""

    def __init__(self, f: _Family) -> None:
        self.top_ids = f.top_ids.T.tolist()
        self.top_vals = _numpy(f.by_rank("top")[1].transpose(0, 1))  # (N, K, V) float32
        self.rnd_ids = f.rnd_ids.T.tolist()
        self.rnd_vals = _numpy(f.by_rank("rnd")[1].transpose(0, 1))
        self.q_ids = f.q_ids.permute(2, 0, 1).tolist()  # (N, bins, Q)
        self.q_vals = _numpy(f.by_rank("q")[1].permute(2, 0, 1, 3))
        self.bounds = f.boundaries.T.tolist() if f.boundaries is not None else None
        self.sums = f.sums.T.tolist()
        self.count = f.count


def write_node_files(
    state: RunningState, tokenizer: Tokenizer, out: Path, cfg: CollateConfig
) -> None:
    """One record file per node of the state, in the published layout (temp + rename)."""
    strings: dict[int, list[str]] = {}

    def tokens(seq_id: int) -> list[str]:
        if seq_id not in strings:
            strings[seq_id] = tokenizer.decode_tokens(state.tokens_of(seq_id))
        return strings[seq_id]

    def records(ids: list[int], vals: Any) -> list[ActivationRecord]:
        return [
            ActivationRecord(cast(list[float], v), tokens(i))
            for i, v in zip(ids, vals, strict=True)
            if i >= 0
        ]

    fmt = cast(RecordFormat, cfg.format)
    for f in state.families.values():
        spec = f.spec
        folder = out / DST_FOLDERS[spec.dst] / str(spec.layer)
        folder.mkdir(parents=True, exist_ok=True)
        r = _Ranked(f)
        for j in range(f.nodes.n):
            mean, var, skew, kurt = moments(r.sums[j], r.count)
            record = NeuronRecord(
                neuron_id=NeuronId(layer_index=spec.layer, neuron_index=f.nodes.lo + j),
                random_sample=records(r.rnd_ids[j], r.rnd_vals[j]),
                random_sample_by_quantile=[
                    records(r.q_ids[j][q], r.q_vals[j][q]) for q in range(len(r.q_ids[j]))
                ]
                if r.bounds is not None
                else None,
                quantile_boundaries=r.bounds[j] if r.bounds is not None else None,
                mean=mean,
                variance=var,
                skewness=skew,
                kurtosis=kurt,
                most_positive_activation_records=records(r.top_ids[j], r.top_vals[j]),
            )
            _write_file(folder / f"{f.nodes.lo + j}.{fmt}", dumps_record(record, fmt))


def bulk_rows(f: _Family, dtype: str) -> Iterator[NodeRow]:
    """The bulk rows of one node range, in node order (sequence ids are the builder's)."""
    np_dtype = {"float16": np.float16, "float32": np.float32, "float64": np.float64}[dtype]
    r = _Ranked(f)
    for j in range(f.nodes.n):
        groups: list[tuple[list[int], Any]] = [
            (r.top_ids[j], r.top_vals[j]),
            (r.rnd_ids[j], r.rnd_vals[j]),
        ]
        if r.bounds is not None:
            groups += [(r.q_ids[j][q], r.q_vals[j][q]) for q in range(len(r.q_ids[j]))]
        seq: list[int] = []
        sizes: list[int] = []
        parts: list[Any] = []
        for ids, vals in groups:
            keep = [i for i, s in enumerate(ids) if s >= 0]
            sizes.append(len(keep))
            seq += [ids[i] for i in keep]
            if keep:
                parts.append(vals[keep].reshape(-1))
        mean, var, skew, kurt = moments(r.sums[j], r.count)
        yield NodeRow(
            node=f.nodes.lo + j,
            group_sizes=sizes,
            seq=seq,
            lengths=[f.v] * len(seq),
            values=np.concatenate(parts).astype(np_dtype) if parts else np.zeros(0, np_dtype),
            has_quantile_samples=r.bounds is not None,
            quantile_boundaries=r.bounds[j] if r.bounds is not None else None,
            mean=_none_if_nan(mean),
            variance=_none_if_nan(var),
            skewness=_none_if_nan(skew),
            kurtosis=_none_if_nan(kurt),
        )


def _none_if_nan(x: float) -> float | None:
    return None if math.isnan(x) else x


def sequence_strings(
    ids: Tensor, table: Tensor, tokenizer: Tokenizer
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """(sorted ids, table of string indices, strings) for the bulk token table: the distinct
    token ids used, each decoded once."""
    order = torch.argsort(ids)
    ids, table = ids[order], table[order]
    used, inverse = np.unique(table.numpy(), return_inverse=True)
    strings = tokenizer.decode_tokens([int(t) for t in used])
    return ids.numpy(), inverse.reshape(table.shape).astype(np.int32), strings


def _write_file(path: Path, data: bytes) -> None:
    """Temp file + rename: a reader (or a resumed build) never sees a partial record."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.part")
    try:
        tmp.write_bytes(data)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
