"""The speed-ups change no number: on random prompts of the bundled demo model (every node kind:
neurons, heads, MLP and attention autoencoder latents, residual-stream SAE latents,
transcoder latents), a batched /batched_tdb request with the scored-token cache on (several
prompts in one pass, node vectors shared between prompts and steps scored once, cached nodes
reused) answers what the reference path answers: each prompt alone, in its own request, with
the cache off. Equal node lists (up to the order of exact ties) and values within 1e-5."""

from __future__ import annotations

import math
import random
from collections.abc import Iterator
from typing import Any

import pytest
import torch
from fastapi.testclient import TestClient

from neuron_explainer.activation_server.main import (
    apply_demo_defaults,
    build_debugger,
    create_app,
    parse_args,
)
from neuron_explainer.activation_server.processing import Debugger

N_PROMPTS, N_TOKENS = 3, 12
TOL = 1e-5
COMPONENTS = [
    ("neuron", "attention_head", {}),
    ("autoencoder_latent", "autoencoder_latent", {}),
    ("transcoder_latent", "attention_head", {"includeResidualLatents": True}),
]


@pytest.fixture(scope="module")
def served() -> Iterator[tuple[TestClient, Debugger]]:
    torch.set_num_threads(1)
    args = parse_args([])
    apply_demo_defaults(args)
    debugger = build_debugger(args)
    with TestClient(create_app(debugger)) as client:
        yield client, debugger


def random_prompts(d: Debugger, seed: int) -> list[str]:
    """Prompts of random tokens that encode back to exactly N_TOKENS tokens."""
    rng = random.Random(seed)
    vocab = d.model.cfg.n_vocab
    prompts: list[str] = []
    while len(prompts) < N_PROMPTS:
        ids = [rng.randrange(vocab) for _ in range(2 * N_TOKENS)]
        text = "".join(d.tokenizer.decode_tokens(ids))
        tokens = d.tokenizer.encode_ordinary(text)[:N_TOKENS]
        text = "".join(d.tokenizer.decode_tokens(tokens))
        if len(d.tokenizer.encode_ordinary(text)) == N_TOKENS and "<|" not in text:
            prompts.append(text)
    return prompts


def tdb(prompt: str, mlp: str, attn: str, more: dict[str, Any], ablate: bool) -> dict[str, Any]:
    ablations = []
    if ablate:
        node = {"nodeType": "mlp_neuron", "tensorIndices": [N_TOKENS // 2, 7], "layerIndex": 1, "passType": "forward"}
        ablations = [{"nodeIndex": node, "value": 0.0}]
    return {
        "prompt": prompt, "targetTokens": [" Mary"], "distractorTokens": [" John"], "componentTypeForMlp": mlp,
        "componentTypeForAttention": attn, "topAndBottomKForNodeTable": 10, "hideEarlyLayersWhenAblating": True,
        "nodeAblations": ablations, **more,
    }


def post(client: TestClient, subs: list[dict[str, Any]]) -> list[Any]:
    r = client.post("/batched_tdb", json={"subRequests": subs})
    assert r.status_code == 200, r.text[:300]
    return r.json()["inferenceSubResponses"]


def node_key(n: dict[str, Any]) -> tuple[Any, ...]:
    return (n["nodeType"], n["layerIndex"], tuple(n["tensorIndices"]), n["passType"])


def close(a: Any, b: Any) -> bool:
    if a is None or b is None:
        return a is b
    return math.isclose(a, b, rel_tol=TOL, abs_tol=TOL)


def assert_top_k_equal(
    ref: dict[str, Any], fast: dict[str, Any], union: set[tuple[Any, ...]], where: str
) -> dict[tuple[Any, ...], int]:
    """The batch lists the union of its prompts' node sets (as the original server does, so
    ablated and unablated views show the same rows); every node of this prompt's own list is
    there with the same values. A node may be missing only for one tied with it (the order of
    exact ties is free). Returns the fast list's positions."""
    ref_nodes, fast_nodes = [node_key(n) for n in ref["nodeIndices"]], [node_key(n) for n in fast["nodeIndices"]]
    assert len(fast_nodes) == len(union), (where, len(fast_nodes), len(union))
    pos = {n: i for i, n in enumerate(fast_nodes)}
    groups = sorted(ref["activationsByGroupId"])
    assert groups == sorted(fast["activationsByGroupId"]), where
    for g in groups:
        r_vals, f_vals = ref["activationsByGroupId"][g], fast["activationsByGroupId"][g]
        for i, n in enumerate(ref_nodes):
            if n in pos:
                assert close(r_vals[i], f_vals[pos[n]]), (where, g, n, r_vals[i], f_vals[pos[n]])
            else:  # only a tie can change which node is kept
                assert any(close(r_vals[i], v) for v in f_vals), (where, g, n, "missing, and tied with none")
    return pos


def assert_same(ref: Any, fast: Any, where: str) -> None:
    """Equal JSON, floats within TOL."""
    if isinstance(ref, float) or isinstance(fast, float):
        assert close(ref, fast), (where, ref, fast)
    elif isinstance(ref, dict):
        assert ref.keys() == fast.keys(), where
        for k in ref:
            assert_same(ref[k], fast[k], f"{where}.{k}")
    elif isinstance(ref, list):
        assert len(ref) == len(fast), where
        for i, (a, b) in enumerate(zip(ref, fast, strict=True)):
            assert_same(a, b, f"{where}[{i}]")
    else:
        assert ref == fast, (where, ref, fast)


def top_k_unions(responses: list[Any]) -> dict[str, set[tuple[Any, ...]]]:
    """Each top-k step's node set, unioned over the prompts."""
    unions: dict[str, set[tuple[Any, ...]]] = {}
    for r in responses:
        for name, step in r["processingResponseDataByName"].items():
            if "activationsByGroupId" in step:
                unions.setdefault(name, set()).update(node_key(n) for n in step["nodeIndices"])
    return unions


def assert_response_equal(ref: Any, fast: Any, unions: dict[str, set[tuple[Any, ...]]], where: str) -> None:
    timing = {"inferenceTime", "memoryUsedBefore", "memoryUsedAfter", "log"}
    r_inf, f_inf = (
        {k: v for k, v in x["inferenceResponse"]["inferenceAndTokenData"].items() if k not in timing}
        for x in (ref, fast)
    )
    assert_same(r_inf, f_inf, f"{where}.inference")
    r_steps, f_steps = ref["processingResponseDataByName"], fast["processingResponseDataByName"]
    assert r_steps.keys() == f_steps.keys()
    positions = assert_top_k_equal(
        r_steps["topKComponents"], f_steps["topKComponents"], unions["topKComponents"], f"{where}.topKComponents"
    )
    for name, r in r_steps.items():
        f = f_steps[name]
        if name == "topKComponents":
            continue
        if "activationsByGroupId" in r:
            assert_top_k_equal(r, f, unions[name], f"{where}.{name}")
            continue
        # steps per node of the node table: compare node by node
        listed = next(k for k in r if k.endswith("List"))
        f_by_node = {node_key(n): v for n, v in zip(f["nodeIndices"], f[listed], strict=True)}
        for n, v in zip(r["nodeIndices"], r[listed], strict=True):
            key = node_key(n)
            if key in positions:
                assert_same(v, f_by_node[key], f"{where}.{name}{key}")


@pytest.mark.parametrize("seed", [1, 2])
@pytest.mark.parametrize(("mlp", "attn", "more"), COMPONENTS, ids=[c[0] for c in COMPONENTS])
def test_batched_and_cached_answers_equal_the_reference_path(
    served: tuple[TestClient, Debugger], seed: int, mlp: str, attn: str, more: dict[str, Any]
) -> None:
    client, d = served
    prompts = random_prompts(d, seed)
    subs = [tdb(p, mlp, attn, more, ablate=i == 1) for i, p in enumerate(prompts)]
    size = d.scored_cache_size
    try:
        d.scored_cache_size = 0
        d.scorer.clear()
        reference = [post(client, [s])[0] for s in subs]
        d.scored_cache_size = size
        cold = post(client, subs)
        warm = post(client, subs[::-1])[::-1]  # every node seen before, prompts in another order
    finally:
        d.scored_cache_size = size
    unions = top_k_unions(reference)
    for i in range(N_PROMPTS):
        assert_response_equal(reference[i], cold[i], unions, f"cold[{i}]")
        assert_response_equal(reference[i], warm[i], unions, f"warm[{i}]")


@pytest.mark.parametrize(("mlp", "attn", "more"), COMPONENTS, ids=[c[0] for c in COMPONENTS])
def test_answers_without_room_for_derived_scalars_equal_the_cached_ones(
    served: tuple[TestClient, Debugger], monkeypatch: pytest.MonkeyPatch, mlp: str, attn: str, more: dict[str, Any]
) -> None:
    """A long prompt's scalars do not all fit the recording's cache (`ScalarCache`): they are
    streamed layer by layer, the values at the listed nodes kept from the rankings' candidates
    or computed again. With no room at all (every tensor streamed), one prompt alone and a batch
    of three (the other prompts' nodes computed again) answer what the cached path answers."""
    from neuron_explainer.debugger import scalar_cache

    client, d = served
    prompts = random_prompts(d, 3)
    subs = [tdb(p, mlp, attn, more, ablate=i == 1) for i, p in enumerate(prompts)]
    size = d.scored_cache_size
    try:
        d.scored_cache_size = 0
        cached_alone, cached_batch = post(client, subs[:1]), post(client, subs)
        monkeypatch.setattr(scalar_cache, "DEFAULT_BUDGET_BYTES", 0)
        streamed_alone, streamed_batch = post(client, subs[:1]), post(client, subs)
    finally:
        d.scored_cache_size = size
    assert_response_equal(cached_alone[0], streamed_alone[0], top_k_unions(cached_alone), "alone")
    unions = top_k_unions(cached_batch)
    for i in range(N_PROMPTS):
        assert_response_equal(cached_batch[i], streamed_batch[i], unions, f"batch[{i}]")
