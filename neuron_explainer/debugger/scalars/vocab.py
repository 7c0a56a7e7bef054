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


# Where the pass deferred the logits (`Recording.final_resid`), a request that reads them at one
# token and summed over the vocabulary does without every position's vocabulary product.


def _deferred(x: Inputs) -> Tensor | None:
    return x.rec.final_resid if x.rec.activations.is_deferred(Site("logits")) else None


def logits_at(x: Inputs, layer: int | None, token: int) -> Tensor:
    resid = _deferred(x)
    if resid is None:
        return x.act("logits")[token : token + 1]
    return x.w.model.logits_of(resid[token : token + 1]).float()


def logit_sums(x: Inputs, layer: int | None) -> Tensor:
    resid = _deferred(x)
    return x.act("logits").sum(-1) if resid is None else x.w.model.logit_sums(resid)


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
        "logits": ScalarType(VOCAB, False, logits, acts=("logits",), raw="logits", at_token=logits_at, node_sums=logit_sums),
        "vocab_token_write_to_input_direction": ScalarType(
            VOCAB, False, token_write_to_input_direction, check=_needs_node, reads=_vocab_sites
        ),
    }
