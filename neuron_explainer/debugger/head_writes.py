"""What attention heads write at each (query, key) pair, from recorded probabilities and values:
the maths the node table's attention scalars and the records builder (`collate.Recorder`) share.

A head h attending from query q to key k writes probs[h, q, k] * (v[k, h] @ W_h) into the
residual stream (W_h = `model.head_write(layer)[h]`, which includes a post-norm's gain; its
per-query scale divides `probs` first: `through_post_norm`). Every function accepts leading
batch dimensions `...` (none for one prompt, (b,) for a batch of sequences):

  probs       (..., h, q, k)   the model's layout of `attn.qk_probs`
  values      (..., k, h, e)   one value per query head (`model.expand_kv` of `attn.v`)
  head_write  (h, e, d)

Nothing here materialises the writes themselves ((..., q, k, h, d) would be huge): norms go
through the Gram matrices W_h W_h^T, projections through W_h applied to the direction first.
"""

from __future__ import annotations

import torch
from torch import Tensor


def through_post_norm(probs: Tensor, scale: Tensor | None) -> Tensor:
    """(..., h, q, k): probabilities divided by the post-norm's scale (..., q, 1) at each query
    (sandwich norms), so that a probability times a value's write is what joins the residual
    stream; unchanged without one."""
    return probs if scale is None else probs / scale.unsqueeze(-3)


def head_write_gram(head_write: Tensor) -> Tensor:
    """(h, e, e): W_h W_h^T, so that ||v W_h|| = sqrt(v G_h v)."""
    return torch.einsum("hed,hfd->hef", head_write, head_write)


def value_write_norms(values: Tensor, gram: Tensor) -> Tensor:
    """(..., k, h): ||v[k, h] W_h||, what head h writes per unit of attention to key k."""
    vg = torch.einsum("...khe,hef->...khf", values, gram)
    return (vg * values).sum(-1).clamp(min=0).sqrt()


def write_norms(probs: Tensor, values: Tensor, gram: Tensor) -> Tensor:
    """(..., h, q, k): the norm of each head's write at each token pair (a probability, never
    negative, times a norm)."""
    norms = value_write_norms(values, gram)
    return probs * norms.transpose(-1, -2)[..., :, None, :]


def head_write_onto(head_write: Tensor, rows: Tensor) -> Tensor:
    """(h, e, l): what each value channel of each head writes onto each of the directions `rows`
    (l, d) (e.g. encoder rows of latents)."""
    return torch.einsum("hed,ld->hel", head_write, rows)


def pair_writes_onto_rows(probs: Tensor, values: Tensor, onto: Tensor) -> Tensor:
    """(..., l, q, k): the heads' writes at each token pair, summed over heads, projected on
    direction l (`onto` = `head_write_onto(head_write, rows)`)."""
    per_key = torch.einsum("...khe,hel->...khl", values, onto)
    return torch.einsum("...hqk,...khl->...lqk", probs, per_key)


def pair_writes_onto_rows_per_head(probs: Tensor, values: Tensor, onto: Tensor) -> Tensor:
    """(..., l, q, k, h): as `pair_writes_onto_rows`, head by head."""
    per_key = torch.einsum("...khe,hel->...khl", values, onto)
    return torch.einsum("...hqk,...khl->...lqkh", probs, per_key)


def pair_writes_onto_query_directions(probs: Tensor, values: Tensor, head_write: Tensor, directions: Tensor) -> Tensor:
    """(..., q, k, h): each head's write at each token pair projected on a direction that
    depends on the query token (`directions` (..., q, d), e.g. the gradient of the loss at the
    residual stream): probs[h, q, k] * (v[k, h] W_h) . directions[q]. For one prompt, queries
    whose direction is zero (with a loss at the last token, all but one) are zero without the
    (q, k, h, e) contraction: at 1024 tokens, 55 of GPT-2 small's 60 ms a layer."""
    if directions.ndim == 2:
        rows = directions.abs().sum(-1).nonzero().flatten()
        if rows.numel() < directions.shape[0]:
            out = probs.new_zeros(probs.shape[-2], probs.shape[-1], probs.shape[-3])
            if rows.numel():
                out[rows] = pair_writes_onto_query_directions(probs[:, rows], values, head_write, directions[rows])
            return out
    per_query = torch.einsum("hed,...qd->...qhe", head_write, directions)
    per_pair = torch.einsum("...khe,...qhe->...qkh", values, per_query)
    return probs.movedim(-3, -1) * per_pair


def latent_derivative(latents: Tensor) -> Tensor:
    """d latent / d pre-activation at the recorded point, as floats: 1 where the latent is on.
    Exact for ReLU, TopK (selected and, with a ReLU after it, positive) and identity latents
    except where a pre-activation is exactly 0."""
    return (latents != 0).float()


def flatten_pairs(x: Tensor) -> Tensor:
    """(..., q, k, n) -> (..., pairs, n): the lower triangle (k <= q) row by row (query 0 -> key
    0, query 1 -> keys 0..1, ...), the published records' order."""
    q, k = x.shape[-3], x.shape[-2]
    rows, cols = torch.tril_indices(q, k, device=x.device)
    return x[..., rows, cols, :]
