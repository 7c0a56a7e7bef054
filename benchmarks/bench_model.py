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
import statistics
import time
from collections.abc import Callable
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
    config = GPT2Config(
        n_embd=cfg.d_model,
        n_layer=cfg.n_layers,
        n_head=cfg.n_heads,
        n_positions=cfg.ctx_window,
        n_inner=cfg.d_ff,
        vocab_size=cfg.n_vocab,
        layer_norm_epsilon=cfg.layer_norm_eps,
        activation_function="gelu_new",
        tie_word_embeddings=False,
        attn_implementation="eager",
        use_cache=False,
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


def timed(run: Callable[[], None]) -> float:
    start = time.perf_counter()
    run()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="64 tokens only, fewer repetitions")
    parser.add_argument("--lengths", type=int, nargs="+", default=None)
    parser.add_argument("--reps", type=int, default=None, help="timed repetitions per cell")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    lengths = args.lengths or ([64] if args.quick else [64, 512])
    reps = args.reps or (3 if args.quick else 5)
    torch.set_num_threads(args.threads)

    model = Transformer(GPT2_SMALL).init_weights(seed=0).eval()
    hf = hf_copy(model)
    empty = {n: noop for n in hook_points(model, include_unfusing=False)}
    full = {n: noop for n in hook_points(model, include_unfusing=True)}

    def ours(hooks: dict[str, Callable[[Tensor], None]] | None) -> Callable[[Tensor], Tensor]:
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
        f"torch {torch.__version__}; median of {reps} after {args.warmup} warm-up; "
        f"max |logit difference| ours vs transformers: {diff:.1e}\n"
    )

    # results[(variant, mode, length)] = seconds
    results: dict[tuple[str, str, int], float] = {}
    for length in lengths:
        x = toks[:, :length]
        for mode in ("fwd", "fwd+bwd"):

            def step(module: torch.nn.Module, fn: Callable[[Tensor], Tensor]) -> None:
                if mode == "fwd":
                    with torch.no_grad():
                        fn(x)
                else:
                    module.zero_grad(set_to_none=True)
                    fn(x).sum().backward()

            times: dict[str, list[float]] = {name: [] for name in variants}
            for rep in range(args.warmup + reps):
                for name, (module, fn) in variants.items():
                    t = timed(lambda module=module, fn=fn: step(module, fn))  # type: ignore[misc]
                    if rep >= args.warmup:
                        times[name].append(t)
            for name in variants:
                results[(name, mode, length)] = statistics.median(times[name])

    cells = [(mode, length) for length in lengths for mode in ("fwd", "fwd+bwd")]
    hf_name = "transformers GPT2LMHeadModel (eager)"
    header = "| variant | " + " | ".join(f"{m} {n} tok/s | vs HF" for m, n in cells) + " |"
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


if __name__ == "__main__":
    main()
