"""The bulk record format: a node read from it equals its JSON record, one node touches a
bounded number of bytes whatever the file's size (measured), the converter round-trips
exactly, and the read routes and explanation batches read it."""

from __future__ import annotations

import io
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from test_collate import CFG, _model, corpus  # noqa: F401  (corpus is a fixture)
from test_records import make_app, sample_record

from neuron_explainer.activations.bulk import (
    SEQUENCES_FILE,
    BulkFileReader,
    BulkFileWriter,
    NodeRow,
    SequenceReader,
    SequenceTableBuilder,
    bulk_to_json,
    json_to_bulk,
    main,
    row_from_record,
)
from neuron_explainer.activations.datasets import DST_FOLDERS, DatasetRegistry
from neuron_explainer.activations.records import dumps_record, loads_record, record_to_dict
from neuron_explainer.collate import CollateConfig, build, family_specs
from neuron_explainer.explanations.batch import list_nodes
from neuron_explainer.models.tokenizer import get_tokenizer


def _tree(folder: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()
    }


@pytest.fixture(scope="module")
def builds(corpus: list[str], tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:  # noqa: F811
    """The same records built as JSON and as bulk files."""
    model = _model()
    as_json, as_bulk = tmp_path_factory.mktemp("json"), tmp_path_factory.mktemp("bulk")
    assert build(model, get_tokenizer(), corpus, as_json, CFG, progress=False).complete
    cfg = CollateConfig(**{**CFG.__dict__, "format": "bulk"})
    assert build(model, get_tokenizer(), corpus, as_bulk, cfg, progress=False).complete
    return as_json, as_bulk


def _nan_equal(a: Any, b: Any) -> bool:
    if isinstance(a, float) and isinstance(b, float):
        return a == b or (math.isnan(a) and math.isnan(b))
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_nan_equal(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_nan_equal(a[k], b[k]) for k in a)
    return bool(a == b)


def test_bulk_nodes_equal_json_records(builds: tuple[Path, Path]) -> None:
    as_json, as_bulk = builds
    json_reg, bulk_reg = DatasetRegistry(), DatasetRegistry()
    json_entries = {e.dst: e for e in json_reg.register_local_dataset("j", as_json)}
    bulk_entries = {e.dst: e for e in bulk_reg.register_local_dataset("b", as_bulk)}
    assert {e.format for e in bulk_entries.values()} == {"bulk"}
    assert not list(as_bulk.rglob("*.json"))[1:]  # only dataset.json: no per-node files
    checked = 0
    for spec in family_specs(_model()):
        for index in range(spec.n_nodes):
            a = json_reg.load_record(json_entries[spec.dst], spec.layer, index)
            b = bulk_reg.load_record(bulk_entries[spec.dst], spec.layer, index)
            assert _nan_equal(record_to_dict(a), record_to_dict(b)), (spec, index)
            checked += 1
    assert checked == 2 * (128 + 4 + 12 + 12 + 12)


def test_round_trip_is_exact(builds: tuple[Path, Path], tmp_path: Path) -> None:
    as_json, _ = builds
    bulk = json_to_bulk(as_json, tmp_path / "bulk")
    back = bulk_to_json(bulk, tmp_path / "json")
    assert _tree(back) == _tree(as_json)  # the builder's JSON: the same bytes
    # and bulk -> JSON -> bulk gives the same bulk bytes
    again = json_to_bulk(back, tmp_path / "bulk2")
    assert _tree(again) == _tree(bulk)


def test_published_layout_round_trip_keeps_float64(tmp_path: Path) -> None:
    """Published records (values that are not float32) convert to bulk and back exactly."""
    src = tmp_path / "published"
    records = {}
    for layer in range(2):
        for index in range(5):
            r = sample_record(layer, index, token_pair=index == 3, n_tokens=4 + index)
            if index == 2:
                r.random_sample_by_quantile, r.quantile_boundaries = None, None
                r.skewness = math.nan
            records[layer, index] = r
            path = src / str(layer) / f"{index}.json"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(dumps_record(r))
    bulk = json_to_bulk(src, tmp_path / "bulk", dst="mlp_post_act")
    assert BulkFileReader(bulk / "0.parquet").read(0) is not None
    registry = DatasetRegistry()
    (entry,) = registry.register_local_dataset("p", bulk, dst="mlp_post_act")
    assert entry.format == "bulk"
    for (layer, index), r in records.items():
        got = registry.load_record(entry, layer, index)
        want = loads_record(dumps_record(r))  # as JSON holds it (NaN -> None)
        assert record_to_dict(got) == record_to_dict(want)
    back = bulk_to_json(bulk, tmp_path / "back")
    assert _tree(back) == _tree(src)
    # the CLI
    assert main(["to-bulk", str(src), str(tmp_path / "cli"), "--dst", "mlp_post_act"]) == 0
    assert main(["to-bulk", str(src), str(tmp_path / "cli2")]) == 2  # no dataset.json, no --dst


class CountingFile(io.RawIOBase):
    """A binary file that counts the bytes read from it."""

    def __init__(self, path: Path) -> None:
        self._f = open(path, "rb")  # noqa: SIM115
        self.bytes_read = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def seek(self, offset: int, whence: int = 0) -> int:
        return self._f.seek(offset, whence)

    def tell(self) -> int:
        return self._f.tell()

    def readinto(self, buffer: Any) -> int:
        n = self._f.readinto(buffer)
        self.bytes_read += n or 0
        return n or 0

    def read(self, size: int = -1) -> bytes:
        data = self._f.read(size)
        self.bytes_read += len(data)
        return data

    def close(self) -> None:
        self._f.close()


def _synthetic_file(path: Path, n_nodes: int) -> None:
    rng = np.random.default_rng(0)
    with BulkFileWriter(path, "float32", rows_per_group=16) as w:
        for node in range(n_nodes):
            w.write(
                NodeRow(
                    node=node,
                    group_sizes=[8, 4],
                    seq=list(range(node, node + 12)),
                    lengths=[64] * 12,
                    values=rng.standard_normal(12 * 64).astype(np.float32),
                    has_quantile_samples=False,
                    quantile_boundaries=None,
                    mean=0.0,
                    variance=1.0,
                    skewness=None,
                    kurtosis=None,
                )
            )


@pytest.mark.parametrize("n_nodes", [512, 4096])
def test_one_node_touches_a_bounded_number_of_bytes(tmp_path: Path, n_nodes: int) -> None:
    path = tmp_path / f"{n_nodes}.parquet"
    _synthetic_file(path, n_nodes)
    size = path.stat().st_size
    f = CountingFile(path)
    reader = BulkFileReader(f)
    opened = f.bytes_read  # the footer: read once per file
    per_node = []
    for node in (n_nodes // 3, n_nodes - 1, 7):
        before = f.bytes_read
        row = reader.read(node)
        assert row is not None and row.node == node and row.seq[0] == node
        per_node.append(f.bytes_read - before)
    one_group = size / (n_nodes / 16)
    assert max(per_node) < 1.5 * one_group + 4096, (per_node, one_group)
    assert max(per_node) < size / 20
    # opening reads the footer (pyarrow reads the last 64 KiB at once, or the whole footer)
    footer = reader._pf.metadata.serialized_size
    assert footer < 1000 * n_nodes / 16 + 4096  # under 1 kB per row group (11 columns)
    assert opened <= footer + 8 + (1 << 16)
    # the token table: header and ids once, then one row per sequence
    builder = SequenceTableBuilder()
    for i in range(3000):
        builder.seq_of([f"t{i}", f"u{i % 7}", "v"])
    builder.write(tmp_path / SEQUENCES_FILE)
    g = CountingFile(tmp_path / SEQUENCES_FILE)
    seqs = SequenceReader(g)
    before = g.bytes_read
    assert seqs.tokens([1234, 5]) == [["t1234", "u2", "v"], ["t5", "u5", "v"]]
    assert g.bytes_read - before == 2 * 3 * 2  # two rows of three int16 indices


def test_writer_leaves_nothing_on_error(tmp_path: Path) -> None:
    path = tmp_path / "0.parquet"
    with pytest.raises(RuntimeError), BulkFileWriter(path) as w:
        seqs = SequenceTableBuilder()
        w.write(row_from_record(sample_record(0, 0), seqs.seq_of))
        raise RuntimeError("interrupted")
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(ValueError, match="node order"), BulkFileWriter(path) as w:
        w.write(row_from_record(sample_record(0, 1), SequenceTableBuilder().seq_of))
    assert list(tmp_path.iterdir()) == []


def test_routes_and_batch_listing_read_bulk(builds: tuple[Path, Path]) -> None:
    as_json, as_bulk = builds
    responses = []
    for name, folder in (("j", as_json), ("b", as_bulk)):
        registry = DatasetRegistry()
        registry.register_local_dataset(name, folder)
        client = TestClient(make_app(registry))
        body = {"dst": "mlp_post_act", "layerIndex": 1, "activationIndex": 5, "datasets": [name]}
        r = client.post("/neuron_record", json=body)
        assert r.status_code == 200, r.text
        h = client.post(
            "/attention_head_record",
            json=body | {"dst": "attn_write_norm", "activationIndex": 2},
        )
        assert h.status_code == 200, h.text
        missing = client.post("/neuron_record", json=body | {"activationIndex": 10_000})
        assert missing.status_code == 404
        responses.append((r.json() | {"dataset": None}, h.json() | {"dataset": None}))
    assert responses[0] == responses[1]
    registry = DatasetRegistry()
    entries = {e.dst: e for e in registry.register_local_dataset("b", as_bulk)}
    entry = entries["mlp_post_act"]
    from dataclasses import replace

    nodes = list_nodes(replace(entry, n_nodes=None))  # from the files themselves
    assert nodes == [(layer, i) for layer in range(2) for i in range(128)]
    assert (as_bulk / DST_FOLDERS["mlp_post_act"] / "0.parquet").is_file()
