"""Scored tokens and token-pair attributions on every family, their numbers checked against the
seed's definitions computed independently (`seed_reference`: transformers' weights and modules,
autograd through plain hooks with the norm scale detached):

- output tokens: a node's write through the final norm (scale held) and the unembedding;
- input tokens (the node table's): d (traced quantity) / d (residual stream its sublayer reads),
  scale held, dotted with each token embedding;
- input tokens (the node page's `vocab_token_write_to_input_direction`): the traced quantity if
  each token's embedding were the MLP's input, through the MLP's own norm;
- token pairs: an attention latent's pre-activation split over key tokens.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import seed_reference as ref
import torch
from conftest import random_autoencoder
from torch import Tensor

from neuron_explainer.activation_server import schemas as S
from neuron_explainer.activation_server.errors import RequestError
from neuron_explainer.activation_server.processing import Debugger
from neuron_explainer.debugger import scalars as sc
from neuron_explainer.debugger.inference import PromptRequest, Site, run
from neuron_explainer.models.autoencoder import AutoencoderSpec, attach
from neuron_explainer.models.loading import load_model, tokenizer_of
from neuron_explainer.models.random_models import FAMILIES, save_random

pytest.importorskip("transformers")

PROMPT = "When Mary and John went to the store, John gave a drink to"
N_LATENTS = 16


@pytest.fixture(scope="module", params=FAMILIES)
def setup(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Debugger, Any]:
    """A random model of the family with random autoencoders: the MLP's reading its write
    (every other family, the demo's) or its activations, the attention layer's reading its write."""
    torch.set_num_threads(1)
    family = request.param
    folder, hf = save_random(family, tmp_path_factory.mktemp(family))
    model = load_model(folder)
    model.requires_grad_(False)
    mlp_reads = "resid.delta_mlp" if FAMILIES.index(family) % 2 == 0 else "mlp.post_act"
    n = model.cfg.n_layers
    for kind, reads, width, seed in (
        ("mlp", mlp_reads, model.cfg.d_mlp if mlp_reads == "mlp.post_act" else model.cfg.d_model, 10),
        ("attention", "resid.delta_attn", model.cfg.d_model, 20),
    ):
        spec = AutoencoderSpec(reads=reads, kind=kind, location="unused", n_layers=n)  # type: ignore[arg-type]
        attach(model, spec, [random_autoencoder(N_LATENTS, width, seed + i) for i in range(n)])
    return family, Debugger(model, tokenizer_of(model), family, "ae-mlp", "ae-attn"), hf


def _node(kind: str, indices: tuple[int, ...], layer: int) -> S.MirroredNodeIndex:
    return S.MirroredNodeIndex(node_type=S.NodeType(kind), tensor_indices=indices, layer_index=layer, pass_type=S.PassType.FORWARD)


def _recorded(d: Debugger, scoring: S.TokenScoringType) -> sc.Inputs:
    tokens = d.encode_prompt(PROMPT, "p")
    sites = d._extra_sites(S.ScoredTokensRequestSpec(token_scoring_type=scoring, num_tokens=5, depends_on_spec_name="x"))
    sites |= {Site(k.hook, layer) for k in d.weights.loaded_kinds() for layer in d.weights.latent_layers(k.hook)}
    (rec,) = run(d.model, [PromptRequest(tokens)], sorted(sites, key=repr))
    rec.context = sc.default_context(d.weights)
    return sc.Inputs(rec, d.weights, rec.context)


def _check_top(got: S.TopTokens | None, scores: Tensor, strings: list[str], n: int) -> None:
    assert got is not None
    top = scores.topk(n)
    bottom = scores.topk(n, largest=False)
    torch.testing.assert_close(torch.tensor([t.scalar for t in got.top], dtype=torch.float64), top.values.double(), rtol=1e-3, atol=1e-5)
    torch.testing.assert_close(torch.tensor([t.scalar for t in got.bottom], dtype=torch.float64), bottom.values.double(), rtol=1e-3, atol=1e-5)
    # the tokens themselves, where the scores are not tied
    assert [t.token for t in got.top][:2] == [strings[i] for i in top.indices.tolist()][:2]


def _mlp_latent_reads(d: Debugger, layer: int) -> str:
    return d.weights.reads(sc.MLP_LATENTS, layer)


def test_output_tokens_are_the_writes_through_the_logit_lens(setup: tuple[str, Debugger, Any]) -> None:
    family, d, hf = setup
    m = d.model
    x = _recorded(d, S.TokenScoringType.UPVOTED_OUTPUT_TOKENS)
    layer, t, q, k, h, n, latent = m.cfg.n_layers - 1, 5, 8, 3, m.cfg.n_heads - 1, 7, 2
    nodes = [
        _node("mlp_neuron", (t, n), layer),
        _node("attention_head", (q, k, h), layer),
        _node("mlp_autoencoder_latent", (t, latent), layer),
        _node("attention_autoencoder_latent", (t, latent), layer),
    ]
    spec = S.ScoredTokensRequestSpec(token_scoring_type=S.TokenScoringType.UPVOTED_OUTPUT_TOKENS, num_tokens=5, depends_on_spec_name="x")
    got = d.scorer.scored_tokens(spec, x, nodes).top_tokens_list

    w_mlp = ref.mlp_write_matrix(family, hf, layer)
    v = x.act("attn.v", layer)[k, h // (m.cfg.n_heads // m.cfg.kv_heads)]
    mlp_ae, _ = d.weights.autoencoder(sc.MLP_LATENTS, layer)
    attn_ae, _ = d.weights.autoencoder(sc.ATTN_LATENTS, layer)
    mlp_decoder = mlp_ae.decoder.weight[:, latent].float()
    writes = [
        w_mlp[:, n],
        ref.head_write_matrix(family, hf, layer, h, m.cfg.d_head) @ v,
        w_mlp @ mlp_decoder if _mlp_latent_reads(d, layer) == "mlp.post_act" else mlp_decoder,
        attn_ae.decoder.weight[:, latent].float(),
    ]
    expected = ref.logit_lens(family, hf, torch.stack(writes))
    for top, scores in zip(got, expected, strict=True):
        _check_top(top, scores, d.token_strings, 5)


def _residual_before(m: Any, sublayer: str, layer: int) -> str:
    if sublayer == "mlp" and not m.cfg.parallel:
        return f"blocks.{layer}.resid.post_attn"
    return "resid.post_emb" if layer == 0 else f"blocks.{layer - 1}.resid.post_mlp"


def _read_reference(family: str, d: Debugger, hf: Any, what: str, layer: int, index: tuple[int, ...]) -> Tensor:
    """(vocab,): the seed's TokenReadConverter, computed with plain hooks on our model."""
    m = d.model
    sublayer = "attn" if what in ("Q", "K") else "mlp"
    before = _residual_before(m, sublayer, layer)
    p = f"blocks.{layer}."
    detach = {p + f"{sublayer}_ln.scale"}
    record = {before}
    cut: set[str] = set()
    if what in ("Q", "K"):
        record.add(p + "attn.qk_logits")
        cut.add(p + ("attn.k" if what == "Q" else "attn.q"))
    elif what == "neuron":
        record.add(p + m.mlp_traced_location)
    else:
        reads = _mlp_latent_reads(d, layer)
        record.add(p + reads)
        if reads == "resid.delta_mlp" and m.cfg.sandwich_norms:
            detach.add(p + "mlp_post_ln.scale")
    run_ = ref.Pass(m, d.encode_prompt(PROMPT, "p"), record=record, detach=detach, cut=cut).run()
    if what in ("Q", "K"):
        q, k, h = index
        value = run_.acts[p + "attn.qk_logits"][0, h, q, k]
        token = q if what == "Q" else k
    elif what == "neuron":
        token, n = index
        value = run_.acts[p + m.mlp_traced_location][0, token, n]
    else:
        token, latent = index
        ae, reads = d.weights.autoencoder(sc.MLP_LATENTS, layer)
        value = (run_.acts[p + reads][0, token] - ae.pre_bias) @ ae.encoder.weight[latent] + ae.latent_bias[latent]
    r = run_.grads(value)[before][token].float()
    return r @ ref.token_embeddings(family, hf).T


@pytest.mark.parametrize("what", ["neuron", "latent", "Q", "K"])
def test_input_tokens_are_the_read_direction_on_the_embeddings(setup: tuple[str, Debugger, Any], what: str) -> None:
    family, d, hf = setup
    m = d.model
    layer = m.cfg.n_layers - 1
    scoring = {
        "neuron": S.TokenScoringType.INPUT_TOKENS_THAT_UPVOTE_MLP,
        "latent": S.TokenScoringType.INPUT_TOKENS_THAT_UPVOTE_MLP,
        "Q": S.TokenScoringType.INPUT_TOKENS_THAT_UPVOTE_ATTN_Q,
        "K": S.TokenScoringType.INPUT_TOKENS_THAT_UPVOTE_ATTN_K,
    }[what]
    index = {"neuron": (6, 4), "latent": (6, 3), "Q": (9, 6, m.cfg.n_heads - 1), "K": (9, 6, 1)}[what]
    kind = {"neuron": "mlp_neuron", "latent": "mlp_autoencoder_latent"}.get(what, "attention_head")
    x = _recorded(d, scoring)
    spec = S.ScoredTokensRequestSpec(token_scoring_type=scoring, num_tokens=5, depends_on_spec_name="x")
    d.scorer._cache.clear()
    (got,) = d.scorer.scored_tokens(spec, x, [_node(kind, index, layer)]).top_tokens_list
    _check_top(got, _read_reference(family, d, hf, what, layer, index), d.token_strings, 5)
    (again,) = d.scorer.scored_tokens(spec, x, [_node(kind, index, layer)]).top_tokens_list  # cached
    assert again == got


def test_input_tokens_of_many_nodes_at_once_are_each_nodes_own(setup: tuple[str, Debugger, Any]) -> None:
    """The node table's steps read all their nodes in one batch per layer and kind (heads: per
    side), several at the same layer and token among them: each still matches its own
    reference (the seed's read, one node per pass)."""
    family, d, hf = setup
    m = d.model
    last, h = m.cfg.n_layers - 1, m.cfg.n_heads - 1
    cases = {
        "neuron": [(last, (6, 4)), (last, (2, 4)), (last, (9, 7)), (last, (6, 5)), (0, (1, 3))],
        "latent": [(last, (6, 3)), (last, (3, 1)), (0, (6, 3))],
        "Q": [(last, (9, 6, h)), (last, (9, 6, 1)), (last, (5, 5, 0)), (last, (7, 2, 1)), (0, (4, 4, 0))],
        "K": [(last, (9, 6, h)), (last, (9, 6, 1)), (last, (5, 5, 0)), (last, (7, 2, 1)), (0, (4, 4, 0))],
    }
    kinds = {"neuron": "mlp_neuron", "latent": "mlp_autoencoder_latent", "Q": "attention_head", "K": "attention_head"}
    jobs, expected = [], []
    for what, scoring in (
        ("neuron", S.TokenScoringType.INPUT_TOKENS_THAT_UPVOTE_MLP),
        ("latent", S.TokenScoringType.INPUT_TOKENS_THAT_UPVOTE_MLP),
        ("Q", S.TokenScoringType.INPUT_TOKENS_THAT_UPVOTE_ATTN_Q),
        ("K", S.TokenScoringType.INPUT_TOKENS_THAT_UPVOTE_ATTN_K),
    ):
        spec = S.ScoredTokensRequestSpec(token_scoring_type=scoring, num_tokens=5, depends_on_spec_name="x")
        jobs.append((spec, _recorded(d, scoring), [_node(kinds[what], index, layer) for layer, index in cases[what]]))
        expected.append([_read_reference(family, d, hf, what, layer, index) for layer, index in cases[what]])
    d.scorer._cache.clear()
    for answer, scores in zip(d.scorer.score_all(jobs), expected, strict=True):
        for got, reference in zip(answer.top_tokens_list, scores, strict=True):
            if not bool(reference.any()):  # a pair outside a sliding window: nothing raises it
                assert got is None
                continue
            _check_top(got, reference, d.token_strings, 5)


def _node_page_request(kind: str, layer: int, index: int) -> S.BatchedRequest:
    """What the original client's node page sends for its logit lens (its generic latent
    location, whatever autoencoders are loaded)."""
    location = "mlp.post_act" if kind == "mlp_neuron" else "online_autoencoder_latent"
    dst = "mlp_post_act" if kind == "mlp_neuron" else "online_mlp_autoencoder_latent"

    def ablation(pass_type: str) -> dict[str, Any]:
        return {"index": {"activationLocationType": location, "tensorIndices": [0, index], "layerIndex": layer, "passType": pass_type}, "value": 1.0}

    return S.BatchedRequest.model_validate({"inferenceSubRequests": [
        {"inferenceRequestSpec": {"prompt": "a", "ablationSpecs": [ablation("backward")], "lossFnConfig": {"name": "zero"}},
         "processingRequestSpecByName": {"singleton": {"dst": "vocab_token_write_to_input_direction", "activationIndex": 0, "numTopTokens": 8}}},
        {"inferenceRequestSpec": {"prompt": "a", "ablationSpecs": [ablation("forward")]},
         "processingRequestSpecByName": {"singleton": {"dst": dst, "layerIndex": layer, "activationIndex": index, "numTopTokens": 8}}},
    ]})


@pytest.mark.parametrize("kind", ["mlp_neuron", "mlp_autoencoder_latent"])
def test_node_page_input_tokens_push_each_embedding_through_the_mlp(setup: tuple[str, Debugger, Any], kind: str) -> None:
    family, d, hf = setup
    m = d.model
    layer, index = m.cfg.n_layers - 1, 3
    request = _node_page_request(kind, layer, index)
    reads = _mlp_latent_reads(d, layer)
    if kind != "mlp_neuron" and reads == "resid.delta_mlp" and m.cfg.sandwich_norms:
        with pytest.raises(RequestError, match="sandwich norms"):
            d.batched(request)
        return
    response = d.batched(request)
    got = response.inference_sub_responses[0].processing_response_data_by_name["singleton"].top_tokens
    output = response.inference_sub_responses[1].processing_response_data_by_name["singleton"].top_tokens
    assert output is not None  # the write's logit lens, with the node forced to 1
    with torch.no_grad():
        y = ref.mlp_input_norm(family, hf, layer)(ref.token_embeddings(family, hf))  # each embedding's own scale
        if kind == "mlp_neuron":
            expected = ref.mlp_traced(family, hf, layer, y)[:, index]
        else:
            ae, _ = d.weights.autoencoder(sc.MLP_LATENTS, layer)
            inputs = ref.mlp_post_act(family, hf, layer, y) if reads == "mlp.post_act" else ref.hf_layers(hf)[layer].mlp(y)
            expected = (inputs - ae.pre_bias) @ ae.encoder.weight[index] + ae.latent_bias[index]
    _check_top(got, expected.float(), d.token_strings, 8)


def test_token_pair_attribution_splits_the_latent_over_keys(setup: tuple[str, Debugger, Any]) -> None:
    family, d, hf = setup
    m = d.model
    layer = m.cfg.n_layers - 1
    x = _recorded(d, S.TokenScoringType.UPVOTED_OUTPUT_TOKENS)
    sites = {Site(s, layer) for s in ("attn.qk_probs", "attn.v", sc.ATTN_LATENTS)}
    scale = m.write_scale_location("attn")
    if scale:
        sites.add(Site(scale, layer))
    (rec,) = run(m, [PromptRequest(d.encode_prompt(PROMPT, "p"))], sorted(sites, key=repr))
    rec.context = sc.default_context(d.weights)
    x = sc.Inputs(rec, d.weights, rec.context)
    latents = x.act(sc.ATTN_LATENTS, layer)
    q = latents.shape[0] - 1
    on, off = int(latents[q].argmax()), int(latents[q].argmin())
    assert latents[q, on] > 0 and latents[q, off] == 0
    spec = S.TokenPairAttributionRequestSpec(num_tokens_attended_to=3, depends_on_spec_name="x")
    nodes = [_node("attention_autoencoder_latent", (q, on), layer), _node("attention_autoencoder_latent", (q, off), layer)]
    got_on, got_off = d.scorer.token_pair_attribution(spec, x, nodes).top_tokens_attended_to_list
    assert got_off is None  # an inactive latent has no attribution (the seed's)
    assert got_on is not None
    # the seed's: each head's write at (q, k) (post-norm scale held) on the encoder row
    ae, _ = d.weights.autoencoder(sc.ATTN_LATENTS, layer)
    probs, v = x.act("attn.qk_probs", layer), x.act("attn.v", layer)
    group = m.cfg.n_heads // m.cfg.kv_heads
    per_key = torch.zeros(q + 1)
    for h in range(m.cfg.n_heads):
        w_h = ref.head_write_matrix(family, hf, layer, h, m.cfg.d_head)
        writes = probs[q, : q + 1, h, None] * (v[: q + 1, h // group] @ w_h.T)
        if scale:
            writes = writes / x.act(scale, layer)[q]
        per_key += writes @ ae.encoder.weight[on].float()
    top = per_key.topk(3)
    assert got_on.token_indices == top.indices.tolist()
    torch.testing.assert_close(torch.tensor(got_on.attributions, dtype=torch.float64), top.values.double(), rtol=1e-4, atol=1e-6)
    # and they add up to the latent's pre-activation minus what the layer's bias and the
    # pre-bias contribute (what is not a key's)
    delta = x.w.model.bias_write(layer, "attn").float()
    if scale:
        delta = delta / x.act(scale, layer)[q]
    rest = (delta - ae.pre_bias.float()) @ ae.encoder.weight[on].float() + ae.latent_bias[on].float()
    assert float(per_key.sum() + rest) == pytest.approx(float(latents[q, on]), rel=1e-3, abs=1e-5)


def test_no_read_for_latents_of_the_attention_write(setup: tuple[str, Debugger, Any], tmp_path: Path) -> None:
    _, d, _ = setup
    x = _recorded(d, S.TokenScoringType.INPUT_TOKENS_THAT_UPVOTE_MLP)
    spec = S.ScoredTokensRequestSpec(token_scoring_type=S.TokenScoringType.INPUT_TOKENS_THAT_UPVOTE_MLP, num_tokens=5, depends_on_spec_name="x")
    (got,) = d.scorer.scored_tokens(spec, x, [_node("attention_autoencoder_latent", (3, 1), 0)]).top_tokens_list
    assert got is None  # the seed scores MLP-side nodes only
