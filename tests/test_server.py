"""Tests for the activation server (`neuron_explainer.activation_server.main`) over HTTP.

The request bodies below are shaped exactly as the original TDB web client sends them (see
/work/shared/reference/original-client-calls.md); every response body is validated with the
response models of `schemas`, and the key names the client reads are checked on the raw JSON.
A tiny random 2-layer model (fixtures in conftest.py) keeps every request well under a second.

Covered: the debugger page's calls (load, ablate a neuron / head / latent, trace upstream through
Q, K, QK, V and from a neuron, a second prompt), the node page's calls (logit lens /batched,
/derived_scalars, /derived_attention_scalars) and /multiple_top_k_derived_scalars; operation ids;
CORS (preflights, errors); bad input (4xx JSON with a `message` naming the field) and no-model
mode; and a real uvicorn server answering concurrent requests without blocking /model_info.
"""

from __future__ import annotations

import concurrent.futures
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
import uvicorn
from fastapi.testclient import TestClient
from pydantic import TypeAdapter

from neuron_explainer.activation_server import schemas as S
from neuron_explainer.activation_server.main import create_app

PROMPT = "<|endoftext|>Paris, France. Ottawa,"  # 7 tokens
SAME_LENGTH_PROMPT = "<|endoftext|>London, England. Madrid,"  # also 7 tokens
N_TOKENS = 7
ORIGIN = "http://localhost:1234"

TDB_KEYS = (
    "topKComponents",
    "componentSumsForTokenDisplay",
    "componentSumsForLayerDisplay",
    "upvotedOutputTokens",
    "inputTokensThatUpvoteMlp",
    "inputTokensThatUpvoteAttnQ",
    "inputTokensThatUpvoteAttnK",
    "tokenPairAttribution",
    "topOutputTokenLogits",
)
TDB_DATA_TYPES = {
    "topKComponents": "multiple_top_k_derived_scalars_response_data",
    "componentSumsForTokenDisplay": "multiple_top_k_derived_scalars_response_data",
    "componentSumsForLayerDisplay": "multiple_top_k_derived_scalars_response_data",
    "topOutputTokenLogits": "multiple_top_k_derived_scalars_response_data",
    "upvotedOutputTokens": "scored_tokens_response_data",
    "inputTokensThatUpvoteMlp": "scored_tokens_response_data",
    "inputTokensThatUpvoteAttnQ": "scored_tokens_response_data",
    "inputTokensThatUpvoteAttnK": "scored_tokens_response_data",
    "tokenPairAttribution": "token_pair_attribution_response_data",
}
# The top-k steps the client reads that are unioned by name across sub-requests.
NODE_LIST_KEYS = tuple(k for k in TDB_KEYS if k != "topOutputTokenLogits")


# ------------------------------------------------------------------ helpers


def tdb_spec(prompt: str = PROMPT, **overrides: Any) -> dict[str, Any]:
    """One /batched_tdb sub-request exactly as the client's initial load sends it."""
    spec: dict[str, Any] = {
        "prompt": prompt,
        "targetTokens": [" Canada"],
        "distractorTokens": [" Germany"],
        "componentTypeForMlp": "neuron",
        "componentTypeForAttention": "attention_head",
        "topAndBottomKForNodeTable": 10,
        "hideEarlyLayersWhenAblating": True,
        "nodeAblations": [],
    }
    spec.update(overrides)
    return spec


def node_index(
    node_type: str, tensor_indices: list[int | None], layer: int | None
) -> dict[str, Any]:
    """A node index in the key order the client sends."""
    return {
        "nodeType": node_type,
        "tensorIndices": tensor_indices,
        "layerIndex": layer,
        "passType": "forward",
    }


def ablation(node: dict[str, Any]) -> dict[str, Any]:
    return {
        "nodeIndex": node_index(node["nodeType"], node["tensorIndices"], node["layerIndex"]),
        "value": 0,
    }


def post_ok(client: Any, path: str, body: Any, model: Any) -> Any:
    """POST like the client (JSON body or none), expect 200, validate with `model`; raw JSON."""
    headers = {"Accept": "application/json", "Origin": ORIGIN}
    r = (
        client.post(path, json=body, headers=headers)
        if body is not None
        else client.post(path, headers=headers)
    )
    assert r.status_code == 200, (path, r.status_code, r.text[:2000])
    assert r.headers["access-control-allow-origin"] == ORIGIN
    data = r.json()
    if model is not None:  # a pydantic model or e.g. list[...] of one
        TypeAdapter(model).validate_python(data)
    return data


def check_multiple_top_k(data: dict[str, Any]) -> None:
    assert data["responseDataType"] == "multiple_top_k_derived_scalars_response_data"
    n = len(data["nodeIndices"])
    assert n > 0
    for group, values in data["activationsByGroupId"].items():
        assert group in {g.value for g in S.GroupId}
        assert len(values) == n
    for by_dst in data["intermediateSumActivationsByDstByGroupId"].values():
        for tensor in by_dst.values():
            assert tensor["tensorType"] in {t.value for t in S.TensorType}
            depth, inner = 0, tensor["value"]
            while isinstance(inner, list):
                depth, inner = depth + 1, inner[0] if inner else None
            assert tensor["tensorType"] == f"tensor_{depth}d"


def check_tdb_response(
    data: dict[str, Any], n_subs: int, n_tokens: int = N_TOKENS
) -> list[dict[str, Any]]:
    """What the TDB page reads from a /batched_tdb answer; returns the sub-responses."""
    S.BatchedResponse.model_validate(data)
    subs = data["inferenceSubResponses"]
    assert len(subs) == n_subs
    for sub in subs:
        info = sub["inferenceResponse"]["inferenceAndTokenData"]
        assert len(info["tokensAsStrings"]) == len(info["tokensAsInts"]) == n_tokens
        assert all(isinstance(t, str) for t in info["tokensAsStrings"])
        by_name = sub["processingResponseDataByName"]
        assert set(TDB_KEYS) <= set(by_name)
        for key, data_type in TDB_DATA_TYPES.items():
            assert by_name[key]["responseDataType"] == data_type, key
        for key in ("topKComponents", "componentSumsForTokenDisplay", "topOutputTokenLogits"):
            check_multiple_top_k(by_name[key])
        logits = by_name["topOutputTokenLogits"]
        assert all(n["nodeType"] == "vocab_token" for n in logits["nodeIndices"])
        assert logits["vocabTokenStringsForIndices"] is not None
        assert len(logits["vocabTokenStringsForIndices"]) == len(logits["nodeIndices"])
        nodes = by_name["topKComponents"]["nodeIndices"]
        for key in (
            "upvotedOutputTokens",
            "inputTokensThatUpvoteMlp",
            "inputTokensThatUpvoteAttnQ",
            "inputTokensThatUpvoteAttnK",
        ):
            scored = by_name[key]
            assert scored["nodeIndices"] == nodes, key
            assert len(scored["topTokensList"]) == len(nodes)
            # which nodes must get tokens: every node writes; MLP and Q/K scores need a reader
            applies = {
                "upvotedOutputTokens": lambda n: (
                    n["nodeType"] != "layer" or n["tensorIndices"][0] is not None
                ),
                "inputTokensThatUpvoteMlp": lambda n: n["nodeType"] == "mlp_neuron",
                "inputTokensThatUpvoteAttnQ": lambda n: n["nodeType"] == "attention_head",
                "inputTokensThatUpvoteAttnK": lambda n: n["nodeType"] == "attention_head",
            }[key]
            for n, t in zip(nodes, scored["topTokensList"], strict=True):
                if applies(n):
                    assert t is not None, (key, n)
            for top in scored["topTokensList"]:
                if top is not None:
                    assert {"top", "bottom"} <= set(top)
                    assert {"token", "scalar", "normalizedScalar"} <= set(top["top"][0])
        pair = by_name["tokenPairAttribution"]
        assert pair["nodeIndices"] == nodes
        assert len(pair["topTokensAttendedToList"]) == len(nodes)
    return subs


def first_sub(data: dict[str, Any]) -> dict[str, Any]:
    return data["inferenceSubResponses"][0]["processingResponseDataByName"]


def first_sub_response(data: dict[str, Any]) -> dict[str, Any]:
    return data["inferenceSubResponses"][0]


def loss_of(sub: dict[str, Any]) -> float | None:
    return sub["inferenceResponse"]["inferenceAndTokenData"]["loss"]


def strongest(
    by_name: dict[str, Any],
    node_type: str,
    group: str = "act_times_grad",
    where: Callable[[dict[str, Any]], bool] = lambda n: True,
) -> dict[str, Any]:
    """The node of `node_type` in topKComponents with the largest |value| in `group`."""
    top = by_name["topKComponents"]
    candidates = [
        (abs(v), n)
        for n, v in zip(top["nodeIndices"], top["activationsByGroupId"][group], strict=True)
        if n["nodeType"] == node_type and where(n)
    ]
    assert candidates, f"no {node_type} node in topKComponents"
    return max(candidates, key=lambda c: c[0])[1]


def node_key(n: dict[str, Any]) -> tuple[Any, ...]:
    return (n["nodeType"], tuple(n["tensorIndices"]), n["layerIndex"])


def grads_by_node(by_name: dict[str, Any]) -> dict[tuple[Any, ...], float]:
    top = by_name["topKComponents"]
    return {
        node_key(n): v
        for n, v in zip(
            top["nodeIndices"], top["activationsByGroupId"]["act_times_grad"], strict=True
        )
    }


def assert_error(r: Any, status: int | tuple[int, ...], *names: str) -> str:
    statuses = (status,) if isinstance(status, int) else status
    assert r.status_code in statuses, (r.status_code, r.text)
    assert r.headers["content-type"].startswith("application/json")
    body = r.json()
    assert isinstance(body, dict) and isinstance(body.get("message"), str) and body["message"], body
    for name in names:
        assert name in body["message"], (name, body["message"])
    return body["message"]


# ----------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def client(debugger_plain: Any) -> Iterator[TestClient]:
    with TestClient(create_app(debugger_plain)) as c:
        yield c


@pytest.fixture(scope="module")
def ae_client(debugger_with_autoencoders: Any) -> Iterator[TestClient]:
    with TestClient(create_app(debugger_with_autoencoders)) as c:
        yield c


@pytest.fixture(scope="module")
def no_model_client() -> Iterator[TestClient]:
    with TestClient(create_app(None)) as c:
        yield c


@pytest.fixture(scope="module")
def initial(client: TestClient) -> dict[str, Any]:
    """The TDB page's initial load."""
    return post_ok(client, "/batched_tdb", {"subRequests": [tdb_spec()]}, S.BatchedResponse)


# ------------------------------------------------------------ debugger page


def test_model_info(client: TestClient, ae_client: TestClient) -> None:
    info = post_ok(client, "/model_info", None, S.ModelInfoResponse)
    assert info == {
        "modelName": "tiny-2l",
        "hasMlpAutoencoder": False,
        "mlpAutoencoderName": None,
        "hasAttentionAutoencoder": False,
        "attentionAutoencoderName": None,
        "nLayers": 2,
        # ours: the family and the shapes (the tiny model has d_model 64 and 4 heads)
        "family": "gpt2",
        "dModel": 64,
        "nHeads": 4,
        "nKvHeads": 4,
        "dHead": 16,
        "dMlp": 256,
        "nVocab": 50257,
        "ctxWindow": 64,
        "nMlpAutoencoderLatents": None,
        "nAttentionAutoencoderLatents": None,
        "nResidualAutoencoderLatents": None,
        "nTranscoderLatents": None,
        "residualAutoencoderLayers": None,
        "transcoderLayers": None,
    }
    info = post_ok(ae_client, "/model_info", None, S.ModelInfoResponse)
    assert info["hasMlpAutoencoder"] and info["hasAttentionAutoencoder"]
    assert (info["mlpAutoencoderName"], info["attentionAutoencoderName"]) == (
        "tiny-ae-mlp",
        "tiny-ae-attn",
    )


def test_initial_load(initial: dict[str, Any]) -> None:
    (sub,) = check_tdb_response(initial, 1)
    info = sub["inferenceResponse"]["inferenceAndTokenData"]
    assert info["tokensAsStrings"] == [
        "<|endoftext|>",
        "Paris",
        ",",
        " France",
        ".",
        " Ottawa",
        ",",
    ]
    assert isinstance(info["loss"], float)  # the logit difference " Canada" - " Germany"
    by_name = sub["processingResponseDataByName"]
    node_types = {n["nodeType"] for n in by_name["topKComponents"]["nodeIndices"]}
    assert {"mlp_neuron", "attention_head"} <= node_types
    for n in by_name["topKComponents"]["nodeIndices"]:
        if n["nodeType"] == "attention_head":
            q, k, _ = n["tensorIndices"]
            assert 0 <= k <= q < N_TOKENS
    # the top output logits are for the last token (-1, as the original server sends it)
    assert len(by_name["topOutputTokenLogits"]["nodeIndices"]) == 100
    assert {
        n["tensorIndices"][0] % N_TOKENS for n in by_name["topOutputTokenLogits"]["nodeIndices"]
    } == {N_TOKENS - 1}
    # token display: per-token sums keep the token dimension
    sums = by_name["componentSumsForTokenDisplay"]["intermediateSumActivationsByDstByGroupId"]
    tensor = sums["act_times_grad"]["mlp_act_times_grad"]
    assert tensor["tensorType"] == "tensor_1d" and len(tensor["value"]) == N_TOKENS


@pytest.mark.parametrize("node_type", ["mlp_neuron", "attention_head"])
def test_ablate_node(client: TestClient, initial: dict[str, Any], node_type: str) -> None:
    # a node with a nonzero direct effect on the logit difference
    node = strongest(first_sub(initial), node_type)
    value = grads_by_node(first_sub(initial))[node_key(node)]
    assert value != 0
    ablated = tdb_spec(nodeAblations=[ablation(node)])
    data = post_ok(
        client,
        "/batched_tdb",
        {"subRequests": [ablated, tdb_spec(nodeAblations=[])]},
        S.BatchedResponse,
    )
    sub_ablated, sub_plain = check_tdb_response(data, 2)
    assert loss_of(sub_plain) == pytest.approx(loss_of(first_sub_response(initial)), abs=1e-5)
    assert abs(loss_of(sub_ablated) - loss_of(sub_plain)) > 1e-6  # type: ignore[operator]
    # both views list the same nodes (unioned by step name), in the same order
    for key in NODE_LIST_KEYS:
        a = sub_ablated["processingResponseDataByName"][key]["nodeIndices"]
        b = sub_plain["processingResponseDataByName"][key]["nodeIndices"]
        assert a == b, key
    # the ablated node's activation reads zero in the ablated view only
    top_a = sub_ablated["processingResponseDataByName"]["topKComponents"]
    top_p = sub_plain["processingResponseDataByName"]["topKComponents"]
    keys = [node_key(n) for n in top_a["nodeIndices"]]
    if node_key(node) in keys:
        i = keys.index(node_key(node))
        assert top_a["activationsByGroupId"]["activation"][i] == 0
        assert top_p["activationsByGroupId"]["activation"][i] != 0


def _late_head(initial: dict[str, Any]) -> dict[str, Any]:
    """An attention head of the last layer at a token pair with key before query."""
    return strongest(
        first_sub(initial),
        "attention_head",
        where=lambda n: n["layerIndex"] == 1 and n["tensorIndices"][1] < n["tensorIndices"][0],
    )


@pytest.mark.parametrize("trace_type", ["V", "Q", "K", "QK"])
def test_trace_attention_head_upstream(
    client: TestClient, initial: dict[str, Any], trace_type: str
) -> None:
    head = _late_head(initial)
    q, k, _ = head["tensorIndices"]
    trace = {
        "nodeIndex": node_index("attention_head", head["tensorIndices"], 1),
        "attentionTraceType": trace_type,
    }
    data = post_ok(
        client,
        "/batched_tdb",
        {"subRequests": [tdb_spec(upstreamNodeToTrace=trace)]},
        S.BatchedResponse,
    )
    (sub,) = check_tdb_response(data, 1)
    by_name = sub["processingResponseDataByName"]
    # the output logits are read at the traced query token
    assert {n["tensorIndices"][0] for n in by_name["topOutputTokenLogits"]["nodeIndices"]} == {q}
    # Upstream MLP neurons (layer 0) only affect the traced quantity through their token's
    # residual stream: Q reads the query token, K and V the key token, QK both.
    tokens = {"Q": {q}, "K": {k}, "V": {k}, "QK": {q, k}}[trace_type]
    grads = grads_by_node(by_name)
    live = {key[1][0] for key, v in grads.items() if key[0] == "mlp_neuron" and v != 0}
    assert live, "no upstream neuron has a nonzero gradient"
    assert live <= tokens, (trace_type, live, tokens)
    # nothing downstream of the traced head (its own layer's MLP) matters
    assert all(v == 0 for key, v in grads.items() if key[0] == "mlp_neuron" and key[2] == 1)


def test_trace_mlp_neuron_upstream(client: TestClient, initial: dict[str, Any]) -> None:
    neuron = strongest(first_sub(initial), "mlp_neuron", where=lambda n: n["layerIndex"] == 1)
    t = neuron["tensorIndices"][0]
    trace = {"nodeIndex": node_index("mlp_neuron", neuron["tensorIndices"], 1)}
    data = post_ok(
        client,
        "/batched_tdb",
        {"subRequests": [tdb_spec(upstreamNodeToTrace=trace)]},
        S.BatchedResponse,
    )
    (sub,) = check_tdb_response(data, 1)
    by_name = sub["processingResponseDataByName"]
    assert {n["tensorIndices"][0] for n in by_name["topOutputTokenLogits"]["nodeIndices"]} == {t}
    grads = grads_by_node(by_name)
    # later tokens and the traced neuron's own layer cannot affect its pre-activation
    assert all(v == 0 for key, v in grads.items() if key[1][0] > t)
    assert all(v == 0 for key, v in grads.items() if key[0] == "mlp_neuron" and key[2] == 1)
    assert any(v != 0 for key, v in grads.items() if key[0] == "mlp_neuron" and key[2] == 0)


def test_second_prompt_reuses_ablations_and_trace(
    client: TestClient, initial: dict[str, Any]
) -> None:
    neuron = strongest(first_sub(initial), "mlp_neuron", where=lambda n: n["layerIndex"] == 0)
    head = _late_head(initial)
    extras: dict[str, Any] = {
        "nodeAblations": [ablation(neuron)],
        "upstreamNodeToTrace": {
            "nodeIndex": node_index("attention_head", head["tensorIndices"], 1),
            "attentionTraceType": "V",
        },
    }
    body = {"subRequests": [tdb_spec(**extras), tdb_spec(SAME_LENGTH_PROMPT, **extras)]}
    data = post_ok(client, "/batched_tdb", body, S.BatchedResponse)
    first, second = check_tdb_response(data, 2)
    assert second["inferenceResponse"]["inferenceAndTokenData"]["tokensAsStrings"][1:4] == [
        "London",
        ",",
        " England",
    ]
    for key in NODE_LIST_KEYS:
        assert (
            first["processingResponseDataByName"][key]["nodeIndices"]
            == second["processingResponseDataByName"][key]["nodeIndices"]
        )


# ---------------------------------------------------------------- node page


def test_logit_lens_batched(client: TestClient) -> None:
    index = {"activationLocationType": "mlp.post_act", "tensorIndices": [0, 131], "layerIndex": 1}
    body = {
        "inferenceSubRequests": [
            {
                "inferenceRequestSpec": {
                    "prompt": "a",
                    "ablationSpecs": [{"index": {**index, "passType": "backward"}, "value": 1.0}],
                    "lossFnConfig": {"name": "zero"},
                },
                "processingRequestSpecByName": {
                    "singleton": {
                        "dst": "vocab_token_write_to_input_direction",
                        "activationIndex": 0,
                        "numTopTokens": 100,
                    }
                },
            },
            {
                "inferenceRequestSpec": {
                    "prompt": "a",
                    "ablationSpecs": [{"index": {**index, "passType": "forward"}, "value": 1.0}],
                },
                "processingRequestSpecByName": {
                    "singleton": {
                        "dst": "mlp_post_act",
                        "layerIndex": 1,
                        "activationIndex": 131,
                        "numTopTokens": 100,
                    }
                },
            },
        ]
    }
    data = post_ok(client, "/batched", body, S.BatchedResponse)
    subs = data["inferenceSubResponses"]
    assert len(subs) == 2
    for sub in subs:
        assert sub["inferenceResponse"]["inferenceAndTokenData"]["tokensAsStrings"] == ["a"]
        single = sub["processingResponseDataByName"]["singleton"]
        assert single["responseDataType"] == "derived_scalars_response_data"
        top = single["topTokens"]
        assert top is not None
        assert len(top["top"]) == len(top["bottom"]) == 100
        scalars = [t["scalar"] for t in top["top"]]
        assert scalars == sorted(scalars, reverse=True)
        assert {"token", "scalar", "normalizedScalar"} <= set(top["top"][0])
    # the forward ablation pins the neuron's activation to 1
    assert subs[1]["processingResponseDataByName"]["singleton"]["activations"] == [1.0]


def test_derived_scalars(client: TestClient) -> None:
    node = {"dst": "mlp_post_act", "layerIndex": 1, "activationIndex": 5}
    body = {
        "inferenceRequestSpec": {"prompt": PROMPT},
        "derivedScalarsRequestSpec": {
            **node,
            "normalizeActivationsUsingNeuronRecord": {**node, "datasets": ["tiny-2l"]},
        },
    }
    data = post_ok(client, "/derived_scalars", body, S.DerivedScalarsResponse)
    assert len(data["inferenceAndTokenData"]["tokensAsStrings"]) == N_TOKENS
    result = data["derivedScalarsResponseData"]
    assert result["responseDataType"] == "derived_scalars_response_data"
    assert len(result["activations"]) == len(result["nodeIndices"]) == N_TOKENS
    assert [n["tensorIndices"] for n in result["nodeIndices"]] == [[t, 5] for t in range(N_TOKENS)]
    assert {n["nodeType"] for n in result["nodeIndices"]} == {"mlp_neuron"}


def test_derived_attention_scalars(client: TestClient) -> None:
    node = {"dst": "unflattened_attn_write_norm", "layerIndex": 1, "activationIndex": 2}
    body = {
        "inferenceRequestSpec": {"prompt": PROMPT},
        "derivedAttentionScalarsRequestSpec": {
            **node,
            "normalizeActivationsUsingNeuronRecord": {**node, "datasets": ["tiny-2l"]},
        },
    }
    data = post_ok(client, "/derived_attention_scalars", body, S.DerivedAttentionScalarsResponse)
    result = data["derivedAttentionScalarsResponseData"]
    assert result["responseDataType"] == "derived_attention_scalars_response_data"
    rows = result["tokenAndAttentionScalarsList"]
    assert [r["token"] for r in rows] == data["inferenceAndTokenData"]["tokensAsStrings"]
    assert [len(r["scalars"]) for r in rows] == list(
        range(1, N_TOKENS + 1)
    )  # causal: keys <= query
    assert all(v >= 0 for r in rows for v in r["scalars"])  # norms


def test_multiple_top_k_derived_scalars(client: TestClient) -> None:
    body = {
        "inferenceRequestSpec": {
            "prompt": PROMPT,
            "lossFnConfig": {
                "name": "logit_diff",
                "targetTokens": [" Canada"],
                "distractorTokens": [" Germany"],
            },
        },
        "multipleTopKDerivedScalarsRequestSpec": {
            "dstListByGroupId": {
                "write_norm": ["mlp_write_norm", "unflattened_attn_write_norm"],
                "act_times_grad": ["mlp_act_times_grad", "unflattened_attn_act_times_grad"],
            },
            "topAndBottomK": 5,
        },
    }
    data = post_ok(
        client, "/multiple_top_k_derived_scalars", body, S.MultipleTopKDerivedScalarsResponse
    )
    result = data["multipleTopKDerivedScalarsResponseData"]
    check_multiple_top_k(result)
    assert set(result["activationsByGroupId"]) == {"write_norm", "act_times_grad"}
    # write_norm keeps only the top 5; act_times_grad the top and bottom 5
    assert 5 <= len(result["nodeIndices"]) <= 15
    assert isinstance(data["inferenceAndTokenData"]["loss"], float)


def test_batched_with_explicit_spec_type(client: TestClient) -> None:
    """Specs may carry specType (the client omits it); a derived attention scalars spec inside
    /batched needs it."""
    body: dict[str, Any] = {
        "inferenceSubRequests": [
            {
                "inferenceRequestSpec": {"prompt": PROMPT},
                "processingRequestSpecByName": {
                    "attn": {
                        "specType": "derived_attention_scalars_request_spec",
                        "dst": "attn_qk_probs",
                        "layerIndex": 0,
                        "activationIndex": 1,
                    },
                    "mlp": {
                        "specType": "derived_scalars_request_spec",
                        "dst": "mlp_post_act",
                        "layerIndex": 0,
                        "activationIndex": 1,
                    },
                },
            }
        ]
    }
    data = post_ok(client, "/batched", body, S.BatchedResponse)
    by_name = first_sub(data)
    assert by_name["attn"]["responseDataType"] == "derived_attention_scalars_response_data"
    assert by_name["mlp"]["responseDataType"] == "derived_scalars_response_data"
    rows = by_name["attn"]["tokenAndAttentionScalarsList"]
    assert all(sum(r["scalars"]) == pytest.approx(1, abs=1e-4) for r in rows)  # softmax rows
    body["inferenceSubRequests"][0]["processingRequestSpecByName"]["mlp"]["specType"] = (
        "banana_spec"
    )
    assert_error(
        client.post("/batched", json=body), 422, "processingRequestSpecByName.mlp", "banana_spec"
    )


# ------------------------------------------------------------- autoencoders


def test_autoencoder_latents(ae_client: TestClient) -> None:
    latents = {
        "componentTypeForMlp": "autoencoder_latent",
        "componentTypeForAttention": "autoencoder_latent",
    }
    data = post_ok(
        ae_client, "/batched_tdb", {"subRequests": [tdb_spec(**latents)]}, S.BatchedResponse
    )
    (sub,) = check_tdb_response(data, 1)
    by_name = sub["processingResponseDataByName"]
    nodes = by_name["topKComponents"]["nodeIndices"]
    types = {n["nodeType"] for n in nodes}
    assert {"mlp_autoencoder_latent", "attention_autoencoder_latent"} <= types
    assert not types & {"mlp_neuron", "attention_head"}
    # latents index (token, latent)
    for n in nodes:
        if n["nodeType"].endswith("autoencoder_latent"):
            assert len(n["tensorIndices"]) == 2 and 0 <= n["tensorIndices"][1] < 32
    # token pair attribution applies to attention latents only
    pairs = by_name["tokenPairAttribution"]["topTokensAttendedToList"]
    for n, p in zip(nodes, pairs, strict=True):
        if n["nodeType"] == "attention_autoencoder_latent":
            assert p is not None and len(p["tokenIndices"]) == len(p["attributions"]) >= 1
            # causal: only keys at or before the query token are listed, each once, the three
            # largest attributions first (or every key, when the query sees fewer)
            q = n["tensorIndices"][0]
            assert all(0 <= t <= q for t in p["tokenIndices"]), (q, p["tokenIndices"])
            assert len(set(p["tokenIndices"])) == len(p["tokenIndices"]) == min(3, q + 1)
            assert p["attributions"] == sorted(p["attributions"], reverse=True)
        else:
            assert p is None
    # MLP latents get input tokens through the MLP; attention latents don't
    mlp_inputs = by_name["inputTokensThatUpvoteMlp"]["topTokensList"]
    assert any(
        t is not None
        for n, t in zip(nodes, mlp_inputs, strict=True)
        if n["nodeType"] == "mlp_autoencoder_latent"
    )

    # ablate a latent with a nonzero effect, and trace one upstream
    for kind in ("mlp_autoencoder_latent", "attention_autoencoder_latent"):
        latent = strongest(by_name, kind)
        body = {
            "subRequests": [
                tdb_spec(**latents, nodeAblations=[ablation(latent)]),
                tdb_spec(**latents),
            ]
        }
        ablated, plain = check_tdb_response(
            post_ok(ae_client, "/batched_tdb", body, S.BatchedResponse), 2
        )
        assert abs(loss_of(ablated) - loss_of(plain)) > 1e-7, kind  # type: ignore[operator]
        assert (
            ablated["processingResponseDataByName"]["topKComponents"]["nodeIndices"]
            == plain["processingResponseDataByName"]["topKComponents"]["nodeIndices"]
        )
    latent = strongest(by_name, "mlp_autoencoder_latent", where=lambda n: n["layerIndex"] == 1)
    trace = {"nodeIndex": node_index("mlp_autoencoder_latent", latent["tensorIndices"], 1)}
    post_ok(
        ae_client,
        "/batched_tdb",
        {"subRequests": [tdb_spec(**latents, upstreamNodeToTrace=trace)]},
        S.BatchedResponse,
    )

    # mixed: neurons and heads on a server with autoencoders still work
    check_tdb_response(
        post_ok(ae_client, "/batched_tdb", {"subRequests": [tdb_spec()]}, S.BatchedResponse), 1
    )


# ---------------------------------------------------------------- OpenAPI


def test_openapi_operation_ids(client: TestClient) -> None:
    schema = client.get("/openapi.json").json()
    ids = {op["operationId"] for path in schema["paths"].values() for op in path.values()}
    expected = {
        "inference-batched_tdb",
        "inference-batched",
        "inference-derived_scalars",
        "inference-derived_attention_scalars",
        "inference-multiple_top_k_derived_scalars",
        "inference-model_info",
        "read-neuron_record",
        "read-attention_head_record",
        "read-neuron_datasets_metadata",
        "read-existing_explanations",
        "explainer-explain",
        "explainer-score",
        "hello_world-read_root",
    }
    assert expected <= ids, expected - ids
    assert schema["paths"]["/batched_tdb"]["post"]["operationId"] == "inference-batched_tdb"
    assert (
        "post" in schema["paths"]["/model_info"]
        and "requestBody" not in schema["paths"]["/model_info"]["post"]
    )


# -------------------------------------------------------------------- CORS


@pytest.mark.parametrize("origin", ["http://localhost:1234", "http://127.0.0.1:5173"])
def test_cors_preflight_allowed(client: TestClient, origin: str) -> None:
    r = client.options(
        "/batched_tdb",
        headers={
            "Origin": origin,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "content-type",
        },
    )
    assert r.status_code == 200
    assert r.headers["access-control-allow-origin"] == origin
    assert "POST" in r.headers["access-control-allow-methods"]
    assert "content-type" in r.headers["access-control-allow-headers"].lower()


def test_cors_other_origin_refused(client: TestClient) -> None:
    r = client.options(
        "/batched_tdb",
        headers={
            "Origin": "http://evil.example",
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "content-type",
        },
    )
    assert "access-control-allow-origin" not in r.headers
    r = client.post("/model_info", headers={"Origin": "http://evil.example"})
    assert "access-control-allow-origin" not in r.headers


def test_cors_on_errors(client: TestClient, no_model_client: TestClient) -> None:
    headers = {"Origin": ORIGIN}
    for r, status in (
        (
            client.post(
                "/batched_tdb", json={"subRequests": [tdb_spec(prompt="")]}, headers=headers
            ),
            400,
        ),
        (
            client.post(
                "/batched_tdb",
                json={"subRequests": [tdb_spec(componentTypeForMlp="banana")]},
                headers=headers,
            ),
            422,
        ),
        (
            client.post(
                "/explain",
                json={
                    "dst": "mlp_post_act",
                    "layerIndex": 0,
                    "activationIndex": 1,
                    "datasets": ["x"],
                },
                headers=headers,
            ),
            404,
        ),
        (no_model_client.post("/model_info", headers=headers), 503),
        (
            client.post(
                "/batched_tdb",
                content=b'{"subRequests": [' + b" " * (1 << 20),
                headers={**headers, "Content-Type": "application/json"},
            ),
            413,
        ),
        (
            client.post(
                "/batched_tdb",
                content=b'{"subRequests": [',
                headers={**headers, "Content-Type": "application/json"},
            ),
            400,
        ),
        (client.get("/batched_tdb", headers=headers), 405),
        (client.post("/nowhere", headers=headers), 404),
    ):
        assert r.status_code == status
        assert r.headers["access-control-allow-origin"] == ORIGIN
        assert r.json()["message"]


def test_unexpected_errors_are_500s_that_name_no_file(
    debugger_plain: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(request: Any) -> Any:
        raise RuntimeError("cannot open /home/someone/secret/weights.bin")

    monkeypatch.setattr(debugger_plain, "batched", broken)
    with TestClient(create_app(debugger_plain)) as c:
        r = c.post("/batched_tdb", json={"subRequests": [tdb_spec()]}, headers={"Origin": ORIGIN})
    assert r.status_code == 500
    assert r.headers["access-control-allow-origin"] == ORIGIN
    assert "RuntimeError" in r.json()["message"] and "secret" not in r.text


# --------------------------------------------------------------- bad input


def _bad_node(node_type: str, tensor_indices: list[int | None], layer: int) -> dict[str, Any]:
    return {
        "nodeAblations": [{"nodeIndex": node_index(node_type, tensor_indices, layer), "value": 0}]
    }


def _bad_trace(
    node_type: str, tensor_indices: list[int | None], layer: int, through: str | None = None
) -> dict[str, Any]:
    trace: dict[str, Any] = {"nodeIndex": node_index(node_type, tensor_indices, layer)}
    if through:
        trace["attentionTraceType"] = through
    return {"upstreamNodeToTrace": trace}


# (overrides of one TDB sub-request, expected status, words the message must contain)
BAD_TDB: dict[str, tuple[dict[str, Any], int, list[str]]] = {
    "empty prompt": ({"prompt": ""}, 400, ["prompt", "empty"]),
    "two-token target": ({"targetTokens": [" Mary Ann"]}, 400, ["targetTokens", "2 tokens"]),
    "two-token distractor": ({"distractorTokens": [" Mary Ann"]}, 400, ["distractorTokens"]),
    "prompt too long": ({"prompt": " a" * 70}, 400, ["prompt", "70", "64"]),
    "ablation layer": (_bad_node("mlp_neuron", [0, 1], 5), 400, ["layerIndex", "5"]),
    "ablation neuron": (_bad_node("mlp_neuron", [0, 9999], 1), 400, ["tensorIndices", "9999"]),
    "ablation head": (_bad_node("attention_head", [6, 1, 9], 1), 400, ["tensorIndices", "9"]),
    "ablation token": (_bad_node("mlp_neuron", [99, 1], 1), 400, ["tensorIndices", "99"]),
    "ablation head token": (
        _bad_node("attention_head", [6, 42, 0], 0),
        400,
        ["tensorIndices", "42"],
    ),
    "trace layer": (_bad_trace("mlp_neuron", [0, 1], 7), 400, ["layerIndex", "7"]),
    "trace neuron": (_bad_trace("mlp_neuron", [0, 300], 0), 400, ["tensorIndices", "300"]),
    "trace head": (_bad_trace("attention_head", [6, 1, 4], 1, "V"), 400, ["tensorIndices", "4"]),
    "trace token": (_bad_trace("attention_head", [60, 1, 0], 1, "Q"), 400, ["tensorIndices", "60"]),
    "trace type on a neuron": (
        _bad_trace("mlp_neuron", [0, 1], 0, "Q"),
        400,
        ["attentionTraceType"],
    ),
    "unknown trace type": (
        _bad_trace("attention_head", [6, 1, 0], 1, "X"),
        422,
        ["attentionTraceType"],
    ),
    "unknown mlp component": ({"componentTypeForMlp": "banana"}, 422, ["componentTypeForMlp"]),
    "unknown attention component": (
        {"componentTypeForAttention": "banana"},
        422,
        ["componentTypeForAttention"],
    ),
    "unknown node type": (_bad_node("banana", [0, 1], 0), 422, ["nodeType"]),
    "mlp latents, no autoencoder": (
        {"componentTypeForMlp": "autoencoder_latent"},
        400,
        ["componentTypeForMlp", "autoencoder"],
    ),
    "attention latents, no autoencoder": (
        {"componentTypeForAttention": "autoencoder_latent"},
        400,
        ["componentTypeForAttention", "autoencoder"],
    ),
    "latent ablation, no autoencoder": (
        _bad_node("mlp_autoencoder_latent", [0, 1], 0),
        400,
        ["autoencoder"],
    ),
    "zero k": ({"topAndBottomKForNodeTable": 0}, 422, ["topAndBottomKForNodeTable"]),
    "wrong type": ({"topAndBottomKForNodeTable": "ten"}, 422, ["topAndBottomKForNodeTable"]),
}


@pytest.mark.parametrize("case", list(BAD_TDB), ids=list(BAD_TDB))
def test_bad_tdb_input(client: TestClient, case: str) -> None:
    overrides, status, words = BAD_TDB[case]
    r = client.post(
        "/batched_tdb", json={"subRequests": [tdb_spec(**overrides)]}, headers={"Origin": ORIGIN}
    )
    assert_error(r, status, *words)
    assert r.headers["access-control-allow-origin"] == ORIGIN


def test_bad_tdb_input_names_client_fields(client: TestClient) -> None:
    r = client.post(
        "/batched_tdb", json={"subRequests": [tdb_spec(**_bad_node("mlp_neuron", [0, 1], 5))]}
    )
    assert_error(r, 400, "subRequests[0].nodeAblations[0]")
    r = client.post(
        "/batched_tdb", json={"subRequests": [tdb_spec(**_bad_trace("mlp_neuron", [0, 1], 7))]}
    )
    assert_error(r, 400, "subRequests[0].upstreamNodeToTrace")


def test_bad_requests_then_good(client: TestClient, debugger_plain: Any) -> None:
    # structurally bad bodies
    assert_error(
        client.post(
            "/batched_tdb",
            content=b'{"subRequests": [',
            headers={"Content-Type": "application/json"},
        ),
        400,
        "body",
        "malformed JSON",
    )
    assert_error(
        client.post(
            "/batched_tdb", content=b"not json", headers={"Content-Type": "application/json"}
        ),
        400,
    )
    assert_error(client.post("/batched_tdb", json={"subRequests": []}), 422, "subRequests")
    assert_error(client.post("/batched_tdb", json={}), 422, "subRequests")
    missing = {k: v for k, v in tdb_spec().items() if k != "targetTokens"}
    assert_error(client.post("/batched_tdb", json={"subRequests": [missing]}), 422, "targetTokens")
    # batched top-k requests need prompts of one length
    r = client.post("/batched_tdb", json={"subRequests": [tdb_spec(), tdb_spec(prompt="Hello")]})
    assert_error(r, 400, "prompt", "same number of tokens")
    assert_error(
        client.post("/batched", json={"inferenceSubRequests": []}), 422, "inferenceSubRequests"
    )
    # single-node routes
    ds = {
        "inferenceRequestSpec": {"prompt": PROMPT},
        "derivedScalarsRequestSpec": {"dst": "mlp_post_act", "layerIndex": 3, "activationIndex": 0},
    }
    assert_error(client.post("/derived_scalars", json=ds), 400, "layerIndex")
    ds["derivedScalarsRequestSpec"] = {
        "dst": "mlp_post_act",
        "layerIndex": 0,
        "activationIndex": 100000,
    }
    assert_error(client.post("/derived_scalars", json=ds), 400, "activationIndex")
    ds["derivedScalarsRequestSpec"] = {"dst": "not_a_scalar", "layerIndex": 0, "activationIndex": 0}
    assert_error(client.post("/derived_scalars", json=ds), 422, "dst")
    das = {
        "inferenceRequestSpec": {"prompt": PROMPT},
        "derivedAttentionScalarsRequestSpec": {
            "dst": "unflattened_attn_write_norm",
            "layerIndex": 0,
            "activationIndex": 4,
        },
    }
    assert_error(client.post("/derived_attention_scalars", json=das), 400, "activationIndex")
    das["inferenceRequestSpec"] = {"prompt": ""}
    assert_error(client.post("/derived_attention_scalars", json=das), 400, "prompt")
    bad_loss = {
        "prompt": PROMPT,
        "lossFnConfig": {"name": "logit_diff", "targetTokens": [" Mary Ann"]},
    }
    mtk = {
        "inferenceRequestSpec": bad_loss,
        "multipleTopKDerivedScalarsRequestSpec": {
            "dstListByGroupId": {"write_norm": ["mlp_write_norm"]},
            "topAndBottomK": 3,
        },
    }
    assert_error(client.post("/multiple_top_k_derived_scalars", json=mtk), 400, "targetTokens")
    # explainer and read routes with a dataset this server does not know
    node = {"dst": "mlp_post_act", "layerIndex": 0, "activationIndex": 1, "datasets": ["tiny-2l"]}
    assert_error(client.post("/explain", json=node), 404, "tiny-2l")
    assert_error(client.post("/score", json={**node, "explanation": "x", "maxSequences": 2}), 404)
    assert_error(client.post("/neuron_record", json=node), (404, 503))
    # the server still answers a good request, with the same result as before
    data = post_ok(client, "/batched_tdb", {"subRequests": [tdb_spec()]}, S.BatchedResponse)
    check_tdb_response(data, 1)


def test_no_model_mode(no_model_client: TestClient) -> None:
    c = no_model_client
    for path, body in (
        ("/model_info", None),
        ("/batched_tdb", {"subRequests": [tdb_spec()]}),
        ("/batched", {"inferenceSubRequests": [{"inferenceRequestSpec": {"prompt": "a"}}]}),
        (
            "/derived_scalars",
            {
                "inferenceRequestSpec": {"prompt": "a"},
                "derivedScalarsRequestSpec": {
                    "dst": "mlp_post_act",
                    "layerIndex": 0,
                    "activationIndex": 0,
                },
            },
        ),
        (
            "/derived_attention_scalars",
            {
                "inferenceRequestSpec": {"prompt": "a"},
                "derivedAttentionScalarsRequestSpec": {
                    "dst": "attn_qk_probs",
                    "layerIndex": 0,
                    "activationIndex": 0,
                },
            },
        ),
        (
            "/multiple_top_k_derived_scalars",
            {
                "inferenceRequestSpec": {"prompt": "a"},
                "multipleTopKDerivedScalarsRequestSpec": {
                    "dstListByGroupId": {"write_norm": ["mlp_write_norm"]}
                },
            },
        ),
    ):
        r = c.post(path, json=body) if body is not None else c.post(path)
        assert_error(r, 503, "model")
    schema = c.get("/openapi.json")
    assert schema.status_code == 200 and "/batched_tdb" in schema.json()["paths"]
    # the published datasets are always registered
    published = post_ok(c, "/neuron_datasets_metadata", None, list[S.NeuronDatasetMetadata])
    assert {m["shortName"] for m in published} >= {"gpt2-small", "gpt2-xl"}
    assert c.get("/").status_code == 200


# ------------------------------------------------------ real server, concurrency


class _GatedBatched:
    """Wraps Debugger.batched so that the first call inside the gate waits for `release`."""

    def __init__(self, inner: Callable[..., Any]) -> None:
        self.inner = inner
        self.armed = False
        self.entered = threading.Event()
        self.release = threading.Event()

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if self.armed:
            self.armed = False
            self.entered.set()
            self.release.wait(timeout=20)  # bounded: never hangs the suite
        return self.inner(*args, **kwargs)


@pytest.fixture
def live_server(
    debugger_plain: Any, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[str, _GatedBatched]]:
    """The app on real uvicorn, 127.0.0.1, a free port, in a thread; stopped afterwards."""
    for var in ("NO_PROXY", "no_proxy"):
        monkeypatch.setenv(var, "127.0.0.1,localhost")
    gate = _GatedBatched(debugger_plain.batched)
    monkeypatch.setattr(debugger_plain, "batched", gate)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(create_app(debugger_plain), log_level="warning", lifespan="off")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}", gate
    finally:
        gate.release.set()
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()
        assert not thread.is_alive()


def test_real_server_concurrent_requests(live_server: tuple[str, _GatedBatched]) -> None:
    base, gate = live_server
    headers = {"Accept": "application/json", "Origin": ORIGIN}
    prompts = [
        PROMPT,
        SAME_LENGTH_PROMPT,
        "Hello world",
        "The cat sat on the mat",
        "a b c",
        "One, two, three.",
    ]
    with (
        httpx.Client(base_url=base, timeout=30, headers=headers) as http,
        concurrent.futures.ThreadPoolExecutor(8) as pool,
    ):
        # 1. while one request is computing (held in the gate), /model_info still answers
        gate.armed = True
        slow = pool.submit(http.post, "/batched_tdb", json={"subRequests": [tdb_spec()]})
        try:
            assert gate.entered.wait(timeout=10)
            start = time.monotonic()
            info = http.post("/model_info", timeout=5)
            preflight = http.options(
                "/batched_tdb",
                headers={
                    "Access-Control-Request-Method": "POST",
                    "Access-Control-Request-Headers": "content-type",
                },
                timeout=5,
            )
            elapsed = time.monotonic() - start
            assert info.status_code == 200 and info.json()["nLayers"] == 2
            assert preflight.status_code == 200
            assert not slow.done(), "the slow request finished before /model_info was answered"
            assert elapsed < 5
        finally:
            gate.release.set()
        r = slow.result(timeout=20)
        assert r.status_code == 200
        check_tdb_response(r.json(), 1)

        # 2. six concurrent /batched_tdb requests mixed with /model_info calls all succeed
        tdb_futures = [
            pool.submit(http.post, "/batched_tdb", json={"subRequests": [tdb_spec(p)]})
            for p in prompts
        ]
        info_futures = [pool.submit(http.post, "/model_info") for _ in range(6)]
        for p, f in zip(prompts, tdb_futures, strict=True):
            r = f.result(timeout=60)
            assert r.status_code == 200, r.text[:500]
            assert r.headers["access-control-allow-origin"] == ORIGIN
            data = r.json()
            (sub,) = check_tdb_response(
                data,
                1,
                len(
                    data["inferenceSubResponses"][0]["inferenceResponse"]["inferenceAndTokenData"][
                        "tokensAsInts"
                    ]
                ),
            )
            assert (
                "".join(sub["inferenceResponse"]["inferenceAndTokenData"]["tokensAsStrings"]) == p
            )
        for f in info_futures:
            r = f.result(timeout=60)
            assert r.status_code == 200
            S.ModelInfoResponse.model_validate(r.json())
