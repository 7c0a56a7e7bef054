"""Community sparse coders inside our forward pass, on several families: SAEs on the residual
stream and on sublayer outputs, transcoders (with and without a skip connection) replacing the
MLP. Outputs and gradients are unchanged, latents are the coder's own encoding of the activation
it reads, and ablating a latent equals removing its decoder row from what it writes."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import Tensor

from neuron_explainer.models.loading import load_model
from neuron_explainer.models.random_models import save_random
from neuron_explainer.models.saes import SparseCoder, SparseCoderInfo
from neuron_explainer.models.saes.attach import attach_as_node, conventions_for
from neuron_explainer.models.transformer import Transformer, TransformerConfig

pytest.importorskip("transformers")
FAMILIES = ("gpt2", "llama", "gemma2", "gpt_neox")


@pytest.fixture(scope="module", params=FAMILIES)
def model(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Transformer:
    torch.set_num_threads(1)
    folder, _ = save_random(request.param, tmp_path_factory.mktemp(request.param))
    m = load_model(folder)
    m.requires_grad_(False)
    return m


def random_coder(d_in: int, n: int, hook_in: str, hook_out: str | None = None, *, skip: bool = False,
                 d_out: int | None = None, seed: int = 0, activation: str = "relu") -> SparseCoder:
    transcoder = hook_out is not None
    info = SparseCoderInfo(format="test", source=f"random {hook_in}", architecture=activation, hook_in=hook_in, hook_out=hook_out)
    coder = SparseCoder(d_in, n, activation=activation, transcoder=transcoder, skip=skip, d_out=d_out, info=info)  # type: ignore[arg-type]
    gen = torch.Generator().manual_seed(seed)
    # decoder rows about as long as the activations they rebuild: rounding of the error term stays at float precision
    weights = {name: torch.randn(p.shape, generator=gen) * (0.5 / p.shape[-1] ** 0.5 if p.ndim > 1 else 0.05) for name, p in coder.named_parameters()}
    if "threshold" in weights:
        weights["threshold"] = weights["threshold"].abs()
    coder.load_weights(weights, source="random")
    return coder


def x_tokens(model: Transformer) -> Tensor:
    return torch.randint(3, 300, (2, 10), generator=torch.Generator().manual_seed(1))


def _leaf(store: dict[str, Tensor], name: str) -> object:
    def fn(x: Tensor) -> Tensor:
        store[name] = x.detach().requires_grad_(True)
        return store[name]

    return fn


def _logits_and_input_grad(model: Transformer, tokens: Tensor) -> tuple[Tensor, Tensor]:
    store: dict[str, Tensor] = {}
    with model.hooks(fwd={"resid.post_emb": _leaf(store, "emb")}):
        logits = model(tokens)
    (g,) = torch.autograd.grad((logits * torch.linspace(-1, 1, logits.shape[-1])).sum(), store["emb"])
    return logits.detach(), g


def _coders(model: Transformer) -> list[SparseCoder]:
    cfg = model.cfg
    last = cfg.n_layers - 1
    coders = [
        random_coder(cfg.d_model, 24, f"blocks.{last}.hook_resid_post", seed=1),
        random_coder(cfg.d_model, 20, "blocks.0.hook_mlp_out", seed=2, activation="jumprelu"),
        random_coder(cfg.d_model, 16, "blocks.0.ln2.hook_normalized", "blocks.0.hook_mlp_out", seed=3),
    ]
    if last >= 1:
        coders.append(random_coder(cfg.d_model, 16, f"blocks.{last}.ln2.hook_normalized", f"blocks.{last}.hook_mlp_out", skip=True, seed=4))
    if not cfg.sandwich_norms:  # an attention-output SAE (Gemma's post-norms rename hook_attn_out)
        coders.append(random_coder(cfg.d_model, 12, f"blocks.{last}.hook_attn_out", seed=5))
    return coders


def test_outputs_and_gradients_are_unchanged(model: Transformer) -> None:
    tokens = x_tokens(model)
    plain = _logits_and_input_grad(model, tokens)
    try:
        attached = [attach_as_node(model, c) for c in _coders(model)]
        assert len({a.latents for a in attached}) == len(attached)
        with_coders = _logits_and_input_grad(model, tokens)
    finally:
        model.detach_all()
    torch.testing.assert_close(with_coders[0], plain[0], atol=1e-5, rtol=1e-5)
    # the error term is added back in float: outputs move by rounding, gradients (a sum over the
    # whole vocabulary) a little more, so their tolerance is relative to their own scale
    scale = float(plain[1].abs().max())
    torch.testing.assert_close(with_coders[1], plain[1], atol=1e-4 * scale, rtol=1e-4)


def test_latents_are_the_coders_encoding_of_what_it_reads(model: Transformer) -> None:
    tokens = x_tokens(model)
    try:
        attached = [attach_as_node(model, c) for c in _coders(model)]
        names = [a.latents for a in attached] + [a.reads for a in attached]
        with torch.no_grad():
            _, cache = model.run_with_cache(tokens, names)
    finally:
        model.detach_all()
    for a in attached:
        expected = a.coder.encode(cache[a.reads])
        assert expected.abs().sum() > 0, a.latents
        torch.testing.assert_close(cache[a.latents], expected, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("which", ["transcoder", "skip transcoder", "resid sae"])
def test_ablating_a_latent_removes_its_decoder_row(model: Transformer, which: str) -> None:
    cfg = model.cfg
    last = cfg.n_layers - 1
    coder = {
        "transcoder": lambda: random_coder(cfg.d_model, 16, "blocks.0.ln2.hook_normalized", "blocks.0.hook_mlp_out", seed=3),
        "skip transcoder": lambda: random_coder(cfg.d_model, 16, f"blocks.{last}.ln2.hook_normalized", f"blocks.{last}.hook_mlp_out", skip=True, seed=4),
        "resid sae": lambda: random_coder(cfg.d_model, 24, "blocks.0.hook_resid_post", seed=1),
    }[which]()
    tokens = x_tokens(model)[:1]
    try:
        att = attach_as_node(model, coder)
        with torch.no_grad():
            _, cache = model.run_with_cache(tokens, [att.latents])
            acts = cache[att.latents][0]
            token, latent = (acts > 0).nonzero()[0].tolist()

            def zero(x: Tensor) -> Tensor:
                x = x.clone()
                x[0, token, latent] = 0
                return x

            with model.hooks(fwd={att.latents: zero}):
                ablated = model(tokens)
    finally:
        model.detach_all()
    # reference without the coder: the written activation minus that latent's decoder row
    row = acts[token, latent] * coder.W_dec[latent]

    def subtract(x: Tensor) -> Tensor:
        x = x.clone()
        x[0, token] -= row.to(x.dtype)
        return x

    with torch.no_grad(), model.hooks(fwd={att.writes: subtract}):
        expected = model(tokens)
    torch.testing.assert_close(ablated, expected, atol=1e-5, rtol=1e-5)
    assert (ablated - model(tokens)).abs().max() > 1e-6


def test_coders_that_are_not_nodes_are_refused_in_one_line(model: Transformer) -> None:
    cfg = model.cfg
    for coder in (
        random_coder(cfg.d_model, 8, "blocks.0.ln1.hook_normalized"),  # an SAE on an input
        random_coder(cfg.d_model, 8, "blocks.0.ln1.hook_normalized", "blocks.0.hook_mlp_out"),  # not the MLP's input
        random_coder(cfg.d_model + 1, 8, "blocks.0.hook_resid_post"),  # the wrong width
    ):
        with pytest.raises(ValueError) as e:
            attach_as_node(model, coder)
        assert "\n" not in str(e.value)
    assert not model.attachments()
    # one coder of a kind per layer
    attach_as_node(model, random_coder(cfg.d_model, 8, "blocks.0.hook_resid_post"))
    try:
        with pytest.raises(ValueError, match="already has resid latents"):
            attach_as_node(model, random_coder(cfg.d_model, 8, "blocks.0.hook_resid_post"))
    finally:
        model.detach_all()


def test_conventions_follow_the_family(model: Transformer) -> None:
    conv = conventions_for(model.cfg)
    assert conv.parallel_attn_mlp == model.cfg.parallel
    assert conv.norms_after_sublayers == model.cfg.sandwich_norms


def test_a_transcoder_must_read_before_it_writes(tmp_path: Path) -> None:
    m = Transformer(TransformerConfig(n_layers=2, d_model=16, n_heads=2, n_vocab=50))
    with pytest.raises(ValueError, match="read before it writes"):
        m.attach(random_coder(16, 4, "blocks.1.hook_resid_post", "blocks.0.hook_mlp_out"), "blocks.1.resid.post_mlp", "t.latents", writes="blocks.0.resid.delta_mlp")
