"""Every derived scalar of the table, checked against an independent computation of the seed's
definition: transformers' hidden states, attention patterns and weights, autograd through plain
hooks (`seed_reference.Pass`), autoencoders applied by hand, or the identities between scalars
that the definitions imply (a layer's write is the sum of its nodes' writes...). On GPT-2,
GPT-NeoX (parallel blocks), a Llama-style model (grouped queries, gated MLP) and Gemma 2
(sandwich norms, soft-caps), with random MLP autoencoders (on the MLP's activations or its write)
and attention autoencoders (on its write). The node table's own scalars are checked value by
value in test_node_table_seed.py; `COVERED` says which test checks which scalar, and a test makes
sure that every scalar of the table is in it."""

from __future__ import annotations

from typing import Any

import pytest
import seed_reference as ref
import torch
from conftest import random_coder, random_family_model_with_autoencoders
from torch import Tensor

from neuron_explainer.activation_server import schemas as S
from neuron_explainer.activation_server.errors import RequestError
from neuron_explainer.activation_server.processing import Debugger
from neuron_explainer.debugger import scalars as sc
from neuron_explainer.debugger.inference import Ablation, LogitDiffLoss, PromptRequest, Site, run
from neuron_explainer.models.loading import tokenizer_of
from neuron_explainer.models.saes.attach import attach_as_node

pytest.importorskip("transformers")

PROMPT = "When Mary and John went to the store, John gave a drink to"
TARGET, DISTRACTOR = " Mary", " John"
N_LATENTS = 12
FAMILIES = {"gpt2": "mlp.post_act", "gpt_neox": "resid.delta_mlp", "llama": "resid.delta_mlp", "gemma2": "mlp.post_act"}
TOL = {"rtol": 1e-4, "atol": 1e-5}

NODE_TABLE = {  # checked value by value in test_node_table_seed.py
    "resid_post_embedding_norm", "token_attribution", "resid_post_embedding_proj_to_final_residual_grad", "always_one",
    "mlp_write_norm", "mlp_act_times_grad", "mlp_write_to_final_residual_grad", "mlp_post_act",
    "unflattened_attn_write_norm", "unflattened_attn_act_times_grad", "unflattened_attn_write_to_final_residual_grad",
    "attn_qk_probs",
    *(f"{k.prefix}_{s}" for k in sc.LATENT_KINDS if k.seed for s in ("latent", "write_norm", "act_times_grad", "write_to_final_residual_grad")),
}
COVERED: dict[str, str] = {name: "test_node_table_seed" for name in NODE_TABLE}
# residual-stream SAEs' and transcoders' node-table scalars: checked in test_latent_kinds.py
COVERED |= {f"{k.prefix}_{s}": "test_latent_kinds" for k in sc.LATENT_KINDS if not k.seed
            for s in ("latent", "write_norm", "act_times_grad", "write_to_final_residual_grad")}


def covers(*names: str) -> Any:
    def mark(fn: Any) -> Any:
        for name in names:
            COVERED[name] = fn.__name__
        return fn

    return mark


@pytest.fixture(scope="module", params=sorted(FAMILIES))
def setup(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Debugger, Any]:
    torch.set_num_threads(1)
    family = request.param
    model, hf = random_family_model_with_autoencoders(family, tmp_path_factory.mktemp(family), FAMILIES[family], N_LATENTS, seed=50)
    n = model.cfg.n_layers
    for i in range(n):  # the community's kinds: a transcoder and a residual-stream SAE per layer
        attach_as_node(model, random_coder(model.cfg.d_model, N_LATENTS, f"blocks.{i}.ln2.hook_normalized", f"blocks.{i}.hook_mlp_out", 70 + i))
        attach_as_node(model, random_coder(model.cfg.d_model, N_LATENTS, f"blocks.{i}.hook_resid_post", None, 80 + i))
    return family, Debugger(model, tokenizer_of(model), family, "ae-mlp", "ae-attn"), hf


def _tokens(d: Debugger) -> list[int]:
    return d.encode_prompt(PROMPT, "p")


def _loss(d: Debugger) -> LogitDiffLoss:
    return LogitDiffLoss((d.single_token(TARGET, "t"),), (d.single_token(DISTRACTOR, "d"),))


def _record(d: Debugger, ctx: sc.Context | None = None, ablations: tuple[Ablation, ...] = ()) -> sc.Inputs:
    """One prompt's pass recording what every computable scalar needs (the loss backward, the
    final norm's scale held), with `ctx` as its context."""
    ctx = ctx or sc.default_context(d.weights)
    names = [n for n in sc.SCALARS if sc.problem(n, d.weights, ctx, len(_tokens(d))) is None]
    acts, grads = sc.sites_needed(names, d.weights, [ctx])
    detach = Ablation(Site("resid.ln_f.scale"), (None, None), 0.0, "backward")
    (rec,) = run(d.model, [PromptRequest(_tokens(d), [*ablations, detach], _loss(d))], sorted(acts, key=repr), sorted(grads, key=repr))
    rec.context = ctx
    return sc.Inputs(rec, d.weights, ctx)


def _get(x: sc.Inputs, name: str, layer: int | None = None) -> Tensor:
    return sc.compute(name, x.rec, x.w, layer)


def _reference(d: Debugger, record: set[str], detach: set[str] | None = None, ablate: dict[str, Any] | None = None) -> ref.Pass:
    return ref.Pass(d.model, _tokens(d), record=record, detach={"resid.ln_f.scale", *(detach or set())}, ablate=ablate or {}).run()


def _loss_of(d: Debugger, p: ref.Pass) -> Tensor:
    assert p.logits is not None
    t, x = d.single_token(TARGET, "t"), d.single_token(DISTRACTOR, "d")
    return p.logits[0, -1, t].float() - p.logits[0, -1, x].float()


def _before(m: Any, sublayer: str, layer: int) -> str:
    if sublayer == "mlp" and not m.cfg.parallel:
        return f"blocks.{layer}.resid.post_attn"
    return "resid.post_emb" if layer == 0 else f"blocks.{layer - 1}.resid.post_mlp"


# --------------------------------------------------------------------------- raw activations


@covers("resid_post_embedding", "resid_post_mlp", "previous_layer_resid_post_mlp", "logits", "attn_qk_logits")
def test_the_residual_stream_and_attention_are_transformers(setup: tuple[str, Debugger, Any]) -> None:
    _family, d, hf = setup
    x = _record(d)
    with torch.no_grad():
        out = hf(torch.tensor([_tokens(d)]), output_hidden_states=True, output_attentions=True)
    hidden = [h[0].float() for h in out.hidden_states]  # the last one is after the final norm
    torch.testing.assert_close(_get(x, "resid_post_embedding"), hidden[0], **TOL)
    for layer in range(d.n_layers):
        if layer < d.n_layers - 1:
            torch.testing.assert_close(_get(x, "resid_post_mlp", layer), hidden[layer + 1], rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(_get(x, "previous_layer_resid_post_mlp", layer), hidden[layer], rtol=1e-4, atol=1e-4)
        probs = out.attentions[layer][0].permute(1, 2, 0).float()  # (q, k, h)
        torch.testing.assert_close(_get(x, "attn_qk_probs", layer), probs, rtol=1e-4, atol=1e-5)
        logits = _get(x, "attn_qk_logits", layer)
        torch.testing.assert_close(torch.softmax(logits.permute(2, 0, 1), -1).permute(1, 2, 0), probs, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(_get(x, "logits"), out.logits[0].float(), rtol=1e-4, atol=1e-4)


@covers("attn_query", "attn_key", "attn_value", "attn_weighted_sum_of_values", "mlp_pre_act", "resid_post_attn",
        "resid_delta_attn", "resid_delta_mlp", "attn_input_layer_norm_scale", "mlp_input_layer_norm_scale",
        "resid_final_layer_norm_scale")
def test_the_other_activations_are_their_definitions(setup: tuple[str, Debugger, Any]) -> None:
    family, d, hf = setup
    m = d.model
    cfg = m.cfg
    x = _record(d)
    group = cfg.n_heads // cfg.kv_heads
    eps = cfg.norm_eps

    def scale(v: Tensor) -> Tensor:
        if family in ref.LAYERNORM:
            v = v - v.mean(-1, keepdim=True)
        return (v.pow(2).mean(-1, keepdim=True) + eps).sqrt()

    for layer in range(cfg.n_layers):
        q, k, v = _get(x, "attn_query", layer), _get(x, "attn_key", layer), _get(x, "attn_value", layer)
        assert k.shape[1] == v.shape[1] == cfg.kv_heads  # the key/value heads as they are
        scores = torch.einsum("qhe,khe->qkh", q, k.repeat_interleave(group, dim=1)) * cfg.scale
        if cfg.attn_softcap is not None:
            scores = torch.tanh(scores / cfg.attn_softcap) * cfg.attn_softcap
        allowed = _get(x, "attn_qk_probs", layer) > 0
        torch.testing.assert_close(scores[allowed], _get(x, "attn_qk_logits", layer)[allowed], rtol=1e-4, atol=1e-4)
        weighted = torch.einsum("qkh,khe->qhe", _get(x, "attn_qk_probs", layer), v.repeat_interleave(group, dim=1))
        torch.testing.assert_close(_get(x, "attn_weighted_sum_of_values", layer), weighted, **TOL)
        stream_in = _get(x, "previous_layer_resid_post_mlp", layer)
        torch.testing.assert_close(_get(x, "attn_input_layer_norm_scale", layer), scale(stream_in), **TOL)
        mlp_in = stream_in if cfg.parallel else _get(x, "resid_post_attn", layer)
        torch.testing.assert_close(_get(x, "mlp_input_layer_norm_scale", layer), scale(mlp_in), **TOL)
        # the MLP's pre-activation from transformers' own norm and input layer
        with torch.no_grad():
            y = ref.mlp_input_norm(family, hf, layer)(mlp_in)
            mlp = ref.hf_layers(hf)[layer].mlp
            pre = mlp.c_fc(y) if family == "gpt2" else mlp.dense_h_to_4h(y) if family.startswith("gpt_neox") else mlp.gate_proj(y)
        torch.testing.assert_close(_get(x, "mlp_pre_act", layer), pre.float(), rtol=1e-4, atol=1e-4)
        # the stream adds up: what enters plus the two sublayers' writes
        total = stream_in + _get(x, "resid_delta_attn", layer) + _get(x, "resid_delta_mlp", layer)
        torch.testing.assert_close(_get(x, "resid_post_mlp", layer), total, rtol=1e-4, atol=1e-4)
        if not cfg.parallel:
            torch.testing.assert_close(_get(x, "resid_post_attn", layer), stream_in + _get(x, "resid_delta_attn", layer), rtol=1e-4, atol=1e-4)
    last = _get(x, "resid_post_mlp", cfg.n_layers - 1)
    torch.testing.assert_close(_get(x, "resid_final_layer_norm_scale"), scale(last), **TOL)
    if cfg.parallel:
        assert sc.problem("resid_post_attn", d.weights) is not None  # refused: there is no such stream
        assert sc.problem("resid_post_attn_norm", d.weights) is not None


# ------------------------------------------------------------------ norms and projections


@covers("resid_post_mlp_norm", "resid_post_attn_norm", "mlp_layer_write_norm", "attn_layer_write_norm",
        "resid_post_mlp_proj_to_final_residual_grad", "resid_post_attn_proj_to_final_residual_grad",
        "mlp_layer_write_to_final_residual_grad", "attn_layer_write_to_final_residual_grad")
def test_stream_norms_and_projections(setup: tuple[str, Debugger, Any]) -> None:
    _family, d, _hf = setup
    m = d.model
    n = m.cfg.n_layers
    x = _record(d)
    record = {f"blocks.{layer}.{loc}" for layer in range(n) for loc in ("resid.post_mlp", "resid.delta_attn", "resid.delta_mlp")}
    if not m.cfg.parallel:
        record |= {f"blocks.{layer}.resid.post_attn" for layer in range(n)}
    p = _reference(d, record)
    g = p.grads(_loss_of(d, p))[f"blocks.{n - 1}.resid.post_mlp"].float()  # the final residual stream
    pairs = [("resid_post_mlp", "resid.post_mlp", 5), ("mlp_layer_write", "resid.delta_mlp", 4), ("attn_layer_write", "resid.delta_attn", 2)]
    if not m.cfg.parallel:
        pairs.append(("resid_post_attn", "resid.post_attn", 3))
    for layer in range(n):
        for prefix, loc, where in pairs:
            v = p.act(f"blocks.{layer}.{loc}")
            torch.testing.assert_close(_get(x, f"{prefix}_norm", layer), v.norm(dim=-1, keepdim=True), rtol=1e-4, atol=1e-4)
            proj_name = f"{prefix}_proj_to_final_residual_grad" if prefix.startswith("resid") else f"{prefix}_to_final_residual_grad"
            # the seed's: only what comes before the final residual stream projects on it (the
            # stream after the last block itself does not)
            before = layer < n - 1 or where < 5
            expected = (v * g).sum(-1, keepdim=True) * float(before)
            torch.testing.assert_close(_get(x, proj_name, layer), expected, rtol=1e-4, atol=1e-5)


# ------------------------------------------------------------------------------- MLP writes


@covers("resid_delta_mlp_from_mlp_post_act", "mlp_write")
def test_mlp_writes(setup: tuple[str, Debugger, Any]) -> None:
    family, d, hf = setup
    m = d.model
    x = _record(d)
    for layer in range(m.cfg.n_layers):
        w = ref.mlp_write_matrix(family, hf, layer)  # (d_model, d_mlp), post-norm gain in
        post = _get(x, "mlp_post_act", layer)
        scale = x.act("mlp_post_ln.scale", layer) if m.cfg.sandwich_norms else torch.ones(post.shape[0], 1)
        writes = _get(x, "mlp_write", layer)  # (T, d_mlp, d_model)
        torch.testing.assert_close(writes, post[:, :, None] * w.T[None] / scale[:, :, None], rtol=1e-4, atol=1e-6)
        torch.testing.assert_close(_get(x, "resid_delta_mlp_from_mlp_post_act", layer), (post @ w.T) / scale, rtol=1e-4, atol=1e-5)
        # a neuron's write norm is its write vector's length, with the activation's sign
        torch.testing.assert_close(writes.norm(dim=-1) * post.sign(), _get(x, "mlp_write_norm", layer), rtol=1e-4, atol=1e-6)
        if not m.cfg.sandwich_norms:  # the layer's write is its neurons' plus the output bias
            bias = m.bias_write(layer, "mlp").float()
            torch.testing.assert_close(_get(x, "resid_delta_mlp_from_mlp_post_act", layer) + bias, _get(x, "resid_delta_mlp", layer), rtol=1e-4, atol=1e-4)


# -------------------------------------------------------------------------- attention


@covers("attn_write_norm", "flattened_attn_post_softmax", "attn_act_times_grad", "attn_write_to_final_residual_grad",
        "attn_write", "attn_write_sum_heads", "attn_weighted_value", "attn_write_norm_per_sequence_token",
        "attn_write_to_final_residual_grad_per_sequence_token", "attn_act_times_grad_per_sequence_token")
def test_attention_variants(setup: tuple[str, Debugger, Any]) -> None:
    family, d, hf = setup
    m = d.model
    cfg = m.cfg
    x = _record(d)
    n_tokens = len(x.rec.tokens)
    rows, cols = torch.tril_indices(n_tokens, n_tokens)
    group = cfg.n_heads // cfg.kv_heads
    g = x.direction_grad()
    for layer in range(cfg.n_layers):
        probs, v = _get(x, "attn_qk_probs", layer), _get(x, "attn_value", layer).repeat_interleave(group, dim=1)
        scale = x.act("attn_post_ln.scale", layer) if cfg.sandwich_norms else torch.ones(n_tokens, 1)
        w = torch.stack([ref.head_write_matrix(family, hf, layer, h, cfg.d_head) for h in range(cfg.n_heads)])  # (h, d, e)
        writes = probs[..., None] * torch.einsum("hde,khe->khd", w, v)[None] / scale[:, :, None, None]  # (q, k, h, d)
        torch.testing.assert_close(_get(x, "attn_write", layer), writes, rtol=1e-4, atol=1e-6)
        torch.testing.assert_close(_get(x, "attn_write_sum_heads", layer), writes.sum(2), rtol=1e-4, atol=1e-6)
        torch.testing.assert_close(_get(x, "attn_weighted_value", layer), probs[..., None] * v[None], rtol=1e-4, atol=1e-6)
        unflat = {
            "attn_write_norm": _get(x, "unflattened_attn_write_norm", layer),
            "flattened_attn_post_softmax": probs,
            "attn_act_times_grad": _get(x, "unflattened_attn_act_times_grad", layer),
            "attn_write_to_final_residual_grad": _get(x, "unflattened_attn_write_to_final_residual_grad", layer),
        }
        torch.testing.assert_close(unflat["attn_write_norm"], writes.norm(dim=-1), rtol=1e-4, atol=1e-6)
        for name, full in unflat.items():
            torch.testing.assert_close(_get(x, name, layer), full[rows, cols], rtol=1e-5, atol=1e-7)
        # per token: a head's write summed over the keys it reads
        per_token = writes.sum(1)  # (q, h, d)
        torch.testing.assert_close(_get(x, "attn_write_norm_per_sequence_token", layer), per_token.norm(dim=-1), rtol=1e-4, atol=1e-6)
        direct = torch.einsum("qhd,qd->qh", per_token, g)  # heads always precede the final stream
        torch.testing.assert_close(_get(x, "attn_write_to_final_residual_grad_per_sequence_token", layer), direct, rtol=1e-4, atol=1e-6)
        torch.testing.assert_close(
            _get(x, "attn_act_times_grad_per_sequence_token", layer), unflat["attn_act_times_grad"].sum(1), rtol=1e-5, atol=1e-7
        )
        if not cfg.sandwich_norms:  # the layer's write is its heads' plus the output bias
            bias = m.bias_write(layer, "attn").float()
            torch.testing.assert_close(writes.sum((1, 2)) + bias, _get(x, "resid_delta_attn", layer), rtol=1e-4, atol=1e-4)


def _attention_latent_context(d: Debugger, layer: int, latent: int, token: int | None) -> sc.Context:
    read = sc.ReadNode("attention_autoencoder_latent", layer, (token, latent))
    return sc.Context(sc.final_direction(d.n_layers), read)


@covers("attn_write_to_latent", "attn_write_to_latent_summed_over_heads", "flattened_attn_write_to_latent_summed_over_heads",
        "attn_write_to_latent_per_sequence_token", "flattened_attn_write_to_latent_summed_over_heads_batched",
        "attn_write_to_latent_per_sequence_token_batched", "autoencoder_latent_grad_wrt_residual_input")
def test_attention_writes_onto_a_latent(setup: tuple[str, Debugger, Any]) -> None:
    family, d, hf = setup
    m = d.model
    cfg = m.cfg
    layer = cfg.n_layers - 1
    plain = _record(d)
    latents = _get(plain, "online_attention_autoencoder_latent", layer)
    counts = (latents > 0).sum(0)
    partial = (counts > 0) & (counts < latents.shape[0])
    assert partial.any(), "some latent is on at some tokens only"
    latent = int(torch.where(partial, counts, -1).argmax())
    x = _record(d, _attention_latent_context(d, layer, latent, None))
    ae, _ = d.weights.autoencoder(sc.ATTN_LATENTS, layer)
    row = ae.encoder.weight[latent].float()
    on = (latents[:, latent] > 0).float()
    assert 0 < on.sum() < on.numel()
    # the latent's input gradient (summed over tokens): autograd through the autoencoder
    inputs = x.act("resid.delta_attn", layer).requires_grad_(True)
    (g_in,) = torch.autograd.grad(ae.encode(inputs)[:, latent].sum(), inputs)
    torch.testing.assert_close(_get(x, "autoencoder_latent_grad_wrt_residual_input", layer), g_in, rtol=1e-5, atol=1e-6)
    n_tokens = len(x.rec.tokens)
    group = cfg.n_heads // cfg.kv_heads
    probs, v = _get(x, "attn_qk_probs", layer), _get(x, "attn_value", layer).repeat_interleave(group, dim=1)
    scale = x.act("attn_post_ln.scale", layer) if cfg.sandwich_norms else torch.ones(n_tokens, 1)
    w = torch.stack([ref.head_write_matrix(family, hf, layer, h, cfg.d_head) for h in range(cfg.n_heads)])
    per_head = probs * torch.einsum("hde,khe,d->kh", w, v, row)[None] / scale[:, :, None] * on[:, None, None]
    torch.testing.assert_close(_get(x, "attn_write_to_latent", layer), per_head, rtol=1e-4, atol=1e-6)
    summed = per_head.sum(-1, keepdim=True)
    torch.testing.assert_close(_get(x, "attn_write_to_latent_summed_over_heads", layer), summed, rtol=1e-4, atol=1e-6)
    rows, cols = torch.tril_indices(n_tokens, n_tokens)
    torch.testing.assert_close(_get(x, "flattened_attn_write_to_latent_summed_over_heads", layer), summed[rows, cols], rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(_get(x, "attn_write_to_latent_per_sequence_token", layer), per_head.sum(1), rtol=1e-4, atol=1e-6)
    batched = _get(x, "flattened_attn_write_to_latent_summed_over_heads_batched", layer)
    assert batched.shape == (n_tokens * (n_tokens + 1) // 2, N_LATENTS)
    torch.testing.assert_close(batched[:, latent], summed[rows, cols, 0], rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(_get(x, "attn_write_to_latent_per_sequence_token_batched", layer)[:, :, latent], per_head.sum(1), rtol=1e-4, atol=1e-6)
    # where the latent is on, the pairs' shares and the rest (bias, pre-bias) make its pre-activation
    bias = m.bias_write(layer, "attn").float()[None] / scale
    pre = summed.sum((1, 2)) + (bias - ae.pre_bias.float()) @ row + ae.latent_bias[latent].float()
    torch.testing.assert_close((pre * on), latents[:, latent], rtol=1e-3, atol=1e-5)
    # the read node must be an attention latent of the layer's write
    wrong = sc.Context(sc.final_direction(d.n_layers), sc.ReadNode("mlp_neuron", layer, (0, 0)))
    assert sc.problem("attn_write_to_latent_summed_over_heads", d.weights, wrong) is not None


# ------------------------------------------------------------------------------- latents


@covers(*(f"{k.prefix}_write" for k in sc.LATENT_KINDS), *(k.offline for k in sc.LATENT_KINDS),
        *(f"{k.offline_prefix}_write_norm" for k in sc.LATENT_KINDS))
def test_latent_writes_and_offline_latents(setup: tuple[str, Debugger, Any]) -> None:
    family, d, hf = setup
    m = d.model
    x = _record(d)
    ablated = _record(d, ablations=(Ablation(Site(sc.MLP_LATENTS, 0), (3, 1), 5.0), Ablation(Site(sc.ATTN_LATENTS, 0), (3, 1), 5.0)))
    for layer in range(m.cfg.n_layers):
        for kind in sc.LATENT_KINDS:
            ae, reads = d.weights.autoencoder(kind.hook, layer)
            decoder = ae.write_directions().T.float()  # (n_inputs, n_latents)
            w = ref.mlp_write_matrix(family, hf, layer) @ decoder if reads == "mlp.post_act" else decoder
            scale = x.act("mlp_post_ln.scale", layer) if reads == "mlp.post_act" and m.cfg.sandwich_norms else torch.ones(len(x.rec.tokens), 1)
            lat = _get(x, f"{kind.prefix}_latent", layer)
            writes = _get(x, f"{kind.prefix}_write", layer)
            torch.testing.assert_close(writes, lat[:, :, None] * w.T[None] / scale[:, :, None], rtol=1e-4, atol=1e-6)
            torch.testing.assert_close(writes.norm(dim=-1) * lat.sign(), _get(x, f"{kind.prefix}_write_norm", layer), rtol=1e-4, atol=1e-6)
            # post hoc: the autoencoder on its recorded input, blind to ablations of its latents
            for rec in (x, ablated):
                offline = ae.encode(rec.act(reads, layer)).float()
                torch.testing.assert_close(_get(rec, kind.offline, layer), offline, rtol=1e-5, atol=1e-6)
                s = rec.act("mlp_post_ln.scale", layer) if reads == "mlp.post_act" and m.cfg.sandwich_norms else scale
                torch.testing.assert_close(
                    _get(rec, f"{kind.offline_prefix}_write_norm", layer), offline * w.norm(dim=0) / s, rtol=1e-4, atol=1e-6
                )
            if layer == 0 and kind.hook in (sc.MLP_LATENTS, sc.ATTN_LATENTS):  # the two ablated
                assert float(_get(ablated, f"{kind.prefix}_latent", 0)[3, 1]) == 5.0 != float(_get(ablated, kind.offline, 0)[3, 1])


@covers("online_autoencoder_latent", "online_autoencoder_write_norm", "online_autoencoder_act_times_grad",
        "online_autoencoder_write_to_final_residual_grad", "online_autoencoder_write_to_final_activation_residual_grad",
        "online_autoencoder_write", "autoencoder_latent", "autoencoder_write_norm")
def test_generic_latent_scalars_are_the_one_kind_loaded(setup: tuple[str, Debugger, Any]) -> None:
    family, d, _hf = setup
    generic = [n for n, st in sc.SCALARS.items() if st.alias is not None]
    assert len(generic) == 8
    for name in generic:  # both kinds are loaded: ambiguous, refused with a reason
        assert "exactly one" in (sc.problem(name, d.weights) or "")
    # a debugger over the same model with only the attention autoencoder attached
    m = d.model
    saved = m.attachments()
    for a in saved:
        if sc.ATTN_LATENTS not in a.latents:
            m.detach(a.latents)
    try:
        single = Debugger(m, d.tokenizer, family)
        node = sc.ReadNode("mlp_neuron", m.cfg.n_layers - 1, (5, 2))
        x = _record(single, sc.Context(sc.final_direction(single.n_layers), node))
        for name in generic:
            alias, _ = sc.resolve(name, single.weights)
            assert alias.startswith(("online_attention_autoencoder", "attention_autoencoder")), alias
            for layer in range(m.cfg.n_layers):
                torch.testing.assert_close(_get(x, name, layer), _get(x, alias, layer))
            assert sc.SCALARS[name].node_type == "autoencoder_latent"  # the seed's node type
    finally:
        m.detach_all()
        for a in saved:
            m.attach(a.coder, a.reads, a.latents, writes=a.writes)


@covers("online_mlp_autoencoder_error", "online_mlp_autoencoder_error_act_times_grad", "online_mlp_autoencoder_error_write_norm",
        "online_mlp_autoencoder_error_write_to_final_residual_grad", "online_residual_mlp_autoencoder_error",
        "online_residual_attention_autoencoder_error", "autoencoder_latent_grad_wrt_mlp_post_act_input")
def test_autoencoder_errors(setup: tuple[str, Debugger, Any]) -> None:
    family, d, hf = setup
    m = d.model
    n = m.cfg.n_layers
    mlp_reads = FAMILIES[family]
    on_post_act = mlp_reads == "mlp.post_act"
    assert (sc.problem("online_mlp_autoencoder_error", d.weights) is None) == on_post_act
    assert (sc.problem("online_residual_mlp_autoencoder_error", d.weights) is None) != on_post_act
    layer = n - 1
    node = sc.ReadNode("mlp_autoencoder_latent", layer, (None, 3))
    x = _record(d, sc.Context(sc.final_direction(n), node))
    record = {f"blocks.{i}.{r}" for i in range(n) for r in (mlp_reads, "resid.delta_attn")}
    p = _reference(d, record)
    grads = p.grads(_loss_of(d, p))
    g_final = x.direction_grad()
    for i in range(n):
        for kind, reads, name in ((sc.MLP_LATENTS, mlp_reads, "online_mlp_autoencoder_error" if on_post_act else "online_residual_mlp_autoencoder_error"),
                                  (sc.ATTN_LATENTS, "resid.delta_attn", "online_residual_attention_autoencoder_error")):
            ae, _ = d.weights.autoencoder(kind, i)
            inputs = p.act(f"blocks.{i}.{reads}")
            _, reconstruction = ae(inputs)
            error = inputs - reconstruction.float()
            torch.testing.assert_close(_get(x, name, i), error, rtol=1e-4, atol=1e-6)
            if name == "online_mlp_autoencoder_error":
                torch.testing.assert_close(_get(x, "online_mlp_autoencoder_error_act_times_grad", i), error * grads[f"blocks.{i}.mlp.post_act"], rtol=1e-4, atol=1e-7)
                w = ref.mlp_write_matrix(family, hf, i)
                scale = x.act("mlp_post_ln.scale", i) if m.cfg.sandwich_norms else torch.ones(error.shape[0], 1)
                torch.testing.assert_close(_get(x, "online_mlp_autoencoder_error_write_norm", i), error * w.norm(dim=0) / scale, rtol=1e-4, atol=1e-6)
                torch.testing.assert_close(
                    _get(x, "online_mlp_autoencoder_error_write_to_final_residual_grad", i), error * (g_final @ w) / scale, rtol=1e-4, atol=1e-6
                )
    ae, reads = d.weights.autoencoder(sc.MLP_LATENTS, layer)
    inputs = x.act(reads, layer).requires_grad_(True)
    (g_in,) = torch.autograd.grad(ae.encode(inputs)[:, 3].sum(), inputs)
    name = "autoencoder_latent_grad_wrt_mlp_post_act_input" if on_post_act else "autoencoder_latent_grad_wrt_residual_input"
    other = "autoencoder_latent_grad_wrt_residual_input" if on_post_act else "autoencoder_latent_grad_wrt_mlp_post_act_input"
    torch.testing.assert_close(_get(x, name, layer), g_in, rtol=1e-5, atol=1e-6)
    assert sc.problem(other, d.weights, x.ctx) is not None


# ------------------------------------------------------------- on a node's own gradient


@covers("mlp_write_to_final_activation_residual_grad", "unflattened_attn_write_to_final_activation_residual_grad",
        "resid_post_embedding_proj_to_final_activation_residual_grad",
        *(f"{k.prefix}_write_to_final_activation_residual_grad" for k in sc.LATENT_KINDS))
def test_direct_writes_onto_a_nodes_own_gradient(setup: tuple[str, Debugger, Any]) -> None:
    """The seed's *_to_final_activation_residual_grad: writes projected on the gradient of a
    node's traced quantity w.r.t. the residual stream it reads (its norm's scale held),
    reconstituted from the forward pass without a backward pass from that node."""
    family, d, hf = setup
    m = d.model
    cfg = m.cfg
    layer, token, neuron = cfg.n_layers - 1, 9, 5
    node = sc.ReadNode("mlp_neuron", layer, (token, neuron))
    x = _record(d, sc.Context(sc.final_direction(cfg.n_layers), node))
    before = _before(m, "mlp", layer)
    p = _reference(d, {before, f"blocks.{layer}.{m.mlp_traced_location}"}, detach={f"blocks.{layer}.mlp_ln.scale"})
    r = p.grads(p.acts[f"blocks.{layer}.{m.mlp_traced_location}"][0, token, neuron].float())[before].float()
    where = (layer, 1 if cfg.parallel else 3)  # the point of the stream the neuron reads

    def precedes(i: int, location: int) -> float:
        return float(i < where[0] or (i == where[0] and location < where[1]))

    torch.testing.assert_close(_get(x, "resid_post_embedding_proj_to_final_activation_residual_grad"),
                               (x.act("resid.post_emb") * r).sum(-1, keepdim=True), rtol=1e-4, atol=1e-6)
    group = cfg.n_heads // cfg.kv_heads
    for i in range(cfg.n_layers):
        post = _get(x, "mlp_post_act", i)
        w = ref.mlp_write_matrix(family, hf, i)
        mlp_scale = x.act("mlp_post_ln.scale", i) if cfg.sandwich_norms else torch.ones(post.shape[0], 1)
        torch.testing.assert_close(_get(x, "mlp_write_to_final_activation_residual_grad", i),
                                   post * (r @ w) / mlp_scale * precedes(i, 4), rtol=1e-4, atol=1e-6)
        probs, v = _get(x, "attn_qk_probs", i), _get(x, "attn_value", i).repeat_interleave(group, dim=1)
        attn_scale = x.act("attn_post_ln.scale", i) if cfg.sandwich_norms else torch.ones(post.shape[0], 1)
        heads = torch.stack([ref.head_write_matrix(family, hf, i, h, cfg.d_head) for h in range(cfg.n_heads)])
        onto = probs * torch.einsum("hde,khe,qd->qkh", heads, v, r) / attn_scale[:, :, None]
        torch.testing.assert_close(_get(x, "unflattened_attn_write_to_final_activation_residual_grad", i), onto * precedes(i, 2), rtol=1e-4, atol=1e-6)
        for kind in sc.LATENT_KINDS:
            ae, reads = d.weights.autoencoder(kind.hook, i)
            decoder = ae.write_directions().T.float()
            w_lat = w @ decoder if reads == "mlp.post_act" else decoder
            s = mlp_scale if reads == "mlp.post_act" else torch.ones_like(mlp_scale)
            location = {sc.ATTN_LATENTS: 2, sc.RESID_LATENTS: 5}.get(kind.hook, 4)  # resid: after the block
            torch.testing.assert_close(_get(x, f"{kind.prefix}_write_to_final_activation_residual_grad", i),
                                       _get(x, f"{kind.prefix}_latent", i) * (r @ w_lat) / s * precedes(i, location), rtol=1e-4, atol=1e-6)
    # without a node, a 400 names what is missing
    assert "activationIndexForWithinLayerGrad" in (sc.problem("mlp_write_to_final_activation_residual_grad", d.weights, sc.default_context(d.weights)) or "")


@covers("vocab_token_write_to_input_direction")
def test_vocab_reads_are_in_test_scored_tokens() -> None:
    """vocab_token_write_to_input_direction: every family, in test_scored_tokens.py."""


def test_backward_pass_values_are_the_gradients(setup: tuple[str, Debugger, Any]) -> None:
    _family, d, _hf = setup
    m = d.model
    x = _record(d)
    layer = m.cfg.n_layers - 1
    p = _reference(d, {f"blocks.{layer}.mlp.post_act", "resid.post_emb"})
    grads = p.grads(_loss_of(d, p))
    torch.testing.assert_close(sc.compute_backward("mlp_post_act", x.rec, x.w, layer), grads[f"blocks.{layer}.mlp.post_act"].float(), rtol=1e-4, atol=1e-7)
    spec = S.DerivedScalarsRequestSpec(dst=S.DerivedScalarType.MLP_WRITE_NORM, layer_index=layer, activation_index=0, pass_type=S.PassType.BACKWARD)
    sub = S.InferenceSubRequest(
        inference_request_spec=S.InferenceRequestSpec(prompt=PROMPT, loss_fn_config=S.LossFnConfig(name=S.LossFnName.LOGIT_DIFF, target_tokens=[TARGET], distractor_tokens=[DISTRACTOR])),
        processing_request_spec_by_name={"x": spec},
    )
    with pytest.raises(RequestError, match="no backward-pass value"):
        d.batched(S.BatchedRequest(inference_sub_requests=[sub]))


def test_every_scalar_is_checked() -> None:
    assert set(COVERED) == set(sc.SCALARS), sorted(set(sc.SCALARS) ^ set(COVERED))
