"""Attribution graphs (Anthropic's "Circuit Tracing", 2025; circuit-tracer): for one prompt and
one output, every active transcoder latent, error term, token embedding and logit as a node,
and the direct effect of each on every other through frozen attention patterns and norms.

- coders.py / cross_layer.py: per-layer transcoder sets and cross-layer transcoders, and
  `load_transcoders(source, model)` for either of circuit-tracer's layouts;
- replacement.py: the local replacement model, from the model's public hooks;
- targets.py: the logit nodes (top logits, chosen logits, or the debugger's logit difference);
- attribution.py: `attribute(model, transcoders, tokens, target)` -> `AttributionGraph`;
- pruning.py: influence and `prune` (circuit-tracer's definitions and defaults);
- graph_file.py / export.py: Neuronpedia's graph JSON (what its viewer and circuit-tracer read).
"""

from neuron_explainer.debugger.graph.attribution import (
    DEFAULT_BATCH_SIZE,
    DEFAULT_MAX_FEATURE_NODES,
    AttributionGraph,
    GraphSettings,
    GraphTooLarge,
    attribute,
)
from neuron_explainer.debugger.graph.coders import (
    Transcoders,
    check_transcoders,
    conventions_for,
    load_transcoders,
)
from neuron_explainer.debugger.graph.export import cantor_pair, node_ids, to_graph_file
from neuron_explainer.debugger.graph.graph_file import (
    AttributionGraphFile,
    AttributionGraphLink,
    AttributionGraphMetadata,
    AttributionGraphNode,
    AttributionGraphQParams,
    graph_schema,
    read_graph_file,
    write_graph_file,
)
from neuron_explainer.debugger.graph.pruning import (
    DEFAULT_EDGE_THRESHOLD,
    DEFAULT_NODE_THRESHOLD,
    Pruned,
    influence,
    prune,
)
from neuron_explainer.debugger.graph.replacement import ReplacementForward
from neuron_explainer.debugger.graph.targets import (
    LogitDifference,
    LogitNode,
    Logits,
    Target,
    TopLogits,
)
from neuron_explainer.models.saes.cross_layer import (
    CrossLayerTranscoder,
    load_cross_layer_transcoder,
)

__all__ = [
    "DEFAULT_BATCH_SIZE",
    "DEFAULT_EDGE_THRESHOLD",
    "DEFAULT_MAX_FEATURE_NODES",
    "DEFAULT_NODE_THRESHOLD",
    "AttributionGraph",
    "AttributionGraphFile",
    "AttributionGraphLink",
    "AttributionGraphMetadata",
    "AttributionGraphNode",
    "AttributionGraphQParams",
    "CrossLayerTranscoder",
    "GraphSettings",
    "GraphTooLarge",
    "LogitDifference",
    "LogitNode",
    "Logits",
    "Pruned",
    "ReplacementForward",
    "Target",
    "TopLogits",
    "Transcoders",
    "attribute",
    "cantor_pair",
    "check_transcoders",
    "conventions_for",
    "graph_schema",
    "influence",
    "load_cross_layer_transcoder",
    "load_transcoders",
    "node_ids",
    "prune",
    "read_graph_file",
    "to_graph_file",
    "write_graph_file",
]
