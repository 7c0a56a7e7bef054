"""Throughput of the record builder (`neuron_explainer.collate.build`) relative to the bare
forward pass of the same model, in the same run.

The builder's tokens/s is the whole build (quantile calibration pass, every forward pass with
its hooks, the running top-k / samples / moments, a checkpoint per shard and writing every
record file) divided into the corpus tokens. The bare forward pass is `model(tokens)` with no
hooks (full logits, fused attention kernel) over the same batches of the same sequences, timed
before and after the build (the mean of the two), so load from other processes hits both.
Target: ratio >= 0.5. The builder stops each forward pass after the last block (it needs no
logits), so the table also gives the bare pass stopped at the same point ("body-only") and the
ratio to that: the cost of the bookkeeping alone.

Then, in the same run (`--ray`, on by default), the parallel build: the same corpus built in
this process with one thread, and on a local Ray with 1 and 2 workers of one thread each
(tokens/s of the whole build including Ray start-up, ratios to the one-process build, each
worker's peak resident memory); and the read time per node of the bulk format against one JSON
file per node (a cold read opens the file; warm reads reuse the open reader, as the server
does). On a 2-core machine the 2-worker ratio is reported, not asserted.

Models have random weights (GPT-2 vocabulary, so the real tokenizer runs). Variants:
- neurons + heads: `mlp_post_act` and `attn_write_norm` records only;
- + autoencoders: random TopK MLP (post-act) and attention (resid delta) autoencoders attached
  (`--latents` latents, `--ae-k` active per token: sparse like trained ones, which the builder's
  attention-latent-by-token-pair path exploits), all five record kinds. Its bare forward pass
  runs the autoencoders too (they are part of the model being collated).

    python benchmarks/bench_collate.py [--tokens 32768] [--threads 2] [--corpus FILE...]
        [--layers 4] [--d-model 256] [--heads 8] [--latents 256] [--device cpu]
        [--ray-tokens 16384] [--no-ray] [--read-nodes 200]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from neuron_explainer.activations.bulk import json_to_bulk
from neuron_explainer.activations.datasets import DatasetRegistry
from neuron_explainer.collate import CollateConfig, build, iter_sequences
from neuron_explainer.models.autoencoder import AutoencoderSpec, SparseAutoencoder, attach
from neuron_explainer.models.tokenizer import get_tokenizer
from neuron_explainer.models.transformer import Transformer, TransformerConfig

SHARED_CORPUS = Path(__file__).resolve().parents[2] / "shared" / "corpus"


def make_model(args: argparse.Namespace, autoencoders: bool) -> Transformer:
    cfg = TransformerConfig(
        n_layers=args.layers,
        d_model=args.d_model,
        n_heads=args.heads,
        n_vocab=50257,
        ctx_window=max(64, args.context),
    )
    model = Transformer(cfg).init_weights(0).to(args.device)
    model.requires_grad_(False)
    if autoencoders:
        for i, (kind, reads, width) in enumerate(
            (("mlp", "mlp.post_act", cfg.d_mlp), ("attention", "resid.delta_attn", cfg.d_model))
        ):
            aes = []
            for layer in range(cfg.n_layers):
                ae = SparseAutoencoder(args.latents, width, activation="topk", k=args.ae_k)
                ae.reset_parameters(seed=100 * i + layer)
                aes.append(ae.requires_grad_(False))
            spec = AutoencoderSpec(reads=reads, kind=kind, location="unused", n_layers=cfg.n_layers)  # type: ignore[arg-type]
            attach(model, spec, aes)
    return model


def corpus_files(args: argparse.Namespace, tmp: Path) -> list[str]:
    if args.corpus:
        return list(args.corpus)
    files = sorted(str(p) for p in SHARED_CORPUS.glob("*.txt")) if SHARED_CORPUS.is_dir() else []
    if files:
        return files
    rng = random.Random(0)
    words = [
        "the",
        "a",
        "of",
        "and",
        "to",
        "in",
        "is",
        "was",
        "that",
        "it",
        "he",
        "she",
        "they",
        "said",
        "king",
        "queen",
        "house",
        "river",
    ]
    path = tmp / "corpus.txt"
    path.write_text("\n".join(" ".join(rng.choice(words) for _ in range(15)) for _ in range(40000)))
    return [str(path)]


class _Stop(Exception):
    pass


def _stop(x: torch.Tensor) -> None:
    raise _Stop


@torch.inference_mode()
def bare_forward(model: Transformer, batches: list[torch.Tensor], body_only: bool = False) -> float:
    """tokens/s of model(tokens) over the batches; body_only: stop after the last block (no
    final layer norm and unembedding), as the builder does."""
    n = 0
    hooks = {f"blocks.{model.cfg.n_layers - 1}.resid.post_mlp": _stop} if body_only else {}
    start = time.perf_counter()
    for tokens in batches:
        with model.hooks(fwd=hooks), contextlib.suppress(_Stop):
            model(tokens)
        n += tokens.numel()
    if model.device.type == "cuda":
        torch.cuda.synchronize()
    return n / (time.perf_counter() - start)


def run(
    args: argparse.Namespace, autoencoders: bool, files: list[str], tmp: Path
) -> dict[str, Any]:
    model = make_model(args, autoencoders)
    enc = get_tokenizer()
    cfg = CollateConfig(
        context=args.context,
        batch_size=args.batch_size,
        shard_sequences=args.shard_sequences,
        max_tokens=args.tokens,
        seed=0,
    )
    seqs = []
    for s in iter_sequences(files, enc, args.context):
        if (len(seqs) + 1) * args.context > args.tokens:
            break
        seqs.append(s)
    batches = [
        torch.tensor(seqs[i : i + args.batch_size], device=args.device)
        for i in range(0, len(seqs), args.batch_size)
    ]
    bare_forward(model, batches[:2])  # warm-up
    before = bare_forward(model, batches)
    body_before = bare_forward(model, batches, body_only=True)
    out = tmp / ("ae" if autoencoders else "plain")
    shutil.rmtree(out, ignore_errors=True)
    result = build(model, enc, files, out, cfg, progress=False)
    body_after = bare_forward(model, batches, body_only=True)
    after = bare_forward(model, batches)
    bare = (before + after) / 2
    body = (body_before + body_after) / 2
    n_files = sum(1 for _ in out.rglob("*.json"))
    return {
        "variant": "+ autoencoders" if autoencoders else "neurons + heads",
        "tokens": result.n_tokens,
        "records": n_files - 1,  # minus dataset.json
        "bare": bare,
        "builder": result.tokens_per_second,
        "seconds": result.seconds,
        "ratio": result.tokens_per_second / bare,
        "body": body,
        "body_ratio": result.tokens_per_second / body,
    }


def run_parallel(args: argparse.Namespace, files: list[str], tmp: Path) -> list[dict[str, Any]]:
    """One-process vs Ray builds of the same records (neurons + heads), one thread a worker."""
    import ray

    model = make_model(args, autoencoders=False)
    cfg = CollateConfig(
        context=args.context,
        batch_size=args.batch_size,
        shard_sequences=args.shard_sequences // 4,
        max_tokens=args.ray_tokens,
        seed=0,
        format="bulk",
    )
    rows = []
    for label, workers in (("one process", 0), ("Ray, 1 worker", 1), ("Ray, 2 workers", 2)):
        out = tmp / f"ray{workers}"
        shutil.rmtree(out, ignore_errors=True)
        start = time.perf_counter()
        result = build(
            model, get_tokenizer(), files, out, cfg, progress=False, workers=workers, threads=1
        )
        seconds = time.perf_counter() - start
        if ray.is_initialized():
            ray.shutdown()
        rows.append(
            {
                "label": label,
                "tokens": result.n_tokens,
                "seconds": seconds,
                "tok_s": result.n_tokens / seconds,
                "peaks": result.worker_peak_bytes,
                "tree": _tree(out),
            }
        )
    base = rows[0]["tok_s"]
    for r in rows:
        r["ratio"] = r["tok_s"] / base
        r["identical"] = r["tree"] == rows[0]["tree"]
    return rows


def _tree(folder: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()
    }


def run_reads(json_root: Path, tmp: Path, n_nodes: int) -> dict[str, float]:
    """Seconds per node read: one JSON file per node against the bulk files."""
    bulk_root = json_to_bulk(json_root, tmp / "bulk_read")
    out: dict[str, float] = {}
    rng = random.Random(0)
    for label, root in (("json", json_root), ("bulk", bulk_root)):
        registry = DatasetRegistry()
        entries = {e.dst: e for e in registry.register_local_dataset(label, root)}
        entry = entries["mlp_post_act"]
        assert entry.n_nodes is not None
        nodes = [
            (layer, rng.randrange(entry.n_nodes[layer]))
            for layer in (rng.randrange(len(entry.n_nodes)) for _ in range(n_nodes))
        ]
        start = time.perf_counter()
        registry.load_record(entry, *nodes[0])
        out[f"{label}_cold"] = time.perf_counter() - start
        start = time.perf_counter()
        for node in nodes:
            registry.load_record(entry, *node)
        out[f"{label}_warm"] = (time.perf_counter() - start) / len(nodes)
        out[f"{label}_bytes"] = sum(p.stat().st_size for p in root.rglob("*") if p.is_file())
        out[f"{label}_files"] = sum(1 for p in root.rglob("*") if p.is_file())
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--tokens", type=int, default=32768)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--corpus", nargs="+")
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--d-model", type=int, default=256)
    p.add_argument("--heads", type=int, default=8)
    p.add_argument("--latents", type=int, default=256)
    p.add_argument("--ae-k", type=int, default=16, help="active latents per token (TopK)")
    p.add_argument("--context", type=int, default=64)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--shard-sequences", type=int, default=256)
    p.add_argument("--device", default="cpu")
    p.add_argument("--variants", default="plain,ae", help="plain, ae or both (comma-separated)")
    p.add_argument("--ray-tokens", type=int, default=16384, help="tokens of the parallel builds")
    p.add_argument("--no-ray", action="store_true", help="skip the parallel builds")
    p.add_argument("--read-nodes", type=int, default=200, help="nodes read per format")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        files = corpus_files(args, tmp)
        rows = [run(args, v == "ae", files, tmp) for v in args.variants.split(",")]
        parallel = [] if args.no_ray else run_parallel(args, files, tmp)
        reads = run_reads(
            tmp / ("plain" if "plain" in args.variants else "ae"), tmp, args.read_nodes
        )
    print(
        f"\nmodel: {args.layers} layers, d_model {args.d_model}, {args.heads} heads, vocab 50257, "
        f"context {args.context}, batch {args.batch_size}, {args.latents} latents per autoencoder "
        f"(TopK, k={args.ae_k}); "
        f"device {args.device}, {args.threads} threads\n"
    )
    print(
        "| variant | tokens | records | bare forward tok/s | builder tok/s | builder s "
        "| ratio | bare body-only tok/s | ratio to body-only |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['variant']} | {r['tokens']} | {r['records']} | {r['bare']:.0f} | "
            f"{r['builder']:.0f} | {r['seconds']:.1f} | {r['ratio']:.2f} | {r['body']:.0f} | "
            f"{r['body_ratio']:.2f} |"
        )
    if parallel:
        print(
            f"\nparallel builds (neurons + heads, bulk output, {args.ray_tokens} tokens, one "
            f"thread per worker; Ray start-up included; {os.cpu_count()} cores):\n"
        )
        print(
            "| build | tokens | seconds | tok/s | ratio to one process | peak RSS per worker (MiB) | bytes = one process |"
        )
        print("|---|---|---|---|---|---|---|")
        for r in parallel:
            # one process: its worker is this benchmark process, whose peak includes the runs
            # above, so only Ray workers' peaks are the build's own
            peaks = (
                ", ".join(f"{b / 2**20:.0f}" for b in r["peaks"])
                if r["label"] != "one process"
                else "-"
            )
            print(
                f"| {r['label']} | {r['tokens']} | {r['seconds']:.1f} | {r['tok_s']:.0f} | "
                f"{r['ratio']:.2f} | {peaks} | {r['identical']} |"
            )
    print(f"\nreading one node's record ({args.read_nodes} random MLP neurons):\n")
    print("| format | files | bytes | cold first read (ms) | warm read per node (ms) |")
    print("|---|---|---|---|---|")
    for label in ("json", "bulk"):
        print(
            f"| {label} | {reads[label + '_files']:.0f} | {reads[label + '_bytes']:.0f} | "
            f"{reads[label + '_cold'] * 1e3:.2f} | {reads[label + '_warm'] * 1e3:.2f} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
