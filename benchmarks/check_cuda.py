"""The debugger on an accelerator: agreement with the CPU, and cost against a bare pass.

    .venv/bin/python benchmarks/check_cuda.py                 # --device cuda
    .venv/bin/python benchmarks/check_cuda.py --device cpu    # the same code path, on the CPU

1. Agreement. The bundled demo model and an IOI prompt; /batched_tdb's computation
   (`Debugger.batched_tdb`, in process) for three requests: plain, the top head ablated (with
   its unablated twin), and a trace of that head through Q. Run on --device and on the CPU
   (fp32 both): the logit differences and the values of every node listed on both sides must
   agree within tolerance; a node listed on one side only must tie, in some group, with a node
   listed on the other side (ranking ties may fall either way).
2. Cost. GPT-2-small size (random weights, fp32), a 64-token prompt, the original client's
   first request: `batched_tdb` against one bare forward + backward (logit difference, gradient
   to the input embeddings only), medians of --reps runs after a warm-up, the device
   synchronised around each; the device's peak memory during the request.
Prints a table; exits 1 when the agreement check fails.
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).parent))
from bench_server import bare_step, build_prompt, request_body

from neuron_explainer.activation_server import schemas as S
from neuron_explainer.activation_server.processing import Debugger
from neuron_explainer.models.loading import load_model
from neuron_explainer.models.tokenizer import get_tokenizer
from neuron_explainer.models.transformer import Transformer, TransformerConfig

IOI = "<|endoftext|>When Mary and John went to the store, John gave a drink to"


def frozen(model: Transformer) -> Transformer:
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def tdb(prompt: str, target: str, distractor: str, **extra: Any) -> S.TdbRequestSpec:
    return S.TdbRequestSpec(
        prompt=prompt, target_tokens=[target], distractor_tokens=[distractor],
        component_type_for_mlp=S.ComponentTypeForMlp.NEURON,
        component_type_for_attention=S.ComponentTypeForAttention.ATTENTION_HEAD,
        top_and_bottom_k_for_node_table=10, hide_early_layers_when_ablating=False,
        **{"node_ablations": [], **extra},
    )


def summary(response: S.BatchedResponse) -> list[tuple[float | None, dict[Any, dict[str, float]]]]:
    """Per sub-response: the loss, and {node: {group: value}} of the top-k nodes."""
    out = []
    for sub in response.inference_sub_responses:
        top = sub.processing_response_data_by_name["topKComponents"]
        nodes: dict[Any, dict[str, float]] = {}
        for i, n in enumerate(top.node_indices):
            key = (n.node_type.value, n.layer_index, tuple(n.tensor_indices))
            nodes[key] = {g.value: v[i] for g, v in top.activations_by_group_id.items()}
        out.append((sub.inference_response.inference_and_token_data.loss, nodes))
    return out


def agreement(device: str, rtol: float, atol: float, verbose: bool = False) -> tuple[bool, list[str]]:
    """The demo model's answers on `device` against the CPU's."""
    debuggers = {}
    for dev in ("cpu", device):
        model = frozen(load_model("demo", device=dev))
        debuggers[dev] = Debugger(model, get_tokenizer(model.tokenizer_path), "demo")
    cpu = debuggers["cpu"]
    plain = cpu.batched_tdb(S.BatchedTdbRequest(sub_requests=[tdb(IOI, " Mary", " John")]))
    top = plain.inference_sub_responses[0].processing_response_data_by_name["topKComponents"]
    effect = top.activations_by_group_id[S.GroupId.ACT_TIMES_GRAD]
    head = max(
        (n for n in zip(effect, top.node_indices, strict=True) if n[1].node_type == S.NodeType.ATTENTION_HEAD),
        key=lambda en: en[0],
    )[1]
    requests = {
        "plain": [tdb(IOI, " Mary", " John")],
        "ablated+unablated": [
            tdb(IOI, " Mary", " John", node_ablations=[S.NodeAblation(node_index=head, value=0)]),
            tdb(IOI, " Mary", " John"),
        ],
        "trace head via Q": [
            tdb(IOI, " Mary", " John", upstream_node_to_trace=S.NodeToTrace(node_index=head, attention_trace_type=S.AttentionTraceType.Q)),
        ],
    }
    ok, lines = True, []
    for name, subs in requests.items():
        try:
            got = {dev: summary(d.batched_tdb(S.BatchedTdbRequest(sub_requests=subs))) for dev, d in debuggers.items()}
        except Exception as e:  # report every request, not only the first failure
            ok = False
            lines.append(f"  {name:<20} FAIL: {type(e).__name__}: {e}")
            traceback.print_exc()
            continue
        # values are compared node by node; the node lists may differ only among ties (a trace
        # leaves many nodes at exactly zero; every token's embedding "activation" is 1), which
        # the two devices may rank in either order
        worst, only_one_side = 0.0, 0
        for (loss_c, nodes_c), (loss_d, nodes_d) in zip(got["cpu"], got[device], strict=True):
            pairs = [(loss_c or 0.0, loss_d or 0.0)]
            for key in nodes_c.keys() & nodes_d.keys():
                pairs += [(nodes_c[key][g], nodes_d[key][g]) for g in nodes_c[key]]
            for key in nodes_c.keys() ^ nodes_d.keys():
                # a node on one side only made its list through a tie: in some group its value
                # equals one listed on the other side (e.g. attention probability 1 at token 0)
                only_one_side += 1
                mine, other = (nodes_c, nodes_d) if key in nodes_c else (nodes_d, nodes_c)
                gaps = [
                    min((abs(w[g] - v) / (atol + rtol * abs(v)) for w in other.values()), default=math.inf)
                    for g, v in mine[key].items()
                ]
                worst = max(worst, min(gaps, default=math.inf))
            for a, b in pairs:
                worst = max(worst, abs(a - b) / (atol + rtol * abs(a)))
            if verbose:
                for key in sorted(nodes_c.keys() ^ nodes_d.keys(), key=str)[:12]:
                    side = "cpu" if key in nodes_c else device
                    vals = (nodes_c.get(key) or nodes_d[key])
                    print(f"    only on {side}: {key} {({g: round(v, 4) for g, v in vals.items()})}")
        good = worst <= 1.0
        ok &= good
        losses = ", ".join(f"{s[0]:.4f}" for s in got[device])
        lines.append(
            f"  {name:<20} loss {losses:<18} nodes in one list only (ties): {only_one_side:<3} "
            f"worst |diff|/(atol+rtol|x|): {worst:.3f}  {'OK' if good else 'FAIL'}"
        )
    return ok, lines


def cost(device: str, reps: int) -> list[str]:
    cfg = TransformerConfig(n_layers=12, d_model=768, n_heads=12, n_vocab=50257, ctx_window=1024)
    model = frozen(Transformer(cfg).init_weights(seed=0).eval().to(device))
    enc = get_tokenizer()
    prompt = build_prompt(enc, 64)
    tokens = enc.encode(prompt, allowed_special="all")
    bare = bare_step(model, tokens, enc, 1)
    debugger = Debugger(model, enc, "gpt2-small-size")
    body = S.BatchedTdbRequest.model_validate(request_body(prompt, 64, False))
    ablated = S.BatchedTdbRequest.model_validate(request_body(prompt, 64, True))

    def timed(fn: Callable[[], Any]) -> list[float]:
        fn()  # warm-up (kernels, caches)
        out = []
        for _ in range(reps):
            sync(device)
            t0 = time.perf_counter()
            fn()
            sync(device)
            out.append(time.perf_counter() - t0)
        return out

    base = statistics.median(timed(bare))
    rows = [("bare forward+backward", base)]
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    rows.append(("batched_tdb (client's first request)", statistics.median(timed(lambda: debugger.batched_tdb(body)))))
    peak = torch.cuda.max_memory_allocated() / 2**30 if device.startswith("cuda") else float("nan")
    rows.append(("batched_tdb ablated + unablated", statistics.median(timed(lambda: debugger.batched_tdb(ablated)))))
    lines = [f"  {name:<38} {sec * 1e3:8.1f} ms   {sec / base:5.2f}x" for name, sec in rows]
    lines.append(f"  peak device memory during the requests: {peak:.2f} GiB (weights {sum(p.numel() for p in model.parameters()) * 4 / 2**30:.2f} GiB)")
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--reps", type=int, default=20)
    ap.add_argument("--rtol", type=float, default=1e-3)
    ap.add_argument("--atol", type=float, default=1e-3)
    ap.add_argument("--verbose", action="store_true", help="list the nodes listed on one side only")
    args = ap.parse_args()
    if args.reps < 1:
        raise SystemExit("error: --reps must be at least 1")
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit("error: no CUDA device here (torch.cuda.is_available() is False)")
    name = torch.cuda.get_device_name() if args.device.startswith("cuda") else "CPU"
    print(f"device: {args.device} ({name}), torch {torch.__version__}")
    print(f"agreement with the CPU (demo model, IOI prompt, fp32; rtol {args.rtol}, atol {args.atol}):")
    ok, lines = agreement(args.device, args.rtol, args.atol, args.verbose)
    print("\n".join(lines))
    print(f"cost (GPT-2-small size, 64 tokens, fp32, median of {args.reps}):")
    try:
        print("\n".join(cost(args.device, args.reps)))
    except Exception:
        traceback.print_exc()
        ok = False
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
