"""POST /attribution_graph and `python -m neuron_explainer.graph`: the library's graph, exported,
with bounded inputs and errors that name the field."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from graph_helpers import random_model, random_transcoders, save_circuit_tracer_set

from neuron_explainer.activation_server.errors import install_error_handlers
from neuron_explainer.activation_server.graph_routes import (
    load_server_transcoders,
    make_graph_router,
)
from neuron_explainer.activation_server.main import ORJSONResponse, _answer, create_app
from neuron_explainer.activation_server.processing import Debugger
from neuron_explainer.debugger.graph import (
    LogitDifference,
    attribute,
    conventions_for,
    graph_schema,
    read_graph_file,
    to_graph_file,
)
from neuron_explainer.debugger.graph.prompts import graph_prompt
from neuron_explainer.models.loading import load_model, tokenizer_of
from neuron_explainer.models.random_models import save_random
from neuron_explainer.models.saes import load_transcoder_set
from neuron_explainer.models.tokenizer import get_tokenizer

PROMPT = "When Mary and John went to the store, John gave a drink to"


@pytest.fixture(scope="module")
def served() -> Iterator[tuple[TestClient, Debugger, list[Any]]]:
    model = random_model("gpt2")
    debugger = Debugger(model, get_tokenizer(), "random-gpt2")
    transcoders = random_transcoders(model, seed=11)
    with TestClient(create_app(debugger, transcoders=transcoders)) as client:
        yield client, debugger, transcoders


def test_the_route_answers_the_librarys_graph(served: Any) -> None:
    client, debugger, transcoders = served
    body = {"prompt": PROMPT, "targetTokens": [" Mary"], "distractorTokens": [" John"], "maxFeatureNodes": 50, "batchSize": 32}
    r = client.post("/attribution_graph", json=body)
    assert r.status_code == 200, r.text
    answer = r.json()
    jsonschema.validate(answer["graph"], graph_schema())
    assert set(answer["timings"]) >= {"forward", "logit_rows", "feature_rows", "pruning", "export", "total"}
    assert all(v >= 0 for v in answer["timings"].values())
    assert answer["nFeatureNodes"] == 50 < answer["nActiveFeatures"]
    # the same computation through the library
    tok = debugger.tokenizer
    tokens, first_is_bos = graph_prompt(tok, PROMPT)
    assert tokens[0] == tok.eos_token_id and first_is_bos  # <|endoftext|> first, as circuit-tracer's BOS
    mary, john = tok.encode(" Mary")[0], tok.encode(" John")[0]
    graph = attribute(debugger.model, transcoders, tokens, LogitDifference((mary,), (john,)), max_feature_nodes=50, batch_size=32)
    doc = to_graph_file(graph, graph.prune(), tok.decode_tokens(tokens), prompt=PROMPT, slug="graph", scan="random-gpt2")
    expected = doc.to_json()
    assert [n["node_id"] for n in answer["graph"]["nodes"]] == [n["node_id"] for n in expected["nodes"]]
    got_links, expected_links = answer["graph"]["links"], expected["links"]
    assert [(e["source"], e["target"]) for e in got_links] == [(e["source"], e["target"]) for e in expected_links]
    assert [e["weight"] for e in got_links] == pytest.approx([e["weight"] for e in expected_links], rel=1e-5, abs=1e-6)
    assert answer["graph"]["metadata"]["prompt_tokens"][0] == "<|endoftext|>"
    logit = [n for n in answer["graph"]["nodes"] if n["feature_type"] == "logit"]
    assert len(logit) == 1 and logit[0]["clerp"] == "Output ' Mary' − ' John'"


def test_top_logits_and_single_logits(served: Any) -> None:
    client, _, _ = served
    r = client.post("/attribution_graph", json={"prompt": PROMPT, "maxNLogits": 3, "maxFeatureNodes": 20, "slug": "top-3"})
    assert r.status_code == 200, r.text
    graph = r.json()["graph"]
    assert graph["metadata"]["slug"] == "top-3"
    logits = [n for n in graph["nodes"] if n["feature_type"] == "logit"]
    assert 1 <= len(logits) <= 3 and logits[0]["is_target_logit"]
    r = client.post("/attribution_graph", json={"prompt": PROMPT, "targetTokens": [" Mary", " John"], "maxFeatureNodes": 20})
    assert r.status_code == 200, r.text
    assert [n["token"] for n in r.json()["graph"]["nodes"] if n["feature_type"] == "logit"] == [" Mary", " John"]


@pytest.mark.parametrize(
    ("body", "status", "field"),
    [
        ({"prompt": PROMPT, "targetTokens": [" Mary John"]}, 400, "targetTokens[0]"),
        ({"prompt": PROMPT, "targetTokens": [" Mary"], "distractorTokens": ["John and"]}, 400, "distractorTokens[0]"),
        ({"prompt": PROMPT, "distractorTokens": [" John"]}, 400, "distractorTokens"),
        ({"prompt": "word " * 80}, 400, "prompt"),
        ({"prompt": ""}, 422, "prompt"),
        ({"targetTokens": [" Mary"]}, 422, "prompt"),
        ({"prompt": PROMPT, "maxFeatureNodes": 10**9}, 422, "maxFeatureNodes"),
        ({"prompt": PROMPT, "batchSize": 0}, 422, "batchSize"),
        ({"prompt": PROMPT, "nodeThreshold": 1.5}, 422, "nodeThreshold"),
        ({"prompt": PROMPT, "desiredLogitProb": 0}, 422, "desiredLogitProb"),
        ({"prompt": PROMPT, "slug": "../etc"}, 422, "slug"),
        ({"prompt": PROMPT, "targetTokens": [" x"] * 65}, 422, "targetTokens"),
    ],
)
def test_bad_requests_name_the_field(served: Any, body: dict[str, Any], status: int, field: str) -> None:
    client, _, _ = served
    r = client.post("/attribution_graph", json=body)
    assert r.status_code == status, r.text
    assert r.json()["message"].startswith(field), r.json()["message"]


def test_without_transcoders_it_is_unavailable(served: Any) -> None:
    _, debugger, _ = served
    with TestClient(create_app(debugger)) as client:
        r = client.post("/attribution_graph", json={"prompt": PROMPT})
    assert r.status_code == 503 and "--transcoders" in r.json()["message"]


def test_a_graph_too_large_is_refused_before_the_work(served: Any) -> None:
    _, debugger, transcoders = served

    async def compute_response(fn: Any) -> Any:
        return _answer(lambda: fn(debugger))

    app = FastAPI()
    install_error_handlers(app, ORJSONResponse)
    app.include_router(make_graph_router(compute_response, transcoders, max_graph_bytes=10_000))
    with TestClient(app) as client:
        r = client.post("/attribution_graph", json={"prompt": PROMPT})
    assert r.status_code == 400 and r.json()["message"].startswith("maxFeatureNodes: this graph needs")


def test_server_transcoders_must_fit_the_model(tmp_path: Path) -> None:
    model = random_model("gpt2")
    folder = save_circuit_tracer_set(random_transcoders(model), tmp_path / "set")
    loaded = load_server_transcoders(str(folder), model)
    assert loaded is not None and len(loaded) == model.cfg.n_layers
    assert load_server_transcoders(None, model) is None
    short = save_circuit_tracer_set(random_transcoders(model)[:1], tmp_path / "short")
    with pytest.raises(ValueError, match="one transcoder per layer"):
        load_server_transcoders(str(short), model)


def test_command_line(tmp_path: Path) -> None:
    folder, _ = save_random("gpt2", tmp_path / "model", seed=3)
    model = load_model(folder).requires_grad_(False)
    transcoder_dir = save_circuit_tracer_set(random_transcoders(model, seed=12), tmp_path / "set")
    out = tmp_path / "graph.json"
    cmd = [
        sys.executable, "-m", "neuron_explainer.graph", "--model", str(folder), "--transcoders", str(transcoder_dir),
        "--prompt", PROMPT, "--target", " Mary", "--distractor", " John", "--out", str(out), "--max-feature-nodes", "40",
        "--batch-size", "16", "--device", "cpu",
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "attribution (nodes)" in done.stderr and "100%" in done.stderr  # the progress bar
    assert f"{out}: " in done.stdout
    doc = read_graph_file(out)
    jsonschema.validate(doc.to_json(), graph_schema())
    # what the library computes in this process
    tok = tokenizer_of(model)
    tokens, _ = graph_prompt(tok, PROMPT)
    transcoders = list(load_transcoder_set(transcoder_dir, conventions=conventions_for(model)))
    graph = attribute(model, transcoders, tokens, LogitDifference((tok.encode(" Mary")[0],), (tok.encode(" John")[0],)),
                      max_feature_nodes=40, batch_size=16)
    expected = to_graph_file(graph, graph.prune(), tok.decode_tokens(tokens), prompt=PROMPT, slug="graph", scan=str(folder))
    assert [n.node_id for n in doc.nodes] == [n.node_id for n in expected.nodes]
    assert [(link.source, link.target) for link in doc.links] == [(link.source, link.target) for link in expected.links]
    assert [link.weight for link in doc.links] == pytest.approx([link.weight for link in expected.links], rel=1e-5, abs=1e-6)

    bad = subprocess.run([*cmd[:-4], "--target", " Mary John"], capture_output=True, text=True, timeout=300)
    assert bad.returncode == 2 and bad.stderr.strip().splitlines()[-1].startswith("error: ' Mary John' is 2 tokens")
