"""The bulk record format: one Parquet file per (layer, node kind), one token table per dataset.

    <dataset>/sequences.safetensors       token table shared by every node file of the dataset
    <dataset>/<dst folder>/<layer>.parquet one row per node, nodes in order

`<layer>.parquet` has one row per node (`node` = its index) with the node's examples flattened
in record order (top-activating, then random, then each quantile bin's):
    group_sizes  list<int32>   examples per group: [top, random, bin 0, bin 1, ...]
    seq          list<int64>   each example's sequence id in the token table
    lengths      list<int32>   each example's number of values (tokens, or token pairs)
    values       list<float>   all examples' values, concatenated (float32 by default;
                               float16 if written so; float64 where float32 was not exact)
    has_quantile_samples bool, quantile_boundaries list<float64> (null: none),
    mean, variance, skewness, kurtosis float64 (null for NaN, as the JSON layout writes)
Rows are grouped `rows_per_group` to a Parquet row group (in the file's key-value metadata), so
node n is in row group n // rows_per_group: reading one node reads the footer once (cached by
`BulkFileReader`) and then only that row group's column chunks, whatever the file's size.
Files are zstd-compressed without dictionaries; float32/float64 columns are
byte-stream-split (which is what makes float values compress).

`sequences.safetensors` holds `ids` (S,) int64, the sorted sequence ids, and `tokens` (S, C)
int16 (int32 past 32767 strings), each sequence's token string indices (-1 past its end), and in its metadata
(`neuron_explainer.bulk`: {"version", "strings"}) the list of distinct token strings. A node's ~60 sequences are ~60 small reads at offsets
computed from the header (no decompression): safetensors keeps tensors uncompressed at fixed
offsets.

Everything is written to a temp file and renamed, so a reader never sees a partial file.

    python -m neuron_explainer.activations.bulk to-bulk SRC OUT [--dst DST] [--dtype float32]
    python -m neuron_explainer.activations.bulk to-json SRC OUT

convert a builder output (with dataset.json) or one folder of published `<layer>/<index>.json`
records (with `--dst`) to the bulk layout, and back. JSON -> bulk -> JSON gives equal records
(values exactly, float32 or float64 as the source had them); for the builder's own JSON, equal
bytes.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import secrets
import struct
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, cast

import numpy as np
import orjson

from neuron_explainer.activations.records import (
    ActivationRecord,
    NeuronId,
    NeuronRecord,
    dumps_record,
    loads_record,
)

__all__ = [
    "BULK_SUFFIX",
    "SEQUENCES_FILE",
    "BulkFileReader",
    "BulkFileWriter",
    "BulkStore",
    "NodeRow",
    "SequenceReader",
    "SequenceTableBuilder",
    "bulk_to_json",
    "json_to_bulk",
    "main",
    "record_from_row",
    "row_at",
    "row_from_record",
    "rows_per_group_for",
    "write_sequences",
]

BULK_SUFFIX = ".parquet"
SEQUENCES_FILE = "sequences.safetensors"
FORMAT_VERSION = "1"
ROW_GROUP_TARGET_BYTES = 1 << 17
_DTYPES = {"float16": np.float16, "float32": np.float32, "float64": np.float64}


# --- temp + rename -------------------------------------------------------------------------------


def _temp_next_to(path: Path) -> Path:
    return path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.part")


@contextlib.contextmanager
def _atomic(path: Path) -> Iterator[Path]:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temp_next_to(path)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


# --- one node ------------------------------------------------------------------------------------


@dataclass
class NodeRow:
    """One node's row (see the module docstring). `values` is a 1-d array."""

    node: int
    group_sizes: list[int]
    seq: list[int]
    lengths: list[int]
    values: np.ndarray
    has_quantile_samples: bool
    quantile_boundaries: list[float] | None
    mean: float | None
    variance: float | None
    skewness: float | None
    kurtosis: float | None


def _nan_to_none(x: float | None) -> float | None:
    return None if x is None or (isinstance(x, float) and math.isnan(x)) else float(x)


def _as_json_floats(values: np.ndarray) -> list[float]:
    """The floats a JSON record of these values holds: float32 (and float16) values written in
    their shortest form and read back, so that a bulk read equals the JSON file's read."""
    if values.dtype == np.float64:
        return cast(list[float], values.tolist())
    return cast(list[float], orjson.loads(orjson.dumps(values, option=orjson.OPT_SERIALIZE_NUMPY)))


def record_from_row(
    row: NodeRow, layer: int, tokens: Callable[[list[int]], list[list[str]]], numpy: bool = False
) -> NeuronRecord:
    """The NeuronRecord of a row; `tokens(seq ids)` gives each sequence's token strings.
    `numpy`: activations as numpy rows (so JSON holds their dtype's shortest form)."""
    strings = tokens(row.seq)
    examples: list[ActivationRecord] = []
    values: Any = row.values if numpy else _as_json_floats(row.values)
    start = 0
    for toks, n in zip(strings, row.lengths, strict=True):
        examples.append(ActivationRecord(cast(list[float], values[start : start + n]), toks))
        start += n
    groups: list[list[ActivationRecord]] = []
    at = 0
    for size in row.group_sizes:
        groups.append(examples[at : at + size])
        at += size
    return NeuronRecord(
        neuron_id=NeuronId(layer_index=layer, neuron_index=row.node),
        random_sample=groups[1] if len(groups) > 1 else [],
        random_sample_by_quantile=groups[2:] if row.has_quantile_samples else None,
        quantile_boundaries=row.quantile_boundaries,
        mean=row.mean,
        variance=row.variance,
        skewness=row.skewness,
        kurtosis=row.kurtosis,
        most_positive_activation_records=groups[0] if groups else [],
    )


def row_from_record(
    record: NeuronRecord, seq_of: Callable[[list[str]], int], dtype: Any = np.float32
) -> NodeRow:
    """A record's row; `seq_of(tokens)` gives (adding if new) a sequence's id."""
    groups = [record.most_positive_activation_records, record.random_sample]
    groups += record.random_sample_by_quantile or []
    examples = [r for g in groups for r in g]
    values = [np.asarray(r.activations, dtype=np.float64) for r in examples]
    flat = np.concatenate(values) if values else np.zeros(0)
    return NodeRow(
        node=record.neuron_id.neuron_index,
        group_sizes=[len(g) for g in groups],
        seq=[seq_of(r.tokens) for r in examples],
        lengths=[len(v) for v in values],
        values=flat.astype(dtype),
        has_quantile_samples=record.random_sample_by_quantile is not None,
        quantile_boundaries=None
        if record.quantile_boundaries is None
        else [float(b) for b in record.quantile_boundaries],
        mean=_nan_to_none(record.mean),
        variance=_nan_to_none(record.variance),
        skewness=_nan_to_none(record.skewness),
        kurtosis=_nan_to_none(record.kurtosis),
    )


def rows_per_group_for(values_per_node: int, itemsize: int) -> int:
    """Nodes per row group: about ROW_GROUP_TARGET_BYTES of uncompressed values, 1..256."""
    return int(max(1, min(256, ROW_GROUP_TARGET_BYTES // max(1, values_per_node * itemsize))))


# --- node files ----------------------------------------------------------------------------------


class BulkFileWriter:
    """Writes `<layer>.parquet`: rows must come in node order 0, 1, 2, ... Use as a context
    manager; the file appears (renamed into place) only when the block exits cleanly."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        dtype: str = "float32",
        rows_per_group: int = 64,
        first_node: int = 0,
    ) -> None:
        if dtype not in _DTYPES:
            raise ValueError(f"unknown value dtype {dtype!r} (float16, float32, float64)")
        self.path = Path(path)
        self.dtype = dtype
        self.rows_per_group = max(1, rows_per_group)
        self._rows: list[NodeRow] = []
        self._n = first_node  # parts of a file (a builder's node ranges) start elsewhere
        self._writer: Any = None
        self._tmp: Path | None = None

    def __enter__(self) -> BulkFileWriter:
        import pyarrow.parquet as pq

        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._tmp = _temp_next_to(self.path)
        self._writer = pq.ParquetWriter(
            self._tmp,
            _schema(self.dtype, self.rows_per_group),
            compression="zstd",
            compression_level=9,
            # dictionaries of float values cost more than they save (measured: 12% larger)
            use_dictionary=False,
            use_byte_stream_split=["values", "quantile_boundaries"],
            write_statistics=False,
        )
        return self

    def write(self, row: NodeRow) -> None:
        if row.node != self._n:
            raise ValueError(f"rows must come in node order: expected {self._n}, got {row.node}")
        self._rows.append(row)
        self._n += 1
        if len(self._rows) == self.rows_per_group:
            self._flush()

    def _flush(self) -> None:
        if self._rows:
            self._writer.write_table(_table(self._rows, self.dtype, self.rows_per_group))
            self._rows = []

    def __exit__(self, exc_type: Any, *_: Any) -> None:
        assert self._tmp is not None
        try:
            if exc_type is None:
                self._flush()
            self._writer.close()
            if exc_type is None:
                os.replace(self._tmp, self.path)
        finally:
            self._tmp.unlink(missing_ok=True)


def _schema(dtype: str, rows_per_group: int) -> Any:
    import pyarrow as pa

    value_type = {"float16": pa.float16(), "float32": pa.float32(), "float64": pa.float64()}
    return pa.schema(
        [
            ("node", pa.int32()),
            ("group_sizes", pa.list_(pa.int32())),
            ("seq", pa.list_(pa.int64())),
            ("lengths", pa.list_(pa.int32())),
            ("values", pa.list_(value_type[dtype])),
            ("has_quantile_samples", pa.bool_()),
            ("quantile_boundaries", pa.list_(pa.float64())),
            ("mean", pa.float64()),
            ("variance", pa.float64()),
            ("skewness", pa.float64()),
            ("kurtosis", pa.float64()),
        ],
        metadata={
            "neuron_explainer.bulk": FORMAT_VERSION,
            "rows_per_group": str(rows_per_group),
        },
    )


def _list_array(parts: Sequence[Any], value_type: Any, np_dtype: Any) -> Any:
    import pyarrow as pa

    offsets = np.zeros(len(parts) + 1, dtype=np.int64)
    offsets[1:] = np.cumsum([len(p) for p in parts])
    flat: Any = np.concatenate([np.asarray(p, dtype=np_dtype) for p in parts]) if parts else []
    return pa.LargeListArray.from_arrays(offsets, pa.array(flat, type=value_type)).cast(
        pa.list_(value_type)
    )


def _table(rows: list[NodeRow], dtype: str, rows_per_group: int) -> Any:
    import pyarrow as pa

    schema = _schema(dtype, rows_per_group)
    np_dtype = _DTYPES[dtype]
    boundaries = pa.array(
        [r.quantile_boundaries for r in rows], type=pa.list_(pa.float64())
    )  # nulls for None
    return pa.table(
        {
            "node": pa.array([r.node for r in rows], type=pa.int32()),
            "group_sizes": _list_array([r.group_sizes for r in rows], pa.int32(), np.int32),
            "seq": _list_array([r.seq for r in rows], pa.int64(), np.int64),
            "lengths": _list_array([r.lengths for r in rows], pa.int32(), np.int32),
            "values": _list_array(
                [r.values for r in rows], schema.field("values").type.value_type, np_dtype
            ),
            "has_quantile_samples": pa.array([r.has_quantile_samples for r in rows]),
            "quantile_boundaries": boundaries,
            **{
                m: pa.array([getattr(r, m) for r in rows], type=pa.float64())
                for m in ("mean", "variance", "skewness", "kurtosis")
            },
        },
        schema=schema,
    )


def row_at(table: Any, i: int) -> NodeRow:
    """Row `i` of a pyarrow table read from a bulk file."""
    row = {name: table.column(name)[i] for name in table.column_names}
    return NodeRow(
        node=row["node"].as_py(),
        group_sizes=row["group_sizes"].as_py(),
        seq=row["seq"].as_py(),
        lengths=row["lengths"].as_py(),
        values=row["values"].values.to_numpy(zero_copy_only=False),
        has_quantile_samples=bool(row["has_quantile_samples"].as_py()),
        quantile_boundaries=row["quantile_boundaries"].as_py(),
        **{m: row[m].as_py() for m in ("mean", "variance", "skewness", "kurtosis")},
    )


class BulkFileReader:
    """Reads single nodes of one `<layer>.parquet` (thread-safe). `source`: a path, or an open
    binary file (tests pass one that counts the bytes read)."""

    def __init__(self, source: str | os.PathLike[str] | IO[bytes]) -> None:
        import pyarrow.parquet as pq

        self._pf = pq.ParquetFile(source if hasattr(source, "read") else os.fspath(source))
        meta = self._pf.schema_arrow.metadata or {}
        if meta.get(b"neuron_explainer.bulk") != FORMAT_VERSION.encode():
            raise ValueError("not a neuron_explainer bulk record file")
        self.rows_per_group = int(meta[b"rows_per_group"])
        self.n_nodes = self._pf.metadata.num_rows
        self._lock = threading.Lock()

    def read(self, node: int) -> NodeRow | None:
        """The row of `node`, or None past the file's last node."""
        if not 0 <= node < self.n_nodes:
            return None
        group, i = divmod(node, self.rows_per_group)
        with self._lock:
            table = self._pf.read_row_group(group)
        row = row_at(table, i)
        if row.node != node:
            raise ValueError(f"bulk file is out of order: row {node} holds {row.node}")
        return row

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._pf.close()


# --- the token table -----------------------------------------------------------------------------


class SequenceTableBuilder:
    """Collects sequences as token strings, deduplicated (for converting JSON records)."""

    def __init__(self) -> None:
        self.strings: list[str] = []
        self._string_index: dict[str, int] = {}
        self._seqs: dict[tuple[str, ...], int] = {}
        self.rows: list[list[int]] = []

    def seq_of(self, tokens: list[str]) -> int:
        key = tuple(tokens)
        found = self._seqs.get(key)
        if found is not None:
            return found
        row = []
        for t in tokens:
            i = self._string_index.get(t)
            if i is None:
                i = self._string_index[t] = len(self.strings)
                self.strings.append(t)
            row.append(i)
        self._seqs[key] = len(self.rows)
        self.rows.append(row)
        return self._seqs[key]

    def write(self, path: str | os.PathLike[str]) -> None:
        width = max((len(r) for r in self.rows), default=0)
        table = np.full((len(self.rows), width), -1, dtype=np.int32)
        for i, r in enumerate(self.rows):
            table[i, : len(r)] = r
        write_sequences(path, np.arange(len(self.rows), dtype=np.int64), table, self.strings)


def write_sequences(
    path: str | os.PathLike[str], ids: np.ndarray, table: np.ndarray, strings: list[str]
) -> None:
    """Write the token table: sorted sequence `ids`, `table` (S, C) of indices into `strings`
    (-1 past a sequence's end)."""
    from safetensors.numpy import save

    ids = np.ascontiguousarray(ids, dtype=np.int64)
    if len(ids) > 1 and not bool(np.all(ids[1:] > ids[:-1])):
        raise ValueError("sequence ids must be sorted and distinct")
    # int16 indices while the strings fit (any model vocabulary below 32768 tokens)
    index_dtype = np.int16 if len(strings) < 2**15 else np.int32
    data = save(
        {"ids": ids, "tokens": np.ascontiguousarray(table, dtype=index_dtype)},
        # one metadata key: safetensors writes several in no fixed order (bytes would differ)
        metadata={
            "neuron_explainer.bulk": json.dumps({"version": FORMAT_VERSION, "strings": strings})
        },
    )
    with _atomic(Path(path)) as tmp:
        tmp.write_bytes(data)


class SequenceReader:
    """Random access to a token table: the header and ids are read once, then each sequence is
    one read at a computed offset (thread-safe)."""

    def __init__(self, source: str | os.PathLike[str] | IO[bytes]) -> None:
        self._f: IO[bytes] = source if hasattr(source, "read") else open(source, "rb")  # type: ignore[assignment]  # noqa: SIM115 (kept open)
        self._lock = threading.Lock()
        (n,) = struct.unpack("<Q", self._f.read(8))
        header = json.loads(self._f.read(n))
        meta = header.pop("__metadata__", {}) or {}
        info = json.loads(meta.get("neuron_explainer.bulk", "{}"))
        if not isinstance(info, dict) or info.get("version") != FORMAT_VERSION:
            raise ValueError("not a neuron_explainer token table")
        self.strings: list[str] = info["strings"]
        base = 8 + n
        ids, tokens = header["ids"], header["tokens"]
        if ids["dtype"] != "I64" or tokens["dtype"] not in ("I16", "I32"):
            raise ValueError("token table has unexpected dtypes")
        self._dtype = np.int16 if tokens["dtype"] == "I16" else np.int32
        self._width = int(tokens["shape"][1])
        self._tokens_at = base + int(tokens["data_offsets"][0])
        start, stop = (base + int(x) for x in ids["data_offsets"])
        self._f.seek(start)
        self.ids = np.frombuffer(self._f.read(stop - start), dtype=np.int64)

    def __len__(self) -> int:
        return len(self.ids)

    def indices(self, seq_id: int) -> np.ndarray:
        i = int(np.searchsorted(self.ids, seq_id))
        if i >= len(self.ids) or int(self.ids[i]) != seq_id:
            raise KeyError(f"sequence {seq_id} is not in the token table")
        row_bytes = np.dtype(self._dtype).itemsize * self._width
        with self._lock:
            self._f.seek(self._tokens_at + i * row_bytes)
            row = np.frombuffer(self._f.read(row_bytes), dtype=self._dtype).astype(np.int32)
        return row[row >= 0]

    def tokens(self, seq_ids: Sequence[int]) -> list[list[str]]:
        strings = self.strings
        cache: dict[int, list[str]] = {}
        out = []
        for s in seq_ids:
            if s not in cache:
                cache[s] = [strings[i] for i in self.indices(int(s)).tolist()]
            out.append(cache[s])
        return out

    def close(self) -> None:
        self._f.close()


# --- a dataset's files, for readers ---------------------------------------------------------------


class BulkStore:
    """Open readers of bulk files, cached by path (the server keeps one per process)."""

    def __init__(self) -> None:
        self._files: dict[str, BulkFileReader] = {}
        self._seqs: dict[str, SequenceReader] = {}
        self._lock = threading.Lock()

    def _file(self, path: Path) -> BulkFileReader | None:
        key = str(path)
        with self._lock:
            reader = self._files.get(key)
            if reader is None:
                if not path.is_file():
                    return None
                reader = self._files[key] = BulkFileReader(path)
            return reader

    def _sequences(self, path: Path) -> SequenceReader:
        key = str(path)
        with self._lock:
            reader = self._seqs.get(key)
            if reader is None:
                reader = self._seqs[key] = SequenceReader(path)
            return reader

    def n_nodes(self, folder: Path, layer: int) -> int | None:
        reader = self._file(folder / f"{layer}{BULK_SUFFIX}")
        return None if reader is None else reader.n_nodes

    def load_record(
        self, folder: Path, sequences: Path, layer: int, index: int, numpy: bool = False
    ) -> NeuronRecord | None:
        """Node (layer, index) of the bulk files in `folder`; None if there is none."""
        reader = self._file(folder / f"{layer}{BULK_SUFFIX}")
        row = None if reader is None else reader.read(index)
        if row is None:
            return None
        return record_from_row(row, layer, self._sequences(sequences).tokens, numpy=numpy)


def layers_in(folder: Path) -> list[int]:
    """The layers that have a bulk file in `folder`."""
    return sorted(int(p.stem) for p in folder.glob(f"*{BULK_SUFFIX}") if p.stem.isdigit())


# --- converters ----------------------------------------------------------------------------------


def _float32_exact(values: Sequence[float]) -> bool:
    """Whether float32 storage gives these values back through JSON (their float32 shortest
    form parses to the same doubles), as the builder's JSON always does."""
    a = np.asarray(values, dtype=np.float64)
    if not np.all(np.isfinite(a)):
        return False
    with np.errstate(over="ignore"):
        back = _as_json_floats(a.astype(np.float32))
    return back == a.tolist()


def _json_layers(folder: Path) -> dict[int, list[Path]]:
    layers: dict[int, list[Path]] = {}
    for layer_dir in folder.iterdir():
        if layer_dir.is_dir() and layer_dir.name.isdigit():
            files = [f for f in layer_dir.glob("*.json") if f.stem.isdigit()]
            layers[int(layer_dir.name)] = sorted(files, key=lambda f: int(f.stem))
    return dict(sorted(layers.items()))


def _convert_folder_to_bulk(
    src: Path, dst: Path, seqs: SequenceTableBuilder, dtype: str | None
) -> None:
    for layer, files in _json_layers(src).items():
        if [int(f.stem) for f in files] != list(range(len(files))):
            raise ValueError(f"{src}/{layer}: records must be numbered 0..n-1 without gaps")
        records = [loads_record(f.read_bytes()) for f in files]
        chosen = dtype or (
            "float32"
            if all(
                _float32_exact(a.activations)
                for r in records
                for g in [
                    r.most_positive_activation_records,
                    r.random_sample,
                    *(r.random_sample_by_quantile or []),
                ]
                for a in g
            )
            else "float64"
        )
        per_node = max(
            (sum(len(a.activations) for a in r.most_positive_activation_records) for r in records),
            default=1,
        )
        with BulkFileWriter(
            dst / f"{layer}{BULK_SUFFIX}", chosen, rows_per_group_for(per_node * 3, 4)
        ) as w:
            for r in records:
                w.write(row_from_record(r, seqs.seq_of, _DTYPES[chosen]))


def json_to_bulk(
    src: str | os.PathLike[str],
    out: str | os.PathLike[str],
    dst: str | None = None,
    dtype: str | None = None,
) -> Path:
    """Convert records in the published JSON layout to bulk files under `out`.

    `src` is a builder output (with dataset.json: every dataset in it), or, with `dst`, one
    folder of `<layer>/<index>.json` records. `dtype` None keeps values exact (float32 when
    every value is a float32, else float64)."""
    from neuron_explainer.activations.datasets import DATASET_JSON

    src_path, out_path = Path(src), Path(out)
    seqs = SequenceTableBuilder()
    meta_path = src_path / DATASET_JSON
    if dst is None:
        if not meta_path.is_file():
            raise ValueError(f"{src_path} has no {DATASET_JSON}: pass the records' --dst")
        meta = orjson.loads(meta_path.read_bytes())
        for d in meta.get("datasets", []):
            _convert_folder_to_bulk(src_path / d["path"], out_path / d["path"], seqs, dtype)
            d["format"] = "bulk"
        meta["sequences"] = SEQUENCES_FILE
        seqs.write(out_path / SEQUENCES_FILE)
        with _atomic(out_path / DATASET_JSON) as tmp:
            tmp.write_bytes(orjson.dumps(meta, option=orjson.OPT_INDENT_2) + b"\n")
    else:
        _convert_folder_to_bulk(src_path, out_path, seqs, dtype)
        seqs.write(out_path / SEQUENCES_FILE)
    return out_path


def _write_json_file(path: Path, data: bytes) -> None:
    with _atomic(path) as tmp:
        tmp.write_bytes(data)


def _convert_folder_to_json(src: Path, dst: Path, sequences: Path, store: BulkStore) -> None:
    for layer in layers_in(src):
        n = store.n_nodes(src, layer) or 0
        for index in range(n):
            record = store.load_record(src, sequences, layer, index, numpy=True)
            assert record is not None
            _write_json_file(dst / str(layer) / f"{index}.json", dumps_record(record))


def bulk_to_json(src: str | os.PathLike[str], out: str | os.PathLike[str]) -> Path:
    """Convert bulk files back to one JSON record per node (the published layout). `src` is a
    bulk dataset (with dataset.json) or one folder of `<layer>.parquet` files holding its own
    sequences.safetensors."""
    from neuron_explainer.activations.datasets import DATASET_JSON

    src_path, out_path = Path(src), Path(out)
    store = BulkStore()
    meta_path = src_path / DATASET_JSON
    if meta_path.is_file():
        meta = orjson.loads(meta_path.read_bytes())
        sequences = src_path / meta.get("sequences", SEQUENCES_FILE)
        for d in meta.get("datasets", []):
            _convert_folder_to_json(src_path / d["path"], out_path / d["path"], sequences, store)
            d["format"] = "json"
        meta.pop("sequences", None)
        with _atomic(out_path / DATASET_JSON) as tmp:
            tmp.write_bytes(orjson.dumps(meta, option=orjson.OPT_INDENT_2) + b"\n")
    else:
        _convert_folder_to_json(src_path, out_path, src_path / SEQUENCES_FILE, store)
    return out_path


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m neuron_explainer.activations.bulk",
        description="Convert neuron records between the published JSON layout and bulk files.",
    )
    sub = p.add_subparsers(dest="command", required=True)
    to_bulk = sub.add_parser("to-bulk", help="JSON records -> bulk files")
    to_bulk.add_argument("src")
    to_bulk.add_argument("out")
    to_bulk.add_argument("--dst", help="the records' derived scalar type (a plain folder)")
    to_bulk.add_argument("--dtype", choices=sorted(_DTYPES), help="default: exact")
    to_json = sub.add_parser("to-json", help="bulk files -> JSON records")
    to_json.add_argument("src")
    to_json.add_argument("out")
    args = p.parse_args(argv)
    try:
        if args.command == "to-bulk":
            out = json_to_bulk(args.src, args.out, args.dst, args.dtype)
        else:
            out = bulk_to_json(args.src, args.out)
    except (ValueError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
