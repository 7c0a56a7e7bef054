"""Every scalar of the table on every family (grouped queries, gated MLPs, sandwich norms,
parallel blocks without resid.post_attn, sliding windows, soft-caps), requested through the
server's own pipeline as a top-k step and, when it has one value per token, as a single-node
step: each is answered with finite values of its declared node type, or refused with a
one-line 400 that says why (never a crash or a wrong answer: the numbers are checked in
test_scalars_table.py and test_node_table_seed.py)."""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch
from conftest import random_autoencoder

from neuron_explainer.activation_server import schemas as S
from neuron_explainer.activation_server.errors import RequestError
from neuron_explainer.activation_server.processing import Debugger
from neuron_explainer.debugger import scalars as sc
from neuron_explainer.models.autoencoder import AutoencoderSpec, attach
from neuron_explainer.models.loading import load_model, tokenizer_of
from neuron_explainer.models.random_models import FAMILIES, save_random

pytest.importorskip("transformers")

PROMPT = "When Mary and John went to the store, John gave a drink to"


@pytest.fixture(scope="module", params=FAMILIES)
def debugger(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Debugger:
    torch.set_num_threads(1)
    family = request.param
    folder, _ = save_random(family, tmp_path_factory.mktemp(family))
    model = load_model(folder)
    model.requires_grad_(False)
    n = model.cfg.n_layers
    mlp_reads = "resid.delta_mlp" if FAMILIES.index(family) % 2 else "mlp.post_act"
    for kind, reads, width, seed in (
        ("mlp", mlp_reads, model.cfg.d_mlp if mlp_reads == "mlp.post_act" else model.cfg.d_model, 70),
        ("attention", "resid.delta_attn", model.cfg.d_model, 80),
    ):
        spec = AutoencoderSpec(reads=reads, kind=kind, location="unused", n_layers=n)  # type: ignore[arg-type]
        attach(model, spec, [random_autoencoder(8, width, seed + i) for i in range(n)])
    return Debugger(model, tokenizer_of(model), family, "ae-mlp", "ae-attn")


def _inference(d: Debugger, name: str) -> dict[str, Any]:
    """The request context a scalar may need: a loss, the attention latent its writes project on
    (as the original client's token-pair page names it), the node of the input tokens."""
    spec: dict[str, Any] = {
        "prompt": PROMPT,
        "lossFnConfig": {"name": "logit_diff", "targetTokens": [" Mary"], "distractorTokens": [" John"]},
        "activationIndexForWithinLayerGrad": {
            "layerIndex": d.n_layers - 1, "activationLocationType": "online_attention_autoencoder_latent",
            "tensorIndices": ["All", 1], "passType": "forward",
        },
    }
    if "final_activation" in name or "grad_wrt" in name:  # a neuron's or an MLP latent's own gradient
        location = "online_mlp_autoencoder_latent" if "grad_wrt" in name else "mlp.post_act"
        spec["activationIndexForWithinLayerGrad"] = {
            "layerIndex": d.n_layers - 1, "activationLocationType": location, "tensorIndices": [4, 2], "passType": "forward",
        }
    if name == "vocab_token_write_to_input_direction":
        spec["ablationSpecs"] = [{"index": {"activationLocationType": "online_mlp_autoencoder_latent", "tensorIndices": [0, 2],
                                            "layerIndex": d.n_layers - 1, "passType": "backward"}, "value": 1.0}]
        spec["lossFnConfig"] = {"name": "zero"}
    return spec


def _ask(d: Debugger, inference: dict[str, Any], step: dict[str, Any]) -> Any:
    request = S.BatchedRequest.model_validate({"inferenceSubRequests": [
        {"inferenceRequestSpec": inference, "processingRequestSpecByName": {"step": step}}]})
    return d.batched(request).inference_sub_responses[0].processing_response_data_by_name["step"]


@pytest.mark.parametrize("name", sorted(sc.SCALARS))
def test_every_scalar_answers_or_says_why_not(debugger: Debugger, name: str) -> None:
    d = debugger
    inference = _inference(d, name)
    try:
        top = _ask(d, inference, {"dstListByGroupId": {"activation": [name]}, "topAndBottomK": 3})
    except RequestError as e:
        message = str(e)
        assert message and "\n" not in message and len(message) < 400
        assert sc.problem(name, d.weights) is not None or "autoencoder" in message or "layer" in message, message
        return
    values = top.activations_by_group_id[S.GroupId.ACTIVATION]
    assert values and all(math.isfinite(v) for v in values)
    assert {n.node_type.value for n in top.node_indices} == {sc.SCALARS[name].node_type}
    _, st = sc.resolve(name, d.weights)
    layers = st.layer_list(d.weights, None)
    # the last layer it has (scalars of the request's node: the node's, the last)
    layer = (layers[-1] if layers else d.n_layers - 1) if st.layered else None
    step = {"dst": name, "layerIndex": layer, "activationIndex": 0}
    try:
        single = _ask(d, inference, step)
    except RequestError as e:
        assert "axes per token" in str(e) or "per token pair" in str(e) or "layer" in str(e), str(e)
        return
    assert all(math.isfinite(v) for v in single.activations)
