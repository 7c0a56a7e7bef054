"""Export records and explanations to Neuronpedia's upload layout.

    python -m neuron_explainer.activations.neuronpedia FOLDER --dst mlp_post_act \
        --model-id gpt2-small --source-set oai-mlp --out EXPORT [--layers 0,3] [--batch-size 128]

Writes, per layer, `<out>/<model id>/<layer>-<source set>/` (Neuronpedia's source id) with
`features/`, `activations/` and `explanations/` folders of `batch-<n>.jsonl.gz` files, batch n
holding nodes [n * batch size, (n + 1) * batch size) and their activations and explanations,
one JSON object per line with Neuronpedia's field names (its `Feature`, `Activation` and
`Explanation` tables):
- feature: modelId, layer (the source id), index (a string), maxActApprox, creatorId,
  createdAt, and the fields this builder does not compute, empty (vectors, cosine
  similarities, logit tables, histograms);
- activation: one per example (top-activating, random, and each quantile bin's, with binMin /
  binMax / binContains for quantile samples), with tokens, values, maxValue,
  maxValueTokenIndex, minValue; `id` is a hash of (model, layer, index, example), so a
  re-export gives the same ids;
- explanation: description, explanationModelName (the explanation set), typeName, notes (the
  score), authorId.

Token-pair records (attention heads, attention latents by token pair) hold one value per token
pair, which Neuronpedia's per-token activations cannot hold: they are refused.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import math
import sys
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from neuron_explainer.activations.datasets import (
    TOKEN_PAIR_DSTS,
    DatasetEntry,
    DatasetRegistry,
    RecordNotFound,
)
from neuron_explainer.activations.records import ActivationRecord, NeuronRecord
from neuron_explainer.file_utils import atomic_write_bytes

__all__ = ["export_neuronpedia", "main", "read_batches"]

FOLDERS = ("features", "activations", "explanations")


def _finite(x: float) -> float:
    return float(x) if math.isfinite(x) else 0.0


def _cuid(*parts: Any) -> str:
    """A stable, cuid-shaped id (25 lowercase alphanumerics starting with a letter)."""
    digest = hashlib.sha256("/".join(map(str, parts)).encode()).hexdigest()
    return "c" + digest[:24]


def _feature(
    model_id: str, source: str, index: int, record: NeuronRecord, meta: dict[str, Any]
) -> dict[str, Any]:
    try:
        peak = _finite(record.max_activation)
    except ValueError:
        peak = 0.0
    return {
        "modelId": model_id,
        "layer": source,
        "index": str(index),
        "creatorId": meta["creatorId"],
        "createdAt": meta["createdAt"],
        "maxActApprox": peak,
        "hasVector": False,
        "vector": [],
        "vectorLabel": None,
        "vectorDefaultSteerStrength": 10,
        "hookName": None,
        "topkCosSimIndices": [],
        "topkCosSimValues": [],
        "neuron_alignment_indices": [],
        "neuron_alignment_values": [],
        "neuron_alignment_l1": [],
        "correlated_neurons_indices": [],
        "correlated_neurons_pearson": [],
        "correlated_neurons_l1": [],
        "correlated_features_indices": [],
        "correlated_features_pearson": [],
        "correlated_features_l1": [],
        "neg_str": [],
        "neg_values": [],
        "pos_str": [],
        "pos_values": [],
        "frac_nonzero": 0,
        "freq_hist_data_bar_heights": [],
        "freq_hist_data_bar_values": [],
        "logits_hist_data_bar_heights": [],
        "logits_hist_data_bar_values": [],
        "decoder_weights_dist": [],
    }


def _activation(
    model_id: str,
    source: str,
    index: int,
    example: ActivationRecord,
    key: str,
    meta: dict[str, Any],
    bin_range: tuple[float | None, float | None] = (None, None),
) -> dict[str, Any]:
    values = [_finite(v) for v in example.activations]
    peak = max(values) if values else 0.0
    return {
        "id": _cuid(model_id, source, index, key),
        "tokens": list(example.tokens),
        "modelId": model_id,
        "layer": source,
        "index": str(index),
        "maxValue": peak,
        "maxValueTokenIndex": values.index(peak) if values else 0,
        "minValue": min(values) if values else 0.0,
        "values": values,
        "creatorId": meta["creatorId"],
        "dataSource": None,
        "dataIndex": None,
        "dfaValues": [],
        "dfaTargetIndex": None,
        "dfaMaxValue": None,
        "createdAt": meta["createdAt"],
        "lossValues": [],
        "logitContributions": None,
        "binMin": bin_range[0],
        "binMax": bin_range[1],
        "binContains": None,
        "qualifyingTokenIndex": None,
    }


def _activations(
    model_id: str, source: str, index: int, record: NeuronRecord, meta: dict[str, Any]
) -> Iterable[dict[str, Any]]:
    for i, r in enumerate(record.most_positive_activation_records):
        yield _activation(model_id, source, index, r, f"top/{i}", meta)
    for i, r in enumerate(record.random_sample):
        yield _activation(model_id, source, index, r, f"random/{i}", meta)
    bounds = [None, *(record.quantile_boundaries or []), None]
    for q, sample in enumerate(record.random_sample_by_quantile or []):
        lo = bounds[q] if q < len(bounds) else None
        hi = bounds[q + 1] if q + 1 < len(bounds) else None
        for i, r in enumerate(sample):
            yield _activation(model_id, source, index, r, f"quantile/{q}/{i}", meta, (lo, hi))


def _explanations(
    registry: DatasetRegistry,
    entry: DatasetEntry,
    model_id: str,
    source: str,
    layer: int,
    index: int,
    meta: dict[str, Any],
) -> Iterable[dict[str, Any]]:
    from neuron_explainer.explanations.store import node_explanations

    for n, (dataset, text, score) in enumerate(node_explanations(registry, entry, layer, index)):
        yield {
            "id": _cuid(model_id, source, index, "explanation", dataset, n),
            "modelId": model_id,
            "layer": source,
            "index": str(index),
            "description": text,
            "authorId": meta["creatorId"],
            "embedding": None,
            "triggeredById": None,
            "typeName": "oai_token-act-pair",
            "explanationModelName": dataset,
            "notes": None if score is None else f"score {score:.4f}",
            "createdAt": meta["createdAt"],
        }


def _write_batch(folder: Path, n: int, rows: list[dict[str, Any]]) -> None:
    data = b"".join(orjson.dumps(r) + b"\n" for r in rows)
    atomic_write_bytes(folder / f"batch-{n}.jsonl.gz", gzip.compress(data, 5, mtime=0))


def export_neuronpedia(
    registry: DatasetRegistry,
    entry: DatasetEntry,
    out: str | Path,
    *,
    model_id: str,
    source_set: str,
    nodes: Sequence[tuple[int, int]],
    batch_size: int = 128,
    creator_id: str = "neuron-explainer",
    created_at: datetime | None = None,
) -> list[Path]:
    """Write `nodes` (layer, index) of `entry` in Neuronpedia's layout; the source folders."""
    if entry.dst in TOKEN_PAIR_DSTS:
        raise ValueError(
            f"{entry.dst} records hold one value per token pair; Neuronpedia's activations hold "
            "one per token: export neurons or latents"
        )
    if batch_size < 1:
        raise ValueError("--batch-size must be at least 1")
    meta = {
        "creatorId": creator_id,
        "createdAt": (created_at or datetime.now(UTC)).isoformat(),
    }
    by_layer: dict[int, list[int]] = {}
    for layer, index in sorted(set(nodes)):
        by_layer.setdefault(layer, []).append(index)
    written = []
    for layer, indices in by_layer.items():
        source = f"{layer}-{source_set}"
        root = Path(out) / model_id / source
        batches: dict[int, dict[str, list[dict[str, Any]]]] = {}
        for index in indices:
            try:
                record = registry.load_record(entry, layer, index)
            except RecordNotFound:
                continue
            batch = batches.setdefault(index // batch_size, {f: [] for f in FOLDERS})
            batch["features"].append(_feature(model_id, source, index, record, meta))
            batch["activations"] += _activations(model_id, source, index, record, meta)
            batch["explanations"] += _explanations(
                registry, entry, model_id, source, layer, index, meta
            )
        for n, batch in sorted(batches.items()):
            for folder in FOLDERS:
                _write_batch(root / folder, n, batch[folder])
        written.append(root)
    return written


def read_batches(folder: Path) -> list[dict[str, Any]]:
    """Every row of a `features`, `activations` or `explanations` folder, batch by batch."""
    files = sorted(
        folder.glob("batch-*.jsonl.gz"), key=lambda p: int(p.name.split("-")[1].split(".")[0])
    )
    rows = []
    for f in files:
        rows += [orjson.loads(line) for line in gzip.decompress(f.read_bytes()).splitlines()]
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    from neuron_explainer.explanations.batch import list_nodes, parse_layers

    p = argparse.ArgumentParser(
        prog="python -m neuron_explainer.activations.neuronpedia",
        description="Export records and explanations to Neuronpedia's upload layout.",
    )
    p.add_argument("folder", help="a records folder (builder output, JSON or bulk)")
    p.add_argument("--dst", required=True, help="which records, e.g. mlp_autoencoder_latent")
    p.add_argument("--model-id", required=True, help="Neuronpedia's model id, e.g. gpt2-small")
    p.add_argument("--source-set", required=True, help="source set name, e.g. res-jb")
    p.add_argument("--out", required=True)
    p.add_argument("--layers", help="only these layers, e.g. 0,2-3")
    p.add_argument("--batch-size", type=int, default=128, help="features per batch file")
    p.add_argument("--creator-id", default="neuron-explainer")
    args = p.parse_args(argv)
    try:
        registry = DatasetRegistry()
        registry.register_local_dataset("export", args.folder)
        entry = registry.resolve("export", args.dst)
        layers = parse_layers(args.layers) if args.layers else None
        written = export_neuronpedia(
            registry,
            entry,
            args.out,
            model_id=args.model_id,
            source_set=args.source_set,
            nodes=list_nodes(entry, layers),
            batch_size=args.batch_size,
            creator_id=args.creator_id,
        )
    except (ValueError, LookupError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for root in written:
        print(f"wrote {root}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
