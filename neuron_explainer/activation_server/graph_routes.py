"""POST /attribution_graph: the attribution graph of a prompt on the served model, with the
transcoders the server was started with (`--transcoders SET`), as Neuronpedia's graph JSON.

The route parses and checks the request, calls the library (`debugger.graph`) under the
server's model lock, and answers; no math here. A graph's adjacency is dense: requests whose
graph would need more than `max_graph_bytes` are refused with a 400 before the backward passes.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import APIRouter
from fastapi.responses import Response

from neuron_explainer.activation_server import schemas as S
from neuron_explainer.activation_server.errors import (
    RequestError,
    ServiceUnavailable,
    error_responses,
)
from neuron_explainer.activation_server.limits import StrictJSONRoute
from neuron_explainer.debugger.graph import (
    GraphTooLarge,
    LogitDifference,
    Logits,
    Target,
    TopLogits,
    Transcoders,
    attribute,
    load_transcoders,
    to_graph_file,
)
from neuron_explainer.debugger.graph.prompts import graph_prompt, single_token

__all__ = ["DEFAULT_MAX_GRAPH_BYTES", "load_server_transcoders", "make_graph_router"]

DEFAULT_MAX_GRAPH_BYTES = 2 << 30  # the dense edge matrices of one graph
ComputeResponse = Callable[[Callable[[Any], Any]], Awaitable[Response]]


def load_server_transcoders(source: str | None, model: Any) -> Transcoders | None:
    """The transcoders of `--transcoders`: a circuit-tracer transcoder set or cross-layer
    transcoder (a folder or hf://owner/repo), placed on `model`'s family, device and dtype;
    ValueError (one line) when they do not fit the model."""
    return load_transcoders(source, model) if source else None


def make_graph_router(
    compute_response: ComputeResponse,
    transcoders: Transcoders | None,
    max_graph_bytes: int = DEFAULT_MAX_GRAPH_BYTES,
) -> APIRouter:
    """The router. `compute_response(fn)` runs `fn(debugger)` under the server's model lock in a
    worker thread and renders its answer (main.py's)."""
    router = APIRouter(route_class=StrictJSONRoute)

    @router.post(
        "/attribution_graph", tags=["graph"], response_model=S.AttributionGraphResponse,
        responses=error_responses(400, 422, 503),
    )
    async def attribution_graph(request: S.AttributionGraphRequest) -> Any:
        """The attribution graph of the prompt's next token (see AttributionGraphRequest for the
        targets), pruned by node and edge influence (circuit-tracer's definitions)."""
        if transcoders is None:
            raise ServiceUnavailable(
                "no transcoders are loaded: restart the server with --transcoders SET (a folder or hf://owner/repo)"
            )
        return await compute_response(lambda d: _graph(d, transcoders, request, max_graph_bytes))

    return router


def _target(d: Any, request: S.AttributionGraphRequest) -> Target:
    def ids(texts: list[str], field: str) -> tuple[int, ...]:
        out = []
        for i, text in enumerate(texts):
            try:
                out.append(single_token(d.tokenizer, text))
            except ValueError as e:
                raise RequestError(f"{field}[{i}]: {e}") from e
        return tuple(out)

    if request.target_tokens is None:
        if request.distractor_tokens is not None:
            raise RequestError("distractorTokens: a logit difference needs targetTokens too")
        return TopLogits(request.max_n_logits, request.desired_logit_prob)
    targets = ids(request.target_tokens, "targetTokens")
    if request.distractor_tokens is None:
        return Logits(targets)
    return LogitDifference(targets, ids(request.distractor_tokens, "distractorTokens"))


def _graph(d: Any, transcoders: Transcoders, request: S.AttributionGraphRequest, max_bytes: int) -> dict[str, Any]:
    tokens, starts_with_bos = graph_prompt(d.tokenizer, request.prompt, request.prepend_bos)
    if not tokens:
        raise RequestError("prompt: the prompt is empty")
    limit = min(d.model.cfg.ctx_window, d.max_prompt_tokens or d.model.cfg.ctx_window)
    if len(tokens) > limit:
        raise RequestError(f"prompt: the prompt has {len(tokens)} tokens; this server takes at most {limit} (--max-prompt-tokens)")
    target = _target(d, request)
    strings = d.tokenizer.decode_tokens(tokens)
    try:
        graph = attribute(
            d.model, transcoders, tokens, target,
            token_string=lambda t: d.tokenizer.decode_tokens([t])[0],
            max_feature_nodes=request.max_feature_nodes,
            batch_size=request.batch_size,
            exclude_first_position=starts_with_bos,
            max_adjacency_bytes=max_bytes,
        )
    except GraphTooLarge as e:
        raise RequestError(f"maxFeatureNodes: {e}") from e
    clock = time.perf_counter()
    pruned = graph.prune(request.node_threshold, request.edge_threshold)
    graph.timings["pruning"] = time.perf_counter() - clock
    clock = time.perf_counter()
    doc = to_graph_file(
        graph, pruned, strings, prompt=request.prompt, slug=request.slug or "graph", scan=d.model_name,
        info={"model": d.model_name},
    )
    body = doc.to_json()
    graph.timings["export"] = time.perf_counter() - clock
    return {
        "graph": body,
        "timings": dict(graph.timings),
        "nActiveFeatures": graph.n_active,
        "nFeatureNodes": graph.n_features,
        "nBackwardPasses": graph.n_backward_passes,
    }
