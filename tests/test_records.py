"""Neuron records: the file formats, the dataset registry and the read routes.

The published layout is served by a real local HTTP server (the `http_server` fixture) holding
sample files written in that layout; the normalisation is checked against the seed's formulas
written out independently here."""

from __future__ import annotations

import io
import math
import os
import pickle
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson
import pytest
import torch
from fastapi import FastAPI
from fastapi.responses import JSONResponse
from fastapi.testclient import TestClient

from neuron_explainer.activation_server import schemas as S
from neuron_explainer.activation_server.errors import install_error_handlers
from neuron_explainer.activation_server.read_routes import make_read_router
from neuron_explainer.activations.datasets import (
    PUBLISHED_BASE,
    DatasetRegistry,
    explanation_file,
    published_datasets,
)
from neuron_explainer.activations.records import (
    ActivationRecord,
    NeuronId,
    NeuronRecord,
    RecordFormatError,
    attended_to_lengths,
    dumps_record,
    loads_record,
    normalized_activations,
    record_to_dict,
    unflatten_token_pair_activations,
)

if TYPE_CHECKING:
    from conftest import LocalHTTPServer

torch.set_num_threads(1)


def make_app(registry: DatasetRegistry) -> FastAPI:
    """The read router with the server's error mapping (as main.create_app does)."""
    app = FastAPI(generate_unique_id_function=S.operation_id)
    app.include_router(make_read_router(registry))
    install_error_handlers(app, JSONResponse)
    return app


def sample_record(
    layer: int, index: int, token_pair: bool = False, n_tokens: int = 5
) -> NeuronRecord:
    gen = torch.Generator().manual_seed(layer * 1000 + index)

    def ar(scale: float) -> ActivationRecord:
        tokens = [f" t{i}" for i in range(n_tokens)]
        n = n_tokens * (n_tokens + 1) // 2 if token_pair else n_tokens
        acts = ((torch.rand(n, generator=gen) - 0.3) * scale).tolist()
        return ActivationRecord(activations=acts, tokens=tokens)

    return NeuronRecord(
        neuron_id=NeuronId(layer_index=layer, neuron_index=index),
        random_sample=[ar(1.0) for _ in range(3)],
        random_sample_by_quantile=[[ar(0.5)], [ar(2.0)]],
        quantile_boundaries=[0.1, 0.7],
        mean=0.1,
        variance=0.2,
        skewness=math.nan,
        kurtosis=3.0,
        most_positive_activation_records=[ar(5.0) for _ in range(4)],
    )


# --- formats ----------------------------------------------------------------------------------


def test_json_round_trip_and_published_field_names() -> None:
    record = sample_record(2, 7)
    data = dumps_record(record)
    raw = orjson.loads(data)
    assert raw["dataclass_name"] == "NeuronRecord"
    assert raw["neuron_id"] == {"dataclass_name": "NeuronId", "neuron_index": 7, "layer_index": 2}
    assert raw["most_positive_activation_records"][0]["dataclass_name"] == "ActivationRecord"
    assert raw["skewness"] is None  # NaN is written as null, as orjson does
    back = loads_record(data)
    assert back.most_positive_activation_records == record.most_positive_activation_records
    assert back.random_sample_by_quantile == record.random_sample_by_quantile
    assert back.skewness is None and back.kurtosis == 3.0
    assert dumps_record(back) == data  # stable bytes
    assert back.max_activation == max(
        max(r.activations) for r in record.most_positive_activation_records
    )


def test_pt_round_trip_and_pickled_objects() -> None:
    record = sample_record(1, 3)
    back = loads_record(dumps_record(record, "pt"))
    assert back.most_positive_activation_records == record.most_positive_activation_records
    # A pickled record object (not a plain dict) is read field by field, without running code.
    buffer = io.BytesIO()
    torch.save(record, buffer)
    assert loads_record(buffer.getvalue()).random_sample == record.random_sample
    # Tensors for activations are accepted too.
    d = record_to_dict(record)
    d["most_positive_activation_records"][0]["activations"] = torch.tensor(
        [1.0, 2.0, 3.0, 4.0, 9.0]
    )
    buffer = io.BytesIO()
    torch.save(d, buffer)
    assert loads_record(buffer.getvalue()).max_activation == 9.0


class _Evil:
    def __reduce__(self) -> Any:
        return (os.system, ("echo pwned",))


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_pt_refuses_code() -> None:
    buffer = io.BytesIO()
    torch.save({"most_positive_activation_records": [], "x": _Evil()}, buffer)
    with pytest.raises(RecordFormatError):
        loads_record(buffer.getvalue(), "pt")
    with pytest.raises(RecordFormatError):
        loads_record(pickle.dumps(_Evil()), "pt")


def test_lenient_reading_of_old_layouts() -> None:
    old = {
        "neuron_id": {"idx": 4, "layer": "3"},
        "random_sample": [{"activations": [0.0, 1.0], "tokens": ["a", "b"]}],
        "most_positive_activation_records": [{"activations": [2.0, None], "tokens": ["a", "b"]}],
        "some_future_field": 1,
    }
    record = loads_record(orjson.dumps(old))
    assert record.neuron_id == NeuronId(layer_index=3, neuron_index=4)
    assert record.random_sample_by_quantile is None and record.mean is None
    assert record.max_activation == 2.0
    for bad in (b"[1, 2]", b"{}", b"not json", orjson.dumps({"random_sample": [{"tokens": [1]}]})):
        with pytest.raises(RecordFormatError):
            loads_record(bad)


def test_token_pair_shapes() -> None:
    assert attended_to_lengths(4, 10) == [1, 2, 3, 4]
    assert attended_to_lengths(5, 12) == [1, 2, 3, 3, 3]  # each query sees at most 3 keys
    assert attended_to_lengths(4, 7) == [1, 2, 2, 2]
    with pytest.raises(RecordFormatError):
        attended_to_lengths(4, 8)
    rows = unflatten_token_pair_activations(ActivationRecord([1, 2, 3, 4, 5, 6], ["a", "b", "c"]))
    assert rows == [[1], [2, 3], [4, 5, 6]]


def test_normalized_activations() -> None:
    record = sample_record(0, 0)
    peak = record.max_activation
    assert normalized_activations(record, [peak, -1.0, peak / 2]) == [1.0, 0.0, 0.5]
    flat = NeuronRecord(
        NeuronId(0, 0), most_positive_activation_records=[ActivationRecord([0.0], ["a"])]
    )
    assert normalized_activations(flat, [1.0]) == [0.0]


def test_splits_are_interleaved() -> None:
    record = sample_record(0, 1)
    record.most_positive_activation_records *= 2  # 8 records: 2 per split
    top = record.most_positive_activation_records
    assert record.train_activation_records() == [top[0], top[4]]
    assert record.valid_activation_records()[:2] == [top[2], top[6]]
    assert record.valid_activation_records()[2:] == [record.random_sample[1]]


# --- the published layout over HTTP --------------------------------------------------------------


def _publish(root: Path, rel: str, data: bytes) -> None:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


@pytest.fixture
def published(http_server: LocalHTTPServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    """Sample files in the published layout on a local HTTP server, and a client for them."""
    monkeypatch.setenv("NEURON_EXPLAINER_CACHE", str(tmp_path / "cache"))
    root = http_server.root
    _publish(
        root, "gpt2_small_data/collated-activations/5/131.json", dumps_record(sample_record(5, 131))
    )
    _publish(
        root,
        "gpt2_small/attn_write_norm/collated-activations-by-token-pair/0/1.json",
        dumps_record(sample_record(0, 1, token_pair=True)),
    )
    # a latent stored only as .pt: the reader falls back from .json
    _publish(
        root,
        "gpt2_small/autoencoder_latent/resid_delta_attn_v4/collated-activations-by-token-pair/3/7.pt",
        dumps_record(sample_record(3, 7, token_pair=True), "pt"),
    )
    explanation = {
        "dataclass_name": "NeuronSimulationResults",
        "neuron_id": {"neuron_index": 131, "layer_index": 5},
        "scored_explanations": [
            {
                "explanation": "words about cats",
                "scored_simulation": {"ev_correlation_score": 0.42},
            },
            {"explanation": None, "scored_simulation": {"ev_correlation_score": 0.1}},
            {"explanation": "undefined score", "scored_simulation": {"ev_correlation_score": None}},
        ],
    }
    _publish(root, "gpt2_small_data/explanations/5/131.jsonl", orjson.dumps(explanation) + b"\n")
    registry = DatasetRegistry.with_published(base=http_server.url_for(""))
    return TestClient(make_app(registry)), http_server


def _body(dst: str, layer: int, index: int, datasets: list[str]) -> dict[str, Any]:
    return {"dst": dst, "layerIndex": layer, "activationIndex": index, "datasets": datasets}


def test_neuron_record_from_published_layout(published: Any) -> None:
    client, server = published
    r = client.post("/neuron_record", json=_body("mlp_post_act", 5, 131, ["gpt2-small"]))
    assert r.status_code == 200, r.text
    body = r.json()
    record = sample_record(5, 131)
    assert body["dataset"] == server.url_for("gpt2_small_data/collated-activations/")
    assert body["maxActivation"] == pytest.approx(record.max_activation)
    # the seed's normalisation: max over top and random of relu(x); x / (max - 1e-5), floored at 0
    everything = record.most_positive_activation_records + record.random_sample
    peak = max(max(v, 0) for r_ in everything for v in r_.activations)
    for got, want in (
        (body["topActivations"], record.most_positive_activation_records),
        (body["randomSample"], record.random_sample),
    ):
        assert len(got) == len(want)
        for seq, rec in zip(got, want, strict=True):
            assert [t["token"] for t in seq] == rec.tokens
            assert [t["scalar"] for t in seq] == pytest.approx(rec.activations)
            assert [t["normalizedScalar"] for t in seq] == pytest.approx(
                [max(x / (peak - 1e-5), 0) for x in rec.activations]
            )
    # second request: served from the on-disk cache, no new download
    before = server.total_requests
    assert (
        client.post(
            "/neuron_record", json=_body("mlp_post_act", 5, 131, ["gpt2-small"])
        ).status_code
        == 200
    )
    assert server.total_requests == before


def _seed_attention_summaries(
    groups: list[list[list[list[float]]]],
) -> list[list[list[dict[str, float]]]]:
    """The seed's attention normalisation, written out directly from its definition."""
    peak = max(max(v, 0) for g in groups for s in g for row in s for v in row)

    def scale(m: float) -> Any:
        return lambda x: max(x / (m - 1e-5), 0) if m > 0 else 0.0

    summaries = []
    for g in groups:
        gs = []
        for s in g:
            n = len(s)
            gs.append(
                [
                    (
                        sum(s[j]),
                        max(s[j]),
                        sum(s[i][j] for i in range(j, n)),
                        max(s[i][j] for i in range(j, n)),
                    )
                    for j in range(n)
                ]
            )
        summaries.append(gs)
    scales = [scale(max(max(t[i], 0) for g in summaries for s in g for t in s)) for i in range(4)]
    return [
        [
            [
                {
                    "normalized": [scale(peak)(v) for v in s[j]],
                    "totalIn": t[0],
                    "normalizedTotalIn": scales[0](t[0]),
                    "maxIn": t[1],
                    "normalizedMaxIn": scales[1](t[1]),
                    "totalOut": t[2],
                    "normalizedTotalOut": scales[2](t[2]),
                    "maxOut": t[3],
                    "normalizedMaxOut": scales[3](t[3]),
                }
                for j, t in enumerate(gt)
            ]
            for s, gt in zip(g, gs, strict=True)
        ]
        for g, gs in zip(groups, summaries, strict=True)
    ]


def _check_attention_body(body: dict[str, Any], record: NeuronRecord) -> None:
    groups = [
        [unflatten_token_pair_activations(r) for r in record.most_positive_activation_records],
        [unflatten_token_pair_activations(r) for r in record.random_sample],
    ]
    want = _seed_attention_summaries(groups)
    got_groups = [body["mostPositiveTokenSequences"], body["randomTokenSequences"]]
    assert body["maxAttentionActivation"] == pytest.approx(record.max_activation)
    for got_g, want_g, raw_g in zip(got_groups, want, groups, strict=True):
        for got_s, want_s, raw_s in zip(got_g, want_g, raw_g, strict=True):
            for tok, w, raw in zip(got_s, want_s, raw_s, strict=True):
                assert tok["scalars"] == pytest.approx(raw)
                assert tok["normalizedScalars"] == pytest.approx(w["normalized"])
                for key in ("TotalIn", "MaxIn", "TotalOut", "MaxOut"):
                    lower = key[0].lower() + key[1:]
                    wire = lower.replace("In", "ScalarIn").replace("Out", "ScalarOut")
                    assert tok[wire] == pytest.approx(w[lower])
                    assert tok["normalized" + wire[0].upper() + wire[1:]] == pytest.approx(
                        w["normalized" + key]
                    )


def test_attention_head_record_and_summaries(published: Any) -> None:
    client, _ = published
    r = client.post("/attention_head_record", json=_body("attn_write_norm", 0, 1, ["gpt2-small"]))
    assert r.status_code == 200, r.text
    _check_attention_body(r.json(), sample_record(0, 1, token_pair=True))


def test_latent_by_token_pair_with_combined_name_and_pt_fallback(published: Any) -> None:
    client, server = published
    name = "gpt2-small_ae-resid-delta-mlp-v4_ae-resid-delta-attn-v4"  # what the client sends
    body = _body("flattened_attn_write_to_latent_summed_over_heads", 3, 7, [name])
    r = client.post("/attention_head_record", json=body)
    assert r.status_code == 200, r.text
    assert r.json()["dataset"].endswith("resid_delta_attn_v4/collated-activations-by-token-pair")
    _check_attention_body(r.json(), sample_record(3, 7, token_pair=True))
    # the .pt format is remembered: the next record is asked for as .pt first
    server.request_log.clear()
    client.post("/attention_head_record", json=body | {"activationIndex": 8})
    assert server.request_log[0][1].endswith("/3/8.pt")


def test_missing_records_are_404(published: Any) -> None:
    client, _ = published
    r = client.post("/neuron_record", json=_body("mlp_post_act", 5, 132, ["gpt2-small"]))
    assert r.status_code == 404 and "5:132" in r.json()["message"]
    r = client.post("/neuron_record", json=_body("mlp_post_act", 5, 131, ["no-such-dataset"]))
    assert r.status_code == 404 and "gpt2-small" in r.json()["message"]  # lists the known ones
    r = client.post("/neuron_record", json=_body("mlp_post_act", 5, 131, []))
    assert r.status_code == 422 and "datasets" in r.json()["message"]  # the schema's minItems


def test_existing_explanations(published: Any) -> None:
    client, _ = published
    body = {
        "dst": "mlp_post_act",
        "layerIndex": 5,
        "activationIndex": 131,
        "explanationDatasets": [],
        "neuronDataset": "gpt2-small",
    }
    r = client.post("/existing_explanations", json=body)
    assert r.status_code == 200, r.text
    assert r.json() == [
        {
            "explanation": "words about cats",
            "score": 0.42,
            "datasetName": "gpt2-small-explanations",
        },
        {"explanation": "undefined score", "score": None, "datasetName": "gpt2-small-explanations"},
    ]
    r = client.post("/existing_explanations", json=body | {"activationIndex": 1})
    assert r.status_code == 200 and r.json() == []
    by_name = body | {"neuronDataset": None, "explanationDatasets": ["gpt2-small-explanations"]}
    assert client.post("/existing_explanations", json=by_name | {"activationIndex": 1}).json() == []
    assert (
        len(client.post("/existing_explanations", json=by_name | {"activationIndex": 131}).json())
        == 2
    )
    for bad in (
        body | {"explanationDatasets": ["gpt2-small-explanations"]},
        body | {"neuronDataset": None},
    ):
        assert client.post("/existing_explanations", json=bad).status_code == 400


def test_metadata_lists_the_seed_datasets() -> None:
    client = TestClient(make_app(DatasetRegistry.with_published()))
    r = client.post("/neuron_datasets_metadata")
    assert r.status_code == 200
    entries = {(e["shortName"], e["derivedScalarType"]): e for e in r.json()}
    assert len(entries) == 9
    assert entries[("gpt2-small", "mlp_post_act")]["neuronDatasetPath"] == (
        "https://openaipublic.blob.core.windows.net/neuron-explainer/gpt2_small_data/collated-activations/"
    )
    assert (
        entries[
            (
                "gpt2-small_ae-resid-delta-attn-v4",
                "flattened_attn_write_to_latent_summed_over_heads",
            )
        ]["neuronDatasetPath"]
        == PUBLISHED_BASE
        + "gpt2_small/autoencoder_latent/resid_delta_attn_v4/collated-activations-by-token-pair"
    )
    openapi_ids = {
        op["operationId"] for path in client.app.openapi()["paths"].values() for op in path.values()
    }  # type: ignore[attr-defined]
    assert {
        "read-neuron_record",
        "read-attention_head_record",
        "read-neuron_datasets_metadata",
        "read-existing_explanations",
    } <= openapi_ids


# --- requests cannot leave the registered roots -----------------------------------------------


SMUGGLED = [
    "../gpt2-small",
    "gpt2-small/../../etc",
    "/etc/passwd",
    "..",
    "file:///etc/passwd",
    "http://127.0.0.1:1/evil",
    "https://evil.example.com/neuron-explainer/gpt2_small_data/collated-activations/",
    "https://openaipublic.blob.core.windows.net/neuron-explainer/other/",
    "C:\\Windows",
    "gpt2-small\\..\\x",
    "%2e%2e%2fetc",
]


@pytest.mark.parametrize("name", SMUGGLED)
def test_paths_and_urls_in_requests_are_refused(name: str, published: Any, tmp_path: Path) -> None:
    client, server = published
    before = server.total_requests
    for route, dst in (
        ("/neuron_record", "mlp_post_act"),
        ("/attention_head_record", "attn_write_norm"),
    ):
        r = client.post(route, json=_body(dst, 5, 131, [name]))
        assert 400 <= r.status_code < 500, (name, r.status_code, r.text)
        r = client.post(route, json=_body(dst, 5, 131, ["gpt2-small", name]))
        assert 400 <= r.status_code < 500, (name, r.status_code, r.text)
    body = {
        "dst": "mlp_post_act",
        "layerIndex": 5,
        "activationIndex": 131,
        "explanationDatasets": [],
        "neuronDataset": name,
    }
    assert 400 <= client.post("/existing_explanations", json=body).status_code < 500
    body = body | {"neuronDataset": None, "explanationDatasets": [name]}
    assert 400 <= client.post("/existing_explanations", json=body).status_code < 500
    assert server.total_requests == before  # nothing was fetched


def test_path_like_names_are_400_and_negative_indices_refused(published: Any) -> None:
    client, _ = published
    r = client.post("/neuron_record", json=_body("mlp_post_act", 5, 131, ["/etc/passwd"]))
    assert r.status_code == 400 and "not accepted" in r.json()["message"]
    r = client.post("/neuron_record", json=_body("mlp_post_act", -1, 131, ["gpt2-small"]))
    assert r.status_code == 422 and "layerIndex" in r.json()["message"]  # the schema's minimum


def test_registered_root_is_accepted_as_a_name(published: Any) -> None:
    client, server = published
    root = server.url_for("gpt2_small_data/collated-activations/")
    r = client.post("/neuron_record", json=_body("mlp_post_act", 5, 131, [root]))
    assert r.status_code == 200, r.text


# --- local datasets ---------------------------------------------------------------------------


def test_local_dataset_folder_and_explanations(tmp_path: Path) -> None:
    folder = tmp_path / "records"
    (folder / "2").mkdir(parents=True)
    (folder / "2" / "9.json").write_bytes(dumps_record(sample_record(2, 9)))
    secret = tmp_path / "secret.json"
    secret.write_bytes(dumps_record(sample_record(0, 0)))
    registry = DatasetRegistry()
    (entry,) = registry.register_local_dataset("mine", folder, dst="mlp_post_act")
    path = explanation_file(entry, "v1", 2, 9)
    path.parent.mkdir(parents=True)
    path.write_bytes(
        orjson.dumps(
            {
                "scored_explanations": [
                    {"explanation": "x", "scored_simulation": {"ev_correlation_score": 0.5}}
                ]
            }
        )
    )
    client = TestClient(make_app(registry))
    assert (
        client.post("/neuron_record", json=_body("mlp_post_act", 2, 9, ["mine"])).status_code == 200
    )
    for name in ("mine/../..", str(secret), str(tmp_path), "mine/2/9.json"):
        assert (
            client.post("/neuron_record", json=_body("mlp_post_act", 2, 9, [name])).status_code
            == 400
        )
    body = {
        "dst": "mlp_post_act",
        "layerIndex": 2,
        "activationIndex": 9,
        "explanationDatasets": [],
        "neuronDataset": "mine",
    }
    assert client.post("/existing_explanations", json=body).json() == [
        {"explanation": "x", "score": 0.5, "datasetName": "v1"}
    ]
    with pytest.raises(ValueError):
        explanation_file(entry, "../x", 2, 9)


def test_answers_name_local_datasets_not_their_folders(tmp_path: Path) -> None:
    """/neuron_datasets_metadata and the record routes show a local dataset's registered name,
    never its folder; the served model's datasets come first."""
    folder = tmp_path / "private" / "records"
    (folder / "2").mkdir(parents=True)
    (folder / "2" / "9.json").write_bytes(dumps_record(sample_record(2, 9)))
    (folder / "2" / "8.json").write_bytes(b"{not json")
    (folder / "2" / "7.json").mkdir()  # unreadable as a file
    registry = DatasetRegistry.with_published(base="http://127.0.0.1:9/")
    registry.register_local_dataset("mine", folder, dst="mlp_post_act")
    app = FastAPI()
    app.include_router(make_read_router(registry, served_model="mine"))
    install_error_handlers(app, JSONResponse)
    client = TestClient(app, raise_server_exceptions=False)
    listed = client.post("/neuron_datasets_metadata").json()
    assert listed[0]["shortName"] == "mine" and listed[0]["neuronDatasetPath"] == "mine"
    assert [m["shortName"] for m in listed[1:3]] == ["gpt2-xl", "gpt2-small"]  # then in order
    record = client.post("/neuron_record", json=_body("mlp_post_act", 2, 9, ["mine"]))
    assert record.status_code == 200 and record.json()["dataset"] == "mine"
    for index in (7, 8):  # errors reading the files do not name them either
        r = client.post("/neuron_record", json=_body("mlp_post_act", 2, index, ["mine"]))
        assert r.status_code == 503 and "read" in r.json()["message"], r.text
    for r in (
        client.post("/neuron_datasets_metadata"),
        record,
        *(client.post("/neuron_record", json=_body("mlp_post_act", 2, i, ["mine"])) for i in (7, 8)),
    ):
        assert str(tmp_path) not in r.text and "private" not in r.text


def test_published_entries_match_the_seed() -> None:
    urls = {(e.short_name, e.dst): e.root for e in published_datasets()}
    assert urls[("gpt2-xl", "mlp_post_act")] == PUBLISHED_BASE + "data/collated-activations/"
    assert urls[("gpt2-small", "attn_write_norm")] == (
        PUBLISHED_BASE + "gpt2_small/attn_write_norm/collated-activations-by-token-pair"
    )
    assert urls[("gpt2-small_ae-mlp-post-act-v4", "mlp_autoencoder_latent")] == (
        PUBLISHED_BASE + "gpt2_small/autoencoder_latent/mlp_post_act_v4/collated-activations"
    )


def test_normalize_attention_sequence_uses_the_record_scale() -> None:
    from neuron_explainer.activation_server.read_routes import normalize_attention_sequence

    own = [
        S.TokenAndRawAttentionScalars(token="a", scalars=[1.0]),
        S.TokenAndRawAttentionScalars(token="b", scalars=[0.5, 2.0]),
    ]
    alone = normalize_attention_sequence(own)
    assert alone[1].normalized_scalars == pytest.approx([0.5 / (2 - 1e-5), 2 / (2 - 1e-5)])
    record = NeuronRecord(
        NeuronId(0, 0),
        most_positive_activation_records=[ActivationRecord([4.0, 0.0, 1.0], ["x", "y"])],
    )
    scaled = normalize_attention_sequence(own, record)
    assert scaled[1].normalized_scalars == pytest.approx([0.5 / (4 - 1e-5), 2 / (4 - 1e-5)])
    assert scaled[0].total_scalar_out == 1.5 and scaled[1].max_scalar_in == 2.0
