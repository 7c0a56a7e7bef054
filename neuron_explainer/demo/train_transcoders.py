"""Train the demo model's transcoders (MLP in -> MLP out) and residual-stream SAEs, every layer.

    python -m neuron_explainer.demo.train_transcoders --model neuron_explainer/demo/model \
        --out neuron_explainer/demo

Transcoder L reads `blocks.L.mlp_ln.normalized` (the MLP's input before its norm's gain,
TransformerLens' `ln2.hook_normalized`) and predicts `blocks.L.resid.delta_mlp` (the MLP's
output); residual SAE L reads and rebuilds `blocks.L.resid.post_mlp` (`hook_resid_post`).
Activations come from one streaming pass over the training mix the autoencoders used
(train_autoencoders.collect; never heldout/), split 90/10 into training and evaluation.

Training is BatchTopK (Bussmann et al. 2024): per batch, the k * batch largest ReLU'd
pre-activations are kept over the whole batch, so a token may use more or fewer than k latents;
decoder rows are kept unit-norm; an AuxK term revives dead latents. For inference a BatchTopK
coder becomes a JumpReLU one (as SAELens does): every latent's threshold is the running mean of
the smallest kept activation per batch. Inputs and targets are scaled to unit mean squared norm
while training and the scales folded back into the weights after.

Saved in the community's layouts, so that SAELens and circuit-tracer read them too:
OUT/transcoders/ (circuit-tracer's transcoder set: config.yaml + layer_{L}.safetensors) and
OUT/resid_saes/blocks.{L}.hook_resid_post/ (SAELens: cfg.json + sae_weights.safetensors), in
float16, plus OUT/transcoders/metrics.json (fraction of variance explained, L0, dead fraction on
the evaluation activations).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
import yaml
from safetensors.torch import save_file
from torch import Tensor

from neuron_explainer.demo import data
from neuron_explainer.demo.train_autoencoders import collect
from neuron_explainer.models.loading import load_model, model_encoding

SITES = {"transcoder_in": "mlp_ln.normalized", "transcoder_out": "resid.delta_mlp", "resid": "resid.post_mlp"}


class BatchTopK(torch.nn.Module):
    """pre = (x - b_pre) @ W_enc + b_enc; BatchTopK of relu(pre); out = acts @ W_dec + b_dec.
    `b_pre` is b_dec for an SAE (SAELens' apply_b_dec_to_input) and zero for a transcoder."""

    def __init__(self, d_in: int, d_out: int, n_latents: int, sae: bool, seed: int):
        super().__init__()
        gen = torch.Generator().manual_seed(seed)
        w = torch.randn(n_latents, d_out, generator=gen)
        self.W_dec = torch.nn.Parameter(w / w.norm(dim=1, keepdim=True))
        enc = torch.randn(d_in, n_latents, generator=gen) / d_in**0.5
        self.W_enc = torch.nn.Parameter(self.W_dec.detach().T.clone() if sae else enc)
        self.b_enc = torch.nn.Parameter(torch.zeros(n_latents))
        self.b_dec = torch.nn.Parameter(torch.zeros(d_out))
        self.sae = sae

    def pre(self, x: Tensor) -> Tensor:
        return (x - self.b_dec if self.sae else x) @ self.W_enc + self.b_enc

    def batch_topk(self, pre: Tensor, k: int) -> tuple[Tensor, Tensor]:
        acts = F.relu(pre)
        flat = acts.flatten()
        keep = flat.topk(min(k * pre.shape[0], flat.numel())).indices
        kept = torch.zeros_like(flat).scatter(0, keep, flat[keep]).view_as(acts)
        return kept, flat[keep].min()

    def decode(self, acts: Tensor) -> Tensor:
        return acts @ self.W_dec + self.b_dec


def train(
    x: Tensor, y: Tensor, n_latents: int, k: int, *, sae: bool, steps: int, batch: int, lr: float, seed: int,
    aux_k: int = 64, dead_after: int = 200,
) -> tuple[dict[str, Tensor], float]:
    """Trained weights (SAELens names, raw scale) and the JumpReLU threshold."""
    torch.manual_seed(seed)
    c_in = float(x.pow(2).sum(1).mean().sqrt())
    c_out = float(y.pow(2).sum(1).mean().sqrt())
    x, y = x / c_in, y / c_out
    coder = BatchTopK(x.shape[1], y.shape[1], n_latents, sae, seed)
    with torch.no_grad():
        coder.b_dec.copy_(y[:20000].median(0).values)
    opt = torch.optim.Adam(coder.parameters(), lr=lr)
    gen = torch.Generator().manual_seed(seed)
    since_fired = torch.zeros(n_latents, dtype=torch.long)
    var = float((y - y.mean(0)).pow(2).sum(1).mean())
    threshold, n_thresholds = 0.0, 0
    for step in range(steps):
        idx = torch.randint(0, len(x), (batch,), generator=gen)
        xb, yb = x[idx], y[idx]
        pre = coder.pre(xb)
        acts, smallest = coder.batch_topk(pre, k)
        rec = coder.decode(acts)
        loss = (yb - rec).pow(2).sum(1).mean() / var
        since_fired = torch.where((acts > 0).any(0), 0, since_fired + 1)
        dead = since_fired > dead_after
        if dead.any():  # AuxK: dead latents learn to explain the residual error
            kk = min(aux_k, int(dead.sum()))
            dpre = pre.masked_fill(~dead, float("-inf")).topk(kk, dim=-1)
            aux = torch.zeros_like(pre).scatter(-1, dpre.indices, F.relu(dpre.values)) @ coder.W_dec
            loss = loss + 0.03 * ((yb - rec).detach() - aux).pow(2).sum(1).mean() / var
        for g in opt.param_groups:
            g["lr"] = lr * min(1.0, (step + 1) / 50) * (0.1 + 0.9 * (1 - step / steps))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        with torch.no_grad():  # keep decoder rows unit norm: drop the gradient along them
            w, g_ = coder.W_dec, coder.W_dec.grad
            if g_ is not None:
                g_ -= w * (w * g_).sum(1, keepdim=True)
        opt.step()
        with torch.no_grad():
            coder.W_dec.div_(coder.W_dec.norm(dim=1, keepdim=True).clamp(min=1e-8))
        if step >= steps // 2:  # the threshold of the trained coder, over the second half
            threshold += float(smallest.detach())
            n_thresholds += 1
    threshold /= max(1, n_thresholds)
    with torch.no_grad():  # fold the scales back: latents unchanged, outputs in raw units
        weights = {
            "W_enc": coder.W_enc / c_in,
            "b_enc": coder.b_enc.clone(),
            "W_dec": coder.W_dec * c_out,
            "b_dec": coder.b_dec * c_out,
        }
        if sae:  # (x - c b_dec) W_enc / c = (x / c - b_dec) W_enc: the same pre-activations
            assert c_in == c_out
    return weights, threshold


@torch.no_grad()
def evaluate(w: dict[str, Tensor], threshold: float, x: Tensor, y: Tensor, sae: bool) -> dict[str, float]:
    pre = (x - w["b_dec"] if sae else x) @ w["W_enc"] + w["b_enc"]
    acts = pre * (pre > threshold)
    rec = acts @ w["W_dec"] + w["b_dec"]
    fve = 1 - float((y - rec).pow(2).sum()) / float((y - y.mean(0)).pow(2).sum())
    return {"fve": fve, "mean_l0": float((acts > 0).sum(1).float().mean()), "dead_fraction": float((~(acts > 0).any(0)).float().mean())}


def save_transcoder_layer(folder: Path, layer: int, w: dict[str, Tensor], threshold: float) -> None:
    tensors = {
        "W_enc": w["W_enc"].T.contiguous(),  # circuit-tracer: (n_latents, d_in)
        "W_dec": w["W_dec"].contiguous(),
        "b_enc": w["b_enc"],
        "b_dec": w["b_dec"],
        "activation_function.threshold": torch.full_like(w["b_enc"], threshold),
    }
    save_file({k: v.half().contiguous() for k, v in tensors.items()}, folder / f"layer_{layer}.safetensors")


def save_resid_sae(folder: Path, layer: int, w: dict[str, Tensor], threshold: float, model_name: str) -> None:
    hook = f"blocks.{layer}.hook_resid_post"
    out = folder / hook
    out.mkdir(parents=True, exist_ok=True)
    tensors = {**w, "threshold": torch.full_like(w["b_enc"], threshold)}
    save_file({k: v.half().contiguous() for k, v in tensors.items()}, out / "sae_weights.safetensors")
    cfg = {
        "architecture": "jumprelu", "d_in": int(w["W_enc"].shape[0]), "d_sae": int(w["W_enc"].shape[1]),
        "dtype": "float16", "device": "cpu", "apply_b_dec_to_input": True, "normalize_activations": "none",
        "reshape_activations": "none",
        "metadata": {"model_name": model_name, "hook_name": hook, "prepend_bos": False, "context_size": 128,
                     "model_from_pretrained_kwargs": {"center_writing_weights": False}},
    }
    (out / "cfg.json").write_text(json.dumps(cfg, indent=2) + "\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=str(Path(__file__).parent / "model"))
    ap.add_argument("--out", default=str(Path(__file__).parent))
    ap.add_argument("--corpus-dir", default=str(data.DEFAULT_CORPUS_DIR))
    ap.add_argument("--tokens", type=int, default=200_000)
    ap.add_argument("--transcoder-latents", type=int, default=512)
    ap.add_argument("--resid-latents", type=int, default=384)
    ap.add_argument("--k", type=int, default=24)
    ap.add_argument("--steps", type=int, default=2500)
    ap.add_argument("--batch", type=int, default=512)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--model-name", default="demo")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    t0 = time.time()
    model = load_model(args.model)
    acts = collect(model, model_encoding(model), args.corpus_dir, args.tokens, args.seed, sites=SITES)
    print(f"collected {args.tokens} activations per site in {time.time() - t0:.0f}s", flush=True)
    n_eval = args.tokens // 10
    transcoders, resid = Path(args.out) / "transcoders", Path(args.out) / "resid_saes"
    transcoders.mkdir(parents=True, exist_ok=True)
    metrics: dict[str, Any] = {"args": vars(args), "transcoders": [], "resid_saes": []}
    for layer in range(model.cfg.n_layers):
        for kind, x, y, n in (
            ("transcoders", acts["transcoder_in"][layer], acts["transcoder_out"][layer], args.transcoder_latents),
            ("resid_saes", acts["resid"][layer], acts["resid"][layer], args.resid_latents),
        ):
            t = time.time()
            sae = kind == "resid_saes"
            w, threshold = train(x[:-n_eval], y[:-n_eval], n, args.k, sae=sae, steps=args.steps, batch=args.batch, lr=args.lr, seed=args.seed + layer)
            m = evaluate(w, threshold, x[-n_eval:], y[-n_eval:], sae)
            metrics[kind].append({"layer": layer, "n_latents": n, "threshold": threshold, **m})
            if sae:
                save_resid_sae(resid, layer, w, threshold, args.model_name)
            else:
                save_transcoder_layer(transcoders, layer, w, threshold)
            print(f"{kind} layer {layer}: FVE {m['fve']:.3f}, L0 {m['mean_l0']:.1f}, dead {m['dead_fraction']:.1%} ({time.time() - t:.0f}s)", flush=True)
    config = {"model_kind": "transcoder_set", "model_name": args.model_name,
              "feature_input_hook": "ln2.hook_normalized", "feature_output_hook": "hook_mlp_out"}
    (transcoders / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    (transcoders / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    print(f"done in {time.time() - t0:.0f}s")


if __name__ == "__main__":
    main()
