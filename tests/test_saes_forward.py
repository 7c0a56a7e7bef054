"""Inside the forward pass: SAEs attached to our GPT-2 at the hook points TransformerLens names map
to give the same latents and reconstructions as sae-lens' HookedSAETransformer on the same random
GPT-2-shaped model, several SAEs at once, with outputs unchanged (error term kept)."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import pytest
import sae_lens as sl
import torch
import transformers
from sae_lens.saes.sae import SAEMetadata
from transformer_lens import HookedTransformerConfig
from transformer_lens.pretrained.weight_conversions.gpt2 import convert_gpt2_weights

from neuron_explainer.models.loading import from_transformers
from neuron_explainer.models.saes import load_sae
from neuron_explainer.models.transformer import Transformer

warnings.filterwarnings("ignore", module="sae_lens")
warnings.filterwarnings("ignore", module="transformer_lens")
N_LAYERS, D_MODEL, N_HEADS, D_MLP, VOCAB, CTX = 2, 64, 4, 256, 300, 32


@pytest.fixture(scope="module")
def models() -> tuple[Transformer, transformers.GPT2LMHeadModel, HookedTransformerConfig]:
    torch.manual_seed(0)
    hf_cfg = transformers.GPT2Config(
        n_layer=N_LAYERS, n_embd=D_MODEL, n_head=N_HEADS, n_positions=CTX, vocab_size=VOCAB,
        activation_function="gelu_new", resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
    )
    hf = transformers.GPT2LMHeadModel(hf_cfg).eval()
    with torch.no_grad():  # nonzero biases and LayerNorm weights, so that nothing is trivially zero
        for name, p in hf.named_parameters():
            if name.endswith("bias") or ".ln_" in name:
                p.add_(torch.randn_like(p) * 0.1)
    ours = from_transformers(hf)
    ours.requires_grad_(False)
    tl_cfg = HookedTransformerConfig(
        n_layers=N_LAYERS, d_model=D_MODEL, n_ctx=CTX, d_head=D_MODEL // N_HEADS, n_heads=N_HEADS,
        d_mlp=D_MLP, d_vocab=VOCAB, act_fn="gelu_new", normalization_type="LN",
        original_architecture="GPT2LMHeadModel", default_prepend_bos=False,
    )
    return ours, hf, tl_cfg


def hooked_sae_transformer(hf: Any, tl_cfg: HookedTransformerConfig, *, center_writing_weights: bool) -> Any:
    tl = sl.HookedSAETransformer(tl_cfg)
    tl.load_and_process_state_dict(
        convert_gpt2_weights(hf, tl_cfg),
        fold_ln=False, center_writing_weights=center_writing_weights, center_unembed=False, fold_value_biases=False,
    )
    return tl.eval()


def saved_sae(kind: str, hook: str, d_in: int, folder: Path, seed: int, **cfg: Any) -> Any:
    gen = torch.Generator().manual_seed(seed)
    meta = SAEMetadata(hook_name=hook, model_name="random-gpt2", model_from_pretrained_kwargs=cfg.pop("kwargs", {}))
    sae = {
        "standard": lambda: sl.StandardSAE(sl.StandardSAEConfig(d_in=d_in, d_sae=96, metadata=meta, **cfg)),
        "topk": lambda: sl.TopKSAE(sl.TopKSAEConfig(d_in=d_in, d_sae=96, k=8, metadata=meta, **cfg)),
        "jumprelu": lambda: sl.JumpReLUSAE(sl.JumpReLUSAEConfig(d_in=d_in, d_sae=96, metadata=meta, **cfg)),
        "gated": lambda: sl.GatedSAE(sl.GatedSAEConfig(d_in=d_in, d_sae=96, metadata=meta, **cfg)),
    }[kind]()
    with torch.no_grad():
        for name, p in sae.named_parameters():
            scale = 0.15 if name == "threshold" else (1 / p.shape[0] ** 0.5 if name.startswith("W_") else 0.1)
            p.copy_((torch.rand if name == "threshold" else torch.randn)(p.shape, generator=gen) * scale)
    sae.save_model(folder)
    return sl.SAE.load_from_disk(folder)


SPECS = [  # (architecture, TransformerLens hook, extra config)
    ("standard", "blocks.1.hook_resid_pre", {}),
    ("topk", "blocks.0.hook_mlp_out", {}),
    ("jumprelu", "blocks.1.attn.hook_z", {"reshape_activations": "hook_z"}),
    ("gated", "blocks.0.hook_attn_out", {"apply_b_dec_to_input": False}),
    ("standard", "blocks.1.hook_resid_post", {}),
    ("topk", "blocks.1.mlp.hook_post", {}),
]


def test_same_latents_and_reconstructions_as_hooked_sae_transformer(models: Any, tmp_path: Path) -> None:
    ours_model, hf, tl_cfg = models
    tl = hooked_sae_transformer(hf, tl_cfg, center_writing_weights=False)
    tokens = torch.randint(0, VOCAB, (2, 12), generator=torch.Generator().manual_seed(3))
    clean = ours_model(tokens)
    torch.testing.assert_close(tl(tokens), clean, atol=1e-4, rtol=1e-4)  # same model to begin with

    refs, ours = [], []
    for i, (kind, hook, cfg) in enumerate(SPECS):
        d_in = D_MLP if "mlp.hook_post" in hook else D_MODEL
        refs.append(saved_sae(kind, hook, d_in, tmp_path / str(i), seed=i, **cfg))
        ours.append(load_sae(tmp_path / str(i)))
    _, cache = tl.run_with_cache_with_saes(tokens, saes=refs, use_error_term=True)
    names = []
    for i, sae in enumerate(ours):
        assert sae.reads is not None
        names.append(f"sae_{i}.latents")
        ours_model.add_autoencoder(sae.reads, sae, names[-1])
    try:
        logits, our_cache = ours_model.run_with_cache(tokens, names)
    finally:
        ours_model.remove_autoencoders()
    torch.testing.assert_close(logits, clean, atol=1e-5, rtol=1e-5)  # the error term keeps outputs
    for i, ((_, hook, _), sae) in enumerate(zip(SPECS, ours, strict=True)):
        ref_latents = cache[f"{hook}.hook_sae_acts_post"]
        assert 0 < (ref_latents > 0).float().mean() < 1, hook
        torch.testing.assert_close(our_cache[names[i]], ref_latents, atol=1e-5, rtol=1e-5)
        recon = sae.decode(our_cache[names[i]])
        ref_recon = cache[f"{hook}.hook_sae_recons"]
        torch.testing.assert_close(recon.reshape(ref_recon.shape), ref_recon, atol=1e-5, rtol=1e-5)


def test_center_writing_weights_in_the_forward_pass(models: Any, tmp_path: Path) -> None:
    """An SAE trained on a TransformerLens model with centered writing weights, attached to our
    uncentered model, sees what it saw in training."""
    ours_model, hf, tl_cfg = models
    tl = hooked_sae_transformer(hf, tl_cfg, center_writing_weights=True)
    tokens = torch.randint(0, VOCAB, (1, 10), generator=torch.Generator().manual_seed(4))
    ref = saved_sae("standard", "blocks.1.hook_resid_pre", D_MODEL, tmp_path / "c", seed=7, kwargs={"center_writing_weights": True})
    sae = load_sae(tmp_path / "c")
    assert sae.center_input and sae.reads == "blocks.0.resid.post_mlp"
    _, cache = tl.run_with_cache_with_saes(tokens, saes=[ref], use_error_term=True)
    _, plain = ours_model.run_with_cache(tokens, ["blocks.0.resid.post_mlp"])
    assert not torch.allclose(plain["blocks.0.resid.post_mlp"], cache["blocks.1.hook_resid_pre.hook_sae_input"], atol=1e-3)
    ours_model.add_autoencoder(sae.reads, sae, "centered.latents")
    try:
        _, our_cache = ours_model.run_with_cache(tokens, ["centered.latents"])
    finally:
        ours_model.remove_autoencoders()
    torch.testing.assert_close(our_cache["centered.latents"], cache["blocks.1.hook_resid_pre.hook_sae_acts_post"], atol=1e-5, rtol=1e-5)
