"""Attribution graphs are exact on the replacement model, on every family.

The reference here is independent of the graph code: the replacement model is rebuilt by
*substituting* this prompt's attention patterns and norm divisors (cached from a clean run)
rather than detaching them, every MLP write is replaced by an explicit function of
per-node coefficients (alpha_j for feature j's decoder row, beta for each error vector, gamma
for each token embedding), and one scalar backward pass per target node gives the derivative
of its input with respect to each coefficient. Then:

- every edge weight equals that derivative times the source's activation;
- each node's incoming edges plus its bias (the same function with every coefficient at 0)
  add up to its input (completeness);
- the reference with every coefficient at its value reproduces the real model (the error
  terms keep it exact).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from graph_helpers import random_cross_layer_transcoder, random_model, random_transcoders
from torch import Tensor

from neuron_explainer.debugger.graph import (
    AttributionGraph,
    CrossLayerTranscoder,
    LogitDifference,
    Logits,
    TopLogits,
    Transcoders,
    attribute,
    conventions_for,
    graph_schema,
    node_ids,
    prune,
    read_graph_file,
    to_graph_file,
    write_graph_file,
)
from neuron_explainer.debugger.graph.pruning import edge_scores, threshold_for
from neuron_explainer.models.saes import SparseCoder
from neuron_explainer.models.transformer import Transformer, hook_name

FAMILIES = ["gpt2", "gpt_neox", "gpt_neox_sequential", "llama", "llama_tied", "qwen2", "qwen3", "mistral", "gemma2"]
TOKENS = [0, 17, 42, 99, 5, 63, 120, 8, 77, 31]


@dataclass
class Reference:
    """The replacement model as an explicit function of the node coefficients."""

    fn: Callable[[Tensor, Tensor, Tensor], Tensor]  # (alpha, beta, gamma) -> target inputs
    alpha: Tensor  # (F,) the features' activations
    n_layers: int
    n_pos: int


class _Decoders:
    """The decoder rows, biases and skip terms of either kind of transcoders, read directly."""

    def __init__(self, transcoders: Transcoders):
        self.t = transcoders

    def row(self, source: int, layer: int) -> Tensor | None:  # (n_latents, d) written to `layer`
        if isinstance(self.t, CrossLayerTranscoder):
            return self.t.W_dec[source][:, layer - source] if source <= layer else None
        return self.t[layer].W_dec if source == layer else None

    def bias(self, layer: int) -> Tensor:
        return self.t.b_dec[layer] if isinstance(self.t, CrossLayerTranscoder) else self.t[layer].b_dec

    def skip(self, layer: int, x: Tensor) -> Tensor | None:
        if isinstance(self.t, CrossLayerTranscoder):
            return x @ self.t.W_skip[layer] if self.t.W_skip is not None else None
        tc = self.t[layer]
        return x @ tc.W_skip.T if tc.has_skip else None

    def reads(self, layer: int) -> str:
        r = self.t.reads[layer] if isinstance(self.t, CrossLayerTranscoder) else self.t[layer].reads
        assert r is not None
        return r

    def writes(self, layer: int) -> str:
        w = self.t.writes[layer] if isinstance(self.t, CrossLayerTranscoder) else self.t[layer].writes
        assert w is not None
        return w

    def latents(self, layer: int, x: Tensor) -> Tensor:
        return self.t.encode(layer, x) if isinstance(self.t, CrossLayerTranscoder) else self.t[layer].encode(x)

    def pre(self, layer: int, x: Tensor) -> Tensor:
        if isinstance(self.t, CrossLayerTranscoder):
            return self.t.pre_activations(layer, x)
        return self.t[layer].encode_pre_act(x)


def reference(model: Transformer, transcoders: Transcoders, graph: AttributionGraph) -> Reference:
    tokens = torch.tensor([graph.tokens])
    n, T = model.cfg.n_layers, len(graph.tokens)
    dec = _Decoders(transcoders)
    frozen_names = [hook_name("attn.qk_probs", layer) for layer in range(n)] + ["resid.ln_f.scale"]
    frozen_names += [hook_name(loc, layer) for layer in range(n) for loc in model.block_locations() if loc.endswith(".scale")]
    reads, writes = [dec.reads(i) for i in range(n)], [dec.writes(i) for i in range(n)]
    _, clean = model.run_with_cache(tokens, [*frozen_names, *reads, *writes])
    # everything about the transcoders at this prompt, from the clean run
    latents = [dec.latents(i, clean[reads[i]][0]) for i in range(n)]

    def reconstruction(layer: int, coefficients: list[Tensor], x: Tensor) -> Tensor:
        out = dec.bias(layer).expand(T, -1)
        for source in range(n):
            rows = dec.row(source, layer)
            if rows is not None:
                out = out + (latents[source] * coefficients[source]) @ rows
        skip = dec.skip(layer, x)
        return out if skip is None else out + skip

    ones = [torch.ones_like(a) for a in latents]
    errors = [clean[writes[i]][0] - reconstruction(i, ones, clean[reads[i]][0]) for i in range(n)]
    token_vectors = model.token_embeddings()[tokens[0]]
    features = graph.features.tolist()
    assert len(features) == graph.n_active, "the reference covers uncapped graphs"
    node_of = {(layer, pos, idx): j for j, (layer, pos, idx) in enumerate(features)}

    def fn(alpha: Tensor, beta: Tensor, gamma: Tensor) -> Tensor:
        x_in: dict[int, Tensor] = {}
        finals: dict[str, Tensor] = {}
        # every latent of the clean run: a node's scaled by its coefficient, the rest (position
        # 0's, when excluded) constants
        coefficients = []
        for layer in range(n):
            coeff = torch.ones_like(latents[layer])
            for (pos, idx) in latents[layer].nonzero().tolist():
                j = node_of.get((layer, pos, idx))
                if j is not None:
                    coeff = coeff.index_put((torch.tensor(pos), torch.tensor(idx)), alpha[j] / latents[layer][pos, idx])
            coefficients.append(coeff)

        def substitute(name: str) -> Callable[[Tensor], Tensor]:
            return lambda x: clean[name].clone()

        def embed(x: Tensor) -> Tensor:
            return x - token_vectors + gamma[:, None] * token_vectors

        def read(layer: int) -> Callable[[Tensor], None]:
            def f(x: Tensor) -> None:
                x_in[layer] = x

            return f

        def write(layer: int) -> Callable[[Tensor], Tensor]:
            def f(x: Tensor) -> Tensor:
                err_coeff = beta[layer]
                if graph.settings.exclude_first_position:
                    err_coeff = torch.cat([torch.ones(1), err_coeff[1:]])
                return (reconstruction(layer, coefficients, x_in[layer][0]) + err_coeff[:, None] * errors[layer])[None]

            return f

        def final(x: Tensor) -> None:
            finals["ln_f"] = x

        fwd: dict[str, list[Callable[[Tensor], Tensor | None]]] = {"resid.post_emb": [embed]}
        for name in frozen_names:
            fwd.setdefault(name, []).append(substitute(name))
        for layer in range(n):
            fwd.setdefault(reads[layer], []).append(read(layer))
            fwd.setdefault(writes[layer], []).append(write(layer))
        fwd["resid.post_ln_f"] = [final]
        with torch.enable_grad(), model.hooks(fwd=fwd):
            model(tokens)
        pre = [dec.pre(layer, x_in[layer][0]) for layer in range(n)]
        feature_inputs = torch.stack([pre[layer][pos, idx] for layer, pos, idx in features]) if features else torch.zeros(0)
        raw_logits = finals["ln_f"][0, -1] @ model.unembed.weight.T  # before any soft-cap
        logit_inputs = torch.stack([node.direction @ raw_logits for node in graph.logit_nodes])
        return torch.cat([feature_inputs, logit_inputs])

    return Reference(fn, graph.activations.clone(), n, T)


def check_exact(model: Transformer, transcoders: Transcoders, graph: AttributionGraph, max_targets: int = 40) -> None:
    ref = reference(model, transcoders, graph)
    F, T, n = graph.n_features, graph.n_pos, graph.n_layers
    alpha = ref.alpha.clone().requires_grad_(True)
    beta = torch.ones(n, T, requires_grad=True)
    gamma = torch.ones(T, requires_grad=True)
    inputs = ref.fn(alpha, beta, gamma)
    # the reference is the real model: its targets are the graph's, computed independently
    torch.testing.assert_close(inputs[:F].detach(), graph.pre_activations, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(
        inputs[F:].detach(), torch.tensor([node.value for node in graph.logit_nodes]), atol=1e-4, rtol=1e-4
    )
    targets = list(range(F + graph.n_logits))
    if len(targets) > max_targets:  # the logits and an even spread of features
        step = F / (max_targets - graph.n_logits)
        targets = [int(i * step) for i in range(max_targets - graph.n_logits)] + list(range(F, F + graph.n_logits))
    rows = []
    for t in targets:
        ga, gb, gc = torch.autograd.grad(inputs[t], [alpha, beta, gamma], retain_graph=True, allow_unused=True, materialize_grads=True)
        rows.append(torch.cat([ga * ref.alpha, gb.flatten(), gc]))
    expected = torch.stack(rows)
    node_rows = [t if t < F else graph.logit_index(t - F) for t in targets]
    got = graph.adjacency[node_rows][:, : F + (n + 1) * T]
    scale = expected.abs().max()
    assert scale > 0
    torch.testing.assert_close(got, expected, atol=1e-5 * float(scale) + 1e-6, rtol=1e-4)
    assert not graph.adjacency[:, F + (n + 1) * T :].any(), "nothing reads a logit"
    assert not graph.adjacency[F : F + (n + 1) * T].any(), "errors and tokens read nothing"
    # completeness: incoming edges + bias = the node's input
    with torch.no_grad():
        bias = ref.fn(torch.zeros(F), torch.zeros(n, T), torch.zeros(T))
    row_sums = graph.adjacency[node_rows].sum(1)
    actual = inputs.detach()[targets]
    torch.testing.assert_close(row_sums + bias[targets], actual, atol=1e-4 * float(actual.abs().max()) + 1e-5, rtol=1e-4)


@pytest.mark.parametrize("family", FAMILIES)
def test_edges_are_derivatives_and_complete(family: str) -> None:
    model = random_model(family)
    transcoders = random_transcoders(model, seed=1)
    for tc in transcoders:
        tc.place(conventions_for(model))
    graph = attribute(model, transcoders, TOKENS, batch_size=7, max_feature_nodes=None)
    assert graph.n_features > 20 and graph.n_features == graph.n_active
    assert graph.n_backward_passes == -(-graph.n_features // 7) - (-graph.n_logits // 7)  # ceil divisions
    check_exact(model, transcoders, graph)


@pytest.mark.parametrize(
    ("activation", "skip", "center"), [("jumprelu", False, False), ("topk", True, True), ("relu", False, True)]
)
def test_other_transcoders(activation: str, skip: bool, center: bool) -> None:
    model = random_model("llama")
    transcoders = random_transcoders(model, activation=activation, skip=skip, center_input=center, seed=2)  # type: ignore[arg-type]
    graph = attribute(model, transcoders, TOKENS, max_feature_nodes=None, exclude_first_position=False)
    assert graph.features[:, 1].min() == 0  # position 0 is a node when not excluded
    check_exact(model, transcoders, graph)


@pytest.mark.parametrize(
    "target", [Logits((3, 40)), LogitDifference((5,), (9,)), LogitDifference((5, 6)), TopLogits(3, 0.5)]
)
def test_targets(target: object) -> None:
    model = random_model("gemma2")
    transcoders = random_transcoders(model, seed=3)
    graph = attribute(model, transcoders, TOKENS[:7], target, max_feature_nodes=None)  # type: ignore[arg-type]
    check_exact(model, transcoders, graph)
    if isinstance(target, LogitDifference):
        assert graph.n_logits == 1 and graph.logit_nodes[0].vocab_index == model.cfg.n_vocab
    if isinstance(target, TopLogits):
        probs = [node.probability for node in graph.logit_nodes]
        assert 1 <= len(probs) <= 3 and probs == sorted(probs, reverse=True)  # type: ignore[type-var]


@pytest.mark.parametrize(("family", "jumprelu", "skip"), [("gpt2", False, False), ("llama", True, True), ("gemma2", True, False)])
def test_cross_layer_transcoders(family: str, jumprelu: bool, skip: bool) -> None:
    """Latents that write to every later layer: edges to a feature sum over all the layers it
    writes to."""
    model = random_model(family)
    clt = random_cross_layer_transcoder(model, jumprelu=jumprelu, skip=skip, seed=8)
    graph = attribute(model, clt, TOKENS, max_feature_nodes=None, batch_size=11)
    assert graph.n_features > 10
    check_exact(model, clt, graph)


def test_capped_graph_is_the_uncapped_one_restricted() -> None:
    """With max_feature_nodes, the graph keeps the most influential features; its edges are the
    same numbers as the full graph's."""
    model = random_model("gpt2")
    transcoders = random_transcoders(model, seed=4)
    full = attribute(model, transcoders, TOKENS, max_feature_nodes=None, batch_size=16)
    capped = attribute(model, transcoders, TOKENS, max_feature_nodes=30, batch_size=8, update_interval=1)
    assert capped.n_features == 30 and capped.n_active == full.n_features
    keep = [full.feature_index(*f) for f in capped.features.tolist()]
    assert None not in keep
    n_rest = full.n_nodes - full.n_features
    full_index = torch.tensor([*keep, *range(full.n_features, full.n_nodes)])  # type: ignore[misc]
    torch.testing.assert_close(capped.adjacency, full.adjacency[full_index][:, full_index], atol=1e-6, rtol=1e-5)
    assert capped.n_nodes == 30 + n_rest


def test_pruning_keeps_the_declared_fractions() -> None:
    model = random_model("llama")
    transcoders = random_transcoders(model, seed=5)
    graph = attribute(model, transcoders, TOKENS, max_feature_nodes=None)
    A, w = graph.adjacency.double(), graph.logit_weights.double()
    # influence by matrix inversion: w (N + N^2 + ...) = w ((I - N)^-1 - I), N the row-normalized |A|
    normalized = A.abs() / A.abs().sum(1, keepdim=True).clamp(min=1e-10)
    eye = torch.eye(len(A), dtype=A.dtype)
    expected = w @ (torch.linalg.inv(eye - normalized) - eye)
    kept_always = graph.n_pos + graph.n_logits
    for node_threshold, edge_threshold in [(0.8, 0.98), (0.5, 0.9), (1.0, 1.0)]:
        pruned = prune(graph.adjacency, graph.logit_weights, graph.n_features, kept_always, node_threshold, edge_threshold)
        torch.testing.assert_close(pruned.influence.double(), expected, atol=1e-6, rtol=1e-4)
        # the node step: the fewest nodes carrying the declared fraction
        order = expected.argsort(descending=True)
        fraction = expected[order].cumsum(0) / expected.sum()
        n_needed = int((fraction < node_threshold - 1e-9).sum()) + 1
        ranked = order[:n_needed]
        assert expected[ranked].sum() >= (node_threshold - 1e-6) * expected.sum()
        assert expected[ranked[:-1]].sum() < node_threshold * expected.sum()
        chosen = torch.zeros(len(A), dtype=torch.bool)
        chosen[ranked] = True
        chosen[-kept_always:] = True  # tokens and logits, whatever their influence
        assert not (pruned.node_mask & ~chosen).any(), "only the most influential nodes are kept"
        assert pruned.node_mask[-kept_always:].all()
        # the edge step: the fewest edges carrying the declared fraction of the influence
        masked = graph.adjacency.clone()
        masked[~chosen] = 0
        masked[:, ~chosen] = 0
        scores = edge_scores(masked, graph.logit_weights)
        kept = scores >= threshold_for(scores, edge_threshold)
        assert scores[kept].sum() >= (edge_threshold - 1e-6) * scores.sum()
        assert not (pruned.edge_mask & ~kept).any()
        # what is left is connected: every kept feature or error feeds a kept edge
        sources = pruned.node_mask.clone()
        sources[-kept_always:] = False
        assert pruned.edge_mask[:, sources].any(0).all()
        assert (pruned.edge_mask.any(1) | ~pruned.node_mask)[: graph.n_features].all()
    assert int(pruned.node_mask[: graph.n_features].sum()) > 0


def test_refusals() -> None:
    model = random_model("gpt2")
    transcoders = random_transcoders(model)
    with pytest.raises(ValueError, match="one transcoder per layer"):
        attribute(model, transcoders[:1], TOKENS)
    wrong = random_transcoders(model)
    wrong[1].writes = "blocks.0.resid.delta_mlp"
    with pytest.raises(ValueError, match="not its layer's MLP output"):
        attribute(model, wrong, TOKENS)
    with pytest.raises(ValueError, match="no tokens"):
        attribute(model, transcoders, [])
    with pytest.raises(ValueError, match="not in the vocabulary"):
        attribute(model, transcoders, TOKENS, Logits((10**7,)))
    from neuron_explainer.debugger.graph import GraphTooLarge

    with pytest.raises(GraphTooLarge, match="MiB"):
        attribute(model, transcoders, TOKENS, max_adjacency_bytes=1000)


def test_export_validates_and_round_trips(tmp_path: Path) -> None:
    import jsonschema

    model = random_model("gemma2")
    transcoders = random_transcoders(model, seed=6)
    graph = attribute(model, transcoders, TOKENS, LogitDifference((5,), (9,)), token_string=lambda t: f"<{t}>")
    pruned = graph.prune()
    strings = [f"<{t}>" for t in TOKENS]
    first_feature = f"{int(graph.features[0, 0])}_{int(graph.features[0, 2])}_{int(graph.features[0, 1])}"
    doc = to_graph_file(graph, pruned, strings, prompt="".join(strings), slug="g", scan="random-gemma2",
                        labels={first_feature: "a label"}, info={"model": "random"})
    data = doc.to_json()
    jsonschema.validate(data, graph_schema())
    assert data["metadata"]["pruning_settings"] == {"node_threshold": 0.8, "edge_threshold": 0.98}
    assert data["metadata"]["info"]["n_layers"] == model.cfg.n_layers and data["metadata"]["info"]["model"] == "random"
    kinds = {n["feature_type"] for n in data["nodes"]}
    assert kinds >= {"cross layer transcoder", "embedding", "logit"}
    logit = next(n for n in data["nodes"] if n["feature_type"] == "logit")
    assert logit["feature"] == model.cfg.n_vocab and logit["is_target_logit"] and logit["clerp"] == "Output '<5>' − '<9>'"
    assert logit["node_id"] == f"{model.cfg.n_layers + 1}_{model.cfg.n_vocab}_{len(TOKENS) - 1}"
    features = [n for n in data["nodes"] if n["feature_type"] == "cross layer transcoder"]
    assert all(n["node_id"] == f"{n['layer']}_{n['latent_index']}_{n['ctx_idx']}" for n in features)
    assert all(0 < n["influence"] <= 1 and n["activation"] > 0 for n in features)
    if any(n["node_id"] == first_feature for n in features):
        assert next(n for n in features if n["node_id"] == first_feature)["clerp"] == "a label"
    tokens = [n for n in data["nodes"] if n["feature_type"] == "embedding"]
    assert [n["ctx_idx"] for n in tokens] == list(range(len(TOKENS))) and tokens[3]["token"] == strings[3]
    # each link's weight is the adjacency's entry
    index = {nid: i for i, nid in enumerate(node_ids(graph, strings))}
    for link in data["links"][:50]:
        assert link["weight"] == pytest.approx(float(graph.adjacency[index[link["target"]], index[link["source"]]]))
    assert len(data["links"]) == int(pruned.edge_mask.sum())
    write_graph_file(doc, tmp_path / "g.json")
    assert read_graph_file(tmp_path / "g.json").to_json() == data
    assert [p.name for p in tmp_path.iterdir()] == ["g.json"]  # no temporary file left


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("{", "not an attribution graph file"),
        ('{"metadata": {}, "qParams": {}, "nodes": [], "links": []}', "metadata.slug"),
        (
            '{"metadata": {"slug": "s", "scan": "x", "prompt_tokens": [], "prompt": ""}, "qParams": {}, "nodes": [], '
            '"links": [{"source": "a", "target": "b", "weight": 1}]}',
            "links\\[0\\] joins a node",
        ),
    ],
)
def test_bad_graph_files(tmp_path: Path, body: str, message: str) -> None:
    (tmp_path / "bad.json").write_text(body)
    with pytest.raises(ValueError, match=message):
        read_graph_file(tmp_path / "bad.json")
    with pytest.raises(ValueError, match="cannot read"):
        read_graph_file(tmp_path / "missing.json")


def test_sparse_coders_inside_the_forward_pass_change_nothing() -> None:
    """With SAEs attached where the graph hooks (the MLP's write, attention's write), outputs and
    gradients are the plain model's, so the graph is the same."""
    model = random_model("gpt2")
    transcoders = random_transcoders(model, seed=9)
    plain = attribute(model, transcoders, TOKENS, max_feature_nodes=None)
    gen = torch.Generator().manual_seed(0)
    d = model.cfg.d_model
    try:
        for i, at in enumerate(["blocks.0.resid.delta_mlp", "blocks.1.resid.delta_attn", "blocks.1.resid.post_mlp_ln"]):
            sae = SparseCoder(d, 32)
            sae.load_weights({"W_enc": torch.randn(d, 32, generator=gen) / d**0.5, "b_enc": torch.zeros(32),
                              "W_dec": torch.randn(32, d, generator=gen), "b_dec": torch.zeros(d)}, source="random")
            model.add_autoencoder(at, sae.requires_grad_(False), f"sae_{i}.latents")
        attached = attribute(model, transcoders, TOKENS, max_feature_nodes=None)
    finally:
        model.remove_autoencoders()
    assert torch.equal(attached.features, plain.features)
    torch.testing.assert_close(attached.adjacency, plain.adjacency, atol=1e-5, rtol=1e-4)
