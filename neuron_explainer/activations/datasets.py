"""The neuron datasets a server may read, by short name.

A request names a dataset by its short name (`gpt2-small`, `gpt2-small_ae-mlp-post-act-v4`, or a
local name given at start); the registry maps (name, derived scalar type) to a root location and
file layout. Nothing in a request ever becomes part of a path except two integers (layer and
index), so a request cannot read outside the configured roots:

- a name that is not registered is refused (404), and a name that looks like a path or URL
  (`/`, `\\`, `:`, `..`) is refused with 400 unless it is exactly the root of a registered
  dataset (the seed's server returned and accepted those);
- local files are checked to lie inside their dataset's folder before they are opened.

Layout of a dataset root: `<root>/<layer>/<index>.json` (or `.pt`), or in the bulk format
(`activations.bulk`) `<root>/<layer>.parquet` plus the dataset's `sequences.safetensors`.
Scored explanations live beside
the records, in the published layout: for records at `.../<x>/collated-activations/`, the
explanations are at `.../<x>/explanations/<layer>/<index>.jsonl` (one explanation dataset), or, for
local datasets, in named subfolders `.../<x>/explanations/<name>/<layer>/<index>.jsonl`.

The builder (`python -m neuron_explainer.collate`) writes a folder with `dataset.json` describing
its datasets; `DatasetRegistry.register_local_dataset(name, folder)` reads it.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal, cast

import orjson

from neuron_explainer import file_utils
from neuron_explainer.activations.bulk import SEQUENCES_FILE, BulkStore, layers_in
from neuron_explainer.activations.records import NeuronRecord, RecordFormat, loads_record

__all__ = [
    "DATASET_JSON",
    "DST_FOLDERS",
    "PUBLISHED_BASE",
    "DatasetEntry",
    "DatasetNotFound",
    "DatasetRegistry",
    "ExplanationDataset",
    "InvalidDatasetName",
    "RecordNotFound",
    "RecordUnavailable",
    "explanation_file",
    "published_datasets",
]

PUBLISHED_BASE = "https://openaipublic.blob.core.windows.net/neuron-explainer/"
DATASET_JSON = "dataset.json"

# Folder (relative to a builder's output) of each derived scalar type's records.
DST_FOLDERS: dict[str, str] = {
    "mlp_post_act": "mlp_post_act/collated-activations",
    "attn_write_norm": "attn_write_norm/collated-activations-by-token-pair",
    "mlp_autoencoder_latent": "mlp_autoencoder_latent/collated-activations",
    "attention_autoencoder_latent": "attention_autoencoder_latent/collated-activations",
    # ours: community SAEs on the residual stream, and transcoders
    "residual_autoencoder_latent": "residual_autoencoder_latent/collated-activations",
    "transcoder_latent": "transcoder_latent/collated-activations",
    "flattened_attn_write_to_latent_summed_over_heads": (
        "flattened_attn_write_to_latent_summed_over_heads/collated-activations-by-token-pair"
    ),
}

# dsts whose records hold one value per token pair (flattened lower triangle)
TOKEN_PAIR_DSTS = frozenset({"attn_write_norm", "flattened_attn_write_to_latent_summed_over_heads"})

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._\-]*$")


class InvalidDatasetName(ValueError):
    """A request named a path, URL or malformed name instead of a registered dataset (400)."""


class DatasetNotFound(LookupError):
    """No registered dataset has that name for that derived scalar type (404)."""


class RecordNotFound(LookupError):
    """The dataset has no record for that node (404)."""


class RecordUnavailable(RuntimeError):
    """The record exists somewhere we cannot reach now (network down, unreadable file) (503)."""


@dataclass(frozen=True)
class ExplanationDataset:
    name: str
    root: str


@dataclass(frozen=True)
class DatasetEntry:
    """One (short name, dst) dataset: where its records are and how they are stored."""

    short_name: str
    dst: str
    user_visible_name: str
    root: str
    """URL or absolute local folder holding `<layer>/<index>.<format>`."""
    format: RecordFormat | Literal["bulk"] = "json"
    explanations: tuple[ExplanationDataset, ...] = ()
    """Explanation datasets known up front (the published ones); local ones are also discovered
    in the `explanations` folder beside `root` at request time."""
    n_layers: int | None = None
    n_nodes: tuple[int, ...] | None = None
    """Nodes per layer, when known (local datasets): indices past it are answered 404 at once."""
    sequences: str | None = None
    """Bulk datasets: the token table (`sequences.safetensors`) their node files refer to."""

    @property
    def is_local(self) -> bool:
        return not file_utils.is_url(self.root)

    @property
    def public_location(self) -> str:
        """What answers may say about where the records are: a published dataset's URL, a local
        one's registered name (its folder stays on this machine)."""
        return self.short_name if self.is_local else self.root

    def record_location(self, layer: int, index: int, fmt: RecordFormat | None = None) -> str:
        _check_node(layer, index)
        name = f"{index}.{fmt or self.format}"
        if (fmt or self.format) == "bulk":
            raise ValueError("bulk datasets have one file per layer, not per node")
        if self.is_local:
            root = Path(self.root)
            path = root / str(layer) / name
            # Defence in depth: only integers are joined, but check anyway.
            if not _inside(path, root):
                raise InvalidDatasetName(f"record {layer}:{index} is outside the dataset folder")
            return str(path)
        return file_utils.join(self.root, str(layer), name)


@dataclass
class DatasetRegistry:
    """The datasets a server knows: the published ones and local folders registered at start."""

    entries: list[DatasetEntry] = field(default_factory=list)
    # Which format actually worked per (name, dst): published latents may be .json or .pt.
    _format_seen: dict[tuple[str, str], RecordFormat] = field(default_factory=dict)
    _bulk: BulkStore = field(default_factory=BulkStore)

    @classmethod
    def with_published(cls, base: str = PUBLISHED_BASE) -> DatasetRegistry:
        """A registry holding OpenAI's published GPT-2 datasets (rooted at `base`, which tests
        point at a local mirror)."""
        return cls(entries=published_datasets(base))

    # --- registration ----------------------------------------------------------------------

    def register(self, entry: DatasetEntry) -> None:
        if not _NAME_RE.match(entry.short_name):
            raise ValueError(
                f"dataset name {entry.short_name!r} must be letters, digits, '.', '_' or '-'"
            )
        self.entries = [
            e for e in self.entries if (e.short_name, e.dst) != (entry.short_name, entry.dst)
        ]
        self.entries.append(entry)

    def register_local_dataset(
        self, name: str, folder: str | os.PathLike[str], dst: str | None = None
    ) -> list[DatasetEntry]:
        """Register the records in a local folder under `name`; returns the entries added.

        `folder` is either a builder output (with `dataset.json`), or, with `dst` given, a folder
        of `<layer>/<index>.json|.pt` records for that derived scalar type (e.g. a local copy of
        a published dataset)."""
        root = Path(folder).expanduser().resolve()
        if not root.is_dir():
            raise ValueError(f"dataset folder {root} does not exist")
        added: list[DatasetEntry] = []
        meta_path = root / DATASET_JSON
        if dst is not None and layers_in(root) and (root / SEQUENCES_FILE).is_file():
            added.append(
                DatasetEntry(
                    name,
                    dst,
                    f"{name} - {dst}",
                    str(root),
                    "bulk",
                    sequences=str(root / SEQUENCES_FILE),
                )
            )
        elif dst is not None:
            fmt: RecordFormat = "pt" if any(root.glob("*/*.pt")) else "json"
            added.append(DatasetEntry(name, dst, f"{name} - {dst}", str(root), fmt))
        elif meta_path.is_file():
            meta = orjson.loads(meta_path.read_bytes())
            sequences = (root / str(meta.get("sequences", SEQUENCES_FILE))).resolve()
            if not _inside(sequences, root):
                raise ValueError(f"{meta_path}: the token table path leaves {root}")
            for d in meta.get("datasets", []):
                sub = (root / d["path"]).resolve()
                if not _inside(sub, root):
                    raise ValueError(f"{meta_path}: dataset path {d['path']!r} leaves {root}")
                n_nodes = d.get("n_nodes")
                added.append(
                    DatasetEntry(
                        short_name=name,
                        dst=d["dst"],
                        user_visible_name=f"{name} - {d.get('description', d['dst'])}",
                        root=str(sub),
                        format=d.get("format", "json"),
                        n_layers=len(n_nodes) if n_nodes else None,
                        n_nodes=tuple(n_nodes) if n_nodes else None,
                        sequences=str(sequences) if d.get("format") == "bulk" else None,
                    )
                )
        else:
            for d, sub in DST_FOLDERS.items():
                if (root / sub).is_dir():
                    fmt = "pt" if any((root / sub).glob("*/*.pt")) else "json"
                    added.append(DatasetEntry(name, d, f"{name} - {d}", str(root / sub), fmt))
        if not added:
            raise ValueError(
                f"no neuron records found in {root}: expected {DATASET_JSON} (written by "
                "python -m neuron_explainer.collate) or pass the derived scalar type"
            )
        for entry in added:
            self.register(entry)
        return added

    # --- lookup ----------------------------------------------------------------------------

    def metadata(self) -> list[DatasetEntry]:
        return list(self.entries)

    def resolve(self, name: str, dst: str, field_name: str = "datasets") -> DatasetEntry:
        """The entry a request's dataset `name` means for `dst`.

        Accepts a registered short name; the client's combined name `<model>_<mlp-ae>_<attn-ae>`
        (the part that is registered for `dst` is used); or exactly the root of a registered
        dataset. Raises InvalidDatasetName for anything path- or URL-like, DatasetNotFound for
        unknown names."""
        dst = str(getattr(dst, "value", dst))
        for e in self.entries:
            if e.dst == dst and e.short_name == name:
                return e
        for e in self.entries:
            if e.dst == dst and _same_location(e.root, name):
                return e
        if not _NAME_RE.match(name) or ".." in name:
            raise InvalidDatasetName(
                f"{field_name}: {name!r} is not a registered dataset name; paths and URLs are "
                f"not accepted (known for {dst}: {self._known(dst)})"
            )
        parts = name.split("_")
        candidates = [parts[0]] + [f"{parts[0]}_{p}" for p in parts[1:] if p]
        # the most specific registered candidate: an autoencoder's name before the bare model
        for candidate in reversed(candidates):
            for e in self.entries:
                if e.dst == dst and e.short_name == candidate:
                    return e
        raise DatasetNotFound(
            f"{field_name}: no dataset {name!r} for {dst} is registered with this server "
            f"(known for {dst}: {self._known(dst)})"
        )

    def _known(self, dst: str) -> str:
        names = [e.short_name for e in self.entries if e.dst == dst]
        return ", ".join(names) if names else "none"

    # --- records ---------------------------------------------------------------------------

    def load_record(self, entry: DatasetEntry, layer: int, index: int) -> NeuronRecord:
        """The record of node (layer, index) in `entry`; RecordNotFound if the dataset has none."""
        _check_node(layer, index)
        if entry.n_nodes is not None and (
            layer >= len(entry.n_nodes) or index >= entry.n_nodes[layer]
        ):
            raise RecordNotFound(f"{entry.short_name} has no {entry.dst} record {layer}:{index}")
        if entry.format == "bulk":
            return self._load_bulk(entry, layer, index)
        key = (entry.short_name, entry.dst)
        first = self._format_seen.get(key, cast(RecordFormat, entry.format))
        formats: list[RecordFormat] = [first, "pt" if first == "json" else "json"]
        for fmt in formats:
            data = _read(entry.record_location(layer, index, fmt))
            if data is None:
                continue
            self._format_seen[key] = fmt
            return loads_record(data, fmt)
        raise RecordNotFound(f"{entry.short_name} has no {entry.dst} record {layer}:{index}")

    def _load_bulk(self, entry: DatasetEntry, layer: int, index: int) -> NeuronRecord:
        root = Path(entry.root)
        sequences = Path(entry.sequences) if entry.sequences else root / SEQUENCES_FILE
        try:
            record = self._bulk.load_record(root, sequences, layer, index)
        except (OSError, ValueError, KeyError) as e:
            # the message names no local path (responses never reveal them)
            raise RecordUnavailable(
                f"could not read {entry.short_name} ({entry.dst}) layer {layer} "
                f"({type(e).__name__})"
            ) from e
        if record is None:
            raise RecordNotFound(f"{entry.short_name} has no {entry.dst} record {layer}:{index}")
        return record

    def bulk_node_counts(self, entry: DatasetEntry) -> dict[int, int]:
        """Nodes per layer of a local bulk dataset, from its files."""
        root = Path(entry.root)
        return {layer: self._bulk.n_nodes(root, layer) or 0 for layer in layers_in(root)}

    # --- explanations ----------------------------------------------------------------------

    def explanation_datasets(self, entry: DatasetEntry) -> list[ExplanationDataset]:
        """The explanation datasets of `entry`: the published ones and, for local datasets, those
        found now in the `explanations` folder beside its records."""
        found = list(entry.explanations)
        if entry.is_local:
            folder = Path(explanations_root(entry))
            if folder.is_dir():
                subdirs = sorted(p for p in folder.iterdir() if p.is_dir())
                if any(p.name.isdigit() for p in subdirs):
                    found.append(ExplanationDataset("explanations", str(folder)))
                found += [
                    ExplanationDataset(p.name, str(p))
                    for p in subdirs
                    if not p.name.isdigit() and _NAME_RE.match(p.name)
                ]
        return found

    def resolve_explanation_dataset(self, name: str, dst: str) -> ExplanationDataset:
        dst = str(getattr(dst, "value", dst))
        for e in self.entries:
            if e.dst != dst:
                continue
            for x in self.explanation_datasets(e):
                if x.name == name or _same_location(x.root, name):
                    return x
        if not _NAME_RE.match(name) or ".." in name:
            raise InvalidDatasetName(
                f"explanationDatasets: {name!r} is not a registered explanation dataset; paths "
                "and URLs are not accepted"
            )
        raise DatasetNotFound(f"explanationDatasets: no explanation dataset {name!r} for {dst}")

    def load_explanations(
        self, dataset: ExplanationDataset, layer: int, index: int
    ) -> dict[str, Any] | None:
        """The stored simulation results (first JSON line of `<layer>/<index>.jsonl`) or None."""
        _check_node(layer, index)
        if file_utils.is_url(dataset.root):
            location = file_utils.join(dataset.root, str(layer), f"{index}.jsonl")
        else:
            path = Path(dataset.root) / str(layer) / f"{index}.jsonl"
            if not _inside(path, Path(dataset.root)):
                raise InvalidDatasetName(f"explanation {layer}:{index} is outside its folder")
            location = str(path)
        data = _read(location)
        if data is None:
            return None
        for line in data.decode("utf-8").splitlines():
            if line.strip():
                parsed = orjson.loads(line)
                return parsed if isinstance(parsed, dict) else None
        return None


def explanations_root(entry: DatasetEntry) -> str:
    """The `explanations` folder (or URL) beside `entry`'s records folder."""
    if file_utils.is_url(entry.root):
        base = entry.root.rstrip("/").rsplit("/", 1)[0]
        return base + "/explanations/"
    return str(Path(entry.root).parent / "explanations")


def explanation_file(entry: DatasetEntry, name: str, layer: int, index: int) -> Path:
    """Where a local explanation dataset `name` stores node (layer, index)'s scored explanations
    (one JSON line: {"scored_explanations": [{"explanation": ..., "scored_simulation":
    {"ev_correlation_score": ...}}, ...]}); for writers of explanations."""
    if not entry.is_local:
        raise ValueError(f"{entry.short_name} ({entry.dst}) is not a local dataset")
    if not _NAME_RE.match(name) or name.isdigit():
        raise ValueError(f"explanation dataset name {name!r} must be a simple, non-numeric name")
    _check_node(layer, index)
    return Path(explanations_root(entry)) / name / str(layer) / f"{index}.jsonl"


# --- published ---------------------------------------------------------------------------------


def published_datasets(base: str = PUBLISHED_BASE) -> list[DatasetEntry]:
    """OpenAI's published GPT-2 datasets (the seed's registry), rooted at `base`."""

    def at(path: str) -> str:
        return file_utils.join(base, path)

    small_ae = "gpt2_small/autoencoder_latent"
    rows: list[tuple[str, str, str, str, RecordFormat, tuple[ExplanationDataset, ...]]] = [
        (
            "gpt2-xl",
            "mlp_post_act",
            "GPT-2 XL - MLP neurons",
            "data/collated-activations/",
            "json",
            (ExplanationDataset("gpt2-xl-explanations", at("data/explanations/")),),
        ),
        (
            "gpt2-small",
            "mlp_post_act",
            "GPT-2 small - MLP neurons",
            "gpt2_small_data/collated-activations/",
            "json",
            (ExplanationDataset("gpt2-small-explanations", at("gpt2_small_data/explanations/")),),
        ),
        (
            "gpt2-small",
            "attn_write_norm",
            "GPT-2 small - Attention write by token pair",
            "gpt2_small/attn_write_norm/collated-activations-by-token-pair",
            "json",
            (),
        ),
    ]
    for short, what, version in (
        ("ae-mlp-post-act-v1", "mlp_post_act_v1", "MLP autoencoder (post-act) v1"),
        ("ae-resid-delta-mlp-v1", "resid_delta_mlp_v1", "MLP autoencoder (write) v1"),
        ("ae-mlp-post-act-v4", "mlp_post_act_v4", "MLP autoencoder (post-act) v4"),
        ("ae-resid-delta-mlp-v4", "resid_delta_mlp_v4", "MLP autoencoder (write) v4"),
    ):
        rows.append(
            (
                f"gpt2-small_{short}",
                "mlp_autoencoder_latent",
                f"GPT-2 small - {version}",
                f"{small_ae}/{what}/collated-activations",
                "json",
                (),
            )
        )
    rows += [
        (
            "gpt2-small_ae-resid-delta-attn-v4",
            "attention_autoencoder_latent",
            "GPT-2 small - Attention autoencoder (write) v4",
            f"{small_ae}/resid_delta_attn_v4/collated-activations",
            "json",
            (),
        ),
        (
            "gpt2-small_ae-resid-delta-attn-v4",
            "flattened_attn_write_to_latent_summed_over_heads",
            "GPT-2 small - Attention autoencoder (write) v4 by token pair",
            f"{small_ae}/resid_delta_attn_v4/collated-activations-by-token-pair",
            "json",
            (),
        ),
    ]
    return [
        DatasetEntry(short, dst, visible, at(path), fmt, expl)
        for short, dst, visible, path, fmt, expl in rows
    ]


# --- helpers -----------------------------------------------------------------------------------


def _check_node(layer: int, index: int) -> None:
    if not isinstance(layer, int) or not isinstance(index, int) or layer < 0 or index < 0:
        raise InvalidDatasetName(
            f"layerIndex and activationIndex must be non-negative integers, got {layer}, {index}"
        )


def _inside(path: Path, root: Path) -> bool:
    return os.path.normpath(path).startswith(os.path.join(os.path.normpath(root), ""))


def _same_location(root: str, name: str) -> bool:
    return bool(name) and root.rstrip("/") == name.rstrip("/")


def _read(location: str) -> bytes | None:
    """Bytes at a local path or (cached) URL; None if there is no such file."""
    if not file_utils.is_url(location):
        try:
            return Path(location).read_bytes()
        except (FileNotFoundError, NotADirectoryError):
            return None
        except OSError as e:
            # the message may reach a client: the reason, not the local path
            raise RecordUnavailable(f"a local file could not be read ({e.strerror or type(e).__name__})") from e
    try:
        return file_utils.read_bytes(location, progress=False)
    except file_utils.FetchError as e:
        if "HTTP 404" in str(e) or "HTTP 403" in str(e):
            # Azure answers 404 (or 403 for some anonymous reads) for blobs that do not exist.
            return None
        raise RecordUnavailable(str(e)) from e


def with_explanations(entry: DatasetEntry, extra: Iterable[ExplanationDataset]) -> DatasetEntry:
    """`entry` with more explanation datasets (e.g. a local mirror of published explanations)."""
    return replace(entry, explanations=(*entry.explanations, *extra))
