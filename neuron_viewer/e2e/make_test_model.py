"""Create a small random model for the end-to-end tests, with random autoencoders.

    python neuron_viewer/e2e/make_test_model.py FOLDER [--family gpt2|llama]

gpt2 (default): 2 layers, d_model 64, 4 heads, GPT-2's vocabulary and tokenizer, seeded weights,
in our layout. llama: a Llama-style model (grouped-query attention, SwiGLU, RMSNorm, rotary
positions) built by `transformers` in the Hugging Face layout, with its own small BPE
tokenizer.json that puts <bos> first and knows the e2e tests' words. FOLDER/autoencoders/ae-mlp
and .../ae-attn get random sparse autoencoders (32 latents per layer) on the MLP activations and
on the attention writes, so that the viewer's latent views are tested too. Prints a JSON line
with facts the tests check (the model's shapes, how many tokens the node page's typed prompt
has). Does nothing that is already there.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from neuron_explainer.models.autoencoder import SparseAutoencoder, save_autoencoder_set
from neuron_explainer.models.loading import load_model, save_model, tokenizer_of
from neuron_explainer.models.transformer import Transformer, TransformerConfig

N_LATENTS = 32
TYPED_PROMPT = "The cat sat on the mat"  # what the node page test types
# the words the e2e tests use as prompts and targets, for the Llama-style tokenizer
E2E_TEXTS = [
    "When Mary and John went to the store, John gave a drink to Mary. "
    "When Alice and Tom went to the park, Tom handed a ball to Alice. "
    "The cat sat on the mat. Paris, France. Ottawa, Canada. Berlin, Germany. Alice Smith."
]


def random_autoencoder(n_inputs: int, seed: int) -> SparseAutoencoder:
    ae = SparseAutoencoder(N_LATENTS, n_inputs)
    ae.reset_parameters(seed=seed)
    with torch.no_grad():  # small positive latent biases: some latents fire on any prompt
        gen = torch.Generator().manual_seed(seed + 1)
        ae.pre_bias.copy_(torch.randn(n_inputs, generator=gen) * 0.01)
        ae.latent_bias.copy_(torch.randn(N_LATENTS, generator=gen).abs() * 0.01)
    return ae


def make_test_model(folder: Path, family: str = "gpt2") -> dict[str, object]:
    if not (folder / "config.json").is_file():
        if family == "gpt2":
            cfg = TransformerConfig(n_layers=2, d_model=64, n_heads=4, n_vocab=50257, ctx_window=128)
            save_model(Transformer(cfg).init_weights(seed=0), folder, overwrite=True)
        else:
            from neuron_explainer.models.random_models import save_random

            save_random(family, folder, texts=E2E_TEXTS * 8)
    model = load_model(folder)
    cfg = model.cfg
    for name, reads, width, seed in (
        ("ae-mlp", "mlp.post_act", cfg.d_mlp, 10),
        ("ae-attn", "resid.delta_attn", cfg.d_model, 20),
    ):
        ae_folder = folder / "autoencoders" / name
        if not (ae_folder / "autoencoder.json").is_file():
            aes = [random_autoencoder(width, seed + layer) for layer in range(cfg.n_layers)]
            save_autoencoder_set(ae_folder, aes, reads=reads)
    return {
        "folder": str(folder),
        "heads": cfg.n_heads,
        "neurons": cfg.d_mlp,
        "latents": N_LATENTS,
        "typedPromptTokens": len(tokenizer_of(model).encode_prompt(TYPED_PROMPT)),
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("folder", type=Path)
    parser.add_argument("--family", default="gpt2", choices=["gpt2", "llama"])
    args = parser.parse_args()
    print(json.dumps(make_test_model(args.folder, args.family)))
