"""Answering inference requests: one batched pass, then each named processing step.

`Debugger.batched` is the whole pipeline:
  1. parse every sub-request into a `PromptRequest` (tokens, ablations, loss or trace);
  2. work out which activations and gradients the processing steps need and run all prompts in
     one forward + backward pass (`debugger.inference.run`);
  3. compute each step's derived scalars from that single recording (`debugger.scalars`).
Top-k steps with the same name are unioned across sub-requests, so ablated and unablated views
of a prompt report the same nodes. Bad input raises `RequestError`, whose message names the
field; the HTTP layer turns it into a 400.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import tiktoken
import torch
from torch import Tensor

from neuron_explainer.activation_server import schemas as S
from neuron_explainer.activation_server.errors import RequestError
from neuron_explainer.debugger import scalars as sc
from neuron_explainer.debugger.inference import (
    Ablation,
    LogitDiffLoss,
    PromptRequest,
    Recording,
    Site,
    Trace,
    run,
)
from neuron_explainer.models.tokenizer import Tokenizer, as_tokenizer
from neuron_explainer.models.transformer import MODEL_LOCATIONS, Transformer

# API activation location names that differ from our hook locations.
_LATENT_LOCATIONS = {
    S.ActivationLocationType.ONLINE_MLP_AUTOENCODER_LATENT.value: sc.MLP_LATENTS,
    S.ActivationLocationType.ONLINE_ATTENTION_AUTOENCODER_LATENT.value: sc.ATTN_LATENTS,
}
_NODE_LOCATION = {  # where a node of each type is ablated / read
    "mlp_neuron": "mlp.post_act",
    "attention_head": "attn.qk_probs",
    "mlp_autoencoder_latent": sc.MLP_LATENTS,
    "attention_autoencoder_latent": sc.ATTN_LATENTS,
}
_TRACE_LOCATION = {  # what tracing a node differentiates (neurons: see _trace_locations)
    "attention_head": "attn.qk_logits",
    "mlp_autoencoder_latent": sc.MLP_LATENTS,
    "attention_autoencoder_latent": sc.ATTN_LATENTS,
}
_SCORED_TOKENS = 10  # top and bottom tokens per node in the TDB node table
_SCORED_CACHE_SIZE = 4096  # entries (a node's 2 x 10 tokens, a few kB each)
_SCORED_CHUNK = 512  # nodes scored against the vocabulary at once (GPT-2: 100 MB of scores)
_PROMPT_LENGTH_LIMIT = 500  # for batched top-k requests, as in the original server


@dataclass
class _Parsed:
    request: PromptRequest
    token_strings: list[str]


class Debugger:
    """A loaded model (with optional autoencoders) answering the server's inference requests."""

    def __init__(
        self,
        model: Transformer,
        tokenizer: Tokenizer | tiktoken.Encoding,
        model_name: str,
        mlp_autoencoder_name: str | None = None,
        attention_autoencoder_name: str | None = None,
    ):
        self.model = model
        self.tokenizer = as_tokenizer(tokenizer)
        self.model_name = model_name
        self.mlp_autoencoder_name = mlp_autoencoder_name
        self.attention_autoencoder_name = attention_autoencoder_name
        self.weights = sc.Weights(model)
        self.n_layers = model.cfg.n_layers
        self.token_strings = _token_strings(self.tokenizer, model.cfg.n_vocab)
        # a neuron is traced through its pre-activation, a gated one through its activation
        self._trace_locations = {"mlp_neuron": model.mlp_traced_location, **_TRACE_LOCATION}
        # scored tokens of nodes whose scores depend on the weights alone, across requests
        self._scored_cache: dict[tuple[Any, ...], S.TopTokens] = {}
        self.scored_cache_size = _SCORED_CACHE_SIZE  # 0: no cache
        self.max_prompt_tokens: int | None = None  # None: the model's context (--max-prompt-tokens)

    # ------------------------------------------------------------ model info

    @property
    def has_mlp_autoencoder(self) -> bool:
        return any(a.latents.endswith(sc.MLP_LATENTS) for a in self.model.attachments())

    @property
    def has_attention_autoencoder(self) -> bool:
        return any(a.latents.endswith(sc.ATTN_LATENTS) for a in self.model.attachments())

    def _n_latents(self, kind: str) -> int | None:
        try:
            return int(self.weights.autoencoder(kind, 0)[0].n_latents)
        except KeyError:
            return None

    def model_info(self) -> S.ModelInfoResponse:
        cfg = self.model.cfg
        return S.ModelInfoResponse(
            model_name=self.model_name,
            has_mlp_autoencoder=self.has_mlp_autoencoder,
            mlp_autoencoder_name=self.mlp_autoencoder_name,
            has_attention_autoencoder=self.has_attention_autoencoder,
            attention_autoencoder_name=self.attention_autoencoder_name,
            n_layers=self.n_layers,
            family=cfg.family,
            d_model=cfg.d_model,
            n_heads=cfg.n_heads,
            n_kv_heads=cfg.kv_heads,
            d_head=cfg.d_head,
            d_mlp=cfg.d_mlp,
            n_vocab=cfg.n_vocab,
            ctx_window=cfg.ctx_window,
            n_mlp_autoencoder_latents=self._n_latents(sc.MLP_LATENTS),
            n_attention_autoencoder_latents=self._n_latents(sc.ATTN_LATENTS),
        )

    # --------------------------------------------------------------- parsing

    def encode_prompt(self, prompt: str, field: str) -> list[int]:
        tokens = self.tokenizer.encode_prompt(prompt)
        if not tokens:
            raise RequestError(f"{field}: the prompt is empty")
        if len(tokens) > self.model.cfg.ctx_window:
            raise RequestError(
                f"{field}: the prompt has {len(tokens)} tokens, more than the model's context of "
                f"{self.model.cfg.ctx_window}"
            )
        if self.max_prompt_tokens is not None and len(tokens) > self.max_prompt_tokens:
            raise RequestError(
                f"{field}: the prompt has {len(tokens)} tokens; this server takes at most "
                f"{self.max_prompt_tokens} (--max-prompt-tokens)"
            )
        return tokens

    def single_token(self, text: str, field: str) -> int:
        tokens = self.tokenizer.encode(text)
        if len(tokens) != 1:
            raise RequestError(
                f"{field}: {text!r} is {len(tokens)} tokens, not one (mind the leading space, "
                "e.g. ' Mary')"
            )
        return tokens[0]

    def _site(self, location: str, layer: int | None, field: str) -> Site:
        location = _LATENT_LOCATIONS.get(location, location)
        if location in (sc.MLP_LATENTS, sc.ATTN_LATENTS):
            if layer is None:
                raise RequestError(f"{field}.layerIndex: latents need a layer index")
            try:
                self.weights.autoencoder(location, layer)
            except KeyError:
                kind = "MLP" if location == sc.MLP_LATENTS else "attention"
                raise RequestError(
                    f"{field}: no {kind} autoencoder is loaded (start the server with one)"
                ) from None
        layerless = location in MODEL_LOCATIONS
        if layerless:
            return Site(location, None)
        if layer is None or not 0 <= layer < self.n_layers:
            raise RequestError(f"{field}.layerIndex: {layer} is not a layer of this {self.n_layers}-layer model")
        return Site(location, layer)

    def _shape(self, site: Site, n_tokens: int) -> tuple[int, ...]:
        """Per-prompt shape of the activation at `site` (see inference.Recording)."""
        cfg = self.model.cfg
        loc = site.location
        if loc in ("attn.qk_probs", "attn.qk_logits"):
            return (n_tokens, n_tokens, cfg.n_heads)
        if loc in ("attn.q", "attn.v_out"):
            return (n_tokens, cfg.n_heads, cfg.d_head)
        if loc in ("attn.k", "attn.v"):
            return (n_tokens, cfg.kv_heads, cfg.d_head)
        if loc.startswith("mlp."):
            return (n_tokens, cfg.d_mlp)
        if loc.endswith(".scale"):
            return (n_tokens, 1)
        if loc == "logits":
            return (n_tokens, cfg.n_vocab)
        if loc in (sc.MLP_LATENTS, sc.ATTN_LATENTS):
            assert site.layer is not None
            return (n_tokens, self.weights.autoencoder(loc, site.layer)[0].n_latents)
        return (n_tokens, cfg.d_model)

    def _check_index(self, site: Site, index: Sequence[Any], n_tokens: int, field: str) -> tuple[int | None, ...]:
        shape = self._shape(site, n_tokens)
        if len(index) != len(shape):
            raise RequestError(f"{field}.tensorIndices: expected {len(shape)} indices for {site.location}, got {len(index)}")
        out: list[int | None] = []
        for axis, (i, size) in enumerate(zip(index, shape, strict=True)):
            if i is None or i == "All":
                out.append(None)
            elif isinstance(i, int) and 0 <= i < size:  # no wrap-around: -1 is a mistake, not "last"
                out.append(i)
            else:
                raise RequestError(f"{field}.tensorIndices[{axis}]: {i} is out of range 0..{size - 1}")
        return tuple(out)

    def _node_site_and_index(self, node: S.MirroredNodeIndex, n_tokens: int, field: str, locations: dict[str, str]) -> tuple[Site, tuple[int | None, ...]]:
        node_type = node.node_type.value
        if node_type not in locations:
            raise RequestError(f"{field}.nodeType: {node_type} nodes cannot be ablated or traced")
        site = self._site(locations[node_type], node.layer_index, field)
        index = self._check_index(site, list(node.tensor_indices), n_tokens, field)
        return site, index

    def _ablation(self, spec: S.AblationSpec, n_tokens: int, field: str) -> Ablation:
        loc = spec.index.activation_location_type.value
        site = self._site(loc, spec.index.layer_index, field + ".index")
        index = self._check_index(site, list(spec.index.tensor_indices), n_tokens, field + ".index")
        if not math.isfinite(spec.value):
            raise RequestError(f"{field}.value must be finite")
        largest = torch.finfo(self.model.dtype).max if self.model.dtype.is_floating_point else math.inf
        if abs(spec.value) > largest:
            raise RequestError(f"{field}.value: {spec.value} does not fit the model's {self.model.dtype} (at most {largest:g})")
        return Ablation(site, index, spec.value, spec.index.pass_type.value)

    def _trace(self, cfg: S.MirroredTraceConfig, n_tokens: int, field: str) -> Trace:
        node = cfg.node_index
        site, index = self._node_site_and_index(node, n_tokens, field + ".nodeIndex", self._trace_locations)
        through = cfg.attention_trace_type.value if cfg.attention_trace_type else None
        if node.node_type.value == "attention_head":
            if any(i is None for i in index):
                raise RequestError(f"{field}.nodeIndex.tensorIndices: an attention node needs query, key and head")
            through = through or "QK"
            q, k = (i % n_tokens for i in index[:2])  # type: ignore[operator]
            if k > q:
                raise RequestError(f"{field}.nodeIndex.tensorIndices: key token {k} comes after query token {q}; a token only attends to earlier ones")
        elif through is not None:
            raise RequestError(f"{field}.attentionTraceType applies to attention heads only")
        downstream = None
        if cfg.downstream_trace_config is not None:
            if through != "V":
                raise RequestError(f"{field}.downstreamTraceConfig needs attentionTraceType V")
            if cfg.downstream_trace_config.attention_trace_type == S.AttentionTraceType.V:
                # checked before recursing: a deeply nested chain is refused at its second link
                raise RequestError(f"{field}.downstreamTraceConfig cannot itself trace through V")
            downstream = self._trace(cfg.downstream_trace_config, n_tokens, field + ".downstreamTraceConfig")
            if downstream.through == "V":
                raise RequestError(f"{field}.downstreamTraceConfig cannot itself trace through V")
        return Trace(site, index, through, downstream)  # type: ignore[arg-type]

    def _loss(self, cfg: S.LossFnConfig, field: str) -> LogitDiffLoss:
        name = cfg.name.value
        if name == "zero":
            return LogitDiffLoss(kind="zero")
        targets = cfg.target_tokens or []
        if not targets:
            raise RequestError(f"{field}.targetTokens: at least one target token is needed")
        distractors = cfg.distractor_tokens or []
        if distractors and name != "logit_diff":
            raise RequestError(f"{field}.distractorTokens: only the logit_diff loss uses distractors")
        return LogitDiffLoss(
            tuple(self.single_token(t, f"{field}.targetTokens[{i}]") for i, t in enumerate(targets)),
            tuple(self.single_token(t, f"{field}.distractorTokens[{i}]") for i, t in enumerate(distractors)),
            name,  # type: ignore[arg-type]
        )

    def _parse(self, spec: S.InferenceRequestSpec, field: str) -> _Parsed:
        tokens = self.encode_prompt(spec.prompt, field + ".prompt")
        ablations = [
            self._ablation(a, len(tokens), f"{field}.ablationSpecs[{i}]")
            for i, a in enumerate(spec.ablation_specs or [])
        ]
        loss = self._loss(spec.loss_fn_config, field + ".lossFnConfig") if spec.loss_fn_config else None
        trace = self._trace(spec.trace_config, len(tokens), field + ".traceConfig") if spec.trace_config else None
        if trace is not None and spec.trace_config and spec.trace_config.detach_layer_norm_scale:
            ablations.append(Ablation(Site("resid.ln_f.scale"), (None, None), 0.0, "backward"))
        return _Parsed(PromptRequest(tokens, ablations, loss, trace), [self.token_strings[t] for t in tokens])

    # ------------------------------------------------------------ processing

    def batched(self, request: S.BatchedRequest) -> S.BatchedResponse:
        subs = request.inference_sub_requests
        if not subs:
            raise RequestError("inferenceSubRequests: at least one sub-request is needed")
        parsed = [self._parse(s.inference_request_spec, f"inferenceSubRequests[{i}].inferenceRequestSpec") for i, s in enumerate(subs)]
        self._check_specs(subs, parsed)

        names: list[str] = []
        extra: set[Site] = set()
        for sub in subs:
            for spec in sub.processing_request_spec_by_name.values():
                names += self._scalar_names(spec, sub)
                extra |= self._extra_sites(spec)
        acts, grads = sc.sites_needed(sorted(set(names)), self.model)
        start = time.perf_counter()
        recordings = run(self.model, [p.request for p in parsed], sorted(acts | extra, key=repr), sorted(grads, key=repr))
        elapsed = time.perf_counter() - start

        # Node sets of top-k steps are unioned by step name across the batch.
        nodes_by_name: dict[str, list[S.MirroredNodeIndex]] = {}
        for sub, rec in zip(subs, recordings, strict=True):
            rankings: dict[Any, list[tuple[int, int]]] = {}  # shared by this prompt's top-k steps
            for name, spec in sub.processing_request_spec_by_name.items():
                if isinstance(spec, S.MultipleTopKDerivedScalarsRequestSpec):
                    nodes_by_name.setdefault(name, [])
                    nodes_by_name[name] += self._top_k_nodes(spec, rec, rankings)
        nodes_by_name = {k: list(dict.fromkeys(v)) for k, v in nodes_by_name.items()}

        responses = []
        for i, (sub, rec, p) in enumerate(zip(subs, recordings, parsed, strict=True)):
            data: dict[str, Any] = {}
            for name, spec in sub.processing_request_spec_by_name.items():
                field = f"inferenceSubRequests[{i}].processingRequestSpecByName.{name}"
                data[name] = self._process(spec, rec, nodes_by_name, sub, field)
            info = S.InferenceAndTokenData(
                inference_time=elapsed,
                memory_used_before=None,
                memory_used_after=None,
                loss=rec.objective,
                tokens_as_ints=rec.tokens,
                tokens_as_strings=p.token_strings,
            )
            responses.append(
                S.InferenceResponseAndResponseDict(
                    inference_response=S.InferenceResponse(inference_and_token_data=info),
                    processing_response_data_by_name=data,
                )
            )
        return S.BatchedResponse(inference_sub_responses=responses)

    def _check_specs(self, subs: Sequence[S.InferenceSubRequest], parsed: Sequence[_Parsed]) -> None:
        lengths = []
        for i, sub in enumerate(subs):
            specs = sub.processing_request_spec_by_name
            for name, spec in specs.items():
                field = f"inferenceSubRequests[{i}].processingRequestSpecByName.{name}"
                for dst in self._spec_dsts(spec):
                    if dst not in sc.SCALARS:
                        raise RequestError(f"{field}.dst: {dst} is not computed by this server; supported: {sorted(sc.SCALARS)}")
                    if sc.SCALARS[dst].node_type.endswith("autoencoder_latent"):
                        kind = sc.MLP_LATENTS if "mlp" in sc.SCALARS[dst].node_type else sc.ATTN_LATENTS
                        self._site(kind, 0, field)
                if isinstance(spec, (S.ScoredTokensRequestSpec, S.TokenPairAttributionRequestSpec)):
                    dep = specs.get(spec.depends_on_spec_name)
                    if not isinstance(dep, S.MultipleTopKDerivedScalarsRequestSpec):
                        raise RequestError(f"{field}.dependsOnSpecName: {spec.depends_on_spec_name!r} is not a top-k step of this sub-request")
                if isinstance(spec, (S.DerivedScalarsRequestSpec, S.DerivedAttentionScalarsRequestSpec)):
                    st = sc.SCALARS[spec.dst.value]
                    if st.layered and (spec.layer_index is None or not 0 <= spec.layer_index < self.n_layers):
                        raise RequestError(f"{field}.layerIndex: {spec.layer_index} is not a layer of this {self.n_layers}-layer model")
                    if isinstance(spec, S.DerivedAttentionScalarsRequestSpec) and st.node_type != "attention_head":
                        raise RequestError(f"{field}.dst: {spec.dst.value} is not an attention scalar")
                n_tokens = len(parsed[i].request.tokens)
                if isinstance(spec, S.MultipleTopKDerivedScalarsRequestSpec) and spec.token_index is not None and not -n_tokens <= spec.token_index < n_tokens:
                    raise RequestError(f"{field}.tokenIndex: {spec.token_index} is not a token of this {n_tokens}-token prompt")
            if any(isinstance(s, S.MultipleTopKDerivedScalarsRequestSpec) for s in specs.values()):
                lengths.append(len(parsed[i].request.tokens))
        if any(n > _PROMPT_LENGTH_LIMIT for n in lengths):
            raise RequestError(f"prompt: top-k requests take at most {_PROMPT_LENGTH_LIMIT} tokens, got {lengths}")
        if len(set(lengths)) > 1:
            raise RequestError(f"prompt: all prompts of a batched top-k request must have the same number of tokens, got {lengths}")

    @staticmethod
    def _spec_dsts(spec: Any) -> list[str]:
        if isinstance(spec, S.MultipleTopKDerivedScalarsRequestSpec):
            return [d.value for dsts in spec.dst_list_by_group_id.values() for d in dsts]
        if isinstance(spec, (S.DerivedScalarsRequestSpec, S.DerivedAttentionScalarsRequestSpec)):
            return [spec.dst.value]
        return []

    def _scalar_names(self, spec: Any, sub: S.InferenceSubRequest) -> list[str]:
        names = self._spec_dsts(spec)
        if isinstance(spec, S.DerivedScalarsRequestSpec) and spec.num_top_tokens:
            names.append("mlp_post_act" if "mlp" in spec.dst.value else spec.dst.value)
        return names

    def _extra_sites(self, spec: Any) -> set[Site]:
        """Activations needed beyond the scalars' own: for scored tokens and attributions."""
        layers = range(self.n_layers)

        def every_layer(*locations: str | None) -> set[Site]:
            return {Site(loc, layer) for loc in locations if loc is not None for layer in layers}

        if isinstance(spec, S.ScoredTokensRequestSpec):
            sites = every_layer("attn.v", "attn.qk_probs") | {Site("resid.post_emb")}
            if spec.token_scoring_type == S.TokenScoringType.INPUT_TOKENS_THAT_UPVOTE_MLP:
                sites |= every_layer("resid.post_mlp_ln")
            if spec.token_scoring_type in (S.TokenScoringType.INPUT_TOKENS_THAT_UPVOTE_ATTN_Q, S.TokenScoringType.INPUT_TOKENS_THAT_UPVOTE_ATTN_K):
                soft_capped = "attn.qk_logits" if self.model.cfg.attn_softcap is not None else None
                sites |= every_layer("attn.q", "attn.k", "resid.post_attn_ln", soft_capped)
            return sites
        if isinstance(spec, S.TokenPairAttributionRequestSpec) and self.has_attention_autoencoder:
            return every_layer("attn.v", "attn.qk_probs", self.model.write_scale_location("attn"))
        return set()

    # ----------------------------------------------------------------- top-k

    def _layer_tensors(self, dst: str, rec: Recording) -> list[tuple[int | None, Tensor]]:
        st = sc.SCALARS[dst]
        layers: Iterable[int | None] = range(self.n_layers) if st.layered else [None]
        return [(layer, sc.compute(dst, rec, self.weights, layer)) for layer in layers]

    def _restrict(self, x: Tensor, token_index: int | None) -> Tensor:
        return x if token_index is None else x[token_index : token_index + 1 or None]

    def _top_k_nodes(
        self, spec: S.MultipleTopKDerivedScalarsRequestSpec, rec: Recording, rankings: dict[Any, list[tuple[int, int]]] | None = None
    ) -> list[S.MirroredNodeIndex]:
        """The union over groups of each group's top (and, unless the group is non-negative,
        bottom) k nodes across all its scalars and layers. `rankings` memoizes each ranking for
        the prompt, so a later step asking for fewer nodes of the same scalars (the TDB
        request's k=1 steps after its node table) slices it instead of ranking again."""
        rankings = {} if rankings is None else rankings
        nodes: list[S.MirroredNodeIndex] = []
        for group, dsts in spec.dst_list_by_group_id.items():
            segments = [
                (dst.value, layer, self._restrict(x, spec.token_index))
                for dst in dsts
                for layer, x in self._layer_tensors(dst.value, rec)
            ]
            directions = [True] if group.exclude_bottom_k else [True, False]
            n_total = sum(x.numel() for _, _, x in segments)
            if spec.top_and_bottom_k is None and n_total > S.MAX_NODE_TABLE_K:
                raise RequestError(
                    f"topAndBottomK: without it every one of the {n_total} {group.value} nodes is "
                    f"listed; give topAndBottomK (at most {S.MAX_NODE_TABLE_K})"
                )
            want = n_total if spec.top_and_bottom_k is None else min(spec.top_and_bottom_k, n_total)
            for largest in directions:
                key = (tuple(dsts), spec.token_index, largest)
                ranked = rankings.get(key)
                if ranked is None or len(ranked) < want:
                    ranked = rankings[key] = self._rank(segments, want, largest)
                for seg, flat_index in ranked[:want]:
                    dst_name, layer, x = segments[seg]
                    tensor_indices = list(_unravel(flat_index, x.shape))
                    if spec.token_index is not None:
                        tensor_indices[0] = spec.token_index
                    nodes.append(
                        S.MirroredNodeIndex(
                            node_type=S.NodeType(sc.SCALARS[dst_name].node_type),
                            tensor_indices=tuple(tensor_indices),
                            layer_index=layer,
                            pass_type=S.PassType.FORWARD,
                        )
                    )
        return nodes

    @staticmethod
    def _rank(segments: list[tuple[str, int | None, Tensor]], k: int, largest: bool) -> list[tuple[int, int]]:
        """The k largest (smallest) entries over all segments, best first, as (segment, flat
        index): each segment's own top k first, then the top k of those few candidates (the
        same answer as one top-k over everything, without concatenating millions)."""
        values, where = [], []
        for seg, (_, _, x) in enumerate(segments):
            top = x.flatten().topk(min(k, x.numel()), largest=largest)
            values.append(top.values)
            where += [(seg, i) for i in top.indices.tolist()]
        candidates = torch.cat(values)
        return [where[p] for p in candidates.topk(min(k, candidates.numel()), largest=largest).indices.tolist()]

    def _value_at(self, dsts: Sequence[S.DerivedScalarType], node: S.MirroredNodeIndex, rec: Recording) -> float:
        for dst in dsts:
            st = sc.SCALARS[dst.value]
            if st.node_type == node.node_type.value:
                x = sc.compute(dst.value, rec, self.weights, node.layer_index)
                return float(x[tuple(node.tensor_indices)])
        raise RequestError(f"no scalar in the group scores {node.node_type.value} nodes")

    def _multiple_top_k(self, spec: S.MultipleTopKDerivedScalarsRequestSpec, rec: Recording, nodes: list[S.MirroredNodeIndex]) -> S.MultipleTopKDerivedScalarsResponseData:
        activations = {
            group: [_finite(self._value_at(dsts, n, rec)) for n in nodes]
            for group, dsts in spec.dst_list_by_group_id.items()
        }
        keep = {d.value for d in spec.dimensions_to_keep_for_intermediate_sum}
        sums: dict[S.GroupId, dict[S.DerivedScalarType, Any]] = {}
        for group, dsts in spec.dst_list_by_group_id.items():
            sums[group] = {}
            for dst in dsts:
                # axes: token axes first (one, or query and key for attention), then the node axis
                n_token_axes = 2 if sc.SCALARS[dst.value].node_type == "attention_head" else 1
                kept_axes = [a for a, name in enumerate(("sequence_tokens", "attended_to_sequence_tokens")[:n_token_axes]) if name in keep]
                per_layer = []
                for _, x in self._layer_tensors(dst.value, rec):
                    drop = [a for a in range(x.ndim) if a not in kept_axes]
                    per_layer.append(x.sum(dim=drop) if drop else x)
                # "layers" kept: one leading entry per layer (a single one for layerless scalars
                # such as the embeddings), else summed over layers
                total = torch.stack(per_layer) if S.Dimension.LAYERS.value in keep else sum(per_layer[1:], per_layer[0])
                sums[group][dst] = _tensor_nd(total)
        strings = None
        if any(n.node_type == S.NodeType.VOCAB_TOKEN for n in nodes):
            strings = [self.token_strings[n.tensor_indices[-1]] if n.node_type == S.NodeType.VOCAB_TOKEN and n.tensor_indices[-1] is not None else None for n in nodes]
        return S.MultipleTopKDerivedScalarsResponseData(
            activations_by_group_id=activations,
            node_indices=nodes,
            vocab_token_strings_for_indices=strings,
            intermediate_sum_activations_by_dst_by_group_id=sums,
        )

    # --------------------------------------------------------- scored tokens

    def _top_tokens(self, scores: Tensor, n: int) -> list[S.TopTokens]:
        """Most and least scored vocabulary tokens per row of `scores` (nodes x vocab)."""
        n = min(n, scores.shape[-1])
        top_v, top_i = scores.topk(n, dim=-1)
        bot_v, bot_i = scores.topk(n, dim=-1, largest=False)
        scale = torch.maximum(top_v[:, :1].abs(), bot_v[:, :1].abs()).clamp(min=1e-30)

        def pack(values: list[float], ids: list[int], scale: float) -> list[S.TokenAndScalar]:
            return [
                S.TokenAndScalar(token=self.token_strings[t], scalar=_finite(v), normalized_scalar=_finite(v / scale))
                for t, v in zip(ids, values, strict=True)
            ]

        return [
            S.TopTokens(top=pack(tv, ti, s), bottom=pack(bv, bi, s))
            for tv, ti, bv, bi, s in zip(
                top_v.tolist(), top_i.tolist(), bot_v.tolist(), bot_i.tolist(), scale[:, 0].tolist(), strict=True
            )
        ]

    def _unembed(self, writes: Tensor) -> Tensor:
        """Logit-lens scores of residual-stream write vectors (the final norm's scale held
        constant)."""
        return self.model.logit_lens(writes)

    def _node_write(self, node: S.MirroredNodeIndex, rec: Recording) -> Tensor | None:
        """The residual-stream vector a node writes per unit of activation (None if undefined);
        under sandwich norms, before the post-norm's per-token scale (a positive factor)."""
        t = node.tensor_indices
        layer = node.layer_index
        kind = node.node_type.value
        if kind == "mlp_neuron" and layer is not None:
            return self.weights.mlp_write(layer)[:, t[-1]]
        if kind == "attention_head" and layer is not None:
            head = int(t[2])  # type: ignore[arg-type]
            v = rec.activations[Site("attn.v", layer)][t[1], self.model.kv_head(head)].float()
            return v @ self.weights.head_write(layer)[head]
        if kind in ("mlp_autoencoder_latent", "attention_autoencoder_latent") and layer is not None:
            latents = sc.MLP_LATENTS if kind.startswith("mlp") else sc.ATTN_LATENTS
            return self.weights.latent_write(latents, layer)[:, t[-1]]
        if kind == "layer":
            return rec.activations[Site("resid.post_emb")][t[0]].float()
        return None

    def _node_read(self, node: S.MirroredNodeIndex, rec: Recording, scoring: S.TokenScoringType) -> Tensor | None:
        """The direction, in the space of the reading norm's output before its gain, in which
        moving the node's input token would raise what tracing the node differentiates: the
        gradient of that quantity at the recorded input (exact for the linear parts; a gated
        MLP's activation and Qwen3's query/key norms are differentiated where they are)."""
        t = node.tensor_indices
        layer = node.layer_index
        kind = node.node_type.value
        if layer is None:
            return None
        model = self.model
        if scoring == S.TokenScoringType.INPUT_TOKENS_THAT_UPVOTE_MLP:
            if kind == "mlp_neuron":
                onto = torch.zeros(model.cfg.d_mlp, device=model.device)
                onto[t[-1]] = 1.0
            elif kind == "mlp_autoencoder_latent":
                ae, reads = self.weights.autoencoder(sc.MLP_LATENTS, layer)
                if reads != "mlp.post_act":
                    return None
                # an ungated MLP is differentiated through its pre-activations (GELU taken as
                # the identity, as the seed does), a gated one through its activation
                rows = ae.affine_read_directions()
                if rows is None:
                    return None
                onto = rows[t[-1]].float()
            else:
                return None
            y = rec.activations[Site("resid.post_mlp_ln", layer)][t[0]]
            grad = _vjp(lambda x: model.mlp_traced(layer, x), y, onto)
            return grad * model.input_norm_gain(layer, "mlp").float()
        if kind != "attention_head":
            return None
        q_tok, k_tok, head = (int(i) for i in t)  # type: ignore[arg-type]
        kv = model.kv_head(head)
        scale = model.cfg.scale
        if model.cfg.attn_softcap is not None:  # d tanh-capped score / d raw score
            capped = rec.activations[Site("attn.qk_logits", layer)][q_tok, k_tok, head].float()
            scale *= float(1 - (capped / model.cfg.attn_softcap) ** 2)
        normed = rec.activations[Site("resid.post_attn_ln", layer)]
        if scoring == S.TokenScoringType.INPUT_TOKENS_THAT_UPVOTE_ATTN_Q:
            # tokens whose query, against this key, raises the attention score
            key = rec.activations[Site("attn.k", layer)][k_tok, kv].float()
            position = torch.tensor([q_tok], device=model.device)
            grad = _vjp(lambda x: model.queries(layer, x[None], position)[0, head], normed[q_tok], key * scale)
        else:
            query = rec.activations[Site("attn.q", layer)][q_tok, head].float()
            position = torch.tensor([k_tok], device=model.device)
            grad = _vjp(lambda x: model.keys(layer, x[None], position)[0, kv], normed[k_tok], query * scale)
        return grad * model.input_norm_gain(layer, "attn").float()

    def _scored_tokens(self, spec: S.ScoredTokensRequestSpec, rec: Recording, nodes: list[S.MirroredNodeIndex]) -> S.ScoredTokensResponseData:
        writes = spec.token_scoring_type == S.TokenScoringType.UPVOTED_OUTPUT_TOKENS
        keys = [self._static_scores_key(n, spec) for n in nodes]
        results: list[S.TopTokens | None] = [None if k is None else self._scored_cache.get(k) for k in keys]
        missing = [i for i, r in enumerate(results) if r is None]
        with torch.no_grad():
            vectors = {
                i: self._node_write(nodes[i], rec) if writes else self._node_read(nodes[i], rec, spec.token_scoring_type)
                for i in missing
            }
            present = [(i, v) for i, v in vectors.items() if v is not None]
            # a matmul with the vocabulary per chunk of nodes: a chunk's scores (nodes x vocab)
            # stay small whatever the number of nodes (k and sub-requests at their bounds)
            for start in range(0, len(present), _SCORED_CHUNK):
                chunk = present[start : start + _SCORED_CHUNK]
                stacked = torch.stack([v for _, v in chunk])
                scores = self._unembed(stacked) if writes else self.weights.read_embeddings(stacked)
                for (i, _), top in zip(chunk, self._top_tokens(scores, spec.num_tokens), strict=True):
                    results[i] = top
                    key = keys[i]
                    if key is not None:
                        self._remember_scores(key, top)
        return S.ScoredTokensResponseData(node_indices=nodes, top_tokens_list=results)

    def _static_scores_key(self, node: S.MirroredNodeIndex, spec: S.ScoredTokensRequestSpec) -> tuple[Any, ...] | None:
        """A cache key for the node's scored tokens when they depend on the weights alone (a
        neuron's or a latent's write or read direction), None when they depend on the prompt
        (a head's write depends on its value vector, its Q/K reads on the other side)."""
        if node.node_type.value not in ("mlp_neuron", "mlp_autoencoder_latent", "attention_autoencoder_latent"):
            return None
        if spec.token_scoring_type == S.TokenScoringType.INPUT_TOKENS_THAT_UPVOTE_MLP and self.model.cfg.gated_mlp:
            return None  # a gated neuron's read depends on where it is differentiated
        return (spec.token_scoring_type, spec.num_tokens, node.node_type, node.layer_index, node.tensor_indices[-1])

    def _remember_scores(self, key: tuple[Any, ...], top: S.TopTokens) -> None:
        if self.scored_cache_size <= 0:
            return
        if len(self._scored_cache) >= self.scored_cache_size:
            self._scored_cache.pop(next(iter(self._scored_cache)))  # the oldest entry
        self._scored_cache[key] = top

    def _token_pair_attribution(self, spec: S.TokenPairAttributionRequestSpec, rec: Recording, nodes: list[S.MirroredNodeIndex]) -> S.TokenPairAttributionResponseData:
        """For attention-autoencoder latents: which attended-to tokens their input came from.
        The latent's pre-activation is linear in the attention output, which is a sum over
        (key token, head) of the heads' writes, so each key token gets its share."""
        out: list[S.TopTokensAttendedTo | None] = []
        for n in nodes:
            if n.node_type != S.NodeType.ATTENTION_AUTOENCODER_LATENT or n.layer_index is None:
                out.append(None)
                continue
            layer, (q, latent) = n.layer_index, n.tensor_indices
            assert q is not None and latent is not None
            q %= len(rec.tokens)
            ae, _ = self.weights.autoencoder(sc.ATTN_LATENTS, layer)
            probs = rec.activations[Site("attn.qk_probs", layer)][q, : q + 1].float()  # (keys, H)
            values = self.model.expand_kv(rec.activations[Site("attn.v", layer)][: q + 1].float())
            writes = torch.einsum("khe,hed->khd", values, self.weights.head_write(layer))
            rows = ae.affine_read_directions()
            if rows is None:  # its encoder is not linear in the attention output
                out.append(None)
                continue
            per_key = torch.einsum("kh,khd,d->k", probs, writes, rows[latent].float())
            scale = self.model.write_scale_location("attn")
            if scale is not None:  # the latent reads the write after the post-attention norm
                per_key = per_key / rec.activations[Site(scale, layer)][q].float()
            k = min(spec.num_tokens_attended_to, q + 1)
            top = per_key.topk(k)
            out.append(S.TopTokensAttendedTo(token_indices=top.indices.tolist(), attributions=[_finite(v) for v in top.values.tolist()]))
        return S.TokenPairAttributionResponseData(node_indices=nodes, top_tokens_attended_to_list=out)

    # ---------------------------------------------------- single-node scalars

    def _derived_scalars(self, spec: S.DerivedScalarsRequestSpec, rec: Recording) -> S.DerivedScalarsResponseData:
        st = sc.SCALARS[spec.dst.value]
        x = sc.compute(spec.dst.value, rec, self.weights, spec.layer_index if st.layered else None)
        if spec.activation_index >= x.shape[-1] or spec.activation_index < 0:
            raise RequestError(f"activationIndex: {spec.activation_index} is out of range for {x.shape[-1]} nodes")
        if x.ndim != 2:
            raise RequestError(f"dst: {spec.dst.value} is per token pair; use /derived_attention_scalars")
        values = x[:, spec.activation_index]
        nodes = [
            S.MirroredNodeIndex(node_type=S.NodeType(st.node_type), tensor_indices=(t, spec.activation_index), layer_index=spec.layer_index, pass_type=spec.pass_type)
            for t in range(x.shape[0])
        ]
        top_tokens = None
        if spec.num_top_tokens:
            with torch.no_grad():
                if st.node_type == "vocab_token":
                    # token reads: the scores are already per vocabulary token
                    scores = x[spec.activation_index if spec.dst.value == "vocab_token_write_to_input_direction" else -1]
                    top_tokens = None if bool((scores == 0).all()) else self._top_tokens(scores[None], spec.num_top_tokens)[0]
                else:
                    write = self._node_write(nodes[0], rec)
                    if write is not None and float(values[0]) != 0:
                        scores = self._unembed(write[None]) * (1 if float(values[0]) > 0 else -1)
                        top_tokens = self._top_tokens(scores, spec.num_top_tokens)[0]
        return S.DerivedScalarsResponseData(
            activations=[_finite(v) for v in values.tolist()],
            normalized_activations=None,
            node_indices=nodes,
            top_tokens=top_tokens,
        )

    def _derived_attention_scalars(self, spec: S.DerivedAttentionScalarsRequestSpec, rec: Recording) -> S.DerivedAttentionScalarsResponseData:
        x = sc.compute(spec.dst.value, rec, self.weights, spec.layer_index)
        if not 0 <= spec.activation_index < x.shape[-1]:
            raise RequestError(f"activationIndex: {spec.activation_index} is out of range for {x.shape[-1]} heads")
        head = x[..., spec.activation_index]  # (Q, K)
        return S.DerivedAttentionScalarsResponseData(
            token_and_attention_scalars_list=attention_summaries(
                [self.token_strings[t] for t in rec.tokens], head
            )
        )

    def _process(self, spec: Any, rec: Recording, nodes_by_name: dict[str, list[S.MirroredNodeIndex]], sub: S.InferenceSubRequest, field: str) -> Any:
        if isinstance(spec, S.MultipleTopKDerivedScalarsRequestSpec):
            return self._multiple_top_k(spec, rec, nodes_by_name[_name_of(sub, spec)])
        if isinstance(spec, S.ScoredTokensRequestSpec):
            return self._scored_tokens(spec, rec, nodes_by_name[spec.depends_on_spec_name])
        if isinstance(spec, S.TokenPairAttributionRequestSpec):
            return self._token_pair_attribution(spec, rec, nodes_by_name[spec.depends_on_spec_name])
        if isinstance(spec, S.DerivedScalarsRequestSpec):
            return self._derived_scalars(spec, rec)
        if isinstance(spec, S.DerivedAttentionScalarsRequestSpec):
            return self._derived_attention_scalars(spec, rec)
        raise RequestError(f"{field}: unsupported processing spec")

    # ------------------------------------------------------------------- TDB

    def batched_tdb(self, request: S.BatchedTdbRequest) -> S.BatchedResponse:
        if not request.sub_requests:
            raise RequestError("subRequests: at least one sub-request is needed")
        subs = [self.tdb_to_sub_request(s, f"subRequests[{i}]") for i, s in enumerate(request.sub_requests)]
        try:
            return self.batched(S.BatchedRequest(inference_sub_requests=subs))
        except RequestError as e:
            raise RequestError(_tdb_field_names(str(e))) from None

    def tdb_to_sub_request(self, spec: S.TdbRequestSpec, field: str) -> S.InferenceSubRequest:
        """The TDB page's compact request, expanded into the generic processing steps (the
        step names are what the client reads)."""
        if spec.top_and_bottom_k_for_node_table < 1:
            raise RequestError(f"{field}.topAndBottomKForNodeTable must be at least 1")
        if spec.component_type_for_mlp == S.ComponentTypeForMlp.AUTOENCODER_LATENT and not self.has_mlp_autoencoder:
            raise RequestError(f"{field}.componentTypeForMlp: no MLP autoencoder is loaded")
        if spec.component_type_for_attention == S.ComponentTypeForAttention.AUTOENCODER_LATENT and not self.has_attention_autoencoder:
            raise RequestError(f"{field}.componentTypeForAttention: no attention autoencoder is loaded")
        loss: S.LossFnConfig | None = S.LossFnConfig(
            name=S.LossFnName.LOGIT_DIFF, target_tokens=spec.target_tokens, distractor_tokens=spec.distractor_tokens
        )
        ablations = [self._node_ablation(a, f"{field}.nodeAblations[{i}]") for i, a in enumerate(spec.node_ablations or [])]
        # the final LayerNorm's scale is treated as a constant in every backward pass
        ablations.append(
            S.AblationSpec(
                index=S.MirroredActivationIndex(
                    activation_location_type=S.ActivationLocationType.RESID_FINAL_LAYER_NORM_SCALE,
                    tensor_indices=("All", "All"),
                    layer_index=None,
                    pass_type=S.PassType.BACKWARD,
                ),
                value=0,
            )
        )
        trace = None
        token_index = -1
        if spec.upstream_node_to_trace is not None:
            up = spec.upstream_node_to_trace
            downstream = None
            if spec.downstream_node_to_trace is not None:
                d = spec.downstream_node_to_trace
                downstream = S.MirroredTraceConfig(node_index=d.node_index, pre_or_post_act=S.PreOrPostAct.PRE, detach_layer_norm_scale=True, attention_trace_type=d.attention_trace_type)
            trace = S.MirroredTraceConfig(
                node_index=up.node_index,
                pre_or_post_act=S.PreOrPostAct.PRE,
                detach_layer_norm_scale=True,
                attention_trace_type=up.attention_trace_type,
                downstream_trace_config=downstream,
            )
            if up.node_index.tensor_indices and up.node_index.tensor_indices[0] is not None:
                token_index = up.node_index.tensor_indices[0]
            # tracing replaces the loss, except through V with no downstream node
            if not (up.attention_trace_type == S.AttentionTraceType.V and downstream is None):
                loss = None
        elif spec.downstream_node_to_trace is not None:
            raise RequestError(f"{field}.downstreamNodeToTrace needs an upstreamNodeToTrace")

        def top_k(mlp: S.ComponentTypeForMlp, attn: S.ComponentTypeForAttention, k: int) -> S.MultipleTopKDerivedScalarsRequestSpec:
            return S.MultipleTopKDerivedScalarsRequestSpec(dst_list_by_group_id=tdb_groups(mlp, attn), top_and_bottom_k=k, token_index=None)

        def scored(kind: S.TokenScoringType) -> S.ScoredTokensRequestSpec:
            return S.ScoredTokensRequestSpec(token_scoring_type=kind, num_tokens=_SCORED_TOKENS, depends_on_spec_name="topKComponents")

        steps: dict[str, Any] = {
            "topKComponents": top_k(spec.component_type_for_mlp, spec.component_type_for_attention, spec.top_and_bottom_k_for_node_table),
            "componentSumsForTokenDisplay": top_k(S.ComponentTypeForMlp.NEURON, S.ComponentTypeForAttention.ATTENTION_HEAD, 1),
            # not in the original server: exact per-layer sums for the viewer's layer summary
            "componentSumsForLayerDisplay": S.MultipleTopKDerivedScalarsRequestSpec(
                dst_list_by_group_id=tdb_groups(spec.component_type_for_mlp, spec.component_type_for_attention),
                top_and_bottom_k=1,
                token_index=None,
                dimensions_to_keep_for_intermediate_sum=[S.Dimension.LAYERS],
            ),
            "upvotedOutputTokens": scored(S.TokenScoringType.UPVOTED_OUTPUT_TOKENS),
            "inputTokensThatUpvoteMlp": scored(S.TokenScoringType.INPUT_TOKENS_THAT_UPVOTE_MLP),
            "inputTokensThatUpvoteAttnQ": scored(S.TokenScoringType.INPUT_TOKENS_THAT_UPVOTE_ATTN_Q),
            "inputTokensThatUpvoteAttnK": scored(S.TokenScoringType.INPUT_TOKENS_THAT_UPVOTE_ATTN_K),
            "tokenPairAttribution": S.TokenPairAttributionRequestSpec(num_tokens_attended_to=3, depends_on_spec_name="topKComponents"),
            "topOutputTokenLogits": S.MultipleTopKDerivedScalarsRequestSpec(
                dst_list_by_group_id={S.GroupId.LOGITS: [S.DerivedScalarType.LOGITS]}, top_and_bottom_k=100, token_index=token_index
            ),
        }
        return S.InferenceSubRequest(
            inference_request_spec=S.InferenceRequestSpec(prompt=spec.prompt, ablation_specs=ablations, loss_fn_config=loss, trace_config=trace),
            processing_request_spec_by_name=steps,
        )

    def _node_ablation(self, ablation: S.NodeAblation, field: str) -> S.AblationSpec:
        node = ablation.node_index
        kind = node.node_type.value
        if kind not in _NODE_LOCATION:
            raise RequestError(f"{field}.nodeIndex.nodeType: {kind} nodes cannot be ablated")
        t = list(node.tensor_indices)
        expected = 3 if kind == "attention_head" else 2
        if len(t) != expected:
            what = "[query, key, head]" if expected == 3 else "[token, index]"
            raise RequestError(f"{field}.nodeIndex.tensorIndices: a {kind} node has {expected} indices {what}, got {len(t)}")
        if t[0] is None or t[-1] is None:
            raise RequestError(f"{field}.nodeIndex.tensorIndices: need the token and the node index")
        location = {
            "mlp_neuron": S.ActivationLocationType.MLP_POST_ACT,
            "attention_head": S.ActivationLocationType.ATTN_QK_PROBS,
            "mlp_autoencoder_latent": S.ActivationLocationType.ONLINE_MLP_AUTOENCODER_LATENT,
            "attention_autoencoder_latent": S.ActivationLocationType.ONLINE_ATTENTION_AUTOENCODER_LATENT,
        }[kind]
        if kind == "attention_head":
            # a head at a token pair (query, key, head); a missing key ablates all keys
            indices: S.AllOrOneIndices = (t[0], "All" if t[1] is None else t[1], t[2] or 0)
        else:
            indices = (t[0], t[-1])
        return S.AblationSpec(
            index=S.MirroredActivationIndex(activation_location_type=location, tensor_indices=indices, layer_index=node.layer_index, pass_type=S.PassType.FORWARD),
            value=ablation.value,
        )


def _vjp(fn: Any, x: Tensor, onto: Tensor) -> Tensor:
    """d(fn(x) . onto)/dx at x, with x detached from any graph."""
    with torch.enable_grad():
        x = x.detach().requires_grad_(True)
        (grad,) = torch.autograd.grad((fn(x).float() * onto).sum(), x)
    return grad.float()


def _token_strings(tokenizer: Tokenizer, n_vocab: int) -> list[str]:
    """Each id's string; ids the tokenizer does not know (a model's padded vocabulary, a smaller
    tokenizer) are shown as <|id|>."""
    known = min(n_vocab, tokenizer.n_vocab)
    try:
        strings = tokenizer.decode_tokens(range(known))
    except (KeyError, ValueError):
        strings = []
        for i in range(known):
            try:
                strings += tokenizer.decode_tokens([i])
            except (KeyError, ValueError):
                strings.append(f"<|{i}|>")
    return strings + [f"<|{i}|>" for i in range(known, n_vocab)]


def tdb_groups(mlp: S.ComponentTypeForMlp, attn: S.ComponentTypeForAttention) -> dict[S.GroupId, list[S.DerivedScalarType]]:
    """The node table's columns: for each group, one scalar per node kind."""
    D = S.DerivedScalarType
    mlp_prefix = "mlp" if mlp == S.ComponentTypeForMlp.NEURON else "online_mlp_autoencoder"
    attn_latents = attn == S.ComponentTypeForAttention.AUTOENCODER_LATENT
    def attn_dst(head: str, latent: str) -> S.DerivedScalarType:
        return D(f"online_attention_autoencoder_{latent}" if attn_latents else head)
    return {
        S.GroupId.WRITE_NORM: [D.RESID_POST_EMBEDDING_NORM, D(f"{mlp_prefix}_write_norm"), attn_dst("unflattened_attn_write_norm", "write_norm")],
        S.GroupId.ACT_TIMES_GRAD: [D.TOKEN_ATTRIBUTION, D(f"{mlp_prefix}_act_times_grad"), attn_dst("unflattened_attn_act_times_grad", "act_times_grad")],
        S.GroupId.DIRECTION_WRITE: [
            D.RESID_POST_EMBEDDING_PROJ_TO_FINAL_RESIDUAL_GRAD,
            D(f"{mlp_prefix}_write_to_final_residual_grad"),
            attn_dst("unflattened_attn_write_to_final_residual_grad", "write_to_final_residual_grad"),
        ],
        S.GroupId.ACTIVATION: [D.ALWAYS_ONE, D("mlp_post_act" if mlp_prefix == "mlp" else "online_mlp_autoencoder_latent"), attn_dst("attn_qk_probs", "latent")],
    }


def attention_summaries(tokens: list[str], scalars: Tensor) -> list[S.TokenAndAttentionScalars]:
    """Per query token: its scalars over the keys it can see, and summaries of attention in
    (as a query) and out (as a key), each also normalized by the largest such value."""
    n = len(tokens)
    x = scalars.float()[:n, :n].tril()
    total_in, max_in = x.sum(1), x.max(1).values
    total_out, max_out = x.sum(0), x.max(0).values

    def norm(v: Tensor) -> Tensor:
        m = v.abs().max()
        return v / m if m > 0 else v

    peak = x.abs().max()
    normalized = x / peak if peak > 0 else x
    out = []
    for i, tok in enumerate(tokens):
        out.append(
            S.TokenAndAttentionScalars(
                token=tok,
                scalars=[_finite(v) for v in x[i, : i + 1].tolist()],
                normalized_scalars=[_finite(v) for v in normalized[i, : i + 1].tolist()],
                total_scalar_in=_finite(float(total_in[i])),
                normalized_total_scalar_in=_finite(float(norm(total_in)[i])),
                max_scalar_in=_finite(float(max_in[i])),
                normalized_max_scalar_in=_finite(float(norm(max_in)[i])),
                total_scalar_out=_finite(float(total_out[i])),
                normalized_total_scalar_out=_finite(float(norm(total_out)[i])),
                max_scalar_out=_finite(float(max_out[i])),
                normalized_max_scalar_out=_finite(float(norm(max_out)[i])),
            )
        )
    return out


# Field paths of the expanded request, renamed to what the TDB client sent (most specific first;
# node ablations come first in ablationSpecs, so their numbering is unchanged).
_TDB_FIELDS = [
    (r"inferenceSubRequests\[(\d+)\]\.inferenceRequestSpec\.ablationSpecs\[(\d+)\]\.index", r"subRequests[\1].nodeAblations[\2].nodeIndex"),
    (r"inferenceSubRequests\[(\d+)\]\.inferenceRequestSpec\.traceConfig\.downstreamTraceConfig", r"subRequests[\1].downstreamNodeToTrace"),
    (r"inferenceSubRequests\[(\d+)\]\.inferenceRequestSpec\.traceConfig", r"subRequests[\1].upstreamNodeToTrace"),
    (r"inferenceSubRequests\[(\d+)\]\.inferenceRequestSpec\.lossFnConfig\.", r"subRequests[\1]."),
    (r"inferenceSubRequests\[(\d+)\]\.inferenceRequestSpec\.", r"subRequests[\1]."),
]


def _tdb_field_names(message: str) -> str:
    for pattern, replacement in _TDB_FIELDS:
        message = re.sub(pattern, replacement, message)
    return message


def _name_of(sub: S.InferenceSubRequest, spec: Any) -> str:
    for name, s in sub.processing_request_spec_by_name.items():
        if s is spec:
            return name
    raise KeyError("spec not in sub-request")


def _unravel(offset: int, shape: torch.Size) -> tuple[int, ...]:
    out = []
    for size in reversed(shape):
        out.append(offset % size)
        offset //= size
    return tuple(reversed(out))


def _finite(x: float) -> float:
    # JSON has no NaN/inf; the original server sent -999 for them
    return x if math.isfinite(x) else -999.0


def _tensor_nd(x: Tensor) -> Any:
    if x.ndim == 0:
        return S.Tensor0D(value=_finite(float(x)))
    rows = x.tolist()
    if x.ndim == 1:
        return S.Tensor1D(value=[_finite(v) for v in rows])
    if x.ndim == 2:
        return S.Tensor2D(value=[[_finite(v) for v in r] for r in rows])
    return S.Tensor3D(value=[[[_finite(v) for v in r] for r in m] for m in rows])
