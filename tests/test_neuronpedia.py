"""Neuronpedia export: records and a stored explanation of a built (bulk) dataset, exported
and read back from the `features`, `activations` and `explanations` batch files."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import orjson
import pytest
from test_collate import CFG, _model, corpus  # noqa: F401  (corpus is a fixture)

from neuron_explainer.activations.datasets import DatasetRegistry, explanation_file
from neuron_explainer.activations.neuronpedia import export_neuronpedia, main, read_batches
from neuron_explainer.collate import CollateConfig, build
from neuron_explainer.models.tokenizer import get_tokenizer


@pytest.fixture(scope="module")
def dataset(corpus: list[str], tmp_path_factory: pytest.TempPathFactory) -> Path:  # noqa: F811
    out = tmp_path_factory.mktemp("bulk")
    cfg = CollateConfig(
        **{**CFG.__dict__, "format": "bulk", "dsts": ("mlp_post_act", "attn_write_norm")}
    )
    assert build(_model(False), get_tokenizer(), corpus, out, cfg, progress=False).complete
    return out


def test_export_reads_back(dataset: Path, tmp_path: Path) -> None:
    registry = DatasetRegistry()
    entries = {e.dst: e for e in registry.register_local_dataset("tiny", dataset)}
    entry = entries["mlp_post_act"]
    results = {
        "dataclass_name": "NeuronSimulationResults",
        "neuron_id": {"dataclass_name": "NeuronId", "layer_index": 1, "neuron_index": 3},
        "scored_explanations": [
            {
                "dataclass_name": "ScoredExplanation",
                "explanation": "the word cat",
                "scored_simulation": {"ev_correlation_score": 0.5},
            }
        ],
    }
    path = explanation_file(entry, "llm_test", 1, 3)
    path.parent.mkdir(parents=True)
    path.write_bytes(orjson.dumps(results) + b"\n")
    nodes = [(1, i) for i in range(10)] + [(0, 0)]
    when = datetime(2024, 1, 2, tzinfo=UTC)
    roots = export_neuronpedia(
        registry,
        entry,
        tmp_path,
        model_id="tiny-2l",
        source_set="mlp",
        nodes=nodes,
        batch_size=4,
        created_at=when,
    )
    assert roots == [tmp_path / "tiny-2l" / "0-mlp", tmp_path / "tiny-2l" / "1-mlp"]
    layer1 = roots[1]
    assert sorted(p.name for p in (layer1 / "features").iterdir()) == [
        "batch-0.jsonl.gz",
        "batch-1.jsonl.gz",
        "batch-2.jsonl.gz",
    ]
    features = read_batches(layer1 / "features")
    activations = read_batches(layer1 / "activations")
    explanations = read_batches(layer1 / "explanations")
    assert [f["index"] for f in features] == [str(i) for i in range(10)]
    for feature in features:
        index = int(feature["index"])
        record = registry.load_record(entry, 1, index)
        assert feature["modelId"] == "tiny-2l" and feature["layer"] == "1-mlp"
        assert feature["maxActApprox"] == pytest.approx(record.max_activation)
        assert feature["createdAt"] == when.isoformat()
        mine = [a for a in activations if a["index"] == feature["index"]]
        examples = [
            *record.most_positive_activation_records,
            *record.random_sample,
            *(r for q in record.random_sample_by_quantile or [] for r in q),
        ]
        assert len(mine) == len(examples)
        for a, r in zip(mine, examples, strict=True):
            assert a["tokens"] == r.tokens and a["values"] == r.activations
            assert a["maxValue"] == max(r.activations) == a["values"][a["maxValueTokenIndex"]]
            assert a["minValue"] == min(r.activations)
        assert len({a["id"] for a in mine}) == len(mine)
        binned = [a for a in mine if a["binMax"] is not None or a["binMin"] is not None]
        assert record.quantile_boundaries is not None
        for a in binned:  # a quantile sample's max lies in its bin
            assert a["binMin"] is None or a["maxValue"] >= a["binMin"] - 1e-6
            assert a["binMax"] is None or a["maxValue"] <= a["binMax"] + 1e-6
    assert [(e["index"], e["description"], e["explanationModelName"]) for e in explanations] == [
        ("3", "the word cat", "llm_test")
    ]
    assert explanations[0]["notes"] == "score 0.5000"
    # a re-export gives the same bytes (stable ids, gzip without a timestamp)
    again = export_neuronpedia(
        registry,
        entry,
        tmp_path / "again",
        model_id="tiny-2l",
        source_set="mlp",
        nodes=nodes,
        batch_size=4,
        created_at=when,
    )
    assert (again[1] / "activations" / "batch-1.jsonl.gz").read_bytes() == (
        layer1 / "activations" / "batch-1.jsonl.gz"
    ).read_bytes()


def test_token_pair_records_are_refused(dataset: Path, tmp_path: Path) -> None:
    registry = DatasetRegistry()
    entries = {e.dst: e for e in registry.register_local_dataset("tiny", dataset)}
    with pytest.raises(ValueError, match="token pair"):
        export_neuronpedia(
            registry,
            entries["attn_write_norm"],
            tmp_path,
            model_id="m",
            source_set="s",
            nodes=[(0, 0)],
        )


def test_cli(dataset: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = [str(dataset), "--dst", "mlp_post_act", "--model-id", "m", "--source-set", "s"]
    assert main([*args, "--out", str(tmp_path), "--layers", "1"]) == 0
    assert len(read_batches(tmp_path / "m" / "1-s" / "features")) == 128
    assert main([str(dataset), "--dst", "attn_write_norm", "--model-id", "m", "--source-set",
                 "s", "--out", str(tmp_path)]) == 2  # fmt: skip
    assert "token pair" in capsys.readouterr().err
