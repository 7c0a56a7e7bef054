"""Scored explanations on disk, beside the dataset they explain.

Layout (that of the published explanations, which `/existing_explanations` reads through
`DatasetRegistry.explanation_datasets` / `load_explanations`):

    <records folder>/../explanations/<set name>/<layer>/<index>.jsonl

for a local dataset; for a published (URL) dataset, which cannot be written to, the same tree
lives in the download cache: `<cache>/explanations/<short name>/<dst>/<set name>/...`
(`explanation_datasets` lists those too). A *set* holds the explanations made one way
(`set_name`: the LLM and the simulator), so that scores made differently are never mixed.

Each file is one JSON line, the structure of the published files (readable by the original
tool): for neurons and latents

    {"dataclass_name": "NeuronSimulationResults",
     "neuron_id": {"dataclass_name": "NeuronId", "layer_index": L, "neuron_index": I},
     "scored_explanations": [{"dataclass_name": "ScoredExplanation", "explanation": "...",
                              "scored_simulation": {..., "ev_correlation_score": 0.42}}, ...]}

and for attention heads `AttentionSimulationResults` with `attention_head_id` and
`ScoredAttentionExplanation` entries whose `scored_attention_simulation` has `roc_auc_score`.
Writes are atomic (a reader sees the old file or the new one) and serialised, within a process
and across processes where the OS supports `fcntl` locks, so concurrent writers never lose an
explanation.
"""

from __future__ import annotations

import contextlib
import math
import re
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson

from neuron_explainer import file_utils
from neuron_explainer.activations.datasets import (
    DatasetEntry,
    DatasetRegistry,
    ExplanationDataset,
    explanation_file,
)
from neuron_explainer.explanations.explainer import NodeKind
from neuron_explainer.explanations.scoring import ScoredAttentionSimulation, ScoredSimulation

try:  # POSIX only; elsewhere writers in different processes are not serialised.
    import fcntl
except ImportError:  # pragma: no cover
    fcntl = None  # type: ignore[assignment]

__all__ = [
    "StoredExplanation",
    "add_scored_explanation",
    "entry_score",
    "explanation_datasets",
    "find_score",
    "read_results",
    "results_path",
    "set_name",
    "stored_explanations",
]

_SLUG = re.compile(r"[^A-Za-z0-9._-]+")


def set_name(model: str | None, simulator: str = "logprob_free") -> str:
    """The default set name for explanations made by `model` with `simulator`, e.g.
    `llm_gpt-4o` or `llm_meta-llama-Llama-3-8B_logprob`."""
    slug = _SLUG.sub("-", model or "unknown").strip("-.") or "unknown"
    return f"llm_{slug}" + ("" if simulator == "logprob_free" else f"_{simulator}")


def _cache_root(entry: DatasetEntry) -> Path:
    dst = _SLUG.sub("-", entry.dst)
    return file_utils.cache_dir() / "explanations" / _SLUG.sub("-", entry.short_name) / dst


def results_path(entry: DatasetEntry, name: str, layer: int, index: int) -> Path:
    """Where set `name` keeps node (layer, index)'s scored explanations."""
    if entry.is_local:
        return explanation_file(entry, name, layer, index)
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", name) or name.isdigit():
        raise ValueError(f"explanation set name {name!r} must be a simple, non-numeric name")
    return _cache_root(entry) / name / str(layer) / f"{index}.jsonl"


def explanation_datasets(
    registry: DatasetRegistry, entry: DatasetEntry
) -> list[ExplanationDataset]:
    """Every explanation dataset of `entry`: the registry's (published, and local ones beside
    local records) and, for a published dataset, the sets written to the download cache."""
    found = list(registry.explanation_datasets(entry))
    if not entry.is_local:
        root = _cache_root(entry)
        if root.is_dir():
            found += [
                ExplanationDataset(p.name, str(p))
                for p in sorted(root.iterdir())
                if p.is_dir() and not p.name.isdigit()
            ]
    return found


# ------------------------------------------------------------------------------ reading


def entry_score(entry: dict[str, Any]) -> float | None:
    """The preferred score of one stored scored explanation (correlation for neurons, ROC AUC
    for heads); None when missing or not finite."""
    for key, score_key in (
        ("scored_simulation", "ev_correlation_score"),
        ("scored_attention_simulation", "roc_auc_score"),
    ):
        sim = entry.get(key)
        if isinstance(sim, dict):
            value = sim.get(score_key)
            if isinstance(value, int | float) and math.isfinite(value):
                return float(value)
            return None
    return None


StoredExplanation = tuple[str, float | None]


def stored_explanations(results: dict[str, Any] | None) -> list[StoredExplanation]:
    """(explanation, score) for each scored explanation in a results file's JSON."""
    if not isinstance(results, dict):
        return []
    entries = results.get("scored_explanations")
    if entries is None:  # older published files
        entries = results.get("scored_explanation_or_baseline_list")
    out = []
    for entry in entries or []:
        if not isinstance(entry, dict):
            continue
        text = entry.get("explanation", entry.get("explanation_or_baseline"))
        if isinstance(text, str):
            out.append((text, entry_score(entry)))
    return out


def read_results(path: Path) -> dict[str, Any] | None:
    """The JSON of a local results file (its first non-empty line), or None if absent/garbled."""
    try:
        data = path.read_bytes()
    except (FileNotFoundError, NotADirectoryError):
        return None
    for line in data.splitlines():
        if line.strip():
            try:
                parsed = orjson.loads(line)
            except orjson.JSONDecodeError:
                return None
            return parsed if isinstance(parsed, dict) else None
    return None


def node_explanations(
    registry: DatasetRegistry, entry: DatasetEntry, layer: int, index: int
) -> list[tuple[str, str, float | None]]:
    """(explanation dataset name, explanation, score) for every stored explanation of a node,
    over all of `entry`'s explanation datasets. Unreadable datasets are skipped."""
    out = []
    for dataset in explanation_datasets(registry, entry):
        try:
            results = registry.load_explanations(dataset, layer, index)
        except Exception:  # a published set that cannot be reached now: skip it
            continue
        for explanation, score in stored_explanations(results):
            out.append((dataset.name, explanation, score))
    return out


def find_score(
    registry: DatasetRegistry, entry: DatasetEntry, layer: int, index: int, explanation: str
) -> float | None:
    """A stored score for `explanation` of the node, from any explanation dataset, or None."""
    wanted = explanation.strip()
    for _, stored, score in node_explanations(registry, entry, layer, index):
        if stored.strip() == wanted and score is not None:
            return score
    return None


# ------------------------------------------------------------------------------ writing

_thread_locks: dict[Path, threading.Lock] = {}
_thread_locks_guard = threading.Lock()


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    with _thread_locks_guard:
        lock = _thread_locks.setdefault(path, threading.Lock())
    with lock:
        if fcntl is None:
            yield
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path.parent / ".lock", "a+b") as handle:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def add_scored_explanation(
    path: Path,
    *,
    kind: NodeKind,
    layer: int,
    index: int,
    explanation: str,
    scored: ScoredSimulation | ScoredAttentionSimulation,
) -> None:
    """Add (or replace, for the same explanation) one scored explanation in a results file."""
    node_id = {"dataclass_name": "NeuronId", "layer_index": layer, "neuron_index": index}
    if kind == NodeKind.ATTENTION_HEAD:
        if not isinstance(scored, ScoredAttentionSimulation):
            raise TypeError("attention heads are scored with ScoredAttentionSimulation")
        new: dict[str, Any] = {
            "dataclass_name": "ScoredAttentionExplanation",
            "explanation": explanation,
            "scored_attention_simulation": scored.to_json(),
        }
        header = {"dataclass_name": "AttentionSimulationResults", "attention_head_id": node_id}
    else:
        if not isinstance(scored, ScoredSimulation):
            raise TypeError("neurons are scored with ScoredSimulation")
        new = {
            "dataclass_name": "ScoredExplanation",
            "explanation": explanation,
            "scored_simulation": scored.to_json(),
        }
        header = {"dataclass_name": "NeuronSimulationResults", "neuron_id": node_id}
    with _locked(path):
        existing = read_results(path) or {}
        entries = [
            e
            for e in existing.get("scored_explanations") or []
            if isinstance(e, dict) and e.get("explanation") != explanation
        ]
        entries.append(new)
        results = {**header, "scored_explanations": entries}
        file_utils.atomic_write_bytes(
            path, orjson.dumps(results, option=orjson.OPT_SERIALIZE_NUMPY) + b"\n"
        )
