"""Score explanations by how well they predict a node's activations on held-out records.

Neurons and latents (the paper's method): simulate every held-out sequence from the
explanation, then take the correlation between the simulated and the true activations over all
tokens of all sequences together (not an average of per-sequence correlations). A constant
simulation (e.g. all zeros after a malformed completion) correlates with nothing: score 0.

Attention heads: take the strongest token pairs of the held-out records and as many random
weak pairs (below 10% of the head's max activation); ask, pair by pair, whether the head
activates on it; the score is the area under the ROC curve of those predictions.

Held-out records: see `explainer.scoring_records`.
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from neuron_explainer.activations.records import ActivationRecord, NeuronRecord
from neuron_explainer.explanations.explainer import (
    NodeKind,
    all_token_pairs,
    scoring_records,
    top_token_pairs,
)
from neuron_explainer.explanations.llm import LLMClient, LLMRequestError
from neuron_explainer.explanations.prompts import TokenPair, attention_pair_messages
from neuron_explainer.explanations.simulator import (
    SequenceSimulation,
    Simulator,
    SimulatorKind,
    make_simulator,
)

log = logging.getLogger(__name__)

__all__ = [
    "AttentionSimulation",
    "ScoredAttentionSimulation",
    "ScoredSequenceSimulation",
    "ScoredSimulation",
    "absolute_dev_explained_score",
    "correlation_score",
    "roc_auc",
    "rsquared_score",
    "score_attention_explanation",
    "score_neuron_explanation",
    "score_node",
    "simulate_and_score",
]

# ---------------------------------------------------------------------------------- maths


def correlation_score(real: Sequence[float], predicted: Sequence[float]) -> float:
    """Pearson correlation; 0.0 when undefined (constant inputs, fewer than two values)."""
    if len(real) < 2 or len(real) != len(predicted):
        return 0.0
    with np.errstate(all="ignore"):
        value = float(np.corrcoef(np.asarray(real, float), np.asarray(predicted, float))[0, 1])
    return 0.0 if math.isnan(value) else value


def rsquared_score(real: Sequence[float], predicted: Sequence[float]) -> float | None:
    """1 - mean((real - predicted)^2) / mean(real^2); None when undefined."""
    r, p = np.asarray(real, float), np.asarray(predicted, float)
    denominator = float(np.mean(np.square(r))) if len(r) else 0.0
    if denominator == 0:
        return None
    return float(1 - np.mean(np.square(r - p)) / denominator)


def absolute_dev_explained_score(real: Sequence[float], predicted: Sequence[float]) -> float | None:
    """1 - mean(|real - predicted|) / mean(|real|); None when undefined."""
    r, p = np.asarray(real, float), np.asarray(predicted, float)
    denominator = float(np.mean(np.abs(r))) if len(r) else 0.0
    if denominator == 0:
        return None
    return float(1 - np.mean(np.abs(r - p)) / denominator)


def roc_auc(labels: Sequence[int], scores: Sequence[float]) -> float | None:
    """Area under the ROC curve (ties count half); None unless both labels occur."""
    positives = [s for s, y in zip(scores, labels, strict=True) if y]
    negatives = [s for s, y in zip(scores, labels, strict=True) if not y]
    if not positives or not negatives:
        return None
    wins = sum((p > n) + 0.5 * (p == n) for p in positives for n in negatives)
    return float(wins / (len(positives) * len(negatives)))


# ------------------------------------------------------------------------- neuron scoring


@dataclass
class ScoredSequenceSimulation:
    simulation: SequenceSimulation
    true_activations: list[float]
    ev_correlation_score: float
    rsquared_score: float | None = None
    absolute_dev_explained_score: float | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "dataclass_name": "ScoredSequenceSimulation",
            "sequence_simulation": self.simulation.to_json(),
            "true_activations": self.true_activations,
            "ev_correlation_score": self.ev_correlation_score,
            "rsquared_score": self.rsquared_score,
            "absolute_dev_explained_score": self.absolute_dev_explained_score,
        }


@dataclass
class ScoredSimulation:
    scored_sequence_simulations: list[ScoredSequenceSimulation]
    ev_correlation_score: float
    rsquared_score: float | None = None
    absolute_dev_explained_score: float | None = None

    @property
    def score(self) -> float:
        return self.ev_correlation_score

    @property
    def errors(self) -> list[str]:
        """Why some simulations fell back to zeros (malformed completions)."""
        return [s.simulation.error for s in self.scored_sequence_simulations if s.simulation.error]

    def to_json(self) -> dict[str, Any]:
        return {
            "dataclass_name": "ScoredSimulation",
            "scored_sequence_simulations": [s.to_json() for s in self.scored_sequence_simulations],
            "ev_correlation_score": self.ev_correlation_score,
            "rsquared_score": self.rsquared_score,
            "absolute_dev_explained_score": self.absolute_dev_explained_score,
        }


async def simulate_and_score(
    simulator: Simulator, records: Sequence[ActivationRecord]
) -> ScoredSimulation:
    """Simulate every record (concurrently) and score against the true activations."""
    simulations = await asyncio.gather(*(simulator.simulate(r.tokens) for r in records))
    scored = []
    for record, simulation in zip(records, simulations, strict=True):
        true = [float(x) for x in record.activations]
        predicted = simulation.expected_activations
        scored.append(
            ScoredSequenceSimulation(
                simulation=simulation,
                true_activations=true,
                ev_correlation_score=correlation_score(true, predicted),
                rsquared_score=rsquared_score(true, predicted),
                absolute_dev_explained_score=absolute_dev_explained_score(true, predicted),
            )
        )
    all_true = [x for s in scored for x in s.true_activations]
    all_predicted = [x for s in scored for x in s.simulation.expected_activations]
    result = ScoredSimulation(
        scored_sequence_simulations=scored,
        ev_correlation_score=correlation_score(all_true, all_predicted),
        rsquared_score=rsquared_score(all_true, all_predicted),
        absolute_dev_explained_score=absolute_dev_explained_score(all_true, all_predicted),
    )
    if result.errors:
        log.warning(
            "%d of %d simulations were unusable and count as all zeros: %s",
            len(result.errors),
            len(scored),
            "; ".join(sorted(set(result.errors))),
        )
    return result


async def score_neuron_explanation(
    client: LLMClient,
    explanation: str,
    records: Sequence[ActivationRecord],
    simulator: SimulatorKind = "logprob_free",
) -> ScoredSimulation:
    """Correlation score of `explanation` on `records` (see `scoring_records`)."""
    return await simulate_and_score(make_simulator(simulator, client, explanation), records)


# --------------------------------------------------------------------- attention scoring


@dataclass
class AttentionSimulation:
    tokens: list[str]
    token_pair_coords: TokenPair  # (from, to)
    token_pair_label: int  # 1: one of the strongest pairs, 0: a weak pair
    simulation_prediction: float  # predicted probability that the head activates
    error: str | None = None  # why the prediction defaulted to 0; not stored

    def to_json(self) -> dict[str, Any]:
        return {
            "dataclass_name": "AttentionSimulation",
            "tokens": self.tokens,
            "token_pair_coords": list(self.token_pair_coords),
            "token_pair_label": self.token_pair_label,
            "simulation_prediction": self.simulation_prediction,
        }


@dataclass
class ScoredAttentionSimulation:
    attention_simulations: list[AttentionSimulation] = field(default_factory=list)
    roc_auc_score: float | None = None

    @property
    def score(self) -> float | None:
        return self.roc_auc_score

    @property
    def errors(self) -> list[str]:
        return [s.error for s in self.attention_simulations if s.error]

    def to_json(self) -> dict[str, Any]:
        return {
            "dataclass_name": "ScoredAttentionSimulation",
            "attention_simulations": [s.to_json() for s in self.attention_simulations],
            "roc_auc_score": self.roc_auc_score,
        }


def select_scoring_pairs(
    records: Sequence[ActivationRecord],
    max_activation: float,
    num_pairs: int = 5,
    low_threshold: float = 0.1,
    seed: int = 0,
) -> list[tuple[int, TokenPair, int]]:
    """(record index, pair, label): the `num_pairs` strongest pairs (label 1) and as many
    random pairs below `low_threshold * max_activation` (label 0); deterministic for `seed`."""
    top = top_token_pairs(records, num_pairs)
    chosen = {(i, pair) for i, _, pair in top}
    weak = [
        (i, (f, t))
        for i, record in enumerate(records)
        for f, t, value in all_token_pairs(record)
        if value < low_threshold * max_activation and (i, (f, t)) not in chosen
    ]
    weak = random.Random(seed).sample(weak, min(num_pairs, len(weak)))
    return [(i, pair, 1) for i, _, pair in top] + [(i, pair, 0) for i, pair in weak]


def _pair_prediction(response: dict[str, Any]) -> tuple[float, str | None]:
    """P("1") / (P("0") + P("1")) from the completion's top logprobs when present, else the
    answer's first digit; 0.0 with a reason when neither is usable."""
    try:
        choice = response["choices"][0]
    except (KeyError, IndexError, TypeError):
        return 0.0, "the response has no choices"
    content = (choice.get("logprobs") or {}).get("content") or []
    if content and isinstance(content[0], dict):
        probability = {"0": 0.0, "1": 0.0}
        for entry in content[0].get("top_logprobs") or []:
            token = str(entry.get("token", "")).strip()
            if token in probability and entry.get("logprob") is not None:
                probability[token] += math.exp(float(entry["logprob"]))
        total = probability["0"] + probability["1"]
        if total > 0:
            return probability["1"] / total, None
    text = ((choice.get("message") or {}).get("content") or "").strip()
    for char in text:
        if char in "01":
            return float(char), None
    return 0.0, f"the answer {text[:40]!r} is neither 0 nor 1"


async def score_attention_explanation(
    client: LLMClient,
    explanation: str,
    records: Sequence[ActivationRecord],
    max_activation: float,
    num_pairs: int = 5,
    seed: int = 0,
) -> ScoredAttentionSimulation:
    """ROC AUC of per-pair predictions (see the module docstring)."""
    selected = select_scoring_pairs(records, max_activation, num_pairs, seed=seed)

    async def predict(record_index: int, pair: TokenPair, label: int) -> AttentionSimulation:
        tokens = records[record_index].tokens
        messages = attention_pair_messages(explanation, tokens, pair)
        try:
            response = await client.chat(
                messages, temperature=0, max_tokens=1, logprobs=True, top_logprobs=10
            )
        except LLMRequestError as exc:
            if "logprob" not in str(exc).lower():
                raise
            # Some endpoints and models refuse logprobs: the answer's digit will do.
            response = await client.chat(messages, temperature=0, max_tokens=1)
        prediction, error = _pair_prediction(response)
        if error:
            log.warning("attention pair prediction defaulted to 0: %s", error)
        return AttentionSimulation(list(tokens), pair, label, prediction, error)

    simulations = list(await asyncio.gather(*(predict(*s) for s in selected)))
    return ScoredAttentionSimulation(
        simulations,
        roc_auc(
            [s.token_pair_label for s in simulations],
            [s.simulation_prediction for s in simulations],
        ),
    )


# ------------------------------------------------------------------------------ one node


async def score_node(
    client: LLMClient,
    record: NeuronRecord,
    kind: NodeKind,
    explanation: str,
    *,
    simulator: SimulatorKind = "logprob_free",
    n_per_split: int = 5,
    max_sequences: int | None = None,
) -> ScoredSimulation | ScoredAttentionSimulation:
    """Score `explanation` of a node on its held-out records (`scoring_records`)."""
    records = scoring_records(record, n_per_split, max_sequences)
    if not records:
        raise ValueError("the node's record has no examples to score on")
    if kind == NodeKind.ATTENTION_HEAD:
        return await score_attention_explanation(
            client, explanation, records, record.max_activation
        )
    return await score_neuron_explanation(client, explanation, records, simulator)
