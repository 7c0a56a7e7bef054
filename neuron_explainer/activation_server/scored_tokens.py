"""Vocabulary tokens scored against nodes, and key tokens against attention latents: the TDB
request's `upvotedOutputTokens`, `inputTokensThatUpvote{Mlp,AttnQ,AttnK}` and
`tokenPairAttribution` steps, as the seed defines them:

- output tokens: the node's write (per unit of activation) through the logit lens;
- input tokens: the node's read direction (`debugger.reads.residual_read`: the gradient of what
  tracing it differentiates w.r.t. the residual stream its sublayer reads, norm scale held)
  dotted with each token embedding; for MLP neurons and latents of the MLP (the seed's), and
  for heads through their query or key side (the seed had these switched off);
- token pairs: an attention latent's pre-activation is linear in the attention layer's write,
  a sum over (key, head) of the heads' writes; each key gets its heads' share, where the latent
  is on (None where it is off).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from pydantic import TypeAdapter
from torch import Tensor

from neuron_explainer.activation_server import schemas as S
from neuron_explainer.activation_server.ranking import row_extremes
from neuron_explainer.activation_server.wire_floats import short_floats
from neuron_explainer.debugger import head_writes as hw
from neuron_explainer.debugger import reads
from neuron_explainer.debugger import scalars as sc
from neuron_explainer.debugger.inference import Recording, Site

SCORED_CACHE_SIZE = 4096  # entries (a node's 2 x 10 tokens, a few kB each)
SCORED_CHUNK = 256  # nodes scored against the vocabulary at once (GPT-2: 2 x 51 MB of scores)

_TOP_TOKENS_LIST = TypeAdapter(list[S.TopTokens])

_READ_SCORING = {
    S.TokenScoringType.INPUT_TOKENS_THAT_UPVOTE_MLP: None,
    S.TokenScoringType.INPUT_TOKENS_THAT_UPVOTE_ATTN_Q: "Q",
    S.TokenScoringType.INPUT_TOKENS_THAT_UPVOTE_ATTN_K: "K",
}

# latent kinds whose input tokens are scored (the MLP scoring): a function of one token's stream
_INPUT_SCORED = (sc.MLP_LATENTS, sc.TRANSCODER_LATENTS, sc.RESID_LATENTS)


def finite(x: float) -> float:
    # JSON has no NaN/inf; the original server sent -999 for them
    return x if math.isfinite(x) else -999.0


class TokenScorer:
    """Scores tokens for the nodes of one model; keeps the scores that depend on the weights
    alone (a neuron's or a latent's write, an ungated neuron's read up to its token's norm
    scale) across requests."""

    def __init__(self, weights: sc.Weights, token_strings: list[str]):
        self.weights = weights
        self.model = weights.model
        self.token_strings = token_strings
        self._cache: dict[tuple[Any, ...], S.TopTokens] = {}
        self.cache_size = SCORED_CACHE_SIZE  # 0: no cache

    # ----------------------------------------------------------------- top tokens

    def top_tokens(self, scores: Tensor, n: int) -> list[S.TopTokens]:
        """Most and least scored vocabulary tokens per row of `scores` (nodes x vocab)."""
        top_v, top_i, bot_v, bot_i = row_extremes(scores, n)
        # normalized in float64, then sent (as the scores) in float32's shortest digits
        scale = torch.maximum(top_v[:, :1].abs(), bot_v[:, :1].abs()).double().clamp(min=1e-30)
        strings = self.token_strings

        def finite_list(x: Tensor) -> list[list[float]]:
            # in float32's shortest digits (scores are float32), NaN and inf as -999
            return short_floats(x).tolist()

        def pack(values: list[float], normalized: list[float], ids: list[int]) -> list[dict[str, Any]]:
            return [
                {"token": strings[t], "scalar": v, "normalized_scalar": u}
                for t, v, u in zip(ids, values, normalized, strict=True)
            ]

        # thousands of these per request: validated by pydantic-core from plain dicts in one
        # call, which is faster than building them one by one (even with model_construct)
        return _TOP_TOKENS_LIST.validate_python([
            {"top": pack(tv, tu, ti), "bottom": pack(bv, bu, bi)}
            for tv, tu, ti, bv, bu, bi in zip(
                finite_list(top_v), finite_list(top_v / scale), top_i.tolist(),
                finite_list(bot_v), finite_list(bot_v / scale), bot_i.tolist(), strict=True,
            )
        ])

    # ---------------------------------------------------------------- directions

    def node_write(self, node: S.MirroredNodeIndex, rec: Recording) -> Tensor | None:
        """The residual-stream vector a node writes per unit of activation (None if undefined);
        under sandwich norms, before the post-norm's per-token scale (a positive factor)."""
        t = node.tensor_indices
        layer = node.layer_index
        kind = node.node_type.value
        w = self.weights
        if kind == "mlp_neuron" and layer is not None:
            return w.mlp_write_columns(layer, torch.tensor([t[-1]], device=self.model.device))[:, 0]
        if kind == "attention_head" and layer is not None:
            head = int(t[2])  # type: ignore[arg-type]
            v = rec.activations[Site("attn.v", layer)][t[1], self.model.kv_head(head)].float()
            return v @ w.head_write(layer)[head]
        latent = self.latent_kind(kind)
        if latent is not None and layer is not None:
            try:
                return w.latent_write(latent.hook, layer)[:, t[-1]]
            except (KeyError, sc.Unsupported):
                return None
        if kind == "layer":
            return rec.activations[Site("resid.post_emb")][t[0]].float()
        return None

    def latent_kind(self, node_type: str) -> sc.LatentKind | None:
        if node_type == sc.GENERIC_NODE_TYPE:
            try:
                return self.weights.single_kind()
            except sc.Unsupported:
                return None
        return sc.BY_NODE_TYPE.get(node_type)

    def read_node(self, node: S.MirroredNodeIndex, scoring: S.TokenScoringType) -> sc.ReadNode | None:
        """The node as `reads` sees it, when this scoring applies to it."""
        kind = node.node_type.value
        layer = node.layer_index
        if layer is None:
            return None
        latent = self.latent_kind(kind)
        if latent is not None:
            kind = latent.node_type
        side = _READ_SCORING[scoring]
        if side is None:  # input tokens of MLP-side nodes, transcoders' and residual SAEs' latents
            if kind != "mlp_neuron" and (latent is None or latent.hook not in _INPUT_SCORED):
                return None
        elif kind != "attention_head":
            return None
        return sc.ReadNode(kind, layer, tuple(node.tensor_indices), side)

    def read_sites(self, nodes_may_be: S.TokenScoringType) -> set[Site]:
        """Everything reads of any node kind of this scoring need (recorded before the nodes are
        known: they are the result of the same pass)."""
        layers = range(self.model.cfg.n_layers)
        if _READ_SCORING[nodes_may_be] is None:
            probe = [sc.ReadNode("mlp_neuron", layer, (0, 0)) for layer in layers]
        else:
            probe = [sc.ReadNode("attention_head", layer, (0, 0, 0)) for layer in layers]
        sites: set[Site] = set()
        for node in probe:
            sites |= reads.read_sites(self.weights, node)
        return sites

    # --------------------------------------------------------------- scored tokens

    def scored_tokens(
        self, spec: S.ScoredTokensRequestSpec, x: sc.Inputs, nodes: list[S.MirroredNodeIndex]
    ) -> S.ScoredTokensResponseData:
        return self.score_all([(spec, x, nodes)])[0]

    def score_all(
        self, jobs: list[tuple[S.ScoredTokensRequestSpec, sc.Inputs, list[S.MirroredNodeIndex]]]
    ) -> list[S.ScoredTokensResponseData]:
        """Several scored-token steps (every step of every prompt of a request) at once: their
        nodes' write and read vectors go through the vocabulary together, in as few
        (memory-bound) passes as the model allows (model.vocab_scores), and a vector two steps
        or prompts share (a neuron's, or a head's at the same key) is scored once."""
        results: list[list[S.TopTokens | None]] = [[None] * len(nodes) for _, _, nodes in jobs]
        rows: dict[bool, list[Tensor]] = {True: [], False: []}  # writes / reads
        row_of: dict[tuple[Any, ...], tuple[bool, int]] = {}  # what is scored -> its row
        wanted: list[tuple[int, int, tuple[Any, ...], float, int, tuple[Any, ...] | None]] = []
        with torch.no_grad():
            for (j, i), (key, vector, factor) in self._vectors(jobs).items():
                spec = jobs[j][0]
                writes = spec.token_scoring_type == S.TokenScoringType.UPVOTED_OUTPUT_TOKENS
                hit = self._cache.get(key) if key is not None else None
                if hit is not None:
                    results[j][i] = _rescaled(hit, factor)
                    continue
                # the same vector scored the same way is one row: by cache key, or content
                ident = (writes, key) if key is not None else (writes, vector.float().cpu().numpy().tobytes())
                if ident not in row_of:
                    row_of[ident] = (writes, len(rows[writes]))
                    rows[writes].append(vector.float())
                wanted.append((j, i, ident, factor, spec.num_tokens, key))
            n = max((spec.num_tokens for spec, _, _ in jobs), default=0)
            tops: dict[tuple[bool, int], S.TopTokens] = {}
            d = self.model.cfg.d_model
            empty = torch.zeros(0, d, device=self.model.device)
            for start in range(0, max(len(rows[True]), len(rows[False])), SCORED_CHUNK):
                w_rows, r_rows = rows[True][start : start + SCORED_CHUNK], rows[False][start : start + SCORED_CHUNK]
                w_scores, r_scores = self.model.vocab_scores(
                    torch.stack(w_rows) if w_rows else empty, torch.stack(r_rows) if r_rows else empty
                )
                for writes, scores, count in ((True, w_scores, len(w_rows)), (False, r_scores, len(r_rows))):
                    if count:
                        for offset, top in enumerate(self.top_tokens(scores, n)):
                            tops[(writes, start + offset)] = top
            fresh: set[tuple[Any, ...]] = set()
            for j, i, ident, factor, num, key in wanted:
                top = _first(tops[row_of[ident]], num)
                if key is not None and key not in fresh:
                    self._remember(key, top)
                    fresh.add(key)
                results[j][i] = _rescaled(top, factor)
        return [S.ScoredTokensResponseData(node_indices=nodes, top_tokens_list=res) for (_, _, nodes), res in zip(jobs, results, strict=True)]

    def _vectors(
        self, jobs: list[tuple[S.ScoredTokensRequestSpec, sc.Inputs, list[S.MirroredNodeIndex]]]
    ) -> dict[tuple[int, int], tuple[tuple[Any, ...] | None, Tensor, float]]:
        """(job, node) -> (cache key or None, the direction to score, the factor its cached
        scores take), for every node whose direction is defined; the reads of each prompt in
        one batch (`reads.token_reads`)."""
        out: dict[tuple[int, int], tuple[tuple[Any, ...] | None, Tensor, float]] = {}
        pending: dict[int, list[tuple[int, int, sc.ReadNode, int, tuple[Any, ...]]]] = {}  # by recording
        inputs: dict[int, sc.Inputs] = {}
        for j, (spec, x, nodes) in enumerate(jobs):
            writes = spec.token_scoring_type == S.TokenScoringType.UPVOTED_OUTPUT_TOKENS
            for i, node in enumerate(nodes):
                base_key = (spec.token_scoring_type, spec.num_tokens, node.node_type, node.layer_index, node.tensor_indices[-1])
                if writes:
                    vector = self.node_write(node, x.rec)
                    if vector is not None:
                        weights_only = node.node_type.value == "mlp_neuron" or node.node_type.value in sc.BY_NODE_TYPE
                        out[(j, i)] = (base_key if weights_only else None), vector, 1.0
                    continue
                read = self.read_node(node, spec.token_scoring_type)
                if read is None:
                    continue
                token = read.index[1] if read.through == "K" else read.index[0]
                assert token is not None
                pending.setdefault(id(x.rec), []).append((j, i, read, token, base_key))
                inputs[id(x.rec)] = x
        for rec_id, items in pending.items():
            x = inputs[rec_id]
            vectors = reads.token_reads(x, [(read, token) for _, _, read, token, _ in items])
            for (j, i, read, token, base_key), vector in zip(items, vectors, strict=True):
                if vector is None or not bool(vector.any()):
                    continue  # undefined, or nothing raises it (a pair outside the attention window)
                if read.kind == "mlp_neuron" and not self.model.cfg.gated_mlp:
                    # an ungated neuron's read is its weights' over the norm's scale at its token
                    scale = float(x.act("mlp_ln.scale", read.layer)[token, 0])
                    out[(j, i)] = base_key, vector * scale, 1.0 / scale
                else:
                    out[(j, i)] = None, vector, 1.0
        return out

    def clear(self) -> None:
        """Forget every cached node (e.g. to time cold requests)."""
        self._cache.clear()

    def _remember(self, key: tuple[Any, ...], top: S.TopTokens) -> None:
        if self.cache_size <= 0:
            return
        if len(self._cache) >= self.cache_size:
            self._cache.pop(next(iter(self._cache)))  # the oldest entry
        self._cache[key] = top

    # -------------------------------------------------------- token-pair attribution

    def token_pair_attribution(
        self, spec: S.TokenPairAttributionRequestSpec, x: sc.Inputs, nodes: list[S.MirroredNodeIndex]
    ) -> S.TokenPairAttributionResponseData:
        out: list[S.TopTokensAttendedTo | None] = []
        for n in nodes:
            per_key = self.key_attributions(n, x)
            if per_key is None:
                out.append(None)
                continue
            top = per_key.topk(min(spec.num_tokens_attended_to, per_key.numel()))
            out.append(S.TopTokensAttendedTo(token_indices=top.indices.tolist(), attributions=[finite(v) for v in top.values.tolist()]))
        return S.TokenPairAttributionResponseData(node_indices=nodes, top_tokens_attended_to_list=out)

    def key_attributions(self, node: S.MirroredNodeIndex, x: sc.Inputs) -> Tensor | None:
        """(q + 1,): what each key token up to the latent's query q contributes to an attention
        latent's pre-activation, through every head; None unless the node is an attention latent
        of the attention layer's write that is on at q."""
        latent_kind = self.latent_kind(node.node_type.value)
        layer = node.layer_index
        if latent_kind is None or latent_kind.hook != sc.ATTN_LATENTS or layer is None:
            return None
        w = self.weights
        if layer not in w.latent_layers(sc.ATTN_LATENTS) or w.reads(sc.ATTN_LATENTS, layer) != "resid.delta_attn":
            return None
        q, latent = node.tensor_indices
        assert q is not None and latent is not None
        if float(hw.latent_derivative(x.act(sc.ATTN_LATENTS, layer)[q, latent])) == 0:
            return None  # the seed: "Latent is inactive"
        from neuron_explainer.debugger.scalars.attention import probs, values

        onto = hw.head_write_onto(w.head_write(layer), w.encoder(sc.ATTN_LATENTS, layer)[latent][None])
        p = probs(x, layer)[:, q : q + 1, : q + 1]  # (h, 1, keys)
        return hw.pair_writes_onto_rows(p, values(x, layer)[: q + 1], onto)[0, 0]


def _first(top: S.TopTokens, n: int) -> S.TopTokens:
    """The n best of each side (scores for several steps are ranked once, to the largest n)."""
    if len(top.top) <= n and len(top.bottom) <= n:
        return top
    return S.TopTokens.model_construct(top=top.top[:n], bottom=top.bottom[:n])


def _rescaled(top: S.TopTokens, factor: float) -> S.TopTokens:
    if factor == 1.0:
        return top

    def scale(items: list[S.TokenAndScalar]) -> list[S.TokenAndScalar]:
        return [
            S.TokenAndScalar.model_construct(token=t.token, scalar=finite(t.scalar * factor), normalized_scalar=t.normalized_scalar)
            for t in items
        ]

    return S.TopTokens.model_construct(top=scale(top.top), bottom=scale(top.bottom))
