"""Read routes: neuron records, attention head records, dataset metadata, stored explanations.

The contract is the seed's (`read_routes.py` there): same paths, bodies, responses and the same
normalisation of the values the client colours tokens by. Datasets are looked up in a
`DatasetRegistry`; a request can only name registered datasets (see `activations.datasets`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

from fastapi import APIRouter

from neuron_explainer.activation_server import schemas as S
from neuron_explainer.activation_server.errors import (
    NotFound,
    RequestError,
    ServiceUnavailable,
    error_responses,
)
from neuron_explainer.activation_server.limits import StrictJSONRoute
from neuron_explainer.activations.datasets import (
    DatasetEntry,
    DatasetNotFound,
    DatasetRegistry,
    InvalidDatasetName,
    RecordNotFound,
    RecordUnavailable,
)
from neuron_explainer.activations.records import (
    ActivationRecord,
    NeuronRecord,
    RecordFormatError,
    unflatten_token_pair_activations,
)

__all__ = [
    "load_record_from_datasets",
    "make_read_router",
    "normalize_attention_sequence",
    "normalize_attention_token_scalars",
    "normalize_token_scalars",
    "token_and_attention_scalars_for_records",
]


# --- normalisation (the seed's, value for value) -------------------------------------------------


def _finite(x: float) -> float:
    return x if math.isfinite(x) else 0.0


def _scale(peak: float) -> Callable[[float], float]:
    """x -> max(x / (peak - 1e-5), 0), as the seed's `create_scale_linear`; 0 for a peak of 0."""
    if peak <= 0:
        return lambda x: 0.0
    return lambda x: _finite(max(x / (peak - 1e-5), 0.0))


def normalize_token_scalars(
    groups: Sequence[Sequence[ActivationRecord]],
) -> list[list[list[S.TokenAndScalar]]]:
    """Per group (e.g. top, random), per sequence, per token: the raw value and the value divided
    by the largest non-negative value over all groups, floored at 0."""
    peak = max(
        (max(v, 0.0) for g in groups for r in g for v in r.activations if math.isfinite(v)),
        default=0.0,
    )
    scale = _scale(peak)
    return [
        [
            [
                S.TokenAndScalar(token=t, scalar=_finite(v), normalized_scalar=scale(_finite(v)))
                for t, v in zip(r.tokens, r.activations, strict=False)
            ]
            for r in g
        ]
        for g in groups
    ]


def normalize_attention_token_scalars(
    groups: Sequence[Sequence[Sequence[S.TokenAndRawAttentionScalars]]],
) -> list[list[list[S.TokenAndAttentionScalars]]]:
    """The seed's attention normalisation. Input: per group, per sequence, per query token, its
    values over the keys it sees. Each value is divided by the largest non-negative value over
    everything; for each token the sum and max of its values (in: as a query) and of the values
    of later queries at its position (out: as a key) are given raw and divided by the largest
    non-negative such summary over everything, floored at 0."""

    def summaries(seq: Sequence[S.TokenAndRawAttentionScalars]) -> list[tuple[float, ...]]:
        rows = [[_finite(v) for v in tok.scalars] for tok in seq]
        out: list[tuple[float, ...]] = []
        for j, row in enumerate(rows):
            column = [rows[i][j] for i in range(j, len(rows)) if j < len(rows[i])]
            out.append(
                (
                    sum(row),
                    max(row) if row else 0.0,
                    sum(column),
                    max(column) if column else 0.0,
                )
            )
        return out

    per_group = [[summaries(seq) for seq in g] for g in groups]
    peak = max(
        (max(_finite(v), 0.0) for g in groups for seq in g for tok in seq for v in tok.scalars),
        default=0.0,
    )
    scale = _scale(peak)
    summary_scales = [
        _scale(max((max(s[i], 0.0) for g in per_group for seq in g for s in seq), default=0.0))
        for i in range(4)
    ]
    result = []
    for g, g_sums in zip(groups, per_group, strict=True):
        group_out = []
        for seq, seq_sums in zip(g, g_sums, strict=True):
            seq_out = []
            for tok, (t_in, m_in, t_out, m_out) in zip(seq, seq_sums, strict=True):
                values = [_finite(v) for v in tok.scalars]
                seq_out.append(
                    S.TokenAndAttentionScalars(
                        token=tok.token,
                        scalars=values,
                        normalized_scalars=[scale(v) for v in values],
                        total_scalar_in=t_in,
                        normalized_total_scalar_in=summary_scales[0](t_in),
                        max_scalar_in=m_in,
                        normalized_max_scalar_in=summary_scales[1](m_in),
                        total_scalar_out=t_out,
                        normalized_total_scalar_out=summary_scales[2](t_out),
                        max_scalar_out=m_out,
                        normalized_max_scalar_out=summary_scales[3](m_out),
                    )
                )
            group_out.append(seq_out)
        result.append(group_out)
    return result


def _raw_attention_sequence(record: ActivationRecord) -> list[S.TokenAndRawAttentionScalars]:
    try:
        rows = unflatten_token_pair_activations(record)
    except RecordFormatError as e:
        raise RecordFormatError(f"not a token-pair record: {e}") from None
    return [
        S.TokenAndRawAttentionScalars(token=t, scalars=[_finite(v) for v in row])
        for t, row in zip(record.tokens, rows, strict=True)
    ]


def normalize_attention_sequence(
    sequence: Sequence[S.TokenAndRawAttentionScalars], record: NeuronRecord | None = None
) -> list[S.TokenAndAttentionScalars]:
    """One prompt's per-token attention values, normalised as the seed's
    /derived_attention_scalars does: with `record` (from `normalizeActivationsUsingNeuronRecord`),
    the record's top sequences join the normalisation, so values are scaled like the record's."""
    groups: list[list[list[S.TokenAndRawAttentionScalars]]] = [[list(sequence)]]
    if record is not None:
        groups.append([_raw_attention_sequence(r) for r in record.most_positive_activation_records])
    return normalize_attention_token_scalars(groups)[0][0]


def token_and_attention_scalars_for_records(
    groups: Sequence[Sequence[ActivationRecord]],
) -> list[list[list[S.TokenAndAttentionScalars]]]:
    """Token-pair records (flattened lower triangles) -> the normalised per-token structure."""
    return normalize_attention_token_scalars(
        [[_raw_attention_sequence(r) for r in g] for g in groups]
    )


# --- loading ----------------------------------------------------------------------------------


def _resolve(registry: DatasetRegistry, name: str, dst: str, field: str) -> DatasetEntry:
    try:
        return registry.resolve(name, dst, field)
    except InvalidDatasetName as e:
        raise RequestError(str(e)) from None
    except DatasetNotFound as e:
        raise NotFound(str(e)) from None


def load_record_from_datasets(
    registry: DatasetRegistry, request: S.NodeIdAndDatasets
) -> tuple[DatasetEntry, NeuronRecord]:
    """The record of the requested node from the first of `request.datasets` that has it (the
    seed tries them in order). Raises the server's errors: RequestError for bad names or
    indices, NotFound when no dataset has the node, ServiceUnavailable when one cannot be
    reached."""
    if not request.datasets:
        raise RequestError("datasets: name at least one neuron dataset")
    if request.layer_index < 0 or request.activation_index < 0:
        raise RequestError("layerIndex and activationIndex must be non-negative")
    dst = str(request.dst.value)
    entries = [_resolve(registry, name, dst, "datasets") for name in request.datasets]
    for entry in entries:
        try:
            record = registry.load_record(entry, request.layer_index, request.activation_index)
        except RecordNotFound:
            continue
        except RecordUnavailable as e:
            raise ServiceUnavailable(f"could not read {entry.short_name} ({dst}): {e}") from None
        except RecordFormatError as e:  # a damaged file of the dataset, not the request's fault
            raise ServiceUnavailable(
                f"the {dst} record {request.layer_index}:{request.activation_index} of "
                f"{entry.short_name} cannot be read ({e})"
            ) from None
        if not record.most_positive_activation_records:
            raise NotFound(
                f"{entry.short_name} has an empty {dst} record for "
                f"{request.layer_index}:{request.activation_index}"
            )
        return entry, record
    raise NotFound(
        f"could not find {dst} {request.layer_index}:{request.activation_index} in "
        f"{[e.short_name for e in entries]}"
    )


def _preferred_score(scored: dict[str, Any]) -> float | None:
    sim = scored.get("scored_simulation")
    if isinstance(sim, dict):
        score = sim.get("ev_correlation_score")
    else:
        sim = scored.get("scored_attention_simulation")
        score = sim.get("roc_auc_score") if isinstance(sim, dict) else scored.get("score")
    if isinstance(score, int | float) and math.isfinite(score):
        return float(score)
    return None


def _explanations_of(
    results: dict[str, Any] | None, dataset_name: str
) -> list[S.AttributedScoredExplanation]:
    if results is None:
        return []
    scored_list = results.get("scored_explanations")
    if scored_list is None:
        scored_list = results.get("scored_explanation_or_baseline_list") or []
    out = []
    for scored in scored_list:
        if not isinstance(scored, dict):
            continue
        text = scored.get("explanation", scored.get("explanation_or_baseline"))
        if not isinstance(text, str):
            continue
        out.append(
            S.AttributedScoredExplanation(
                explanation=text, score=_preferred_score(scored), dataset_name=dataset_name
            )
        )
    return out


# --- routes ------------------------------------------------------------------------------------


READ_ERRORS = error_responses(400, 404, 422, 503)


def make_read_router(registry: DatasetRegistry, served_model: str | None = None) -> APIRouter:
    """The four read routes over `registry` (operation ids `read-<function name>`). The datasets
    of `served_model` (the model's name, the part of a short name before any `_`) are listed
    first. Answers name local datasets by their registered names, never by their folders."""
    router = APIRouter(tags=["read"], route_class=StrictJSONRoute)

    # Plain `def`: FastAPI runs them in its thread pool, so file and network reads never block
    # the event loop.

    @router.post("/existing_explanations", response_model=list[S.AttributedScoredExplanation], responses=READ_ERRORS)
    def existing_explanations(
        request: S.ExistingExplanationsRequest,
    ) -> list[S.AttributedScoredExplanation]:
        if bool(request.explanation_datasets) == (request.neuron_dataset is not None):
            raise RequestError(
                "Exactly one of explanationDatasets and neuronDataset must be specified."
            )
        if request.layer_index < 0 or request.activation_index < 0:
            raise RequestError("layerIndex and activationIndex must be non-negative")
        dst = str(request.dst.value)
        if request.neuron_dataset is not None:
            entry = _resolve(registry, request.neuron_dataset, dst, "neuronDataset")
            datasets = registry.explanation_datasets(entry)
        else:
            datasets = []
            for name in request.explanation_datasets:
                try:
                    datasets.append(registry.resolve_explanation_dataset(name, dst))
                except InvalidDatasetName as e:
                    raise RequestError(str(e)) from None
                except DatasetNotFound as e:
                    raise NotFound(str(e)) from None
        out: list[S.AttributedScoredExplanation] = []
        for dataset in datasets:
            try:
                results = registry.load_explanations(
                    dataset, request.layer_index, request.activation_index
                )
            except RecordUnavailable as e:
                raise ServiceUnavailable(
                    f"could not read explanations {dataset.name}: {e}"
                ) from None
            out += _explanations_of(results, dataset.name)
        return out

    @router.post("/neuron_record", response_model=S.NeuronRecordResponse, responses=READ_ERRORS)
    def neuron_record(request: S.NodeIdAndDatasets) -> S.NeuronRecordResponse:
        entry, record = load_record_from_datasets(registry, request)
        top, random = normalize_token_scalars(
            [record.most_positive_activation_records, record.random_sample]
        )
        return S.NeuronRecordResponse(
            dataset=entry.public_location,
            max_activation=_finite(record.max_activation),
            top_activations=top,
            random_sample=random,
        )

    @router.post("/attention_head_record", response_model=S.AttentionHeadRecordResponse, responses=READ_ERRORS)
    def attention_head_record(request: S.NodeIdAndDatasets) -> S.AttentionHeadRecordResponse:
        entry, record = load_record_from_datasets(registry, request)
        try:
            top, random = token_and_attention_scalars_for_records(
                [record.most_positive_activation_records, record.random_sample]
            )
        except RecordFormatError as e:
            raise RequestError(
                f"dst: {request.dst.value} records of {entry.short_name} are not by token pair ({e})"
            ) from None
        return S.AttentionHeadRecordResponse(
            dataset=entry.public_location,
            max_attention_activation=_finite(record.max_activation),
            most_positive_token_sequences=top,
            random_token_sequences=random,
        )

    @router.post("/neuron_datasets_metadata", response_model=list[S.NeuronDatasetMetadata])
    def neuron_datasets_metadata() -> list[S.NeuronDatasetMetadata]:
        entries = registry.metadata()
        # stable: the served model's datasets first, otherwise in registration order
        entries.sort(key=lambda e: e.short_name.split("_")[0] != served_model)
        return [
            S.NeuronDatasetMetadata(
                short_name=e.short_name,
                derived_scalar_type=e.dst,
                user_visible_name=e.user_visible_name,
                neuron_dataset_path=e.public_location,
            )
            for e in entries
        ]

    return router
