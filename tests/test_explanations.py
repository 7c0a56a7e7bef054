"""Tests for automated explanations (`neuron_explainer.explanations`) and the explainer routes,
against a real local chat-completions server (`FakeLLMServer` from test_llm.py) that answers
from fixtures: explanations are fixed strings, simulations follow simple rules ("the token
' cat' fires at 10", "a pair of adjacent tokens activates the head").

The dataset is written to a temp folder in the published layout: a few MLP neurons and four
attention heads (by token pair) over short sequences. Covered: prompt formats and the records
they show, parsing, both simulators, correlation and ROC AUC scoring against hand computations,
malformed completions, the files beside the dataset, the /explain and /score routes, and the
batch command (every head, resumable after an interrupt).
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import os
import random
import re
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.responses import JSONResponse
from fastapi.testclient import TestClient
from test_llm import FakeLLMServer, chat_response, make_client

from neuron_explainer.activation_server import schemas as S
from neuron_explainer.activation_server.errors import install_error_handlers
from neuron_explainer.activation_server.explainer_routes import make_explainer_router
from neuron_explainer.activations.datasets import DatasetRegistry
from neuron_explainer.activations.records import (
    ActivationRecord,
    NeuronId,
    NeuronRecord,
    dumps_record,
)
from neuron_explainer.explanations import batch, store
from neuron_explainer.explanations.explainer import (
    ExplanationParseError,
    NodeKind,
    explain_node,
    explanation_records,
    node_kind,
    parse_explanation,
    scoring_records,
    top_token_pairs,
)
from neuron_explainer.explanations.llm import LLMClient
from neuron_explainer.explanations.prompts import (
    ATTENTION_PREFIX,
    NEURON_PREFIX,
    format_records,
    logprob_simulation_prompt,
    mark_token_pair,
    normalize_activations,
)
from neuron_explainer.explanations.scoring import (
    correlation_score,
    roc_auc,
    score_attention_explanation,
    score_neuron_explanation,
    score_node,
)
from neuron_explainer.explanations.simulator import parse_json_activations, resolve_simulator

NEURON_EXPLANATION = "the word cat"
HEAD_EXPLANATION = "attends to the token just before the current one"

# ------------------------------------------------------------------------- the dataset

WORDS = [" the", " cat", " sat", " on", " a", " mat", " dog", " ran", " and"]


def neuron_record(layer: int, index: int, n_top: int = 8, n_random: int = 6) -> NeuronRecord:
    """A neuron that fires on ' cat' (more strongly for higher indices), 6-8 tokens a record."""
    rng = random.Random(1000 * layer + index)

    def sequence(with_cat: bool) -> ActivationRecord:
        tokens = [rng.choice([w for w in WORDS if w != " cat"]) for _ in range(rng.randint(6, 8))]
        if with_cat:
            tokens[rng.randrange(1, len(tokens))] = " cat"
        acts = [
            (2.0 + index + rng.random()) if t == " cat" else rng.choice([0.0, 0.0, -0.1, 0.2])
            for t in tokens
        ]
        return ActivationRecord(activations=acts, tokens=tokens)

    top = sorted((sequence(True) for _ in range(n_top)), key=lambda r: -max(r.activations))
    rand = [sequence(i == 0) for i in range(n_random)]
    return NeuronRecord(
        neuron_id=NeuronId(layer, index),
        random_sample=rand,
        most_positive_activation_records=top,
        mean=0.1,
        variance=0.5,
    )


def head_record(layer: int, head: int, n_top: int = 8, n_random: int = 6) -> NeuronRecord:
    """Head 0 of each layer attends to the previous token; head 1 to the first token."""
    rng = random.Random(7 + 100 * layer + head)

    def sequence(strength: float) -> ActivationRecord:
        tokens = [rng.choice(WORDS) for _ in range(rng.randint(4, 6))]
        acts = []
        for i in range(len(tokens)):
            for j in range(i + 1):
                strong = (j == i - 1) if head == 0 else (j == 0 and i > 0)
                acts.append(strength * (1 + rng.random()) if strong else 0.01 * rng.random())
        return ActivationRecord(activations=acts, tokens=tokens)

    top = sorted((sequence(3.0) for _ in range(n_top)), key=lambda r: -max(r.activations))
    return NeuronRecord(
        neuron_id=NeuronId(layer, head),
        random_sample=[sequence(0.2) for _ in range(n_random)],
        most_positive_activation_records=top,
    )


N_LAYERS, N_HEADS, N_NEURONS = 2, 2, 2


@pytest.fixture
def dataset(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[DatasetRegistry, Path]:
    """A registry with 'demo': 4 neurons (mlp_post_act) and 4 heads (attn_write_norm)."""
    monkeypatch.setenv("NEURON_EXPLAINER_CACHE", str(tmp_path / "cache"))
    root = tmp_path / "demo"
    for layer in range(N_LAYERS):
        for i in range(N_NEURONS):
            path = root / "mlp_post_act/collated-activations" / str(layer) / f"{i}.json"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(dumps_record(neuron_record(layer, i)))
        for h in range(N_HEADS):
            path = (
                root
                / "attn_write_norm/collated-activations-by-token-pair"
                / str(layer)
                / f"{h}.json"
            )
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(dumps_record(head_record(layer, h)))
    registry = DatasetRegistry()
    registry.register_local_dataset("demo", root)
    return registry, root


# --------------------------------------------------------------- the fixture answers


def request_kind(path: str, body: dict[str, Any]) -> str:
    if path == "completions":
        return "simulate_logprob"
    system = body["messages"][0]["content"]
    if "interpret the neurons" in system:
        return "explain_neuron"
    if "interpret the attention heads" in system:
        return "explain_head"
    if "predict how a neuron" in system:
        return "simulate_json"
    if "whether an attention head" in system:
        return "simulate_pair"
    raise AssertionError(f"unexpected request: {system[:80]}")


class Fixtures:
    """Answers the fake server gives; `malformed` makes simulation answers unreadable."""

    def __init__(self) -> None:
        self.malformed = False
        self.kinds: list[str] = []
        self.gate: threading.Event | None = None  # when set: explanations wait for it
        self.waiting = threading.Event()
        self.block_after: int | None = None  # explanation requests answered before blocking

    def __call__(self, path: str, body: dict[str, Any]) -> tuple[int, Any]:
        kind = request_kind(path, body)
        self.kinds.append(kind)
        if kind.startswith("explain"):
            n = sum(k.startswith("explain") for k in self.kinds)
            if self.gate is not None and self.block_after is not None and n > self.block_after:
                self.waiting.set()
                self.gate.wait(30)
            text = NEURON_EXPLANATION if kind == "explain_neuron" else HEAD_EXPLANATION
            return 200, chat_response(f" {text}.")
        if kind == "simulate_json":
            if self.malformed:
                return 200, chat_response("Sorry, I can't help with that.")
            query = json.loads(body["messages"][-1]["content"])
            for entry in query["activations"]:
                entry["activation"] = 10 if entry["token"] == " cat" else 0
            return 200, chat_response("```json\n" + json.dumps(query) + "\n```")
        if kind == "simulate_pair":
            sequence = body["messages"][-1]["content"].split("Sequence:\n", 1)[1].split("\n", 1)[0]
            adjacent = re.search(r"\*\*[^*\[]*\*\*\[\[", sequence) is not None
            digit = "1" if adjacent else "0"
            p1 = 0.9 if adjacent else 0.2
            logprobs = [
                {
                    "token": digit,
                    "logprob": math.log(max(p1, 1 - p1)),
                    "top_logprobs": [
                        {"token": "1", "logprob": math.log(p1)},
                        {"token": "0", "logprob": math.log(1 - p1)},
                    ],
                }
            ]
            return 200, chat_response(digit, logprobs=logprobs)
        return 200, echo_logprobs(body["prompt"])


def echo_logprobs(prompt: str) -> dict[str, Any]:
    """A /completions echo response: the prompt cut at tabs and newlines; in place of each
    'unknown' after ' cat' the digits 8 and 10 (1:1), elsewhere 0 and 1 (9:1)."""
    pieces = [p for p in re.split(r"(\t|\n)", prompt) if p]
    tokens, offsets, top = [], [], []
    position = 0
    for k, piece in enumerate(pieces):
        tokens.append(piece)
        offsets.append(position)
        position += len(piece)
        if piece == "unknown" and k >= 2 and pieces[k - 1] == "\t":
            if pieces[k - 2] == " cat":
                top.append({"8": math.log(0.5), "10": math.log(0.5), "unknown": math.log(0.01)})
            else:
                top.append({"0": math.log(0.9), "1": math.log(0.1)})
        else:
            top.append(None if k == 0 else {piece: -0.1})
    return {
        "choices": [
            {
                "text": prompt + "\n",
                "logprobs": {"tokens": tokens, "top_logprobs": top, "text_offset": offsets},
            }
        ]
    }


@pytest.fixture
def fixtures() -> Fixtures:
    return Fixtures()


@pytest.fixture
def llm_server(monkeypatch: pytest.MonkeyPatch, fixtures: Fixtures) -> Iterator[FakeLLMServer]:
    for var in ("NO_PROXY", "no_proxy"):
        monkeypatch.setenv(var, "127.0.0.1,localhost")
    server = FakeLLMServer(fixtures)
    try:
        yield server
    finally:
        if fixtures.gate is not None:
            fixtures.gate.set()
        server.close()


@pytest.fixture
def client(llm_server: FakeLLMServer, tmp_path: Path) -> LLMClient:
    return make_client(llm_server, tmp_path)


# ------------------------------------------------------------------------ formatting


def test_normalize_and_format() -> None:
    assert normalize_activations([0.0, 1.0, 2.5, 5.0, -3.0, 4.99], 5.0) == [0, 2, 5, 10, 0, 9]
    assert normalize_activations([1.0, 2.0], 0.0) == [0, 0]
    record = ActivationRecord(activations=[0.0, 4.0, 2.0], tokens=["a", "\n", " b\t"])
    assert format_records([record], 4.0) == "<start>\na\t0\n\\n\t10\n b\\t\t5\n<end>"
    assert (
        format_records([record], 4.0, hide=True)
        == "<start>\na\tunknown\n\\n\tunknown\n b\\t\tunknown\n<end>"
    )
    assert mark_token_pair(["A", "B", "C"], (2, 0)) == "**A**B[[C]]"
    assert mark_token_pair(["A", "B"], (1, 1)) == "A[[**B**]]"


def test_logprob_prompt_offsets_point_at_unknown() -> None:
    tokens = ["The", " cat", "\n", "\t"]
    prompt, offsets = logprob_simulation_prompt("cats", tokens)
    assert len(offsets) == 4
    assert all(prompt[o : o + len("unknown")] == "unknown" for o in offsets)
    assert prompt.endswith("<end>\n")
    assert f"{NEURON_PREFIX} cats\n" in prompt


@pytest.mark.parametrize(
    "answer, expected",
    [
        (" the word cat.", "the word cat"),
        ("This neuron activates for the word cat.", "the word cat"),
        (
            'Explanation of neuron 4 behavior: this neuron activates for "the word cat"',
            "the word cat",
        ),
        ("<think>hmm, cats everywhere</think>\n\n1. the word cat\nThat's it!", "the word cat"),
        ("```\nthe word cat\n```", "the word cat"),
        ("**the word cat**", "the word cat"),
        ("```text\ntext written in capital letters\n```", "text written in capital letters"),
        ("- Answer: json keys in code", "json keys in code"),
        ("Sure! Here is my explanation:\n\nthe word cat.", "the word cat"),
    ],
)
def test_parse_explanation(answer: str, expected: str) -> None:
    assert parse_explanation(answer, NEURON_PREFIX) == expected


def test_parse_attention_explanation_and_failures() -> None:
    assert (
        parse_explanation("This attention head attends to X from Y.", ATTENTION_PREFIX)
        == "attends to X from Y"
    )
    for bad in ("", "   ", "<think>only thoughts</think>", "...", '""'):
        with pytest.raises(ExplanationParseError):
            parse_explanation(bad, NEURON_PREFIX)


@pytest.mark.parametrize(
    "text, n, values, problem",
    [
        (
            '{"activations": [{"token": "a", "activation": 3}, {"token": "b", "activation": 0}]}',
            2,
            [3.0, 0.0],
            None,
        ),
        (
            'Here you go:\n```json\n{"activations": [{"token": "a", "activation": "7"}, {"token": "b"}]}\n```',
            2,
            [7.0, 0.0],
            None,
        ),
        (
            '[{"token": "a", "activation": 11}, {"token": "b", "activation": -1}]',
            2,
            [0.0, 0.0],
            None,
        ),
        (
            '{"activations": [{"token": "a", "activation": 3}]}',
            2,
            [0.0, 0.0],
            "1 activations for 2 tokens",
        ),
        ("I cannot do that", 2, [0.0, 0.0], "not JSON"),
        ('{"to_find": "x"}', 1, [0.0], "no list of activations"),
    ],
)
def test_parse_json_activations(
    text: str, n: int, values: list[float], problem: str | None
) -> None:
    got, reason = parse_json_activations(text, n)
    assert got == values
    if problem is None:
        assert reason is None
    else:
        assert reason is not None and problem in reason


def test_node_kind() -> None:
    assert node_kind("attn_write_norm") == NodeKind.ATTENTION_HEAD
    assert node_kind(S.DerivedScalarType.MLP_POST_ACT) == NodeKind.NEURON
    assert (
        node_kind("mlp_autoencoder_latent", head_record(0, 0).most_positive_activation_records)
        == NodeKind.ATTENTION_HEAD
    )
    assert (
        node_kind("mlp_autoencoder_latent", neuron_record(0, 0).most_positive_activation_records)
        == NodeKind.NEURON
    )


def test_splits() -> None:
    record = neuron_record(0, 0, n_top=20, n_random=15)
    top, rand = record.most_positive_activation_records, record.random_sample
    assert explanation_records(record) == top[0:20:4]
    held_out = scoring_records(record)
    assert held_out[0::2] == top[2:20:4] and held_out[1::2] == rand[1:15:3]
    assert not any(r in explanation_records(record) for r in held_out)
    assert scoring_records(record, max_sequences=2) == [top[2], rand[1]]
    small = neuron_record(0, 0, n_top=8, n_random=6)  # 2 per split
    assert explanation_records(small) == small.most_positive_activation_records[0:8:4]
    assert len(scoring_records(small)) == 4


# ----------------------------------------------------------------------- explaining


def test_neuron_prompt_shows_the_train_records(
    client: LLMClient, llm_server: FakeLLMServer
) -> None:
    record = neuron_record(1, 1, n_top=20, n_random=15)
    explanations = asyncio.run(explain_node(client, record, NodeKind.NEURON))
    assert explanations == [NEURON_EXPLANATION]
    ((_, body, _),) = llm_server.requests
    messages = body["messages"]
    assert [m["role"] for m in messages] == ["system"] + ["user", "assistant"] * 3 + ["user"]
    last = messages[-1]["content"]
    train = record.most_positive_activation_records[0:20:4]
    peak = max(max(r.activations) for r in train)
    assert format_records(train, peak) in last
    assert last.endswith(f"Explanation of neuron 4 behavior: {NEURON_PREFIX}")
    # held-out records are not shown
    for held_out in scoring_records(record):
        assert format_records([held_out], peak) not in last


def test_head_prompt_shows_the_strongest_pairs(
    client: LLMClient, llm_server: FakeLLMServer
) -> None:
    record = head_record(0, 0, n_top=20)
    explanations = asyncio.run(explain_node(client, record, NodeKind.ATTENTION_HEAD))
    assert explanations == [HEAD_EXPLANATION]
    last = llm_server.requests[0][1]["messages"][-1]["content"]
    train = record.most_positive_activation_records[0:20:4]
    top = top_token_pairs(train, 5)
    assert len(top) == 5 and all(pair[0] == pair[1] + 1 for _, _, pair in top)  # previous token
    for record_index, _, pair in top:
        assert mark_token_pair(train[record_index].tokens, pair) in last
    assert last.count("<|sequence_separator|>") == 4
    assert last.endswith(f"Explanation of attention head 4 behavior: {ATTENTION_PREFIX}")


def test_unparseable_explanation_is_an_error(client: LLMClient, llm_server: FakeLLMServer) -> None:
    llm_server.script = [(200, chat_response("   "))]
    with pytest.raises(ExplanationParseError):
        asyncio.run(explain_node(client, neuron_record(0, 0), NodeKind.NEURON))


# -------------------------------------------------------------------------- scoring


def pearson(xs: list[float], ys: list[float]) -> float:
    n = len(xs)
    mx, my = sum(xs) / n, sum(ys) / n
    cov = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True))
    vx = sum((x - mx) ** 2 for x in xs)
    vy = sum((y - my) ** 2 for y in ys)
    return cov / math.sqrt(vx * vy)


def test_score_equals_hand_computed_correlation(
    client: LLMClient, llm_server: FakeLLMServer
) -> None:
    record = neuron_record(0, 1)
    records = scoring_records(record)
    scored = asyncio.run(score_neuron_explanation(client, NEURON_EXPLANATION, records))
    true = [a for r in records for a in r.activations]
    simulated = [10.0 if t == " cat" else 0.0 for r in records for t in r.tokens]
    assert scored.score == pytest.approx(pearson(true, simulated), abs=1e-12)
    assert 0.9 < scored.score < 1.0
    assert llm_server.count("chat/completions") == len(records)
    # the prompt carries the record's tokens verbatim
    queries = [json.loads(body["messages"][-1]["content"]) for _, body, _ in llm_server.requests]
    assert all(q["to_find"] == NEURON_EXPLANATION for q in queries)
    assert sorted([e["token"] for e in q["activations"]] for q in queries) == sorted(
        r.tokens for r in records
    )
    assert all(e["activation"] is None for q in queries for e in q["activations"])
    per_sequence = scored.scored_sequence_simulations[0]
    assert per_sequence.ev_correlation_score == pytest.approx(
        pearson(records[0].activations, per_sequence.simulation.expected_activations)
    )


def test_malformed_completion_scores_zero_with_a_logged_reason(
    client: LLMClient, fixtures: Fixtures, caplog: pytest.LogCaptureFixture
) -> None:
    fixtures.malformed = True
    with caplog.at_level(logging.WARNING):
        scored = asyncio.run(
            score_neuron_explanation(
                client, NEURON_EXPLANATION, scoring_records(neuron_record(0, 0))
            )
        )
    assert scored.score == 0.0
    assert scored.errors and all("not JSON" in e for e in scored.errors)
    assert "not JSON" in caplog.text and "simulation fell back to zeros" in caplog.text


def test_logprob_simulator(client: LLMClient, llm_server: FakeLLMServer) -> None:
    record = neuron_record(0, 1)
    records = scoring_records(record)
    scored = asyncio.run(score_neuron_explanation(client, NEURON_EXPLANATION, records, "logprob"))
    assert {p for p, _, _ in llm_server.requests} == {"completions"}
    body = llm_server.requests[0][1]
    assert body["echo"] is True and body["logprobs"] >= 10 and body["max_tokens"] >= 1
    simulation = scored.scored_sequence_simulations[0].simulation
    expected = [9.0 if t == " cat" else 0.1 for t in records[0].tokens]
    assert simulation.expected_activations == pytest.approx(expected)
    cat = records[0].tokens.index(" cat")
    assert simulation.distribution_values[cat] == [8.0, 10.0]
    assert simulation.distribution_probabilities[cat] == pytest.approx([0.5, 0.5])
    true = [a for r in records for a in r.activations]
    simulated = [9.0 if t == " cat" else 0.1 for r in records for t in r.tokens]
    assert scored.score == pytest.approx(pearson(true, simulated))


def test_roc_auc_matches_hand_computation() -> None:
    assert roc_auc([1, 1, 0, 0], [0.9, 0.8, 0.1, 0.2]) == 1.0
    assert roc_auc([1, 1, 0, 0], [0.1, 0.2, 0.9, 0.8]) == 0.0
    # positives 0.9, 0.3; negatives 0.3, 0.1: pairs (0.9>0.3, 0.9>0.1, 0.3=0.3 -> 1/2, 0.3>0.1)
    assert roc_auc([1, 1, 0, 0], [0.9, 0.3, 0.3, 0.1]) == pytest.approx(3.5 / 4)
    assert roc_auc([1, 1], [0.5, 0.6]) is None
    assert correlation_score([1.0, 1.0, 1.0], [0.0, 1.0, 2.0]) == 0.0


def hand_auc(labels: list[int], scores: list[float]) -> float:
    pairs = [
        (p, n)
        for p, y in zip(scores, labels, strict=True)
        if y
        for n, z in zip(scores, labels, strict=True)
        if not z
    ]
    return sum(1.0 if p > n else 0.5 if p == n else 0.0 for p, n in pairs) / len(pairs)


@pytest.mark.parametrize("head", [0, 1])
def test_attention_head_scoring(client: LLMClient, llm_server: FakeLLMServer, head: int) -> None:
    record = head_record(0, head)
    records = scoring_records(record)
    scored = asyncio.run(
        score_attention_explanation(client, HEAD_EXPLANATION, records, record.max_activation)
    )
    sims = scored.attention_simulations
    assert [s.token_pair_label for s in sims] == [1] * 5 + [0] * 5
    # the strongest pairs, then weak ones (below 10% of the max)
    values = {(tuple(s.tokens), s.token_pair_coords): s for s in sims}
    assert len(values) == 10
    top = top_token_pairs(records, 5)
    assert [(records[i].tokens, pair) for i, _, pair in top] == [
        (s.tokens, s.token_pair_coords) for s in sims[:5]
    ]
    # the fixture predicts P(1) = 0.9 for adjacent tokens, 0.2 otherwise
    predictions = [
        0.9 if s.token_pair_coords[0] == s.token_pair_coords[1] + 1 else 0.2 for s in sims
    ]
    assert [s.simulation_prediction for s in sims] == pytest.approx(predictions)
    assert scored.score == pytest.approx(hand_auc([s.token_pair_label for s in sims], predictions))
    if head == 0:  # previous-token head: its strongest pairs are all adjacent
        assert (
            all(p == 0.9 for p in predictions[:5])
            and scored.score is not None
            and scored.score > 0.8
        )
    else:  # attends to the first token: only the pair (1, 0) is adjacent
        assert scored.score is not None and scored.score < 0.8
    body = llm_server.requests[0][1]
    assert body["max_tokens"] == 1 and body["logprobs"] is True
    prompts = [b["messages"][-1]["content"] for _, b, _ in llm_server.requests]
    assert all(
        any(mark_token_pair(s.tokens, s.token_pair_coords) in p for p in prompts) for s in sims
    )


# ---------------------------------------------------------------------------- store


def test_store_round_trip_and_published_format(
    dataset: tuple[DatasetRegistry, Path], tmp_path: Path
) -> None:
    registry, root = dataset
    entry = registry.resolve("demo", "mlp_post_act")
    # a published-style set (no dataclass names needed) beside the records
    published = root / "mlp_post_act/explanations/published/0/1.jsonl"
    published.parent.mkdir(parents=True)
    published.write_text(
        json.dumps(
            {
                "scored_explanations": [
                    {"explanation": "old one", "scored_simulation": {"ev_correlation_score": 0.25}}
                ]
            }
        )
        + "\n"
    )
    path = store.results_path(entry, "llm_test", 0, 1)
    assert path == root / "mlp_post_act/explanations/llm_test/0/1.jsonl"
    scored = asyncio.run(_constant_scored(0.5))
    store.add_scored_explanation(
        path, kind=NodeKind.NEURON, layer=0, index=1, explanation="new one", scored=scored
    )
    assert store.node_explanations(registry, entry, 0, 1) == [
        ("llm_test", "new one", 0.5),
        ("published", "old one", 0.25),
    ]
    assert store.find_score(registry, entry, 0, 1, "old one ") == 0.25
    assert store.find_score(registry, entry, 0, 1, "other") is None
    data = json.loads(path.read_text())
    assert data["dataclass_name"] == "NeuronSimulationResults"
    assert data["neuron_id"] == {"dataclass_name": "NeuronId", "layer_index": 0, "neuron_index": 1}
    assert data["scored_explanations"][0]["scored_simulation"]["ev_correlation_score"] == 0.5


async def _constant_scored(value: float) -> Any:
    from neuron_explainer.explanations.scoring import ScoredSimulation

    return ScoredSimulation(scored_sequence_simulations=[], ev_correlation_score=value)


def test_concurrent_writers_lose_nothing(tmp_path: Path) -> None:
    path = tmp_path / "set" / "0" / "0.jsonl"
    scored = asyncio.run(_constant_scored(0.1))

    def write(i: int) -> None:
        store.add_scored_explanation(
            path, kind=NodeKind.NEURON, layer=0, index=0, explanation=f"e{i}", scored=scored
        )

    threads = [threading.Thread(target=write, args=(i,)) for i in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    explanations = [e for e, _ in store.stored_explanations(store.read_results(path))]
    assert sorted(explanations) == sorted(f"e{i}" for i in range(12))


# ---------------------------------------------------------------------------- routes


def make_app(
    llm: LLMClient | None, registry: DatasetRegistry | None, simulator: Any = "logprob_free"
) -> FastAPI:
    """The router with the error handlers main.create_app installs."""
    app = FastAPI(generate_unique_id_function=S.operation_id)
    install_error_handlers(app, JSONResponse)
    app.include_router(make_explainer_router(llm, registry, simulator=simulator))
    return app


def node(dst: str, layer: int, index: int, **extra: Any) -> dict[str, Any]:
    return {
        "dst": dst,
        "layerIndex": layer,
        "activationIndex": index,
        "datasets": ["demo"],
        **extra,
    }


def test_routes_without_an_llm_answer_503(dataset: tuple[DatasetRegistry, Path]) -> None:
    registry, _ = dataset
    http = TestClient(make_app(None, registry))
    for path, body in (
        ("/explain", node("mlp_post_act", 0, 0)),
        ("/score", node("mlp_post_act", 0, 0, explanation="x", maxSequences=2)),
    ):
        response = http.post(path, json=body)
        assert response.status_code == 503
        assert (
            "--llm-base-url" in response.json()["message"]
            and "OPENAI_API_KEY" in response.json()["message"]
        )


def test_operation_ids() -> None:
    schema = make_app(None, None).openapi()
    assert schema["paths"]["/explain"]["post"]["operationId"] == "explainer-explain"
    assert schema["paths"]["/score"]["post"]["operationId"] == "explainer-score"
    assert schema["paths"]["/score"]["post"]["requestBody"]["content"]["application/json"][
        "schema"
    ]["$ref"].endswith("ScoreRequest")


@pytest.mark.parametrize("dst", ["mlp_post_act", "attn_write_norm"])
def test_explain_and_score_routes(
    dataset: tuple[DatasetRegistry, Path], client: LLMClient, llm_server: FakeLLMServer, dst: str
) -> None:
    registry, root = dataset
    http = TestClient(make_app(client, registry))
    # the original client's calls: /explain, then /score with maxSequences 2
    response = http.post("/explain", json=node(dst, 1, 0))
    assert response.status_code == 200, response.text
    result = S.ExplanationResult.model_validate(response.json())
    expected = NEURON_EXPLANATION if dst == "mlp_post_act" else HEAD_EXPLANATION
    assert result.explanations == [expected]
    entry = registry.resolve("demo", dst)
    # a local dataset is named by its registered name: its folder stays on the server
    assert result.dataset == entry.public_location == "demo" != entry.root
    response = http.post("/score", json=node(dst, 1, 0, explanation=expected, maxSequences=2))
    assert response.status_code == 200, response.text
    score = S.ScoreResult.model_validate(response.json())
    assert score.dataset_path == "demo" and 0.5 < score.score <= 1.0
    # stored beside the dataset, where /existing_explanations finds it
    stored = store.node_explanations(registry, entry, 1, 0)
    assert stored == [("llm_fake-model", expected, score.score)]
    folder = "mlp_post_act" if dst == "mlp_post_act" else "attn_write_norm"
    assert (root / folder / "explanations/llm_fake-model/1/0.jsonl").is_file()
    # a second /score and /explain come from disk: no LLM call
    calls = llm_server.count()
    again = http.post("/score", json=node(dst, 1, 0, explanation=expected, maxSequences=2)).json()
    assert again["score"] == score.score
    assert http.post("/explain", json=node(dst, 1, 0)).json()["explanations"] == [expected]
    assert llm_server.count() == calls
    # ... even with no LLM configured
    offline = TestClient(make_app(None, registry))
    assert (
        offline.post("/score", json=node(dst, 1, 0, explanation=expected)).json()["score"]
        == score.score
    )


def test_route_errors(
    dataset: tuple[DatasetRegistry, Path], client: LLMClient, llm_server: FakeLLMServer
) -> None:
    registry, _ = dataset
    http = TestClient(make_app(client, registry))
    missing = http.post("/explain", json={**node("mlp_post_act", 0, 99)})
    assert missing.status_code == 404 and "0:99" in missing.json()["message"]
    unknown = http.post("/explain", json={**node("mlp_post_act", 0, 0), "datasets": ["nope"]})
    assert unknown.status_code == 404
    path_like = http.post("/explain", json={**node("mlp_post_act", 0, 0), "datasets": ["/etc"]})
    assert path_like.status_code == 400
    empty = http.post("/score", json=node("mlp_post_act", 0, 0, explanation="  "))
    assert empty.status_code == 400
    # the endpoint's error body is summarised, not echoed (it could be anything, of any size)
    llm_server.script = [(401, {"error": {"message": "invalid key <b>" + "x" * 50_000}})]
    refused = http.post("/explain", json=node("mlp_post_act", 0, 1))
    assert refused.status_code == 503 and "HTTP 401" in refused.json()["message"]
    assert "check the API key" in refused.json()["message"]
    assert "invalid key" not in refused.text and len(refused.text) < 1000
    assert http.post("/explain", json=node("mlp_post_act", 0, 0)).status_code == 200


def test_score_route_with_malformed_simulations_stores_zero(
    dataset: tuple[DatasetRegistry, Path], client: LLMClient, fixtures: Fixtures
) -> None:
    registry, _ = dataset
    fixtures.malformed = True
    http = TestClient(make_app(client, registry))
    response = http.post("/score", json=node("mlp_post_act", 0, 0, explanation="anything"))
    assert response.status_code == 200 and response.json()["score"] == 0.0


# ----------------------------------------------------------------------------- batch


def test_batch_explains_and_scores_every_head(
    dataset: tuple[DatasetRegistry, Path], client: LLMClient, llm_server: FakeLLMServer
) -> None:
    registry, _ = dataset
    entry = registry.resolve("demo", "attn_write_norm")
    nodes = batch.list_nodes(entry)
    assert nodes == [(layer, h) for layer in range(N_LAYERS) for h in range(N_HEADS)]
    summary = asyncio.run(
        batch.run_batch(registry, entry, nodes, client, concurrency=3, progress=False)
    )
    assert sorted(summary.explained) == nodes and not summary.failed
    for layer, h in nodes:
        stored = store.node_explanations(registry, entry, layer, h)
        assert [(name, e) for name, e, _ in stored] == [("llm_fake-model", HEAD_EXPLANATION)]
    scores = {n: store.node_explanations(registry, entry, *n)[0][2] for n in nodes}
    # the explanation fits the previous-token heads (head 0) better than the others
    assert min(scores[(0, 0)], scores[(1, 0)]) > max(scores[(0, 1)], scores[(1, 1)])  # type: ignore[type-var]
    # a second run does nothing
    calls = llm_server.count()
    again = asyncio.run(batch.run_batch(registry, entry, nodes, client, progress=False))
    assert sorted(again.skipped) == nodes and llm_server.count() == calls
    # the routes serve the results, with no LLM
    http = TestClient(make_app(None, registry))
    for layer, h in nodes:
        explained = http.post("/explain", json=node("attn_write_norm", layer, h)).json()
        assert explained["explanations"] == [HEAD_EXPLANATION]
        scored = http.post(
            "/score", json=node("attn_write_norm", layer, h, explanation=HEAD_EXPLANATION)
        )
        assert scored.json()["score"] == scores[(layer, h)]


def test_batch_cli_resumes_after_an_interrupt(
    dataset: tuple[DatasetRegistry, Path],
    llm_server: FakeLLMServer,
    fixtures: Fixtures,
    tmp_path: Path,
) -> None:
    registry, root = dataset
    fixtures.gate = threading.Event()
    fixtures.block_after = 2  # the third node's explanation hangs until interrupted
    command = [
        sys.executable,
        "-m",
        "neuron_explainer.explanations.batch",
        "demo",
        "--dataset-folder",
        str(root),
        "--dst",
        "attn_write_norm",
        "--all",
        "--llm-base-url",
        llm_server.base_url,
        "--explainer-model",
        "fake-model",
        "--concurrency",
        "1",
        "--no-llm-cache",
        "--no-progress",
    ]
    env = {**os.environ, "NO_PROXY": "127.0.0.1", "no_proxy": "127.0.0.1"}
    env.pop("OPENAI_API_KEY", None)
    process = subprocess.Popen(command, env=env, stderr=subprocess.PIPE, text=True)
    try:
        assert fixtures.waiting.wait(60), "the batch never reached the third node"
        process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 130, stderr
    assert "run the same command again to resume" in stderr
    entry = registry.resolve("demo", "attn_write_norm")
    done = [n for n in batch.list_nodes(entry) if store.node_explanations(registry, entry, *n)]
    assert done == [(0, 0), (0, 1)]
    # resume: only the two remaining heads are explained
    fixtures.gate.set()
    fixtures.block_after = None
    before = sum(k.startswith("explain") for k in fixtures.kinds)
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "2 explained and scored, 2 already done" in result.stderr
    assert sum(k.startswith("explain") for k in fixtures.kinds) - before == 2
    assert all(store.node_explanations(registry, entry, *n) for n in batch.list_nodes(entry))


def test_batch_cli_arguments() -> None:
    assert batch.parse_layers("0,2-4,3") == [0, 2, 3, 4]
    assert batch.parse_nodes("0:1, 3:7") == [(0, 1), (3, 7)]
    with pytest.raises(ValueError):
        batch.parse_nodes("3")
    assert batch.main(["demo", "--dst", "attn_write_norm", "--all"]) == 2  # not registered


def test_score_node_dispatch(client: LLMClient) -> None:
    head = asyncio.run(
        score_node(client, head_record(0, 0), NodeKind.ATTENTION_HEAD, HEAD_EXPLANATION)
    )
    neuron = asyncio.run(
        score_node(
            client, neuron_record(0, 0), NodeKind.NEURON, NEURON_EXPLANATION, max_sequences=2
        )
    )
    assert head.score is not None and head.score > 0.8
    assert len(neuron.scored_sequence_simulations) == 2


def test_key_never_in_stored_files(
    dataset: tuple[DatasetRegistry, Path], llm_server: FakeLLMServer, tmp_path: Path
) -> None:
    registry, root = dataset
    secret = "sk-very-secret-key"
    client = make_client(llm_server, tmp_path, api_key=secret)
    http = TestClient(make_app(client, registry))
    http.post("/score", json=node("mlp_post_act", 0, 0, explanation="cats"))
    for f in list(root.rglob("*")) + list(tmp_path.rglob("*.json")):
        if f.is_file():
            assert secret not in f.read_text(errors="ignore")


# ------------------------------------------------------------------- simulator choice


def test_auto_simulator_follows_the_endpoint(
    client: LLMClient, llm_server: FakeLLMServer, fixtures: Fixtures
) -> None:
    # the fixture server echoes prompt logprobs: asked once, then remembered
    assert asyncio.run(resolve_simulator("auto", client)) == "logprob"
    assert asyncio.run(resolve_simulator("auto", client)) == "logprob"
    assert llm_server.count("completions") == 1
    assert asyncio.run(resolve_simulator("logprob_free", client)) == "logprob_free"


@pytest.mark.parametrize(
    "completions_reply",
    [
        (404, {"error": {"message": "This is a chat model, not supported on v1/completions"}}),
        (
            200,
            {
                "choices": [
                    {
                        "text": "x",
                        "logprobs": {
                            "tokens": ["x"],
                            "top_logprobs": [{"x": 0.0}],
                            "text_offset": [0],
                        },
                    }
                ]
            },
        ),
        (200, {"choices": [{"text": "x"}]}),
    ],
    ids=["no-completions-endpoint", "echo-ignored", "no-logprobs"],
)
def test_auto_simulator_falls_back_to_logprob_free(
    llm_server: FakeLLMServer, fixtures: Fixtures, tmp_path: Path, completions_reply: Any
) -> None:
    llm_server.responder = lambda path, body: (
        completions_reply if path == "completions" else fixtures(path, body)
    )
    client = make_client(llm_server, tmp_path)
    assert asyncio.run(resolve_simulator("auto", client)) == "logprob_free"


def test_score_route_with_auto_simulator(
    dataset: tuple[DatasetRegistry, Path], client: LLMClient, llm_server: FakeLLMServer
) -> None:
    registry, root = dataset
    http = TestClient(make_app(client, registry, simulator="auto"))
    response = http.post("/score", json=node("mlp_post_act", 0, 1, explanation=NEURON_EXPLANATION))
    assert response.status_code == 200, response.text
    assert {p for p, _, _ in llm_server.requests} == {"completions"}  # probe + simulations
    assert (root / "mlp_post_act/explanations/llm_fake-model_logprob/0/1.jsonl").is_file()
    # heads are scored pair by pair whatever the choice, in the plain set
    http.post("/score", json=node("attn_write_norm", 0, 0, explanation=HEAD_EXPLANATION))
    assert (root / "attn_write_norm/explanations/llm_fake-model/0/0.jsonl").is_file()


def test_batch_explains_and_scores_every_head_of_the_bundled_demo_model(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, client: LLMClient, llm_server: FakeLLMServer
) -> None:
    """The shipped demo records, copied so that explanations are written to a temp folder."""
    import shutil

    from neuron_explainer import demo

    monkeypatch.setenv("NEURON_EXPLAINER_CACHE", str(tmp_path / "cache"))
    root = tmp_path / "demo"
    root.mkdir()
    shutil.copy(demo.DATASET_DIR / "dataset.json", root / "dataset.json")
    shutil.copy(demo.DATASET_DIR / "sequences.safetensors", root / "sequences.safetensors")
    shutil.copytree(demo.DATASET_DIR / "attn_write_norm", root / "attn_write_norm")
    registry = DatasetRegistry.with_published()
    registry.register_local_dataset("demo", root)
    entry = registry.resolve("demo", "attn_write_norm")
    nodes = batch.list_nodes(entry)
    assert len(nodes) == 4 * 6  # every head of the 4-layer, 6-head demo model
    summary = asyncio.run(batch.run_batch(registry, entry, nodes, client, concurrency=4, progress=False))
    assert sorted(summary.explained) == nodes and not summary.failed
    http = TestClient(make_app(None, registry))
    for layer, h in nodes:
        assert store.node_explanations(registry, entry, layer, h), (layer, h)
        explained = http.post("/explain", json=node("attn_write_norm", layer, h)).json()
        assert explained["explanations"] == [HEAD_EXPLANATION]
