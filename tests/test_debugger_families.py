"""The debugger's identities on every family, with `transformers` as the independent reference
where a number can be computed there: random small checkpoints (grouped queries, gated MLPs,
sandwich norms, soft-caps, sliding windows, parallel blocks) loaded by us."""

from __future__ import annotations

from typing import Any

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
from neuron_explainer.models.loading import load_model, tokenizer_of
from neuron_explainer.models.random_models import FAMILIES, save_random

pytest.importorskip("transformers")

PROMPT = "When Mary and John went to the store, John gave a drink to"
TARGET, DISTRACTOR = " Mary", " John"


@pytest.fixture(scope="module", params=FAMILIES)
def setup(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Debugger, Any]:
    torch.set_num_threads(1)
    family = request.param
    folder, hf = save_random(family, tmp_path_factory.mktemp(family))
    model = load_model(folder)
    model.requires_grad_(False)
    return family, Debugger(model, tokenizer_of(model), family), hf


def _tokens(d: Debugger) -> list[int]:
    return d.encode_prompt(PROMPT, "prompt")


def _ids(d: Debugger) -> tuple[int, int]:
    return d.single_token(TARGET, "t"), d.single_token(DISTRACTOR, "d")


def _loss(d: Debugger) -> LogitDiffLoss:
    t, x = _ids(d)
    return LogitDiffLoss((t,), (x,))


def _hf_logit_diff(d: Debugger, hf: Any, tokens: list[int]) -> float:
    t, x = _ids(d)
    with torch.no_grad():
        logits = hf(torch.tensor([tokens])).logits[0, -1]
    return float(logits[t] - logits[x])


def _hf_layers(hf: Any) -> Any:
    base = getattr(hf, "model", None) or getattr(hf, "gpt_neox", None) or hf.transformer
    return getattr(base, "layers", None) or base.h


def _hf_down_and_out(family: str, hf: Any, layer: int) -> tuple[Any, Any]:
    """transformers' MLP down projection and attention output projection of `layer`."""
    blk = _hf_layers(hf)[layer]
    if family == "gpt2":
        return blk.mlp.c_proj, blk.attn.c_proj
    if family.startswith("gpt_neox"):
        return blk.mlp.dense_4h_to_h, blk.attention.dense
    return blk.mlp.down_proj, blk.self_attn.o_proj


DETACH = Ablation(Site("resid.ln_f.scale"), (None, None), 0.0, "backward")


def test_direct_effects_and_biases_sum_to_the_objective(setup: tuple[str, Debugger, Any]) -> None:
    _, d, hf = setup
    m = d.model
    names = [
        "resid_post_embedding_proj_to_final_residual_grad",
        "mlp_write_to_final_residual_grad",
        "unflattened_attn_write_to_final_residual_grad",
    ]
    acts, grads = sc.sites_needed(names, m)
    final = Site("resid.post_mlp", m.cfg.n_layers - 1)
    scales = {Site(f"{s}_post_ln.scale", i) for s in ("attn", "mlp") for i in range(m.cfg.n_layers)} if m.cfg.sandwich_norms else set()
    (rec,) = run(m, [PromptRequest(_tokens(d), [DETACH], _loss(d))], sorted(acts | {final} | scales, key=repr), sorted(grads, key=repr))
    total = sum(float(x.sum()) for name in names for _, x in d._layer_tensors(name, rec))
    g = rec.gradients[sc.final_grad_site(m.cfg.n_layers)].float()  # (T, d_model)
    biases = 0.0
    for layer in range(m.cfg.n_layers):
        for sub in ("attn", "mlp"):
            b = m.bias_write(layer, sub).float()
            per_token = (g @ b)[:, None]
            if m.cfg.sandwich_norms:
                per_token = per_token / rec.activations[Site(f"{sub}_post_ln.scale", layer)].float()
            biases += float(per_token.sum())
    # linear in the final residual stream (its norm's scale detached): g . x_final
    linear = float((g * rec.activations[final].float()).sum())
    assert total + biases == pytest.approx(linear, rel=1e-4, abs=1e-4)
    assert rec.objective == pytest.approx(_hf_logit_diff(d, hf, _tokens(d)), abs=1e-4)
    if m.cfg.final_softcap is None:  # then the objective itself is linear in it
        t, x = _ids(d)
        u = m.unembed.weight[t] - m.unembed.weight[x]
        final_bias = float(m.final_ln.bias @ u) if m.final_ln.bias is not None else 0.0
        assert linear + final_bias == pytest.approx(rec.objective, rel=1e-4, abs=1e-4)


def test_act_times_grad_matches_finite_differences(setup: tuple[str, Debugger, Any]) -> None:
    _, d, _ = setup
    m = d.model
    for site, index, name in (
        (Site("mlp.post_act", 0), (4, 7), "mlp_act_times_grad"),
        (Site("attn.qk_probs", m.cfg.n_layers - 1), (9, 3, 1), "unflattened_attn_act_times_grad"),
    ):
        (rec,) = run(m, [PromptRequest(_tokens(d), [], _loss(d))], [site], [site])
        act = float(rec.activations[site][index])
        eps = 1e-2 * max(1.0, abs(act))

        def objective(value: float, site: Site = site, index: tuple[int, ...] = index) -> float:
            (r,) = run(m, [PromptRequest(_tokens(d), [Ablation(site, index, value)], _loss(d))])
            assert r.objective is not None
            return r.objective

        expected = act * (objective(act + eps) - objective(act - eps)) / (2 * eps)
        got = float(sc.compute(name, rec, d.weights, site.layer)[index])
        assert got == pytest.approx(expected, rel=2e-2, abs=1e-4), name


def _tdb(d: Debugger, ablations: list[S.NodeAblation]) -> S.TdbRequestSpec:
    return S.TdbRequestSpec(
        prompt=PROMPT, target_tokens=[TARGET], distractor_tokens=[DISTRACTOR],
        component_type_for_mlp=S.ComponentTypeForMlp.NEURON,
        component_type_for_attention=S.ComponentTypeForAttention.ATTENTION_HEAD,
        top_and_bottom_k_for_node_table=5, hide_early_layers_when_ablating=False, node_ablations=ablations,
    )


def _ablated_loss(d: Debugger, node: S.MirroredNodeIndex) -> tuple[float, float]:
    spec = _tdb(d, [S.NodeAblation(node_index=node, value=0)])
    response = d.batched_tdb(S.BatchedTdbRequest(sub_requests=[spec, _tdb(d, [])]))
    ablated, clean = (r.inference_response.inference_and_token_data.loss for r in response.inference_sub_responses)
    assert ablated is not None and clean is not None
    return ablated, clean


def test_ablating_a_neuron_equals_removing_its_input_to_the_down_projection(setup: tuple[str, Debugger, Any]) -> None:
    family, d, hf = setup
    # in the last layer, only the last token's neurons reach the logits
    layer, token, neuron = d.model.cfg.n_layers - 1, len(_tokens(d)) - 1, 11
    node = S.MirroredNodeIndex(node_type=S.NodeType.MLP_NEURON, tensor_indices=(token, neuron), layer_index=layer, pass_type=S.PassType.FORWARD)
    ablated, clean = _ablated_loss(d, node)
    down, _ = _hf_down_and_out(family, hf, layer)

    def zero(module: Any, args: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
        x = args[0].clone()
        x[0, token, neuron] = 0
        return (x, *args[1:])

    handle = down.register_forward_pre_hook(zero)
    try:
        expected = _hf_logit_diff(d, hf, _tokens(d))
    finally:
        handle.remove()
    assert clean == pytest.approx(_hf_logit_diff(d, hf, _tokens(d)), abs=1e-4)
    assert ablated == pytest.approx(expected, abs=1e-4)
    assert abs(ablated - clean) > 1e-6


def test_ablating_a_head_equals_removing_its_output(setup: tuple[str, Debugger, Any]) -> None:
    family, d, hf = setup
    m = d.model
    layer, query, head = 0, len(_tokens(d)) - 1, m.cfg.n_heads - 1  # a query head sharing its K/V
    # a missing key ablates the head at every key of the query token
    node = S.MirroredNodeIndex(node_type=S.NodeType.ATTENTION_HEAD, tensor_indices=(query, None, head), layer_index=layer, pass_type=S.PassType.FORWARD)
    ablated, _ = _ablated_loss(d, node)
    _, out = _hf_down_and_out(family, hf, layer)
    dh = m.cfg.d_head

    def zero(module: Any, args: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
        x = args[0].clone()
        x[0, query, head * dh : (head + 1) * dh] = 0
        return (x, *args[1:])

    handle = out.register_forward_pre_hook(zero)
    try:
        expected = _hf_logit_diff(d, hf, _tokens(d))
    finally:
        handle.remove()
    assert ablated == pytest.approx(expected, abs=1e-4)


def _leaf(store: dict[str, Tensor], name: str, detach: bool = False) -> Any:
    def fn(x: Tensor) -> Tensor:
        x = x.detach() if detach else x
        x = x if x.requires_grad else x.detach().requires_grad_(True)
        store[name] = x
        return x

    return fn


def test_tracing_a_neuron_equals_autograd(setup: tuple[str, Debugger, Any]) -> None:
    _, d, _ = setup
    m = d.model
    layer, token, neuron = m.cfg.n_layers - 1, 8, 5
    up = Site("mlp.post_act", 0)
    traced = Site(m.mlp_traced_location, layer)
    (rec,) = run(m, [PromptRequest(_tokens(d), [], None, Trace(traced, (token, neuron)))], [up], [up])
    got = sc.compute("mlp_act_times_grad", rec, d.weights, 0)
    store: dict[str, Tensor] = {}
    with m.hooks(fwd={up.hook: _leaf(store, "up"), traced.hook: _leaf(store, "down")}):
        m(torch.tensor([_tokens(d)]))
    (g,) = torch.autograd.grad(store["down"][0, token, neuron], store["up"])
    torch.testing.assert_close(got, (store["up"] * g)[0].detach(), rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("through", ["Q", "K", "QK"])
def test_tracing_a_head_equals_autograd(setup: tuple[str, Debugger, Any], through: str) -> None:
    _, d, _ = setup
    m = d.model
    layer, q, k, h = m.cfg.n_layers - 1, 9, 7, m.cfg.n_heads - 1
    up = Site("resid.post_emb")
    trace = Trace(Site("attn.qk_logits", layer), (q, k, h), through)  # type: ignore[arg-type]
    (rec,) = run(m, [PromptRequest(_tokens(d), [], None, trace)], [up], [up])
    # independent: the score's gradient with the other side's activations cut from the graph
    store: dict[str, Tensor] = {}
    fwd = {"resid.post_emb": _leaf(store, "emb"), f"blocks.{layer}.attn.qk_logits": _leaf(store, "scores")}
    if through != "QK":
        other = "attn.k" if through == "Q" else "attn.q"
        fwd[f"blocks.{layer}.{other}"] = lambda x: x.detach()
    with m.hooks(fwd=fwd):
        m(torch.tensor([_tokens(d)]))
    (g,) = torch.autograd.grad(store["scores"][0, h, q, k], store["emb"])
    assert g.abs().max() > 0
    torch.testing.assert_close(rec.gradients[up], g[0], rtol=1e-4, atol=1e-6)


def test_trace_through_v_is_the_heads_direct_effect_on_the_loss(setup: tuple[str, Debugger, Any]) -> None:
    family, d, hf = setup
    m = d.model
    layer, q, k, h = 0, 9, 4, m.cfg.n_heads - 1
    up = Site("resid.post_emb")
    final = sc.final_grad_site(m.cfg.n_layers)
    trace = Trace(Site("attn.qk_logits", layer), (q, k, h), "V", onto=final)
    (rec,) = run(m, [PromptRequest(_tokens(d), [DETACH], _loss(d), trace)], [up], [up])
    # independent: W_O's slice for head h from transformers; the head's write with its
    # probability (and any post-norm scale) held fixed, on d loss / d(the final residual stream)
    store: dict[str, Tensor] = {}
    names = {"resid.post_emb": _leaf(store, "emb"), final.hook: _leaf(store, "final"),
             f"blocks.{layer}.attn.v": _leaf(store, "v"), f"blocks.{layer}.attn.qk_probs": _leaf(store, "p"),
             "resid.ln_f.scale": lambda s: s.detach()}
    if m.cfg.sandwich_norms:
        names[f"blocks.{layer}.attn_post_ln.scale"] = _leaf(store, "scale")
    with m.hooks(fwd=names):
        logits = m(torch.tensor([_tokens(d)]))
    t, x = _ids(d)
    (g,) = torch.autograd.grad(logits[0, -1, t] - logits[0, -1, x], store["final"], retain_graph=True)
    _, out = _hf_down_and_out(family, hf, layer)
    w = out.weight.T if family == "gpt2" else out.weight  # GPT-2's Conv1D stores (in, out)
    dh, group = m.cfg.d_head, m.cfg.n_heads // m.cfg.kv_heads
    write = store["p"][0, h, q, k].detach() * (w[:, h * dh : (h + 1) * dh] @ store["v"][0, k, h // group])
    if m.cfg.sandwich_norms:
        gain = 1 + _hf_layers(hf)[layer].post_attention_layernorm.weight
        write = write * gain / store["scale"][0, q].detach()
    objective = write @ g[0, q]
    (g_emb,) = torch.autograd.grad(objective, store["emb"])
    assert rec.traced_value == pytest.approx(objective.item(), rel=1e-4, abs=1e-6)
    torch.testing.assert_close(rec.gradients[up], g_emb[0], rtol=1e-4, atol=1e-6)


def test_batch_rows_are_independent(setup: tuple[str, Debugger, Any]) -> None:
    _, d, _ = setup
    m = d.model
    names = ["mlp_act_times_grad", "unflattened_attn_act_times_grad", "token_attribution"]
    acts, grads = sc.sites_needed(names, m)
    other = d.encode_prompt("When Alice and Bob went to the park, Bob gave a ball to", "p")
    alone = run(m, [PromptRequest(_tokens(d), [DETACH], _loss(d))], sorted(acts, key=repr), sorted(grads, key=repr))
    batch = run(
        m,
        [PromptRequest(other, [Ablation(Site("mlp.post_act", 0), (3, 5), 0.0)], _loss(d)),
         PromptRequest(_tokens(d), [DETACH], _loss(d)),
         PromptRequest(d.encode_prompt("short", "p"), [], _loss(d))],
        sorted(acts, key=repr), sorted(grads, key=repr),
    )
    assert batch[1].objective == pytest.approx(alone[0].objective, abs=1e-5)
    for site in grads:
        torch.testing.assert_close(batch[1].gradients[site], alone[0].gradients[site], rtol=1e-4, atol=1e-6)
    for site in acts:
        torch.testing.assert_close(batch[1].activations[site], alone[0].activations[site], rtol=1e-4, atol=1e-6)


def test_node_table_answers_on_every_family(setup: tuple[str, Debugger, Any]) -> None:
    """The whole TDB request (node table, scored tokens, token pairs, sums) runs, and its
    values are finite; the top nodes' values are those of the scalar functions."""
    _, d, _ = setup
    response = d.batched_tdb(S.BatchedTdbRequest(sub_requests=[_tdb(d, [])]))
    data = response.inference_sub_responses[0].processing_response_data_by_name
    table = data["topKComponents"]
    assert table.node_indices
    for values in table.activations_by_group_id.values():
        assert all(v == v and abs(v) < 1e30 for v in values)
    for name in ("upvotedOutputTokens", "inputTokensThatUpvoteMlp", "inputTokensThatUpvoteAttnQ", "inputTokensThatUpvoteAttnK"):
        assert any(t is not None for t in data[name].top_tokens_list), name
