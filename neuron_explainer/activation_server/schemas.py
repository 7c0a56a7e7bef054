"""Wire schemas (pydantic v2) for every route of the activation server.

The models here define the JSON contract shared with the TDB / neuron viewer web client: field
names are camelCase on the wire (snake_case in Python), enum members serialize to their string
values and polymorphic payloads carry a discriminator field (``specType``, ``responseDataType``,
``tensorType``).

Compatibility notes:
- The original server used pydantic v1, where a field annotated ``X | None`` without a default was
  optional. Such fields get an explicit ``= None`` here so that the same bodies are accepted.
- The client never sends ``specType``; the processing request spec union therefore picks its member
  from the keys that are present (see ``_processing_request_spec_tag``).
- Unknown fields are ignored (as in v1); unknown enum values and missing required fields fail
  validation, which FastAPI turns into a 422 naming the offending field.

Layout: shared enums, index types, token types, then one section per group of routes, then the
``ROUTES`` table and the ``operation_id`` helper.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum, StrEnum
from typing import Annotated, Any, Literal, Protocol

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    PlainSerializer,
    Tag,
    WithJsonSchema,
    field_validator,
    model_validator,
)
from pydantic.alias_generators import to_camel

from neuron_explainer.debugger.graph.graph_file import AttributionGraphFile

########## Base classes ##########


class CamelModel(BaseModel):
    """Base for all wire models: camelCase aliases, accepts either spelling, dumps by alias."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        serialize_by_alias=True,
    )


class ImmutableCamelModel(CamelModel):
    """CamelModel whose instances are frozen (and hashable when all field values are)."""

    model_config = ConfigDict(frozen=True)


def _lookup(value: Any, snake_name: str) -> Any:
    """Read a field from a raw dict (camelCase or snake_case key) or from a model instance."""
    if isinstance(value, dict):
        camel_name = to_camel(snake_name)
        if camel_name in value:
            return value[camel_name]
        return value.get(snake_name)
    return getattr(value, snake_name, None)


def _has_key(value: dict[str, Any], snake_name: str) -> bool:
    return to_camel(snake_name) in value or snake_name in value


def _tag_value(raw: Any) -> str:
    return raw.value if isinstance(raw, Enum) else str(raw)


########## Bounds on requests ##########
# Every list, map and count a client sends is bounded, and the bounds are in the OpenAPI document
# (minItems, maxItems, minimum, maximum...), so a hostile body is refused by validation before any
# work (and a request that fits the schema is a reasonable one). The server's flags may lower the
# bounds on sub-requests and tokens per prompt (see `limits.py`), never raise them past these.

MAX_SUB_REQUESTS = 64
"""Sub-requests of one /batched or /batched_tdb request (a prompt each; clients send at most 4)."""
MAX_NODE_TABLE_K = 200
"""Top and bottom k of one top-k step: each kept node costs a row of vocabulary scores."""
MAX_TOP_TOKENS = 1000
"""Vocabulary tokens (top and bottom each) or attended-to tokens listed per node."""
MAX_ABLATIONS = 256
MAX_TOKENS_LISTED = 64
"""Target or distractor tokens of one loss."""
MAX_TOKEN_CHARS = 1000
"""Characters of one target or distractor token (a single token of the vocabulary)."""
MAX_TENSOR_INDICES = 4
"""More than any activation has (3: query token, key token, head)."""
MAX_PROCESSING_STEPS = 32
MAX_NAME_CHARS = 256
"""A dataset, explanation dataset or processing step name."""
MAX_DATASETS = 16
MAX_EXPLANATION_CHARS = 10_000
MAX_SEQUENCES = 1000
FLOAT32_MAX = 3.4028234663852886e38
"""Ablation values must be representable in float32, the widest type the model computes in."""

MAX_SAFE_INTEGER = 2**53 - 1
"""Integers on the wire are at most this in size: every JSON parser (JavaScript's included)
reads them exactly, and the bound itself is exact as a double, as JSON Schema validators read it."""

SafeInt = Annotated[int, Field(ge=-MAX_SAFE_INTEGER, le=MAX_SAFE_INTEGER)]
Name = Annotated[str, Field(max_length=MAX_NAME_CHARS)]
TokenText = Annotated[str, Field(max_length=MAX_TOKEN_CHARS)]
AblationValue = Annotated[float, Field(ge=-FLOAT32_MAX, le=FLOAT32_MAX)]
NonNegativeIndex = Annotated[int, Field(ge=0, le=MAX_SAFE_INTEGER)]
TensorIndices = Annotated[tuple[SafeInt | None, ...], Field(max_length=MAX_TENSOR_INDICES)]


########## Model component enums ##########


class PassType(StrEnum):
    """Whether a quantity comes from the forward or the backward pass."""

    FORWARD = "forward"
    BACKWARD = "backward"


class NodeType(StrEnum):
    """Kind of model component that carries one scalar per token (or token pair)."""

    ATTENTION_HEAD = "attention_head"
    QK_CHANNEL = "qk_channel"
    V_CHANNEL = "v_channel"
    MLP_NEURON = "mlp_neuron"
    AUTOENCODER_LATENT = "autoencoder_latent"
    MLP_AUTOENCODER_LATENT = "mlp_autoencoder_latent"
    ATTENTION_AUTOENCODER_LATENT = "attention_autoencoder_latent"
    AUTOENCODER_LATENT_BY_TOKEN_PAIR = "autoencoder_latent_by_token_pair"
    # not in the original server: community SAEs on the residual stream, and transcoders
    RESIDUAL_AUTOENCODER_LATENT = "residual_autoencoder_latent"
    TRANSCODER_LATENT = "transcoder_latent"
    LAYER = "layer"
    RESIDUAL_STREAM_CHANNEL = "residual_stream_channel"
    VOCAB_TOKEN = "vocab_token"


class ActivationLocationType(StrEnum):
    """Named activation tensors recorded during a forward pass."""

    RESID_POST_EMBEDDING = "resid.post_emb"
    RESID_DELTA_ATTN = "resid.delta_attn"
    RESID_POST_ATTN = "resid.post_attn"
    RESID_DELTA_MLP = "resid.delta_mlp"
    RESID_POST_MLP = "resid.post_mlp"
    RESID_POST_MLP_LAYER_NORM = "resid.post_mlp_ln"
    RESID_POST_ATTN_LAYER_NORM = "resid.post_attn_ln"
    RESID_POST_FINAL_LAYER_NORM = "resid.post_ln_f"
    MLP_INPUT_LAYER_NORM_SCALE = "mlp_ln.scale"
    ATTN_INPUT_LAYER_NORM_SCALE = "attn_ln.scale"
    RESID_FINAL_LAYER_NORM_SCALE = "resid.ln_f.scale"
    ATTN_QUERY = "attn.q"
    ATTN_KEY = "attn.k"
    ATTN_VALUE = "attn.v"
    ATTN_QK_LOGITS = "attn.qk_logits"
    ATTN_QK_PROBS = "attn.qk_probs"
    ATTN_WEIGHTED_SUM_OF_VALUES = "attn.v_out"
    MLP_PRE_ACT = "mlp.pre_act"
    MLP_POST_ACT = "mlp.post_act"
    LOGITS = "logits"
    ONLINE_AUTOENCODER_LATENT = "online_autoencoder_latent"
    ONLINE_MLP_AUTOENCODER_LATENT = "online_mlp_autoencoder_latent"
    ONLINE_ATTENTION_AUTOENCODER_LATENT = "online_attention_autoencoder_latent"
    ONLINE_RESIDUAL_AUTOENCODER_LATENT = "online_residual_autoencoder_latent"  # ours
    ONLINE_TRANSCODER_LATENT = "online_transcoder_latent"  # ours
    ONLINE_MLP_AUTOENCODER_ERROR = "online_mlp_autoencoder_error"
    ONLINE_RESIDUAL_MLP_AUTOENCODER_ERROR = "online_residual_mlp_autoencoder_error"
    ONLINE_RESIDUAL_ATTENTION_AUTOENCODER_ERROR = "online_residual_attention_autoencoder_error"


class Dimension(StrEnum):
    """Names of tensor dimensions (token dimensions, model dimensions, autoencoder dimensions)."""

    SEQUENCE_TOKENS = "sequence_tokens"
    ATTENDED_TO_SEQUENCE_TOKENS = "attended_to_sequence_tokens"
    MAX_CONTEXT_LENGTH = "max_context_length"
    RESIDUAL_STREAM_CHANNELS = "residual_stream_channels"
    VOCAB_SIZE = "vocab_size"
    ATTN_HEADS = "attn_heads"
    QUERY_AND_KEY_CHANNELS = "query_and_key_channels"
    VALUE_CHANNELS = "value_channels"
    MLP_ACTS = "mlp_acts"
    LAYERS = "layers"
    SINGLETON = "singleton"
    AUTOENCODER_LATENTS = "autoencoder_latents"
    AUTOENCODER_LATENTS_BY_TOKEN_PAIR = "autoencoder_latents_by_token_pair"


class DerivedScalarType(StrEnum):
    """Every scalar quantity the server computes (raw activations and derived ones; the
    definitions are the seed's, see debugger/scalars). The seed's edge attributions and
    activations and single-node writes are not here: they need a node the seed's server never
    sets from a request (DstConfig.node_index_for_attribution), so no request could ask for them."""

    LOGITS = "logits"
    RESID_POST_EMBEDDING = "resid_post_embedding"
    MLP_PRE_ACT = "mlp_pre_act"
    MLP_POST_ACT = "mlp_post_act"
    RESID_DELTA_MLP = "resid_delta_mlp"
    RESID_POST_MLP = "resid_post_mlp"
    ATTN_QUERY = "attn_query"
    ATTN_KEY = "attn_key"
    ATTN_VALUE = "attn_value"
    ATTN_QK_LOGITS = "attn_qk_logits"
    ATTN_QK_PROBS = "attn_qk_probs"
    ATTN_WEIGHTED_SUM_OF_VALUES = "attn_weighted_sum_of_values"
    RESID_DELTA_ATTN = "resid_delta_attn"
    RESID_POST_ATTN = "resid_post_attn"
    RESID_FINAL_LAYER_NORM_SCALE = "resid_final_layer_norm_scale"
    ATTN_INPUT_LAYER_NORM_SCALE = "attn_input_layer_norm_scale"
    MLP_INPUT_LAYER_NORM_SCALE = "mlp_input_layer_norm_scale"
    ONLINE_AUTOENCODER_LATENT = "online_autoencoder_latent"
    ATTN_WRITE_NORM = "attn_write_norm"
    FLATTENED_ATTN_POST_SOFTMAX = "flattened_attn_post_softmax"
    ATTN_ACT_TIMES_GRAD = "attn_act_times_grad"
    RESID_DELTA_MLP_FROM_MLP_POST_ACT = "resid_delta_mlp_from_mlp_post_act"
    MLP_WRITE_NORM = "mlp_write_norm"
    MLP_ACT_TIMES_GRAD = "mlp_act_times_grad"
    AUTOENCODER_LATENT = "autoencoder_latent"
    AUTOENCODER_WRITE_NORM = "autoencoder_write_norm"
    MLP_WRITE_TO_FINAL_RESIDUAL_GRAD = "mlp_write_to_final_residual_grad"
    ATTN_WRITE_NORM_PER_SEQUENCE_TOKEN = "attn_write_norm_per_sequence_token"
    ATTN_WRITE_TO_FINAL_RESIDUAL_GRAD_PER_SEQUENCE_TOKEN = (
        "attn_write_to_final_residual_grad_per_sequence_token"
    )
    ATTN_ACT_TIMES_GRAD_PER_SEQUENCE_TOKEN = "attn_act_times_grad_per_sequence_token"
    RESID_POST_EMBEDDING_NORM = "resid_post_embedding_norm"
    RESID_POST_MLP_NORM = "resid_post_mlp_norm"
    MLP_LAYER_WRITE_NORM = "mlp_layer_write_norm"
    RESID_POST_ATTN_NORM = "resid_post_attn_norm"
    ATTN_LAYER_WRITE_NORM = "attn_layer_write_norm"
    RESID_POST_EMBEDDING_PROJ_TO_FINAL_RESIDUAL_GRAD = (
        "resid_post_embedding_proj_to_final_residual_grad"
    )
    RESID_POST_MLP_PROJ_TO_FINAL_RESIDUAL_GRAD = "resid_post_mlp_proj_to_final_residual_grad"
    MLP_LAYER_WRITE_TO_FINAL_RESIDUAL_GRAD = "mlp_layer_write_to_final_residual_grad"
    RESID_POST_ATTN_PROJ_TO_FINAL_RESIDUAL_GRAD = "resid_post_attn_proj_to_final_residual_grad"
    ATTN_LAYER_WRITE_TO_FINAL_RESIDUAL_GRAD = "attn_layer_write_to_final_residual_grad"
    UNFLATTENED_ATTN_ACT_TIMES_GRAD = "unflattened_attn_act_times_grad"
    UNFLATTENED_ATTN_WRITE_NORM = "unflattened_attn_write_norm"
    UNFLATTENED_ATTN_WRITE_TO_FINAL_RESIDUAL_GRAD = "unflattened_attn_write_to_final_residual_grad"
    ATTN_WRITE_TO_FINAL_RESIDUAL_GRAD = "attn_write_to_final_residual_grad"
    ONLINE_AUTOENCODER_ACT_TIMES_GRAD = "online_autoencoder_act_times_grad"
    ONLINE_AUTOENCODER_WRITE_NORM = "online_autoencoder_write_norm"
    ONLINE_AUTOENCODER_WRITE_TO_FINAL_RESIDUAL_GRAD = (
        "online_autoencoder_write_to_final_residual_grad"
    )
    ONLINE_MLP_AUTOENCODER_ERROR = "online_mlp_autoencoder_error"
    ONLINE_RESIDUAL_MLP_AUTOENCODER_ERROR = "online_residual_mlp_autoencoder_error"
    ONLINE_RESIDUAL_ATTENTION_AUTOENCODER_ERROR = "online_residual_attention_autoencoder_error"
    ONLINE_MLP_AUTOENCODER_ERROR_ACT_TIMES_GRAD = "online_mlp_autoencoder_error_act_times_grad"
    ONLINE_MLP_AUTOENCODER_ERROR_WRITE_NORM = "online_mlp_autoencoder_error_write_norm"
    ONLINE_MLP_AUTOENCODER_ERROR_WRITE_TO_FINAL_RESIDUAL_GRAD = (
        "online_mlp_autoencoder_error_write_to_final_residual_grad"
    )
    ATTN_WRITE = "attn_write"
    ATTN_WRITE_SUM_HEADS = "attn_write_sum_heads"
    MLP_WRITE = "mlp_write"
    ONLINE_AUTOENCODER_WRITE = "online_autoencoder_write"
    ATTN_WEIGHTED_VALUE = "attn_weighted_value"
    PREVIOUS_LAYER_RESID_POST_MLP = "previous_layer_resid_post_mlp"
    MLP_WRITE_TO_FINAL_ACTIVATION_RESIDUAL_GRAD = "mlp_write_to_final_activation_residual_grad"
    UNFLATTENED_ATTN_WRITE_TO_FINAL_ACTIVATION_RESIDUAL_GRAD = (
        "unflattened_attn_write_to_final_activation_residual_grad"
    )
    ONLINE_AUTOENCODER_WRITE_TO_FINAL_ACTIVATION_RESIDUAL_GRAD = (
        "online_autoencoder_write_to_final_activation_residual_grad"
    )
    RESID_POST_EMBEDDING_PROJ_TO_FINAL_ACTIVATION_RESIDUAL_GRAD = (
        "resid_post_embedding_proj_to_final_activation_residual_grad"
    )
    AUTOENCODER_LATENT_GRAD_WRT_RESIDUAL_INPUT = "autoencoder_latent_grad_wrt_residual_input"
    AUTOENCODER_LATENT_GRAD_WRT_MLP_POST_ACT_INPUT = (
        "autoencoder_latent_grad_wrt_mlp_post_act_input"
    )
    ATTN_WRITE_TO_LATENT = "attn_write_to_latent"
    ATTN_WRITE_TO_LATENT_SUMMED_OVER_HEADS = "attn_write_to_latent_summed_over_heads"
    FLATTENED_ATTN_WRITE_TO_LATENT_SUMMED_OVER_HEADS = (
        "flattened_attn_write_to_latent_summed_over_heads"
    )
    FLATTENED_ATTN_WRITE_TO_LATENT_SUMMED_OVER_HEADS_BATCHED = (
        "flattened_attn_write_to_latent_summed_over_heads_batched"
    )
    ATTN_WRITE_TO_LATENT_PER_SEQUENCE_TOKEN = "attn_write_to_latent_per_sequence_token"
    ATTN_WRITE_TO_LATENT_PER_SEQUENCE_TOKEN_BATCHED = (
        "attn_write_to_latent_per_sequence_token_batched"
    )
    TOKEN_ATTRIBUTION = "token_attribution"
    VOCAB_TOKEN_WRITE_TO_INPUT_DIRECTION = "vocab_token_write_to_input_direction"
    ALWAYS_ONE = "always_one"
    MLP_AUTOENCODER_LATENT = "mlp_autoencoder_latent"
    MLP_AUTOENCODER_WRITE_NORM = "mlp_autoencoder_write_norm"
    ONLINE_MLP_AUTOENCODER_LATENT = "online_mlp_autoencoder_latent"
    ONLINE_MLP_AUTOENCODER_WRITE = "online_mlp_autoencoder_write"
    ONLINE_MLP_AUTOENCODER_WRITE_NORM = "online_mlp_autoencoder_write_norm"
    ONLINE_MLP_AUTOENCODER_ACT_TIMES_GRAD = "online_mlp_autoencoder_act_times_grad"
    ONLINE_MLP_AUTOENCODER_WRITE_TO_FINAL_RESIDUAL_GRAD = (
        "online_mlp_autoencoder_write_to_final_residual_grad"
    )
    ONLINE_MLP_AUTOENCODER_WRITE_TO_FINAL_ACTIVATION_RESIDUAL_GRAD = (
        "online_mlp_autoencoder_write_to_final_activation_residual_grad"
    )
    ATTENTION_AUTOENCODER_LATENT = "attention_autoencoder_latent"
    ATTENTION_AUTOENCODER_WRITE_NORM = "attention_autoencoder_write_norm"
    ONLINE_ATTENTION_AUTOENCODER_LATENT = "online_attention_autoencoder_latent"
    ONLINE_ATTENTION_AUTOENCODER_WRITE = "online_attention_autoencoder_write"
    ONLINE_ATTENTION_AUTOENCODER_WRITE_NORM = "online_attention_autoencoder_write_norm"
    ONLINE_ATTENTION_AUTOENCODER_ACT_TIMES_GRAD = "online_attention_autoencoder_act_times_grad"
    ONLINE_ATTENTION_AUTOENCODER_WRITE_TO_FINAL_RESIDUAL_GRAD = (
        "online_attention_autoencoder_write_to_final_residual_grad"
    )
    ONLINE_ATTENTION_AUTOENCODER_WRITE_TO_FINAL_ACTIVATION_RESIDUAL_GRAD = (
        "online_attention_autoencoder_write_to_final_activation_residual_grad"
    )
    # not in the original server: residual-stream SAEs' and transcoders' latents
    ONLINE_RESIDUAL_AUTOENCODER_LATENT = "online_residual_autoencoder_latent"
    ONLINE_RESIDUAL_AUTOENCODER_WRITE = "online_residual_autoencoder_write"
    ONLINE_RESIDUAL_AUTOENCODER_WRITE_NORM = "online_residual_autoencoder_write_norm"
    ONLINE_RESIDUAL_AUTOENCODER_ACT_TIMES_GRAD = "online_residual_autoencoder_act_times_grad"
    ONLINE_RESIDUAL_AUTOENCODER_WRITE_TO_FINAL_RESIDUAL_GRAD = "online_residual_autoencoder_write_to_final_residual_grad"
    ONLINE_RESIDUAL_AUTOENCODER_WRITE_TO_FINAL_ACTIVATION_RESIDUAL_GRAD = "online_residual_autoencoder_write_to_final_activation_residual_grad"
    RESIDUAL_AUTOENCODER_LATENT = "residual_autoencoder_latent"
    RESIDUAL_AUTOENCODER_WRITE_NORM = "residual_autoencoder_write_norm"
    ONLINE_TRANSCODER_LATENT = "online_transcoder_latent"
    ONLINE_TRANSCODER_WRITE = "online_transcoder_write"
    ONLINE_TRANSCODER_WRITE_NORM = "online_transcoder_write_norm"
    ONLINE_TRANSCODER_ACT_TIMES_GRAD = "online_transcoder_act_times_grad"
    ONLINE_TRANSCODER_WRITE_TO_FINAL_RESIDUAL_GRAD = "online_transcoder_write_to_final_residual_grad"
    ONLINE_TRANSCODER_WRITE_TO_FINAL_ACTIVATION_RESIDUAL_GRAD = "online_transcoder_write_to_final_activation_residual_grad"
    TRANSCODER_LATENT = "transcoder_latent"
    TRANSCODER_WRITE_NORM = "transcoder_write_norm"


# None means "no layer" (embeddings, logits, final layer norm).
LayerIndex = SafeInt | None

########## Indices: nodes, activations, ablations, tracing ##########

# An activation index entry is either a concrete position or the string "All" (a full slice).
AllOrOneIndex = SafeInt | Literal["All"]
AllOrOneIndices = tuple[AllOrOneIndex, ...]
BoundedAllOrOneIndices = Annotated[AllOrOneIndices, Field(max_length=MAX_TENSOR_INDICES)]


class MirroredNodeIndex(ImmutableCamelModel):
    """Identifies one node (e.g. neuron at token t); None entries in tensorIndices mean 'all'."""

    node_type: NodeType
    tensor_indices: TensorIndices
    layer_index: LayerIndex = None
    pass_type: PassType


class MirroredActivationIndex(ImmutableCamelModel):
    """Identifies (a slice of) an activation tensor; "All" in tensorIndices means a full slice."""

    activation_location_type: ActivationLocationType
    tensor_indices: BoundedAllOrOneIndices
    layer_index: LayerIndex = None
    pass_type: PassType


class MirroredDerivedScalarIndex(ImmutableCamelModel):
    """Identifies (a slice of) a derived scalar tensor; None entries mean a full slice."""

    dst: DerivedScalarType
    tensor_indices: TensorIndices
    layer_index: LayerIndex = None
    pass_type: PassType


class AblationSpec(ImmutableCamelModel):
    """Overwrite the activation(s) at ``index`` with ``value`` during inference."""

    index: MirroredActivationIndex
    value: AblationValue


class NodeAblation(ImmutableCamelModel):
    """Client-side ablation of one node; the server converts it to an AblationSpec."""

    node_index: MirroredNodeIndex
    value: AblationValue


class AttentionTraceType(StrEnum):
    """Which part of an attention head a gradient is traced through."""

    Q = "Q"
    K = "K"
    QK = "QK"
    V = "V"


class PreOrPostAct(StrEnum):
    """Trace from before or after the nonlinearity."""

    PRE = "pre"
    POST = "post"


class MirroredTraceConfig(ImmutableCamelModel):
    """Node whose activation the backward pass starts from (optionally via a downstream node)."""

    node_index: MirroredNodeIndex
    pre_or_post_act: PreOrPostAct
    detach_layer_norm_scale: bool
    attention_trace_type: AttentionTraceType | None = None
    downstream_trace_config: MirroredTraceConfig | None = None


class NodeToTrace(ImmutableCamelModel):
    """Client-side description of a node to trace gradients from (TDB 'trace upstream')."""

    node_index: MirroredNodeIndex
    attention_trace_type: AttentionTraceType | None = None
    downstream_trace_config: MirroredTraceConfig | None = None


########## Tokens ##########


class TokenAndRawScalar(ImmutableCamelModel):
    """A token string with one finite scalar."""

    token: str
    scalar: float

    @field_validator("scalar")
    @classmethod
    def _scalar_is_finite(cls, value: float) -> float:
        if not math.isfinite(value):
            raise ValueError("Scalar value must be a finite number")
        return value


class TokenAndScalar(TokenAndRawScalar):
    """A token string with a scalar and the scalar normalized to [0, 1]."""

    normalized_scalar: float

    @field_validator("normalized_scalar")
    @classmethod
    def _normalized_scalar_is_finite(cls, value: float) -> float:
        if not math.isfinite(value):
            raise ValueError("Normalized scalar value must be a finite number")
        return value


class TopTokens(ImmutableCamelModel):
    """Highest- and lowest-scoring vocab tokens for one node, sorted by |scalar|."""

    top: list[TokenAndScalar]
    bottom: list[TokenAndScalar]


class TokenAndRawAttentionScalars(ImmutableCamelModel):
    """A token with one scalar per attended-to token (before normalization)."""

    token: str
    scalars: list[float]


class TokenAndAttentionScalars(TokenAndRawAttentionScalars):
    """A token with per-attended-to-token scalars plus normalized and summarized variants."""

    normalized_scalars: list[float]
    total_scalar_in: float
    normalized_total_scalar_in: float
    max_scalar_in: float
    normalized_max_scalar_in: float
    total_scalar_out: float
    normalized_total_scalar_out: float
    max_scalar_out: float
    normalized_max_scalar_out: float


########## Shared request/response building blocks ##########


class SpecType(StrEnum):
    """Discriminator values of the processing request specs (and the TDB request spec)."""

    ACTIVATIONS_REQUEST_SPEC = "activations_request_spec"
    DERIVED_SCALARS_REQUEST_SPEC = "derived_scalars_request_spec"
    DERIVED_ATTENTION_SCALARS_REQUEST_SPEC = "derived_attention_scalars_request_spec"
    MULTIPLE_TOP_K_DERIVED_SCALARS_REQUEST_SPEC = "multiple_top_k_derived_scalars_request_spec"
    SCORED_TOKENS_REQUEST_SPEC = "scored_tokens_request_spec"
    TDB_REQUEST_SPEC = "tdb_request_spec"
    TOKEN_PAIR_ATTRIBUTION_REQUEST_SPEC = "token_pair_attribution_request_spec"


class ProcessingResponseDataType(StrEnum):
    """Discriminator values of the processing response data variants."""

    DERIVED_SCALARS_RESPONSE_DATA = "derived_scalars_response_data"
    DERIVED_ATTENTION_SCALARS_RESPONSE_DATA = "derived_attention_scalars_response_data"
    MULTIPLE_TOP_K_DERIVED_SCALARS_RESPONSE_DATA = "multiple_top_k_derived_scalars_response_data"
    SCORED_TOKENS_RESPONSE_DATA = "scored_tokens_response_data"
    TOKEN_PAIR_ATTRIBUTION_RESPONSE_DATA = "token_pair_attribution_response_data"


class LossFnName(StrEnum):
    """Loss functions the backward pass can start from."""

    LOGIT_DIFF = "logit_diff"
    LOGIT_MINUS_MEAN = "logit_minus_mean"
    PROBS = "probs"
    ZERO = "zero"


class LossFnConfig(CamelModel):
    """Loss function (and its target/distractor tokens) for the backward pass."""

    name: LossFnName
    target_tokens: Annotated[list[TokenText], Field(max_length=MAX_TOKENS_LISTED)] | None = None
    distractor_tokens: Annotated[list[TokenText], Field(max_length=MAX_TOKENS_LISTED)] | None = None


class InferenceRequestSpec(ImmutableCamelModel):
    """How to run one forward (and optional backward) pass: prompt, ablations, loss or trace."""

    prompt: str
    ablation_specs: Annotated[list[AblationSpec], Field(max_length=MAX_ABLATIONS)] | None = None
    # lossFnConfig and traceConfig are mutually exclusive.
    loss_fn_config: LossFnConfig | None = None
    trace_config: MirroredTraceConfig | None = None
    activation_index_for_within_layer_grad: MirroredActivationIndex | None = None


class InferenceRequest(ImmutableCamelModel):
    """Base of the single (non-batched) inference requests."""

    inference_request_spec: InferenceRequestSpec


class InferenceData(CamelModel):
    """Timing, memory and loss information about one inference pass."""

    inference_time: float
    memory_used_before: float | None = None
    memory_used_after: float | None = None
    log: str | None = None
    loss: float | None = None
    activation_value_for_backward_pass: float | None = None


class InferenceAndTokenData(InferenceData):
    """InferenceData plus the prompt's tokens (as ids and as strings)."""

    model_config = ConfigDict(frozen=True)

    tokens_as_ints: list[int]
    tokens_as_strings: list[str]


class InferenceResponse(ImmutableCamelModel):
    """Base of the single (non-batched) inference responses."""

    inference_and_token_data: InferenceAndTokenData


class GroupId(StrEnum):
    """Names of the groups in a multiple top-k request (keys of dstListByGroupId)."""

    ACT_TIMES_GRAD = "act_times_grad"
    ACTIVATION = "activation"
    DIRECT_WRITE_TO_GRAD = "direct_write_to_grad"
    DIRECTION_WRITE = "direction_write"
    LOGITS = "logits"
    MLP_LAYER_WRITE = "mlp_layer_write"
    SINGLETON = "singleton"
    TOKEN_WRITE = "token_write"
    TOKEN_READ = "token_read"
    WRITE_NORM = "write_norm"
    TOKEN_PAIR_ATTRIBUTION = "token_pair_attribution"

    @property
    def exclude_bottom_k(self) -> bool:
        """True for groups whose scalars are (mostly) non-negative: only the top k matter."""
        return self in {GroupId.WRITE_NORM, GroupId.ACTIVATION, GroupId.LOGITS}


########## Tensors ##########


class TensorType(StrEnum):
    """Discriminator values of the Tensor{0,1,2,3}D models."""

    TENSOR_0D = "tensor_0d"
    TENSOR_1D = "tensor_1d"
    TENSOR_2D = "tensor_2d"
    TENSOR_3D = "tensor_3d"


def _as_built(value: Any) -> Any:
    return value


def _nested_numbers(depth: int) -> WithJsonSchema:
    schema: dict[str, Any] = {"type": "number"}
    for _ in range(depth):
        schema = {"items": schema, "type": "array"}
    return WithJsonSchema({**schema, "title": "Value"})


# A tensor's values: nested lists of floats, validated as such; sent as the server built them
# (`wire_floats`: floats, and 0 for the zeros of display-resolution sums) without pydantic
# walking every number again, under the JSON schema of nested floats.
_SENT_AS_BUILT = PlainSerializer(_as_built, return_type=Any, when_used="json")
Values1D = Annotated[list[float], _SENT_AS_BUILT, _nested_numbers(1)]
Values2D = Annotated[list[list[float]], _SENT_AS_BUILT, _nested_numbers(2)]
Values3D = Annotated[list[list[list[float]]], _SENT_AS_BUILT, _nested_numbers(3)]


class Tensor0D(ImmutableCamelModel):
    """A scalar sent as JSON."""

    tensor_type: Literal[TensorType.TENSOR_0D] = TensorType.TENSOR_0D
    value: float


class Tensor1D(ImmutableCamelModel):
    """A vector sent as a JSON list."""

    tensor_type: Literal[TensorType.TENSOR_1D] = TensorType.TENSOR_1D
    value: Values1D


class Tensor2D(ImmutableCamelModel):
    """A matrix sent as nested JSON lists."""

    tensor_type: Literal[TensorType.TENSOR_2D] = TensorType.TENSOR_2D
    value: Values2D


class Tensor3D(ImmutableCamelModel):
    """A rank-3 tensor sent as nested JSON lists."""

    tensor_type: Literal[TensorType.TENSOR_3D] = TensorType.TENSOR_3D
    value: Values3D


def _tensor_tag(value: Any) -> str | None:
    """Pick the Tensor model from tensorType, or else from the nesting depth of value."""
    tensor_type = _lookup(value, "tensor_type")
    if tensor_type is not None:
        return _tag_value(tensor_type)
    if not isinstance(value, dict) or not _has_key(value, "value"):
        return None
    depth, inner = 0, _lookup(value, "value")
    while isinstance(inner, (list, tuple)):
        depth += 1
        inner = inner[0] if inner else None
    return f"tensor_{min(depth, 3)}d"


TensorND = Annotated[
    Annotated[Tensor0D, Tag(TensorType.TENSOR_0D.value)]
    | Annotated[Tensor1D, Tag(TensorType.TENSOR_1D.value)]
    | Annotated[Tensor2D, Tag(TensorType.TENSOR_2D.value)]
    | Annotated[Tensor3D, Tag(TensorType.TENSOR_3D.value)],
    Discriminator(_tensor_tag),
]

########## /model_info ##########


class ModelInfoResponse(ImmutableCamelModel):
    """Which subject model (and autoencoders) the server runs."""

    model_name: str | None = None
    has_mlp_autoencoder: bool
    mlp_autoencoder_name: str | None = None
    has_attention_autoencoder: bool
    attention_autoencoder_name: str | None = None
    n_layers: int
    # not in the original server: the family and the shapes a viewer needs
    family: str | None = None
    d_model: int | None = None
    n_heads: int | None = None
    n_kv_heads: int | None = None
    d_head: int | None = None
    d_mlp: int | None = None
    n_vocab: int | None = None
    ctx_window: int | None = None
    n_mlp_autoencoder_latents: int | None = None
    n_attention_autoencoder_latents: int | None = None
    n_residual_autoencoder_latents: int | None = None  # residual-stream SAEs (per layer)
    n_transcoder_latents: int | None = None
    # layers with residual-stream SAEs / transcoders attached
    residual_autoencoder_layers: list[int] | None = None
    transcoder_layers: list[int] | None = None


########## Node + dataset identification (read and explainer routes) ##########


class NodeIdAndDatasets(ImmutableCamelModel):
    """A node (dst, layer, index) plus the neuron datasets (paths or short names) to look in."""

    dst: DerivedScalarType
    layer_index: NonNegativeIndex
    activation_index: NonNegativeIndex
    datasets: Annotated[list[Name], Field(min_length=1, max_length=MAX_DATASETS)]


########## /derived_scalars ##########


class DerivedScalarsRequestSpec(ImmutableCamelModel):
    """Per-token values of one derived scalar for one component (optionally normalized)."""

    spec_type: Literal[SpecType.DERIVED_SCALARS_REQUEST_SPEC] = (
        SpecType.DERIVED_SCALARS_REQUEST_SPEC
    )
    dst: DerivedScalarType
    layer_index: LayerIndex = None
    activation_index: NonNegativeIndex
    # If set, the response includes activations scaled by that record's max activation.
    normalize_activations_using_neuron_record: NodeIdAndDatasets | None = None
    pass_type: PassType = PassType.FORWARD
    # If set, the response includes this many top and bottom tokens for the component.
    num_top_tokens: Annotated[int, Field(ge=0, le=MAX_TOP_TOKENS)] | None = None


class DerivedScalarsRequest(InferenceRequest):
    """Body of /derived_scalars."""

    derived_scalars_request_spec: DerivedScalarsRequestSpec


class DerivedScalarsResponseData(ImmutableCamelModel):
    """Per-token values (and optional normalized values / top tokens) for one component."""

    response_data_type: Literal[ProcessingResponseDataType.DERIVED_SCALARS_RESPONSE_DATA] = (
        ProcessingResponseDataType.DERIVED_SCALARS_RESPONSE_DATA
    )
    activations: list[float]
    normalized_activations: list[float] | None = None
    node_indices: list[MirroredNodeIndex]
    top_tokens: TopTokens | None = None


class DerivedScalarsResponse(InferenceResponse):
    """Response of /derived_scalars."""

    derived_scalars_response_data: DerivedScalarsResponseData


########## /derived_attention_scalars ##########


class DerivedAttentionScalarsRequestSpec(ImmutableCamelModel):
    """Per-token-pair values of one attention derived scalar for one head."""

    spec_type: Literal[SpecType.DERIVED_ATTENTION_SCALARS_REQUEST_SPEC] = (
        SpecType.DERIVED_ATTENTION_SCALARS_REQUEST_SPEC
    )
    dst: DerivedScalarType
    layer_index: LayerIndex = None
    activation_index: NonNegativeIndex
    normalize_activations_using_neuron_record: NodeIdAndDatasets | None = None


class DerivedAttentionScalarsRequest(InferenceRequest):
    """Body of /derived_attention_scalars."""

    derived_attention_scalars_request_spec: DerivedAttentionScalarsRequestSpec


class DerivedAttentionScalarsResponseData(ImmutableCamelModel):
    """Attention scalars for each token of the prompt."""

    response_data_type: Literal[
        ProcessingResponseDataType.DERIVED_ATTENTION_SCALARS_RESPONSE_DATA
    ] = ProcessingResponseDataType.DERIVED_ATTENTION_SCALARS_RESPONSE_DATA
    token_and_attention_scalars_list: list[TokenAndAttentionScalars]


class DerivedAttentionScalarsResponse(InferenceResponse):
    """Response of /derived_attention_scalars."""

    derived_attention_scalars_response_data: DerivedAttentionScalarsResponseData


########## /multiple_top_k_derived_scalars ##########

_DEFAULT_DIMENSIONS_TO_KEEP = (Dimension.SEQUENCE_TOKENS, Dimension.ATTENDED_TO_SEQUENCE_TOKENS)


class TopKParams(ImmutableCamelModel):
    """One top-k operation (internal; derived from a MultipleTopKDerivedScalarsRequestSpec)."""

    dst_list: list[DerivedScalarType]
    token_index: int | None = None
    top_and_bottom_k: int | None = None
    pass_type: PassType = PassType.FORWARD
    exclude_bottom_k: bool = False
    dimensions_to_keep_for_intermediate_sum: list[Dimension] = Field(
        default_factory=lambda: list(_DEFAULT_DIMENSIONS_TO_KEEP)
    )


class MultipleTopKDerivedScalarsRequestSpec(ImmutableCamelModel):
    """Top/bottom-k nodes ranked jointly over several groups of derived scalars."""

    spec_type: Literal[SpecType.MULTIPLE_TOP_K_DERIVED_SCALARS_REQUEST_SPEC] = (
        SpecType.MULTIPLE_TOP_K_DERIVED_SCALARS_REQUEST_SPEC
    )
    # Each group lists one DST per node type; all groups cover the same node types.
    dst_list_by_group_id: dict[
        GroupId, Annotated[list[DerivedScalarType], Field(min_length=1, max_length=len(NodeType))]
    ]
    token_index: SafeInt | None = None
    # None: every node, which the server refuses when there are more than MAX_NODE_TABLE_K.
    top_and_bottom_k: Annotated[int, Field(ge=1, le=MAX_NODE_TABLE_K)] | None = None
    pass_type: PassType = PassType.FORWARD
    dimensions_to_keep_for_intermediate_sum: list[Dimension] = Field(
        default_factory=lambda: list(_DEFAULT_DIMENSIONS_TO_KEEP), max_length=len(Dimension)
    )

    def get_top_k_params_for_group_id(self, group_id: GroupId) -> TopKParams:
        """The single top-k operation this spec implies for ``group_id``."""
        return TopKParams(
            dst_list=self.dst_list_by_group_id[group_id],
            token_index=self.token_index,
            top_and_bottom_k=self.top_and_bottom_k,
            pass_type=self.pass_type,
            exclude_bottom_k=group_id.exclude_bottom_k,
            dimensions_to_keep_for_intermediate_sum=self.dimensions_to_keep_for_intermediate_sum,
        )


class MultipleTopKDerivedScalarsRequest(InferenceRequest):
    """Body of /multiple_top_k_derived_scalars."""

    multiple_top_k_derived_scalars_request_spec: MultipleTopKDerivedScalarsRequestSpec


class MultipleTopKDerivedScalarsResponseData(ImmutableCamelModel):
    """Top-k nodes with one activation list per group, plus per-DST sums over all nodes."""

    response_data_type: Literal[
        ProcessingResponseDataType.MULTIPLE_TOP_K_DERIVED_SCALARS_RESPONSE_DATA
    ] = ProcessingResponseDataType.MULTIPLE_TOP_K_DERIVED_SCALARS_RESPONSE_DATA
    # Parallel to node_indices, for every group.
    activations_by_group_id: dict[GroupId, list[float]]
    node_indices: list[MirroredNodeIndex]
    # Parallel to node_indices when any node is a vocab token; None otherwise.
    vocab_token_strings_for_indices: list[str | None] | None = None
    # Sum over all nodes (not just the top k), keeping the requested dimensions.
    intermediate_sum_activations_by_dst_by_group_id: dict[
        GroupId, dict[DerivedScalarType, TensorND]
    ]

    @model_validator(mode="after")
    def _check_consistency(self) -> MultipleTopKDerivedScalarsResponseData:
        n_nodes = len(self.node_indices)
        for group_id, activations in self.activations_by_group_id.items():
            if len(activations) != n_nodes:
                raise ValueError(
                    f"group {group_id.value}: {len(activations)} activations "
                    f"for {n_nodes} node indices"
                )
            if not all(math.isfinite(activation) for activation in activations):
                raise ValueError(f"group {group_id.value}: activations must be finite")
        vocab_strings = self.vocab_token_strings_for_indices
        if vocab_strings is not None and len(vocab_strings) != n_nodes:
            raise ValueError(f"{len(vocab_strings)} vocab token strings for {n_nodes} node indices")
        return self


class MultipleTopKDerivedScalarsResponse(InferenceResponse):
    """Response of /multiple_top_k_derived_scalars."""

    multiple_top_k_derived_scalars_response_data: MultipleTopKDerivedScalarsResponseData


########## Scored tokens (only inside batched requests) ##########


class TokenScoringType(StrEnum):
    """How vocab tokens are scored against a node."""

    UPVOTED_OUTPUT_TOKENS = "upvoted_output_tokens"
    INPUT_TOKENS_THAT_UPVOTE_MLP = "input_tokens_that_upvote_mlp"
    INPUT_TOKENS_THAT_UPVOTE_ATTN_Q = "input_tokens_that_upvote_attn_q"
    INPUT_TOKENS_THAT_UPVOTE_ATTN_K = "input_tokens_that_upvote_attn_k"


class ScoredTokensRequestSpec(ImmutableCamelModel):
    """Top/bottom tokens for every node selected by another (top-k) spec of the request."""

    spec_type: Literal[SpecType.SCORED_TOKENS_REQUEST_SPEC] = SpecType.SCORED_TOKENS_REQUEST_SPEC
    token_scoring_type: TokenScoringType
    # e.g. 10 -> 10 top and 10 bottom tokens.
    num_tokens: Annotated[int, Field(ge=1, le=MAX_TOP_TOKENS)]
    # Name of the spec (in the same sub-request) whose nodes, DSTs and configs are reused.
    depends_on_spec_name: Name


class ScoredTokensRequest(InferenceRequest):
    """Stand-alone scored tokens request (no route uses it; kept for parity)."""

    scored_tokens_request_spec: ScoredTokensRequestSpec


class ScoredTokensResponseData(ImmutableCamelModel):
    """Top tokens per node; None where the scoring type does not apply to the node."""

    response_data_type: Literal[ProcessingResponseDataType.SCORED_TOKENS_RESPONSE_DATA] = (
        ProcessingResponseDataType.SCORED_TOKENS_RESPONSE_DATA
    )
    node_indices: list[MirroredNodeIndex]
    top_tokens_list: list[TopTokens | None]


class ScoredTokensResponse(InferenceResponse):
    """Stand-alone scored tokens response (no route uses it; kept for parity)."""

    scored_tokens_response_data: ScoredTokensResponseData


########## Token pair attribution (only inside batched requests) ##########


class TopTokensAttendedTo(ImmutableCamelModel):
    """Sequence positions most attributed for one attention node, with their attributions."""

    token_indices: list[int]
    attributions: list[float]


class TokenPairAttributionRequestSpec(ImmutableCamelModel):
    """Most-attended-to tokens for every node selected by another (top-k) spec."""

    spec_type: Literal[SpecType.TOKEN_PAIR_ATTRIBUTION_REQUEST_SPEC] = (
        SpecType.TOKEN_PAIR_ATTRIBUTION_REQUEST_SPEC
    )
    num_tokens_attended_to: Annotated[int, Field(ge=1, le=MAX_TOP_TOKENS)]
    depends_on_spec_name: Name


class TokenPairAttributionRequest(InferenceRequest):
    """Stand-alone token pair attribution request (no route uses it; kept for parity)."""

    token_pair_attribution_request_spec: TokenPairAttributionRequestSpec


class TokenPairAttributionResponseData(ImmutableCamelModel):
    """Attended-to tokens per node; None where attribution does not apply to the node."""

    response_data_type: Literal[ProcessingResponseDataType.TOKEN_PAIR_ATTRIBUTION_RESPONSE_DATA] = (
        ProcessingResponseDataType.TOKEN_PAIR_ATTRIBUTION_RESPONSE_DATA
    )
    node_indices: list[MirroredNodeIndex]
    top_tokens_attended_to_list: list[TopTokensAttendedTo | None]


class TokenPairAttributionResponse(InferenceResponse):
    """Stand-alone token pair attribution response (no route uses it; kept for parity)."""

    token_pair_attribution_response_data: TokenPairAttributionResponseData


########## /batched ##########

_SpecT = SpecType
_DataT = ProcessingResponseDataType


def _processing_request_spec_tag(value: Any) -> str | None:
    """Choose the processing request spec model.

    ``specType`` wins when present (an unknown value is reported as an invalid tag). The client
    never sends it, so otherwise the keys decide; a spec with none of the distinguishing keys is a
    derived scalars spec, which is what the original (pydantic v1, first-match union) server
    chose, so a derived attention scalars spec inside /batched needs an explicit specType.
    """
    spec_type = _lookup(value, "spec_type")
    if spec_type is not None:
        return _tag_value(spec_type)
    if not isinstance(value, dict):
        return None
    if _has_key(value, "dst_list_by_group_id"):
        return SpecType.MULTIPLE_TOP_K_DERIVED_SCALARS_REQUEST_SPEC.value
    if _has_key(value, "token_scoring_type"):
        return SpecType.SCORED_TOKENS_REQUEST_SPEC.value
    if _has_key(value, "num_tokens_attended_to"):
        return SpecType.TOKEN_PAIR_ATTRIBUTION_REQUEST_SPEC.value
    return SpecType.DERIVED_SCALARS_REQUEST_SPEC.value


def _processing_response_data_tag(value: Any) -> str | None:
    """Choose the processing response data model from responseDataType, else from the keys."""
    data_type = _lookup(value, "response_data_type")
    if data_type is not None:
        return _tag_value(data_type)
    if not isinstance(value, dict):
        return None
    # The first key found decides ("activations" alone means derived scalars).
    for key, data_type in (
        ("activations_by_group_id", _DataT.MULTIPLE_TOP_K_DERIVED_SCALARS_RESPONSE_DATA),
        ("token_and_attention_scalars_list", _DataT.DERIVED_ATTENTION_SCALARS_RESPONSE_DATA),
        ("top_tokens_list", _DataT.SCORED_TOKENS_RESPONSE_DATA),
        ("top_tokens_attended_to_list", _DataT.TOKEN_PAIR_ATTRIBUTION_RESPONSE_DATA),
        ("activations", _DataT.DERIVED_SCALARS_RESPONSE_DATA),
    ):
        if _has_key(value, key):
            return data_type.value
    return None


ProcessingRequestSpec = Annotated[
    Annotated[
        MultipleTopKDerivedScalarsRequestSpec,
        Tag(_SpecT.MULTIPLE_TOP_K_DERIVED_SCALARS_REQUEST_SPEC.value),
    ]
    | Annotated[DerivedScalarsRequestSpec, Tag(_SpecT.DERIVED_SCALARS_REQUEST_SPEC.value)]
    | Annotated[
        DerivedAttentionScalarsRequestSpec,
        Tag(_SpecT.DERIVED_ATTENTION_SCALARS_REQUEST_SPEC.value),
    ]
    | Annotated[ScoredTokensRequestSpec, Tag(_SpecT.SCORED_TOKENS_REQUEST_SPEC.value)]
    | Annotated[
        TokenPairAttributionRequestSpec, Tag(_SpecT.TOKEN_PAIR_ATTRIBUTION_REQUEST_SPEC.value)
    ],
    Discriminator(_processing_request_spec_tag),
]

ProcessingResponseData = Annotated[
    Annotated[
        MultipleTopKDerivedScalarsResponseData,
        Tag(_DataT.MULTIPLE_TOP_K_DERIVED_SCALARS_RESPONSE_DATA.value),
    ]
    | Annotated[DerivedScalarsResponseData, Tag(_DataT.DERIVED_SCALARS_RESPONSE_DATA.value)]
    | Annotated[
        DerivedAttentionScalarsResponseData,
        Tag(_DataT.DERIVED_ATTENTION_SCALARS_RESPONSE_DATA.value),
    ]
    | Annotated[ScoredTokensResponseData, Tag(_DataT.SCORED_TOKENS_RESPONSE_DATA.value)]
    | Annotated[
        TokenPairAttributionResponseData, Tag(_DataT.TOKEN_PAIR_ATTRIBUTION_RESPONSE_DATA.value)
    ],
    Discriminator(_processing_response_data_tag),
]


class InferenceSubRequest(ImmutableCamelModel):
    """One inference pass plus named processing steps applied to its activations."""

    inference_request_spec: InferenceRequestSpec
    processing_request_spec_by_name: dict[Name, ProcessingRequestSpec] = Field(
        default_factory=dict, max_length=MAX_PROCESSING_STEPS
    )


class InferenceResponseAndResponseDict(ImmutableCamelModel):
    """Result of one sub-request: inference data plus one result per processing step name."""

    inference_response: InferenceResponse
    processing_response_data_by_name: dict[str, ProcessingResponseData] = Field(
        default_factory=dict
    )


class BatchedRequest(ImmutableCamelModel):
    """Body of /batched: sub-requests run together (top-k results are unioned by spec name)."""

    inference_sub_requests: Annotated[
        list[InferenceSubRequest], Field(min_length=1, max_length=MAX_SUB_REQUESTS)
    ]


class BatchedResponse(ImmutableCamelModel):
    """Response of /batched and /batched_tdb: one entry per sub-request, in order."""

    inference_sub_responses: list[InferenceResponseAndResponseDict]


########## /batched_tdb ##########


class ComponentTypeForMlp(StrEnum):
    """Unit shown for MLP layers in the TDB node table."""

    NEURON = "neuron"
    AUTOENCODER_LATENT = "autoencoder_latent"
    TRANSCODER_LATENT = "transcoder_latent"  # ours: the MLP as its transcoder's latents


class ComponentTypeForAttention(StrEnum):
    """Unit shown for attention layers in the TDB node table."""

    ATTENTION_HEAD = "attention_head"
    AUTOENCODER_LATENT = "autoencoder_latent"


class TdbRequestSpec(ImmutableCamelModel):
    """Everything the TDB UI lets the user choose for one prompt."""

    spec_type: Literal[SpecType.TDB_REQUEST_SPEC] = SpecType.TDB_REQUEST_SPEC
    prompt: str
    target_tokens: Annotated[list[TokenText], Field(max_length=MAX_TOKENS_LISTED)]
    distractor_tokens: Annotated[list[TokenText], Field(max_length=MAX_TOKENS_LISTED)]
    component_type_for_mlp: ComponentTypeForMlp
    component_type_for_attention: ComponentTypeForAttention
    # Number of top and bottom nodes per node-table column.
    top_and_bottom_k_for_node_table: Annotated[int, Field(ge=1, le=MAX_NODE_TABLE_K)]
    # Drop layers before the first ablated layer from the results.
    hide_early_layers_when_ablating: bool
    node_ablations: Annotated[list[NodeAblation], Field(max_length=MAX_ABLATIONS)] | None = None
    # Node whose gradient is computed (instead of the loss).
    upstream_node_to_trace: NodeToTrace | None = None
    # Only with an upstream attention node traced through V: the gradient target downstream.
    downstream_node_to_trace: NodeToTrace | None = None
    # ours: also list the latents of the residual-stream SAEs in the node table
    include_residual_latents: bool = False


class BatchedTdbRequest(ImmutableCamelModel):
    """Body of /batched_tdb."""

    sub_requests: Annotated[list[TdbRequestSpec], Field(min_length=1, max_length=MAX_SUB_REQUESTS)]


########## Read routes ##########


class ExistingExplanationsRequest(ImmutableCamelModel):
    """Body of /existing_explanations: exactly one of explanationDatasets / neuronDataset."""

    dst: DerivedScalarType
    layer_index: NonNegativeIndex
    activation_index: NonNegativeIndex
    explanation_datasets: Annotated[list[Name], Field(max_length=MAX_DATASETS)]
    neuron_dataset: Name | None = None


class AttributedScoredExplanation(ImmutableCamelModel):
    """One stored explanation with its score (None if undefined) and source dataset name."""

    explanation: str
    score: float | None = None
    dataset_name: str


class NeuronRecordResponse(ImmutableCamelModel):
    """Response of /neuron_record: top-activating and random sequences for a node."""

    dataset: str
    max_activation: float
    top_activations: list[list[TokenAndScalar]]
    random_sample: list[list[TokenAndScalar]]


class AttentionHeadRecordResponse(ImmutableCamelModel):
    """Response of /attention_head_record: top and random sequences with attention scalars."""

    dataset: str
    max_attention_activation: float
    most_positive_token_sequences: list[list[TokenAndAttentionScalars]]
    random_token_sequences: list[list[TokenAndAttentionScalars]]


class NeuronDatasetMetadata(ImmutableCamelModel):
    """One entry of /neuron_datasets_metadata."""

    short_name: str
    derived_scalar_type: str
    user_visible_name: str
    neuron_dataset_path: str


########## Explainer routes ##########


class ExplanationResult(ImmutableCamelModel):
    """Response of /explain."""

    explanations: list[str]
    dataset: str


class ScoreRequest(NodeIdAndDatasets):
    """Body of /score: a node, its datasets and the explanation to score."""

    explanation: Annotated[str, Field(max_length=MAX_EXPLANATION_CHARS)]
    max_sequences: Annotated[int, Field(ge=1, le=MAX_SEQUENCES)] | None = None


class ScoreResult(ImmutableCamelModel):
    """Response of /score."""

    score: float
    dataset_path: str


class ActivationCategory(StrEnum):
    """Whether an explained node behaves like a neuron or like an attention head."""

    NEURON = "neuron"
    ATTENTION_HEAD = "attention_head"


########## Attribution graphs ##########

MAX_GRAPH_PROMPT_CHARS = 100_000
MAX_GRAPH_LOGITS = 50
MAX_GRAPH_FEATURE_NODES = 20_000
"""Feature nodes of one graph: its adjacency is (features + errors + tokens + logits) squared."""
MAX_GRAPH_BATCH_SIZE = 1024


def _integral(value: Any) -> Any:
    """JSON Schema's integers include 3.0; booleans and strings are not numbers."""
    return int(value) if isinstance(value, float) and value.is_integer() else value


# Numbers as JSON Schema reads them: no coercion from booleans or strings (the bounds come before
# the validator, so that the schema shows them as minimum / maximum)
GraphLogits = Annotated[int, Field(strict=True, ge=1, le=MAX_GRAPH_LOGITS), BeforeValidator(_integral)]
GraphFeatureNodes = Annotated[int, Field(strict=True, ge=0, le=MAX_GRAPH_FEATURE_NODES), BeforeValidator(_integral)]
GraphBatchSize = Annotated[int, Field(strict=True, ge=1, le=MAX_GRAPH_BATCH_SIZE), BeforeValidator(_integral)]
Fraction = Annotated[float, Field(strict=True, ge=0.0, le=1.0)]


class AttributionGraphRequest(CamelModel):
    """Body of /attribution_graph: a prompt and what to explain of its next token.

    The target: no `targetTokens`, the top logits (as many as reach `desiredLogitProb` of the
    probability, at most `maxNLogits`); `targetTokens` alone, those logits; with
    `distractorTokens`, the debugger's logit difference (mean of the targets' logits minus the
    mean of the distractors'). Each token must be a single token of the vocabulary."""

    prompt: Annotated[str, Field(min_length=1, max_length=MAX_GRAPH_PROMPT_CHARS)]
    target_tokens: Annotated[list[TokenText], Field(min_length=1, max_length=MAX_TOKENS_LISTED)] | None = None
    distractor_tokens: Annotated[list[TokenText], Field(min_length=1, max_length=MAX_TOKENS_LISTED)] | None = None
    max_n_logits: GraphLogits = 10
    desired_logit_prob: Annotated[float, Field(strict=True, gt=0.0, le=1.0)] = 0.95
    max_feature_nodes: GraphFeatureNodes = 7500
    batch_size: GraphBatchSize = 256
    node_threshold: Fraction = 0.8
    edge_threshold: Fraction = 0.98
    prepend_bos: Annotated[bool, Field(strict=True)] = True
    """Put a start token first when the prompt has none (position 0 is left out of the graph)."""
    slug: Annotated[str, Field(min_length=1, max_length=MAX_NAME_CHARS, pattern=r"^[A-Za-z0-9._-]+$")] | None = None


class AttributionGraphResponse(CamelModel):
    """Response of /attribution_graph: the pruned graph in Neuronpedia's graph JSON (its field
    names as the format has them), seconds per stage, and counts."""

    graph: AttributionGraphFile
    timings: dict[str, float]
    n_active_features: int
    n_feature_nodes: int
    n_backward_passes: int


########## Routes ##########


@dataclass(frozen=True)
class RouteSpec:
    """One route of the server. ``name`` is the handler's function name in the seed server;
    together with ``tag`` it forms the operation id ``{tag}-{name}`` the web client was
    generated from. ``request_model`` is the JSON body model (None: no body); GET routes may
    instead take ``query_params``."""

    method: str
    path: str
    tag: str
    name: str
    request_model: Any
    response_model: Any
    query_params: tuple[tuple[str, Any], ...] = ()

    @property
    def tags(self) -> list[str]:
        return [self.tag]

    @property
    def operation_id(self) -> str:
        return operation_id(self)


class _NamedTaggedRoute(Protocol):
    @property
    def tags(self) -> Sequence[Any]: ...

    @property
    def name(self) -> str: ...


def operation_id(route: _NamedTaggedRoute) -> str:
    """Operation id ``{first tag}-{handler name}``; use as FastAPI's generate_unique_id_function."""
    tags = list(route.tags or [])
    if not tags:
        return route.name
    tag = tags[0]
    return f"{tag.value if isinstance(tag, Enum) else tag}-{route.name}"


ROUTES: tuple[RouteSpec, ...] = (
    # hello_world / memory (main.py)
    RouteSpec("GET", "/", "hello_world", "read_root", None, dict[str, str]),
    RouteSpec(
        "GET",
        "/force_client_code_generation",
        "hello_world",
        "force_client_code_generation",
        None,
        None,
        query_params=(("group_id", GroupId),),
    ),
    # (the seed's GET /dump_memory_snapshot wrote a CUDA memory snapshot to the server's disk and
    # answered its path; the client never calls it, and answers never name local paths)
    # read (read_routes.py)
    RouteSpec(
        "POST",
        "/existing_explanations",
        "read",
        "existing_explanations",
        ExistingExplanationsRequest,
        list[AttributedScoredExplanation],
    ),
    RouteSpec(
        "POST", "/neuron_record", "read", "neuron_record", NodeIdAndDatasets, NeuronRecordResponse
    ),
    RouteSpec(
        "POST",
        "/attention_head_record",
        "read",
        "attention_head_record",
        NodeIdAndDatasets,
        AttentionHeadRecordResponse,
    ),
    RouteSpec(
        "POST",
        "/neuron_datasets_metadata",
        "read",
        "neuron_datasets_metadata",
        None,
        list[NeuronDatasetMetadata],
    ),
    # explainer (explainer_routes.py)
    RouteSpec("POST", "/explain", "explainer", "explain", NodeIdAndDatasets, ExplanationResult),
    RouteSpec("POST", "/score", "explainer", "score", ScoreRequest, ScoreResult),
    # inference (inference_routes.py)
    RouteSpec(
        "POST",
        "/derived_scalars",
        "inference",
        "derived_scalars",
        DerivedScalarsRequest,
        DerivedScalarsResponse,
    ),
    RouteSpec(
        "POST",
        "/derived_attention_scalars",
        "inference",
        "derived_attention_scalars",
        DerivedAttentionScalarsRequest,
        DerivedAttentionScalarsResponse,
    ),
    RouteSpec(
        "POST",
        "/multiple_top_k_derived_scalars",
        "inference",
        "multiple_top_k_derived_scalars",
        MultipleTopKDerivedScalarsRequest,
        MultipleTopKDerivedScalarsResponse,
    ),
    RouteSpec("POST", "/batched", "inference", "batched", BatchedRequest, BatchedResponse),
    RouteSpec(
        "POST", "/batched_tdb", "inference", "batched_tdb", BatchedTdbRequest, BatchedResponse
    ),
    RouteSpec("POST", "/model_info", "inference", "model_info", None, ModelInfoResponse),
    # graph (graph_routes.py)
    RouteSpec(
        "POST",
        "/attribution_graph",
        "graph",
        "attribution_graph",
        AttributionGraphRequest,
        AttributionGraphResponse,
    ),
)

ROUTES_BY_PATH: dict[str, RouteSpec] = {route.path: route for route in ROUTES}
