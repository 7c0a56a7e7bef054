"""Tests for neuron_explainer.models.autoencoder: the published file layout, loading (local and
over a real local HTTP server), the maths, dead latents, the registry, and autoencoders attached
to a small random Transformer (outputs, ablations and gradients through latents hook points)."""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import torch
from torch import Tensor

from neuron_explainer import file_utils
from neuron_explainer.file_utils import FetchError
from neuron_explainer.models.autoencoder import (
    AUTOENCODERS,
    AutoencoderSpec,
    SparseAutoencoder,
    attach,
    dead_latent_mask,
    drop_dead_latents,
    load_autoencoder,
    load_autoencoder_set,
    register_autoencoder,
    resolve_autoencoder_spec,
    save_autoencoder,
    save_autoencoder_set,
    spec_from_folder,
)
from neuron_explainer.models.transformer import Transformer, TransformerConfig, hook_name

if TYPE_CHECKING:
    from conftest import LocalHTTPServer


@pytest.fixture(autouse=True)
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty download cache, so tests never touch the user's real one."""
    cache = tmp_path / "cache"
    monkeypatch.setenv(file_utils.CACHE_ENV_VAR, str(cache))
    return cache


def openai_sd(
    n_latents: int,
    n_inputs: int,
    *,
    activation: str = "ReLU",
    k: int | None = None,
    stats: bool = False,
    seed: int = 0,
) -> dict[str, Any]:
    """A state dict in the published layout, built by hand (not via our class)."""
    gen = torch.Generator().manual_seed(seed)
    sd: dict[str, Any] = {
        "pre_bias": torch.randn(n_inputs, generator=gen),
        "latent_bias": torch.randn(n_latents, generator=gen) * 0.1,
        "stats_last_nonzero": torch.randint(0, 100, (n_latents,), generator=gen),
        "encoder.weight": torch.randn(n_latents, n_inputs, generator=gen) / n_inputs**0.5,
        "decoder.weight": torch.randn(n_inputs, n_latents, generator=gen) / n_latents**0.5,
        "activation": activation,
        "activation_state_dict": {"k": k, "postact_fn": "ReLU"} if activation == "TopK" else {},
    }
    if stats:
        sd["latents_activation_frequency"] = torch.rand(n_latents, generator=gen)
        sd["latents_mean_square"] = torch.rand(n_latents, generator=gen)
    return sd


def assert_same_sd(a: dict[str, Any], b: dict[str, Any]) -> None:
    assert list(a) == list(b) or set(a) == set(b)
    for key in a:
        if isinstance(a[key], Tensor):
            assert isinstance(b[key], Tensor), key
            assert a[key].dtype == b[key].dtype, key
            assert torch.equal(a[key], b[key]), key
        else:
            assert a[key] == b[key], key


def tiny_model(n_layers: int = 2) -> Transformer:
    cfg = TransformerConfig(n_layers=n_layers, d_model=32, n_heads=4, n_vocab=50, ctx_window=16)
    return Transformer(cfg).init_weights(seed=1)


def tokens(seed: int = 0) -> Tensor:
    return torch.randint(0, 50, (2, 7), generator=torch.Generator().manual_seed(seed))


def random_ae(n_latents: int, n_inputs: int, seed: int, **kw: Any) -> SparseAutoencoder:
    ae = SparseAutoencoder(n_latents, n_inputs, **kw)
    ae.reset_parameters(seed=seed)
    with torch.no_grad():
        # nonzero biases so the tests see them; a bias scaled to the (small) activations
        gen = torch.Generator().manual_seed(seed + 1)
        ae.pre_bias.copy_(torch.randn(n_inputs, generator=gen) * 0.01)
        ae.latent_bias.copy_(torch.randn(n_latents, generator=gen) * 0.01)
    return ae.requires_grad_(False)


def spec_for(reads: str, kind: str, n_layers: int = 2) -> AutoencoderSpec:
    return AutoencoderSpec(reads=reads, kind=kind, location="unused", n_layers=n_layers)  # type: ignore[arg-type]


# ------------------------------------------------------------------- files


@pytest.mark.parametrize(
    ("activation", "k", "stats"),
    [("ReLU", None, False), ("TopK", 3, True), ("Identity", None, True)],
)
def test_local_load_round_trips(
    tmp_path: Path, activation: str, k: int | None, stats: bool
) -> None:
    sd = openai_sd(16, 8, activation=activation, k=k, stats=stats)
    sd["some_future_key"] = "kept as is"
    torch.save(sd, tmp_path / "0.pt")

    ae = load_autoencoder(str(tmp_path / "0.pt"))
    assert (ae.n_latents, ae.n_inputs, ae.dtype) == (16, 8, torch.float32)
    assert ae.activation == activation.lower() and ae.k == k
    assert not any(p.requires_grad for p in ae.parameters())
    assert_same_sd(ae.state_dict_openai(), sd)

    # our own save writes the same layout
    save_autoencoder(ae, tmp_path / "again.pt")
    assert_same_sd(torch.load(tmp_path / "again.pt", weights_only=True), sd)


def test_layout_of_our_own_autoencoder_round_trips() -> None:
    ae = random_ae(12, 6, seed=3, activation="topk", k=4)
    sd = ae.state_dict_openai()
    assert set(sd) == {
        "pre_bias", "latent_bias", "stats_last_nonzero", "encoder.weight", "decoder.weight",
        "activation", "activation_state_dict",
    }  # fmt: skip
    assert sd["encoder.weight"].shape == (12, 6) and sd["decoder.weight"].shape == (6, 12)
    assert sd["stats_last_nonzero"].dtype == torch.long
    assert sd["activation"] == "TopK"
    assert sd["activation_state_dict"] == {"k": 4, "postact_fn": "ReLU"}
    assert_same_sd(SparseAutoencoder.from_state_dict(sd).state_dict_openai(), sd)


def test_from_state_dict_does_not_mutate_input() -> None:
    sd = openai_sd(4, 3, activation="TopK", k=2)
    keys = list(sd)
    SparseAutoencoder.from_state_dict(sd)
    assert list(sd) == keys


def test_load_over_http_then_from_cache(http_server: LocalHTTPServer, cache: Path) -> None:
    sd = openai_sd(16, 8)
    rel = "sparse-autoencoder/gpt2-small/resid_delta_mlp/autoencoders/0.pt"
    (http_server.root / rel).parent.mkdir(parents=True)
    torch.save(sd, http_server.root / rel)

    first = load_autoencoder(http_server.url_for(rel))
    assert http_server.requests[rel] == 1
    second = load_autoencoder(http_server.url_for(rel))
    assert http_server.requests[rel] == 1  # served from the cache
    assert_same_sd(first.state_dict_openai(), sd)
    assert_same_sd(second.state_dict_openai(), sd)
    assert any(cache.rglob("0.pt"))


def test_load_set_from_http_folder_is_cached(http_server: LocalHTTPServer, tmp_path: Path) -> None:
    aes = [random_ae(16, 32, seed=i) for i in range(2)]
    save_autoencoder_set(http_server.root / "set", aes, reads="resid.delta_attn", model="tiny")
    url = http_server.url_for("set")

    spec, loaded = load_autoencoder_set(url, 2)
    assert (spec.reads, spec.kind, spec.n_layers, spec.n_latents) == (
        "resid.delta_attn",
        "attention",
        2,
        16,
    )
    n_requests = http_server.total_requests
    assert n_requests == 3  # autoencoder.json, 0.pt, 1.pt
    _, again = load_autoencoder_set(url, 2)
    assert http_server.total_requests == n_requests
    for a, b, c in zip(aes, loaded, again, strict=True):
        assert_same_sd(b.state_dict_openai(), a.state_dict_openai())
        assert_same_sd(c.state_dict_openai(), a.state_dict_openai())


def _one_line(e: pytest.ExceptionInfo[BaseException]) -> str:
    msg = str(e.value)
    assert "\n" not in msg
    return msg


def test_load_errors_are_one_line(tmp_path: Path) -> None:
    sd = openai_sd(16, 8)
    missing = {k: v for k, v in sd.items() if k != "decoder.weight"}
    torch.save(missing, tmp_path / "missing.pt")
    with pytest.raises(ValueError) as e:
        load_autoencoder(tmp_path / "missing.pt")
    assert "missing keys ['decoder.weight']" in _one_line(e) and "missing.pt" in str(e.value)

    bad_shape = dict(sd, **{"decoder.weight": torch.zeros(16, 8)})
    torch.save(bad_shape, tmp_path / "shape.pt")
    with pytest.raises(ValueError) as e:
        load_autoencoder(tmp_path / "shape.pt")
    assert "decoder.weight has shape (16, 8), expected (8, 16)" in _one_line(e)

    bad_k = dict(sd, activation="TopK", activation_state_dict={"k": 99, "postact_fn": "ReLU"})
    with pytest.raises(ValueError) as e:
        SparseAutoencoder.from_state_dict(bad_k)
    assert "TopK needs an int k" in _one_line(e)

    (tmp_path / "text.pt").write_text("this is not\na checkpoint\n")
    with pytest.raises(ValueError) as e:
        load_autoencoder(tmp_path / "text.pt")
    assert "not a torch-saved autoencoder state dict" in _one_line(e)

    torch.save([1, 2, 3], tmp_path / "list.pt")
    with pytest.raises(ValueError) as e:
        load_autoencoder(tmp_path / "list.pt")
    assert "expected a dict of tensors" in _one_line(e)

    with pytest.raises(FetchError) as fe:
        load_autoencoder(tmp_path / "nope.pt")
    _one_line(fe)


# ------------------------------------------------------------------- maths


def hand_sd(activation: str = "ReLU", k: int | None = None) -> dict[str, Any]:
    return {
        "pre_bias": torch.tensor([1.0, 0.0]),
        "latent_bias": torch.tensor([0.0, -1.0, 0.5]),
        "encoder.weight": torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]),
        "decoder.weight": torch.tensor([[1.0, 0.0, 2.0], [0.0, 1.0, -1.0]]),
        "stats_last_nonzero": torch.zeros(3, dtype=torch.long),
        "activation": activation,
        "activation_state_dict": {"k": k, "postact_fn": "ReLU"} if k else {},
    }


def test_hand_example_relu() -> None:
    ae = SparseAutoencoder.from_state_dict(hand_sd())
    x = torch.tensor([[3.0, 2.0], [0.0, 0.0]])
    # x - pre_bias = [2, 2] -> pre = [2, 2 - 1, 4 + 0.5];  [-1, 0] -> [-1, -1, -0.5]
    latents, recon = ae(x)
    assert torch.equal(latents, torch.tensor([[2.0, 1.0, 4.5], [0.0, 0.0, 0.0]]))
    # decoder @ [2, 1, 4.5] = [2 + 9, 1 - 4.5], plus pre_bias [1, 0]
    assert torch.equal(recon, torch.tensor([[12.0, -3.5], [1.0, 0.0]]))


def test_hand_example_topk() -> None:
    ae = SparseAutoencoder.from_state_dict(hand_sd("TopK", k=2))
    x = torch.tensor([[3.0, 2.0], [0.0, 0.0]])
    latents, recon = ae(x)
    # top 2 of [2, 1, 4.5] are latents 0 and 2; of [-1, -1, -0.5] the ReLU zeroes whatever is kept
    assert torch.equal(latents, torch.tensor([[2.0, 0.0, 4.5], [0.0, 0.0, 0.0]]))
    assert torch.equal(recon, torch.tensor([[2.0 + 9.0 + 1.0, -4.5], [1.0, 0.0]]))


@pytest.mark.parametrize(("activation", "k"), [("ReLU", None), ("TopK", 2), ("Identity", None)])
def test_matches_explicit_matmuls(activation: str, k: int | None) -> None:
    sd = openai_sd(10, 6, activation=activation, k=k, seed=4)
    ae = SparseAutoencoder.from_state_dict(sd)
    x = torch.randn(3, 5, 6, generator=torch.Generator().manual_seed(5))
    pre = (x - sd["pre_bias"]) @ sd["encoder.weight"].T + sd["latent_bias"]
    if activation == "ReLU":
        expected = pre.clamp(min=0)
    elif activation == "Identity":
        expected = pre
    else:
        expected = torch.zeros_like(pre)
        for b, s in itertools.product(range(3), range(5)):
            row = pre[b, s].tolist()
            for j in sorted(range(10), key=lambda j: -row[j])[:2]:
                expected[b, s, j] = max(row[j], 0.0)
    latents, recon = ae(x)
    torch.testing.assert_close(latents, expected)
    torch.testing.assert_close(recon, latents @ sd["decoder.weight"].T + sd["pre_bias"])
    torch.testing.assert_close(ae.decoder_directions(), sd["decoder.weight"].T)
    assert ae.decoder_directions().shape == (10, 6)


def test_topk_keeps_exactly_k() -> None:
    sd = openai_sd(32, 8, activation="TopK", k=2, seed=6)
    sd["latent_bias"] = sd["latent_bias"] + 100.0  # every pre-activation positive
    ae = SparseAutoencoder.from_state_dict(sd)
    x = torch.randn(50, 8, generator=torch.Generator().manual_seed(7))
    latents = ae.encode(x)
    assert torch.equal((latents != 0).sum(-1), torch.full((50,), 2))
    pre = ae.encode_pre_act(x)
    torch.testing.assert_close(latents.sum(-1), pre.topk(2, dim=-1).values.sum(-1))


def test_update_stats() -> None:
    ae = random_ae(4, 3, seed=0)
    ae.stats_last_nonzero.copy_(torch.tensor([5, 5, 5, 5]))
    ae.update_stats(torch.tensor([[[0.0, 1.0, 0.0, 0.0]], [[0.0, 0.0, 0.0, 2.0]]]))
    assert ae.stats_last_nonzero.tolist() == [6, 1, 6, 1]


# ------------------------------------------------------------ dead latents


DEAD = [1, 4, 7]


@pytest.mark.parametrize(("activation", "k"), [("ReLU", None), ("TopK", 3)])
def test_drop_dead_latents_by_frequency(activation: str, k: int | None) -> None:
    sd = openai_sd(10, 6, activation=activation, k=k, stats=True, seed=8)
    sd["latents_activation_frequency"][DEAD] = 0.0
    sd["latents_activation_frequency"][0] = 2e-8  # rare but alive
    sd["latent_bias"][DEAD] = -1000.0  # dead latents never fire
    ae = SparseAutoencoder.from_state_dict(sd)
    assert dead_latent_mask(ae).nonzero().squeeze(-1).tolist() == DEAD

    new, kept = drop_dead_latents(ae)
    live = [i for i in range(10) if i not in DEAD]
    assert kept.tolist() == live
    assert (new.n_latents, new.n_inputs, new.k) == (7, 6, k)
    x = torch.randn(4, 6, generator=torch.Generator().manual_seed(9))
    # equal up to float rounding (the matmuls have different shapes)
    torch.testing.assert_close(new.encode(x), ae.encode(x)[:, kept], atol=1e-6, rtol=1e-6)
    assert torch.equal(new.encode(x) != 0, ae.encode(x)[:, kept] != 0)
    torch.testing.assert_close(new.decode(new.encode(x)), ae(x)[1])
    out = new.state_dict_openai()
    for key in ("latents_activation_frequency", "latents_mean_square", "stats_last_nonzero"):
        assert torch.equal(out[key], sd[key][live])
    # the original is untouched
    assert ae.n_latents == 10


def test_drop_dead_latents_by_steps_since_nonzero() -> None:
    sd = openai_sd(10, 6, seed=10)
    sd["stats_last_nonzero"] = torch.tensor([0, 500, 3, 3, 10_000, 3, 3, 999, 100, 3])
    ae = SparseAutoencoder.from_state_dict(sd)
    assert not dead_latent_mask(ae).any()  # no frequency and no step threshold: all alive
    new, kept = drop_dead_latents(ae, max_steps_since_nonzero=400)
    assert kept.tolist() == [0, 2, 3, 5, 6, 8, 9]
    assert torch.equal(new.encoder.weight, sd["encoder.weight"][kept])
    assert torch.equal(new.decoder_directions(), sd["decoder.weight"].T[kept])


# ---------------------------------------------------------------- registry


def test_published_registry() -> None:
    expected = {
        "ae-mlp-post-act-v1": ("mlp.post_act", "mlp", "mlp_post_act"),
        "ae-resid-delta-mlp-v1": ("resid.delta_mlp", "mlp", "resid_delta_mlp"),
        "ae-mlp-post-act-v4": ("mlp.post_act", "mlp", "mlp_post_act_v4"),
        "ae-resid-delta-mlp-v4": ("resid.delta_mlp", "mlp", "resid_delta_mlp_v4"),
        "ae-resid-delta-attn-v4": ("resid.delta_attn", "attention", "resid_delta_attn_v4"),
    }
    for name, (reads, kind, folder) in expected.items():
        spec = AUTOENCODERS[name]
        assert (spec.reads, spec.kind, spec.n_layers) == (reads, kind, 12)
        assert spec.url_for_layer(7) == (
            "https://openaipublic.blob.core.windows.net/sparse-autoencoder/gpt2-small/"
            f"{folder}/autoencoders/7.pt"
        )
    assert (
        AUTOENCODERS["ae-mlp-post-act-v4"].latents_hook_name(3)
        == "blocks.3.mlp_autoencoder.latents"
    )
    assert (
        AUTOENCODERS["ae-resid-delta-attn-v4"].latents_hook_name(0)
        == "blocks.0.attn_autoencoder.latents"
    )
    with pytest.raises(ValueError):
        AUTOENCODERS["ae-mlp-post-act-v1"].url_for_layer(12)


def test_unknown_name_error() -> None:
    with pytest.raises(ValueError) as e:
        resolve_autoencoder_spec("ae-nonexistent")
    msg = _one_line(e)
    assert "ae-resid-delta-attn-v4" in msg and "ae-mlp-post-act-v1" in msg and "folder" in msg


def test_local_folder_and_register(tmp_path: Path) -> None:
    aes = [random_ae(16, 128, seed=i) for i in range(2)]
    spec = save_autoencoder_set(tmp_path / "mine", aes, reads="mlp.post_act")
    assert json.loads((tmp_path / "mine" / "autoencoder.json").read_text()) == {
        "reads": "mlp.post_act", "kind": "mlp", "n_layers": 2, "n_latents": 16,
    }  # fmt: skip
    assert spec_from_folder(tmp_path / "mine") == spec

    register_autoencoder("test-mine", spec)
    try:
        got_spec, loaded = load_autoencoder_set("test-mine", 2)
        assert got_spec == spec and len(loaded) == 2
        assert_same_sd(loaded[1].state_dict_openai(), aes[1].state_dict_openai())
        with pytest.raises(ValueError, match="already registered"):
            register_autoencoder("test-mine", spec_for("resid.delta_mlp", "mlp"))
    finally:
        del AUTOENCODERS["test-mine"]

    with pytest.raises(ValueError) as e:
        load_autoencoder_set(tmp_path / "mine", 12)
    assert "has 2 layers but the model has 12" in _one_line(e)

    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "autoencoder.json").write_text('{"reads": "mlp.post_act", "layers": 2}')
    with pytest.raises(ValueError) as e:
        spec_from_folder(tmp_path / "bad")
    assert "unknown fields ['layers']" in _one_line(e)

    (tmp_path / "empty").mkdir()
    with pytest.raises(FetchError) as fe:
        load_autoencoder_set(tmp_path / "empty", 2)
    assert "autoencoder.json" in _one_line(fe)


# --------------------------------------------------- attached to a model


def test_attach_leaves_logits_unchanged_and_exposes_latents() -> None:
    model = tiny_model()
    toks = tokens()
    clean = model(toks)
    mlp_aes = [random_ae(64, 32, seed=i) for i in range(2)]
    attn_aes = [random_ae(48, 32, seed=10 + i) for i in range(2)]
    names = attach(model, spec_for("resid.delta_mlp", "mlp"), mlp_aes)
    names += attach(model, spec_for("resid.delta_attn", "attention"), attn_aes)
    assert names == [
        "blocks.0.mlp_autoencoder.latents", "blocks.1.mlp_autoencoder.latents",
        "blocks.0.attn_autoencoder.latents", "blocks.1.attn_autoencoder.latents",
    ]  # fmt: skip
    reads = [hook_name("resid.delta_mlp", 1), hook_name("resid.delta_attn", 0)]
    logits, cache = model.run_with_cache(toks, [*reads, names[1], names[2]])
    torch.testing.assert_close(logits, clean, atol=1e-5, rtol=0)
    # the latents hook points see encode() of the activation they read
    torch.testing.assert_close(cache[names[1]], mlp_aes[1].encode(cache[reads[0]]))
    torch.testing.assert_close(cache[names[2]], attn_aes[0].encode(cache[reads[1]]))

    # a second mlp-kind set would reuse the same latents hook names
    with pytest.raises(ValueError, match="already used"):
        attach(model, spec_for("mlp.post_act", "mlp"), [random_ae(8, 128, seed=0)] * 2)
    with pytest.raises(ValueError, match="reads 32 inputs but that activation has 128"):
        attach(model, spec_for("mlp.post_act", "attention"), [random_ae(8, 32, seed=0)] * 2)

    model.remove_autoencoders()
    torch.testing.assert_close(model(toks), clean, atol=1e-6, rtol=0)


def _zero_latent(j: int) -> Callable[[Tensor], Tensor]:
    def fn(x: Tensor) -> Tensor:
        x = x.clone()
        x[..., j] = 0
        return x

    return fn


@pytest.mark.parametrize("reads", ["resid.delta_mlp", "mlp.post_act"])
def test_zero_ablating_a_latent_subtracts_its_write(reads: str) -> None:
    model = tiny_model()
    layer = 1
    n_inputs = 32 if reads == "resid.delta_mlp" else 128
    ae = random_ae(64, n_inputs, seed=2)
    [latents_name] = attach(model, spec_for(reads, "mlp"), [None, ae])
    toks = tokens()
    resid = hook_name("resid.post_mlp", layer)
    _, clean = model.run_with_cache(toks, [latents_name, resid])
    a = clean[latents_name]
    j = int(a.reshape(-1, 64).sum(0).argmax())  # the most active latent
    assert (a[..., j] > 0).any()

    with model.hooks(fwd={latents_name: _zero_latent(j)}):
        _, ablated = model.run_with_cache(toks, [resid])

    write = ae.decoder_directions()[j]  # (n_inputs,)
    if reads == "mlp.post_act":  # the MLP's output layer maps it into the residual stream
        write = model.xf_layers[layer].mlp.out_layer.weight.detach() @ write  # type: ignore[union-attr,operator]
    expected = clean[resid] - a[..., j, None] * write
    torch.testing.assert_close(ablated[resid], expected, atol=1e-5, rtol=0)


@pytest.mark.parametrize("reads", ["resid.delta_mlp", "mlp.post_act"])
def test_latents_gradient_is_decoder_transpose_times_activation_gradient(reads: str) -> None:
    model = tiny_model()
    toks = tokens(1)
    layer = 0
    at = hook_name(reads, layer)
    weights = torch.randn(2, 7, 50, generator=torch.Generator().manual_seed(3))

    # the plain model: gradient of the loss with respect to the activation the autoencoder reads
    model_logits, cache = model.run_with_cache(toks, [at])
    (grad_act,) = torch.autograd.grad((model_logits * weights).sum(), cache[at])
    grad_emb_plain = _grad_of_embedding(model, toks, weights)

    n_inputs = 32 if reads == "resid.delta_mlp" else 128
    ae = random_ae(64, n_inputs, seed=4)
    [latents_name] = attach(model, spec_for(reads, "mlp"), [ae, None])
    seen: list[Tensor] = []
    with model.hooks(bwd={latents_name: lambda g: seen.append(g)}):
        (model(toks) * weights).sum().backward()
    assert len(seen) == 1
    expected = grad_act @ ae.decoder.weight  # decoder^T @ grad, per position: (b, s, n_latents)
    torch.testing.assert_close(seen[0], expected, atol=1e-6, rtol=1e-4)
    assert expected.abs().max() > 1e-4  # not trivially zero

    # and the autoencoder does not change the gradients flowing further upstream
    model.zero_grad()
    torch.testing.assert_close(
        _grad_of_embedding(model, toks, weights), grad_emb_plain, atol=1e-6, rtol=1e-4
    )


def _grad_of_embedding(model: Transformer, toks: Tensor, weights: Tensor) -> Tensor:
    model.zero_grad()
    (model(toks) * weights).sum().backward()
    grad = model.tok_embed.weight.grad
    assert grad is not None
    out = grad.clone()
    model.zero_grad()
    return out
