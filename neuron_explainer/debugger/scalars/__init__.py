"""Derived scalars: small pure functions of one prompt's recorded activations and gradients,
the weights and the request (see `base`), in one table (`table.SCALARS`), split by node kind:
`residual`, `mlp`, `attention`, `latents` (every kind in `kinds.LATENT_KINDS`), `vocab`.

"final residual grad" (the direct effects' direction) is the gradient of what is
differentiated at the residual stream after the last block (before the final norm), or, when a
node is traced, just before the node's sublayer; a node's "direct effect" is its write projected
on it (zero for nodes that come after that point). With the final norm's scale held constant,
the loss is linear in the final residual stream, so the direct effects of all nodes plus
embeddings and biases sum to it.
"""

from neuron_explainer.debugger.scalars.base import (
    ATTN,
    END_OF_PREV_LAYER,
    MLP,
    RESID_POST_ATTN,
    RESID_POST_MLP,
    Context,
    Direction,
    Inputs,
    ReadNode,
    ScalarType,
    Unsupported,
    final_direction,
    final_grad_site,
    precedes,
)
from neuron_explainer.debugger.scalars.kinds import (
    ATTN_LATENTS,
    BY_HOOK,
    BY_LOCATION_TYPE,
    BY_NODE_TYPE,
    GENERIC_LOCATION_TYPE,
    GENERIC_NODE_TYPE,
    LATENT_KINDS,
    MLP_LATENTS,
    RESID_LATENTS,
    TRANSCODER_LATENTS,
    LatentKind,
)
from neuron_explainer.debugger.scalars.table import (
    MAX_ELEMENTS,
    SCALARS,
    compute,
    compute_at_token,
    compute_backward,
    compute_node_sums,
    default_context,
    has_cheap_rows,
    problem,
    resolve,
    sites_needed,
)
from neuron_explainer.debugger.scalars.weights import Weights

__all__ = [
    "ATTN",
    "ATTN_LATENTS",
    "BY_HOOK",
    "BY_LOCATION_TYPE",
    "BY_NODE_TYPE",
    "END_OF_PREV_LAYER",
    "GENERIC_LOCATION_TYPE",
    "GENERIC_NODE_TYPE",
    "LATENT_KINDS",
    "MAX_ELEMENTS",
    "MLP",
    "MLP_LATENTS",
    "RESID_LATENTS",
    "RESID_POST_ATTN",
    "RESID_POST_MLP",
    "SCALARS",
    "TRANSCODER_LATENTS",
    "Context",
    "Direction",
    "Inputs",
    "LatentKind",
    "ReadNode",
    "ScalarType",
    "Unsupported",
    "Weights",
    "compute",
    "compute_at_token",
    "compute_backward",
    "compute_node_sums",
    "default_context",
    "final_direction",
    "final_grad_site",
    "has_cheap_rows",
    "precedes",
    "problem",
    "resolve",
    "sites_needed",
]
