"""Where one /batched_tdb request's time goes (used by bench_server.py --profile): the route's
stages (parse, batched_tdb, dump, JSON) and the torch operators by self CPU time."""

from __future__ import annotations

import gc
import statistics
import time
from typing import Any

import orjson
import torch
from bench_server import bare_step, build, build_prompt, request_body


def profile(family: str, threads: int, n_tokens: int = 64, rounds: int = 3) -> str:
    from neuron_explainer.activation_server import schemas as S
    from neuron_explainer.activation_server.main import _dump_batched
    from neuron_explainer.activation_server.processing import Debugger

    torch.set_num_threads(threads)
    model, _, enc = build(family, None)
    debugger = Debugger(model, enc, "bench")
    debugger.scored_cache_size = 0
    gc.freeze()  # as the CLI does before serving
    prompt = build_prompt(enc, n_tokens)
    raw = orjson.dumps(request_body(prompt, n_tokens, False))
    bare = bare_step(model, enc.encode(prompt, allowed_special="all"), enc, 1)

    def stages() -> dict[str, float]:
        marks = [time.perf_counter()]
        req = S.BatchedTdbRequest.model_validate(orjson.loads(raw))
        marks.append(time.perf_counter())
        resp = debugger.batched_tdb(req)
        marks.append(time.perf_counter())
        content: Any = _dump_batched(resp)
        marks.append(time.perf_counter())
        orjson.dumps(content)
        marks.append(time.perf_counter())
        names = ["parse + validate", "batched_tdb", "model_dump", "JSON"]
        return {n: b - a for n, a, b in zip(names, marks[:-1], marks[1:], strict=True)}

    stages()
    bare()
    runs = [stages() for _ in range(rounds)]
    bare_times = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        bare()
        bare_times.append(time.perf_counter() - t0)
    base = statistics.median(bare_times)
    lines = [f"### {family}, {n_tokens} tokens: stages of one request (median of {rounds}); bare pass {base * 1000:.0f} ms", "",
             "| stage | ms | vs bare |", "|---|---|---|"]
    for name in runs[0]:
        t = statistics.median(r[name] for r in runs)
        lines.append(f"| {name} | {t * 1000:.0f} | {t / base:.2f}x |")
    req = S.BatchedTdbRequest.model_validate(orjson.loads(raw))
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        debugger.batched_tdb(req)
    table = prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=15, max_name_column_width=40)
    return "\n".join([*lines, "", "torch operators by self CPU time:", "```", table, "```"])
