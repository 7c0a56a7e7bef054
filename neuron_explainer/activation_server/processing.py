"""Answering inference requests: one batched pass, then each named processing step.

`Debugger.batched` is the whole pipeline:
  1. parse every sub-request into a `PromptRequest` (tokens, ablations, loss or trace) and the
     context its scalars need (`scalars.Context`: the direct effects' direction, the node of
     within-layer gradients, the node whose input tokens are scored);
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
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import tiktoken
import torch
from torch import Tensor

from neuron_explainer.activation_server import schemas as S
from neuron_explainer.activation_server.errors import RequestError
from neuron_explainer.activation_server.node_scalars import NodeScalars, kept_axes
from neuron_explainer.activation_server.scored_tokens import TokenScorer, finite
from neuron_explainer.activation_server.wire_floats import short_floats, tensor_nd
from neuron_explainer.debugger import reads
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

_NODE_LOCATION = {  # where a node of each type is ablated, and read as an activation
    "mlp_neuron": "mlp.post_act",
    "attention_head": "attn.qk_probs",
    **{k.node_type: k.hook for k in sc.LATENT_KINDS},
}
_NODE_LOCATION_TYPE = {  # the same, as the API's activation location types
    "mlp_neuron": S.ActivationLocationType.MLP_POST_ACT.value,
    "attention_head": S.ActivationLocationType.ATTN_QK_PROBS.value,
    **{k.node_type: k.location_type for k in sc.LATENT_KINDS},
}
_SCORED_TOKENS = 10  # top and bottom tokens per node in the TDB node table
_PROMPT_LENGTH_LIMIT = 500  # for batched top-k requests, as in the original server, unless --max-prompt-tokens says otherwise
_DETACH_FINAL_NORM = Ablation(Site("resid.ln_f.scale"), (None, None), 0.0, "backward")


@dataclass
class _Parsed:
    request: PromptRequest
    token_strings: list[str]
    context: sc.Context


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
        # scored tokens, and the cache of those that depend on the weights alone
        self.scorer = TokenScorer(self.weights, self.token_strings)
        self.max_prompt_tokens: int | None = None  # None: the model's context (--max-prompt-tokens)

    @property
    def scored_cache_size(self) -> int:
        return self.scorer.cache_size

    @scored_cache_size.setter
    def scored_cache_size(self, value: int) -> None:
        self.scorer.cache_size = value

    # ------------------------------------------------------------ model info

    @property
    def has_mlp_autoencoder(self) -> bool:
        return bool(self.weights.latent_layers(sc.MLP_LATENTS))

    @property
    def has_attention_autoencoder(self) -> bool:
        return bool(self.weights.latent_layers(sc.ATTN_LATENTS))

    def _n_latents(self, kind: str) -> int | None:
        layers = self.weights.latent_layers(kind)
        return int(self.weights.autoencoder(kind, layers[0])[0].n_latents) if layers else None

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
            n_residual_autoencoder_latents=self._n_latents(sc.RESID_LATENTS),
            n_transcoder_latents=self._n_latents(sc.TRANSCODER_LATENTS),
            residual_autoencoder_layers=self.weights.latent_layers(sc.RESID_LATENTS) or None,
            transcoder_layers=self.weights.latent_layers(sc.TRANSCODER_LATENTS) or None,
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

    def _latent_kind(self, name: str, field: str, hint: sc.LatentKind | None) -> sc.LatentKind:
        """The latent kind an API location or node type names; the seed's generic one
        (`online_autoencoder_latent`, `autoencoder_latent`) is the one kind loaded, or the
        kind the sub-request's scalars are about."""
        if name in sc.BY_LOCATION_TYPE:
            return sc.BY_LOCATION_TYPE[name]
        if name in sc.BY_NODE_TYPE:
            return sc.BY_NODE_TYPE[name]
        loaded = [k for k in self.weights.loaded_kinds() if k.seed]  # what the seed's names mean
        if len(loaded) == 1:
            return loaded[0]
        if hint is not None:
            return hint
        if not loaded:
            raise RequestError(f"{field}: no autoencoder is loaded (start the server with one)")
        raise RequestError(
            f"{field}: {name} is ambiguous with both MLP and attention autoencoders loaded; use "
            "online_mlp_autoencoder_latent or online_attention_autoencoder_latent"
        )

    def _site(self, location: str, layer: int | None, field: str, hint: sc.LatentKind | None = None) -> Site:
        if location in (sc.GENERIC_LOCATION_TYPE, *sc.BY_LOCATION_TYPE):
            location = self._latent_kind(location, field, hint).hook
        if location in sc.BY_HOOK:
            if layer is None:
                raise RequestError(f"{field}.layerIndex: latents need a layer index")
            try:
                self.weights.autoencoder(location, layer)
            except KeyError:
                kind = sc.BY_HOOK[location].label
                where = "" if not self.weights.latent_layers(location) else f" at layer {layer}"
                raise RequestError(
                    f"{field}: no {kind} autoencoder is loaded{where} (start the server with one)"
                ) from None
        layerless = location in MODEL_LOCATIONS
        if layerless:
            return Site(location, None)
        if layer is None or not 0 <= layer < self.n_layers:
            raise RequestError(f"{field}.layerIndex: {layer} is not a layer of this {self.n_layers}-layer model")
        if location not in self.model.block_locations() and location not in sc.BY_HOOK:
            raise RequestError(f"{field}.activationLocationType: this {self.model.cfg.family} model has no {location}")
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
        if loc == "attn.head_out":
            return (n_tokens, cfg.n_heads, cfg.d_model)
        if loc.startswith("mlp."):
            return (n_tokens, cfg.d_mlp)
        if loc.endswith(".scale"):
            return (n_tokens, 1)
        if loc == "logits":
            return (n_tokens, cfg.n_vocab)
        if loc in sc.BY_HOOK:
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

    def _ablation(self, spec: S.AblationSpec, n_tokens: int, field: str, hint: sc.LatentKind | None) -> Ablation:
        loc = spec.index.activation_location_type.value
        site = self._site(loc, spec.index.layer_index, field + ".index", hint)
        index = self._check_index(site, list(spec.index.tensor_indices), n_tokens, field + ".index")
        if not math.isfinite(spec.value):
            raise RequestError(f"{field}.value must be finite")
        largest = torch.finfo(self.model.dtype).max if self.model.dtype.is_floating_point else math.inf
        if abs(spec.value) > largest:
            raise RequestError(f"{field}.value: {spec.value} does not fit the model's {self.model.dtype} (at most {largest:g})")
        return Ablation(site, index, spec.value, spec.index.pass_type.value)

    def _node_kind(self, node_type: str, field: str, hint: sc.LatentKind | None = None) -> str:
        """A node type as the debugger knows it (the generic latent type resolved)."""
        if node_type == sc.GENERIC_NODE_TYPE:
            return self._latent_kind(node_type, field, hint).node_type
        return node_type

    def _trace(self, cfg: S.MirroredTraceConfig, n_tokens: int, field: str, hint: sc.LatentKind | None) -> tuple[Trace, sc.ReadNode, list[Site]]:
        """The trace, the node as scalars read it, and the norm scales tracing it holds."""
        node = cfg.node_index
        kind = self._node_kind(node.node_type.value, field + ".nodeIndex.nodeType", hint)
        if kind not in _NODE_LOCATION:
            raise RequestError(f"{field}.nodeIndex.nodeType: {kind} nodes cannot be traced")
        location = self.model.mlp_traced_location if kind == "mlp_neuron" else "attn.qk_logits" if kind == "attention_head" else _NODE_LOCATION[kind]
        site = self._site(location, node.layer_index, field + ".nodeIndex", hint)
        index = self._check_index(site, list(node.tensor_indices), n_tokens, field + ".nodeIndex")
        layer = site.layer
        assert layer is not None
        through = cfg.attention_trace_type.value if cfg.attention_trace_type else None
        readout = None
        api_index = index
        if kind == "attention_head":
            if any(i is None for i in index):
                raise RequestError(f"{field}.nodeIndex.tensorIndices: an attention node needs query, key and head")
            through = through or "QK"
            q, k = index[0], index[1]
            assert q is not None and k is not None
            if k > q:
                raise RequestError(f"{field}.nodeIndex.tensorIndices: key token {k} comes after query token {q}; a token only attends to earlier ones")
        elif through is not None:
            raise RequestError(f"{field}.attentionTraceType applies to attention heads only")
        if kind in sc.BY_NODE_TYPE:
            # a latent is traced through its pre-activation: its encoder row on the input
            if index[0] is None or index[1] is None:
                raise RequestError(f"{field}.nodeIndex.tensorIndices: a latent is traced at one token")
            hook = sc.BY_NODE_TYPE[kind].hook
            try:
                reads_location = self.weights.reads(hook, layer)
                if not self.weights.is_residual(hook, layer):
                    reads.sublayer_of(self.weights, kind, layer)
            except sc.Unsupported as e:
                raise RequestError(f"{field}.nodeIndex: {e}") from None
            readout = _latent_pre_activation(self.weights, hook, layer, index[1])
            site, index = Site(reads_location, layer), (index[0],)
        read = sc.ReadNode(kind, layer, api_index, through if through != "V" else None)
        held = reads.held_scales(self.weights, kind, layer) if cfg.detach_layer_norm_scale else []
        downstream = onto = None
        if cfg.downstream_trace_config is not None:
            if through != "V":
                raise RequestError(f"{field}.downstreamTraceConfig needs attentionTraceType V")
            if cfg.downstream_trace_config.attention_trace_type == S.AttentionTraceType.V:
                # checked before recursing: a deeply nested chain is refused at its second link
                raise RequestError(f"{field}.downstreamTraceConfig cannot itself trace through V")
            downstream, down_node, down_held = self._trace(cfg.downstream_trace_config, n_tokens, field + ".downstreamTraceConfig", hint)
            held += down_held
            direction = reads.input_direction(self.weights, down_node.kind, down_node.layer)
            if not sc.precedes(layer, sc.ATTN, direction):
                raise RequestError(
                    f"{field}.downstreamTraceConfig: the downstream node (layer {down_node.layer}) does not "
                    f"read the traced head's write (layer {layer}) directly"
                )
            onto = direction.site
        elif through == "V":
            onto = sc.final_grad_site(self.n_layers)
        return Trace(site, index, through, downstream, readout, onto), read, held  # type: ignore[arg-type]

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

    def _hint(self, sub: S.InferenceSubRequest) -> sc.LatentKind | None:
        """The one latent kind a sub-request's scalars are about, if any (what the seed's generic
        latent location means there)."""
        kinds: set[str] = set()
        for spec in sub.processing_request_spec_by_name.values():
            for dst in self._spec_dsts(spec):
                node_type = sc.SCALARS[dst].node_type if dst in sc.SCALARS else ""
                if node_type in sc.BY_NODE_TYPE:
                    kinds.add(sc.BY_NODE_TYPE[node_type].hook)
                elif dst == "vocab_token_write_to_input_direction":
                    kinds.add(sc.MLP_LATENTS)
                elif "_to_latent" in dst:
                    kinds.add(sc.ATTN_LATENTS)
        return sc.BY_HOOK[kinds.pop()] if len(kinds) == 1 else None

    def _within_layer_node(self, index: S.MirroredActivationIndex, n_tokens: int, field: str, hint: sc.LatentKind | None) -> sc.ReadNode:
        """activationIndexForWithinLayerGrad: the node whose own gradient scalars read."""
        location = index.activation_location_type.value
        site = self._site(location, index.layer_index, field, hint)
        kinds = {"mlp.post_act": "mlp_neuron", "mlp.pre_act": "mlp_neuron", "attn.qk_probs": "attention_head", "attn.qk_logits": "attention_head"}
        kind = kinds.get(site.location) or (sc.BY_HOOK[site.location].node_type if site.location in sc.BY_HOOK else None)
        if kind is None or site.layer is None:
            raise RequestError(f"{field}.activationLocationType: {location} is not an MLP neuron, attention head or latent location")
        tensor_index = self._check_index(site, list(index.tensor_indices), n_tokens, field)
        if tensor_index[-1] is None or (kind == "attention_head" and None in tensor_index):
            raise RequestError(f"{field}.tensorIndices: name the node (only its token may be \"All\")")
        return sc.ReadNode(kind, site.layer, tensor_index, "QK" if kind == "attention_head" else None)

    def _vocab_node(self, ablations: Sequence[Ablation]) -> sc.ReadNode | None:
        """The node of the request's one backward ablation at a neuron or latent (the original
        client's node page injects a unit gradient there), for scoring its input tokens."""
        nodes = []
        for a in ablations:
            if a.pass_type != "backward" or a.site.layer is None:
                continue
            if a.site.location == "mlp.post_act":
                nodes.append(sc.ReadNode("mlp_neuron", a.site.layer, a.index))
            elif a.site.location in sc.BY_HOOK:
                nodes.append(sc.ReadNode(sc.BY_HOOK[a.site.location].node_type, a.site.layer, a.index))
        return nodes[0] if len(nodes) == 1 and nodes[0].index[-1] is not None else None

    def _parse(self, sub: S.InferenceSubRequest, field: str) -> _Parsed:
        spec = sub.inference_request_spec
        hint = self._hint(sub)
        tokens = self.encode_prompt(spec.prompt, field + ".prompt")
        ablations = [
            self._ablation(a, len(tokens), f"{field}.ablationSpecs[{i}]", hint)
            for i, a in enumerate(spec.ablation_specs or [])
        ]
        vocab = self._vocab_node(ablations)
        loss = self._loss(spec.loss_fn_config, field + ".lossFnConfig") if spec.loss_fn_config else None
        trace = None
        read = None
        direction = sc.final_direction(self.n_layers)
        if spec.trace_config is not None:
            trace, traced, held = self._trace(spec.trace_config, len(tokens), field + ".traceConfig", hint)
            # direct effects are on what the traced node reads (through V: the head's own input)
            direction = reads.input_direction(self.weights, traced.kind, traced.layer)
            if trace.through != "V":
                read = traced
            if spec.trace_config.detach_layer_norm_scale:
                ablations += [Ablation(s, (None, None), 0.0, "backward") for s in held] + [_DETACH_FINAL_NORM]
        if spec.activation_index_for_within_layer_grad is not None:
            read = self._within_layer_node(
                spec.activation_index_for_within_layer_grad, len(tokens), field + ".activationIndexForWithinLayerGrad", hint
            )
        context = sc.Context(direction, read, vocab)
        return _Parsed(PromptRequest(tokens, ablations, loss, trace), [self.token_strings[t] for t in tokens], context)

    # ------------------------------------------------------------ processing

    def batched(self, request: S.BatchedRequest) -> S.BatchedResponse:
        subs = request.inference_sub_requests
        if not subs:
            raise RequestError("inferenceSubRequests: at least one sub-request is needed")
        parsed = [self._parse(s, f"inferenceSubRequests[{i}].inferenceRequestSpec") for i, s in enumerate(subs)]
        self._check_specs(subs, parsed)

        names: set[str] = set()
        extra: set[Site] = set()
        for sub in subs:
            for spec in sub.processing_request_spec_by_name.values():
                names |= set(self._spec_dsts(spec))
                extra |= self._extra_sites(spec)
        acts, grads = sc.sites_needed(sorted(names), self.weights, [p.context for p in parsed])
        start = time.perf_counter()
        recordings = run(self.model, [p.request for p in parsed], sorted(acts | extra, key=repr), sorted(grads, key=repr))
        elapsed = time.perf_counter() - start
        for rec, p in zip(recordings, parsed, strict=True):
            rec.context = p.context

        # Node sets of top-k steps are unioned by step name across the batch.
        nodes_by_name: dict[str, list[S.MirroredNodeIndex]] = {}
        scalars: list[NodeScalars] = []  # each prompt's, read by all its top-k steps
        for sub, rec in zip(subs, recordings, strict=True):
            top_k = {name: spec for name, spec in sub.processing_request_spec_by_name.items()
                     if isinstance(spec, S.MultipleTopKDerivedScalarsRequestSpec)}
            scalars.append(NodeScalars(self.weights, rec, top_k.values()))
            for name, spec in top_k.items():
                nodes_by_name.setdefault(name, [])
                nodes_by_name[name] += scalars[-1].nodes(spec)
        nodes_by_name = {k: list(dict.fromkeys(v)) for k, v in nodes_by_name.items()}
        scored = self._scored_steps(subs, recordings, nodes_by_name)

        responses = []
        for i, (sub, rec, p) in enumerate(zip(subs, recordings, parsed, strict=True)):
            data: dict[str, Any] = {}
            for name, spec in sub.processing_request_spec_by_name.items():
                field = f"inferenceSubRequests[{i}].processingRequestSpecByName.{name}"
                if (i, name) in scored:
                    data[name] = scored[(i, name)]
                    continue
                try:
                    data[name] = self._process(spec, rec, scalars[i], nodes_by_name, sub, field)
                except sc.Unsupported as e:
                    raise RequestError(f"{field}: {e}") from None
            info = S.InferenceAndTokenData(
                inference_time=elapsed,
                memory_used_before=None,
                memory_used_after=None,
                loss=rec.loss,
                # the seed's: the traced node's value (through V: its direct effect)
                activation_value_for_backward_pass=rec.traced_value,
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

    def _scored_steps(
        self, subs: Sequence[S.InferenceSubRequest], recordings: Sequence[Recording], nodes_by_name: dict[str, list[S.MirroredNodeIndex]]
    ) -> dict[tuple[int, str], S.ScoredTokensResponseData]:
        """Every scored-token step of every prompt, scored together (one pass over the
        vocabulary for all of them, see TokenScorer.score_all)."""
        keys, jobs = [], []
        for i, (sub, rec) in enumerate(zip(subs, recordings, strict=True)):
            for name, spec in sub.processing_request_spec_by_name.items():
                if isinstance(spec, S.ScoredTokensRequestSpec):
                    keys.append((i, name))
                    jobs.append((spec, sc.Inputs(rec, self.weights, rec.context), nodes_by_name[spec.depends_on_spec_name]))
        return dict(zip(keys, self.scorer.score_all(jobs), strict=True)) if jobs else {}

    def _check_specs(self, subs: Sequence[S.InferenceSubRequest], parsed: Sequence[_Parsed]) -> None:
        lengths = []
        for i, sub in enumerate(subs):
            specs = sub.processing_request_spec_by_name
            ctx = parsed[i].context
            n_tokens = len(parsed[i].request.tokens)
            for name, spec in specs.items():
                field = f"inferenceSubRequests[{i}].processingRequestSpecByName.{name}"
                for dst in self._spec_dsts(spec):
                    if dst not in sc.SCALARS:
                        raise RequestError(f"{field}.dst: {dst} is not computed by this server; supported: {sorted(sc.SCALARS)}")
                    reason = sc.problem(dst, self.weights, ctx, n_tokens)
                    if reason:
                        raise RequestError(f"{field}.dst: {dst}: {reason}")
                if isinstance(spec, (S.ScoredTokensRequestSpec, S.TokenPairAttributionRequestSpec)):
                    dep = specs.get(spec.depends_on_spec_name)
                    if not isinstance(dep, S.MultipleTopKDerivedScalarsRequestSpec):
                        raise RequestError(f"{field}.dependsOnSpecName: {spec.depends_on_spec_name!r} is not a top-k step of this sub-request")
                if isinstance(spec, (S.DerivedScalarsRequestSpec, S.DerivedAttentionScalarsRequestSpec)):
                    _, st = sc.resolve(spec.dst.value, self.weights)
                    if st.layered and spec.layer_index not in st.layer_list(self.weights, ctx):
                        where = st.layer_list(self.weights, ctx)
                        raise RequestError(
                            f"{field}.layerIndex: {spec.layer_index} is not a layer {spec.dst.value} has "
                            f"(it has {', '.join(map(str, where)) or 'none'} of this {self.n_layers}-layer model)"
                        )
                    if isinstance(spec, S.DerivedAttentionScalarsRequestSpec) and st.token_axes != 2:
                        raise RequestError(f"{field}.dst: {spec.dst.value} is not a scalar per token pair")
                    if isinstance(spec, S.DerivedScalarsRequestSpec) and spec.pass_type == S.PassType.BACKWARD and st.raw is None:
                        raise RequestError(f"{field}.passType: {spec.dst.value} has no backward-pass value (only activations as recorded have gradients)")
                if isinstance(spec, S.MultipleTopKDerivedScalarsRequestSpec):
                    if spec.pass_type == S.PassType.BACKWARD:
                        raise RequestError(f"{field}.passType: top-k requests rank forward-pass values")
                    if spec.token_index is not None and not -n_tokens <= spec.token_index < n_tokens:
                        raise RequestError(f"{field}.tokenIndex: {spec.token_index} is not a token of this {n_tokens}-token prompt")
            if any(isinstance(s, S.MultipleTopKDerivedScalarsRequestSpec) for s in specs.values()):
                lengths.append(n_tokens)
        limit = self.max_prompt_tokens or _PROMPT_LENGTH_LIMIT
        if any(n > limit for n in lengths):
            raise RequestError(f"prompt: top-k requests take at most {limit} tokens (--max-prompt-tokens), got {lengths}")
        if len(set(lengths)) > 1:
            raise RequestError(f"prompt: all prompts of a batched top-k request must have the same number of tokens, got {lengths}")

    @staticmethod
    def _spec_dsts(spec: Any) -> list[str]:
        if isinstance(spec, S.MultipleTopKDerivedScalarsRequestSpec):
            return [d.value for dsts in spec.dst_list_by_group_id.values() for d in dsts]
        if isinstance(spec, (S.DerivedScalarsRequestSpec, S.DerivedAttentionScalarsRequestSpec)):
            return [spec.dst.value]
        return []

    def _extra_sites(self, spec: Any) -> set[Site]:
        """Activations needed beyond the scalars' own: for scored tokens, attributions and the
        top tokens of single-node requests (their nodes are only known after the pass)."""
        layers = range(self.n_layers)

        def every_layer(*locations: str | None) -> set[Site]:
            return {Site(loc, layer) for loc in locations if loc is not None for layer in layers}

        writes = every_layer("attn.v") | {Site("resid.post_emb")}
        if isinstance(spec, S.ScoredTokensRequestSpec):
            if spec.token_scoring_type == S.TokenScoringType.UPVOTED_OUTPUT_TOKENS:
                return writes
            return self.scorer.read_sites(spec.token_scoring_type)
        if isinstance(spec, S.TokenPairAttributionRequestSpec):
            return {Site(loc, layer) for layer in self.weights.latent_layers(sc.ATTN_LATENTS)
                    for loc in ("attn.v", "attn.qk_probs", sc.ATTN_LATENTS, self.model.write_scale_location("attn")) if loc}
        if isinstance(spec, S.DerivedScalarsRequestSpec) and spec.num_top_tokens:
            return writes
        return set()

    # ----------------------------------------------------------------- top-k

    def _layer_tensors(self, dst: str, rec: Recording) -> list[tuple[int | None, Tensor]]:
        _, st = sc.resolve(dst, self.weights)
        return [(layer, sc.compute(dst, rec, self.weights, layer)) for layer in st.layer_list(self.weights, rec.context)]

    def _value_at(self, dsts: Sequence[S.DerivedScalarType], node: S.MirroredNodeIndex, rec: Recording) -> float:
        return NodeScalars(self.weights, rec, []).value_at(dsts, node)

    def _multiple_top_k(
        self, spec: S.MultipleTopKDerivedScalarsRequestSpec, scalars: NodeScalars, nodes: list[S.MirroredNodeIndex]
    ) -> S.MultipleTopKDerivedScalarsResponseData:
        activations = {  # float32 values, in their shortest digits
            group: short_floats(torch.tensor(scalars.values_at(dsts, nodes), dtype=torch.float64)).tolist()
            for group, dsts in spec.dst_list_by_group_id.items()
        }
        keep = {d.value for d in spec.dimensions_to_keep_for_intermediate_sum}
        sums: dict[S.GroupId, dict[S.DerivedScalarType, Any]] = {}
        for group, dsts in spec.dst_list_by_group_id.items():
            sums[group] = {}
            for dst in dsts:
                # axes: token axes first (one, or query and key for attention), then the node axes
                axes = kept_axes(self.weights, dst.value, keep)
                per_layer = scalars.layer_sums(dst.value, axes)
                if not per_layer:
                    continue
                # "layers" kept: one leading entry per layer (a single one for layerless scalars
                # such as the embeddings), else summed over layers
                total = torch.stack(per_layer) if S.Dimension.LAYERS.value in keep else sum(per_layer[1:], per_layer[0])
                # per token pair: quadratic in the prompt, sent at display resolution
                sums[group][dst] = tensor_nd(total, display=len(axes) == 2)
        strings = None
        if any(n.node_type == S.NodeType.VOCAB_TOKEN for n in nodes):
            strings = [self.token_strings[n.tensor_indices[-1]] if n.node_type == S.NodeType.VOCAB_TOKEN and n.tensor_indices[-1] is not None else None for n in nodes]
        return S.MultipleTopKDerivedScalarsResponseData(
            activations_by_group_id=activations,
            node_indices=nodes,
            vocab_token_strings_for_indices=strings,
            intermediate_sum_activations_by_dst_by_group_id=sums,
        )

    # ---------------------------------------------------- single-node scalars

    def _derived_scalars(self, spec: S.DerivedScalarsRequestSpec, rec: Recording) -> S.DerivedScalarsResponseData:
        dst = spec.dst.value
        st = sc.SCALARS[dst]
        layer = spec.layer_index if st.layered else None
        if spec.pass_type == S.PassType.BACKWARD:
            x = sc.compute_backward(dst, rec, self.weights, layer)
        else:
            x = sc.compute(dst, rec, self.weights, layer)
        if x.ndim != 2:
            where = "/derived_attention_scalars" if sc.resolve(dst, self.weights)[1].token_axes == 2 else "a top-k request"
            raise RequestError(f"dst: {dst} has {x.ndim - 1} axes per token, not one; use {where}")
        if spec.activation_index >= x.shape[-1] or spec.activation_index < 0:
            raise RequestError(f"activationIndex: {spec.activation_index} is out of range for {x.shape[-1]} nodes")
        values = x[:, spec.activation_index]
        nodes = [
            S.MirroredNodeIndex(node_type=S.NodeType(st.node_type), tensor_indices=(t, spec.activation_index), layer_index=spec.layer_index, pass_type=spec.pass_type)
            for t in range(x.shape[0])
        ]
        top_tokens = None
        if spec.num_top_tokens:
            with torch.no_grad():
                if st.node_type == "vocab_token":
                    # token reads: the scores are already per vocabulary token (the same at every
                    # position for the node's input tokens: the seed takes the first)
                    scores = x[0 if dst == "vocab_token_write_to_input_direction" else -1]
                    top_tokens = None if bool((scores == 0).all()) else self.scorer.top_tokens(scores[None], spec.num_top_tokens)[0]
                else:
                    write = self.scorer.node_write(nodes[0], rec)
                    if write is not None and float(values[0]) != 0:
                        # a negative activation writes the opposite way: its top tokens flip
                        scores = self.model.logit_lens(write[None]) * (1 if float(values[0]) > 0 else -1)
                        top_tokens = self.scorer.top_tokens(scores, spec.num_top_tokens)[0]
        return S.DerivedScalarsResponseData(
            activations=[finite(v) for v in values.tolist()],
            normalized_activations=None,
            node_indices=nodes,
            top_tokens=top_tokens,
        )

    def _derived_attention_scalars(self, spec: S.DerivedAttentionScalarsRequestSpec, rec: Recording) -> S.DerivedAttentionScalarsResponseData:
        x = sc.compute(spec.dst.value, rec, self.weights, spec.layer_index)
        if x.ndim != 3:
            raise RequestError(f"dst: {spec.dst.value} is not one scalar per token pair and head")
        if sc.SCALARS[spec.dst.value].node_type == "layer":
            pair = x[..., 0]  # summed over heads: one value per pair (the seed ignores activationIndex)
        elif not 0 <= spec.activation_index < x.shape[-1]:
            raise RequestError(f"activationIndex: {spec.activation_index} is out of range for {x.shape[-1]} heads")
        else:
            pair = x[..., spec.activation_index]  # (Q, K)
        return S.DerivedAttentionScalarsResponseData(
            token_and_attention_scalars_list=attention_summaries(
                [self.token_strings[t] for t in rec.tokens], pair
            )
        )

    def _process(
        self, spec: Any, rec: Recording, scalars: NodeScalars, nodes_by_name: dict[str, list[S.MirroredNodeIndex]],
        sub: S.InferenceSubRequest, field: str,
    ) -> Any:
        inputs = sc.Inputs(rec, self.weights, rec.context)
        if isinstance(spec, S.MultipleTopKDerivedScalarsRequestSpec):
            return self._multiple_top_k(spec, scalars, nodes_by_name[_name_of(sub, spec)])
        if isinstance(spec, S.ScoredTokensRequestSpec):
            return self.scorer.scored_tokens(spec, inputs, nodes_by_name[spec.depends_on_spec_name])
        if isinstance(spec, S.TokenPairAttributionRequestSpec):
            return self.scorer.token_pair_attribution(spec, inputs, nodes_by_name[spec.depends_on_spec_name])
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
        if spec.component_type_for_mlp == S.ComponentTypeForMlp.TRANSCODER_LATENT and not self.weights.latent_layers(sc.TRANSCODER_LATENTS):
            raise RequestError(f"{field}.componentTypeForMlp: no transcoders are loaded (start the server with --transcoders)")
        if spec.include_residual_latents and not self.weights.latent_layers(sc.RESID_LATENTS):
            raise RequestError(f"{field}.includeResidualLatents: no residual-stream SAEs are loaded (start the server with --sae)")
        loss: S.LossFnConfig | None = S.LossFnConfig(
            name=S.LossFnName.LOGIT_DIFF, target_tokens=spec.target_tokens, distractor_tokens=spec.distractor_tokens
        )
        n_tokens = len(self.encode_prompt(spec.prompt, f"{field}.prompt")) if spec.node_ablations else 0
        ablations = [self._node_ablation(a, n_tokens, f"{field}.nodeAblations[{i}]") for i, a in enumerate(spec.node_ablations or [])]
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


        def scored(kind: S.TokenScoringType) -> S.ScoredTokensRequestSpec:
            return S.ScoredTokensRequestSpec(token_scoring_type=kind, num_tokens=_SCORED_TOKENS, depends_on_spec_name="topKComponents")

        def token_sums(groups: list[S.GroupId], keep: list[S.Dimension]) -> S.MultipleTopKDerivedScalarsRequestSpec:
            # layer totals per token, always over neurons and heads (the layer's whole write)
            every = tdb_groups(S.ComponentTypeForMlp.NEURON, S.ComponentTypeForAttention.ATTENTION_HEAD)
            return S.MultipleTopKDerivedScalarsRequestSpec(
                dst_list_by_group_id={g: every[g] for g in groups}, top_and_bottom_k=1, token_index=None,
                dimensions_to_keep_for_intermediate_sum=keep,
            )

        T, A = S.Dimension.SEQUENCE_TOKENS, S.Dimension.ATTENDED_TO_SEQUENCE_TOKENS
        effects = [S.GroupId.WRITE_NORM, S.GroupId.ACT_TIMES_GRAD, S.GroupId.DIRECTION_WRITE]
        steps: dict[str, Any] = {
            # the node table; its sums are kept per token only (nobody reads them per token pair,
            # and the pairs would make the answer grow with the square of the prompt)
            "topKComponents": S.MultipleTopKDerivedScalarsRequestSpec(
                dst_list_by_group_id=tdb_groups(spec.component_type_for_mlp, spec.component_type_for_attention, spec.include_residual_latents),
                top_and_bottom_k=spec.top_and_bottom_k_for_node_table, token_index=None,
                dimensions_to_keep_for_intermediate_sum=[T],
            ),
            # the original client's "input token effects": act x grad per token pair (it sums the
            # pairs both ways). The only answer term quadratic in the prompt: n^2 numbers, summed
            # over layers and heads, sent at display resolution (wire_floats.display_floats).
            "componentSumsForTokenDisplay": token_sums([S.GroupId.ACT_TIMES_GRAD], [T, A]),
            # not in the original server, for this viewer: the same sums for every effect, per
            # query token and per attended-to token (linear in the prompt)
            "componentSumsByToken": token_sums(effects, [T]),
            "componentSumsByAttendedToToken": token_sums(effects, [A]),
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

    def _node_ablation(self, ablation: S.NodeAblation, n_tokens: int, field: str) -> S.AblationSpec:
        node = ablation.node_index
        kind = self._node_kind(node.node_type.value, f"{field}.nodeIndex.nodeType")
        if kind not in _NODE_LOCATION:
            raise RequestError(f"{field}.nodeIndex.nodeType: {kind} nodes cannot be ablated")
        t = list(node.tensor_indices)
        expected = 3 if kind == "attention_head" else 2
        if len(t) != expected:
            what = "[query, key, head]" if expected == 3 else "[token, index]"
            raise RequestError(f"{field}.nodeIndex.tensorIndices: a {kind} node has {expected} indices {what}, got {len(t)}")
        if t[0] is None or t[-1] is None:
            raise RequestError(f"{field}.nodeIndex.tensorIndices: need the token and the node index")
        location = S.ActivationLocationType(_NODE_LOCATION_TYPE[kind])
        if kind == "attention_head":
            q, k = t[0], t[1]
            if k is not None and not 0 <= k <= q:
                raise RequestError(f"{field}.nodeIndex.tensorIndices[1]: {k} is not a key token of query token {q}")
            # as the seed does: the head's attention from the query token, to every key
            indices: S.AllOrOneIndices = (t[0], "All", t[2] or 0)
        else:
            indices = (t[0], t[-1])
        return S.AblationSpec(
            index=S.MirroredActivationIndex(activation_location_type=location, tensor_indices=indices, layer_index=node.layer_index, pass_type=S.PassType.FORWARD),
            value=ablation.value,
        )




def _latent_pre_activation(w: sc.Weights, hook: str, layer: int, latent: int) -> Any:
    """What tracing a latent differentiates: its pre-activation (encoder row on the autoencoder's
    input minus its pre-bias, plus its latent bias), a function of that input vector."""
    ae, _ = w.autoencoder(hook, layer)

    def readout(x: Tensor) -> Tensor:
        return ae.encode_pre_act(x.to(ae.dtype))[..., latent].float()

    return readout


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


def tdb_groups(
    mlp: S.ComponentTypeForMlp, attn: S.ComponentTypeForAttention, residual: bool = False
) -> dict[S.GroupId, list[S.DerivedScalarType]]:
    """The node table's columns: for each group, one scalar per node kind (with `residual`, the
    residual-stream SAEs' latents too: they re-describe the stream, so their direct effects
    overlap the others' and are left out of per-layer sums)."""
    D = S.DerivedScalarType
    mlp_prefix = {
        S.ComponentTypeForMlp.NEURON: "mlp",
        S.ComponentTypeForMlp.AUTOENCODER_LATENT: "online_mlp_autoencoder",
        S.ComponentTypeForMlp.TRANSCODER_LATENT: "online_transcoder",
    }[mlp]
    attn_latents = attn == S.ComponentTypeForAttention.AUTOENCODER_LATENT

    def attn_dst(head: str, latent: str) -> S.DerivedScalarType:
        return D(f"online_attention_autoencoder_{latent}" if attn_latents else head)

    groups = {
        S.GroupId.WRITE_NORM: [D.RESID_POST_EMBEDDING_NORM, D(f"{mlp_prefix}_write_norm"), attn_dst("unflattened_attn_write_norm", "write_norm")],
        S.GroupId.ACT_TIMES_GRAD: [D.TOKEN_ATTRIBUTION, D(f"{mlp_prefix}_act_times_grad"), attn_dst("unflattened_attn_act_times_grad", "act_times_grad")],
        S.GroupId.DIRECTION_WRITE: [
            D.RESID_POST_EMBEDDING_PROJ_TO_FINAL_RESIDUAL_GRAD,
            D(f"{mlp_prefix}_write_to_final_residual_grad"),
            attn_dst("unflattened_attn_write_to_final_residual_grad", "write_to_final_residual_grad"),
        ],
        S.GroupId.ACTIVATION: [D.ALWAYS_ONE, D("mlp_post_act" if mlp_prefix == "mlp" else f"{mlp_prefix}_latent"), attn_dst("attn_qk_probs", "latent")],
    }
    if residual:
        for group, suffix in ((S.GroupId.WRITE_NORM, "write_norm"), (S.GroupId.ACT_TIMES_GRAD, "act_times_grad"),
                              (S.GroupId.DIRECTION_WRITE, "write_to_final_residual_grad"), (S.GroupId.ACTIVATION, "latent")):
            groups[group].append(D(f"online_residual_autoencoder_{suffix}"))
    return groups


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
                scalars=[finite(v) for v in x[i, : i + 1].tolist()],
                normalized_scalars=[finite(v) for v in normalized[i, : i + 1].tolist()],
                total_scalar_in=finite(float(total_in[i])),
                normalized_total_scalar_in=finite(float(norm(total_in)[i])),
                max_scalar_in=finite(float(max_in[i])),
                normalized_max_scalar_in=finite(float(norm(max_in)[i])),
                total_scalar_out=finite(float(total_out[i])),
                normalized_total_scalar_out=finite(float(norm(total_out)[i])),
                max_scalar_out=finite(float(max_out[i])),
                normalized_max_scalar_out=finite(float(norm(max_out)[i])),
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
