"""Logits that are only recorded (`inference.run`): the pass unembeds the last token alone, in
the graph, and the recorded logits of every position are computed afterwards from the last
block's residual stream. They must be `transformers`' logits, and the loss, the gradients and
the other recordings those of a pass that unembeds every position in the graph (forced here by
also recording the final norm's output)."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from neuron_explainer.debugger.inference import Ablation, LogitDiffLoss, PromptRequest, Site, run
from neuron_explainer.models.loading import from_transformers
from neuron_explainer.models.random_models import hf_model

pytest.importorskip("transformers")

# plain, untied with grouped queries, parallel blocks, a final soft-cap with sandwich norms
FAMILIES = ["gpt2", "llama", "gpt_neox", "gemma2"]
PROMPTS = [[5, 17, 3, 40, 2, 9, 33, 12, 8, 21, 4, 30], [7, 1, 19, 6, 25]]  # padding in the batch
LOSS = LogitDiffLoss((7,), (9,))
# the server's: the final norm's scale detached at every token (a backward ablation)
DETACH = Ablation(Site("resid.ln_f.scale"), (None, None), 0.0, "backward")
RECORD = [Site("logits"), Site("mlp.post_act", 0), Site("resid.post_emb")]
GRADS = [Site("mlp.post_act", 0), Site("resid.post_emb")]


@pytest.mark.parametrize("family", FAMILIES)
def test_recorded_logits_are_transformers_and_change_nothing_else(family: str, monkeypatch: pytest.MonkeyPatch) -> None:
    hf = hf_model(family, seed=0)
    model = from_transformers(hf)
    model.requires_grad_(False)
    requests = [PromptRequest(p, [DETACH], LOSS) for p in PROMPTS]

    positions: list[Any] = []
    forward = model.forward

    def spy(*args: Any, **kwargs: Any) -> Any:
        positions.append(kwargs.get("logit_positions"))
        return forward(*args, **kwargs)

    monkeypatch.setattr(model, "forward", spy)
    after = run(model, requests, RECORD, GRADS)
    in_graph = run(model, requests, [*RECORD, Site("resid.post_ln_f")], GRADS)
    assert positions[0] is not None and positions[0].shape == (2, 1)  # the last token alone
    assert positions[1] is None  # every position

    for prompt, a, b in zip(PROMPTS, after, in_graph, strict=True):
        with torch.no_grad():
            expected = hf(torch.tensor([prompt])).logits[0]
        torch.testing.assert_close(a.activations[Site("logits")], expected, rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(a.activations[Site("logits")], b.activations[Site("logits")], rtol=1e-5, atol=1e-5)
        assert a.loss == pytest.approx(b.loss, abs=1e-5)
        for site in GRADS:
            scale = float(b.gradients[site].abs().max())
            torch.testing.assert_close(a.gradients[site], b.gradients[site], rtol=1e-4, atol=1e-6 * scale)
        torch.testing.assert_close(a.activations[RECORD[1]], b.activations[RECORD[1]])


def test_a_forward_ablation_of_the_final_norm_keeps_every_position_in_the_graph() -> None:
    """Logits computed afterwards would miss it: with a forward ablation at the final norm (or
    a backward one at a single token) the pass unembeds every position."""
    model = from_transformers(hf_model("gpt2", seed=0))
    model.requires_grad_(False)
    ablation = Ablation(Site("resid.ln_f.scale"), (3, None), 2.0, "forward")
    (rec,) = run(model, [PromptRequest(PROMPTS[0], [ablation], LOSS)], [Site("logits")], [])
    tokens = torch.tensor([PROMPTS[0]])

    def double_scale(x: torch.Tensor) -> torch.Tensor:
        x = x.clone()
        x[:, 3] = 2.0
        return x

    with torch.no_grad(), model.hooks(fwd={"resid.ln_f.scale": double_scale}):
        expected = model(tokens)[0]
    torch.testing.assert_close(rec.activations[Site("logits")], expected)


@pytest.mark.parametrize("family", ["gpt2", "gemma2"])  # the sums: linear / through the soft-cap
def test_a_top_output_tokens_step_reads_the_deferred_logits_at_one_token(family: str) -> None:
    """The TDB request's top output tokens rank the logits at one token and sum them over the
    vocabulary per token: from the last residual stream, without every position's logits.
    Ranking, values and sums are transformers' (the sums against float64 sums of its logits)."""
    from neuron_explainer.activation_server import schemas as S
    from neuron_explainer.activation_server.node_scalars import NodeScalars
    from neuron_explainer.debugger import scalars as sc

    hf = hf_model(family, seed=0)
    model = from_transformers(hf)
    model.requires_grad_(False)
    (rec,) = run(model, [PromptRequest(PROMPTS[0], [DETACH], LOSS)], [Site("logits")], [])
    assert Site("logits") in rec.activations and rec.activations.is_deferred(Site("logits"))
    spec = S.MultipleTopKDerivedScalarsRequestSpec(
        dst_list_by_group_id={S.GroupId.LOGITS: [S.DerivedScalarType.LOGITS]}, top_and_bottom_k=20, token_index=-1
    )
    weights = sc.Weights(model)
    scalars = NodeScalars(weights, rec, [spec])
    nodes = scalars.nodes(spec)
    values = scalars.values_at(spec.dst_list_by_group_id[S.GroupId.LOGITS], nodes)
    (per_token,) = scalars.layer_sums("logits", (0,))
    assert rec.activations.is_deferred(Site("logits"))  # never the whole (T, vocab)

    with torch.no_grad():
        expected = hf(torch.tensor([PROMPTS[0]])).logits[0].double()
    last = expected[-1]
    top = last.topk(20).indices.tolist()
    if not S.GroupId.LOGITS.exclude_bottom_k:
        top += last.topk(20, largest=False).indices.tolist()
    assert [n.tensor_indices for n in nodes] == [(-1, v) for v in top]  # at the step's token index
    torch.testing.assert_close(torch.tensor(values, dtype=torch.float64), last[top], rtol=1e-4, atol=1e-4)
    scale = float(expected.abs().sum(-1).max())  # the sums' error is relative to the terms summed
    torch.testing.assert_close(per_token.double(), expected.sum(-1), rtol=0, atol=1e-6 * scale)
    # a node of another prompt (not a candidate here) is looked up at its token alone
    other = S.MirroredNodeIndex(node_type=S.NodeType.VOCAB_TOKEN, tensor_indices=(2, 11), layer_index=None, pass_type=S.PassType.FORWARD)
    assert scalars.values_at(spec.dst_list_by_group_id[S.GroupId.LOGITS], [other])[0] == pytest.approx(float(expected[2, 11]), abs=1e-4)
    assert rec.activations.is_deferred(Site("logits"))
    # read as a whole, they are computed then, and are the same
    torch.testing.assert_close(rec.activations[Site("logits")].double(), expected, rtol=1e-4, atol=1e-4)
    assert not rec.activations.is_deferred(Site("logits"))
