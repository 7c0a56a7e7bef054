"""Wire-compatibility tests for neuron_explainer.activation_server.schemas.

Request bodies are written exactly as the original web client sends them (see
shared/reference/original-client-calls.md); expected response JSON was checked key by key against
the seed's requests_and_responses.py / read_routes.py / explainer_routes.py.
"""

from __future__ import annotations

import copy
import inspect
import json
from enum import Enum
from typing import Any

import pytest
from pydantic import BaseModel, ValidationError

from neuron_explainer.activation_server import schemas as s

########## Client request bodies (verbatim shapes) ##########

TDB_INITIAL_LOAD: dict[str, Any] = {
    "subRequests": [
        {
            "prompt": "<|endoftext|>Paris, France. Ottawa,",
            "targetTokens": [" Canada"],
            "distractorTokens": [" Germany"],
            "componentTypeForMlp": "neuron",
            "componentTypeForAttention": "attention_head",
            "topAndBottomKForNodeTable": 10,
            "hideEarlyLayersWhenAblating": True,
            "nodeAblations": [],
        }
    ]
}

_MLP_ABLATION: dict[str, Any] = {
    "nodeIndex": {
        "nodeType": "mlp_neuron",
        "tensorIndices": [3, 131],
        "layerIndex": 5,
        "passType": "forward",
    },
    "value": 0,
}

TDB_ABLATION: dict[str, Any] = {
    "subRequests": [
        {**TDB_INITIAL_LOAD["subRequests"][0], "nodeAblations": [_MLP_ABLATION]},
        {**TDB_INITIAL_LOAD["subRequests"][0], "nodeAblations": []},
    ]
}

_TRACE_V: dict[str, Any] = {
    "nodeIndex": {
        "nodeType": "attention_head",
        "tensorIndices": [6, 2, 7],
        "layerIndex": 4,
        "passType": "forward",
    },
    "attentionTraceType": "V",
}

TDB_TRACE_UPSTREAM_V: dict[str, Any] = {
    "subRequests": [
        {**TDB_INITIAL_LOAD["subRequests"][0], "upstreamNodeToTrace": _TRACE_V},
        {
            **TDB_INITIAL_LOAD["subRequests"][0],
            "prompt": "<|endoftext|>Berlin, Germany. Rome,",
            "nodeAblations": [_MLP_ABLATION],
            "upstreamNodeToTrace": _TRACE_V,
        },
    ]
}


def _logit_lens_ablation(pass_type: str) -> dict[str, Any]:
    return {
        "index": {
            "activationLocationType": "mlp.post_act",
            "tensorIndices": [0, 131],
            "layerIndex": 5,
            "passType": pass_type,
        },
        "value": 1.0,
    }


LOGIT_LENS_BATCHED: dict[str, Any] = {
    "inferenceSubRequests": [
        {
            "inferenceRequestSpec": {
                "prompt": "a",
                "ablationSpecs": [_logit_lens_ablation("backward")],
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
                "ablationSpecs": [_logit_lens_ablation("forward")],
            },
            "processingRequestSpecByName": {
                "singleton": {
                    "dst": "mlp_post_act",
                    "layerIndex": 5,
                    "activationIndex": 131,
                    "numTopTokens": 100,
                }
            },
        },
    ]
}

DERIVED_SCALARS: dict[str, Any] = {
    "inferenceRequestSpec": {"prompt": "Hello world"},
    "derivedScalarsRequestSpec": {
        "dst": "mlp_post_act",
        "layerIndex": 5,
        "activationIndex": 131,
        "normalizeActivationsUsingNeuronRecord": {
            "dst": "mlp_post_act",
            "layerIndex": 5,
            "activationIndex": 131,
            "datasets": ["gpt2-small"],
        },
    },
}

DERIVED_ATTENTION_SCALARS: dict[str, Any] = {
    "inferenceRequestSpec": {"prompt": "Hello world"},
    "derivedAttentionScalarsRequestSpec": {
        "dst": "unflattened_attn_write_norm",
        "layerIndex": 4,
        "activationIndex": 7,
        "normalizeActivationsUsingNeuronRecord": {
            "dst": "attn_write_norm",
            "layerIndex": 4,
            "activationIndex": 7,
            "datasets": ["gpt2-small"],
        },
    },
}

EXPLAIN: dict[str, Any] = {
    "dst": "mlp_post_act",
    "layerIndex": 5,
    "activationIndex": 131,
    "datasets": ["gpt2-small"],
}
SCORE: dict[str, Any] = {**EXPLAIN, "explanation": "the word 'Canada'", "maxSequences": 2}
NEURON_RECORD: dict[str, Any] = dict(EXPLAIN)
ATTENTION_HEAD_RECORD: dict[str, Any] = {
    **EXPLAIN,
    "dst": "attn_write_norm",
    "layerIndex": 4,
    "activationIndex": 7,
}
EXISTING_EXPLANATIONS: dict[str, Any] = {
    "dst": "mlp_post_act",
    "layerIndex": 5,
    "activationIndex": 131,
    "explanationDatasets": [],
    "neuronDataset": "gpt2-small",
}


########## Requests parse into the right models ##########


def test_tdb_initial_load() -> None:
    request = s.BatchedTdbRequest.model_validate(TDB_INITIAL_LOAD)
    (spec,) = request.sub_requests
    assert spec.spec_type is s.SpecType.TDB_REQUEST_SPEC  # defaulted: the client never sends it
    assert spec.component_type_for_mlp is s.ComponentTypeForMlp.NEURON
    assert spec.component_type_for_attention is s.ComponentTypeForAttention.ATTENTION_HEAD
    assert spec.top_and_bottom_k_for_node_table == 10
    assert spec.node_ablations == []
    assert spec.upstream_node_to_trace is None and spec.downstream_node_to_trace is None


def test_tdb_ablation_two_sub_requests() -> None:
    request = s.BatchedTdbRequest.model_validate(TDB_ABLATION)
    ablated, baseline = request.sub_requests
    assert baseline.node_ablations == []
    assert ablated.node_ablations is not None
    (ablation,) = ablated.node_ablations
    assert ablation == s.NodeAblation(
        node_index=s.MirroredNodeIndex(
            node_type=s.NodeType.MLP_NEURON,
            tensor_indices=(3, 131),
            layer_index=5,
            pass_type=s.PassType.FORWARD,
        ),
        value=0.0,
    )
    # Node indices are frozen and hashable (used as set/dict keys by the server).
    assert len({ablation.node_index, ablation.node_index}) == 1


def test_tdb_trace_upstream_through_v() -> None:
    request = s.BatchedTdbRequest.model_validate(TDB_TRACE_UPSTREAM_V)
    for spec in request.sub_requests:
        trace = spec.upstream_node_to_trace
        assert trace is not None
        assert trace.attention_trace_type is s.AttentionTraceType.V
        assert trace.node_index.node_type is s.NodeType.ATTENTION_HEAD
        assert trace.node_index.tensor_indices == (6, 2, 7)
        assert trace.downstream_trace_config is None
    assert request.sub_requests[1].node_ablations is not None


def test_logit_lens_batched_picks_derived_scalars_spec() -> None:
    request = s.BatchedRequest.model_validate(LOGIT_LENS_BATCHED)
    first, second = request.inference_sub_requests
    spec = first.processing_request_spec_by_name["singleton"]
    assert isinstance(spec, s.DerivedScalarsRequestSpec)
    assert spec.dst is s.DerivedScalarType.VOCAB_TOKEN_WRITE_TO_INPUT_DIRECTION
    assert spec.layer_index is None  # omitted by the client
    assert spec.num_top_tokens == 100
    assert spec.pass_type is s.PassType.FORWARD
    loss_fn_config = first.inference_request_spec.loss_fn_config
    assert loss_fn_config is not None and loss_fn_config.name is s.LossFnName.ZERO
    ablation_specs = first.inference_request_spec.ablation_specs
    assert ablation_specs is not None
    assert ablation_specs[0].index.activation_location_type is s.ActivationLocationType.MLP_POST_ACT
    assert ablation_specs[0].index.pass_type is s.PassType.BACKWARD
    second_spec = second.processing_request_spec_by_name["singleton"]
    assert isinstance(second_spec, s.DerivedScalarsRequestSpec)
    assert (second_spec.layer_index, second_spec.activation_index) == (5, 131)
    assert second.inference_request_spec.loss_fn_config is None


def test_derived_scalars_request() -> None:
    request = s.DerivedScalarsRequest.model_validate(DERIVED_SCALARS)
    spec = request.derived_scalars_request_spec
    assert spec.spec_type is s.SpecType.DERIVED_SCALARS_REQUEST_SPEC
    record = spec.normalize_activations_using_neuron_record
    assert record == s.NodeIdAndDatasets(
        dst=s.DerivedScalarType.MLP_POST_ACT,
        layer_index=5,
        activation_index=131,
        datasets=["gpt2-small"],
    )


def test_derived_attention_scalars_request() -> None:
    request = s.DerivedAttentionScalarsRequest.model_validate(DERIVED_ATTENTION_SCALARS)
    spec = request.derived_attention_scalars_request_spec
    assert spec.spec_type is s.SpecType.DERIVED_ATTENTION_SCALARS_REQUEST_SPEC
    assert spec.dst is s.DerivedScalarType.UNFLATTENED_ATTN_WRITE_NORM
    assert spec.normalize_activations_using_neuron_record is not None
    assert spec.normalize_activations_using_neuron_record.dst is s.DerivedScalarType.ATTN_WRITE_NORM


def test_read_and_explainer_requests() -> None:
    explain = s.NodeIdAndDatasets.model_validate(EXPLAIN)
    assert (explain.dst, explain.layer_index, explain.activation_index) == (
        s.DerivedScalarType.MLP_POST_ACT,
        5,
        131,
    )
    score = s.ScoreRequest.model_validate(SCORE)
    assert score.explanation == "the word 'Canada'" and score.max_sequences == 2
    assert s.ScoreRequest.model_validate({**EXPLAIN, "explanation": "x"}).max_sequences is None
    assert s.NodeIdAndDatasets.model_validate(NEURON_RECORD).datasets == ["gpt2-small"]
    head = s.NodeIdAndDatasets.model_validate(ATTENTION_HEAD_RECORD)
    assert head.dst is s.DerivedScalarType.ATTN_WRITE_NORM
    existing = s.ExistingExplanationsRequest.model_validate(EXISTING_EXPLANATIONS)
    assert existing.explanation_datasets == [] and existing.neuron_dataset == "gpt2-small"
    assert (
        s.ExistingExplanationsRequest.model_validate(
            {**EXISTING_EXPLANATIONS, "explanationDatasets": ["x"], "neuronDataset": None}
        ).neuron_dataset
        is None
    )


########## Processing spec union ##########


@pytest.mark.parametrize(
    "body, expected",
    [
        ({"dstListByGroupId": {"logits": ["logits"]}, "topAndBottomKForNodeTable": 3}, s.MultipleTopKDerivedScalarsRequestSpec),
        ({"dstListByGroupId": {"logits": ["logits"]}, "tokenIndex": None}, s.MultipleTopKDerivedScalarsRequestSpec),
        ({"tokenScoringType": "upvoted_output_tokens", "numTokens": 10, "dependsOnSpecName": "t"}, s.ScoredTokensRequestSpec),
        ({"numTokensAttendedTo": 3, "dependsOnSpecName": "t"}, s.TokenPairAttributionRequestSpec),
        ({"dst": "mlp_post_act", "layerIndex": 1, "activationIndex": 2}, s.DerivedScalarsRequestSpec),
        ({"specType": "derived_attention_scalars_request_spec", "dst": "unflattened_attn_write_norm", "layerIndex": 1, "activationIndex": 2}, s.DerivedAttentionScalarsRequestSpec),
        ({"specType": "derived_scalars_request_spec", "dst": "mlp_post_act", "activationIndex": 2}, s.DerivedScalarsRequestSpec),
        ({"spec_type": "scored_tokens_request_spec", "token_scoring_type": "input_tokens_that_upvote_attn_k", "num_tokens": 1, "depends_on_spec_name": "t"}, s.ScoredTokensRequestSpec),
    ],
)  # fmt: skip
def test_processing_spec_union_member(body: dict[str, Any], expected: type) -> None:
    sub_request = s.InferenceSubRequest.model_validate(
        {"inferenceRequestSpec": {"prompt": "a"}, "processingRequestSpecByName": {"x": body}}
    )
    spec = sub_request.processing_request_spec_by_name["x"]
    assert type(spec) is expected
    # Round trip: the dumped spec carries specType and parses back to the same member.
    dumped = spec.model_dump(mode="json")
    assert dumped["specType"] == spec.spec_type.value
    again = s.InferenceSubRequest.model_validate(
        {"inferenceRequestSpec": {"prompt": "a"}, "processingRequestSpecByName": {"x": dumped}}
    )
    assert again.processing_request_spec_by_name["x"] == spec


def test_processing_spec_union_accepts_model_instances() -> None:
    """Server code builds sub-requests from instances (as tdb_conversions does)."""
    specs: dict[str, Any] = {
        "topKComponents": s.MultipleTopKDerivedScalarsRequestSpec(
            dst_list_by_group_id={s.GroupId.WRITE_NORM: [s.DerivedScalarType.MLP_WRITE_NORM]},
            token_index=None,
            top_and_bottom_k=10,
        ),
        "attn": s.DerivedAttentionScalarsRequestSpec(
            dst=s.DerivedScalarType.UNFLATTENED_ATTN_WRITE_NORM, layer_index=1, activation_index=2
        ),
        "upvotedOutputTokens": s.ScoredTokensRequestSpec(
            token_scoring_type=s.TokenScoringType.UPVOTED_OUTPUT_TOKENS,
            num_tokens=10,
            depends_on_spec_name="topKComponents",
        ),
        "tokenPairAttribution": s.TokenPairAttributionRequestSpec(
            num_tokens_attended_to=3, depends_on_spec_name="topKComponents"
        ),
    }
    sub_request = s.InferenceSubRequest(
        inference_request_spec=s.InferenceRequestSpec(
            prompt="a",
            ablation_specs=[
                s.AblationSpec(
                    index=s.MirroredActivationIndex(
                        activation_location_type=s.ActivationLocationType.RESID_FINAL_LAYER_NORM_SCALE,
                        pass_type=s.PassType.BACKWARD,
                        tensor_indices=("All", "All"),
                        layer_index=None,
                    ),
                    value=0,
                )
            ],
        ),
        processing_request_spec_by_name=specs,
    )
    for name, spec in specs.items():
        assert type(sub_request.processing_request_spec_by_name[name]) is type(spec)
    dumped = sub_request.model_dump(mode="json")
    assert dumped["inferenceRequestSpec"]["ablationSpecs"][0]["index"]["tensorIndices"] == [
        "All",
        "All",
    ]
    assert s.InferenceSubRequest.model_validate(dumped) == sub_request


def test_multiple_top_k_spec_defaults_and_top_k_params() -> None:
    spec = s.MultipleTopKDerivedScalarsRequestSpec.model_validate(
        {
            "dstListByGroupId": {
                "write_norm": ["mlp_write_norm"],
                "act_times_grad": ["mlp_act_times_grad"],
            }
        }
    )
    assert spec.token_index is None and spec.top_and_bottom_k is None
    assert spec.dimensions_to_keep_for_intermediate_sum == [
        s.Dimension.SEQUENCE_TOKENS,
        s.Dimension.ATTENDED_TO_SEQUENCE_TOKENS,
    ]
    params = spec.get_top_k_params_for_group_id(s.GroupId.WRITE_NORM)
    assert params.exclude_bottom_k is True
    assert params.dst_list == [s.DerivedScalarType.MLP_WRITE_NORM]
    assert spec.get_top_k_params_for_group_id(s.GroupId.ACT_TIMES_GRAD).exclude_bottom_k is False


def test_activation_index_all_convention() -> None:
    index = s.MirroredActivationIndex.model_validate(
        {"activationLocationType": "attn.qk_probs", "tensorIndices": [3, "All", 5], "layerIndex": 2, "passType": "forward"}
    )  # fmt: skip
    assert index.tensor_indices == (3, "All", 5)
    with pytest.raises(ValidationError):
        s.MirroredActivationIndex.model_validate(
            {"activationLocationType": "attn.qk_probs", "tensorIndices": ["all"], "passType": "forward"}
        )  # fmt: skip
    node = s.MirroredNodeIndex.model_validate(
        {"nodeType": "attention_head", "tensorIndices": [3, None, 5], "layerIndex": None, "passType": "backward"}
    )  # fmt: skip
    assert node.tensor_indices == (3, None, 5)
    assert node.model_dump(mode="json")["tensorIndices"] == [3, None, 5]


def test_trace_config_recursive() -> None:
    body: dict[str, Any] = {
        "nodeIndex": _TRACE_V["nodeIndex"],
        "preOrPostAct": "pre",
        "detachLayerNormScale": True,
        "attentionTraceType": "V",
        "downstreamTraceConfig": {
            "nodeIndex": _MLP_ABLATION["nodeIndex"],
            "preOrPostAct": "pre",
            "detachLayerNormScale": True,
        },
    }
    config = s.MirroredTraceConfig.model_validate(body)
    assert config.downstream_trace_config is not None
    assert config.downstream_trace_config.attention_trace_type is None
    spec = s.InferenceRequestSpec.model_validate({"prompt": "a", "traceConfig": body})
    assert spec.trace_config == config
    assert hash(config) == hash(s.MirroredTraceConfig.model_validate(body))


########## Round trips and camelCase ##########


def _assert_camel_keys(value: Any) -> None:
    if isinstance(value, dict):
        for key, item in value.items():
            assert "_" not in key or key in _SNAKE_CASE_VALUE_KEYS, key
            _assert_camel_keys(item)
    elif isinstance(value, list):
        for item in value:
            _assert_camel_keys(item)


# Dict keys that are data (enum values / spec names), not field names.
_SNAKE_CASE_VALUE_KEYS = {g.value for g in s.GroupId} | {d.value for d in s.DerivedScalarType}


@pytest.mark.parametrize(
    "model, body",
    [
        (s.BatchedTdbRequest, TDB_INITIAL_LOAD),
        (s.BatchedTdbRequest, TDB_ABLATION),
        (s.BatchedTdbRequest, TDB_TRACE_UPSTREAM_V),
        (s.BatchedRequest, LOGIT_LENS_BATCHED),
        (s.DerivedScalarsRequest, DERIVED_SCALARS),
        (s.DerivedAttentionScalarsRequest, DERIVED_ATTENTION_SCALARS),
        (s.NodeIdAndDatasets, EXPLAIN),
        (s.ScoreRequest, SCORE),
        (s.NodeIdAndDatasets, NEURON_RECORD),
        (s.NodeIdAndDatasets, ATTENTION_HEAD_RECORD),
        (s.ExistingExplanationsRequest, EXISTING_EXPLANATIONS),
    ],
)
def test_round_trip_camel_case(model: type[BaseModel], body: dict[str, Any]) -> None:
    parsed = model.model_validate(body)
    dumped = parsed.model_dump(by_alias=True, mode="json")
    _assert_camel_keys(dumped)
    # Every key the client sent comes back with the same spelling.
    _assert_contains(dumped, json.loads(json.dumps(body)))
    assert model.model_validate(dumped) == parsed
    assert model.model_validate_json(parsed.model_dump_json()) == parsed
    # Snake-case construction is accepted too (populate_by_name).
    assert model.model_validate(parsed.model_dump(by_alias=False)) == parsed


def _assert_contains(dumped: Any, sent: Any) -> None:
    if isinstance(sent, dict):
        for key, item in sent.items():
            assert key in dumped, key
            _assert_contains(dumped[key], item)
    elif isinstance(sent, list):
        assert len(dumped) == len(sent)
        for dumped_item, sent_item in zip(dumped, sent, strict=True):
            _assert_contains(dumped_item, sent_item)
    else:
        assert dumped == sent


def _seed_to_camel(name: str) -> str:
    """The seed's alias generator."""
    return "".join(word.capitalize() if i else word for i, word in enumerate(name.split("_")))


def test_aliases_match_seed_alias_generator() -> None:
    models = [
        obj
        for obj in vars(s).values()
        if inspect.isclass(obj) and issubclass(obj, s.CamelModel) and obj.__module__ == s.__name__
    ]
    assert len(models) > 40
    for model in models:
        for name, field in model.model_fields.items():
            assert field.alias == _seed_to_camel(name), (model.__name__, name)


########## Invalid bodies ##########


def _error_locs(exc: ValidationError) -> list[tuple[Any, ...]]:
    return [tuple(error["loc"]) for error in exc.errors()]


def test_unknown_enum_value_rejected() -> None:
    body = copy.deepcopy(TDB_INITIAL_LOAD)
    body["subRequests"][0]["componentTypeForMlp"] = "neuronz"
    with pytest.raises(ValidationError) as exc_info:
        s.BatchedTdbRequest.model_validate(body)
    assert ("subRequests", 0, "componentTypeForMlp") in _error_locs(exc_info.value)
    assert "componentTypeForMlp" in str(exc_info.value)

    with pytest.raises(ValidationError) as exc_info:
        s.NodeIdAndDatasets.model_validate({**EXPLAIN, "dst": "not_a_dst"})
    assert ("dst",) in _error_locs(exc_info.value)

    bad_trace = copy.deepcopy(TDB_TRACE_UPSTREAM_V)
    bad_trace["subRequests"][0]["upstreamNodeToTrace"]["attentionTraceType"] = "W"
    with pytest.raises(ValidationError) as exc_info:
        s.BatchedTdbRequest.model_validate(bad_trace)
    assert "attentionTraceType" in str(exc_info.value)

    bad_group = {"dstListByGroupId": {"not_a_group": ["logits"]}}
    with pytest.raises(ValidationError, match="dstListByGroupId"):
        s.MultipleTopKDerivedScalarsRequestSpec.model_validate(bad_group)


def test_unknown_spec_type_rejected() -> None:
    for spec_type in ("nonsense", "tdb_request_spec"):
        body = copy.deepcopy(LOGIT_LENS_BATCHED)
        body["inferenceSubRequests"][0]["processingRequestSpecByName"]["singleton"]["specType"] = (
            spec_type
        )
        with pytest.raises(ValidationError) as exc_info:
            s.BatchedRequest.model_validate(body)
        assert exc_info.value.errors()[0]["type"] == "union_tag_invalid"
        assert "processingRequestSpecByName" in str(exc_info.value)


def test_missing_required_field_rejected() -> None:
    body = copy.deepcopy(TDB_INITIAL_LOAD)
    del body["subRequests"][0]["prompt"]
    with pytest.raises(ValidationError) as exc_info:
        s.BatchedTdbRequest.model_validate(body)
    errors = exc_info.value.errors()
    assert [(e["type"], e["loc"]) for e in errors] == [("missing", ("subRequests", 0, "prompt"))]

    body = copy.deepcopy(LOGIT_LENS_BATCHED)
    del body["inferenceSubRequests"][1]["processingRequestSpecByName"]["singleton"][
        "activationIndex"
    ]
    with pytest.raises(ValidationError) as exc_info:
        s.BatchedRequest.model_validate(body)
    (error,) = exc_info.value.errors()
    assert error["type"] == "missing" and error["loc"][-1] == "activationIndex"

    with pytest.raises(ValidationError, match="explanation"):
        s.ScoreRequest.model_validate(EXPLAIN)
    with pytest.raises(ValidationError, match="explanationDatasets"):
        s.ExistingExplanationsRequest.model_validate(
            {k: v for k, v in EXISTING_EXPLANATIONS.items() if k != "explanationDatasets"}
        )


def test_malformed_types_rejected() -> None:
    with pytest.raises(ValidationError, match="layerIndex"):
        s.NodeIdAndDatasets.model_validate({**EXPLAIN, "layerIndex": "five"})
    with pytest.raises(ValidationError, match="subRequests"):
        s.BatchedTdbRequest.model_validate({"subRequests": "nope"})
    with pytest.raises(ValidationError):
        s.BatchedRequest.model_validate(
            {"inferenceSubRequests": [{"inferenceRequestSpec": {"prompt": "a"}, "processingRequestSpecByName": {"x": 3}}]}
        )  # fmt: skip


########## Responses ##########

_NODE_MLP = s.MirroredNodeIndex(
    node_type=s.NodeType.MLP_NEURON,
    tensor_indices=(2, 131),
    layer_index=5,
    pass_type=s.PassType.FORWARD,
)
_NODE_HEAD = s.MirroredNodeIndex(
    node_type=s.NodeType.ATTENTION_HEAD,
    tensor_indices=(2, 1, 7),
    layer_index=4,
    pass_type=s.PassType.FORWARD,
)
_NODE_MLP_JSON = {
    "nodeType": "mlp_neuron",
    "tensorIndices": [2, 131],
    "layerIndex": 5,
    "passType": "forward",
}
_NODE_HEAD_JSON = {
    "nodeType": "attention_head",
    "tensorIndices": [2, 1, 7],
    "layerIndex": 4,
    "passType": "forward",
}


def _batched_response() -> s.BatchedResponse:
    top_tokens = s.TopTokens(
        top=[s.TokenAndScalar(token=" Canada", scalar=2.5, normalized_scalar=1.0)],
        bottom=[s.TokenAndScalar(token=" the", scalar=-1.0, normalized_scalar=0.4)],
    )
    return s.BatchedResponse(
        inference_sub_responses=[
            s.InferenceResponseAndResponseDict(
                inference_response=s.InferenceResponse(
                    inference_and_token_data=s.InferenceAndTokenData(
                        inference_time=0.5,
                        memory_used_before=None,
                        memory_used_after=None,
                        loss=1.25,
                        tokens_as_ints=[50256, 40],
                        tokens_as_strings=["<|endoftext|>", "I"],
                    )
                ),
                processing_response_data_by_name={
                    "topKComponents": s.MultipleTopKDerivedScalarsResponseData(
                        activations_by_group_id={
                            s.GroupId.WRITE_NORM: [3.0, 1.5],
                            s.GroupId.ACT_TIMES_GRAD: [-0.5, 0.25],
                        },
                        node_indices=[_NODE_MLP, _NODE_HEAD],
                        vocab_token_strings_for_indices=None,
                        intermediate_sum_activations_by_dst_by_group_id={
                            s.GroupId.WRITE_NORM: {
                                s.DerivedScalarType.MLP_WRITE_NORM: s.Tensor2D(value=[[1.0, 2.0], [3.0, 4.0]]),
                                s.DerivedScalarType.RESID_POST_EMBEDDING_NORM: s.Tensor0D(value=7.0),
                            }
                        },
                    ),
                    "upvotedOutputTokens": s.ScoredTokensResponseData(
                        node_indices=[_NODE_MLP, _NODE_HEAD], top_tokens_list=[top_tokens, None]
                    ),
                    "tokenPairAttribution": s.TokenPairAttributionResponseData(
                        node_indices=[_NODE_MLP, _NODE_HEAD],
                        top_tokens_attended_to_list=[
                            None,
                            s.TopTokensAttendedTo(token_indices=[1, 0], attributions=[0.75, 0.25]),
                        ],
                    ),
                    "singleton": s.DerivedScalarsResponseData(
                        activations=[0.0, 1.0],
                        normalized_activations=None,
                        node_indices=[_NODE_MLP],
                        top_tokens=top_tokens,
                    ),
                },
            )
        ]
    )  # fmt: skip


_TOKEN_AND_SCALAR_TOP = {"token": " Canada", "scalar": 2.5, "normalizedScalar": 1.0}
_TOKEN_AND_SCALAR_BOTTOM = {"token": " the", "scalar": -1.0, "normalizedScalar": 0.4}
_TOP_TOKENS_JSON: dict[str, Any] = {
    "top": [_TOKEN_AND_SCALAR_TOP],
    "bottom": [_TOKEN_AND_SCALAR_BOTTOM],
}

EXPECTED_BATCHED_RESPONSE_JSON: dict[str, Any] = {
    "inferenceSubResponses": [
        {
            "inferenceResponse": {
                "inferenceAndTokenData": {
                    "inferenceTime": 0.5,
                    "memoryUsedBefore": None,
                    "memoryUsedAfter": None,
                    "log": None,
                    "loss": 1.25,
                    "activationValueForBackwardPass": None,
                    "tokensAsInts": [50256, 40],
                    "tokensAsStrings": ["<|endoftext|>", "I"],
                }
            },
            "processingResponseDataByName": {
                "topKComponents": {
                    "responseDataType": "multiple_top_k_derived_scalars_response_data",
                    "activationsByGroupId": {"write_norm": [3.0, 1.5], "act_times_grad": [-0.5, 0.25]},
                    "nodeIndices": [_NODE_MLP_JSON, _NODE_HEAD_JSON],
                    "vocabTokenStringsForIndices": None,
                    "intermediateSumActivationsByDstByGroupId": {
                        "write_norm": {
                            "mlp_write_norm": {"tensorType": "tensor_2d", "value": [[1.0, 2.0], [3.0, 4.0]]},
                            "resid_post_embedding_norm": {"tensorType": "tensor_0d", "value": 7.0},
                        }
                    },
                },
                "upvotedOutputTokens": {
                    "responseDataType": "scored_tokens_response_data",
                    "nodeIndices": [_NODE_MLP_JSON, _NODE_HEAD_JSON],
                    "topTokensList": [_TOP_TOKENS_JSON, None],
                },
                "tokenPairAttribution": {
                    "responseDataType": "token_pair_attribution_response_data",
                    "nodeIndices": [_NODE_MLP_JSON, _NODE_HEAD_JSON],
                    "topTokensAttendedToList": [None, {"tokenIndices": [1, 0], "attributions": [0.75, 0.25]}],
                },
                "singleton": {
                    "responseDataType": "derived_scalars_response_data",
                    "activations": [0.0, 1.0],
                    "normalizedActivations": None,
                    "nodeIndices": [_NODE_MLP_JSON],
                    "topTokens": _TOP_TOKENS_JSON,
                },
            },
        }
    ]
}  # fmt: skip


def test_batched_response_serializes_to_seed_shape() -> None:
    response = _batched_response()
    assert json.loads(response.model_dump_json()) == EXPECTED_BATCHED_RESPONSE_JSON
    assert response.model_dump(mode="json") == EXPECTED_BATCHED_RESPONSE_JSON
    # Field order of InferenceAndTokenData follows the seed (inherited fields first).
    data = response.model_dump(mode="json")["inferenceSubResponses"][0]["inferenceResponse"]
    assert list(data["inferenceAndTokenData"]) == list(
        EXPECTED_BATCHED_RESPONSE_JSON["inferenceSubResponses"][0]["inferenceResponse"][
            "inferenceAndTokenData"
        ]
    )


def test_batched_response_parses_back_to_same_members() -> None:
    parsed = s.BatchedResponse.model_validate(EXPECTED_BATCHED_RESPONSE_JSON)
    assert parsed == _batched_response()
    by_name = parsed.inference_sub_responses[0].processing_response_data_by_name
    assert isinstance(by_name["topKComponents"], s.MultipleTopKDerivedScalarsResponseData)
    assert isinstance(by_name["upvotedOutputTokens"], s.ScoredTokensResponseData)
    assert isinstance(by_name["tokenPairAttribution"], s.TokenPairAttributionResponseData)
    assert isinstance(by_name["singleton"], s.DerivedScalarsResponseData)
    sums = by_name["topKComponents"].intermediate_sum_activations_by_dst_by_group_id
    assert isinstance(sums[s.GroupId.WRITE_NORM][s.DerivedScalarType.MLP_WRITE_NORM], s.Tensor2D)
    assert isinstance(
        sums[s.GroupId.WRITE_NORM][s.DerivedScalarType.RESID_POST_EMBEDDING_NORM], s.Tensor0D
    )


def test_response_data_without_discriminators_is_inferred_from_shape() -> None:
    body = copy.deepcopy(EXPECTED_BATCHED_RESPONSE_JSON)
    by_name = body["inferenceSubResponses"][0]["processingResponseDataByName"]
    for data in by_name.values():
        del data["responseDataType"]
    for tensor in by_name["topKComponents"]["intermediateSumActivationsByDstByGroupId"][
        "write_norm"
    ].values():
        del tensor["tensorType"]
    assert s.BatchedResponse.model_validate(body) == _batched_response()


def test_tensor_types() -> None:
    adapter_model = s.MultipleTopKDerivedScalarsResponseData
    body: dict[str, Any] = {
        "activationsByGroupId": {},
        "nodeIndices": [],
        "intermediateSumActivationsByDstByGroupId": {
            "logits": {
                "logits": {"tensorType": "tensor_1d", "value": [1, 2]},
                "mlp_post_act": {"tensorType": "tensor_3d", "value": [[[1.0]]]},
            }
        },
    }
    parsed = adapter_model.model_validate(body)
    sums = parsed.intermediate_sum_activations_by_dst_by_group_id[s.GroupId.LOGITS]
    assert isinstance(sums[s.DerivedScalarType.LOGITS], s.Tensor1D)
    assert isinstance(sums[s.DerivedScalarType.MLP_POST_ACT], s.Tensor3D)
    body["intermediateSumActivationsByDstByGroupId"]["logits"]["logits"]["tensorType"] = "tensor_9d"
    with pytest.raises(ValidationError):
        adapter_model.model_validate(body)


def test_multiple_top_k_response_consistency_checks() -> None:
    with pytest.raises(ValidationError, match="node indices"):
        s.MultipleTopKDerivedScalarsResponseData(
            activations_by_group_id={s.GroupId.WRITE_NORM: [1.0]},
            node_indices=[],
            intermediate_sum_activations_by_dst_by_group_id={},
        )
    with pytest.raises(ValidationError, match="finite"):
        s.MultipleTopKDerivedScalarsResponseData(
            activations_by_group_id={s.GroupId.WRITE_NORM: [float("nan")]},
            node_indices=[_NODE_MLP],
            intermediate_sum_activations_by_dst_by_group_id={},
        )
    with pytest.raises(ValidationError, match="finite"):
        s.TokenAndScalar(token="a", scalar=float("inf"), normalized_scalar=0.0)


def test_single_inference_responses_shape() -> None:
    token_data = s.InferenceAndTokenData(
        inference_time=1.0, memory_used_before=2.0, memory_used_after=3.0, tokens_as_ints=[1], tokens_as_strings=["a"]
    )  # fmt: skip
    attention_scalars = s.TokenAndAttentionScalars(
        token="a",
        scalars=[1.0],
        normalized_scalars=[1.0],
        total_scalar_in=1.0,
        normalized_total_scalar_in=1.0,
        max_scalar_in=1.0,
        normalized_max_scalar_in=1.0,
        total_scalar_out=1.0,
        normalized_total_scalar_out=1.0,
        max_scalar_out=1.0,
        normalized_max_scalar_out=1.0,
    )
    response = s.DerivedAttentionScalarsResponse(
        inference_and_token_data=token_data,
        derived_attention_scalars_response_data=s.DerivedAttentionScalarsResponseData(
            token_and_attention_scalars_list=[attention_scalars]
        ),
    )
    dumped = response.model_dump(mode="json")
    assert set(dumped) == {"inferenceAndTokenData", "derivedAttentionScalarsResponseData"}
    data = dumped["derivedAttentionScalarsResponseData"]
    assert data["responseDataType"] == "derived_attention_scalars_response_data"
    assert list(data["tokenAndAttentionScalarsList"][0]) == [
        "token",
        "scalars",
        "normalizedScalars",
        "totalScalarIn",
        "normalizedTotalScalarIn",
        "maxScalarIn",
        "normalizedMaxScalarIn",
        "totalScalarOut",
        "normalizedTotalScalarOut",
        "maxScalarOut",
        "normalizedMaxScalarOut",
    ]
    derived = s.DerivedScalarsResponse(
        inference_and_token_data=token_data,
        derived_scalars_response_data=s.DerivedScalarsResponseData(
            activations=[1.0],
            normalized_activations=[0.5],
            node_indices=[_NODE_MLP],
            top_tokens=None,
        ),
    ).model_dump(mode="json")
    assert derived["derivedScalarsResponseData"] == {
        "responseDataType": "derived_scalars_response_data",
        "activations": [1.0],
        "normalizedActivations": [0.5],
        "nodeIndices": [_NODE_MLP_JSON],
        "topTokens": None,
    }


def test_read_and_explainer_responses_shape() -> None:
    assert s.ModelInfoResponse(
        model_name="gpt2-small",
        has_mlp_autoencoder=False,
        mlp_autoencoder_name=None,
        has_attention_autoencoder=True,
        attention_autoencoder_name="ae-resid-delta-attn-v4",
        n_layers=12,
    ).model_dump(mode="json", exclude_none=True) == {
        "modelName": "gpt2-small",
        "hasMlpAutoencoder": False,
        "hasAttentionAutoencoder": True,
        "attentionAutoencoderName": "ae-resid-delta-attn-v4",
        "nLayers": 12,
    }
    assert s.ExplanationResult(explanations=["x"], dataset="https://d").model_dump(mode="json") == {
        "explanations": ["x"],
        "dataset": "https://d",
    }
    assert s.ScoreResult(score=0.5, dataset_path="https://d").model_dump(mode="json") == {
        "score": 0.5,
        "datasetPath": "https://d",
    }
    assert s.AttributedScoredExplanation(explanation="x", score=None, dataset_name="e").model_dump(
        mode="json"
    ) == {"explanation": "x", "score": None, "datasetName": "e"}
    record = s.NeuronRecordResponse(
        dataset="https://d",
        max_activation=2.0,
        top_activations=[[s.TokenAndScalar(token="a", scalar=2.0, normalized_scalar=1.0)]],
        random_sample=[],
    )
    assert record.model_dump(mode="json") == {
        "dataset": "https://d",
        "maxActivation": 2.0,
        "topActivations": [[{"token": "a", "scalar": 2.0, "normalizedScalar": 1.0}]],
        "randomSample": [],
    }
    head_record = s.AttentionHeadRecordResponse(
        dataset="https://d", max_attention_activation=1.0, most_positive_token_sequences=[], random_token_sequences=[]
    )  # fmt: skip
    assert head_record.model_dump(mode="json") == {
        "dataset": "https://d",
        "maxAttentionActivation": 1.0,
        "mostPositiveTokenSequences": [],
        "randomTokenSequences": [],
    }
    metadata = s.NeuronDatasetMetadata(
        short_name="gpt2-small", derived_scalar_type="mlp_post_act", user_visible_name="GPT-2 small", neuron_dataset_path="https://d"
    )  # fmt: skip
    assert metadata.model_dump(mode="json") == {
        "shortName": "gpt2-small",
        "derivedScalarType": "mlp_post_act",
        "userVisibleName": "GPT-2 small",
        "neuronDatasetPath": "https://d",
    }


########## Enums ##########


# The seed's DerivedScalarType values no request can ask its server for: they need
# DstConfig.node_index_for_attribution (or a single node's write), which the server never sets.
NOT_REQUESTABLE = {
    "attn_out_edge_attribution", "mlp_out_edge_attribution", "online_autoencoder_out_edge_attribution",
    "attn_query_in_edge_attribution", "attn_key_in_edge_attribution", "attn_value_in_edge_attribution",
    "mlp_in_edge_attribution", "online_autoencoder_in_edge_attribution", "token_out_edge_attribution",
    "attn_query_in_edge_activation", "attn_key_in_edge_activation", "mlp_in_edge_activation",
    "online_autoencoder_in_edge_activation", "single_node_write", "single_node_write_to_final_residual_grad",
    "grad_of_single_subnode_attribution",
}


def test_enum_values_match_seed() -> None:
    from neuron_explainer.debugger import scalars as sc

    # the seed's 106 values, less what cannot be requested, plus our residual-stream SAEs' and
    # transcoders' (8 each); each one is computed
    ours = {d.value for d in s.DerivedScalarType if d.value.startswith(("online_residual_autoencoder_", "residual_autoencoder_", "online_transcoder_", "transcoder_"))}
    assert len(ours) == 16
    assert len(s.DerivedScalarType) - len(ours) + len(NOT_REQUESTABLE) == 106
    assert {d.value for d in s.DerivedScalarType} == set(sc.SCALARS)
    assert not NOT_REQUESTABLE & set(sc.SCALARS)
    # every value the original client sends
    for value in ("mlp_post_act", "attn_write_norm", "unflattened_attn_write_norm", "vocab_token_write_to_input_direction",
                  "online_mlp_autoencoder_latent", "online_attention_autoencoder_latent", "mlp_autoencoder_latent",
                  "attention_autoencoder_latent", "flattened_attn_write_to_latent_summed_over_heads",
                  "attn_write_to_latent_summed_over_heads"):
        assert s.DerivedScalarType(value)
    assert (
        s.DerivedScalarType("unflattened_attn_write_norm")
        is s.DerivedScalarType.UNFLATTENED_ATTN_WRITE_NORM
    )
    assert s.ActivationLocationType.MLP_POST_ACT.value == "mlp.post_act"
    assert s.ActivationLocationType.RESID_FINAL_LAYER_NORM_SCALE.value == "resid.ln_f.scale"
    assert [t.value for t in s.AttentionTraceType] == ["Q", "K", "QK", "V"]
    assert [p.value for p in s.PassType] == ["forward", "backward"]
    assert len(s.NodeType) == 11 + 2 and len(s.ActivationLocationType) == 26 + 2  # + ours
    assert len(s.GroupId) == 11 and len(s.SpecType) == 7
    for enum_cls in (s.DerivedScalarType, s.NodeType, s.GroupId, s.SpecType, s.TensorType):
        assert issubclass(enum_cls, str) and issubclass(enum_cls, Enum)


########## Routes: the real app ##########
# The operation ids are what the original client was generated from ("{tag}-{function name}").

EXPECTED_OPERATION_IDS = {
    ("GET", "/"): "hello_world-read_root",
    ("GET", "/force_client_code_generation"): "hello_world-force_client_code_generation",
    ("POST", "/existing_explanations"): "read-existing_explanations",
    ("POST", "/neuron_record"): "read-neuron_record",
    ("POST", "/attention_head_record"): "read-attention_head_record",
    ("POST", "/neuron_datasets_metadata"): "read-neuron_datasets_metadata",
    ("POST", "/explain"): "explainer-explain",
    ("POST", "/score"): "explainer-score",
    ("POST", "/derived_scalars"): "inference-derived_scalars",
    ("POST", "/derived_attention_scalars"): "inference-derived_attention_scalars",
    ("POST", "/multiple_top_k_derived_scalars"): "inference-multiple_top_k_derived_scalars",
    ("POST", "/batched"): "inference-batched",
    ("POST", "/batched_tdb"): "inference-batched_tdb",
    ("POST", "/model_info"): "inference-model_info",
    ("POST", "/attribution_graph"): "graph-attribution_graph",
}

# The error statuses each route answers (413: any body over the limit, on every route).
EXPECTED_ERROR_STATUSES = {
    "/": {"413"},
    "/force_client_code_generation": {"413", "422"},
    "/model_info": {"413", "503"},
    "/neuron_datasets_metadata": {"413"},
    **{path: {"400", "413", "422", "503"} for path in (
        "/batched", "/batched_tdb", "/derived_scalars", "/derived_attention_scalars",
        "/multiple_top_k_derived_scalars", "/attribution_graph",
    )},
    **{path: {"400", "404", "413", "422", "503"} for path in (
        "/existing_explanations", "/neuron_record", "/attention_head_record", "/explain", "/score",
    )},
}  # fmt: skip


@pytest.fixture(scope="module")
def openapi() -> dict[str, Any]:
    from neuron_explainer.activation_server.main import create_app

    return create_app(None).openapi()


def _ref(schema: dict[str, Any]) -> str:
    """The model name a schema refers to (`list[X]` -> `list[X]`)."""
    if "$ref" in schema:
        return str(schema["$ref"]).rsplit("/", 1)[-1]
    if schema.get("type") == "array":
        return f"list[{_ref(schema['items'])}]"
    return str(schema.get("type"))


def _name(model: Any) -> str:
    if model is None:
        return "null"
    if getattr(model, "__origin__", None) is list:
        return f"list[{_name(model.__args__[0])}]"
    if model is str:
        return "string"
    if getattr(model, "__origin__", None) is dict:
        return "object"
    return str(model.__name__)


def test_the_app_serves_the_routes_table(openapi: dict[str, Any]) -> None:
    """Every route of `schemas.ROUTES`, and no other, with its operation id, body and answer."""
    served = {
        (method.upper(), path): operation
        for path, operations in openapi["paths"].items()
        for method, operation in operations.items()
    }
    assert {key: op["operationId"] for key, op in served.items()} == EXPECTED_OPERATION_IDS
    assert {(r.method, r.path): r.operation_id for r in s.ROUTES} == EXPECTED_OPERATION_IDS
    for route in s.ROUTES:
        operation = served[(route.method, route.path)]
        body = operation.get("requestBody")
        if route.request_model is None:
            assert body is None, route.path
        else:
            assert body["required"] is True, route.path
            assert _ref(body["content"]["application/json"]["schema"]) == _name(route.request_model)
        answer = operation["responses"]["200"]["content"]["application/json"]["schema"]
        if route.response_model is not None and route.response_model is not dict[str, str]:
            assert _ref(answer) == _name(route.response_model), route.path
        params = {p["name"]: p for p in operation.get("parameters", [])}
        assert set(params) == {name for name, _ in route.query_params}, route.path


def test_every_route_documents_its_error_statuses(openapi: dict[str, Any]) -> None:
    """The statuses the server really answers (schemathesis checks that none other comes back),
    each with the one error body: {"message": ..., "detail"?: [...]}."""
    for path, operations in openapi["paths"].items():
        for operation in operations.values():
            errors = {code for code in operation["responses"] if code != "200"}
            assert errors == EXPECTED_ERROR_STATUSES[path], path
            for code in errors:
                schema = operation["responses"][code]["content"]["application/json"]["schema"]
                assert _ref(schema) == "ErrorResponse", (path, code)
    error = openapi["components"]["schemas"]["ErrorResponse"]
    assert error["required"] == ["message"]
    assert "HTTPValidationError" not in openapi["components"]["schemas"]  # FastAPI's default body


def test_bounds_are_in_the_schema(openapi: dict[str, Any]) -> None:
    """Clients see every bound the server enforces: counts, k, sizes, index ranges."""
    schemas = openapi["components"]["schemas"]

    def prop(model: str, field: str) -> dict[str, Any]:
        p = schemas[model]["properties"][field]
        return p.get("anyOf", [p])[0]  # `X | None` fields: the X

    assert prop("BatchedTdbRequest", "subRequests").items() >= {"minItems": 1, "maxItems": 8}.items()
    assert prop("BatchedRequest", "inferenceSubRequests")["maxItems"] == 8
    assert prop("TdbRequestSpec", "topAndBottomKForNodeTable").items() >= {"minimum": 1, "maximum": 200}.items()
    assert prop("MultipleTopKDerivedScalarsRequestSpec", "topAndBottomK")["maximum"] == 200
    assert prop("NodeIdAndDatasets", "datasets")["maxItems"] == s.MAX_DATASETS
    assert prop("NodeIdAndDatasets", "layerIndex")["minimum"] == 0
    assert prop("AblationSpec", "value")["maximum"] == s.FLOAT32_MAX
    assert prop("ScoredTokensRequestSpec", "numTokens")["maximum"] == s.MAX_TOP_TOKENS
    groups = prop("MultipleTopKDerivedScalarsRequestSpec", "dstListByGroupId")
    assert groups["additionalProperties"]["minItems"] == 1
    indices = prop("MirroredNodeIndex", "tensorIndices")
    assert indices["maxItems"] == s.MAX_TENSOR_INDICES
    assert indices["items"]["anyOf"][0]["maximum"] == s.MAX_SAFE_INTEGER
    assert "tokens" in prop("TdbRequestSpec", "prompt")["description"]
    assert "1048576 bytes" in openapi["info"]["description"]


def test_flags_change_the_documented_bounds() -> None:
    from neuron_explainer.activation_server.limits import Limits
    from neuron_explainer.activation_server.main import create_app

    document = create_app(None, limits=Limits(max_sub_requests=3, max_prompt_tokens=50)).openapi()
    schemas = document["components"]["schemas"]
    assert schemas["BatchedTdbRequest"]["properties"]["subRequests"]["maxItems"] == 3
    assert "at most 50 tokens" in schemas["InferenceRequestSpec"]["properties"]["prompt"]["description"]
    with pytest.raises(ValueError, match="max-sub-requests"):
        Limits(max_sub_requests=s.MAX_SUB_REQUESTS + 1)


def test_the_app_answers_bad_bodies_in_the_error_format() -> None:
    from fastapi.testclient import TestClient

    from neuron_explainer.activation_server.main import create_app

    client = TestClient(create_app(None))
    bad = copy.deepcopy(TDB_INITIAL_LOAD)
    bad["subRequests"][0]["componentTypeForAttention"] = "banana-head"
    response = client.post("/batched_tdb", json=bad)
    assert response.status_code == 422
    body = response.json()
    assert body["detail"][0]["loc"] == ["body", "subRequests", 0, "componentTypeForAttention"]
    assert body["message"].startswith("subRequests.0.componentTypeForAttention: ")
    assert "banana" not in response.text  # the input is not echoed
    assert all("input" not in d for d in body["detail"])
    response = client.get("/force_client_code_generation", params={"group_id": "nope"})
    assert response.status_code == 422 and "group_id" in response.json()["message"]
    # many problems: the first ten, and how many more
    response = client.post(
        "/neuron_record",
        json={"dst": 1, "layerIndex": "a", "activationIndex": "b", "datasets": [1] * 16},
    )
    body = response.json()
    assert response.status_code == 422 and len(body["detail"]) == 10
    assert body["message"].endswith("and 9 more problems")
