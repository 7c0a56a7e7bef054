"""What a debugger request costs, against one bare forward + backward pass, on every family.

    .venv/bin/python benchmarks/bench_server.py                 # GPT-2, Llama-style, Gemma 2
    .venv/bin/python benchmarks/bench_server.py --quick         # fewer repetitions
    .venv/bin/python benchmarks/bench_server.py --families gpt2 --scaling   # 16 ... 1024 tokens
    .venv/bin/python benchmarks/bench_server.py --families gpt2 --profile   # where the time goes

Models: each family at GPT-2 small's size (12 layers, d_model 768, 12 heads, MLP 3072,
vocabulary 50257; Llama-style with 4 key/value heads, SwiGLU, RMSNorm, rotary positions; Gemma 2
with its post-norms and soft-caps), random weights built by `transformers`, fp32, CPU,
torch.set_num_threads(--threads); GPT-2's tokenizer for all (the models use its vocabulary).

Per family and request, in one run, interleaved round by round (only one side computes at a
time, so drifting load hits every row alike; medians, and minima in brackets):
  bare        one forward + backward of the logit difference " Canada" - " Germany" at the last
              token, gradient to the input embeddings only, no hooks (a batch of 2 for the pair);
  ours cold   POST /batched_tdb over HTTP to the server (a subprocess with uvicorn, as the CLI
              serves), the original client's request, with the server's cache of scored tokens
              off: every node is new;
  ours warm   the same with that cache on (nodes seen before, as after an ablation or a trace);
  script      benchmarks/script_baseline.py: a researcher's transformers script computing the
              node table's scalars (act x grad, write norm, direct effect, activation) for every
              node and their top and bottom k (no scored tokens, no attribution, no JSON).
Requests: the client's default at 64 tokens and at 7 tokens, and an ablated + unablated pair at
7 tokens (one MLP neuron ablated). Targets (issue 14): cold <= 1.3x bare at 64 tokens, <= 1.6x at
7, the pair <= 1.3x a bare batch of 2; ours <= the script on every request; the serving
process's peak RSS <= 100 MiB above a process that loads the model and runs the bare pass; the
answer for 512 tokens < 2 MB of JSON. With --scaling: the cold ratio at 16, 64, 256 and 1024
tokens, which must not grow with the prompt.

What grows with the square of the prompt (token pairs x heads): the recorded attention (the
bare pass runs fused SDPA; a request records the pattern and its gradient, so it runs explicit
softmax attention); the head scalars of the node table (act x grad, write norm, direct effect,
each (T, T, heads) per layer), computed once per layer and dropped after ranking
(`activation_server/node_scalars.py`, within the recording's 64 MiB `ScalarCache`); and
`componentSumsForTokenDisplay`, the original client's (T, T) matrix of act x grad, the only
answer term quadratic in the prompt: sent at display resolution (10^-5 of its largest entry, at
most 5 digits, zeros as 0; `activation_server/wire_floats.py`), 1.3-1.5 MB of the ~1.7-1.9 MB
at 512 tokens (half of its 262k entries are the causal mask's zeros); exact, it was 2.6 MB
of 3.0.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))

TARGET, DISTRACTOR = " Canada", " Germany"
FILLER = (
    " The capital of France is Paris, and the capital of Germany is Berlin."
    " Rome is in Italy, Madrid is in Spain, and Lisbon is in Portugal."
    " Tokyo is the largest city of Japan, Seoul that of Korea."
    " Every country has a capital, and most capitals are large cities on rivers."
)
ENDING = " Paris, France. Ottawa,"
CASES = {"64": (64, False), "7": (7, False), "pair": (7, True)}
LIMITS = {"64": 1.3, "7": 1.6, "pair": 1.3}
MEMORY_LIMIT_MIB = 100
JSON_LIMIT_BYTES = 2_000_000


# ------------------------------------------------------------------ setup


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    p.add_argument("--families", nargs="+", default=["gpt2", "llama", "gemma2"])
    p.add_argument("--quick", action="store_true", help="2 timed rounds instead of 5")
    p.add_argument("--reps", type=int, default=None)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--scaling", action="store_true", help="also 16, 64, 256 and 1024 tokens")
    p.add_argument("--profile", action="store_true", help="also a stage breakdown of one request")
    p.add_argument("--layers", type=int, default=None, help="override the size (quick checks)")
    p.add_argument("--child", choices=["server", "baseline"], help=argparse.SUPPRESS)
    p.add_argument("--family", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    args.reps = args.reps or (2 if args.quick else 5)
    return args


def build(family: str, layers: int | None) -> tuple[Any, Any, Any]:
    """(our model, the transformers model holding the same weights, GPT-2's tokenizer)."""
    import torch

    from neuron_explainer.models.loading import from_transformers
    from neuron_explainer.models.random_models import gpt2_small_sized, hf_model
    from neuron_explainer.models.tokenizer import get_tokenizer

    size = gpt2_small_sized(family)
    if layers:
        size["n_layer" if family == "gpt2" else "num_hidden_layers"] = layers
    hf = hf_model(family, seed=0, **size)
    hf.requires_grad_(False)
    ours = from_transformers(hf)
    ours.requires_grad_(False)
    torch.manual_seed(0)
    return ours, hf, get_tokenizer()


def build_prompt(enc: Any, n_tokens: int) -> str:
    """A prompt starting with <|endoftext|> that encodes to exactly `n_tokens` tokens."""
    start = "<|endoftext|>"

    def count(text: str) -> int:
        return len(enc.encode(text, allowed_special="all"))

    ending = ENDING if count(start + ENDING) <= n_tokens else ""
    text, words, i = start, FILLER.split(" ")[1:], 0
    while count(text + ending) < n_tokens:
        word = " " + words[i % len(words)]
        i += 1
        if count(text + word + ending) <= n_tokens:
            text += word
        elif count(text + " the" + ending) <= n_tokens:
            text += " the"
        else:
            break
    text += ending
    if count(text) != n_tokens:
        raise SystemExit(f"could not build a prompt of exactly {n_tokens} tokens (got {count(text)})")
    return text


def tdb_body(prompt: str, ablations: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "prompt": prompt, "targetTokens": [TARGET], "distractorTokens": [DISTRACTOR],
        "componentTypeForMlp": "neuron", "componentTypeForAttention": "attention_head",
        "topAndBottomKForNodeTable": 10, "hideEarlyLayersWhenAblating": True, "nodeAblations": ablations,
    }


def request_body(prompt: str, n_tokens: int, pair: bool, n_layers: int = 12) -> dict[str, Any]:
    if not pair:
        return {"subRequests": [tdb_body(prompt, [])]}
    ablation = {"nodeIndex": {"nodeType": "mlp_neuron", "tensorIndices": [n_tokens // 2, 131],
                              "layerIndex": min(5, n_layers - 1), "passType": "forward"}, "value": 0}
    return {"subRequests": [tdb_body(prompt, [ablation]), tdb_body(prompt, [])]}


def bare_step(model: Any, tokens: list[int], enc: Any, batch: int) -> Callable[[], None]:
    """One forward + backward of the logit difference, gradient to the input embeddings only."""
    import torch

    x = torch.tensor([tokens] * batch)
    target, distractor = enc.encode(TARGET)[0], enc.encode(DISTRACTOR)[0]

    def leaf(h: Any) -> Any:
        return h.detach().requires_grad_(True)

    def step() -> None:
        with torch.enable_grad(), model.hooks(fwd={"resid.post_emb": leaf}):
            logits = model(x)
            (logits[:, -1, target] - logits[:, -1, distractor]).sum().backward()

    return step


def status_mib(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


def cpu_s() -> float:
    import resource

    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


# ------------------------------------------------------------------ children


def child_baseline(args: argparse.Namespace) -> None:
    """The memory reference: load the model, run the bare passes the timed requests are compared
    with (64 tokens, 7, a batch of 2 at 7), report this process's peak RSS; then a bare pass at
    512 tokens, and the peak again."""
    import torch

    torch.set_num_threads(args.threads)
    model, hf, enc = build(args.family, args.layers)
    del hf
    import gc

    gc.collect()
    for n_tokens, batch in ((64, 1), (7, 1), (7, 2)):
        step = bare_step(model, enc.encode(build_prompt(enc, n_tokens), allowed_special="all"), enc, batch)
        for _ in range(3):
            step()
    timed = {"peak_mib": status_mib("VmHWM"), "rss_mib": status_mib("VmRSS")}
    bare_step(model, enc.encode(build_prompt(enc, 512), allowed_special="all"), enc, 1)()
    print("BENCH " + json.dumps({**timed, "peak_512_mib": status_mib("VmHWM")}), flush=True)


def child_server(args: argparse.Namespace) -> None:
    """The server, as the CLI serves, on a free port; /_bench routes switch the cache and tell
    this process's CPU time and peak RSS."""
    import gc
    import socket

    import torch
    import uvicorn

    from neuron_explainer.activation_server.limits import Limits
    from neuron_explainer.activation_server.main import create_app
    from neuron_explainer.activation_server.processing import Debugger

    torch.set_num_threads(args.threads)
    model, hf, enc = build(args.family, args.layers)
    del hf
    gc.collect()
    debugger = Debugger(model, enc, "bench")
    # as --max-prompt-tokens 1024: top-k requests past the original server's 500 tokens
    app = create_app(debugger, limits=Limits(max_prompt_tokens=model.cfg.ctx_window))
    cache_size = debugger.scored_cache_size
    done = threading.Event()

    @app.post("/_bench/cache/{on}")
    def bench_cache(on: int) -> None:
        debugger.scorer.clear()
        debugger.scored_cache_size = cache_size if on else 0

    @app.post("/_bench/stats")
    def bench_stats() -> dict[str, float]:
        return {"cpu_s": cpu_s(), "peak_mib": status_mib("VmHWM"), "rss_mib": status_mib("VmRSS")}

    @app.post("/_bench/stop")
    def bench_stop() -> None:
        done.set()

    gc.freeze()  # as the CLI does before serving: the collector skips what start-up built
    sock = socket.socket()
    # as on the sockets uvicorn binds itself (the CLI's): without it, each small answer
    # on a kept-alive connection waits ~40 ms for the client's delayed ACK (Nagle's algorithm)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.01)
    print(f"BENCH_PORT {sock.getsockname()[1]}", flush=True)
    done.wait()
    server.should_exit = True
    thread.join(timeout=10)


def run_child(kind: str, family: str, args: argparse.Namespace, extra: list[str] | None = None) -> subprocess.Popen[str]:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", kind, "--family", family,
           "--threads", str(args.threads), *(["--layers", str(args.layers)] if args.layers else []), *(extra or [])]
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads))
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


# ------------------------------------------------------------------ measuring


def measure_family(family: str, args: argparse.Namespace, lengths: list[str]) -> dict[str, Any]:
    import gc

    import httpx
    import torch
    from script_baseline import node_table, prepare

    torch.set_num_threads(args.threads)
    memory = run_child("baseline", family, args)
    server = run_child("server", family, args)
    model, hf, enc = build(family, args.layers)
    consts = prepare(hf)
    out, errors = memory.communicate(timeout=900)
    line = next((x for x in out.splitlines() if x.startswith("BENCH ")), None)
    if line is None:
        raise SystemExit(f"the memory reference process failed:\n{errors[-3000:]}")
    reference = json.loads(line[len("BENCH "):])
    assert server.stdout is not None
    first = server.stdout.readline()
    if not first.startswith("BENCH_PORT "):
        server.kill()
        raise SystemExit(f"the server process failed:\n{first}{server.communicate()[1][-3000:]}")
    port = int(first.split()[1])
    results: dict[str, Any] = {"family": family, "cases": {}}
    target, distractor = enc.encode(TARGET)[0], enc.encode(DISTRACTOR)[0]
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=900) as client:

            def stats() -> dict[str, float]:
                return dict(client.post("/_bench/stats").json())

            for case in lengths:
                n_tokens, pair = CASES[case] if case in CASES else (int(case), False)
                prompt = build_prompt(enc, n_tokens)
                tokens = enc.encode(prompt, allowed_special="all")
                body = request_body(prompt, n_tokens, pair, model.cfg.n_layers)
                bare = bare_step(model, tokens, enc, 2 if pair else 1)
                x = torch.tensor([tokens])
                sizes: list[int] = []

                def post(warm: bool, body: dict[str, Any] = body, sizes: list[int] = sizes) -> float:
                    client.post(f"/_bench/cache/{int(warm)}").raise_for_status()
                    if warm:  # the nodes seen before: the same request once, untimed
                        client.post("/batched_tdb", json=body).raise_for_status()
                    c0 = stats()["cpu_s"]
                    start = time.perf_counter()
                    r = client.post("/batched_tdb", json=body)
                    wall = time.perf_counter() - start
                    if r.status_code != 200:
                        raise SystemExit(f"/batched_tdb answered {r.status_code}: {r.text[:500]}")
                    sizes.append(len(r.content))
                    post.cpu = stats()["cpu_s"] - c0  # type: ignore[attr-defined]
                    return wall

                def script(x: Any = x, pair: bool = pair) -> None:
                    for _ in range(2 if pair else 1):
                        node_table(hf, consts, x, target, distractor)

                tasks: dict[str, Callable[[], Any]] = {"bare": bare, "cold": lambda: post(False),
                                                       "warm": lambda: post(True), "script": script}
                for fn in tasks.values():  # warm-up
                    fn()
                times: dict[str, list[float]] = {k: [] for k in tasks}
                for _ in range(args.reps):
                    for name, fn in tasks.items():
                        gc.collect()
                        if name in ("cold", "warm"):
                            times[name].append(fn())
                        else:
                            start = time.perf_counter()
                            fn()
                            times[name].append(time.perf_counter() - start)
                results["cases"][case] = {"times": times, "json_bytes": max(sizes), "tokens": n_tokens, "pair": pair}
                print(f"{family} {case}: done", file=sys.stderr, flush=True)
            results["server"] = stats()  # its peak over the timed requests
            if "512" not in lengths:  # the answer's size at 512 tokens, and the peak with it
                prompt = build_prompt(enc, 512)
                client.post("/_bench/cache/0")
                r = client.post("/batched_tdb", json=request_body(prompt, 512, False))
                if r.status_code != 200:
                    raise SystemExit(f"/batched_tdb at 512 tokens answered {r.status_code}: {r.text[:500]}")
                results["json_512_bytes"] = len(r.content)
                results["server_512_peak_mib"] = stats()["peak_mib"]
            client.post("/_bench/stop")
    finally:
        server.wait(timeout=60) if server.poll() is None else None
        if server.poll() is None:
            server.kill()
    results["reference"] = reference
    return results


# ------------------------------------------------------------------ reporting


def _ms(xs: list[float]) -> str:
    return f"{statistics.median(xs) * 1000:.0f} ({min(xs) * 1000:.0f})"


def report(all_results: list[dict[str, Any]], args: argparse.Namespace) -> str:
    med = statistics.median
    lines = [
        f"GPT-2-small-sized random models, fp32, CPU, {args.threads} threads, torch.set_num_threads; "
        f"median (min) of {args.reps} interleaved rounds after a warm-up; HTTP to a uvicorn server process. "
        f"Load average at the end: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs.",
        "",
        "| family | request | bare ms | ours cold ms | ours warm ms | script ms | cold / bare | warm / bare | cold / script | JSON | PASS/FAIL |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in all_results:
        for case, c in r["cases"].items():
            t = c["times"]
            cold = med(t["cold"]) / med(t["bare"])
            warm = med(t["warm"]) / med(t["bare"])
            vs_script = med(t["cold"]) / med(t["script"])
            limit = LIMITS.get(case)
            checks = [vs_script <= 1.0] + ([cold <= limit] if limit else [])
            verdict = ("PASS" if all(checks) else "FAIL") + (f" (<= {limit}x, <= script)" if limit else " (<= script)")
            label = f"{c['tokens']} tokens" + (", ablated + unablated" if c["pair"] else "")
            lines.append(
                f"| {r['family']} | {label} | {_ms(t['bare'])} | {_ms(t['cold'])} | {_ms(t['warm'])} | {_ms(t['script'])} | "
                f"{cold:.2f}x | {warm:.2f}x | {vs_script:.2f}x | {c['json_bytes'] / 1024:.0f} KiB | {verdict} |"
            )
    lines += ["", "Peak RSS: the server over the timed requests against a process that loads the model and runs "
              "the same bare passes; then both after one 512-token request (bare pass / /batched_tdb).", "",
              "| family | server peak RSS | bare-pass process peak RSS | difference | <= 100 MiB | at 512 tokens: server / bare | JSON at 512 tokens | < 2 MB |",
              "|---|---|---|---|---|---|---|---|"]
    for r in all_results:
        peak, ref = r["server"]["peak_mib"], r["reference"]["peak_mib"]
        j = r.get("json_512_bytes")
        at_512 = (f"{r['server_512_peak_mib']:.0f} / {r['reference']['peak_512_mib']:.0f} MiB"
                  if "server_512_peak_mib" in r else "")
        lines.append(
            f"| {r['family']} | {peak:.0f} MiB | {ref:.0f} MiB | {peak - ref:+.0f} MiB | {'PASS' if peak - ref <= MEMORY_LIMIT_MIB else 'FAIL'} | "
            f"{at_512} | " + (f"{j / 1e6:.2f} MB | {'PASS' if j < JSON_LIMIT_BYTES else 'FAIL'} |" if j else " | |")
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # sleeping OpenMP waits on a shared machine
    args = parse_args(argv)
    if args.child:
        {"baseline": child_baseline, "server": child_server}[args.child](args)
        return
    started = time.perf_counter()
    lengths = ["64", "7", "pair"]
    results = [measure_family(f, args, lengths) for f in args.families]
    print(report(results, args))
    if args.scaling:
        scaling = [measure_family(f, args, ["16", "64", "256", "1024"]) for f in args.families[:1]]
        print()
        print("Scaling (cold ratio to the bare pass by prompt length):")
        print(report(scaling, args))
    if args.profile:
        from profile_request import profile

        print()
        print(profile(args.families[0], args.threads))
    print(f"\n(benchmark wall time {time.perf_counter() - started:.0f} s)", file=sys.stderr)


if __name__ == "__main__":
    main()
