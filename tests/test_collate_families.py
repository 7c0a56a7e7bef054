"""Neuron records on other families (grouped queries, gated MLPs, Gemma's post-norms, the model's
own tokenizer with its BOS): each node's top examples are the sequences where the debugger's
own scalar (recorded by `debugger.inference.run`) is largest, with those values."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from neuron_explainer.activations.datasets import DatasetRegistry
from neuron_explainer.collate import CollateConfig, build, iter_sequences
from neuron_explainer.debugger import scalars as sc
from neuron_explainer.debugger.inference import PromptRequest, Site, run
from neuron_explainer.models.loading import load_model, tokenizer_of
from neuron_explainer.models.random_models import save_random

pytest.importorskip("transformers")
CONTEXT = 12
CFG = CollateConfig(context=CONTEXT, top_k=3, random_sample=2, quantile_sample=0, batch_size=4, shard_sequences=8, seed=3,
                    dsts=("mlp_post_act", "attn_write_norm"))
TEXT = (
    "When Mary and John went to the store, John gave a drink to Mary. The quick brown fox jumps "
    "over the lazy dog. It was the best of times, it was the worst of times. Alice was beginning "
    "to get very tired of sitting by her sister on the bank. "
) * 3


@pytest.mark.parametrize("family", ["llama", "gemma2"])
def test_records_are_the_debuggers_scalars(family: str, tmp_path: Path) -> None:
    torch.set_num_threads(1)
    folder, _ = save_random(family, tmp_path / "model")
    model = load_model(folder)
    model.requires_grad_(False)
    corpus = tmp_path / "corpus.txt"
    corpus.write_text(TEXT + "\n" + TEXT.upper())
    tok = tokenizer_of(model)
    build(model, tok, [str(corpus)], tmp_path / "records", CFG, progress=False)
    seqs = list(iter_sequences([str(corpus)], tok, CONTEXT))
    assert len(seqs) >= 6
    if tok.bos_token_id is not None:
        assert seqs[0][0] == tok.bos_token_id  # documents start with the model's BOS

    registry = DatasetRegistry()
    registry.register_local_dataset("fam", tmp_path / "records")
    weights = sc.Weights(model)
    layer = model.cfg.n_layers - 1
    sites = [Site(s, layer) for s in ("mlp.post_act", "attn.qk_probs", "attn.v")]
    scale = model.write_scale_location("attn")
    if scale is not None:
        sites.append(Site(scale, layer))
    recs = run(model, [PromptRequest(s) for s in seqs], sites)
    neurons = torch.stack([r.activations[Site("mlp.post_act", layer)] for r in recs])  # (n, T, d_mlp)
    rows, cols = torch.tril_indices(CONTEXT, CONTEXT)
    heads = torch.stack([sc.compute("unflattened_attn_write_norm", r, weights, layer)[rows, cols] for r in recs])  # (n, pairs, H)
    for dst, values, node in (("mlp_post_act", neurons, 5), ("attn_write_norm", heads, model.cfg.n_heads - 1)):
        per_seq = values[:, :, node]
        best = per_seq.amax(1).argsort(descending=True, stable=True)[: CFG.top_k]
        record = registry.load_record(registry.resolve("fam", dst), layer, node)
        top = record.most_positive_activation_records
        for example, seq in zip(top, best.tolist(), strict=True):
            assert example.tokens == tok.decode_tokens(seqs[seq])
            torch.testing.assert_close(torch.tensor(example.activations), per_seq[seq], rtol=1e-4, atol=1e-5)
