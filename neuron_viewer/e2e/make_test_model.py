"""Create the small random model the end-to-end tests serve (until the demo model exists).

    python neuron_viewer/e2e/make_test_model.py FOLDER

FOLDER gets the model: 2 layers, d_model 64, 4 heads, GPT-2's vocabulary and tokenizer, seeded
weights (a few MB, written in seconds). FOLDER/autoencoders/ae-mlp and .../ae-attn get random
sparse autoencoders (32 latents per layer) on the MLP activations and on the attention writes,
so that the viewer's latent views can be tested too. Does nothing when they already exist.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

from neuron_explainer.models.autoencoder import SparseAutoencoder, save_autoencoder_set
from neuron_explainer.models.loading import save_model
from neuron_explainer.models.transformer import Transformer, TransformerConfig

N_LATENTS = 32


def random_autoencoder(n_inputs: int, seed: int) -> SparseAutoencoder:
    ae = SparseAutoencoder(N_LATENTS, n_inputs)
    ae.reset_parameters(seed=seed)
    with torch.no_grad():  # small positive latent biases: some latents fire on any prompt
        gen = torch.Generator().manual_seed(seed + 1)
        ae.pre_bias.copy_(torch.randn(n_inputs, generator=gen) * 0.01)
        ae.latent_bias.copy_(torch.randn(N_LATENTS, generator=gen).abs() * 0.01)
    return ae


def make_test_model(folder: Path) -> Path:
    cfg = TransformerConfig(n_layers=2, d_model=64, n_heads=4, n_vocab=50257, ctx_window=128)
    if not (folder / "config.json").is_file():
        save_model(Transformer(cfg).init_weights(seed=0), folder, overwrite=True)
    for name, reads, width, seed in (
        ("ae-mlp", "mlp.post_act", cfg.d_mlp, 10),
        ("ae-attn", "resid.delta_attn", cfg.d_model, 20),
    ):
        ae_folder = folder / "autoencoders" / name
        if not (ae_folder / "autoencoder.json").is_file():
            aes = [random_autoencoder(width, seed + layer) for layer in range(cfg.n_layers)]
            save_autoencoder_set(ae_folder, aes, reads=reads)
    return folder


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: make_test_model.py FOLDER")
    print(make_test_model(Path(sys.argv[1])))
