"""An attribution graph of a 64-token prompt: ours against circuit-tracer 0.5, same model, same
transcoders, same settings, in the same run.

The model is a random GPT-2 small (12 layers, d_model 768, vocabulary 50257; `--small` for a
2-layer one), loaded by us and, through TransformerLens, by circuit-tracer; the transcoders a
random circuit-tracer set (JumpReLU, skip connection), saved once and loaded by both. Each side
runs in its own fresh process (one after the other, `--repeats` times, alternating), so that peak
memory is its own: the resident set's high-water mark during attribution, reset after loading
(VmHWM; `torch.cuda.max_memory_allocated` on a GPU), and how far above the loaded model it went. Time is the attribution call's wall clock.
Both graphs are compared: same features, adjacency within 1e-4 (relative to its largest entry).

    python benchmarks/bench_graph.py [--small] [--tokens 64] [--latents 4096] [--max-feature-nodes 2048]
        [--batch-size 256] [--device cpu] [--repeats 1]

Target: ours at least as fast as circuit-tracer (speedup >= 1.0x).
"""

from __future__ import annotations

import argparse
import ctypes
import json
import math
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from contextlib import suppress
from pathlib import Path
from typing import Any

import torch

RESULT = "BENCH_RESULT "


def _hwm_gib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 2**20
    return float("nan")


def _reset_peak(device: str) -> None:
    with suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    with suppress(OSError):
        Path("/proc/self/clear_refs").write_text("5")
    if device.startswith("cuda"):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()


def _now_gib(device: str) -> float:
    if device.startswith("cuda"):
        return torch.cuda.memory_allocated() / 2**30
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 2**20
    return float("nan")


def _peak_gib(device: str) -> float:
    if device.startswith("cuda"):
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated() / 2**30
    return _hwm_gib()


def make_inputs(folder: Path, small: bool, latents: int, seed: int) -> None:
    """A random GPT-2 (transformers' save_pretrained) and a random circuit-tracer set."""
    import yaml
    from circuit_tracer.transcoder.activation_functions import JumpReLU
    from circuit_tracer.transcoder.single_layer_transcoder import (
        SingleLayerTranscoder,
        TranscoderSet,
    )

    from neuron_explainer.models.random_models import gpt2_small_sized, hf_model

    hf = hf_model("gpt2", seed=seed, **({} if small else gpt2_small_sized("gpt2")))
    hf.save_pretrained(folder / "model")
    d, n = hf.config.n_embd, hf.config.n_layer
    gen = torch.Generator().manual_seed(seed)
    layers = {}
    for layer in range(n):
        tc = SingleLayerTranscoder(
            d, latents, JumpReLU(torch.rand(latents, generator=gen) * 0.5, 0.1), layer, skip_connection=True,
            device=torch.device("cpu"), dtype=torch.float32,
        )
        with torch.no_grad():
            for name, p in tc.named_parameters():
                if not name.startswith("activation_function"):
                    p.copy_(torch.randn(p.shape, generator=gen) / math.sqrt(d))
            tc.b_enc.sub_(2.0)  # a few dozen active latents per token and layer
        layers[layer] = tc
    tset = TranscoderSet(layers, feature_input_hook="mlp.hook_in", feature_output_hook="mlp.hook_out", scan="bench")
    tset.to_safetensors(str(folder / "set"))
    config = {"model_kind": "transcoder_set", "feature_input_hook": "mlp.hook_in", "feature_output_hook": "mlp.hook_out", "scan": "bench"}
    (folder / "set" / "config.yaml").write_text(yaml.safe_dump(config))


def prompt(n_tokens: int, seed: int) -> list[int]:
    gen = torch.Generator().manual_seed(seed)
    return [50256, *torch.randint(0, 50000, (n_tokens - 1,), generator=gen).tolist()]  # <|endoftext|> first


def run_ours(folder: Path, tokens: list[int], args: argparse.Namespace) -> dict[str, Any]:
    from neuron_explainer.debugger.graph import attribute, conventions_for
    from neuron_explainer.models.loading import load_model
    from neuron_explainer.models.saes import load_transcoder_set

    model = load_model(folder / "model", device=args.device).requires_grad_(False)
    transcoders = list(load_transcoder_set(folder / "set", device=args.device, conventions=conventions_for(model)))
    _reset_peak(args.device)
    before = _now_gib(args.device)
    start = time.perf_counter()
    graph = attribute(model, transcoders, tokens, batch_size=args.batch_size, max_feature_nodes=args.max_feature_nodes)
    seconds = time.perf_counter() - start
    peak = _peak_gib(args.device)
    torch.save({"features": graph.features, "adjacency": graph.adjacency}, folder / "ours.pt")
    return {"seconds": seconds, "peak_gib": peak, "before_gib": before, "n_active": graph.n_active, "n_features": graph.n_features,
            "stages": graph.timings}


def run_circuit_tracer(folder: Path, tokens: list[int], args: argparse.Namespace) -> dict[str, Any]:
    import huggingface_hub.constants
    import transformers

    if not hasattr(huggingface_hub.constants, "HF_HUB_ENABLE_HF_TRANSFER"):  # removed in huggingface_hub 1.x
        huggingface_hub.constants.HF_HUB_ENABLE_HF_TRANSFER = False  # type: ignore[attr-defined]
    from circuit_tracer.attribution.attribute import attribute
    from circuit_tracer.replacement_model.replacement_model_transformerlens import (
        TransformerLensReplacementModel,
    )
    from circuit_tracer.transcoder.single_layer_transcoder import load_transcoder_set
    from transformer_lens import HookedTransformerConfig
    from transformer_lens.pretrained.weight_conversions.gpt2 import convert_gpt2_weights

    hf = transformers.GPT2LMHeadModel.from_pretrained(folder / "model")
    c = hf.config
    cfg = HookedTransformerConfig(
        n_layers=c.n_layer, d_model=c.n_embd, n_ctx=c.n_positions, d_head=c.n_embd // c.n_head, n_heads=c.n_head,
        d_mlp=4 * c.n_embd, d_vocab=c.vocab_size, act_fn="gelu_new", normalization_type="LN",
        original_architecture="GPT2LMHeadModel", default_prepend_bos=False, device=args.device,
    )
    tset = load_transcoder_set(
        {i: str(folder / "set" / f"layer_{i}.safetensors") for i in range(c.n_layer)}, scan="bench",
        feature_input_hook="mlp.hook_in", feature_output_hook="mlp.hook_out", device=torch.device(args.device),
        lazy_encoder=False, lazy_decoder=False,
    )
    model = TransformerLensReplacementModel(cfg)
    model.load_and_process_state_dict(
        convert_gpt2_weights(hf, cfg), fold_ln=False, center_writing_weights=False, center_unembed=False,
        fold_value_biases=False,
    )
    model._configure_replacement_model(tset)
    del hf

    class Tokenizer:  # what attribute() reads of a tokenizer, for token ids that start with a special one
        all_special_ids = (50256,)
        vocab_size = c.vocab_size
        padding_side = "right"

        def decode(self, ids: Any) -> str:
            return str(ids)

    model.tokenizer = Tokenizer()
    _reset_peak(args.device)
    before = _now_gib(args.device)
    start = time.perf_counter()
    graph = attribute(torch.tensor(tokens, device=args.device), model, batch_size=args.batch_size,
                      max_feature_nodes=args.max_feature_nodes)
    seconds = time.perf_counter() - start
    peak = _peak_gib(args.device)
    torch.save({"features": graph.active_features[graph.selected_features].cpu(), "adjacency": graph.adjacency_matrix.cpu()},
               folder / "ct.pt")
    model.reset_hooks(including_permanent=True)
    return {"seconds": seconds, "peak_gib": peak, "before_gib": before, "n_active": int(graph.active_features.shape[0]),
            "n_features": int(graph.selected_features.shape[0])}


def child(args: argparse.Namespace) -> None:
    warnings.filterwarnings("ignore")
    torch.set_grad_enabled(True)
    folder = Path(args.folder)
    tokens = prompt(args.tokens, args.seed)
    fn = run_ours if args.child == "ours" else run_circuit_tracer
    print(RESULT + json.dumps(fn(folder, tokens, args)), flush=True)


def spawn(which: str, folder: Path, args: argparse.Namespace) -> dict[str, Any]:
    cmd = [sys.executable, __file__, "--child", which, "--folder", str(folder), "--tokens", str(args.tokens),
           "--seed", str(args.seed), "--batch-size", str(args.batch_size), "--max-feature-nodes", str(args.max_feature_nodes),
           "--device", args.device]
    done = subprocess.run(cmd, capture_output=True, text=True)
    lines = [line for line in done.stdout.splitlines() if line.startswith(RESULT)]
    if done.returncode != 0 or not lines:
        sys.exit(f"{which} failed:\n{done.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(lines[-1][len(RESULT):])
    return result


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--small", action="store_true", help="a 2-layer, d_model 64 model instead of GPT-2 small")
    p.add_argument("--tokens", type=int, default=64)
    p.add_argument("--latents", type=int, default=4096)
    p.add_argument("--max-feature-nodes", type=int, default=2048)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--device", default="cpu")
    p.add_argument("--repeats", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--child", choices=["ours", "circuit-tracer"], help=argparse.SUPPRESS)
    p.add_argument("--folder", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        child(args)
        return
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        make_inputs(folder, args.small, args.latents, args.seed)
        runs: dict[str, list[dict[str, Any]]] = {"ours": [], "circuit-tracer": []}
        for _ in range(args.repeats):
            for which in ("circuit-tracer", "ours"):
                runs[which].append(spawn(which, folder, args))
        ours, ct = torch.load(folder / "ours.pt"), torch.load(folder / "ct.pt")
    same_features = torch.equal(ours["features"], ct["features"])
    scale = float(ct["adjacency"].abs().max())
    diff = float((ours["adjacency"] - ct["adjacency"]).abs().max()) if ours["adjacency"].shape == ct["adjacency"].shape else math.inf
    first = runs["ours"][0]
    print(f"graph of {args.tokens} tokens, {'2-layer' if args.small else 'GPT-2 small'} random model, {args.latents} latents "
          f"per layer, {first['n_active']} active latents, {first['n_features']} feature nodes, batch {args.batch_size}, "
          f"device {args.device}, {torch.get_num_threads()} threads")
    for which, results in runs.items():
        secs = statistics.median(r["seconds"] for r in results)
        peak = max(r["peak_gib"] for r in results)
        added = max(r["peak_gib"] - r["before_gib"] for r in results)
        print(f"  {which:15s} {secs:8.2f} s   peak memory {peak:6.2f} GiB ({added:+.2f} GiB over the loaded model)")
    speedup = statistics.median(r["seconds"] for r in runs["circuit-tracer"]) / statistics.median(r["seconds"] for r in runs["ours"])
    print(f"  speedup {speedup:.2f}x (target >= 1.0x); ours by stage: "
          + ", ".join(f"{k} {v:.2f}s" for k, v in first["stages"].items()))
    print(f"  same features: {same_features}; max |adjacency difference| {diff:.2e} (largest entry {scale:.2e})")
    if not same_features or diff > 1e-4 * max(scale, 1.0):
        sys.exit("the two graphs differ")


if __name__ == "__main__":
    main()
