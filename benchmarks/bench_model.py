"""Throughput of our Transformer vs. transformers' GPT2LMHeadModel, and the cost of hooks.

A GPT-2-small-sized model (12 layers, d_model 768, 12 heads, vocab 50257) with random weights,
batch 1, on the CPU. Variants:

- ours: no hooks;
- ours, empty hooks: a no-op forward hook at every hook point except attn.qk_logits,
  attn.qk_probs and attn.head_out (hooking those switches off the fused attention kernel by
  design, so they get their own row);
- ours, all hook points hooked: a no-op forward hook at every hook point;
- transformers: GPT2LMHeadModel with eager attention, holding the same weights.

Timings are the median of several repetitions after warm-up, interleaving the variants so that
noise from other processes hits them alike. Run:

    python benchmarks/bench_model.py [--quick] [--lengths 64 512] [--reps 5] [--threads 2]
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

from neuron_explainer.models.transformer import (
    BLOCK_LOCATIONS,
    MODEL_LOCATIONS,
    Transformer,
    TransformerConfig,
    hook_name,
)

UNFUSING = ("attn.qk_logits", "attn.qk_probs", "attn.head_out")
GPT2_SMALL = TransformerConfig(ctx_window=1024, d_model=768, n_layers=12, n_heads=12, n_vocab=50257)


def hf_copy(model: Transformer) -> Any:
    """transformers' GPT2LMHeadModel (eager attention) with `model`'s weights."""
    from transformers import GPT2Config, GPT2LMHeadModel

    cfg = model.cfg
    untyped: dict[str, Any] = {"attn_implementation": "eager"}  # not in GPT2Config's signature
    config = GPT2Config(
        n_embd=cfg.d_model,
        n_layer=cfg.n_layers,
        n_head=cfg.n_heads,
        n_positions=cfg.ctx_window,
        n_inner=cfg.d_mlp,
        vocab_size=cfg.n_vocab,
        layer_norm_epsilon=cfg.layer_norm_eps,
        activation_function="gelu_new",
        tie_word_embeddings=False,
        use_cache=False,
        **untyped,
    )
    hf = GPT2LMHeadModel(config).eval()
    ours = model.state_dict()
    state = {
        "transformer.wte.weight": ours["tok_embed.weight"],
        "transformer.wpe.weight": ours["pos_embed.weight"],
        "transformer.ln_f.weight": ours["final_ln.weight"],
        "transformer.ln_f.bias": ours["final_ln.bias"],
        "lm_head.weight": ours["unembed.weight"],
    }
    for i in range(cfg.n_layers):
        h, x = f"transformer.h.{i}.", f"xf_layers.{i}."
        for ln in ("ln_1", "ln_2"):
            state[f"{h}{ln}.weight"] = ours[f"{x}{ln}.weight"]
            state[f"{h}{ln}.bias"] = ours[f"{x}{ln}.bias"]
        qkv = [f"{x}attn.{p}_proj" for p in "qkv"]
        state[f"{h}attn.c_attn.weight"] = torch.cat([ours[f"{n}.weight"] for n in qkv]).t()
        state[f"{h}attn.c_attn.bias"] = torch.cat([ours[f"{n}.bias"] for n in qkv])
        for theirs, mine in (
            ("attn.c_proj", "attn.out_proj"),
            ("mlp.c_fc", "mlp.in_layer"),
            ("mlp.c_proj", "mlp.out_layer"),
        ):
            state[f"{h}{theirs}.weight"] = ours[f"{x}{mine}.weight"].t()
            state[f"{h}{theirs}.bias"] = ours[f"{x}{mine}.bias"]
    missing, unexpected = hf.load_state_dict(state, strict=False)
    assert not unexpected and all(k.endswith(("attn.bias", "masked_bias")) for k in missing), (
        missing,
        unexpected,
    )
    return hf


def noop(x: Tensor) -> None:
    return None


def hook_points(model: Transformer, include_unfusing: bool) -> list[str]:
    names = list(MODEL_LOCATIONS)
    for i in range(model.cfg.n_layers):
        names += [
            hook_name(loc, i) for loc in BLOCK_LOCATIONS if include_unfusing or loc not in UNFUSING
        ]
    return names


def timed(run: Callable[[], None], clock: Callable[[], float]) -> float:
    start = clock()
    run()
    return clock() - start


def step(module: torch.nn.Module, fn: Callable[[Tensor], Tensor], x: Tensor, mode: str) -> None:
    """One forward pass, or one forward and backward pass of the sum of the logits (weight
    gradients included, accumulated into existing buffers so no time goes into allocating them)."""
    if mode == "fwd":
        with torch.no_grad():
            fn(x)
    else:
        module.zero_grad(set_to_none=False)
        fn(x).sum().backward()


def hook_cost_per_forward(clock: Callable[[], float], reps: int = 300) -> tuple[float, float, int]:
    """Absolute cost of the empty hooks, measured where it is not drowned by matmuls: a model
    with GPT-2-small's 12 layers but d_model 64, on 8 tokens. Returns (median seconds per
    forward without hooks, the same with empty hooks, number of hook points hooked)."""
    tiny = Transformer(
        TransformerConfig(ctx_window=64, d_model=64, n_layers=12, n_heads=4, n_vocab=256)
    )
    tiny.init_weights().eval()
    x = torch.randint(0, 256, (1, 8), generator=torch.Generator().manual_seed(0))
    empty = {n: noop for n in hook_points(tiny, include_unfusing=False)}
    plain: list[float] = []
    hooked: list[float] = []
    with torch.no_grad():
        for rep in range(reps + 20):
            t_plain = timed(functools.partial(tiny, x), clock)
            with tiny.hooks(fwd=empty):
                t_hooked = timed(functools.partial(tiny, x), clock)
            if rep >= 20:
                plain.append(t_plain)
                hooked.append(t_hooked)
    return statistics.median(plain), statistics.median(hooked), len(empty)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="64 tokens, 2 repetitions")
    parser.add_argument("--lengths", type=int, nargs="+", default=None)
    parser.add_argument("--reps", type=int, default=None, help="timed repetitions per cell")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--clock",
        choices=["wall", "cpu"],
        default="wall",
        help="cpu: time by this process's CPU time, which other processes on a busy machine "
        "do not inflate; only meaningful with --threads 1",
    )
    args = parser.parse_args()
    lengths = args.lengths or ([64] if args.quick else [64, 512])
    reps = args.reps or (2 if args.quick else 3)
    torch.set_num_threads(args.threads)
    clock = time.perf_counter if args.clock == "wall" else time.process_time

    model = Transformer(GPT2_SMALL).init_weights(seed=0).eval()
    hf = hf_copy(model)
    empty = {n: noop for n in hook_points(model, include_unfusing=False)}
    full = {n: noop for n in hook_points(model, include_unfusing=True)}

    def ours(hooks: Mapping[str, Callable[[Tensor], None]] | None) -> Callable[[Tensor], Tensor]:
        def forward(toks: Tensor) -> Tensor:
            ctx: AbstractContextManager[Any] = model.hooks(fwd=hooks) if hooks else nullcontext()
            with ctx:
                return model(toks)

        return forward

    def theirs(toks: Tensor) -> Tensor:
        return hf(toks, use_cache=False).logits

    variants: dict[str, tuple[torch.nn.Module, Callable[[Tensor], Tensor]]] = {
        "ours": (model, ours(None)),
        "ours, empty hooks (fused attention kept)": (model, ours(empty)),
        "ours, all hook points hooked": (model, ours(full)),
        "transformers GPT2LMHeadModel (eager)": (hf, theirs),
    }

    toks = torch.randint(
        0, GPT2_SMALL.n_vocab, (1, max(lengths)), generator=torch.Generator().manual_seed(0)
    )
    with torch.no_grad():
        diff = (variants["ours"][1](toks[:, :64]) - theirs(toks[:, :64])).abs().max().item()
    print(
        f"GPT-2-small-sized model, random weights, batch 1, fp32, CPU, {args.threads} threads, "
        f"{args.clock} clock, "
        f"torch {torch.__version__}; median of {reps} after {args.warmup} warm-up; "
        f"max |logit difference| ours vs transformers: {diff:.1e}\n"
    )

    # results[(variant, mode, length)] = seconds
    results: dict[tuple[str, str, int], float] = {}
    for length in lengths:
        x = toks[:, :length]
        for mode in ("fwd", "fwd+bwd"):
            times: dict[str, list[float]] = {name: [] for name in variants}
            for rep in range(args.warmup + reps):
                for name, (module, fn) in variants.items():
                    t = timed(functools.partial(step, module, fn, x, mode), clock)
                    if rep >= args.warmup:
                        times[name].append(t)
            for name in variants:
                results[(name, mode, length)] = statistics.median(times[name])
            print(f"done: {mode} at {length} tokens", file=sys.stderr)

    cells = [(mode, length) for length in lengths for mode in ("fwd", "fwd+bwd")]
    hf_name = "transformers GPT2LMHeadModel (eager)"
    unit = "tok/s" if args.clock == "wall" else "tok/CPU-s"
    header = "| variant | " + " | ".join(f"{m} {n} {unit} | vs HF" for m, n in cells) + " |"
    print(header)
    print("|" + "---|" * (1 + 2 * len(cells)))
    for name in variants:
        row = [name]
        for mode, length in cells:
            secs = results[(name, mode, length)]
            ratio = results[(hf_name, mode, length)] / secs
            row += [f"{length / secs:,.0f}", f"{ratio:.2f}x"]
        print("| " + " | ".join(row) + " |")
    print()
    for label, name in (
        ("empty hooks", "ours, empty hooks (fused attention kept)"),
        ("all hook points hooked", "ours, all hook points hooked"),
    ):
        overheads = [
            f"{m} {n}: {100 * (results[(name, m, n)] / results[('ours', m, n)] - 1):+.1f}%"
            for m, n in cells
        ]
        print(f"overhead of {label} vs. ours without hooks: " + ", ".join(overheads))
    plain, hooked, n = hook_cost_per_forward(clock)
    print(
        f"absolute cost of {n} empty hooks (12 layers, d_model 64, 8 tokens): "
        f"{1e6 * (hooked - plain):+.0f} us per forward ({1e6 * plain:.0f} us without hooks, "
        f"{1e6 * hooked:.0f} us with)"
    )


if __name__ == "__main__":
    main()
