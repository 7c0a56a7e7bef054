"""What a node reads: the residual stream just before its sublayer, through that sublayer's
input norm (its scale held constant, as the seed's reconstitution detaches it).

- `input_direction`: that point of the residual stream (where tracing the node measures direct
  effects);
- `held_scales`: the norm scales held constant when tracing it;
- `residual_read`: the gradient of the node's traced quantity with respect to that residual
  stream, at the recorded point (the seed's ResidualReadConverter); scored input tokens are
  this gradient dotted with each token embedding (its TokenReadConverter);
- `token_pre_activations`: the node's traced quantity if a token's embedding were the residual
  stream its sublayer reads (the seed's `vocab_token_write_to_input_direction`).

Traced quantities: a neuron's pre-activation (a gated neuron's activation, see terminology.md),
an attention score at (query, key, head) through its query and/or key side, a latent's
pre-activation (its encoder row applied to the autoencoder's input). Latents of the attention
layer's write depend on every token through attention: their reads are not defined here.
"""

from __future__ import annotations

import contextlib

import torch
from torch import Tensor

from neuron_explainer.debugger.inference import Site
from neuron_explainer.debugger.scalars.base import (
    END_OF_PREV_LAYER,
    RESID_POST_ATTN,
    Direction,
    Inputs,
    ReadNode,
    Unsupported,
)
from neuron_explainer.debugger.scalars.kinds import BY_NODE_TYPE
from neuron_explainer.debugger.scalars.weights import Weights
from neuron_explainer.models.transformer import Transformer

_VOCAB_CHUNK = 2048  # token embeddings pushed through a sublayer at once


def sublayer_of(w: Weights, kind: str, layer: int) -> str:
    """"attn" or "mlp": the sublayer whose input a node of `kind` reads."""
    if kind == "attention_head":
        return "attn"
    if kind == "mlp_neuron":
        return "mlp"
    if kind in BY_NODE_TYPE:
        return w.latent_sublayer_read(BY_NODE_TYPE[kind].hook, layer)
    raise Unsupported(f"{kind} nodes read no sublayer")


def _residual_latents(w: Weights, kind: str, layer: int) -> str | None:
    """The hook of a residual-stream SAE's latents, if that is what `kind` at `layer` is."""
    if kind in BY_NODE_TYPE and w.is_residual(BY_NODE_TYPE[kind].hook, layer):
        return BY_NODE_TYPE[kind].hook
    return None


def input_direction(w: Weights, kind: str, layer: int) -> Direction:
    """The residual stream a node of `kind` at `layer` reads: before attention, the block's
    input; before the MLP, the stream after attention (a parallel block's MLP reads the block's
    input too); a residual-stream SAE's latent, the stream it sits on."""
    model = w.model
    hook = _residual_latents(w, kind, layer)
    if hook is not None:
        return Direction(Site(w.reads(hook, layer), layer), layer, w.latent_location(hook, layer))
    if sublayer_of(w, kind, layer) == "mlp" and not model.cfg.parallel:
        return Direction(Site("resid.post_attn", layer), layer, RESID_POST_ATTN)
    site = Site("resid.post_emb") if layer == 0 else Site("resid.post_mlp", layer - 1)
    return Direction(site, layer, END_OF_PREV_LAYER)


def held_scales(w: Weights, kind: str, layer: int) -> list[Site]:
    """Norm scales that tracing a node holds constant: its sublayer's input norm, and for a
    latent of that sublayer's write its post-norm (sandwich norms); none for a residual-stream
    SAE's latent, which reads the stream itself."""
    if _residual_latents(w, kind, layer) is not None:
        return []
    sublayer = sublayer_of(w, kind, layer)
    sites = [Site(f"{sublayer}_ln.scale", layer)]
    post = w.model.write_scale_location(sublayer)
    reads_write = kind in BY_NODE_TYPE and w.reads(BY_NODE_TYPE[kind].hook, layer) in ("resid.delta_mlp", "resid.delta_attn")
    if post is not None and reads_write:
        sites.append(Site(post, layer))
    return sites


def mlp_post_act(model: Transformer, layer: int, normed: Tensor) -> Tensor:
    """(..., d_mlp): the MLP's activations (what its down projection reads) of normalized inputs."""
    traced = model.mlp_traced(layer, normed)
    if model.cfg.gated_mlp:
        return traced
    return model.mlp_activation(traced)


def _hold_norm(model: Transformer, g: Tensor, gain: Tensor, scale: Tensor) -> Tensor:
    """Gradient w.r.t. a norm's input from the gradient `g` (n, d) w.r.t. its output, its scale
    (n, 1) held constant: gain * g / scale, centred for a LayerNorm."""
    r = g * gain / scale
    return r - r.mean(-1, keepdim=True) if model.cfg.norm == "layernorm" else r


def _tokens(node: ReadNode, n_tokens: int) -> list[int]:
    t = node.index[0]
    return list(range(n_tokens)) if t is None else [t]


# what an MLP-side latent's encoder row reads
_ROW_READS = {"mlp.post_act": "post_act", "resid.delta_mlp": "delta", "mlp_ln.normalized": "normalized", "resid.post_mlp_ln": "post_ln"}


def _mlp_side_quantity(x: Inputs, node: ReadNode) -> tuple[Tensor | None, object]:
    """`_mlp_side_rows` of one node: (its encoder row or None, what the row reads)."""
    latent = node.index[-1]
    assert latent is not None
    rows, reads = _mlp_side_rows(x, node.kind, node.layer, torch.tensor([latent], device=x.w.model.device))
    return (None if rows is None else rows[0]), reads


def residual_read(x: Inputs, node: ReadNode) -> Tensor:
    """(T, d_model): d (the node's traced quantity, summed over its tokens) / d (the residual
    stream its sublayer reads), norm scales held, at the recorded point."""
    model, layer = x.w.model, node.layer
    n_tokens = len(x.rec.tokens)
    out = torch.zeros(n_tokens, model.cfg.d_model, device=model.device)
    if node.kind == "attention_head":
        q, k, h = (int(i) for i in node.index)  # type: ignore[arg-type]
        through = node.through or "QK"
        for side, token in (("Q", q), ("K", k)):
            if side in through:
                out[token] += _score_reads(x, layer, side, [(q, k, h)])[0]
        return out
    tokens = _tokens(node, n_tokens)
    hook = _residual_latents(x.w, node.kind, layer)
    if hook is not None:  # a residual-stream SAE's pre-activation is its row on the stream
        out[tokens] = x.w.encoder(hook, layer)[node.index[-1]].float()
        return out
    if sublayer_of(x.w, node.kind, layer) != "mlp":
        raise Unsupported("reads of latents of the attention layer's write are not defined (they depend on every token)")
    index = node.index[-1]
    assert index is not None
    out[tokens] = _mlp_reads(x, layer, node.kind, [(index, t) for t in tokens])
    return out


def token_reads(x: Inputs, items: list[tuple[ReadNode, int]]) -> list[Tensor | None]:
    """For each (node, token): row `token` of `residual_read(x, node)` (None where the read is
    not defined), with one backward pass per layer and node kind (per side for heads) instead
    of one per node: the scored-token steps read a hundred nodes at once."""
    model = x.w.model
    out: list[Tensor | None] = [None] * len(items)
    groups: dict[tuple[str, int, str], list[int]] = {}
    for i, (node, token) in enumerate(items):
        if node.kind == "attention_head":
            out[i] = torch.zeros(model.cfg.d_model, device=model.device)
            q, k, _ = node.index
            for side, at in (("Q", q), ("K", k)):
                if side in (node.through or "QK") and at == token:
                    groups.setdefault(("head", node.layer, side), []).append(i)
        elif (
            _residual_latents(x.w, node.kind, node.layer) is None
            and sublayer_of(x.w, node.kind, node.layer) == "mlp"
            and node.index[0] in (None, token)
        ):
            groups.setdefault(("mlp", node.layer, node.kind), []).append(i)
        else:
            with contextlib.suppress(Unsupported):  # undefined: None
                out[i] = residual_read(x, node)[token]
    for (what, layer, detail), members in groups.items():
        if what == "head":
            heads: list[tuple[int, int, int]] = []
            for i in members:
                q, k, h = (int(j) for j in items[i][0].index)  # type: ignore[arg-type]
                heads.append((q, k, h))
            for row, i in zip(_score_reads(x, layer, detail, heads), members, strict=True):
                out[i] = out[i] + row
        else:
            pairs = [(int(items[i][0].index[-1]), items[i][1]) for i in members]  # type: ignore[arg-type]
            for row, i in zip(_mlp_reads(x, layer, detail, pairs), members, strict=True):
                out[i] = row
    return out


def _mlp_reads(x: Inputs, layer: int, kind: str, items: list[tuple[int, int]]) -> Tensor:
    """(m, d_model): for each (neuron or latent index, token), d (its traced quantity at the
    token) / d (the residual stream the MLP reads there); every row its own (the MLP acts on
    each token alone)."""
    model = x.w.model
    tokens = [t for _, t in items]
    index = torch.tensor([i for i, _ in items], device=model.device)
    normed = x.act("resid.post_mlp_ln", layer)[tokens]
    rows, reads = _mlp_side_rows(x, kind, layer, index)
    post_scale = x.write_scale(layer, "mlp")
    gain = model.input_norm_gain(layer, "mlp").float()

    def quantity(y: Tensor) -> Tensor:
        if reads in ("post_ln", "normalized"):  # a transcoder on the norm's output, or its input
            assert rows is not None  # before the gain (the norm's bias is a constant)
            return ((y.float() if reads == "post_ln" else y.float() / gain) * rows).sum(-1)
        y = y.to(model.dtype)
        assert rows is not None
        post = mlp_post_act(model, layer, y).float()
        if reads == "post_act":
            return (post * rows).sum(-1)
        delta = post @ x.w.mlp_write(layer).T
        if post_scale is not None:  # the post-norm's scale held at its recorded value
            delta = delta / post_scale[tokens]
        return (delta * rows).sum(-1)

    if rows is None:  # neurons: from their weight rows (the same gradient, ~10x cheaper)
        g = model.mlp_traced_read(layer, normed.to(model.dtype), index)
    else:
        with torch.enable_grad():
            y = normed.detach().requires_grad_(True)
            (g,) = torch.autograd.grad(quantity(y).sum(), y)
    return _hold_norm(model, g.float(), gain, x.act("mlp_ln.scale", layer)[tokens])


def _mlp_side_rows(x: Inputs, kind: str, layer: int, index: Tensor) -> tuple[Tensor | None, object]:
    """For neurons or latents of the MLP's side: (their encoder rows, or None for neurons, and
    what the rows read: the MLP's activations ("post_act") or write ("delta"), or, for a
    transcoder, its input before the norm's gain ("normalized") or after ("post_ln"))."""
    if kind == "mlp_neuron":
        return None, "neuron"
    hook = BY_NODE_TYPE[kind].hook
    return x.w.encoder(hook, layer)[index].float(), _ROW_READS[x.w.reads(hook, layer)]


def _score_reads(x: Inputs, layer: int, side: str, heads: list[tuple[int, int, int]]) -> Tensor:
    """(m, d_model): for each (q, k, h), d score(q, k, h) / d (residual stream at the query (Q)
    or key (K) token), the other side fixed (zero outside a sliding window, where the score is
    a constant -inf)."""
    model = x.w.model
    device = model.device
    q, k, h = (torch.tensor(v, device=device) for v in zip(*heads, strict=True))
    kv = torch.tensor([model.kv_head(int(i)) for i in h], device=device)
    factor = torch.full((len(heads),), model.cfg.scale, device=device)
    if model.cfg.attn_softcap is not None:  # d tanh-capped score / d raw score
        capped = x.act("attn.qk_logits", layer)[q, k, h].float()
        factor = factor * (1 - (capped / model.cfg.attn_softcap) ** 2)
    window = model.cfg.window(layer)
    if window is not None:
        factor = torch.where(q - k >= window, 0.0, factor)
    token = q if side == "Q" else k
    rows = torch.arange(len(heads), device=device)
    with torch.enable_grad():
        y = x.act("resid.post_attn_ln", layer)[token].detach().requires_grad_(True)
        inputs = y.to(model.dtype)
        if side == "Q":
            own, other = model.queries(layer, inputs, token)[rows, h], x.act("attn.k", layer)[k, kv]
        else:
            own, other = model.keys(layer, inputs, token)[rows, kv], x.act("attn.q", layer)[q, h]
        value = (own.float() * other.float()).sum(-1)
        (g,) = torch.autograd.grad((value * factor).sum(), y)
    gain = model.input_norm_gain(layer, "attn").float()
    return _hold_norm(model, g.float(), gain, x.act("attn_ln.scale", layer)[token])


def read_sites(w: Weights, node: ReadNode) -> set[Site]:
    """The activations `residual_read` of `node` needs."""
    layer = node.layer
    if node.kind == "attention_head":
        sites = {Site(s, layer) for s in ("resid.post_attn_ln", "attn_ln.scale", "attn.q", "attn.k")}
        if w.model.cfg.attn_softcap is not None:
            sites.add(Site("attn.qk_logits", layer))
        return sites
    if node.kind in BY_NODE_TYPE and (_residual_latents(w, node.kind, layer) or sublayer_of(w, node.kind, layer) != "mlp"):
        return set()
    sites = {Site("resid.post_mlp_ln", layer), Site("mlp_ln.scale", layer)}
    post = w.model.write_scale_location("mlp")
    if post is not None:
        sites.add(Site(post, layer))
    return sites


def vocab_sites(w: Weights, node: ReadNode) -> set[Site]:
    """The activations `token_pre_activations` of `node` needs (one recorded point of the
    sublayer's input norm: its output and its input before the gain)."""
    return {Site("resid.post_mlp_ln", node.layer), Site("mlp_ln.normalized", node.layer)}


def token_pre_activations(x: Inputs, node: ReadNode) -> Tensor:
    """(n_vocab,): the node's traced quantity with each token's embedding (positions aside) as
    the residual stream its MLP reads, through the MLP's input norm (each embedding normalized
    by its own scale) — for MLP neurons and latents of the MLP's activations or write."""
    model, layer = x.w.model, node.layer
    hook = _residual_latents(x.w, node.kind, layer)
    if hook is not None:  # the token's embedding as the residual stream the SAE reads
        ae, _ = x.w.autoencoder(hook, layer)
        embeddings = model.token_embeddings()
        with torch.no_grad():
            return torch.cat([
                ae.encode_pre_act(embeddings[i : i + _VOCAB_CHUNK].to(ae.dtype))[..., node.index[-1]].float()
                for i in range(0, embeddings.shape[0], _VOCAB_CHUNK)
            ])
    if node.kind == "attention_head" or (node.kind in BY_NODE_TYPE and sublayer_of(x.w, node.kind, layer) != "mlp"):
        raise Unsupported(
            f"vocab_token_write_to_input_direction: defined for MLP neurons and latents of the MLP (not {node.kind})"
        )
    row, reads = _mlp_side_quantity(x, node)
    if reads == "delta" and model.write_scale_location("mlp") is not None:
        raise Unsupported(
            "vocab_token_write_to_input_direction: a latent of the MLP's write under sandwich norms "
            "needs the post-norm's scale of each embedding's MLP output, which is not defined"
        )
    gain = model.input_norm_gain(layer, "mlp").float()
    # the norm is affine in its input before the gain: its bias is what the recorded output has
    # beyond that part
    bias = x.act("resid.post_mlp_ln", layer)[0] - x.act("mlp_ln.normalized", layer)[0] * gain
    embeddings = model.token_embeddings()
    out = []
    with torch.no_grad():
        if row is None and not model.cfg.gated_mlp:
            # an ungated neuron's pre-activation is linear in its input: one row and a bias
            n = node.index[-1]
            zero = torch.zeros(1, model.cfg.d_model, device=model.device, dtype=model.dtype)
            b = model.mlp_traced(layer, zero)[0, n].float()
            w_in = model.mlp_traced_read(layer, zero, torch.tensor([n], device=model.device))
            for start in range(0, embeddings.shape[0], _VOCAB_CHUNK):
                y = model.normalized(embeddings[start : start + _VOCAB_CHUNK]) * gain + bias
                out.append(y @ w_in[0] + b)
            return torch.cat(out)
        write = x.w.mlp_write(layer) if reads == "delta" else None
        for start in range(0, embeddings.shape[0], _VOCAB_CHUNK):
            y = (model.normalized(embeddings[start : start + _VOCAB_CHUNK]) * gain + bias).to(model.dtype)
            if row is None:
                out.append(model.mlp_traced(layer, y)[:, node.index[-1]].float())
                continue
            ae, _ = x.w.autoencoder(BY_NODE_TYPE[node.kind].hook, layer)
            latent = node.index[-1]
            if reads in ("normalized", "post_ln"):  # a transcoder: the MLP's input itself
                normalized = (y.float() - bias) / gain if reads == "normalized" else y
                out.append(ae.encode_pre_act(normalized.to(ae.dtype))[..., latent].float())
                continue
            inputs = mlp_post_act(model, layer, y).float()
            if reads == "delta":
                assert write is not None
                inputs = inputs @ write.T + model.bias_write(layer, "mlp").float()
            out.append(ae.encode_pre_act(inputs.to(ae.dtype))[..., latent].float())
        return torch.cat(out)
