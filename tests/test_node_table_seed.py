"""Every value of the TDB node table (all four groups: write norm, act x grad, direct effect,
activation; every node kind: embeddings, neurons, heads, MLP and attention latents) equals the
seed's definition computed independently (`seed_reference`), signs included, for plain,
ablated and traced requests, on GPT-2, GPT-NeoX (parallel blocks), a Llama-style model
(grouped queries, gated MLP) and Gemma 2 (sandwich norms, soft-caps), with random autoencoders
on the MLP (its write, or its activations) and on the attention layer's write. Also the
response's `loss` and `activationValueForBackwardPass` (the traced node's value)."""

from __future__ import annotations

from typing import Any

import pytest
import seed_reference as ref
import torch
from conftest import random_family_model_with_autoencoders
from torch import Tensor

from neuron_explainer.activation_server import schemas as S
from neuron_explainer.activation_server.processing import Debugger
from neuron_explainer.debugger import scalars as sc
from neuron_explainer.models.loading import tokenizer_of

pytest.importorskip("transformers")

PROMPT = "When Mary and John went to the store, John gave a drink to"
TARGET, DISTRACTOR = " Mary", " John"
N_LATENTS = 24
# family -> what its MLP autoencoder reads
FAMILIES = {"gpt2": "resid.delta_mlp", "gpt_neox": "mlp.post_act", "llama": "mlp.post_act", "gemma2": "resid.delta_mlp"}
ATTN, MLP = 2, 4  # the seed's LocationWithinLayer of heads and neurons
G = S.GroupId


@pytest.fixture(scope="module", params=sorted(FAMILIES))
def setup(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Debugger, Any]:
    torch.set_num_threads(1)
    family = request.param
    model, hf = random_family_model_with_autoencoders(family, tmp_path_factory.mktemp(family), FAMILIES[family], N_LATENTS, seed=30)
    return family, Debugger(model, tokenizer_of(model), family, "ae-mlp", "ae-attn"), hf


# ------------------------------------------------------------------------------ requests


def _node(kind: str, indices: tuple[int | None, ...], layer: int | None) -> S.MirroredNodeIndex:
    return S.MirroredNodeIndex(node_type=S.NodeType(kind), tensor_indices=indices, layer_index=layer, pass_type=S.PassType.FORWARD)


def _spec(latents: bool = False, ablate: list[tuple[S.MirroredNodeIndex, float]] = (), trace: S.NodeToTrace | None = None,
          downstream: S.NodeToTrace | None = None) -> S.TdbRequestSpec:  # type: ignore[assignment]
    return S.TdbRequestSpec(
        prompt=PROMPT, target_tokens=[TARGET], distractor_tokens=[DISTRACTOR],
        component_type_for_mlp=S.ComponentTypeForMlp.AUTOENCODER_LATENT if latents else S.ComponentTypeForMlp.NEURON,
        component_type_for_attention=S.ComponentTypeForAttention.AUTOENCODER_LATENT if latents else S.ComponentTypeForAttention.ATTENTION_HEAD,
        top_and_bottom_k_for_node_table=12, hide_early_layers_when_ablating=False,
        node_ablations=[S.NodeAblation(node_index=n, value=v) for n, v in ablate],
        upstream_node_to_trace=trace, downstream_node_to_trace=downstream,
    )


def _requests(n_layers: int, n_heads: int) -> dict[str, S.TdbRequestSpec]:
    last, h = n_layers - 1, n_heads - 1
    neuron = _node("mlp_neuron", (9, 5), last)
    head = _node("attention_head", (10, 7, h), last)
    early_head = _node("attention_head", (10, 6, 1), 0)

    def trace(node: S.MirroredNodeIndex, through: str | None = None) -> S.NodeToTrace:
        return S.NodeToTrace(node_index=node, attention_trace_type=S.AttentionTraceType(through) if through else None)

    return {
        "plain": _spec(),
        "latents": _spec(latents=True),
        "ablated": _spec(ablate=[(_node("mlp_neuron", (8, 3), 0), 0.0), (_node("attention_head", (11, 4, 1), last), 0.0)]),
        "ablated latents": _spec(latents=True, ablate=[(_node("mlp_autoencoder_latent", (8, 2), 0), 1.5),
                                                        (_node("attention_autoencoder_latent", (11, 3), last), 0.0)]),
        "trace neuron": _spec(trace=trace(neuron)),
        "trace Q": _spec(trace=trace(head, "Q")),
        "trace K": _spec(trace=trace(head, "K")),
        "trace QK": _spec(trace=trace(head, "QK")),
        "trace V": _spec(trace=trace(early_head, "V")),
        "trace V onto a neuron": _spec(trace=trace(early_head, "V"), downstream=trace(neuron)),
        "trace MLP latent": _spec(latents=True, trace=trace(_node("mlp_autoencoder_latent", (9, 4), last))),
        "trace attention latent": _spec(latents=True, trace=trace(_node("attention_autoencoder_latent", (10, 6), last))),
    }


# ---------------------------------------------------------------------------- reference


class Reference:
    """The seed's definitions for one request, from plain hooks on our model and transformers'
    weights."""

    def __init__(self, family: str, d: Debugger, hf: Any, spec: S.TdbRequestSpec):
        self.family, self.d, self.hf, self.m = family, d, hf, d.model
        m = self.m
        cfg = m.cfg
        self.tokens = d.encode_prompt(PROMPT, "p")
        self.n_layers = cfg.n_layers
        record = {"resid.post_emb", self._final()}
        for layer in range(cfg.n_layers):
            p = f"blocks.{layer}."
            record |= {p + s for s in ("mlp.post_act", "attn.qk_probs", "attn.v", "mlp_autoencoder.latents", "attn_autoencoder.latents")}
            record |= {p + self._reads(k, layer) for k in ("mlp", "attn")}
            record |= {self._before("mlp", layer), self._before("attn", layer)}
            if cfg.sandwich_norms:
                record |= {p + "attn_post_ln.scale", p + "mlp_post_ln.scale"}
        detach = {"resid.ln_f.scale"}  # the seed's TDB backward pass holds the final norm's scale
        cut: set[str] = set()
        ablate: dict[str, Any] = {}
        for a in spec.node_ablations or []:
            name, fn = self._ablation(a)
            prev = ablate.get(name)
            ablate[name] = fn if prev is None else (lambda x, f=fn, g=prev: f(g(x)))
        self.trace = spec.upstream_node_to_trace
        self.downstream = spec.downstream_node_to_trace
        if self.trace is not None:
            detach |= self._held(self.trace.node_index)
            through = self.trace.attention_trace_type
            if through in (S.AttentionTraceType.Q, S.AttentionTraceType.K):
                other = "attn.k" if through == S.AttentionTraceType.Q else "attn.q"
                cut.add(f"blocks.{self.trace.node_index.layer_index}.{other}")
            if self.downstream is not None:
                detach |= self._held(self.downstream.node_index)
            record |= {f"blocks.{layer}.attn.qk_logits" for layer in range(cfg.n_layers)}
            record.add(f"blocks.{self.trace.node_index.layer_index}.{m.mlp_traced_location}")
            if self.downstream is not None:
                record.add(f"blocks.{self.downstream.node_index.layer_index}.{m.mlp_traced_location}")
        self.p = ref.Pass(m, self.tokens, record=record, ablate=ablate, detach=detach, cut=cut).run()
        assert self.p.logits is not None
        t, x = d.single_token(TARGET, "t"), d.single_token(DISTRACTOR, "d")
        self.loss = self.p.logits[0, -1, t].float() - self.p.logits[0, -1, x].float()
        self.traced: Tensor | None = None
        if self.trace is None:
            objective = self.loss
            self.direction = (self._final(), cfg.n_layers - 1, 5)
        else:
            objective = self.traced = self._traced(self.trace, self.downstream)
            node = self.trace.node_index
            self.direction = self._input_point(self._sublayer(node), node.layer_index)
        self.g = self.p.grads(objective)

    # -- the model's layout, from its config and the autoencoders' specs

    def _final(self) -> str:
        return f"blocks.{self.n_layers - 1}.resid.post_mlp"

    def _reads(self, kind: str, layer: int) -> str:
        return self.d.weights.reads(sc.MLP_LATENTS if kind == "mlp" else sc.ATTN_LATENTS, layer)

    def _before(self, sublayer: str, layer: int) -> str:
        if sublayer == "mlp" and not self.m.cfg.parallel:
            return f"blocks.{layer}.resid.post_attn"
        return "resid.post_emb" if layer == 0 else f"blocks.{layer - 1}.resid.post_mlp"

    def _input_point(self, sublayer: str, layer: int) -> tuple[str, int, int]:
        """The residual stream a sublayer reads, and where it is (the seed's locations)."""
        sequential_mlp = sublayer == "mlp" and not self.m.cfg.parallel
        return self._before(sublayer, layer), layer, 3 if sequential_mlp else 1

    def _sublayer(self, node: S.MirroredNodeIndex) -> str:
        kind = node.node_type.value
        if kind == "attention_head" or kind == "attention_autoencoder_latent":
            return "attn"
        return "mlp"

    def _held(self, node: S.MirroredNodeIndex) -> set[str]:
        sublayer, layer = self._sublayer(node), node.layer_index
        held = {f"blocks.{layer}.{sublayer}_ln.scale"}
        latent = node.node_type.value.endswith("autoencoder_latent")
        if latent and self.m.cfg.sandwich_norms and self._reads("mlp" if sublayer == "mlp" else "attn", layer).startswith("resid."):
            held.add(f"blocks.{layer}.{sublayer}_post_ln.scale")
        return held

    def _ablation(self, a: S.NodeAblation) -> tuple[str, Any]:
        n, v = a.node_index, a.value
        p = f"blocks.{n.layer_index}."
        t = n.tensor_indices

        def at(index: tuple[Any, ...]) -> Any:
            def fn(x: Tensor) -> Tensor:
                x = x.clone()
                x[index] = v
                return x
            return fn

        if n.node_type == S.NodeType.ATTENTION_HEAD:  # the seed's: the query's attention to every key
            return p + "attn.qk_probs", at((0, t[2], t[0], slice(None)))
        hook = {"mlp_neuron": "mlp.post_act", "mlp_autoencoder_latent": "mlp_autoencoder.latents",
                "attention_autoencoder_latent": "attn_autoencoder.latents"}[n.node_type.value]
        return p + hook, at((0, t[0], t[1]))

    # -- traced quantities

    def _quantity(self, t: S.NodeToTrace) -> Tensor:
        node, layer = t.node_index, t.node_index.layer_index
        idx = node.tensor_indices
        p = f"blocks.{layer}."
        kind = node.node_type.value
        if kind == "mlp_neuron":
            return self.p.acts[p + self.m.mlp_traced_location][0, idx[0], idx[1]].float()
        if kind == "attention_head":
            return self.p.acts[p + "attn.qk_logits"][0, idx[2], idx[0], idx[1]].float()
        which = "mlp" if kind == "mlp_autoencoder_latent" else "attn"
        ae, reads = self.d.weights.autoencoder(sc.MLP_LATENTS if which == "mlp" else sc.ATTN_LATENTS, layer)
        return ((self.p.acts[p + reads][0, idx[0]] - ae.pre_bias) @ ae.encoder.weight[idx[1]] + ae.latent_bias[idx[1]]).float()

    def _traced(self, up: S.NodeToTrace, down: S.NodeToTrace | None) -> Tensor:
        if up.attention_trace_type != S.AttentionTraceType.V:
            return self._quantity(up)
        q, k, h = up.node_index.tensor_indices
        layer = up.node_index.layer_index
        if down is None:
            target, onto = self.loss, self._final()
        else:
            target = self._quantity(down)
            onto = self._input_point(self._sublayer(down.node_index), down.node_index.layer_index)[0]
        (g,) = torch.autograd.grad(target, self.p.acts[onto], retain_graph=True)
        p = f"blocks.{layer}."
        v = self.p.acts[p + "attn.v"][0, k, h // (self.m.cfg.n_heads // self.m.cfg.kv_heads)]
        write = self.p.acts[p + "attn.qk_probs"][0, h, q, k].detach() * (self._head_w(layer, h) @ v.float())
        if self.m.cfg.sandwich_norms:
            write = write / self.p.acts[p + "attn_post_ln.scale"][0, q].detach()
        return write @ g[0, q].detach().float()

    # -- the table's values

    def _head_w(self, layer: int, h: int) -> Tensor:
        return ref.head_write_matrix(self.family, self.hf, layer, h, self.m.cfg.d_head)

    def _precedes(self, layer: int | None, location: int) -> float:
        _, d_layer, d_location = self.direction
        if layer is None:
            return 1.0
        return float(layer < d_layer or (layer == d_layer and location < d_location))

    def value(self, group: S.GroupId, node: S.MirroredNodeIndex) -> float:
        kind, layer, idx = node.node_type.value, node.layer_index, node.tensor_indices
        p = f"blocks.{layer}."
        g_dir = self.g[self.direction[0]].float()
        if kind == "layer":
            e = self.p.act("resid.post_emb")[idx[0]]
            return {G.WRITE_NORM: e.norm(), G.ACT_TIMES_GRAD: e @ self.g["resid.post_emb"][idx[0]].float(),
                    G.DIRECTION_WRITE: e @ g_dir[idx[0]], G.ACTIVATION: torch.tensor(1.0)}[group].item()
        if kind == "attention_head":
            q, k, h = idx
            prob = self.p.act(p + "attn.qk_probs")[h, q, k]
            v = self.p.act(p + "attn.v")[k, h // (self.m.cfg.n_heads // self.m.cfg.kv_heads)]
            write = prob * (self._head_w(layer, h) @ v)
            if self.m.cfg.sandwich_norms:
                write = write / self.p.act(p + "attn_post_ln.scale")[q]
            values = {G.WRITE_NORM: write.norm(), G.ACT_TIMES_GRAD: prob * self.g[p + "attn.qk_probs"][h, q, k],
                      G.DIRECTION_WRITE: (write @ g_dir[q]) * self._precedes(layer, ATTN), G.ACTIVATION: prob}
            return float(values[group])
        t, n = idx
        scale = torch.tensor(1.0)
        if kind == "mlp_neuron":
            a, grad = self.p.act(p + "mlp.post_act")[t, n], self.g[p + "mlp.post_act"][t, n]
            w = ref.mlp_write_matrix(self.family, self.hf, layer)[:, n]
            location, through_mlp = MLP, True
        else:
            which = "mlp" if kind == "mlp_autoencoder_latent" else "attn"
            hook = p + ("mlp_autoencoder.latents" if which == "mlp" else "attn_autoencoder.latents")
            a, grad = self.p.act(hook)[t, n], self.g[hook][t, n]
            ae, reads = self.d.weights.autoencoder(sc.MLP_LATENTS if which == "mlp" else sc.ATTN_LATENTS, layer)
            decoder = ae.decoder.weight[:, n].float()
            through_mlp = reads == "mlp.post_act"
            w = ref.mlp_write_matrix(self.family, self.hf, layer) @ decoder if through_mlp else decoder
            location = MLP if which == "mlp" else ATTN
        if through_mlp and self.m.cfg.sandwich_norms:
            scale = self.p.act(p + "mlp_post_ln.scale")[t, 0]
        values = {G.WRITE_NORM: a * w.norm() / scale, G.ACT_TIMES_GRAD: a * grad,
                  G.DIRECTION_WRITE: a * (w @ g_dir[t]) / scale * self._precedes(layer, location), G.ACTIVATION: a}
        return float(values[group])


@pytest.mark.parametrize("name", list(_requests(3, 4)))
def test_every_node_table_value_is_the_seeds(setup: tuple[str, Debugger, Any], name: str) -> None:
    family, d, hf = setup
    spec = _requests(d.n_layers, d.model.cfg.n_heads)[name]
    sub = d.batched_tdb(S.BatchedTdbRequest(sub_requests=[spec])).inference_sub_responses[0]
    table = sub.processing_response_data_by_name["topKComponents"]
    expected = Reference(family, d, hf, spec)
    kinds = {n.node_type.value for n in table.node_indices}
    assert "layer" in kinds or name.startswith("trace")
    compared = 0
    for group, values in table.activations_by_group_id.items():
        for node, got in zip(table.node_indices, values, strict=True):
            want = expected.value(group, node)
            assert got == pytest.approx(want, rel=1e-3, abs=1e-5), (group.value, node)
            compared += 1
    assert compared == 4 * len(table.node_indices) and compared > 40
    info = sub.inference_response.inference_and_token_data
    if expected.traced is None:
        assert info.activation_value_for_backward_pass is None
        assert info.loss == pytest.approx(expected.loss.item(), rel=1e-4, abs=1e-5)
    else:
        assert info.activation_value_for_backward_pass == pytest.approx(expected.traced.item(), rel=1e-3, abs=1e-5)
        through_v_on_loss = name == "trace V"
        assert (info.loss is None) != through_v_on_loss  # the seed: a trace replaces the loss but through V alone
    # beyond the table's nodes: the most negative activations (signs) and random nodes of
    # every kind in the request's table, through the same scalar functions
    rec, groups = _recording(d, spec)
    for node in _more_nodes(d, rec, kinds):
        for group, dsts in groups.items():
            got = d._value_at(dsts, node, rec)
            assert got == pytest.approx(expected.value(group, node), rel=1e-3, abs=1e-5), (group.value, node)
    # the direct effects are not all zero: they are measured on what the node reads (before
    # layer 0, only the embeddings can write to it)
    direct = table.activations_by_group_id[G.DIRECTION_WRITE]
    if expected.direction[1] > 0:
        assert any(abs(v) > 1e-6 for v in direct)


def _recording(d: Debugger, spec: S.TdbRequestSpec) -> tuple[Any, dict[S.GroupId, list[S.DerivedScalarType]]]:
    """The request's pass as `Debugger.batched` runs it, to read any node's values."""
    from neuron_explainer.debugger.inference import run

    sub = d.tdb_to_sub_request(spec, "s")
    parsed = d._parse(sub, "s")
    step = sub.processing_request_spec_by_name["topKComponents"]
    names = sorted({dst.value for dsts in step.dst_list_by_group_id.values() for dst in dsts})
    acts, grads = sc.sites_needed(names, d.weights, [parsed.context])
    (rec,) = run(d.model, [parsed.request], sorted(acts, key=repr), sorted(grads, key=repr))
    rec.context = parsed.context
    return rec, dict(step.dst_list_by_group_id)


def _more_nodes(d: Debugger, rec: Any, kinds: set[str]) -> list[S.MirroredNodeIndex]:
    gen = torch.Generator().manual_seed(0)
    n_tokens, cfg = len(rec.tokens), d.model.cfg
    out = []
    for layer in range(cfg.n_layers):
        if "mlp_neuron" in kinds:
            post = sc.compute("mlp_post_act", rec, d.weights, layer)
            t, n = divmod(int(post.argmin()), post.shape[1])
            out.append(_node("mlp_neuron", (t, n), layer))
            out.append(_node("mlp_neuron", (int(torch.randint(n_tokens, (1,), generator=gen)), int(torch.randint(cfg.d_mlp, (1,), generator=gen))), layer))
        if "attention_head" in kinds:
            q = int(torch.randint(1, n_tokens, (1,), generator=gen))
            k = int(torch.randint(q + 1, (1,), generator=gen))
            out.append(_node("attention_head", (q, k, int(torch.randint(cfg.n_heads, (1,), generator=gen))), layer))
        for kind, hook in (("mlp_autoencoder_latent", sc.MLP_LATENTS), ("attention_autoencoder_latent", sc.ATTN_LATENTS)):
            if kind in kinds:
                latents = sc.compute(sc.BY_HOOK[hook].prefix + "_latent", rec, d.weights, layer)
                t, n = divmod(int(latents.argmax()), latents.shape[1])
                out.append(_node(kind, (t, n), layer))
    out.append(_node("layer", (int(torch.randint(n_tokens, (1,), generator=gen)), 0), None))
    return out
