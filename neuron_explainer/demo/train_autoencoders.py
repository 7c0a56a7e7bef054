"""Train the demo model's sparse autoencoders (TopK) on its MLP and attention outputs.

    python -m neuron_explainer.demo.train_autoencoders --model neuron_explainer/demo/model \
        --out neuron_explainer/demo/autoencoders

For every layer, one autoencoder reads `resid.delta_mlp` (saved under OUT/mlp/) and one reads
`resid.delta_attn` (OUT/attn/), in the published layout (`save_autoencoder_set`). Activations are
collected in one streaming pass of the model over training data (the same mix of corpus text,
IOI sentences and repeats it was trained on; never heldout/), split 90/10 into training and
evaluation activations. Training: TopK(k) latents, MSE loss plus an AuxK loss that revives
latents that stopped firing, unit-norm decoder columns, Adam. Reported per autoencoder, on the
evaluation activations: fraction of variance explained (FVE), mean L0, dead fraction (latents
that never fire); also written to OUT/metrics.json.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from neuron_explainer.demo import data
from neuron_explainer.models.autoencoder import SparseAutoencoder, save_autoencoder_set
from neuron_explainer.models.loading import load_model, model_encoding
from neuron_explainer.models.tokenizer import ENDOFTEXT
from neuron_explainer.models.transformer import Transformer

SITES = {"mlp": "resid.delta_mlp", "attn": "resid.delta_attn"}


@torch.no_grad()
def collect(
    model: Transformer, enc: Any, corpus_dir: str, n_tokens: int, seed: int, batch: int = 16,
    sites: dict[str, str] = SITES,
) -> dict[str, list[Tensor]]:
    """{site: [per-layer (n_tokens, width) fp32 activations]} for `sites` (name -> location)."""
    eot = enc.encode_single_token(ENDOFTEXT)
    docs = enc.encode_ordinary_batch(data.read_corpus(corpus_dir))
    corpus = np.concatenate([np.array([*d, eot], dtype=np.int32) for d in docs])
    names = data.single_token_names(enc)
    pool = enc.encode_ordinary_batch(data.ioi_training_sentences(20_000, names, seed=seed + 7))
    (newline,) = enc.encode_ordinary("\n")
    ctx = model.cfg.ctx_window
    stream = data.MixedStream(
        corpus, pool, vocab=enc.n_vocab, eot=eot, newline=newline, ctx=ctx, seed=seed + 1000
    )
    mix = data.Mix(0.7, 0.2, 0.1)
    names_ = [
        f"blocks.{layer}.{loc}" for loc in sites.values() for layer in range(model.cfg.n_layers)
    ]
    acts: dict[str, list[Tensor]] = {n: [] for n in names_}
    got, step = 0, 0
    while got < n_tokens:
        tokens = torch.from_numpy(stream.batch(step, batch, mix))[:, :ctx]
        _, cache = model.run_with_cache(tokens, names_)
        for n in names_:
            acts[n].append(cache[n].reshape(-1, cache[n].shape[-1]).float())
        got += tokens.numel()
        step += 1
    out: dict[str, list[Tensor]] = {}
    for site, loc in sites.items():
        out[site] = [
            torch.cat(acts[f"blocks.{layer}.{loc}"])[:n_tokens]
            for layer in range(model.cfg.n_layers)
        ]
    return out


def fve_l0(ae: SparseAutoencoder, x: Tensor) -> dict[str, Any]:
    with torch.no_grad():
        err, var, l0, fired = 0.0, 0.0, 0.0, torch.zeros(ae.n_latents, dtype=torch.bool)
        mean = x.mean(0)
        freq = torch.zeros(ae.n_latents)
        for i in range(0, len(x), 4096):
            xb = x[i : i + 4096]
            lat, rec = ae(xb)
            err += float((xb - rec).pow(2).sum())
            var += float((xb - mean).pow(2).sum())
            nz = lat != 0
            l0 += float(nz.sum())
            fired |= nz.any(0)
            freq += nz.float().sum(0)
    return {
        "fve": 1 - err / var,
        "mean_l0": l0 / len(x),
        "dead_fraction": float((~fired).float().mean()),
        "freq": freq / len(x),
    }


def train_one(
    x: Tensor,
    n_latents: int,
    k: int,
    *,
    steps: int,
    batch: int,
    lr: float,
    seed: int,
    aux_k: int = 64,
    dead_after: int = 200,
) -> SparseAutoencoder:
    """Trains on x / c (c: the inputs' RMS distance from their mean, so that the inputs have unit
    total variance), then folds c back in: with unit-norm decoder columns and a ReLU/TopK
    activation (positively homogeneous), the AE on raw x has the same encoder and decoder
    weights and c times the biases; its latents are c times larger."""
    torch.manual_seed(seed)
    d = x.shape[1]
    c = float((x - x.mean(0)).pow(2).sum(1).mean().sqrt().clamp(min=1e-8))
    x = x / c
    ae = SparseAutoencoder(n_latents, d, "topk", k=k)
    ae.reset_parameters(seed=seed)
    with torch.no_grad():
        ae.pre_bias.copy_(x[:20000].median(0).values)
    opt = torch.optim.Adam(ae.parameters(), lr=lr, betas=(0.9, 0.999))
    gen = torch.Generator().manual_seed(seed)
    since_fired = torch.zeros(n_latents, dtype=torch.long)
    var = 1.0
    for step in range(steps):
        idx = torch.randint(0, len(x), (batch,), generator=gen)
        xb = x[idx]
        pre = ae.encode_pre_act(xb)
        top = pre.topk(k, dim=-1)
        lat = torch.zeros_like(pre).scatter(-1, top.indices, F.relu(top.values))
        rec = ae.decode(lat)
        loss = (xb - rec).pow(2).sum(1).mean() / var
        fired = (lat > 0).any(0)
        since_fired = torch.where(fired, 0, since_fired + 1)
        dead = since_fired > dead_after
        if dead.any():  # AuxK: dead latents learn to explain the residual error
            kk = min(aux_k, int(dead.sum()))
            dpre = pre.masked_fill(~dead, float("-inf")).topk(kk, dim=-1)
            aux_lat = torch.zeros_like(pre).scatter(-1, dpre.indices, F.relu(dpre.values))
            aux_rec = F.linear(aux_lat, ae.decoder.weight)
            resid = (xb - rec).detach()
            loss = loss + 0.03 * (resid - aux_rec).pow(2).sum(1).mean() / var
        lr_now = lr * min(1.0, (step + 1) / 50) * (0.1 + 0.9 * (1 - step / steps))
        for g in opt.param_groups:
            g["lr"] = lr_now
        opt.zero_grad(set_to_none=True)
        loss.backward()
        # keep decoder columns unit norm: remove the gradient part that changes their norm
        with torch.no_grad():
            w = ae.decoder.weight
            g_ = w.grad
            if g_ is not None:
                g_ -= w * (w * g_).sum(0, keepdim=True)
        opt.step()
        with torch.no_grad():
            ae.decoder.weight.div_(ae.decoder.weight.norm(dim=0, keepdim=True).clamp(min=1e-8))
        ae.update_stats(lat.detach())
    with torch.no_grad():
        ae.pre_bias.mul_(c)
        ae.latent_bias.mul_(c)
    return ae


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=str(Path(__file__).parent / "model"))
    ap.add_argument("--out", default=str(Path(__file__).parent / "autoencoders"))
    ap.add_argument("--corpus-dir", default=str(data.DEFAULT_CORPUS_DIR))
    ap.add_argument("--tokens", type=int, default=200_000, help="activations collected per site")
    ap.add_argument("--mlp-latents", type=int, default=768)
    ap.add_argument("--attn-latents", type=int, default=768)
    ap.add_argument("--k", type=int, default=24)
    ap.add_argument("--steps", type=int, default=2500)
    ap.add_argument("--batch", type=int, default=512)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--model-name", default="demo-gpt2")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    t0 = time.time()
    model = load_model(args.model)
    enc = model_encoding(model)
    acts = collect(model, enc, args.corpus_dir, args.tokens, args.seed)
    print(f"collected {args.tokens} activations per site in {time.time() - t0:.0f}s", flush=True)
    n_eval = args.tokens // 10
    metrics: dict[str, Any] = {"args": vars(args), "sets": {}}
    for site, reads in SITES.items():
        n_latents = args.mlp_latents if site == "mlp" else args.attn_latents
        aes, rows = [], []
        for layer, x in enumerate(acts[site]):
            # contiguous split: the evaluation activations come from other contexts
            train_x, eval_x = x[:-n_eval], x[-n_eval:]
            t = time.time()
            ae = train_one(
                train_x,
                n_latents,
                args.k,
                steps=args.steps,
                batch=args.batch,
                lr=args.lr,
                seed=args.seed + layer,
            )
            m = fve_l0(ae, eval_x)
            freq = m.pop("freq")
            ae.latents_activation_frequency = fve_l0(ae, x)["freq"]
            ae.requires_grad_(False)
            aes.append(ae)
            rows.append({"layer": layer, **m})
            print(
                f"{site} layer {layer}: FVE {m['fve']:.3f}, L0 {m['mean_l0']:.1f}, "
                f"dead {m['dead_fraction']:.1%} ({time.time() - t:.0f}s)",
                flush=True,
            )
            del freq
        save_autoencoder_set(Path(args.out) / site, aes, reads=reads, model=args.model_name)
        metrics["sets"][site] = {
            "reads": reads,
            "n_latents": n_latents,
            "k": args.k,
            "layers": rows,
        }
    Path(args.out).mkdir(parents=True, exist_ok=True)
    (Path(args.out) / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    print(f"done in {time.time() - t0:.0f}s")


if __name__ == "__main__":
    main()
