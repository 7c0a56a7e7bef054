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
