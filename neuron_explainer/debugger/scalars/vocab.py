"""Vocabulary tokens: one node per (token position, vocabulary token)."""

from __future__ import annotations

from torch import Tensor

from neuron_explainer.debugger import reads
from neuron_explainer.debugger.inference import Site
from neuron_explainer.debugger.scalars.base import Context, Inputs, ScalarType, Unsupported
from neuron_explainer.debugger.scalars.weights import Weights

VOCAB = "vocab_token"


def logits(x: Inputs, layer: int | None) -> Tensor:
    return x.act("logits")


def token_write_to_input_direction(x: Inputs, layer: int | None) -> Tensor:
    """(T, vocab): the request's node's pre-activation if each token's embedding were what its
    sublayer reads (the seed's; the same at every position)."""
    node = x.ctx.vocab
    if node is None:
        raise Unsupported("vocab_token_write_to_input_direction needs the node: one backward ablation naming it")
    scores = x.cached(("<vocab read>", None), lambda: reads.token_pre_activations(x, node))
    return scores[None].expand(len(x.rec.tokens), -1)


def _needs_node(w: Weights, ctx: Context | None) -> str | None:
    if ctx is not None and ctx.vocab is None:
        return (
            "needs the node whose input tokens it scores: exactly one backward ablation at an MLP "
            "neuron or MLP latent (as the original client's node page sends)"
        )
    return None


def _vocab_sites(w: Weights, ctx: Context) -> set[Site]:
    return reads.vocab_sites(w, ctx.vocab) if ctx.vocab is not None else set()


def table() -> dict[str, ScalarType]:
    return {
        "logits": ScalarType(VOCAB, False, logits, acts=("logits",), raw="logits"),
        "vocab_token_write_to_input_direction": ScalarType(
            VOCAB, False, token_write_to_input_direction, check=_needs_node, reads=_vocab_sites
        ),
    }
