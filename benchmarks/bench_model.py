"""Throughput of our Transformer vs. `transformers` (eager attention) on every family, and the
cost of empty hooks.

Each family at GPT-2 small's size (12 layers, d_model 768, 12 heads, MLP 3072, vocabulary 50257;
grouped-query families with 4 key/value heads), random weights, batch 1, fp32, CPU. Variants:

- ours: no hooks;
- ours, empty hooks: a no-op forward hook at every hook point of the family except
  attn.qk_logits, attn.qk_probs and attn.head_out (hooking those switches off the fused attention
  kernel by design);
- transformers' model of the family with eager attention, holding the same weights.

Timings are the median of several repetitions after warm-up, interleaving the variants so that
noise from other processes hits them alike; "fwd+bwd" is a forward and a backward pass of the
summed logits (weight gradients included). Targets: ours >= 1.0x transformers, empty hooks < 5%.

    python benchmarks/bench_model.py [--quick] [--families gpt2 llama ...] [--lengths 64 512]
"""

from __future__ import annotations

import argparse
import functools
import statistics
import sys
import time
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager, nullcontext
from typing import Any

import torch
from torch import Tensor

from neuron_explainer.models.loading import from_transformers
from neuron_explainer.models.random_models import FAMILIES, gpt2_small_sized, hf_model
from neuron_explainer.models.transformer import MODEL_LOCATIONS, Transformer, hook_name

UNFUSING = ("attn.qk_logits", "attn.qk_probs", "attn.head_out")
BENCHED = ("gpt2", "gpt_neox", "llama", "qwen2", "qwen3", "mistral", "gemma2")


def noop(x: Tensor) -> None:
    return None


def hook_points(model: Transformer) -> list[str]:
    names = list(MODEL_LOCATIONS)
    for i in range(model.cfg.n_layers):
        names += [hook_name(loc, i) for loc in model.block_locations() if loc not in UNFUSING]
    return names


def timed(run: Callable[[], None], clock: Callable[[], float]) -> float:
    start = clock()
    run()
    return clock() - start


def step(module: torch.nn.Module, fn: Callable[[Tensor], Tensor], x: Tensor, mode: str) -> None:
    if mode == "fwd":
        with torch.no_grad():
            fn(x)
    else:
        module.zero_grad(set_to_none=False)
        fn(x).sum().backward()


def bench_family(family: str, lengths: list[int], reps: int, warmup: int, clock: Callable[[], float]) -> dict[tuple[str, str, int], float]:
    hf = hf_model(family, **gpt2_small_sized(family))
    ours = from_transformers(hf)
    empty = {n: noop for n in hook_points(ours)}

    def run_ours(hooks: Mapping[str, Callable[[Tensor], None]] | None) -> Callable[[Tensor], Tensor]:
        def forward(toks: Tensor) -> Tensor:
            ctx: AbstractContextManager[Any] = ours.hooks(fwd=hooks) if hooks else nullcontext()
            with ctx:
                return ours(toks)

        return forward

    def theirs(toks: Tensor) -> Tensor:
        return hf(toks, use_cache=False).logits

    variants: dict[str, tuple[torch.nn.Module, Callable[[Tensor], Tensor]]] = {
        "ours": (ours, run_ours(None)),
        "ours, empty hooks": (ours, run_ours(empty)),
        "transformers": (hf, theirs),
    }
    toks = torch.randint(3, 300, (1, max(lengths)), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        diff = (ours(toks[:, :64]) - theirs(toks[:, :64])).abs().max().item()
    print(f"{family}: max |logit difference| ours vs transformers {diff:.1e}", file=sys.stderr)
    results: dict[tuple[str, str, int], float] = {}
    for length in lengths:
        x = toks[:, :length]
        for mode in ("fwd", "fwd+bwd"):
            times: dict[str, list[float]] = {name: [] for name in variants}
            for rep in range(warmup + reps):
                for name, (module, fn) in variants.items():
                    t = timed(functools.partial(step, module, fn, x, mode), clock)
                    if rep >= warmup:
                        times[name].append(t)
            for name in variants:
                results[(name, mode, length)] = statistics.median(times[name])
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="64 tokens, 2 repetitions")
    parser.add_argument("--families", nargs="+", default=list(BENCHED), choices=FAMILIES)
    parser.add_argument("--lengths", type=int, nargs="+", default=None)
    parser.add_argument("--reps", type=int, default=None, help="timed repetitions per cell")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--clock", choices=["wall", "cpu"], default="wall",
                        help="cpu: this process's CPU time, which other processes do not inflate")
    args = parser.parse_args()
    lengths = args.lengths or ([64] if args.quick else [64, 512])
    reps = args.reps or (2 if args.quick else 3)
    torch.set_num_threads(args.threads)
    clock = time.perf_counter if args.clock == "wall" else time.process_time
    print(
        f"GPT-2-small-sized models, random weights, batch 1, fp32, CPU, {args.threads} threads, "
        f"{args.clock} clock, torch {torch.__version__}; median of {reps} after {args.warmup} warm-up\n"
    )
    cells = [(mode, length) for length in lengths for mode in ("fwd", "fwd+bwd")]
    unit = "tok/s" if args.clock == "wall" else "tok/CPU-s"
    print("| family | " + " | ".join(f"{m} {n}: ours {unit} | vs transformers | empty hooks" for m, n in cells) + " | PASS/FAIL |")
    print("|" + "---|" * (2 + 3 * len(cells)))
    for family in args.families:
        r = bench_family(family, lengths, reps, args.warmup, clock)
        row, ok = [family], True
        for mode, n in cells:
            ratio = r[("transformers", mode, n)] / r[("ours", mode, n)]
            hooks = r[("ours, empty hooks", mode, n)] / r[("ours", mode, n)] - 1
            ok &= ratio >= 1.0 and hooks < 0.05
            row += [f"{n / r[('ours', mode, n)]:,.0f}", f"{ratio:.2f}x", f"{100 * hooks:+.1f}%"]
        print("| " + " | ".join(row) + f" | {'PASS' if ok else 'FAIL'} |", flush=True)


if __name__ == "__main__":
    main()
