"""Cost of a `/batched_tdb` request against one bare forward + backward pass.

    .venv/bin/python benchmarks/bench_server.py            # GPT-2 small, 64 tokens (~1-2 min)
    .venv/bin/python benchmarks/bench_server.py --quick    # fewer repetitions
    .venv/bin/python benchmarks/bench_server.py --quick --layers 2 --d-model 64 --tokens 16
    .venv/bin/python benchmarks/bench_server.py --profile  # where the request's time goes

Model: random weights (GPT-2 initialisation), fp32, CPU, torch.set_num_threads(2); parameters
frozen as the server freezes them. The prompt starts with <|endoftext|> and encodes to exactly
--tokens tokens; the loss is the logit difference " Canada" - " Germany" at the last token.

Rows (median of the timed repetitions, after warm-up):
  baseline        one forward + backward of the logit difference, gradient to the input
                  embeddings only (a leaf requiring grad; weights frozen), no hooks;
  in-process      `Debugger.batched_tdb` on the client's request (no HTTP, no serialisation);
  HTTP full       POST /batched_tdb to a real uvicorn (127.0.0.1, free port, background
                  thread) with httpx: the original client's first request;
  HTTP ablated    the same with two sub-requests (one MLP neuron ablated, and unablated), as
                  the client sends after an ablation.
Baseline and requests are timed interleaved, round by round, in one process, so drifting load
from other processes on the machine hits both alike.

Peak memory is each process's peak RSS (ru_maxrss), each in a fresh subprocess:
  (a) loads the model and runs the baseline only;
  (b) loads the model, builds the Debugger, serves and answers the requests above (the httpx
      client runs in the same process and only holds the response bytes).

--profile runs a third subprocess: a stage breakdown of what the route does (request parsing,
batched_tdb with its inference pass, model_dump, FastAPI's response-model validation and JSON
encoding), cProfile's top entries by cumulative time, the entries of processing.py /
inference.py / scalars.py, and torch's top operators by self CPU time.
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import io
import json
import os
import pstats
import resource
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

TARGET, DISTRACTOR = " Canada", " Germany"
TARGETS = {"full": 2.0}  # max ratio to the baseline
MEMORY_TARGET_GIB = 1.5
FILLER = (
    " The capital of France is Paris, and the capital of Germany is Berlin."
    " Rome is in Italy, Madrid is in Spain, and Lisbon is in Portugal."
    " Tokyo is the largest city of Japan, Seoul that of Korea."
    " Every country has a capital, and most capitals are large cities on rivers."
)
ENDING = " Paris, France. Ottawa,"


# ------------------------------------------------------------------ setup


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    p.add_argument("--quick", action="store_true", help="fewer repetitions")
    p.add_argument("--tokens", type=int, default=64, help="prompt length in tokens (default 64)")
    p.add_argument("--layers", type=int, default=12)
    p.add_argument("--d-model", type=int, default=768)
    p.add_argument("--heads", type=int, default=None, help="default: 12 (or fewer, to divide d-model)")
    p.add_argument("--reps", type=int, default=None, help="timed repetitions (default 7, --quick 3)")
    p.add_argument("--warmup", type=int, default=None, help="warm-up rounds (default 2, --quick 1)")
    p.add_argument("--threads", type=int, default=2, help="torch.set_num_threads (default 2)")
    p.add_argument("--profile", action="store_true", help="also profile one /batched_tdb request")
    p.add_argument("--profile-only", action="store_true", help="only the profile")
    p.add_argument("--child", choices=["baseline", "server", "profile"], help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.heads is None:
        args.heads = next(h for h in (12, 8, 6, 4, 3, 2, 1) if args.d_model % h == 0)
    args.reps = args.reps or (3 if args.quick else 7)
    args.warmup = args.warmup if args.warmup is not None else (1 if args.quick else 2)
    return args


def _setup(args: argparse.Namespace) -> tuple[Any, Any, list[int]]:
    """(model with frozen parameters, tokenizer, prompt tokens), as the server would hold them."""
    import torch

    from neuron_explainer.models.tokenizer import get_tokenizer
    from neuron_explainer.models.transformer import Transformer, TransformerConfig

    torch.set_num_threads(args.threads)
    cfg = TransformerConfig(
        n_layers=args.layers, d_model=args.d_model, n_heads=args.heads, n_vocab=50257, ctx_window=1024
    )
    model = Transformer(cfg).init_weights(seed=0).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    enc = get_tokenizer()
    tokens = enc.encode(build_prompt(enc, args.tokens), allowed_special="all")
    return model, enc, tokens


def build_prompt(enc: Any, n_tokens: int) -> str:
    """A prompt starting with <|endoftext|> that encodes to exactly `n_tokens` tokens.

    tiktoken encodes each pre-tokenizer chunk (a word with its leading space, a run of
    punctuation) on its own, so whole words can be appended while counting tokens."""
    start = "<|endoftext|>"

    def count(text: str) -> int:
        return len(enc.encode(text, allowed_special="all"))

    ending = ENDING if count(start + ENDING) <= n_tokens else ""
    text = start
    words = FILLER.split(" ")[1:]
    i = 0
    while count(text + ending) < n_tokens:
        word = " " + words[i % len(words)]
        i += 1
        if count(text + word + ending) <= n_tokens:
            text += word
        elif count(text + " the" + ending) <= n_tokens:
            text += " the"  # one token
        else:
            break
    text += ending
    if count(text) != n_tokens:
        raise SystemExit(f"could not build a prompt of exactly {n_tokens} tokens (got {count(text)})")
    return text


def tdb_body(prompt: str, ablations: list[dict[str, Any]]) -> dict[str, Any]:
    """One sub-request, shaped exactly as the original client sends it."""
    return {
        "prompt": prompt,
        "targetTokens": [TARGET],
        "distractorTokens": [DISTRACTOR],
        "componentTypeForMlp": "neuron",
        "componentTypeForAttention": "attention_head",
        "topAndBottomKForNodeTable": 10,
        "hideEarlyLayersWhenAblating": True,
        "nodeAblations": ablations,
    }


def request_bodies(prompt: str, n_tokens: int, n_layers: int, d_ff: int) -> dict[str, dict[str, Any]]:
    ablation = {
        "nodeIndex": {
            "nodeType": "mlp_neuron",
            "tensorIndices": [n_tokens // 2, min(131, d_ff - 1)],
            "layerIndex": min(5, n_layers - 1),
            "passType": "forward",
        },
        "value": 0,
    }
    return {
        "full": {"subRequests": [tdb_body(prompt, [])]},
        "ablated": {"subRequests": [tdb_body(prompt, [ablation]), tdb_body(prompt, [])]},
    }


def baseline_fn(model: Any, tokens: list[int], enc: Any) -> Callable[[], float]:
    """One bare forward + backward: logit difference at the last token, gradient to the input
    embeddings only (weights are frozen; the embedding output is made a leaf)."""
    import torch

    x = torch.tensor([tokens])
    target, distractor = enc.encode(TARGET)[0], enc.encode(DISTRACTOR)[0]
    leaf: list[Any] = []

    def make_leaf(h: Any) -> Any:
        h = h.detach().requires_grad_(True)
        leaf.append(h)
        return h

    def step() -> float:
        leaf.clear()
        with torch.enable_grad(), model.hooks(fwd={"resid.post_emb": make_leaf}):
            logits = model(x)
            diff = logits[0, -1, target] - logits[0, -1, distractor]
            diff.backward()
        assert leaf[0].grad is not None
        return float(diff)

    return step


def timed(fn: Callable[[], Any]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def rss_now_gib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 2**20
    return float("nan")


def peak_rss_gib() -> float:
    kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    return kib / 2**20


def _emit(result: dict[str, Any]) -> None:
    print("BENCH_RESULT " + json.dumps(result), flush=True)


# ------------------------------------------------------------------ children


def child_baseline(args: argparse.Namespace) -> None:
    model, enc, tokens = _setup(args)
    loaded = rss_now_gib()
    step = baseline_fn(model, tokens, enc)
    for _ in range(args.warmup):
        step()
    times = [timed(step) for _ in range(args.reps)]
    _emit({"baseline_s": times, "loaded_rss_gib": loaded, "peak_rss_gib": peak_rss_gib()})


class _Server:
    """uvicorn on 127.0.0.1 (a free port) in a background thread."""

    def __init__(self, app: Any):
        import uvicorn

        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        config = uvicorn.Config(app, log_level="warning", access_log=False)
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)

    def __enter__(self) -> _Server:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.01)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)
        self.sock.close()


def _debugger(args: argparse.Namespace) -> tuple[Any, Any, list[int], str]:
    from neuron_explainer.activation_server.processing import Debugger

    model, enc, tokens = _setup(args)
    return Debugger(model, enc, "bench"), enc, tokens, enc.decode(tokens)


def child_server(args: argparse.Namespace) -> None:
    import httpx

    from neuron_explainer.activation_server import schemas as S
    from neuron_explainer.activation_server.main import create_app

    debugger, enc, tokens, prompt = _debugger(args)
    model = debugger.model
    loaded = rss_now_gib()
    bodies = request_bodies(prompt, len(tokens), model.cfg.n_layers, model.cfg.d_ff)
    tdb_request = S.BatchedTdbRequest.model_validate(bodies["full"])
    step = baseline_fn(model, tokens, enc)
    sizes: dict[str, int] = {}
    inference_s: dict[str, float] = {}

    with _Server(create_app(debugger)) as server, httpx.Client(
        base_url=f"http://127.0.0.1:{server.port}", timeout=600
    ) as client:

        def post(name: str) -> None:
            r = client.post("/batched_tdb", json=bodies[name], headers={"Accept": "application/json"})
            if r.status_code != 200:
                raise RuntimeError(f"/batched_tdb ({name}) answered {r.status_code}: {r.text[:500]}")
            sizes[name] = len(r.content)
            if name not in inference_s:  # check the answer once: what the client reads is there
                data = r.json()
                subs = data["inferenceSubResponses"]
                assert len(subs) == len(bodies[name]["subRequests"])
                got = subs[0]["inferenceResponse"]["inferenceAndTokenData"]
                assert len(got["tokensAsStrings"]) == len(tokens), "wrong prompt length"
                for key in ("topKComponents", "topOutputTokenLogits", "componentSumsForTokenDisplay",
                            "upvotedOutputTokens", "inputTokensThatUpvoteMlp", "inputTokensThatUpvoteAttnQ",
                            "inputTokensThatUpvoteAttnK", "tokenPairAttribution"):
                    assert key in subs[0]["processingResponseDataByName"], key
                inference_s[name] = got["inferenceTime"]
                del data

        def inproc() -> None:
            debugger.batched_tdb(tdb_request)

        tasks: dict[str, Callable[[], Any]] = {
            "baseline": step,
            "inproc": inproc,
            "full": lambda: post("full"),
            "ablated": lambda: post("ablated"),
        }
        times: dict[str, list[float]] = {k: [] for k in tasks}
        for _ in range(args.warmup):
            for fn in tasks.values():
                fn()
        for _ in range(args.reps):  # interleaved rounds: load drift hits every row alike
            for name, fn in tasks.items():
                gc.collect()
                times[name].append(timed(fn))

    resp = debugger.batched_tdb(tdb_request)
    inproc_bytes = len(resp.model_dump_json(by_alias=True))
    _emit({
        "times": times,
        "sizes": sizes,
        "inproc_json_bytes": inproc_bytes,
        "inference_s": inference_s,
        "loaded_rss_gib": loaded,
        "peak_rss_gib": peak_rss_gib(),
    })


def child_profile(args: argparse.Namespace) -> None:
    import orjson
    import torch
    from fastapi.routing import APIRoute

    from neuron_explainer.activation_server import schemas as S
    from neuron_explainer.activation_server.main import _dump, create_app

    debugger, enc, tokens, prompt = _debugger(args)
    model = debugger.model
    bodies = request_bodies(prompt, len(tokens), model.cfg.n_layers, model.cfg.d_ff)
    raw = orjson.dumps(bodies["full"])
    app = create_app(debugger)
    route = next(r for r in app.routes if isinstance(r, APIRoute) and r.path == "/batched_tdb")
    field = route.response_field
    assert field is not None
    step = baseline_fn(model, tokens, enc)

    # What the route does, stage by stage (FastAPI: body -> model; endpoint returns _dump(...);
    # then serialize_response validates that dict against response_model and dumps JSON).
    def stages() -> dict[str, float]:
        out: dict[str, float] = {}
        t0 = time.perf_counter()
        req = S.BatchedTdbRequest.model_validate(orjson.loads(raw))
        t1 = time.perf_counter()
        resp = debugger.batched_tdb(req)
        t2 = time.perf_counter()
        content = _dump(resp)
        t3 = time.perf_counter()
        value, errors = field.validate(content, {}, loc=("response",))
        assert not errors, errors
        t4 = time.perf_counter()
        body = field.serialize_json(value, by_alias=True)
        t5 = time.perf_counter()
        out["parse request"] = t1 - t0
        out["batched_tdb (total)"] = t2 - t1
        out["  of which inference.run"] = resp.inference_sub_responses[0].inference_response.inference_and_token_data.inference_time
        out["  of which scalars + processing"] = out["batched_tdb (total)"] - out["  of which inference.run"]
        out["model_dump (route's _dump)"] = t3 - t2
        out["response_model validate (FastAPI)"] = t4 - t3
        out["JSON encode (FastAPI serialize_json)"] = t5 - t4
        out["JSON bytes"] = len(body)
        return out

    stages()  # warm-up (weights caches, allocator)
    step()
    rounds = [stages() for _ in range(max(1, min(args.reps, 3)))]
    base = statistics.median(timed(step) for _ in range(max(1, min(args.reps, 3))))
    breakdown = {k: statistics.median(r[k] for r in rounds) for k in rounds[0]}

    req = S.BatchedTdbRequest.model_validate(bodies["full"])

    def whole_route() -> None:
        content = _dump(debugger.batched_tdb(req))
        value, _ = field.validate(content, {}, loc=("response",))
        field.serialize_json(value, by_alias=True)

    prof = cProfile.Profile()
    prof.enable()
    whole_route()
    prof.disable()
    text = io.StringIO()
    stats = pstats.Stats(prof, stream=text)
    stats.sort_stats("cumulative").print_stats(15)
    top = _trim_pstats(text.getvalue())

    ours = io.StringIO()
    stats2 = pstats.Stats(prof, stream=ours)
    stats2.sort_stats("cumulative").print_stats(r"(processing|inference|scalars|transformer)\.py", 30)
    ours_text = _trim_pstats(ours.getvalue())

    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU], record_shapes=True) as tp:
        debugger.batched_tdb(req)
    ops = tp.key_averages(group_by_input_shape=True).table(sort_by="self_cpu_time_total", row_limit=15, max_name_column_width=40, max_shapes_column_width=60)

    _emit({
        "breakdown": breakdown,
        "baseline_s": base,
        "cprofile_top": top,
        "cprofile_ours": ours_text,
        "torch_ops": ops,
    })


def _trim_pstats(text: str) -> str:
    """pstats output without its header lines, paths shortened to the repository."""
    lines = text.splitlines()
    start = next((i for i, line in enumerate(lines) if "ncalls" in line), 0)
    root = str(Path(__file__).resolve().parents[1]) + "/"
    site = str(Path(os.__file__).parent) + "/"
    out = [line.replace(root, "").replace(site, "") for line in lines[start:] if line.strip()]
    return "\n".join(out)


# ------------------------------------------------------------------ parent


def run_child(kind: str, argv: list[str], timeout: float = 600) -> dict[str, Any]:
    env = dict(os.environ, OMP_NUM_THREADS=str(parse_args(argv).threads), MKL_NUM_THREADS=str(parse_args(argv).threads))
    cmd = [sys.executable, str(Path(__file__).resolve()), *argv, "--child", kind]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    for line in proc.stdout.splitlines():
        if line.startswith("BENCH_RESULT "):
            return json.loads(line[len("BENCH_RESULT "):])  # type: ignore[no-any-return]
    sys.stderr.write(proc.stdout[-4000:] + proc.stderr[-4000:])
    raise SystemExit(f"the {kind} subprocess failed (exit {proc.returncode})")


def _ms(xs: list[float]) -> str:
    med = statistics.median(xs) * 1000
    spread = f" (min {min(xs) * 1000:.0f}, max {max(xs) * 1000:.0f})" if len(xs) > 1 else ""
    return f"{med:.0f} ms{spread}"


def report(args: argparse.Namespace, a: dict[str, Any], b: dict[str, Any]) -> str:
    t = b["times"]
    base = statistics.median(t["baseline"])
    sizes = b["sizes"]
    kib = 1024

    def ratio(name: str) -> str:
        return f"{statistics.median(t[name]) / base:.2f}x"

    def verdict(name: str) -> str:
        limit = TARGETS.get(name)
        if limit is None:
            return ""
        ok = statistics.median(t[name]) / base <= limit
        return f"<= {limit:.1f}x: **{'PASS' if ok else 'FAIL'}**"

    mem_ok = b["peak_rss_gib"] <= MEMORY_TARGET_GIB
    rows = [
        ("baseline: forward + backward to the input (in process b)", _ms(t["baseline"]), "1.00x", "", ""),
        ("baseline, in its own process (a)", _ms(a["baseline_s"]), f"{statistics.median(a['baseline_s']) / base:.2f}x", "", "timed alone, not interleaved"),
        ("`Debugger.batched_tdb`, in process (no HTTP)", _ms(t["inproc"]), ratio("inproc"), "",
         f"JSON {b['inproc_json_bytes'] / kib:.0f} KiB; inference.run {b['inference_s'].get('full', float('nan')) * 1000:.0f} ms"),
        ("POST /batched_tdb over HTTP, 1 sub-request", _ms(t["full"]), ratio("full"), verdict("full"), f"response {sizes['full'] / kib:.0f} KiB"),
        ("POST /batched_tdb over HTTP, ablated + unablated (2 sub-requests)", _ms(t["ablated"]), ratio("ablated"), "",
         f"response {sizes['ablated'] / kib:.0f} KiB; {statistics.median(t['ablated']) / statistics.median(t['full']):.2f}x the 1-sub-request time"),
    ]
    lines = [
        f"Model: {args.layers} layers, d_model {args.d_model}, {args.heads} heads, vocab 50257, ctx 1024, random weights, fp32, CPU, "
        f"{args.threads} threads; prompt {args.tokens} tokens; median of {args.reps} after {args.warmup} warm-up round(s).",
        "",
        "| measurement | time (median) | vs baseline | target | notes |",
        "|---|---|---|---|---|",
        *(f"| {r[0]} | {r[1]} | {r[2]} | {r[3]} | {r[4]} |" for r in rows),
        f"| peak RSS (a): load model + baseline | {a['peak_rss_gib']:.2f} GiB | | | after load {a['loaded_rss_gib']:.2f} GiB |",
        f"| peak RSS (b): serve + answer the requests | {b['peak_rss_gib']:.2f} GiB | {b['peak_rss_gib'] / a['peak_rss_gib']:.2f}x (a) | "
        f"<= {MEMORY_TARGET_GIB} GiB: **{'PASS' if mem_ok else 'FAIL'}** | after load + Debugger + app {b['loaded_rss_gib']:.2f} GiB |",
    ]
    return "\n".join(lines)


def report_profile(p: dict[str, Any]) -> str:
    bd = p["breakdown"]
    lines = ["### /batched_tdb, 1 sub-request, stage by stage (median, ms; in process, no transport)", "",
             f"baseline forward + backward: {p['baseline_s'] * 1000:.0f} ms", "", "| stage | ms | vs baseline |", "|---|---|---|"]
    for k, v in bd.items():
        if k == "JSON bytes":
            continue
        lines.append(f"| {k} | {v * 1000:.0f} | {v / p['baseline_s']:.2f}x |")
    lines.append(f"\nresponse JSON: {bd['JSON bytes'] / 1024:.0f} KiB\n")
    lines += ["### cProfile, top 15 by cumulative time (one request: batched_tdb + _dump + validate + JSON)", "",
              "```", p["cprofile_top"], "```", "",
              "### cProfile, project entries (processing.py, inference.py, scalars.py, transformer.py)", "",
              "```", p["cprofile_ours"], "```", "",
              "### torch profiler, top 15 operators by self CPU time (batched_tdb only)", "", "```", p["torch_ops"], "```"]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    if args.child:
        {"baseline": child_baseline, "server": child_server, "profile": child_profile}[args.child](args)
        return
    started = time.perf_counter()
    if not args.profile_only:
        a = run_child("baseline", argv)
        b = run_child("server", argv)
        print(report(args, a, b))
    if args.profile or args.profile_only:
        print()
        print(report_profile(run_child("profile", argv)))
    print(f"\n(benchmark wall time {time.perf_counter() - started:.0f} s)", file=sys.stderr)


if __name__ == "__main__":
    main()
