"""The record builder (`python -m neuron_explainer.collate`): its records equal a brute-force
computation over the whole text, an interrupted build resumes to the same bytes, and the read
routes serve what it wrote."""

from __future__ import annotations

import math
import random
from pathlib import Path
from typing import Any

import pytest
import torch
from fastapi.testclient import TestClient
from test_records import make_app

from neuron_explainer.activations.datasets import DATASET_JSON, DST_FOLDERS, DatasetRegistry
from neuron_explainer.activations.records import (
    NeuronRecord,
    loads_record,
    unflatten_token_pair_activations,
)
from neuron_explainer.collate import (
    CHECKPOINT,
    CollateConfig,
    Recorder,
    build,
    family_specs,
    iter_sequences,
    main,
)
from neuron_explainer.models.autoencoder import (
    AutoencoderSpec,
    SparseAutoencoder,
    attach,
    save_autoencoder_set,
)
from neuron_explainer.models.loading import save_model
from neuron_explainer.models.tokenizer import decode_tokens, get_tokenizer
from neuron_explainer.models.transformer import Transformer, TransformerConfig

torch.set_num_threads(1)

CONTEXT = 16
CFG = CollateConfig(
    context=CONTEXT,
    top_k=5,
    random_sample=4,
    quantile_sample=2,
    quantiles=(0.5, 0.9),
    quantile_calibration=10,
    batch_size=3,  # odd sizes: batches and shards do not line up
    shard_sequences=8,
    seed=7,
)
WORDS = [
    "the",
    "a",
    "cat",
    "dog",
    "sat",
    "on",
    "mat",
    "and",
    "ran",
    "to",
    "house",
    "of",
    "king",
    "queen",
    "said",
    "that",
    "it",
    "was",
    "very",
    "big",
    "small",
    "red",
    "blue",
    "green",
    "tree",
    "river",
    "mountain",
    ",",
    ".",
    "!",
    "?",
    "Mary",
    "John",
    "went",
    "gave",
    "book",
    "to",
]


def _autoencoder(n_latents: int, n_inputs: int, seed: int) -> SparseAutoencoder:
    ae = SparseAutoencoder(n_latents, n_inputs)
    ae.reset_parameters(seed=seed)
    with torch.no_grad():
        ae.latent_bias.copy_(
            torch.randn(n_latents, generator=torch.Generator().manual_seed(seed)) * 0.05
        )
    return ae.requires_grad_(False)


def _model(with_autoencoders: bool = True) -> Transformer:
    cfg = TransformerConfig(n_layers=2, d_model=32, n_heads=4, n_vocab=50257, ctx_window=32)
    model = Transformer(cfg).init_weights(3, std=0.1)
    model.requires_grad_(False)
    if with_autoencoders:
        for kind, reads, width, seed in (
            ("mlp", "mlp.post_act", cfg.d_mlp, 10),
            ("attention", "resid.delta_attn", cfg.d_model, 20),
        ):
            spec = AutoencoderSpec(reads=reads, kind=kind, location="unused", n_layers=2)  # type: ignore[arg-type]
            attach(model, spec, [_autoencoder(12, width, seed + i) for i in range(2)])
    return model


@pytest.fixture(scope="module")
def model() -> Transformer:
    return _model()


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    rng = random.Random(0)
    folder = tmp_path_factory.mktemp("corpus")
    paths = []
    for i, n_words in enumerate((420, 230)):
        text = "\n".join(
            " ".join(rng.choice(WORDS) for _ in range(12)) for _ in range(n_words // 12)
        )
        path = folder / f"doc{i}.txt"
        path.write_text(text)
        paths.append(str(path))
    return paths


@pytest.fixture(scope="module")
def built(model: Transformer, corpus: list[str], tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("built")
    result = build(model, get_tokenizer(), corpus, out, CFG, progress=False)
    assert result.complete and result.shards_done >= 5
    return out


def _brute_force(
    model: Transformer, corpus: list[str]
) -> tuple[list[list[int]], dict[str, torch.Tensor]]:
    """Every sequence's values for every family, from one pass over the whole text."""
    seqs = list(iter_sequences(corpus, get_tokenizer(), CONTEXT))
    recorder = Recorder(model, family_specs(model))
    parts: dict[str, list[torch.Tensor]] = {}
    for spec, _sl, vals in recorder.values(torch.tensor(seqs)):
        parts.setdefault(spec.key, []).append(vals)
    return seqs, {k: torch.cat(v, 1) for k, v in parts.items()}


def _record(out: Path, dst: str, layer: int, index: int) -> NeuronRecord:
    return loads_record((out / DST_FOLDERS[dst] / str(layer) / f"{index}.json").read_bytes())


def test_sequences_cut_the_token_stream(corpus: list[str]) -> None:
    enc = get_tokenizer()
    stream = [
        *enc.encode(Path(corpus[0]).read_text()),
        enc.eot_token,
        *enc.encode(Path(corpus[1]).read_text()),
    ]
    seqs = list(iter_sequences(corpus, enc, CONTEXT))
    assert all(len(s) == CONTEXT for s in seqs)
    flat = [t for s in seqs for t in s]
    assert flat == stream[: len(flat)] and len(stream) - len(flat) <= CONTEXT


def test_records_equal_brute_force(model: Transformer, corpus: list[str], built: Path) -> None:
    seqs, values = _brute_force(model, corpus)
    enc = get_tokenizer()
    strings = [decode_tokens(enc, s) for s in seqs]
    n_seq = len(seqs)
    assert n_seq > 3 * CFG.shard_sequences
    for spec in family_specs(model):
        vals = values[spec.key]  # (n_seq, nodes, V)
        v_len = CONTEXT * (CONTEXT + 1) // 2 if spec.token_pair else CONTEXT
        assert vals.shape == (n_seq, spec.n_nodes, v_len)
        scores = vals.amax(-1)
        order = torch.sort(scores, dim=0, descending=True, stable=True).indices[: CFG.top_k]
        x = vals.double()
        for n in range(spec.n_nodes):
            record = _record(built, spec.dst, spec.layer, n)
            assert record.neuron_id.layer_index == spec.layer and record.neuron_id.neuron_index == n
            top = record.most_positive_activation_records
            assert len(top) == CFG.top_k
            for rec, seq_id in zip(top, order[:, n].tolist(), strict=True):
                assert rec.tokens == strings[seq_id], (spec, n)
                torch.testing.assert_close(
                    torch.tensor(rec.activations), vals[seq_id, n], rtol=1e-5, atol=1e-6
                )
            # moments over every value of the node
            xs = x[:, n].reshape(-1)
            mean, var = xs.mean().item(), xs.var(unbiased=False).item()
            assert record.mean == pytest.approx(mean, rel=1e-4, abs=1e-7)
            assert record.variance == pytest.approx(var, rel=1e-3, abs=1e-9)
            if var > 1e-8 and record.skewness is not None:
                c = xs - mean
                assert record.skewness == pytest.approx(
                    (c**3).mean().item() / var**1.5, rel=1e-2, abs=1e-3
                )
                assert record.kurtosis == pytest.approx(
                    (c**4).mean().item() / var**2 - 3, rel=1e-2, abs=1e-2
                )
            # random sample: distinct real sequences with their values
            assert len(record.random_sample) == CFG.random_sample
            ids = [_find(rec.tokens, strings) for rec in record.random_sample]
            assert len(set(ids)) == len(ids)
            for rec, seq_id in zip(record.random_sample, ids, strict=True):
                torch.testing.assert_close(
                    torch.tensor(rec.activations), vals[seq_id, n], rtol=1e-5, atol=1e-6
                )
            # quantile samples lie in their bins
            assert (
                record.quantile_boundaries is not None
                and record.random_sample_by_quantile is not None
            )
            bounds = [-math.inf, *record.quantile_boundaries, math.inf]
            assert len(record.random_sample_by_quantile) == len(CFG.quantiles) + 1
            for q, sample in enumerate(record.random_sample_by_quantile):
                assert len(sample) <= CFG.quantile_sample
                for rec in sample:
                    assert bounds[q] - 1e-6 <= max(rec.activations) <= bounds[q + 1] + 1e-6


def _find(tokens: list[str], strings: list[list[str]]) -> int:
    matches = [i for i, s in enumerate(strings) if s == tokens]
    assert matches
    return matches[0]


def test_random_samples_are_spread_and_seeded(
    model: Transformer, corpus: list[str], built: Path, tmp_path: Path
) -> None:
    strings = [
        decode_tokens(get_tokenizer(), s) for s in iter_sequences(corpus, get_tokenizer(), CONTEXT)
    ]
    picked = {
        _find(r.tokens, strings)
        for n in range(20)
        for r in _record(built, "mlp_post_act", 0, n).random_sample
    }
    assert len(picked) > len(strings) // 2  # not always the same few sequences
    other = build(
        model,
        get_tokenizer(),
        corpus,
        tmp_path,
        CollateConfig(**{**CFG.__dict__, "seed": 8}),
        progress=False,
    )
    assert other.complete
    a, b = _record(built, "mlp_post_act", 0, 3), _record(tmp_path, "mlp_post_act", 0, 3)
    assert a.most_positive_activation_records == b.most_positive_activation_records
    assert a.random_sample != b.random_sample


def _tree(folder: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()
    }


def test_interrupted_build_resumes_to_the_same_bytes(
    model: Transformer, corpus: list[str], built: Path, tmp_path: Path
) -> None:
    enc = get_tokenizer()
    first = build(model, enc, corpus, tmp_path, CFG, stop_after_shards=2, progress=False)
    assert not first.complete and first.shards_done == 2
    assert (tmp_path / CHECKPOINT).is_file() and not (tmp_path / DATASET_JSON).exists()
    second = build(model, enc, corpus, tmp_path, CFG, stop_after_shards=1, progress=False)
    assert not second.complete and second.shards_done == 3
    third = build(model, enc, corpus, tmp_path, CFG, progress=False)
    assert third.complete and third.n_tokens == first.n_tokens + (third.n_tokens - first.n_tokens)
    assert _tree(tmp_path) == _tree(built)  # byte-identical, no leftover temp files or checkpoint
    # a finished build is not redone
    again = build(model, enc, corpus, tmp_path, CFG, progress=False)
    assert again.complete and again.seconds == 0.0
    # a checkpoint from other arguments is refused rather than mixed in
    build(model, enc, corpus, tmp_path / "x", CFG, stop_after_shards=1, progress=False)
    with pytest.raises(ValueError, match="other arguments"):
        build(
            model,
            enc,
            corpus,
            tmp_path / "x",
            CollateConfig(**{**CFG.__dict__, "top_k": 3}),
            progress=False,
        )


def test_token_pair_definitions(model: Transformer, corpus: list[str]) -> None:
    """attn_write_norm = ||A(q,k) v_k W_O^h|| per head; the latent attribution by token pair =
    sum over heads of A(q,k) * dL_q/dA(q,k) (by autograd), as the published datasets define."""
    seq = torch.tensor([next(iter_sequences(corpus, get_tokenizer(), CONTEXT))])
    specs = family_specs(model)
    got = {spec.key: vals for spec, _sl, vals in Recorder(model, specs).values(seq)}
    layer = 1
    _, cache = model.run_with_cache(
        seq, [f"blocks.{layer}.attn.qk_probs", f"blocks.{layer}.attn.v"]
    )
    probs, v = cache[f"blocks.{layer}.attn.qk_probs"][0], cache[f"blocks.{layer}.attn.v"][0]
    w = model.xf_layers[layer].attn.out_proj.weight.view(32, 4, 8)
    writes = torch.einsum("hqk,khe,dhe->hqkd", probs, v, w)  # every head's write per token pair
    norms = writes.norm(dim=-1)
    for h in range(4):
        rows = unflatten_token_pair_activations(_ar(got[f"attn_write_norm/{layer}"][0, h]))
        for q in range(CONTEXT):
            torch.testing.assert_close(
                torch.tensor(rows[q]), norms[h, q, : q + 1], rtol=1e-4, atol=1e-6
            )

    # attribution by autograd for a few active (query, latent) pairs
    saved: dict[str, torch.Tensor] = {}

    def grab_probs(x: torch.Tensor) -> torch.Tensor:
        saved["probs"] = x.detach().requires_grad_(True)
        return saved["probs"]

    def grab_latents(x: torch.Tensor) -> None:
        saved["latents"] = x

    attr = got[f"flattened_attn_write_to_latent_summed_over_heads/{layer}"][0]  # (latents, pairs)
    checked = 0
    with (
        torch.enable_grad(),
        model.hooks(
            fwd={
                f"blocks.{layer}.attn.qk_probs": grab_probs,
                f"blocks.{layer}.attn_autoencoder.latents": grab_latents,
            }
        ),
    ):
        model(seq)
        latents = saved["latents"][0]
        for q, lat in (latents > 0).nonzero().tolist()[:6]:
            (grad,) = torch.autograd.grad(latents[q, lat], saved["probs"], retain_graph=True)
            want = (saved["probs"] * grad).sum(1)[0, q, : q + 1]
            rows = unflatten_token_pair_activations(_ar(attr[lat]))
            torch.testing.assert_close(torch.tensor(rows[q]), want.detach(), rtol=1e-4, atol=1e-6)
            checked += 1
    assert checked > 0
    # and inactive latents attribute nothing
    inactive = (latents == 0).nonzero().tolist()[:3]
    for q, lat in inactive:
        assert unflatten_token_pair_activations(_ar(attr[lat]))[q] == [0.0] * (q + 1)


def _ar(values: torch.Tensor) -> Any:
    from neuron_explainer.activations.records import ActivationRecord

    return ActivationRecord(values.tolist(), ["t"] * CONTEXT)


def test_routes_serve_built_records(built: Path) -> None:
    registry = DatasetRegistry()
    entries = registry.register_local_dataset("tiny", built)
    # every dst the model has (its autoencoders are OpenAI's: no residual SAEs or transcoders)
    assert {e.dst for e in entries} == set(DST_FOLDERS) - {"residual_autoencoder_latent", "transcoder_latent"}
    client = TestClient(make_app(registry))
    body = {"dst": "mlp_post_act", "layerIndex": 1, "activationIndex": 5, "datasets": ["tiny"]}
    r = client.post("/neuron_record", json=body)
    assert r.status_code == 200, r.text
    record = _record(built, "mlp_post_act", 1, 5)
    assert [
        t["token"] for t in r.json()["topActivations"][0]
    ] == record.most_positive_activation_records[0].tokens
    assert r.json()["maxActivation"] == pytest.approx(record.max_activation)
    for dst, name in (
        ("attn_write_norm", "tiny"),
        ("flattened_attn_write_to_latent_summed_over_heads", "tiny_ae-mlp_ae-attn"),
    ):
        r = client.post(
            "/attention_head_record",
            json=body | {"dst": dst, "layerIndex": 0, "activationIndex": 2, "datasets": [name]},
        )
        assert r.status_code == 200, r.text
        assert len(r.json()["mostPositiveTokenSequences"]) == CFG.top_k
        assert len(r.json()["mostPositiveTokenSequences"][0]) == CONTEXT
    r = client.post(
        "/neuron_record", json=body | {"dst": "mlp_autoencoder_latent", "activationIndex": 11}
    )
    assert r.status_code == 200, r.text
    r = client.post(
        "/neuron_record", json=body | {"dst": "mlp_autoencoder_latent", "activationIndex": 12}
    )
    assert r.status_code == 404  # past the layer's 12 latents
    names = {
        (m["shortName"], m["derivedScalarType"])
        for m in client.post("/neuron_datasets_metadata").json()
    }
    assert names == {("tiny", d) for d in DST_FOLDERS if d not in ("residual_autoencoder_latent", "transcoder_latent")}


def test_cli(tmp_path: Path, corpus: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    model = _model(with_autoencoders=False)
    save_model(model, tmp_path / "model")
    ae_folder = tmp_path / "ae"
    save_autoencoder_set(
        ae_folder, [_autoencoder(8, 128, i) for i in range(2)], reads="mlp.post_act"
    )
    args = [
        "--model",
        str(tmp_path / "model"),
        "--mlp-autoencoder",
        str(ae_folder),
        "--corpus",
        *corpus,
        "--out",
        str(tmp_path / "out"),
        "--context",
        "8",
        "--top-k",
        "3",
        "--random-sample",
        "2",
        "--quantile-sample",
        "1",
        "--shard-sequences",
        "16",
        "--batch-size",
        "8",
        "--dsts",
        "mlp_post_act,mlp_autoencoder_latent",
        "--device",
        "cpu",
        "--no-progress",
    ]
    assert main([*args, "--stop-after-shards", "1"]) == 0
    assert "resume" in capsys.readouterr().out
    assert main(args) == 0
    assert "--dataset NAME=" in capsys.readouterr().out
    registry = DatasetRegistry()
    assert {e.dst for e in registry.register_local_dataset("cli", tmp_path / "out")} == {
        "mlp_post_act",
        "mlp_autoencoder_latent",
    }
    assert (
        len(
            _record(
                tmp_path / "out", "mlp_autoencoder_latent", 1, 7
            ).most_positive_activation_records
        )
        == 3
    )
    i = args.index("--corpus")
    missing = [*args[:i], "--corpus", str(tmp_path / "missing.txt"), *args[i + 1 + len(corpus) :]]
    assert main(missing) == 2
    assert "not found" in capsys.readouterr().err


def test_sparse_token_pair_latents_match_dense(model: Transformer, corpus: list[str]) -> None:
    """The builder's sparse path for attention latents by token pair (only active latents, in
    chunks of sequences) gives the dense reference's scores, power sums and value rows."""
    seqs = torch.tensor(list(iter_sequences(corpus, get_tokenizer(), CONTEXT))[:7])
    specs = [s for s in family_specs(model) if s.token_pair]
    recorder = Recorder(model, specs, chunk_elements=3000)  # a few sequences per chunk
    parts: dict[str, list[torch.Tensor]] = {}
    for spec, _sl, vals in recorder.values(seqs):  # dense, in slices of latents
        parts.setdefault(spec.key, []).append(vals)
    dense = {k: torch.cat(v, 1) for k, v in parts.items()}
    chunks = 0
    for spec, nodes, seq_sl, batch in recorder.batches(seqs):
        vals = dense[spec.key][seq_sl, nodes]
        torch.testing.assert_close(batch.scores, vals.amax(-1), rtol=1e-5, atol=1e-6)
        x = vals.double()
        want = torch.stack([(x**p).sum((0, 2)) for p in (1, 2, 3, 4)])
        torch.testing.assert_close(batch.sums, want, rtol=1e-4, atol=1e-6)
        bi, ni = torch.meshgrid(
            torch.arange(vals.shape[0]), torch.arange(vals.shape[1]), indexing="ij"
        )
        rows = batch.rows(bi.reshape(-1), ni.reshape(-1))
        torch.testing.assert_close(rows, vals.reshape(-1, vals.shape[-1]), rtol=1e-5, atol=1e-6)
        chunks += spec.dst == "flattened_attn_write_to_latent_summed_over_heads"
    assert chunks > 2
