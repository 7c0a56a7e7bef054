"""The bundled demo model loads offline and the debugger finds its IOI circuit."""

from __future__ import annotations

import pytest
import torch

from neuron_explainer.activation_server import schemas as S
from neuron_explainer.activation_server.processing import Debugger
from neuron_explainer.demo import evaluate
from neuron_explainer.demo.data import NAMES, ioi_prompts
from neuron_explainer.models.loading import load_model
from neuron_explainer.models.tokenizer import get_tokenizer

# the README's example, and prompts from templates never used in training
PROMPTS = [("When Mary and John went to the store, John gave a drink to", " Mary", " John")] + [
    (p.text, p.io, p.s) for p in ioi_prompts(4, NAMES, heldout=True, seed=1)
]


@pytest.fixture(scope="module")
def debugger() -> Debugger:
    torch.set_num_threads(1)
    model = load_model("demo")
    for p in model.parameters():
        p.requires_grad_(False)
    return Debugger(model, get_tokenizer(model.tokenizer_path), "demo")


def _spec(prompt: str, target: str, distractor: str, ablations: list[S.NodeAblation]) -> S.TdbRequestSpec:
    return S.TdbRequestSpec(
        prompt=prompt, target_tokens=[target], distractor_tokens=[distractor],
        component_type_for_mlp=S.ComponentTypeForMlp.NEURON,
        component_type_for_attention=S.ComponentTypeForAttention.ATTENTION_HEAD,
        top_and_bottom_k_for_node_table=10, hide_early_layers_when_ablating=False, node_ablations=ablations,
    )


@pytest.mark.parametrize("prompt,target,distractor", PROMPTS)
def test_debugger_finds_the_ioi_circuit(debugger: Debugger, prompt: str, target: str, distractor: str) -> None:
    prompt = "<|endoftext|>" + prompt
    first = debugger.batched_tdb(S.BatchedTdbRequest(sub_requests=[_spec(prompt, target, distractor, [])]))
    sub = first.inference_sub_responses[0]
    clean = sub.inference_response.inference_and_token_data.loss
    assert clean is not None and clean > 0, "the model should prefer the indirect object"
    top = sub.processing_response_data_by_name["topKComponents"]
    effect = top.activations_by_group_id[S.GroupId.ACT_TIMES_GRAD]
    ranked = sorted(zip(effect, top.node_indices, strict=True), key=lambda en: -abs(en[0]))
    assert any(n.node_type == S.NodeType.ATTENTION_HEAD for _, n in ranked[:5]), "heads rank among the top nodes"

    # zero-ablate the head with the largest estimated total effect
    head = next(n for e, n in sorted(zip(effect, top.node_indices, strict=True), key=lambda en: -en[0])
                if n.node_type == S.NodeType.ATTENTION_HEAD)
    ablation = S.NodeAblation(node_index=head, value=0)
    both = debugger.batched_tdb(
        S.BatchedTdbRequest(sub_requests=[_spec(prompt, target, distractor, [ablation]), _spec(prompt, target, distractor, [])])
    )
    ablated = both.inference_sub_responses[0].inference_response.inference_and_token_data.loss
    assert ablated is not None
    assert ablated <= 0.7 * clean, f"ablating {head} moved the logit difference only from {clean} to {ablated}"


def test_demo_model_has_its_circuits(debugger: Debugger) -> None:
    """The card's claims, on fresh samples: IOI on templates never trained on, and induction."""
    enc = get_tokenizer(debugger.model.tokenizer_path)

    @torch.no_grad()
    def logits(tokens: torch.Tensor) -> torch.Tensor:
        return debugger.model(tokens).float()

    ioi = evaluate.ioi_eval(logits, enc, n=200, heldout=True, seed=7)
    assert ioi["accuracy"] >= 0.9, ioi
    induction = evaluate.induction_eval(logits, enc.n_vocab, evaluate.eot_id(enc), n=16, seed=7)
    assert induction["first_copy_loss"] - induction["second_copy_loss"] >= 2.0, induction


def test_the_original_client_finds_the_demo_latent_datasets() -> None:
    """The served demo's autoencoders are named by what they read, as the published sets are:
    the original client finds the autoencoder for a latent's dataset name by looking for
    `resid-delta-mlp` / `mlp-post-act` (MLP) or `resid-delta-attn` (attention) among the
    autoencoder names of its URL, `<model>_<mlp autoencoder>_<attention autoencoder>`, and
    sends `<model>_<that name>`; the server resolves it to the demo's latent records."""
    from neuron_explainer import demo
    from neuron_explainer.activation_server.main import (
        apply_demo_defaults,
        build_registry,
        parse_args,
    )
    from neuron_explainer.models.autoencoder import AUTOENCODERS

    args = parse_args([])
    apply_demo_defaults(args)
    mlp, attn = args.mlp_autoencoder, args.attention_autoencoder
    assert (mlp, attn) == ("demo-ae-resid-delta-mlp", "demo-ae-resid-delta-attn")
    assert AUTOENCODERS[mlp].reads == "resid.delta_mlp" and AUTOENCODERS[attn].reads == "resid.delta_attn"
    url_segment = "_".join([demo.NAME, mlp, attn])  # what /model_info lets a client build
    parts = url_segment.split("_")
    assert len(parts) == 3, "an autoencoder name with '_' would break the client's split"

    def client_dataset(markers: tuple[str, ...]) -> str:
        found = [p for p in parts[1:] if any(m in p for m in markers)]
        assert len(found) == 1, (markers, parts)
        return f"{parts[0]}_{found[0]}"

    registry = build_registry(args)
    for dst, markers in (
        ("mlp_autoencoder_latent", ("resid-delta-mlp", "mlp-post-act")),
        ("attention_autoencoder_latent", ("resid-delta-attn",)),
    ):
        name = client_dataset(markers)
        assert name in (f"demo_{mlp}", f"demo_{attn}")
        entry = registry.resolve(name, dst)
        assert (entry.short_name, entry.dst) == (demo.NAME, dst)
        record = registry.load_record(entry, 1, 0)
        assert record.most_positive_activation_records
