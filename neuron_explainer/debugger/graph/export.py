"""An `AttributionGraph` as Neuronpedia's graph JSON (graph_file.py), pruned as circuit-tracer's
`create_graph_files` prunes it, with the same node ids, node fields and link order.

Node ids (what links name, and what the viewer pins and groups into supernodes):

    feature    "{layer}_{latent}_{position}"    feature = cantor(layer, latent)
    error      "{layer}_-1_{position}"          feature = -1   (Neuronpedia's own generator's;
               circuit-tracer writes "0_{layer}_{position}", which a layer-0 latent's id can equal)
    embedding  "E_{token id}_{position}"         layer "E", feature = position
    logit      "{n_layers + 1}_{vocab index}_{last position}"   feature = vocab index

A node's `influence` is circuit-tracer's exported one: the cumulative fraction of the total
influence carried by it and every more influential node (the viewer's node-threshold slider
keeps nodes whose value is below the slider), null for logits; `activation` is a feature's
activation (null for the others).
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from neuron_explainer.debugger.graph.attribution import AttributionGraph
from neuron_explainer.debugger.graph.graph_file import (
    EMBEDDING,
    ERROR,
    FEATURE,
    LOGIT,
    AttributionGraphFile,
    AttributionGraphLink,
    AttributionGraphMetadata,
    AttributionGraphNode,
    AttributionGraphQParams,
)
from neuron_explainer.debugger.graph.pruning import Pruned

__all__ = ["cantor_pair", "node_ids", "to_graph_file"]

GENERATOR = "Transformer Debugger"


def cantor_pair(x: int, y: int) -> int:
    """One integer for a pair of non-negative integers (circuit-tracer's feature ids)."""
    return (x + y) * (x + y + 1) // 2 + y


def _version() -> str:
    try:
        return version("neuron_explainer")
    except PackageNotFoundError:
        return "unknown"


def _node(graph: AttributionGraph, i: int, prompt_tokens: Sequence[str], cumulative: float) -> AttributionGraphNode:
    F, T, n = graph.n_features, graph.n_pos, graph.n_layers
    if i < F:
        layer, pos, latent = (int(v) for v in graph.features[i])
        return AttributionGraphNode(
            node_id=f"{layer}_{latent}_{pos}", feature=cantor_pair(layer, latent), layer=str(layer), ctx_idx=pos,
            feature_type=FEATURE, jsNodeId=f"{layer}_{latent}-0", influence=cumulative,
            activation=float(graph.activations[i]), latent_index=latent,
        )
    if i < F + n * T:
        layer, pos = divmod(i - F, T)
        return AttributionGraphNode(
            node_id=f"{layer}_-1_{pos}", feature=-1, layer=str(layer), ctx_idx=pos, feature_type=ERROR,
            jsNodeId=f"{layer}_-1-{pos}", influence=cumulative,
        )
    if i < F + (n + 1) * T:
        pos = i - F - n * T
        token = graph.tokens[pos]
        return AttributionGraphNode(
            node_id=f"E_{token}_{pos}", feature=pos, layer="E", ctx_idx=pos, feature_type=EMBEDDING,
            jsNodeId=f"E_{token}-{pos}", influence=cumulative, token_id=token, token=prompt_tokens[pos],
        )
    j = i - (graph.n_nodes - graph.n_logits)
    logit = graph.logit_nodes[j]
    p = logit.probability
    single = p is not None
    return AttributionGraphNode(
        node_id=f"{n + 1}_{logit.vocab_index}_{T - 1}", feature=logit.vocab_index, layer=str(n + 1), ctx_idx=T - 1,
        feature_type=LOGIT, jsNodeId=f"L_{logit.vocab_index}-{T - 1}",
        clerp=f'Output "{logit.label}" (p={p:.3f})' if single else f"Output {logit.label}",
        token_prob=p if p is not None else 0.0, is_target_logit=j == 0,
        token_id=logit.vocab_index if single else None, token=logit.label,
    )


def node_ids(graph: AttributionGraph, prompt_tokens: Sequence[str]) -> list[str]:
    """Every node's id, in node order."""
    return [_node(graph, i, prompt_tokens, 0.0).node_id for i in range(graph.n_nodes)]


def to_graph_file(
    graph: AttributionGraph,
    pruned: Pruned,
    prompt_tokens: Sequence[str],
    *,
    prompt: str,
    slug: str,
    scan: str,
    labels: Mapping[str, str] | None = None,
    info: Mapping[str, Any] | None = None,
) -> AttributionGraphFile:
    """The pruned graph as a graph file. `prompt_tokens` are the tokens' strings, `scan` the
    model id the file is filed under (Neuronpedia: its model id), `labels` node id -> label
    (clerp, e.g. a latent's explanation), `info` more fields for metadata.info."""
    if len(prompt_tokens) != graph.n_pos:
        raise ValueError(f"{len(prompt_tokens)} token strings for a graph of {graph.n_pos} tokens")
    kept = pruned.node_mask.nonzero()[:, 0].tolist()
    cumulative = pruned.cumulative.tolist()
    nodes: dict[int, AttributionGraphNode] = {}
    for i in kept:
        node = _node(graph, i, prompt_tokens, cumulative[i])
        if labels and node.node_id in labels:
            node.clerp = labels[node.node_id]
        nodes[i] = node
    targets, sources = pruned.edge_mask.nonzero(as_tuple=True)
    weights = graph.adjacency[targets, sources].tolist()
    links = [
        AttributionGraphLink(source=nodes[s].node_id, target=nodes[t].node_id, weight=w)
        for t, s, w in zip(targets.tolist(), sources.tolist(), weights, strict=True)
        if s in nodes and t in nodes
    ]
    linked = {link.source for link in links} | {link.target for link in links}
    used = [node for node in nodes.values() if node.node_id in linked or node.feature_type in (EMBEDDING, LOGIT)]
    settings = {k: v for k, v in graph.settings.to_dict().items() if v is not None}
    settings.update(n_active_features=graph.n_active, n_feature_nodes=graph.n_features,
                    n_backward_passes=graph.n_backward_passes)
    metadata = AttributionGraphMetadata(
        slug=slug,
        scan=scan,
        prompt_tokens=list(prompt_tokens),
        prompt=prompt,
        node_threshold=pruned.node_threshold,
        schema_version=1,
        info={
            "generator": {"name": GENERATOR, "version": _version(), "url": ""},
            "create_time_ms": int(time.time() * 1000),
            "n_layers": graph.n_layers,
            "timings_s": dict(graph.timings),
            **(info or {}),
        },
        generation_settings=settings,
        pruning_settings={"node_threshold": pruned.node_threshold, "edge_threshold": pruned.edge_threshold},
    )
    return AttributionGraphFile(metadata=metadata, qParams=AttributionGraphQParams(), nodes=used, links=links)
