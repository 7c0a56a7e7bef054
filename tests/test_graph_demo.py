"""Offline, on the bundled demo model with its bundled transcoders: the attribution graph of an
IOI prompt shows the circuit. The indirect object's name reaches the logit difference through
the pruned graph, it is among the most influential inputs, and ablating the top graph node's
latent in the model cuts the logit difference.

The transcoders (every layer, MLP in -> MLP out, trained on CPU with
neuron_explainer.demo.train_transcoders) are a circuit-tracer transcoder set in
neuron_explainer/demo/transcoders/ (config.yaml + layer_{i}.safetensors).
"""

from __future__ import annotations

from collections import deque

import torch

from neuron_explainer import demo
from neuron_explainer.debugger.graph import LogitDifference, attribute, conventions_for
from neuron_explainer.debugger.graph.prompts import graph_prompt
from neuron_explainer.models.loading import load_model, tokenizer_of
from neuron_explainer.models.saes import load_transcoder_set

TRANSCODERS = demo.HERE / "transcoders"
PROMPT, IO, S = "When Mary and John went to the store, John gave a drink to", " Mary", " John"


def test_the_ioi_circuit_is_visible() -> None:
    torch.set_num_threads(1)
    model = load_model(demo.NAME).requires_grad_(False)
    tok = tokenizer_of(model)
    transcoders = list(load_transcoder_set(TRANSCODERS, conventions=conventions_for(model)))
    tokens, first_is_bos = graph_prompt(tok, PROMPT)
    io, s = tok.encode(IO)[0], tok.encode(S)[0]
    graph = attribute(model, transcoders, tokens, LogitDifference((io,), (s,)), exclude_first_position=first_is_bos)
    pruned = graph.prune()

    # the indirect object's name is among the three most influential token embeddings...
    io_pos = tokens.index(io)
    embeddings = [graph.token_index(p) for p in range(graph.n_pos)]
    top_inputs = sorted(embeddings, key=lambda i: -float(pruned.influence[i]))[:3]
    assert graph.token_index(io_pos) in top_inputs, [tok.decode_tokens([tokens[i - embeddings[0]]]) for i in top_inputs]
    # ...and reaches the logit difference through kept edges
    reached, queue = {graph.token_index(io_pos)}, deque([graph.token_index(io_pos)])
    while queue:
        for target in pruned.edge_mask[:, queue.popleft()].nonzero()[:, 0].tolist():
            if target not in reached:
                reached.add(target)
                queue.append(target)
    assert graph.logit_index(0) in reached

    # ablating the top graph node's latent cuts the logit difference
    top = int(pruned.influence[: graph.n_features].argmax())
    layer, pos, latent = (int(v) for v in graph.features[top])
    tc = transcoders[layer]
    write = float(graph.activations[top]) * tc.W_dec[latent]

    def ablate(x: torch.Tensor) -> torch.Tensor:
        x = x.clone()
        x[:, pos] -= write.to(x.dtype)  # the latent at 0, its layer's error term unchanged
        return x

    ids = torch.tensor([tokens])
    clean = model(ids)[0, -1]
    assert tc.writes is not None
    with model.hooks(fwd={tc.writes: ablate}):
        ablated = model(ids)[0, -1]
    clean_diff, ablated_diff = float(clean[io] - clean[s]), float(ablated[io] - ablated[s])
    assert clean_diff > 0, "the demo model gets this IOI prompt right"
    assert ablated_diff < clean_diff - 0.1 * abs(clean_diff), (clean_diff, ablated_diff)
