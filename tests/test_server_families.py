"""The server on a model folder of each family, started as the CLI starts it (`--model-path`):
/model_info names the family and its shapes, and the TDB page's requests (initial load, an
ablation, a Q trace, a node page's scalars) answer with the same wire format as on GPT-2."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from fastapi.testclient import TestClient

from neuron_explainer.activation_server import schemas as S
from neuron_explainer.activation_server.main import build_debugger, create_app, parse_args
from neuron_explainer.models.random_models import FAMILIES, save_random

pytest.importorskip("transformers")
PROMPT = "When Mary and John went to the store, John gave a drink to"


@pytest.fixture(scope="module", params=[f for f in FAMILIES if f != "gpt2"])
def served(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> tuple[str, TestClient, Any]:
    torch.set_num_threads(1)
    folder, hf = save_random(request.param, tmp_path_factory.mktemp(request.param))
    debugger = build_debugger(parse_args(["--model-path", str(folder), "--device", "cpu"]))
    client = TestClient(create_app(debugger))
    client.ids = [debugger.single_token(t, "t") for t in (" Mary", " John")]  # type: ignore[attr-defined]
    return request.param, client, hf


def _spec(**overrides: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "prompt": PROMPT, "targetTokens": [" Mary"], "distractorTokens": [" John"],
        "componentTypeForMlp": "neuron", "componentTypeForAttention": "attention_head",
        "topAndBottomKForNodeTable": 10, "hideEarlyLayersWhenAblating": True, "nodeAblations": [],
    }
    return spec | overrides


def _post(client: TestClient, path: str, body: Any = None) -> Any:
    r = client.post(path, json=body) if body is not None else client.post(path)
    assert r.status_code == 200, r.text[:1000]
    return r.json()


def test_model_info_names_the_family(served: tuple[str, TestClient, Any]) -> None:
    family, client, hf = served
    info = _post(client, "/model_info")
    config = hf.config
    assert info["family"] == family.removesuffix("_sequential").removesuffix("_tied")
    assert info["nLayers"] == config.num_hidden_layers
    assert info["nHeads"] == config.num_attention_heads
    assert info["nKvHeads"] == getattr(config, "num_key_value_heads", config.num_attention_heads)
    assert info["dMlp"] == config.intermediate_size


def test_tdb_requests_answer_on_every_family(served: tuple[str, TestClient, Any]) -> None:
    _, client, hf = served
    initial = _post(client, "/batched_tdb", {"subRequests": [_spec()]})
    S.BatchedResponse.model_validate(initial)
    sub = initial["inferenceSubResponses"][0]
    loss = sub["inferenceResponse"]["inferenceAndTokenData"]["loss"]
    tokens = sub["inferenceResponse"]["inferenceAndTokenData"]["tokensAsInts"]
    # the loss is transformers' logit difference on the same tokens (its BOS convention included)
    with torch.no_grad():
        logits = hf(torch.tensor([tokens])).logits[0, -1]
    target, distractor = client.ids  # type: ignore[attr-defined]
    assert loss == pytest.approx(float(logits[target] - logits[distractor]), abs=1e-4)

    nodes = sub["processingResponseDataByName"]["topKComponents"]["nodeIndices"]
    head = next(n for n in nodes if n["nodeType"] == "attention_head")
    ablated = _post(client, "/batched_tdb", {"subRequests": [_spec(nodeAblations=[{"nodeIndex": head, "value": 0}]), _spec()]})
    S.BatchedResponse.model_validate(ablated)
    traced = _post(client, "/batched_tdb", {"subRequests": [_spec(upstreamNodeToTrace={"nodeIndex": head, "attentionTraceType": "Q"})]})
    S.BatchedResponse.model_validate(traced)
