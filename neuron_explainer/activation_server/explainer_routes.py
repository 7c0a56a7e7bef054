"""`POST /explain` and `POST /score`: explanations of a node by an LLM, and their scores.

Contract (the seed's, as the original client calls it):

- `/explain` `{dst, layerIndex, activationIndex, datasets}` -> `{explanations, dataset}`: the
  node's stored explanations (best score first) if it has any, else new ones written by the LLM
  from the node's top-activating records;
- `/score` the same plus `{explanation, maxSequences?}` -> `{score, datasetPath}`: the stored
  score of that explanation if there is one, else the LLM simulates the node's held-out records
  from it and the score is computed and stored beside the dataset (where
  `/existing_explanations` finds it).

`datasets` are tried in order; the first that has the node's record answers, and `dataset` /
`datasetPath` is its location (a published dataset's URL, a local one's registered name). Without an LLM endpoint both routes still answer from stored
results and answer 503, with what to configure, when the LLM would be needed.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar

from fastapi import APIRouter

from neuron_explainer.activation_server.errors import (
    NotFound,
    RequestError,
    ServiceUnavailable,
    error_responses,
)
from neuron_explainer.activation_server.limits import StrictJSONRoute
from neuron_explainer.activation_server.read_routes import load_record_from_datasets
from neuron_explainer.activation_server.schemas import (
    ExplanationResult,
    NodeIdAndDatasets,
    ScoreRequest,
    ScoreResult,
)
from neuron_explainer.activations.datasets import (
    DatasetEntry,
    DatasetNotFound,
    DatasetRegistry,
    InvalidDatasetName,
)
from neuron_explainer.activations.records import NeuronRecord
from neuron_explainer.explanations import store
from neuron_explainer.explanations.explainer import NodeKind, explain_node, node_kind
from neuron_explainer.explanations.llm import LLMClient, LLMError, LLMRequestError
from neuron_explainer.explanations.scoring import score_node
from neuron_explainer.explanations.simulator import (
    SimulatorChoice,
    SimulatorKind,
    resolve_simulator,
)

log = logging.getLogger(__name__)

T = TypeVar("T")

EXPLAINER_ERRORS = error_responses(400, 404, 422, 503)

NO_LLM_MESSAGE = (
    "no LLM endpoint is configured for explanations: restart the server with --llm-base-url URL "
    "(an OpenAI-compatible API, e.g. http://localhost:8001/v1 for a local vLLM or Ollama server) "
    "and --explainer-model NAME, or set OPENAI_API_KEY (and OPENAI_BASE_URL)"
)


def make_explainer_router(
    llm: LLMClient | None,
    registry: DatasetRegistry | None,
    *,
    simulator: SimulatorChoice = "auto",
    explanation_set: str | None = None,
    n_per_split: int = 5,
) -> APIRouter:
    """The explainer routes. `llm` None: answer from stored results only (503 otherwise);
    `explanation_set`: where new scores are stored (default `store.set_name(model, simulator)`)."""
    router = APIRouter(route_class=StrictJSONRoute)

    def require_llm() -> LLMClient:
        if llm is None:
            raise ServiceUnavailable(NO_LLM_MESSAGE)
        return llm

    def require_registry() -> DatasetRegistry:
        if registry is None:
            raise ServiceUnavailable("no neuron datasets are registered with this server")
        return registry

    def entries(request: NodeIdAndDatasets) -> list[DatasetEntry]:
        """The requested datasets, resolved as the read routes do (400 / 404 on bad names)."""
        reg = require_registry()
        if not request.datasets:
            raise RequestError("datasets: name at least one neuron dataset")
        if request.layer_index < 0 or request.activation_index < 0:
            raise RequestError("layerIndex and activationIndex must be non-negative")
        found = []
        for name in request.datasets:
            try:
                found.append(reg.resolve(name, request.dst, "datasets"))
            except InvalidDatasetName as exc:
                raise RequestError(str(exc)) from None
            except DatasetNotFound as exc:
                raise NotFound(str(exc)) from None
        return found

    async def load(request: NodeIdAndDatasets) -> tuple[DatasetEntry, NeuronRecord]:
        """The node's record from the first dataset that has it (as /neuron_record finds it)."""
        return await asyncio.to_thread(load_record_from_datasets, require_registry(), request)

    def check_active(record: NeuronRecord) -> None:
        try:
            peak = record.max_activation
        except ValueError:
            peak = 0.0
        if not peak > 0:
            raise RequestError("the node never activates on the dataset: nothing to explain")

    async def call_llm(work: Callable[[], Awaitable[T]]) -> T:
        try:
            return await work()
        except LLMRequestError as exc:
            raise ServiceUnavailable(f"the LLM endpoint refused the request: {exc}") from None
        except LLMError as exc:
            raise ServiceUnavailable(f"the LLM endpoint failed: {exc}") from None

    @router.post("/explain", tags=["explainer"], response_model=ExplanationResult, responses=EXPLAINER_ERRORS)
    async def explain(request: NodeIdAndDatasets) -> ExplanationResult:
        reg = require_registry()
        layer, index = request.layer_index, request.activation_index
        for entry in entries(request):
            stored = await asyncio.to_thread(store.node_explanations, reg, entry, layer, index)
            if stored:
                ranked = sorted(stored, key=lambda s: -(s[2] if s[2] is not None else -2.0))
                explanations = list(dict.fromkeys(explanation for _, explanation, _ in ranked))
                return ExplanationResult(explanations=explanations, dataset=entry.public_location)
        client = require_llm()
        entry, record = await load(request)
        check_active(record)
        kind = node_kind(request.dst, record.most_positive_activation_records)
        explanations = await call_llm(
            lambda: explain_node(client, record, kind, n_per_split=n_per_split)
        )
        return ExplanationResult(explanations=explanations, dataset=entry.public_location)

    @router.post("/score", tags=["explainer"], response_model=ScoreResult, responses=EXPLAINER_ERRORS)
    async def score(request: ScoreRequest) -> ScoreResult:
        reg = require_registry()
        layer, index = request.layer_index, request.activation_index
        explanation = request.explanation.strip()
        if not explanation:
            raise RequestError("explanation: must not be empty")
        if request.max_sequences is not None and request.max_sequences < 1:
            raise RequestError("maxSequences: must be at least 1")
        for entry in entries(request):
            found = await asyncio.to_thread(store.find_score, reg, entry, layer, index, explanation)
            if found is not None:
                return ScoreResult(score=found, dataset_path=entry.public_location)
        client = require_llm()
        entry, record = await load(request)
        check_active(record)
        kind = node_kind(request.dst, record.most_positive_activation_records)
        simulator_kind: SimulatorKind
        if kind == NodeKind.NEURON:
            simulator_kind = await call_llm(lambda: resolve_simulator(simulator, client))
        else:  # heads are scored pair by pair, whatever the simulator
            simulator_kind = "logprob_free"
        scored = await call_llm(
            lambda: score_node(
                client,
                record,
                kind,
                explanation,
                simulator=simulator_kind,
                n_per_split=n_per_split,
                max_sequences=request.max_sequences,
            )
        )
        value = scored.score
        if value is None:
            raise RequestError(
                "the score is undefined for this node (its held-out records lack weak or strong "
                "token pairs to compare)"
            )
        if scored.errors:
            log.warning(
                "score of %s %d:%d counts %d unusable LLM answers as zeros",
                request.dst,
                layer,
                index,
                len(scored.errors),
            )
        name = explanation_set or store.set_name(client.model, simulator_kind)
        path = store.results_path(entry, name, layer, index)
        await asyncio.to_thread(
            store.add_scored_explanation,
            path,
            kind=kind,
            layer=layer,
            index=index,
            explanation=explanation,
            scored=scored,
        )
        return ScoreResult(score=value, dataset_path=entry.public_location)

    return router
