"""The calls the original web client makes where it failed against us (issue 12), with the
bodies as it sends them, against the server as `python -m neuron_explainer.activation_server`
starts it on the demo (its autoencoders and records):

1. tracing: `activationValueForBackwardPass` is the traced node's value (it showed "NaN");
2. an MLP latent's node page: its input tokens (`topTokens` was null, then a 500 for the
   generic `online_autoencoder_latent` location);
3. an attention latent's `autoencoder_latent_by_token_pair` page: its records, explanations and
   activations on a prompt (404, 404, 400).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import pytest
import torch
from fastapi.testclient import TestClient

from neuron_explainer import demo
from neuron_explainer.activation_server.main import (
    apply_demo_defaults,
    build_debugger,
    build_registry,
    create_app,
    parse_args,
)

PROMPT = "<|endoftext|>When Mary and John went to the store, John gave a drink to"
# the client's dataset names: `<model>_<the autoencoder whose name says what it reads>`
MLP_DATASET = f"{demo.NAME}_{demo.MLP_AUTOENCODER_NAME}"
ATTN_DATASET = f"{demo.NAME}_{demo.ATTN_AUTOENCODER_NAME}"


@pytest.fixture(scope="module")
def client() -> Iterator[TestClient]:
    torch.set_num_threads(1)
    args = parse_args([])
    apply_demo_defaults(args)
    with TestClient(create_app(build_debugger(args), build_registry(args))) as c:
        yield c


def _ok(client: TestClient, path: str, body: Any) -> Any:
    r = client.post(path, json=body)
    assert r.status_code == 200, (path, r.status_code, r.text[:300])
    return r.json()


def _tdb(client: TestClient, mlp: str = "neuron", attn: str = "attention_head", **more: Any) -> Any:
    body = {"subRequests": [{
        "prompt": PROMPT, "targetTokens": [" Mary"], "distractorTokens": [" John"], "componentTypeForMlp": mlp,
        "componentTypeForAttention": attn, "topAndBottomKForNodeTable": 10, "hideEarlyLayersWhenAblating": True,
        "nodeAblations": [], **more,
    }]}
    return _ok(client, "/batched_tdb", body)["inferenceSubResponses"][0]


def _first(response: Any, node_type: str) -> Any:
    table = response["processingResponseDataByName"]["topKComponents"]
    return next(n for n in table["nodeIndices"] if n["nodeType"] == node_type)


@pytest.mark.parametrize("node_type,mlp,attn,through", [
    ("mlp_neuron", "neuron", "attention_head", None),
    ("attention_head", "neuron", "attention_head", "Q"),
    ("attention_head", "neuron", "attention_head", "K"),
    ("attention_head", "neuron", "attention_head", "QK"),
    ("attention_head", "neuron", "attention_head", "V"),
    ("mlp_autoencoder_latent", "autoencoder_latent", "autoencoder_latent", None),
    ("attention_autoencoder_latent", "autoencoder_latent", "autoencoder_latent", None),
])
def test_a_traced_node_has_its_value(client: TestClient, node_type: str, mlp: str, attn: str, through: str | None) -> None:
    plain = _tdb(client, mlp, attn)
    node = _first(plain, node_type)
    trace: dict[str, Any] = {"nodeIndex": node}
    if through:
        trace["attentionTraceType"] = through
    traced = _tdb(client, mlp, attn, upstreamNodeToTrace=trace)
    data = traced["inferenceResponse"]["inferenceAndTokenData"]
    value = data["activationValueForBackwardPass"]
    assert isinstance(value, float) and math.isfinite(value)
    assert plain["inferenceResponse"]["inferenceAndTokenData"]["activationValueForBackwardPass"] is None
    # the seed's: the loss is kept only through V onto the logit difference
    assert (data["loss"] is not None) == (through == "V")
    if node_type == "mlp_neuron":  # a GELU neuron's traced value is its pre-activation
        pre = _ok(client, "/derived_scalars", {"inferenceRequestSpec": {"prompt": PROMPT}, "derivedScalarsRequestSpec": {
            "dst": "mlp_pre_act", "layerIndex": node["layerIndex"], "activationIndex": node["tensorIndices"][1]}})
        assert value == pytest.approx(pre["derivedScalarsResponseData"]["activations"][node["tensorIndices"][0]], rel=1e-4, abs=1e-5)


def _node_page(location: str, layer: int, index: int, dst: str) -> Any:
    def ablation(pass_type: str) -> Any:
        return {"index": {"activationLocationType": location, "tensorIndices": [0, index], "layerIndex": layer, "passType": pass_type}, "value": 1.0}

    return {"inferenceSubRequests": [
        {"inferenceRequestSpec": {"prompt": "a", "ablationSpecs": [ablation("backward")], "lossFnConfig": {"name": "zero"}},
         "processingRequestSpecByName": {"singleton": {"dst": "vocab_token_write_to_input_direction", "activationIndex": 0, "numTopTokens": 100}}},
        {"inferenceRequestSpec": {"prompt": "a", "ablationSpecs": [ablation("forward")]},
         "processingRequestSpecByName": {"singleton": {"dst": dst, "layerIndex": layer, "activationIndex": index, "numTopTokens": 100}}},
    ]}


@pytest.mark.parametrize("location,dst", [
    ("online_autoencoder_latent", "online_mlp_autoencoder_latent"),  # what the original client sends
    ("online_mlp_autoencoder_latent", "online_mlp_autoencoder_latent"),
    ("mlp.post_act", "mlp_post_act"),
])
def test_the_node_page_shows_input_tokens(client: TestClient, location: str, dst: str) -> None:
    for layer, index in ((0, 3), (2, 100), (3, 767)):
        subs = _ok(client, "/batched", _node_page(location, layer, index, dst))["inferenceSubResponses"]
        tokens = [s["processingResponseDataByName"]["singleton"]["topTokens"] for s in subs]
        assert all(t is not None and len(t["top"]) == 100 and len(t["bottom"]) == 100 for t in tokens), (layer, index)


def test_the_token_pair_page_loads(client: TestClient) -> None:
    layer, latent = 2, 17
    dst = "flattened_attn_write_to_latent_summed_over_heads"
    record = _ok(client, "/attention_head_record", {"dst": dst, "layerIndex": layer, "activationIndex": latent, "datasets": [ATTN_DATASET]})
    assert record["mostPositiveTokenSequences"], "the demo has records of attention latents by token pair"
    sequence = record["mostPositiveTokenSequences"][0]
    assert all(len(t["scalars"]) == i + 1 for i, t in enumerate(sequence))  # one value per key up to the query
    explanations = _ok(client, "/existing_explanations", {"dst": dst, "layerIndex": layer, "activationIndex": latent,
                                                           "explanationDatasets": [], "neuronDataset": ATTN_DATASET})
    assert isinstance(explanations, list)
    body = {
        "inferenceRequestSpec": {"prompt": PROMPT, "activationIndexForWithinLayerGrad": {
            "layerIndex": layer, "activationLocationType": "online_autoencoder_latent", "tensorIndices": ["All", latent], "passType": "forward"}},
        "derivedAttentionScalarsRequestSpec": {"dst": "attn_write_to_latent_summed_over_heads", "layerIndex": layer, "activationIndex": latent},
    }
    pairs = _ok(client, "/derived_attention_scalars", body)["derivedAttentionScalarsResponseData"]["tokenAndAttentionScalarsList"]
    assert len(pairs) == len(_ok(client, "/derived_scalars", {"inferenceRequestSpec": {"prompt": PROMPT}, "derivedScalarsRequestSpec": {
        "dst": "online_attention_autoencoder_latent", "layerIndex": layer, "activationIndex": latent}})["inferenceAndTokenData"]["tokensAsStrings"])
    # without the latent to project on, a 400 says what is missing
    del body["inferenceRequestSpec"]["activationIndexForWithinLayerGrad"]
    r = client.post("/derived_attention_scalars", json=body)
    assert r.status_code == 400 and "activationIndexForWithinLayerGrad" in r.json()["message"]
