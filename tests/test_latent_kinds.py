"""Residual-stream SAE latents and transcoder latents as debugger nodes, on several families:
their node-table values, ablations, traces and scored tokens against computations done here
from the coders' own weights and autograd on the plain model."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from conftest import random_coder
from torch import Tensor

from neuron_explainer.activation_server import schemas as S
from neuron_explainer.activation_server.processing import Debugger
from neuron_explainer.debugger import scalars as sc
from neuron_explainer.debugger.inference import Ablation, LogitDiffLoss, PromptRequest, Site, run
from neuron_explainer.models.loading import load_model, tokenizer_of
from neuron_explainer.models.random_models import save_random
from neuron_explainer.models.saes.attach import attach_as_node

pytest.importorskip("transformers")
PROMPT = "When Mary and John went to the store, John gave a drink to"


@pytest.fixture(scope="module", params=["gpt2", "llama", "gemma2"])
def setup(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> tuple[Debugger, list[Any]]:
    torch.set_num_threads(1)
    folder, _ = save_random(request.param, tmp_path_factory.mktemp(request.param))
    model = load_model(folder)
    model.requires_grad_(False)
    d_model = model.cfg.d_model
    atts = []
    for layer in range(model.cfg.n_layers):
        atts.append(attach_as_node(model, random_coder(d_model, 32, f"blocks.{layer}.ln2.hook_normalized", f"blocks.{layer}.hook_mlp_out", 10 + layer)))
        atts.append(attach_as_node(model, random_coder(d_model, 24, f"blocks.{layer}.hook_resid_post", None, 20 + layer)))
    return Debugger(model, tokenizer_of(model), request.param), atts


def _loss(d: Debugger) -> LogitDiffLoss:
    return LogitDiffLoss((d.single_token(" Mary", "t"),), (d.single_token(" John", "d"),))


def _plain_grads(d: Debugger, tokens: list[int], names: list[str]) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
    """Activations and d(logit diff, final norm scale detached)/d(them), by autograd."""
    m = d.model
    store: dict[str, Tensor] = {}

    def keep(name: str) -> Any:
        def fn(x: Tensor) -> Tensor:
            x = x if x.requires_grad else x.detach().requires_grad_(True)
            x.retain_grad()
            store[name] = x
            return x

        return fn

    fwd = {n: keep(n) for n in names} | {"resid.ln_f.scale": lambda s: s.detach(), "resid.post_emb": keep("resid.post_emb")}
    with m.hooks(fwd=fwd):
        logits = m(torch.tensor([tokens]))
    t, x = d.single_token(" Mary", "t"), d.single_token(" John", "d")
    (logits[0, -1, t] - logits[0, -1, x]).backward()
    return {k: v.detach()[0] for k, v in store.items()}, {k: v.grad[0] for k, v in store.items() if v.grad is not None}


@pytest.mark.parametrize("hook", [sc.TRANSCODER_LATENTS, sc.RESID_LATENTS])
def test_node_table_scalars(setup: tuple[Debugger, list[Any]], hook: str) -> None:
    d, atts = setup
    m, kind = d.model, sc.BY_HOOK[hook]
    layer = m.cfg.n_layers - 1 if hook == sc.TRANSCODER_LATENTS else 0
    tokens = d.encode_prompt(PROMPT, "p")
    final = f"blocks.{m.cfg.n_layers - 1}.resid.post_mlp"
    name = f"blocks.{layer}.{hook}"
    acts, grads = _plain_grads(d, tokens, [name, final])
    names = [f"{kind.prefix}_{s}" for s in ("latent", "write_norm", "act_times_grad", "write_to_final_residual_grad")]
    need, need_grads = sc.sites_needed(names, d.weights)
    (rec,) = run(m, [PromptRequest(tokens, [Ablation(Site("resid.ln_f.scale"), (None, None), 0.0, "backward")], _loss(d))],
                 sorted(need, key=repr), sorted(need_grads, key=repr))
    got = {n: d._layer_tensors(n, rec)[[lay for lay, _ in d._layer_tensors(n, rec)].index(layer)][1] for n in names}
    w_dec = next(a.coder for a in atts if a.latents == name).W_dec.float()  # (n_latents, d_model)
    a, g = acts[name].float(), grads[name].float()
    torch.testing.assert_close(got[names[0]], a, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(got[names[1]], a * w_dec.norm(dim=-1), atol=1e-5, rtol=1e-4)  # sign kept
    torch.testing.assert_close(got[names[2]], a * g, atol=1e-5, rtol=1e-4)
    direct = a * (grads[final].float() @ w_dec.T)
    torch.testing.assert_close(got[names[3]], direct, atol=1e-5, rtol=1e-4)
    assert a.abs().sum() > 0 and direct.abs().sum() > 0


@pytest.mark.parametrize("hook", [sc.TRANSCODER_LATENTS, sc.RESID_LATENTS])
def test_ablation_and_trace_through_the_server(setup: tuple[Debugger, list[Any]], hook: str) -> None:
    d, atts = setup
    m, kind = d.model, sc.BY_HOOK[hook]
    tokens = d.encode_prompt(PROMPT, "p")
    layer = 1
    name = f"blocks.{layer}.{hook}"
    att = next(a for a in atts if a.latents == name)
    with torch.no_grad():
        _, cache = m.run_with_cache(torch.tensor([tokens]), [name, att.reads])
    token, latent = (cache[name][0, -1:] > 0).nonzero()[0].tolist()
    token = len(tokens) - 1
    node = S.MirroredNodeIndex(node_type=S.NodeType(kind.node_type), tensor_indices=(token, latent), layer_index=layer, pass_type=S.PassType.FORWARD)
    spec = dict(prompt=PROMPT, target_tokens=[" Mary"], distractor_tokens=[" John"], component_type_for_mlp="transcoder_latent",
                component_type_for_attention="attention_head", top_and_bottom_k_for_node_table=5,
                hide_early_layers_when_ablating=False, node_ablations=[], include_residual_latents=True)
    ablated = d.batched_tdb(S.BatchedTdbRequest(sub_requests=[S.TdbRequestSpec.model_validate(spec | {"node_ablations": [{"nodeIndex": node.model_dump(by_alias=True), "value": 0}]})]))
    row = cache[name][0, token, latent] * att.coder.W_dec[latent]

    def subtract(x: Tensor) -> Tensor:
        x = x.clone()
        x[0, token] -= row.to(x.dtype)
        return x

    t, x_ = d.single_token(" Mary", "t"), d.single_token(" John", "d")
    with torch.no_grad(), m.hooks(fwd={att.writes: subtract}):
        logits = m(torch.tensor([tokens]))[0, -1]
    assert ablated.inference_sub_responses[0].inference_response.inference_and_token_data.loss == pytest.approx(float(logits[t] - logits[x_]), abs=1e-4)

    traced = d.batched_tdb(S.BatchedTdbRequest(sub_requests=[S.TdbRequestSpec.model_validate(spec | {"upstreamNodeToTrace": {"nodeIndex": node.model_dump(by_alias=True)}})]))
    info = traced.inference_sub_responses[0].inference_response.inference_and_token_data
    pre = att.coder.encode_pre_act(cache[att.reads][0, token])[latent]
    assert info.activation_value_for_backward_pass == pytest.approx(float(pre), abs=1e-4)
    # the trace's token attribution: embeddings x d(pre-activation)/d(embeddings), by autograd
    store: dict[str, Tensor] = {}

    def leaf(e: Tensor) -> Tensor:
        store["emb"] = e.detach().requires_grad_(True)
        return store["emb"]

    def grab(v: Tensor) -> None:
        store["in"] = v

    scales = {f"blocks.{layer}.mlp_ln.scale": lambda s: s.detach()} if hook == sc.TRANSCODER_LATENTS else {}
    with m.hooks(fwd={"resid.post_emb": leaf, att.reads: grab, **scales}):
        m(torch.tensor([tokens]))
    (g,) = torch.autograd.grad(att.coder.encode_pre_act(store["in"][0, token])[latent], store["emb"])
    expected = (store["emb"][0] * g[0]).sum(-1).detach()
    table = traced.inference_sub_responses[0].processing_response_data_by_name["componentSumsForLayerDisplay"]
    sums = table.intermediate_sum_activations_by_dst_by_group_id[S.GroupId.ACT_TIMES_GRAD][S.DerivedScalarType.TOKEN_ATTRIBUTION]
    assert float(sums.value[0]) == pytest.approx(float(expected.sum()), rel=1e-3, abs=1e-4)


def test_scored_tokens_of_the_new_kinds(setup: tuple[Debugger, list[Any]]) -> None:
    d, atts = setup
    m = d.model
    spec = S.TdbRequestSpec(prompt=PROMPT, target_tokens=[" Mary"], distractor_tokens=[" John"],
                            component_type_for_mlp=S.ComponentTypeForMlp.TRANSCODER_LATENT,
                            component_type_for_attention=S.ComponentTypeForAttention.ATTENTION_HEAD,
                            top_and_bottom_k_for_node_table=30, hide_early_layers_when_ablating=False, node_ablations=[],
                            include_residual_latents=True)
    data = d.batched_tdb(S.BatchedTdbRequest(sub_requests=[spec])).inference_sub_responses[0].processing_response_data_by_name
    nodes = data["topKComponents"].node_indices
    kinds = {n.node_type.value for n in nodes}
    assert {"transcoder_latent", "residual_autoencoder_latent"} <= kinds
    for node, top in zip(nodes, data["upvotedOutputTokens"].top_tokens_list, strict=True):
        if node.node_type.value not in ("transcoder_latent", "residual_autoencoder_latent"):
            continue
        hook = sc.BY_NODE_TYPE[node.node_type.value].hook
        att = next(a for a in atts if a.latents == f"blocks.{node.layer_index}.{hook}")
        scores = m.logit_lens(att.coder.W_dec[node.tensor_indices[-1]][None].float())[0]
        assert top is not None and top.top[0].token == d.token_strings[int(scores.argmax())]
        assert top.top[0].scalar == pytest.approx(float(scores.max()), rel=1e-4)
    for node, top in zip(nodes, data["inputTokensThatUpvoteMlp"].top_tokens_list, strict=True):
        if node.node_type.value != "residual_autoencoder_latent":
            continue
        att = next(a for a in atts if a.latents == f"blocks.{node.layer_index}.{sc.RESID_LATENTS}")
        row = att.coder.affine_read_directions()[node.tensor_indices[-1]].float()
        scores = m.token_embeddings().float() @ row  # the direct path: the token's embedding
        assert top is not None and top.top[0].token == d.token_strings[int(scores.argmax())]
