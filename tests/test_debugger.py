"""The debugger's numbers, checked against independent computations on a small random model."""

from __future__ import annotations

import math

import pytest
import torch
from torch import Tensor

from neuron_explainer.activation_server import schemas as S
from neuron_explainer.activation_server.processing import Debugger
from neuron_explainer.debugger import scalars as sc
from neuron_explainer.debugger.inference import (
    Ablation,
    LogitDiffLoss,
    PromptRequest,
    Site,
    Trace,
    run,
)
from neuron_explainer.models.tokenizer import get_tokenizer
from neuron_explainer.models.transformer import Transformer, TransformerConfig

PROMPT = "<|endoftext|>When Mary and John went to the store, John gave a drink to"
TARGET, DISTRACTOR = " Mary", " John"


@pytest.fixture(scope="module")
def debugger() -> Debugger:
    torch.manual_seed(0)
    torch.set_num_threads(1)
    cfg = TransformerConfig(n_layers=3, d_model=64, n_heads=4, n_vocab=50257, ctx_window=64)
    model = Transformer(cfg).init_weights(seed=1, std=0.1).eval()
    with torch.no_grad():  # nonzero biases and LayerNorm parameters, so they are tested too
        for name, p in model.named_parameters():
            if name.endswith("bias") or "ln" in name:
                p.add_(torch.randn_like(p) * 0.1)
    for p in model.parameters():
        p.requires_grad_(False)
    return Debugger(model, get_tokenizer(), "tiny")


def _tokens(d: Debugger, text: str = PROMPT) -> list[int]:
    return d.tokenizer.encode(text)


def _loss(d: Debugger) -> LogitDiffLoss:
    return LogitDiffLoss((d.single_token(TARGET, "t"),), (d.single_token(DISTRACTOR, "d"),))


def _logit_diff(d: Debugger, logits: Tensor) -> float:
    t, x = d.single_token(TARGET, "t"), d.single_token(DISTRACTOR, "d")
    return float(logits[0, -1, t] - logits[0, -1, x])


DETACH_LN_F = Ablation(Site("resid.ln_f.scale"), (None, None), 0.0, "backward")


def test_direct_effects_sum_to_the_logit_difference(debugger: Debugger) -> None:
    d, m = debugger, debugger.model
    names = [
        "resid_post_embedding_proj_to_final_residual_grad",
        "mlp_write_to_final_residual_grad",
        "unflattened_attn_write_to_final_residual_grad",
    ]
    acts, grads = sc.sites_needed(names, m)
    (rec,) = run(m, [PromptRequest(_tokens(d), [DETACH_LN_F], _loss(d))], sorted(acts, key=repr), sorted(grads, key=repr))
    total = sum(float(x.sum()) for name in names for _, x in d._layer_tensors(name, rec))
    # what the direct effects leave out: the biases written to the residual stream and the
    # final LayerNorm's bias, each projected on the same (constant) gradient
    g = rec.gradients[sc.final_grad_site(m.cfg.n_layers)]  # (T, d_model), nonzero at the last token
    biases = sum(blk.attn.out_proj.bias + blk.mlp.out_layer.bias for blk in m.xf_layers)
    t, x = d.single_token(TARGET, "t"), d.single_token(DISTRACTOR, "d")
    unembed = m.unembed.weight[t] - m.unembed.weight[x]
    constant = float((g.sum(0) * biases).sum() + m.final_ln.bias @ unembed)
    assert rec.objective is not None
    assert total + constant == pytest.approx(rec.objective, rel=1e-4, abs=1e-4)
    # and the objective is the plain logit difference of a forward pass
    with torch.no_grad():
        assert rec.objective == pytest.approx(_logit_diff(d, m(torch.tensor([_tokens(d)]))), abs=1e-4)


@pytest.mark.parametrize("layer,token,neuron", [(0, 5, 3), (2, -1, 100)])
def test_act_times_grad_matches_finite_differences(debugger: Debugger, layer: int, token: int, neuron: int) -> None:
    d, m = debugger, debugger.model
    site = Site("mlp.post_act", layer)
    (rec,) = run(m, [PromptRequest(_tokens(d), [], _loss(d))], [site], [site])
    act = float(rec.activations[site][token, neuron])
    eps = 1e-2

    def objective(value: float) -> float:
        (r,) = run(m, [PromptRequest(_tokens(d), [Ablation(site, (token, neuron), value)], _loss(d))])
        assert r.objective is not None
        return r.objective

    grad_fd = (objective(act + eps) - objective(act - eps)) / (2 * eps)
    expected = act * grad_fd
    got = float(sc.compute("mlp_act_times_grad", rec, d.weights, layer)[token, neuron])
    assert got == pytest.approx(expected, rel=1e-2, abs=1e-5)


def test_ablating_a_neuron_equals_removing_its_write(debugger: Debugger) -> None:
    d, m = debugger, debugger.model
    layer, token, neuron = 1, 7, 42
    node = S.NodeAblation(
        node_index=S.MirroredNodeIndex(node_type=S.NodeType.MLP_NEURON, tensor_indices=(token, neuron), layer_index=layer, pass_type=S.PassType.FORWARD),
        value=0,
    )
    spec = S.TdbRequestSpec(
        prompt=PROMPT, target_tokens=[TARGET], distractor_tokens=[DISTRACTOR],
        component_type_for_mlp=S.ComponentTypeForMlp.NEURON,
        component_type_for_attention=S.ComponentTypeForAttention.ATTENTION_HEAD,
        top_and_bottom_k_for_node_table=5, hide_early_layers_when_ablating=False, node_ablations=[node],
    )
    response = d.batched_tdb(S.BatchedTdbRequest(sub_requests=[spec, spec.model_copy(update={"node_ablations": []})]))
    ablated, clean = (r.inference_response.inference_and_token_data.loss for r in response.inference_sub_responses)

    # reference: a plain forward pass that subtracts the neuron's write from the residual stream
    tokens = torch.tensor([_tokens(d)])
    _, cache = m.run_with_cache(tokens, [f"blocks.{layer}.mlp.post_act"])
    a = cache[f"blocks.{layer}.mlp.post_act"][0, token, neuron]
    write = a * m.xf_layers[layer].mlp.out_layer.weight[:, neuron]

    def subtract(x: Tensor) -> Tensor:
        x = x.clone()
        x[0, token] -= write
        return x

    with torch.no_grad(), m.hooks(fwd={f"blocks.{layer}.resid.delta_mlp": subtract}):
        expected = _logit_diff(d, m(tokens))
    with torch.no_grad():
        assert clean == pytest.approx(_logit_diff(d, m(tokens)), abs=1e-4)
    assert ablated == pytest.approx(expected, abs=1e-4)
    assert ablated != pytest.approx(clean, abs=1e-6)


def test_head_write_norms_equal_norms_of_per_head_outputs(debugger: Debugger) -> None:
    d, m = debugger, debugger.model
    layer = 1
    acts = [Site("attn.qk_probs", layer), Site("attn.v", layer)]
    (rec,) = run(m, [PromptRequest(_tokens(d))], acts)
    norms = sc.compute("unflattened_attn_write_norm", rec, d.weights, layer)  # (Q, K, H)

    # independent: each head's output per query token from the model's own per-head hook,
    # and per token pair by hand from probabilities, values and the output weights
    tokens = torch.tensor([_tokens(d)])
    _, cache = m.run_with_cache(tokens, [f"blocks.{layer}.attn.head_out"])
    head_out = cache[f"blocks.{layer}.attn.head_out"][0]  # (T, H, d_model)
    cfg = m.cfg
    w_o = m.xf_layers[layer].attn.out_proj.weight  # (d_model, H * d_head)
    probs, v = rec.activations[acts[0]], rec.activations[acts[1]]
    for h in range(cfg.n_heads):
        w_h = w_o[:, h * cfg.d_head : (h + 1) * cfg.d_head]
        pair_writes = probs[:, :, h, None] * (v[:, h] @ w_h.T)[None]  # (Q, K, d_model)
        torch.testing.assert_close(pair_writes.norm(dim=-1), norms[:, :, h], rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(pair_writes.sum(1), head_out[:, h], rtol=1e-4, atol=1e-5)


def test_tracing_a_neuron_ranks_like_its_own_gradient(debugger: Debugger) -> None:
    d, m = debugger, debugger.model
    layer, token, neuron = 2, 9, 17
    up = Site("mlp.post_act", 0)
    trace = Trace(Site("mlp.pre_act", layer), (token, neuron))
    (rec,) = run(m, [PromptRequest(_tokens(d), [], None, trace)], [up], [up])
    traced = sc.compute("mlp_act_times_grad", rec, d.weights, 0)

    # independent: autograd on a fresh forward pass
    tokens = torch.tensor([_tokens(d)])
    store: dict[str, Tensor] = {}

    def keep(name: str):
        def fn(x: Tensor) -> Tensor:
            x = x if x.requires_grad else x.detach().requires_grad_(True)
            store[name] = x
            return x
        return fn

    with m.hooks(fwd={"blocks.0.mlp.post_act": keep("up"), f"blocks.{layer}.mlp.pre_act": keep("down")}):
        m(tokens)
    (g,) = torch.autograd.grad(store["down"][0, token, neuron], store["up"])
    expected = (store["up"] * g)[0].detach()
    torch.testing.assert_close(traced, expected, rtol=1e-4, atol=1e-6)
    top = lambda x: x.flatten().topk(10).indices.tolist()  # noqa: E731
    assert top(traced) == top(expected)


def test_results_do_not_depend_on_the_rest_of_the_batch(debugger: Debugger) -> None:
    d, m = debugger, debugger.model
    other = "<|endoftext|>When Alice and Bob went to the park, Bob gave a ball to"
    assert len(_tokens(d, other)) == len(_tokens(d, PROMPT))
    names = ["mlp_act_times_grad", "unflattened_attn_act_times_grad", "token_attribution"]
    acts, grads = sc.sites_needed(names, m)
    alone = run(m, [PromptRequest(_tokens(d), [DETACH_LN_F], _loss(d))], sorted(acts, key=repr), sorted(grads, key=repr))
    ablate = Ablation(Site("mlp.post_act", 0), (3, 5), 0.0)
    batch = run(
        m,
        [PromptRequest(_tokens(d, other), [ablate], _loss(d)), PromptRequest(_tokens(d), [DETACH_LN_F], _loss(d)),
         PromptRequest(_tokens(d, "<|endoftext|>short"), [], _loss(d))],
        sorted(acts, key=repr), sorted(grads, key=repr),
    )
    assert batch[1].objective == pytest.approx(alone[0].objective, abs=1e-5)
    for site in grads:
        torch.testing.assert_close(batch[1].gradients[site], alone[0].gradients[site], rtol=1e-4, atol=1e-6)
    for site in acts:
        torch.testing.assert_close(batch[1].activations[site], alone[0].activations[site], rtol=1e-4, atol=1e-6)


def test_trace_through_v_is_the_heads_direct_effect_on_the_loss(debugger: Debugger) -> None:
    """Through V (the seed's AttentionDirectEffectReconstituter): the head's write at (q, k, h),
    its attention weight held fixed, projected on the loss's gradient at the final residual
    stream (final LayerNorm scale held), i.e. its direct effect; differentiated through v_k."""
    d, m = debugger, debugger.model
    layer, q, k, h = 1, 12, 4, 2
    up = Site("resid.post_emb")
    final = sc.final_grad_site(m.cfg.n_layers)
    trace = Trace(Site("attn.qk_logits", layer), (q, k, h), "V", onto=final)
    (rec,) = run(m, [PromptRequest(_tokens(d), [DETACH_LN_F], _loss(d), trace)], [up], [up])

    tokens = torch.tensor([_tokens(d)])
    store: dict[str, Tensor] = {}

    def keep(name: str, leaf: bool = False):
        def fn(x: Tensor) -> Tensor:
            if leaf:
                x = x.detach().requires_grad_(True)
            store[name] = x
            return x
        return fn

    last = m.cfg.n_layers - 1
    with m.hooks(fwd={
        "resid.post_emb": keep("emb", leaf=True), f"blocks.{last}.resid.post_mlp": keep("final"),
        f"blocks.{layer}.attn.v": keep("v"), f"blocks.{layer}.attn.qk_probs": keep("p"),
        "resid.ln_f.scale": lambda x: x.detach(),
    }):
        logits = m(tokens)
    t, x = d.single_token(TARGET, "t"), d.single_token(DISTRACTOR, "d")
    loss = logits[0, -1, t] - logits[0, -1, x]
    (g,) = torch.autograd.grad(loss, store["final"], retain_graph=True)
    dh = m.cfg.d_head
    w_h = m.xf_layers[layer].attn.out_proj.weight[:, h * dh : (h + 1) * dh]
    objective = store["p"][0, h, q, k].detach() * (w_h @ store["v"][0, k, h]) @ g[0, q]
    (g_emb,) = torch.autograd.grad(objective, store["emb"])
    assert rec.traced_value == pytest.approx(objective.item(), rel=1e-4, abs=1e-6)
    assert rec.objective == rec.traced_value and rec.loss == pytest.approx(float(loss), abs=1e-5)
    torch.testing.assert_close(rec.gradients[up], g_emb[0], rtol=1e-4, atol=1e-6)
    assert float(g_emb[0, k + 1 :].abs().max()) == 0.0  # only tokens up to the key matter


def test_layer_sums_for_the_viewer_are_each_layers_direct_effect(debugger: Debugger) -> None:
    """componentSumsForLayerDisplay: per layer, the direct effects of all neurons (heads) add up
    to that layer's MLP (attention) write, minus its bias, through the final LayerNorm (scale
    held constant) onto the unembedding difference, computed here from the raw forward pass."""
    d, m = debugger, debugger.model
    spec = S.TdbRequestSpec(
        prompt=PROMPT, target_tokens=[TARGET], distractor_tokens=[DISTRACTOR],
        component_type_for_mlp=S.ComponentTypeForMlp.NEURON,
        component_type_for_attention=S.ComponentTypeForAttention.ATTENTION_HEAD,
        top_and_bottom_k_for_node_table=5, hide_early_layers_when_ablating=False, node_ablations=[],
    )
    response = d.batched_tdb(S.BatchedTdbRequest(sub_requests=[spec]))
    step = response.inference_sub_responses[0].processing_response_data_by_name["componentSumsForLayerDisplay"]
    sums = step.intermediate_sum_activations_by_dst_by_group_id[S.GroupId.DIRECTION_WRITE]
    D = S.DerivedScalarType
    mlp = sums[D.MLP_WRITE_TO_FINAL_RESIDUAL_GRAD].value
    attn = sums[D.UNFLATTENED_ATTN_WRITE_TO_FINAL_RESIDUAL_GRAD].value
    assert len(mlp) == len(attn) == m.cfg.n_layers

    L = m.cfg.n_layers
    names = [f"blocks.{i}.resid.delta_{k}" for i in range(L) for k in ("mlp", "attn")] + ["resid.ln_f.scale"]
    with torch.no_grad():
        _, cache = m.run_with_cache(torch.tensor([_tokens(d)]), names)
    t, x = d.single_token(TARGET, "t"), d.single_token(DISTRACTOR, "d")
    u = m.unembed.weight[t] - m.unembed.weight[x]
    scale = cache["resid.ln_f.scale"][0, -1]

    def direct_effect(write: Tensor) -> float:  # the last token's write through ln_f onto u
        return float(((write - write.mean()) * m.final_ln.weight / scale) @ u)

    for i, blk in enumerate(m.xf_layers):
        want_mlp = direct_effect(cache[f"blocks.{i}.resid.delta_mlp"][0, -1] - blk.mlp.out_layer.bias)
        want_attn = direct_effect(cache[f"blocks.{i}.resid.delta_attn"][0, -1] - blk.attn.out_proj.bias)
        assert mlp[i] == pytest.approx(want_mlp, rel=1e-4, abs=1e-5)
        assert attn[i] == pytest.approx(want_attn, rel=1e-4, abs=1e-5)


def test_shared_rankings_and_cached_scored_tokens_change_nothing(debugger: Debugger) -> None:
    """The TDB request's k=1 steps slice the node table's ranking, and static nodes' scored
    tokens are cached across requests: the answers must be those of a brute-force ranking and
    of a cold cache."""
    d = debugger
    spec = S.TdbRequestSpec(
        prompt=PROMPT, target_tokens=[TARGET], distractor_tokens=[DISTRACTOR],
        component_type_for_mlp=S.ComponentTypeForMlp.NEURON,
        component_type_for_attention=S.ComponentTypeForAttention.ATTENTION_HEAD,
        top_and_bottom_k_for_node_table=7, hide_early_layers_when_ablating=False, node_ablations=[],
    )
    request = S.BatchedTdbRequest(sub_requests=[spec])
    d.scorer._cache.clear()
    cold = d.batched_tdb(request).inference_sub_responses[0]
    assert d.scorer._cache, "neurons' scored tokens are cached"
    warm = d.batched_tdb(request).inference_sub_responses[0]
    assert warm.processing_response_data_by_name == cold.processing_response_data_by_name

    # the per-token steps (k=1): each group's largest and smallest value over every node of
    # every layer, found here by brute force
    sub = d.tdb_to_sub_request(spec, "s")
    for name in ("componentSumsForTokenDisplay", "componentSumsByToken"):
        step = cold.processing_response_data_by_name[name]
        token_step = sub.processing_request_spec_by_name[name]
        names = sorted({dst.value for dsts in token_step.dst_list_by_group_id.values() for dst in dsts})
        acts, grads = sc.sites_needed(names, d.model)
        parsed = d._parse(sub, "s")
        (rec,) = run(d.model, [parsed.request], sorted(acts, key=repr), sorted(grads, key=repr))
        for group, dsts in token_step.dst_list_by_group_id.items():
            everything = torch.cat([x.flatten() for dst in dsts for _, x in d._layer_tensors(dst.value, rec)])
            got = step.activations_by_group_id[group]
            assert max(got) == pytest.approx(float(everything.max()), abs=1e-6), (name, group)
            if not group.exclude_bottom_k:
                assert min(got) == pytest.approx(float(everything.min()), abs=1e-6), (name, group)


def test_token_sums_are_every_nodes_values_summed_per_token(debugger: Debugger) -> None:
    """The TDB answer's per-token sums: act x grad per token pair (the original client's input
    token effects, the one term quadratic in the prompt), and every effect per query token and
    per attended-to token. Each is the sum, over layers and nodes, of the node scalars computed
    here from one raw recorded pass."""
    d = debugger
    spec = S.TdbRequestSpec(
        prompt=PROMPT, target_tokens=[TARGET], distractor_tokens=[DISTRACTOR],
        component_type_for_mlp=S.ComponentTypeForMlp.NEURON,
        component_type_for_attention=S.ComponentTypeForAttention.ATTENTION_HEAD,
        top_and_bottom_k_for_node_table=5, hide_early_layers_when_ablating=False, node_ablations=[],
    )
    steps = d.batched_tdb(S.BatchedTdbRequest(sub_requests=[spec])).inference_sub_responses[0].processing_response_data_by_name
    sub = d.tdb_to_sub_request(spec, "s")
    groups = sub.processing_request_spec_by_name["componentSumsByToken"].dst_list_by_group_id
    names = sorted({dst.value for dsts in groups.values() for dst in dsts})
    acts, grads = sc.sites_needed(names, d.model)
    (rec,) = run(d.model, [d._parse(sub, "s").request], sorted(acts, key=repr), sorted(grads, key=repr))
    n = len(_tokens(d))

    def total(dst: str) -> Tensor:  # summed over layers and node axes; token axes kept
        axes = sc.resolve(dst, d.weights)[1].token_axes
        per_layer = [x.sum(dim=tuple(range(axes, x.ndim))) if x.ndim > axes else x for _, x in d._layer_tensors(dst, rec)]
        return torch.stack(per_layer).sum(0)

    pairs = steps["componentSumsForTokenDisplay"].intermediate_sum_activations_by_dst_by_group_id
    assert set(pairs) == {S.GroupId.ACT_TIMES_GRAD}
    by_query = steps["componentSumsByToken"].intermediate_sum_activations_by_dst_by_group_id
    by_key = steps["componentSumsByAttendedToToken"].intermediate_sum_activations_by_dst_by_group_id
    attn = S.DerivedScalarType.UNFLATTENED_ATTN_ACT_TIMES_GRAD
    matrix = torch.tensor(pairs[S.GroupId.ACT_TIMES_GRAD][attn].value, dtype=torch.float64)
    assert matrix.shape == (n, n)
    # sent at display resolution (quadratic in the prompt): within half a step of 10^-5 of the
    # largest entry (plus float32 rounding of the sums), on a grid of that step
    exact = total(attn.value)
    step = 10.0 ** (math.floor(math.log10(float(exact.abs().max()))) - 4)
    torch.testing.assert_close(matrix, exact.double(), atol=step / 2 + 1e-7, rtol=0)
    assert torch.allclose(matrix / step, (matrix / step).round(), atol=1e-6, rtol=0)
    for group, dsts in groups.items():
        for dst in dsts:
            expected = total(dst.value)
            torch.testing.assert_close(torch.tensor(by_query[group][dst].value), expected.sum(1) if expected.ndim == 2 else expected, atol=1e-6, rtol=1e-5)
            if expected.ndim == 2:  # attention: also per attended-to token
                torch.testing.assert_close(torch.tensor(by_key[group][dst].value), expected.sum(0), atol=1e-6, rtol=1e-5)
    assert bool(matrix.tril().ne(0).any()) and bool(matrix.triu(1).eq(0).all())  # causal: keys up to the query
