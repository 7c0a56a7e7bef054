"""Our attribution graphs against circuit-tracer's own, on the same random GPT-2-shaped model
(transformers weights, loaded by us and by TransformerLens) and the same random transcoder set
(saved by circuit-tracer, loaded by both): same active features, same logit targets, same
adjacency, the same features chosen under a cap, the same pruning, and the same exported nodes
and links.

Deliberate differences (documented in debugger/graph/export.py): error node ids are
Neuronpedia's "{layer}_-1_{pos}" (circuit-tracer's "0_{layer}_{pos}" can collide with a layer-0
latent's id); logit nodes of a combination of tokens and our extra node fields.
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path
from typing import Any

import huggingface_hub.constants
import jsonschema
import pytest
import torch
import transformers
import yaml

from neuron_explainer.debugger.graph import (
    AttributionGraph,
    attribute,
    graph_schema,
    load_transcoders,
    read_graph_file,
    to_graph_file,
    write_graph_file,
)
from neuron_explainer.debugger.graph import CrossLayerTranscoder as OurCrossLayerTranscoder
from neuron_explainer.models.loading import from_transformers
from neuron_explainer.models.random_models import hf_model, make_tokenizer
from neuron_explainer.models.saes import load_transcoder_set

# circuit-tracer 0.5 imports a constant that huggingface_hub 1.x removed; nothing here uses it
if not hasattr(huggingface_hub.constants, "HF_HUB_ENABLE_HF_TRANSFER"):
    huggingface_hub.constants.HF_HUB_ENABLE_HF_TRANSFER = False  # type: ignore[attr-defined]

from circuit_tracer.attribution.attribute import attribute as ct_attribute
from circuit_tracer.frontend.graph_models import Metadata, Model, QParams
from circuit_tracer.graph import Graph, prune_graph
from circuit_tracer.replacement_model.replacement_model_transformerlens import (
    TransformerLensReplacementModel,
)
from circuit_tracer.transcoder.activation_functions import JumpReLU
from circuit_tracer.transcoder.cross_layer_transcoder import CrossLayerTranscoder
from circuit_tracer.transcoder.single_layer_transcoder import SingleLayerTranscoder, TranscoderSet
from circuit_tracer.utils.create_graph_files import create_nodes, create_used_nodes_and_edges
from transformer_lens import HookedTransformerConfig
from transformer_lens.pretrained.weight_conversions.gpt2 import convert_gpt2_weights

warnings.filterwarnings("ignore", module="transformer_lens")
VOCAB = 320
TOKENS = [0, 17, 42, 99, 5, 63, 120, 8, 77, 31, 250, 14]  # starts with <bos>: circuit-tracer adds none


def ct_transcoders(d_model: int, n_layers: int, *, jumprelu: bool, skip: bool, seed: int) -> TranscoderSet:
    gen = torch.Generator().manual_seed(seed)
    layers = {}
    for layer in range(n_layers):
        act = JumpReLU(torch.rand(48, generator=gen) * 0.3, 0.1) if jumprelu else torch.relu
        tc = SingleLayerTranscoder(d_model, 48, act, layer, skip_connection=skip, device=torch.device("cpu"), dtype=torch.float32)
        with torch.no_grad():
            for name, p in tc.named_parameters():
                if not name.startswith("activation_function"):
                    p.copy_(torch.randn(p.shape, generator=gen) / math.sqrt(d_model))
            tc.b_enc.sub_(0.3)
        layers[layer] = tc
    return TranscoderSet(layers, feature_input_hook="mlp.hook_in", feature_output_hook="mlp.hook_out", scan="random-set")


@pytest.fixture(scope="module", params=[(True, True), (False, False)], ids=["jumprelu-skip", "relu"])
def both(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Any:
    jumprelu, skip = request.param
    folder = tmp_path_factory.mktemp("set")
    hf = hf_model("gpt2", vocab_size=VOCAB)
    ours = from_transformers(hf).requires_grad_(False)
    cfg = ours.cfg
    tset = ct_transcoders(cfg.d_model, cfg.n_layers, jumprelu=jumprelu, skip=skip, seed=7)
    tset.to_safetensors(str(folder))
    config = {"model_kind": "transcoder_set", "feature_input_hook": "mlp.hook_in", "feature_output_hook": "mlp.hook_out", "scan": "random-set"}
    (folder / "config.yaml").write_text(yaml.safe_dump(config))
    our_set = load_transcoder_set(folder)

    tl = replacement_model(hf, ours, tset, folder)
    yield ours, our_set, tl
    tl.reset_hooks(including_permanent=True)


def replacement_model(hf: Any, ours: Any, transcoders: Any, folder: Path) -> Any:
    """circuit-tracer's TransformerLens replacement model of the transformers model `hf`."""
    cfg = ours.cfg
    tl_cfg = HookedTransformerConfig(
        n_layers=cfg.n_layers, d_model=cfg.d_model, n_ctx=cfg.ctx_window, d_head=cfg.d_head, n_heads=cfg.n_heads,
        d_mlp=cfg.d_mlp, d_vocab=VOCAB, act_fn="gelu_new", normalization_type="LN",
        original_architecture="GPT2LMHeadModel", default_prepend_bos=False, device="cpu",
    )
    tl = TransformerLensReplacementModel(tl_cfg)
    tl.load_and_process_state_dict(
        convert_gpt2_weights(hf, tl_cfg), fold_ln=False, center_writing_weights=False, center_unembed=False,
        fold_value_biases=False,
    )
    tl._configure_replacement_model(transcoders)
    tokenizer_file = make_tokenizer(folder / "tokenizer", vocab_size=VOCAB, bos=True)
    tl.tokenizer = transformers.PreTrainedTokenizerFast(
        tokenizer_file=str(tokenizer_file), bos_token="<bos>", eos_token="<eos>", pad_token="<pad>"
    )
    tokens = torch.tensor([TOKENS])
    torch.testing.assert_close(tl(tokens), ours(tokens), atol=1e-4, rtol=1e-4)  # one model to begin with
    return tl


def decode(tl: Any) -> Any:
    return lambda i: tl.tokenizer.decode(i)


def test_same_graph_as_circuit_tracer(both: Any) -> None:
    ours, our_set, tl = both
    ref = ct_attribute(torch.tensor(TOKENS), tl, batch_size=16, max_feature_nodes=None)
    graph = attribute(ours, our_set, TOKENS, batch_size=16, max_feature_nodes=None, token_string=decode(tl))
    assert graph.n_features > 50
    assert torch.equal(graph.features, ref.active_features)
    torch.testing.assert_close(graph.activations, ref.activation_values, atol=1e-5, rtol=1e-5)
    assert [n.vocab_index for n in graph.logit_nodes] == [t.vocab_idx for t in ref.logit_targets]
    assert [n.label for n in graph.logit_nodes] == [t.token_str for t in ref.logit_targets]
    torch.testing.assert_close(torch.tensor([n.weight for n in graph.logit_nodes]), ref.logit_probabilities, atol=1e-5, rtol=1e-5)
    assert graph.adjacency.shape == ref.adjacency_matrix.shape
    assert ref.adjacency_matrix.abs().max() > 1
    torch.testing.assert_close(graph.adjacency, ref.adjacency_matrix, atol=1e-4, rtol=1e-4)


def test_same_features_under_a_cap(both: Any) -> None:
    ours, our_set, tl = both
    ref = ct_attribute(torch.tensor(TOKENS), tl, batch_size=8, max_feature_nodes=30, update_interval=2)
    graph = attribute(ours, our_set, TOKENS, batch_size=8, max_feature_nodes=30, update_interval=2)
    assert graph.n_features == 30 < graph.n_active
    assert torch.equal(graph.features, ref.active_features[ref.selected_features])
    torch.testing.assert_close(graph.adjacency, ref.adjacency_matrix, atol=1e-4, rtol=1e-4)


def _ct_graph_of(graph: AttributionGraph, like: Graph) -> Graph:
    """circuit-tracer's Graph holding our adjacency (its pruning then runs on our numbers)."""
    return Graph(
        input_string=like.input_string, input_tokens=like.input_tokens, active_features=graph.features,
        adjacency_matrix=graph.adjacency, cfg=like.cfg, selected_features=torch.arange(graph.n_features),
        activation_values=graph.activations, logit_targets=like.logit_targets,
        logit_probabilities=like.logit_probabilities, scan=like.scan, vocab_size=like.vocab_size,
    )


@pytest.mark.parametrize(("node_threshold", "edge_threshold"), [(0.8, 0.98), (0.6, 0.9)])
def test_same_pruning_and_export_as_circuit_tracer(both: Any, node_threshold: float, edge_threshold: float, tmp_path: Path) -> None:
    ours, our_set, tl = both
    ref_graph = ct_attribute(torch.tensor(TOKENS), tl, batch_size=32, max_feature_nodes=None)
    graph = attribute(ours, our_set, TOKENS, batch_size=32, max_feature_nodes=None, token_string=decode(tl))
    ct_graph = _ct_graph_of(graph, ref_graph)
    node_mask, edge_mask, cumulative = prune_graph(ct_graph, node_threshold, edge_threshold)
    pruned = graph.prune(node_threshold, edge_threshold)
    assert torch.equal(pruned.node_mask, node_mask)
    kept = node_mask[:, None] & node_mask[None, :]
    assert torch.equal(pruned.edge_mask, edge_mask & kept)
    torch.testing.assert_close(pruned.cumulative, cumulative)

    # the exported nodes and links are circuit-tracer's create_graph_files' (error ids aside)
    ref_nodes = create_nodes(ct_graph, node_mask, tl.tokenizer, cumulative)
    ref_used, ref_links = create_used_nodes_and_edges(ct_graph, ref_nodes, edge_mask)
    prompt_tokens = [tl.tokenizer.decode(t) for t in TOKENS]
    doc = to_graph_file(graph, pruned, prompt_tokens, prompt="".join(prompt_tokens), slug="t", scan="random-set")

    def ct_id(node_id: str, feature_type: str) -> str:
        if feature_type != "mlp reconstruction error":
            return node_id
        layer, _, pos = node_id.split("_")
        return f"0_{layer}_{pos}"

    # (circuit-tracer's ids alone can collide: an error node "0_1_11" and layer 0's latent 1 at
    # position 11, as this very graph shows)
    ours_by_ct_id = {(ct_id(n.node_id, n.feature_type), n.feature_type): n for n in doc.nodes}
    assert len(ours_by_ct_id) == len(doc.nodes) == len({n.node_id for n in doc.nodes})
    assert set(ours_by_ct_id) == {(n.node_id, n.feature_type) for n in ref_used}
    for ref in ref_used:
        node = ours_by_ct_id[ref.node_id, ref.feature_type]
        for field in ("feature", "layer", "ctx_idx", "feature_type", "is_target_logit", "clerp"):
            assert getattr(node, field) == getattr(ref, field), (ref.node_id, field)
        assert node.token_prob == pytest.approx(ref.token_prob)
        assert (node.influence is None) == (ref.influence is None)
        if ref.influence is not None:
            assert node.influence == pytest.approx(float(ref.influence), abs=1e-6)
        assert (node.activation is None) == (ref.activation is None)
        if ref.activation is not None:
            assert node.activation == pytest.approx(ref.activation, abs=1e-5)
    ids = {n.node_id: ct_id(n.node_id, n.feature_type) for n in doc.nodes}
    links = [(ids[link.source], ids[link.target], link.weight) for link in doc.links]
    assert [(s, t) for s, t, _ in links] == [(e["source"], e["target"]) for e in ref_links]
    torch.testing.assert_close(torch.tensor([w for *_, w in links]), torch.tensor([e["weight"] for e in ref_links]))

    # both files validate against the published schema and read back
    schema = graph_schema()
    jsonschema.validate(doc.to_json(), schema)
    ref_file = Model(
        metadata=Metadata(slug="t", scan="random-set", transcoder_list=[], prompt_tokens=prompt_tokens, prompt="p", node_threshold=node_threshold),
        qParams=QParams(pinnedIds=[], supernodes=[], linkType="both", clickedId="", sg_pos=""),
        nodes=ref_used, links=ref_links,
    )
    (tmp_path / "ct.json").write_text(ref_file.model_dump_json())
    jsonschema.validate(ref_file.model_dump(mode="json"), schema)
    if len({n.node_id for n in ref_used}) == len(ref_used):
        back = read_graph_file(tmp_path / "ct.json")
        assert [n.node_id for n in back.nodes] == [n.node_id for n in ref_used]
    else:  # its colliding ids make links ambiguous: refused, with the reason
        with pytest.raises(ValueError, match="duplicate node ids"):
            read_graph_file(tmp_path / "ct.json")
    write_graph_file(doc, tmp_path / "ours.json")
    again = read_graph_file(tmp_path / "ours.json")
    assert again.to_json() == doc.to_json()


@pytest.mark.parametrize("jumprelu", [True, False])
def test_same_graph_with_a_cross_layer_transcoder(jumprelu: bool, tmp_path: Path) -> None:
    """circuit-tracer's own CrossLayerTranscoder, saved by it, loaded by us."""
    hf = hf_model("gpt2", vocab_size=VOCAB, n_layer=3)
    ours = from_transformers(hf).requires_grad_(False)
    n, d, width = ours.cfg.n_layers, ours.cfg.d_model, 40
    clt = CrossLayerTranscoder(
        n, width, d, activation_function="jump_relu" if jumprelu else "relu", lazy_decoder=False,
        feature_input_hook="mlp.hook_in", feature_output_hook="mlp.hook_out", scan="random-clt",
        device=torch.device("cpu"), dtype=torch.float32,
    )
    gen = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for name, p in clt.named_parameters():
            scale = 0.3 if "threshold" in name else 1 / math.sqrt(d)
            p.copy_((torch.rand if "threshold" in name else torch.randn)(p.shape, generator=gen) * scale)
        clt.b_enc.sub_(0.3)
    clt.to_safetensors(str(tmp_path / "clt"))
    config = {"model_kind": "cross_layer_transcoder", "feature_input_hook": "mlp.hook_in", "feature_output_hook": "mlp.hook_out", "scan": "random-clt"}
    (tmp_path / "clt" / "config.yaml").write_text(yaml.safe_dump(config))
    loaded = load_transcoders(tmp_path / "clt", ours)
    assert isinstance(loaded, OurCrossLayerTranscoder) and loaded.scan == "random-clt"
    tl = replacement_model(hf, ours, clt, tmp_path)
    try:
        ref = ct_attribute(torch.tensor(TOKENS), tl, batch_size=16, max_feature_nodes=None)
        graph = attribute(ours, loaded, TOKENS, batch_size=16, max_feature_nodes=None)
        assert graph.n_features > 30
        assert torch.equal(graph.features, ref.active_features)
        torch.testing.assert_close(graph.activations, ref.activation_values, atol=1e-5, rtol=1e-5)
        assert ref.adjacency_matrix.abs().max() > 1
        torch.testing.assert_close(graph.adjacency, ref.adjacency_matrix, atol=1e-4, rtol=1e-4)
        capped = ct_attribute(torch.tensor(TOKENS), tl, batch_size=8, max_feature_nodes=25, update_interval=1)
        ours_capped = attribute(ours, loaded, TOKENS, batch_size=8, max_feature_nodes=25, update_interval=1)
        assert torch.equal(ours_capped.features, capped.active_features[capped.selected_features])
        torch.testing.assert_close(ours_capped.adjacency, capped.adjacency_matrix, atol=1e-4, rtol=1e-4)
    finally:
        tl.reset_hooks(including_permanent=True)
