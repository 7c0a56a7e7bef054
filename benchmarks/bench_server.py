"""Cost of a `/batched_tdb` request against one bare forward + backward pass.

    .venv/bin/python benchmarks/bench_server.py            # GPT-2 small, 64 tokens
    .venv/bin/python benchmarks/bench_server.py --quick    # fewer repetitions
    .venv/bin/python benchmarks/bench_server.py --quick --layers 2 --d-model 64 --tokens 16
    .venv/bin/python benchmarks/bench_server.py --profile-only  # where the request's time goes

About 85 CPU-seconds for the default run (1.5 min of wall time on 2 idle cores, 3-4 min on a
loaded machine); --profile-only about 35 CPU-seconds; --profile does both.

Model: random weights (GPT-2 initialisation), fp32, CPU, torch.set_num_threads(2); parameters
frozen as the server freezes them. The prompt starts with <|endoftext|> and encodes to exactly
--tokens tokens; the loss is the logit difference " Canada" - " Germany" at the last token.

Rows (median of the timed rounds, after a warm-up; wall time and CPU time):
  baseline        one forward + backward of the logit difference, gradient to the input
                  embeddings only (a leaf requiring grad; weights frozen), no hooks;
  in-process      `Debugger.batched_tdb` on the client's request (no HTTP, no serialisation);
  HTTP full       POST /batched_tdb with httpx to a real uvicorn (127.0.0.1, free port,
                  background thread) in the server subprocess (b): the original client's first
                  request;
  HTTP ablated    the same with two sub-requests (one MLP neuron ablated, and unablated), as
                  the client sends after an ablation.
The benchmark process times the baseline and the in-process call itself and the HTTP requests
against (b), round by round (only one side computes at a time), so drifting load from other
processes on the machine hits every row alike. Ratios are median/median, and in brackets
min/min: contention only ever adds time, so the minima are the steadier estimate on a busy
machine. CPU time (all threads; for HTTP rows the server's plus the client's) is the steadiest
measure of work on a shared machine. OMP_WAIT_POLICY defaults to PASSIVE (see main()).

Peak memory is each process's peak RSS (ru_maxrss / VmHWM), each in a fresh subprocess:
  (a) loads the model and runs the baseline only;
  (b) the server: loads the model, builds the Debugger and the app, serves and answers every
      HTTP request above (the client is another process). Also reported: its peak while
      answering one request alone (freed memory handed back with malloc_trim, VmHWM reset
      first), including the first request, which also fills the weight caches.

--profile runs a third subprocess: a stage breakdown of what the route does (request parsing,
batched_tdb, model_dump and orjson's JSON encoding, as the route does them), the exclusive
wall and CPU time of each part of batched_tdb (inference.run, each scalar, top-k selection,
scored tokens, ...; measured by wrapping those functions in this process only), cProfile's top
entries by cumulative time, the entries of processing.py / inference.py / scalars.py, and
torch's top operators by self CPU time and by memory allocated.
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import ctypes
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
TARGETS = {"full": 1.5}  # max ratio to the baseline (the developers' guide)
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
    p.add_argument("--reps", type=int, default=None, help="timed repetitions (default 3, --quick 2)")
    p.add_argument("--warmup", type=int, default=None, help="warm-up rounds (default 1)")
    p.add_argument("--threads", type=int, default=2, help="torch.set_num_threads (default 2)")
    p.add_argument("--warm-cache", action="store_true",
                   help="keep the server's cache of neurons' and latents' scored tokens between the "
                   "repeated requests (default: off, the cost of a request whose nodes are all new)")
    p.add_argument("--profile", action="store_true", help="also profile one /batched_tdb request")
    p.add_argument("--profile-only", action="store_true", help="only the profile")
    p.add_argument("--child", choices=["baseline", "server", "profile"], help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.heads is None:
        args.heads = next(h for h in (12, 8, 6, 4, 3, 2, 1) if args.d_model % h == 0)
    args.reps = args.reps or (2 if args.quick else 3)
    args.warmup = args.warmup if args.warmup is not None else 1
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

    x = torch.tensor([tokens], device=model.device)
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
        return float(diff.detach())

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


def reset_peak_rss() -> bool:
    """Reset this process's VmHWM (Linux >= 4.0), so a later read is the peak since now."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def malloc_trim() -> None:
    """Return freed heap memory to the OS (glibc), so RSS is the memory in use."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def hwm_gib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 2**20
    return float("nan")


def peak_rss_gib() -> float:
    kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    return kib / 2**20


def cpu_s() -> float:
    """CPU seconds used by this process (all threads)."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _emit(result: dict[str, Any]) -> None:
    print("BENCH_RESULT " + json.dumps(result), flush=True)


# ------------------------------------------------------------------ children


def child_baseline(args: argparse.Namespace) -> None:
    """Process (a): load the model, run the baseline; its peak RSS."""
    model, enc, tokens = _setup(args)
    loaded = rss_now_gib()
    step = baseline_fn(model, tokens, enc)
    for _ in range(args.warmup):
        step()
    times = [timed(step)]  # the table's baseline is timed in the interleaved rounds
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
    debugger = Debugger(model, enc, "bench")
    if not args.warm_cache:  # every request as if its nodes had never been listed before
        debugger.scored_cache_size = 0
    return debugger, enc, tokens, enc.decode(tokens)


class _Memory:
    """Peak-RSS bookkeeping of the serving process, driven by the benchmark over HTTP."""

    def __init__(self) -> None:
        self.peak = peak_rss_gib()  # model loading included
        self.before = rss_now_gib()

    def reset(self) -> dict[str, float]:
        """Hand freed memory back to the OS, then start a new VmHWM window."""
        self.peak = max(self.peak, hwm_gib(), peak_rss_gib())
        gc.collect()
        malloc_trim()
        self.before = rss_now_gib()
        ok = reset_peak_rss()
        return {"rss_gib": self.before, "reset": ok}

    def window(self) -> dict[str, float]:
        """Peak RSS since the last reset, and its rise over the RSS at the reset."""
        hwm = hwm_gib()
        self.peak = max(self.peak, hwm)
        return {"peak_gib": hwm, "rise_gib": hwm - self.before}

    def stats(self) -> dict[str, float]:
        self.peak = max(self.peak, hwm_gib(), peak_rss_gib())
        gc.collect()
        malloc_trim()
        return {"peak_rss_gib": self.peak, "idle_rss_gib": rss_now_gib()}


def child_server(args: argparse.Namespace) -> None:
    """Process (b): the server alone. uvicorn in a background thread; the benchmark (another
    process) sends the requests and reads the memory numbers from three extra /_bench routes."""
    from neuron_explainer.activation_server.main import create_app

    debugger, _, _, _ = _debugger(args)
    loaded = rss_now_gib()
    app = create_app(debugger)
    memory = _Memory()
    done = threading.Event()

    @app.post("/_bench/reset")
    def bench_reset() -> dict[str, float]:
        return memory.reset()

    @app.post("/_bench/window")
    def bench_window() -> dict[str, float]:
        return memory.window()

    @app.post("/_bench/cpu")
    def bench_cpu() -> float:
        return cpu_s()

    @app.post("/_bench/stats")
    def bench_stats() -> dict[str, float]:
        done.set()
        return {**memory.stats(), "loaded_rss_gib": loaded}

    with _Server(app) as server:
        print(f"BENCH_PORT {server.port}", flush=True)
        done.wait()
        time.sleep(0.5)  # let the answer go out


def measure(args: argparse.Namespace, argv: list[str]) -> dict[str, Any]:
    """The timings: baseline and in-process `batched_tdb` here, the HTTP requests against the
    server subprocess (b), interleaved round by round; only one side computes at a time."""
    import httpx

    from neuron_explainer.activation_server import schemas as S

    env = _child_env(args)
    cmd = [sys.executable, str(Path(__file__).resolve()), *argv, "--child", "server"]
    server = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        _torch(args)
        debugger, enc, tokens, prompt = _debugger(args)  # loads while the server loads
        model = debugger.model
        bodies = request_bodies(prompt, len(tokens), model.cfg.n_layers, model.cfg.d_mlp)
        tdb_request = S.BatchedTdbRequest.model_validate(bodies["full"])
        step = baseline_fn(model, tokens, enc)
        assert server.stdout is not None
        line = server.stdout.readline()
        if not line.startswith("BENCH_PORT "):
            server.kill()
            _, err = server.communicate()
            raise SystemExit(f"the server subprocess failed:\n{line}{err[-4000:]}")
        port = int(line.split()[1])
        sizes: dict[str, int] = {}
        inference_s: dict[str, float] = {}
        rss: dict[str, dict[str, float]] = {}
        out: dict[str, Any] = {}
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=600) as client:

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

            def alone(label: str, name: str) -> None:
                """One request with the server's peak RSS measured around it."""
                client.post("/_bench/reset").raise_for_status()
                post(name)
                rss[label] = client.post("/_bench/window").json()

            def inproc() -> None:
                resp = debugger.batched_tdb(tdb_request)
                out.setdefault("inproc_json_bytes", len(resp.model_dump_json(by_alias=True)))

            def server_cpu() -> float:
                return float(client.post("/_bench/cpu").json())

            tasks: dict[str, Callable[[], Any]] = {
                "baseline": step,
                "inproc": inproc,
                "full": lambda: post("full"),
                "ablated": lambda: post("ablated"),
            }
            alone("first", "full")  # the server's warm-up; it also fills its weight caches
            for _ in range(args.warmup):
                step()
                inproc()
            times: dict[str, list[float]] = {k: [] for k in tasks}
            cpu: dict[str, list[float]] = {k: [] for k in tasks}
            for _ in range(args.reps):  # interleaved rounds: load drift hits every row alike
                for name, fn in tasks.items():
                    gc.collect()
                    remote = name in ("full", "ablated")
                    c0 = cpu_s() + (server_cpu() if remote else 0.0)
                    times[name].append(timed(fn))
                    cpu[name].append(cpu_s() + (server_cpu() if remote else 0.0) - c0)
            alone("full", "full")
            alone("ablated", "ablated")
            stats = client.post("/_bench/stats").json()
        server.wait(timeout=30)
        return {"times": times, "cpu": cpu, "sizes": sizes, "inference_s": inference_s, "rss_during": rss, **stats, **out}
    finally:
        if server.poll() is None:
            server.kill()


class _Attribution:
    """Exclusive wall and CPU time of wrapped functions (nested wrapped calls are subtracted)."""

    def __init__(self) -> None:
        self.totals: dict[str, list[float]] = {}  # label -> [wall, cpu, calls]
        self.stack: list[list[float]] = []  # per active call: [child wall, child cpu]
        self.originals: list[tuple[Any, str, Any]] = []

    def wrap(self, owner: Any, attr: str, label: Callable[..., str] | str) -> None:
        fn = getattr(owner, attr)
        self.originals.append((owner, attr, owner.__dict__[attr]))

        def wrapper(*a: Any, **k: Any) -> Any:
            name = label(*a, **k) if callable(label) else label
            if name == "":
                return fn(*a, **k)
            self.stack.append([0.0, 0.0])
            w0, c0 = time.perf_counter(), cpu_s()
            try:
                return fn(*a, **k)
            finally:
                wall, cpu = time.perf_counter() - w0, cpu_s() - c0
                child = self.stack.pop()
                if self.stack:
                    self.stack[-1][0] += wall
                    self.stack[-1][1] += cpu
                row = self.totals.setdefault(name, [0.0, 0.0, 0])
                row[0] += wall - child[0]
                row[1] += cpu - child[1]
                row[2] += 1

        setattr(owner, attr, wrapper)

    def unwrap(self) -> None:
        for owner, attr, original in reversed(self.originals):
            setattr(owner, attr, original)
        self.originals.clear()


def child_profile(args: argparse.Namespace) -> None:
    import orjson
    import torch

    from neuron_explainer.activation_server import processing, scored_tokens
    from neuron_explainer.activation_server import schemas as S
    from neuron_explainer.activation_server.main import _dump_batched
    from neuron_explainer.debugger import scalars

    debugger, enc, tokens, prompt = _debugger(args)
    model = debugger.model
    bodies = request_bodies(prompt, len(tokens), model.cfg.n_layers, model.cfg.d_mlp)
    raw = orjson.dumps(bodies["full"])
    step = baseline_fn(model, tokens, enc)

    # What the route does, stage by stage (FastAPI: body -> model; the endpoint, in a worker
    # thread, dumps the answer per sub-response and renders it with orjson; no second validation).
    def stages() -> dict[str, tuple[float, float]]:
        marks = [(time.perf_counter(), cpu_s())]

        def mark() -> None:
            marks.append((time.perf_counter(), cpu_s()))

        req = S.BatchedTdbRequest.model_validate(orjson.loads(raw))
        mark()
        resp = debugger.batched_tdb(req)
        mark()
        content = _dump_batched(resp)
        mark()
        orjson.dumps(content, option=orjson.OPT_SERIALIZE_NUMPY)
        mark()
        names = ["parse + validate the request body", "Debugger.batched_tdb", "model_dump (the route's _dump_batched)",
                 "JSON encoding (orjson, the route's ORJSONResponse)"]
        return {n: (b[0] - a[0], b[1] - a[1]) for n, a, b in zip(names, marks[:-1], marks[1:], strict=True)}

    stages()  # warm-up (weight caches, allocator)
    step()
    # Inside batched_tdb: exclusive time per part, over the same requests as the stages.
    att = _Attribution()
    att.wrap(processing, "run", "inference.run (forward + backward, recording)")
    att.wrap(scalars, "compute", lambda name, rec, w, layer: "" if (name, layer) in rec.derived else f"scalars.compute: {name}")
    D = processing.Debugger
    att.wrap(D, "_top_k_nodes", lambda self, spec, rec, *_: f"_top_k_nodes (cat + topk), k={spec.top_and_bottom_k}")
    att.wrap(D, "_multiple_top_k", lambda self, spec, rec, nodes: f"_multiple_top_k ({len(nodes)} nodes)")
    T = scored_tokens.TokenScorer
    att.wrap(T, "scored_tokens", lambda self, spec, x, nodes: f"scored_tokens: {spec.token_scoring_type.value}")
    att.wrap(T, "top_tokens", "  top_tokens (topk over the vocabulary + TokenAndScalar objects)")
    att.wrap(T, "token_pair_attribution", "token_pair_attribution")
    att.wrap(D, "tdb_to_sub_request", "tdb_to_sub_request + parsing")
    att.wrap(D, "batched_tdb", "batched_tdb: everything else (response objects, checks)")
    n = max(1, min(args.reps, 3))
    rounds = [stages() for _ in range(n)]
    att.unwrap()
    parts = {k: (v[0] / n, v[1] / n, int(v[2]) // n) for k, v in att.totals.items()}
    base_runs = []
    for _ in range(n):
        c0 = cpu_s()
        w = timed(step)
        base_runs.append((w, cpu_s() - c0))
    base = (statistics.median(r[0] for r in base_runs), statistics.median(r[1] for r in base_runs))
    breakdown = {k: (statistics.median(r[k][0] for r in rounds), statistics.median(r[k][1] for r in rounds)) for k in rounds[0]}
    req = S.BatchedTdbRequest.model_validate(bodies["full"])

    def whole_route() -> None:
        orjson.dumps(_dump_batched(debugger.batched_tdb(req)), option=orjson.OPT_SERIALIZE_NUMPY)

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
    stats2.sort_stats("cumulative").print_stats(r"(processing|scored_tokens|inference|scalars/\w+|reads)\.py", 25)
    ours_text = _trim_pstats(ours.getvalue())

    with torch.profiler.profile(
        activities=[torch.profiler.ProfilerActivity.CPU], record_shapes=True, profile_memory=True
    ) as tp:
        debugger.batched_tdb(req)
    averages = tp.key_averages(group_by_input_shape=True)
    ops = averages.table(sort_by="self_cpu_time_total", row_limit=15, max_name_column_width=40, max_shapes_column_width=60)
    mem = averages.table(sort_by="self_cpu_memory_usage", row_limit=10, max_name_column_width=40, max_shapes_column_width=60)

    _emit({
        "breakdown": breakdown,
        "parts": parts,
        "baseline": base,
        "cprofile_top": top,
        "cprofile_ours": ours_text,
        "torch_ops": ops,
        "torch_mem": mem,
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


def _child_env(args: argparse.Namespace) -> dict[str, str]:
    return dict(os.environ, OMP_NUM_THREADS=str(args.threads), MKL_NUM_THREADS=str(args.threads))


def _torch(args: argparse.Namespace) -> Any:
    import torch

    torch.set_num_threads(args.threads)
    return torch


def run_child(kind: str, argv: list[str], timeout: float = 600) -> dict[str, Any]:
    env = _child_env(parse_args(argv))
    cmd = [sys.executable, str(Path(__file__).resolve()), *argv, "--child", kind]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    for line in proc.stdout.splitlines():
        if line.startswith("BENCH_RESULT "):
            result: dict[str, Any] = json.loads(line[len("BENCH_RESULT "):])
            return result
    sys.stderr.write(proc.stdout[-4000:] + proc.stderr[-4000:])
    raise SystemExit(f"the {kind} subprocess failed (exit {proc.returncode})")


def _ms(xs: list[float]) -> str:
    med = statistics.median(xs) * 1000
    spread = f" (min {min(xs) * 1000:.0f}, max {max(xs) * 1000:.0f})" if len(xs) > 1 else ""
    return f"{med:.0f} ms{spread}"


def report(args: argparse.Namespace, a: dict[str, Any], b: dict[str, Any]) -> str:
    t, c = b["times"], b["cpu"]
    med = statistics.median
    base, base_min, base_cpu = med(t["baseline"]), min(t["baseline"]), med(c["baseline"])
    sizes = b["sizes"]
    kib = 1024

    def ratio(name: str) -> str:
        return f"{med(t[name]) / base:.2f}x ({min(t[name]) / base_min:.2f}x)"

    def cpu(name: str) -> str:
        return f"{med(c[name]):.2f} s = {med(c[name]) / base_cpu:.2f}x"

    def verdict(name: str) -> str:
        limit = TARGETS.get(name)
        if limit is None:
            return ""
        word = {True: "PASS", False: "FAIL"}
        ok = med(t[name]) / base <= limit
        others = {"min": min(t[name]) / base_min <= limit, "CPU": med(c[name]) / base_cpu <= limit}
        extra = ", ".join(f"by {k}: {word[v]}" for k, v in others.items() if v != ok)
        return f"<= {limit:.1f}x: **{word[ok]}**" + (f" ({extra})" if extra else "")

    mem_ok = b["peak_rss_gib"] <= MEMORY_TARGET_GIB
    rows = [
        ("baseline: forward + backward to the input", _ms(t["baseline"]), "1.00x", cpu("baseline"), "", ""),
        ("baseline, in its own process (a)", _ms(a["baseline_s"]), f"{med(a['baseline_s']) / base:.2f}x", "", "", "timed alone, after the warm-up"),
        ("`Debugger.batched_tdb`, in process (no HTTP)", _ms(t["inproc"]), ratio("inproc"), cpu("inproc"), "",
         f"JSON {b['inproc_json_bytes'] / kib:.0f} KiB; its inference.run took {b['inference_s'].get('full', float('nan')) * 1000:.0f} ms in the first request"),
        ("POST /batched_tdb over HTTP, 1 sub-request", _ms(t["full"]), ratio("full"), cpu("full"), verdict("full"), f"response {sizes['full'] / kib:.0f} KiB"),
        ("POST /batched_tdb over HTTP, ablated + unablated (2 sub-requests)", _ms(t["ablated"]), ratio("ablated"), cpu("ablated"), "",
         f"response {sizes['ablated'] / kib:.0f} KiB; {med(t['ablated']) / med(t['full']):.2f}x the 1-sub-request time"),
    ]
    lines = [
        f"Model: {args.layers} layers, d_model {args.d_model}, {args.heads} heads, vocab 50257, ctx 1024, random weights, fp32, CPU, "
        f"{args.threads} threads (OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY')}); prompt {args.tokens} tokens; "
        f"median of {args.reps} interleaved rounds after {args.warmup} warm-up round(s). "
        f"Load average at the end: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs.",
        "",
        "| measurement | wall time: median (min, max) | vs baseline: median (min) | CPU time (all threads; HTTP: server + client) | target | notes |",
        "|---|---|---|---|---|---|",
        *(f"| {' | '.join(r)} |" for r in rows),
        f"| peak RSS (a): load model + baseline | {a['peak_rss_gib']:.2f} GiB | | | | after load {a['loaded_rss_gib']:.2f} GiB |",
        f"| peak RSS (b): serve + answer all the requests | {b['peak_rss_gib']:.2f} GiB | {b['peak_rss_gib'] / a['peak_rss_gib']:.2f}x (a) | | "
        f"<= {MEMORY_TARGET_GIB} GiB: **{'PASS' if mem_ok else 'FAIL'}** | after load + Debugger + app {b['loaded_rss_gib']:.2f} GiB; idle after serving {b['idle_rss_gib']:.2f} GiB |",
    ]
    during = b.get("rss_during", {})
    if during:
        label = {"first": "first request (fills caches)", "full": "1 sub-request", "ablated": "2 sub-requests"}
        lines.append("| peak RSS (b) answering one request alone | "
                     + "; ".join(f"{label[k]}: {v['peak_gib']:.2f} GiB ({v['rise_gib'] * 1024:+.0f} MiB)" for k, v in during.items())
                     + " | | | | freed memory trimmed, then VmHWM reset, before each; (rise over the RSS just before) |")
    return "\n".join(lines)


def report_profile(p: dict[str, Any]) -> str:
    bw, bc = p["baseline"]
    lines = ["### /batched_tdb, 1 sub-request, stage by stage (in process, no transport; median)", "",
             f"baseline forward + backward: {bw * 1000:.0f} ms wall, {bc * 1000:.0f} ms CPU", "",
             "| stage | wall ms | CPU ms | CPU vs baseline CPU |", "|---|---|---|---|"]
    for k, (w, c) in p["breakdown"].items():
        lines.append(f"| {k} | {w * 1000:.0f} | {c * 1000:.0f} | {c / bc:.2f}x |")
    lines += ["", "### Inside Debugger.batched_tdb: exclusive time per part (mean per request, same requests as above)", "",
              "| part | calls | wall ms | CPU ms | CPU vs baseline CPU |", "|---|---|---|---|---|"]
    for k, (w, c, calls) in sorted(p["parts"].items(), key=lambda kv: -kv[1][1]):
        lines.append(f"| {k} | {calls} | {w * 1000:.0f} | {c * 1000:.0f} | {c / bc:.2f}x |")
    lines += ["", "### cProfile, top 15 by cumulative time (one request: batched_tdb + _dump + validate + JSON)", "",
              "```", p["cprofile_top"], "```", "",
              "### cProfile, entries of processing.py, inference.py, scalars.py by cumulative time", "",
              "```", p["cprofile_ours"], "```", "",
              "### torch profiler, top 15 operators by self CPU time (batched_tdb only)", "", "```", p["torch_ops"], "```", "",
              "### torch profiler, top 10 operators by memory allocated (batched_tdb only)", "", "```", p["torch_mem"], "```"]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    # Before torch (and its OpenMP runtime) loads: on a machine shared with other processes,
    # OpenMP threads spinning at barriers turn every small op into a wait for the scheduler
    # (a 2-layer toy model's step varied 40-900 ms). Sleeping waits keep timings sane; set
    # OMP_WAIT_POLICY=active in the environment to measure with spinning threads.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    args = parse_args(argv)
    if args.child:
        {"baseline": child_baseline, "server": child_server, "profile": child_profile}[args.child](args)
        return
    started = time.perf_counter()
    if not args.profile_only:
        a = run_child("baseline", argv)
        b = measure(args, argv)
        print(report(args, a, b))
    if args.profile or args.profile_only:
        print()
        print(report_profile(run_child("profile", argv)))
    print(f"\n(benchmark wall time {time.perf_counter() - started:.0f} s)", file=sys.stderr)


if __name__ == "__main__":
    main()
