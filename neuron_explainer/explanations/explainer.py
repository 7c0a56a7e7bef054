"""Ask an LLM what makes a node fire: MLP neurons and autoencoder latents (per-token records)
and attention heads (per-token-pair records).

- `node_kind(dst, records)`: whether a node is explained like a neuron or like a head;
- `explain_neuron(client, records)`: explanations from top-activating records;
- `explain_attention_head(client, records)`: explanations from the strongest token pairs;
- `explain_node(client, record, kind)`: either of those, from the record's "train" split;
- `parse_explanation(text, prefix)`: the explanation in an LLM's answer, tolerant of labels,
  quotes, numbering, a repeated prefix, reasoning blocks and trailing chatter.

Record splits (those of the seed): top-activating records are dealt round-robin into train /
calibration / valid / test, random records into calibration / valid / test, each split getting
`n_per_split`; explanations are written from "train" (`explanation_records`) and scored on
"valid", top and random (`scoring_records`). Records too few for those splits are shared
between them (logged).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from enum import StrEnum
from typing import Any

from neuron_explainer.activations.records import (
    ActivationRecord,
    NeuronRecord,
    RecordFormatError,
    unflatten_token_pair_activations,
)
from neuron_explainer.explanations.llm import LLMClient, LLMError
from neuron_explainer.explanations.prompts import (
    ATTENTION_PREFIX,
    NEURON_PREFIX,
    TokenPair,
    attention_explanation_messages,
    neuron_explanation_messages,
)

log = logging.getLogger(__name__)

__all__ = [
    "TOKEN_PAIR_DSTS",
    "ExplanationParseError",
    "NodeKind",
    "explain_attention_head",
    "explain_neuron",
    "explain_node",
    "explanation_records",
    "node_kind",
    "parse_explanation",
    "scoring_records",
    "top_token_pairs",
]


class NodeKind(StrEnum):
    """How a node is explained and scored."""

    NEURON = "neuron"  # one value per token: MLP neurons, autoencoder latents
    ATTENTION_HEAD = "attention_head"  # one value per token pair


# Derived scalar types whose records hold one value per token pair.
TOKEN_PAIR_DSTS = frozenset(
    {
        "attn_write_norm",
        "flattened_attn_post_softmax",
        "attn_act_times_grad",
        "attn_write_to_final_residual_grad",
        "flattened_attn_write_to_latent_summed_over_heads",
        "flattened_attn_write_to_latent_summed_over_heads_batched",
    }
)


def node_kind(dst: str, records: Sequence[ActivationRecord] = ()) -> NodeKind:
    """NEURON or ATTENTION_HEAD for a node of type `dst` (a DerivedScalarType or its value).

    Types not known to be per token pair are decided from the records: if any record has a
    number of values other than its number of tokens, the values are per token pair.
    """
    value = getattr(dst, "value", dst)
    if value in TOKEN_PAIR_DSTS:
        return NodeKind.ATTENTION_HEAD
    if any(len(r.activations) != len(r.tokens) for r in records):
        return NodeKind.ATTENTION_HEAD
    return NodeKind.NEURON


class ExplanationParseError(LLMError):
    """The LLM's answer contained no usable explanation."""


_THINK = re.compile(r"<think>.*?</think>", re.DOTALL | re.IGNORECASE)
_LABEL = re.compile(
    r"^(?:explanation(?: of (?:neuron|attention head) \d+(?: behaviou?r)?)?|answer|"
    r"neuron \d+|attention head \d+)\s*[:\-]\s*",
    re.IGNORECASE,
)
_BULLET = re.compile(r"^(?:\d+[.)]|[-*•])\s+")


def parse_explanation(text: str, prefix: str = NEURON_PREFIX) -> str:
    """The explanation in `text`, without `prefix`; raises ExplanationParseError if none."""
    text = _THINK.sub("", text or "")
    if "</think>" in text.lower():  # an unclosed reasoning block: keep what follows it
        text = text[text.lower().rindex("</think>") + len("</think>") :]
    text = text.replace("```", "\n")
    lines = [line.strip() for line in text.splitlines()]
    # (a fence's language tag, e.g. ```text, is left on a line of its own)
    lines = [line for line in lines if line and line.lower() not in ("json", "text", "plaintext")]
    for i, line in enumerate(lines):
        if line.endswith(":") and i < len(lines) - 1:
            continue  # "Here is my explanation:" and the like
        candidate = _clean(line, prefix)
        if candidate:
            return candidate
    raise ExplanationParseError(f"no explanation in the LLM's answer {text[:200]!r}")


def _clean(line: str, prefix: str) -> str:
    previous = None
    while previous != line:
        previous = line
        line = _BULLET.sub("", line)
        line = _LABEL.sub("", line)
        line = line.strip().strip("\"'`*_“”‘’").strip()
        if line.lower().startswith(prefix.lower()):
            line = line[len(prefix) :].lstrip(" :,")
        # "This neuron activates for" when the prefix was that of a head, and vice versa
        for other in (NEURON_PREFIX, ATTENTION_PREFIX, "the neuron activates for"):
            if line.lower().startswith(other.lower()):
                line = line[len(other) :].lstrip(" :,")
    line = line.strip()
    while line.endswith((".", "!", ";")):
        line = line[:-1].rstrip()
    return line


TOP_SPLITS = 4  # train, calibration, valid, test
RANDOM_SPLITS = 3  # calibration, valid, test


# ------------------------------------------------------------------------- record splits


def _split(
    records: list[ActivationRecord], n_splits: int, index: int, n: int
) -> list[ActivationRecord]:
    per_split = min(n, len(records) // n_splits)
    if per_split == 0:
        if records:
            log.warning(
                "only %d records: too few for %d held-out splits, using them all",
                len(records),
                n_splits,
            )
        return list(records[:n])
    return records[index : per_split * n_splits : n_splits]


def explanation_records(record: NeuronRecord, n_per_split: int = 5) -> list[ActivationRecord]:
    """The top-activating records an explanation is written from (the "train" split)."""
    return _split(record.most_positive_activation_records, TOP_SPLITS, 0, n_per_split)


def scoring_records(
    record: NeuronRecord, n_per_split: int = 5, max_sequences: int | None = None
) -> list[ActivationRecord]:
    """Held-out records for scoring (the "valid" split), top and random alternating, so that
    the first `max_sequences` keep both kinds."""
    top = _split(record.most_positive_activation_records, TOP_SPLITS, 2, n_per_split)
    rand = _split(record.random_sample, RANDOM_SPLITS, 1, n_per_split)
    mixed: list[ActivationRecord] = []
    for i in range(max(len(top), len(rand))):
        mixed.extend(r[i] for r in (top, rand) if i < len(r))
    return mixed if max_sequences is None else mixed[: max(1, max_sequences)]


# ------------------------------------------------------------------------------ neurons


async def explain_neuron(
    client: LLMClient,
    records: Sequence[ActivationRecord],
    *,
    num_samples: int = 1,
    max_tokens: int = 256,
    temperature: float = 1.0,
) -> list[str]:
    """Explanations of a neuron (or latent) from its top-activating `records`."""
    if not records:
        raise ValueError("no records to explain the node from")
    messages = neuron_explanation_messages(records)
    return await _ask(client, messages, NEURON_PREFIX, num_samples, max_tokens, temperature)


# ------------------------------------------------------------------------ attention heads


def top_token_pairs(
    records: Sequence[ActivationRecord], k: int
) -> list[tuple[int, float, TokenPair]]:
    """The `k` strongest token pairs over `records`: (record index, value, (from, to)), strongest
    first. Records whose values do not fit their tokens are skipped (logged)."""
    candidates: list[tuple[float, int, TokenPair]] = []
    for record_index, record in enumerate(records):
        for from_index, to_index, value in _pairs(record):
            candidates.append((value, record_index, (from_index, to_index)))
    candidates.sort(key=lambda c: (-c[0], c[1], c[2]))
    return [(i, value, pair) for value, i, pair in candidates[:k]]


def _pairs(record: ActivationRecord) -> list[tuple[int, int, float]]:
    """(from, to, value) for every token pair of a per-token-pair record."""
    try:
        rows = unflatten_token_pair_activations(record)
    except RecordFormatError as exc:
        log.warning("skipping a token-pair record: %s", exc)
        return []
    out = []
    for from_index, row in enumerate(rows):
        # A query sees the last len(row) keys up to and including itself.
        first_key = from_index + 1 - len(row)
        for j, value in enumerate(row):
            out.append((from_index, first_key + j, float(value)))
    return out


def all_token_pairs(record: ActivationRecord) -> list[tuple[int, int, float]]:
    """(from, to, value) for every token pair of a per-token-pair record."""
    return _pairs(record)


async def explain_attention_head(
    client: LLMClient,
    records: Sequence[ActivationRecord],
    *,
    num_top_pairs: int = 5,
    num_samples: int = 1,
    max_tokens: int = 256,
    temperature: float = 1.0,
) -> list[str]:
    """Explanations of an attention head from the strongest token pairs of its `records`."""
    top = top_token_pairs(records, num_top_pairs)
    if not top:
        raise ValueError("no token pairs to explain the head from")
    grouped: dict[int, list[TokenPair]] = {}
    for record_index, _, pair in top:
        grouped.setdefault(record_index, []).append(pair)
    sequences = [(records[i].tokens, pairs) for i, pairs in grouped.items()]
    messages = attention_explanation_messages(sequences)
    return await _ask(client, messages, ATTENTION_PREFIX, num_samples, max_tokens, temperature)


# ------------------------------------------------------------------------------ shared


async def _ask(
    client: LLMClient,
    messages: list[dict[str, str]],
    prefix: str,
    num_samples: int,
    max_tokens: int,
    temperature: float,
) -> list[str]:
    params: dict[str, Any] = {"max_tokens": max_tokens, "temperature": temperature}
    if num_samples != 1:
        params["n"] = num_samples
    response = await client.chat(messages, **params)
    explanations: list[str] = []
    problems: list[str] = []
    for choice in response.get("choices") or []:
        text = ((choice or {}).get("message") or {}).get("content") or ""
        try:
            explanation = parse_explanation(text, prefix)
        except ExplanationParseError as exc:
            problems.append(str(exc))
            continue
        if explanation not in explanations:
            explanations.append(explanation)
    if not explanations:
        reason = "; ".join(problems) or "the response had no choices"
        log.warning("LLM explanation could not be parsed: %s", reason)
        raise ExplanationParseError(f"the LLM gave no usable explanation: {reason}")
    return explanations


async def explain_node(
    client: LLMClient,
    record: NeuronRecord,
    kind: NodeKind,
    *,
    n_per_split: int = 5,
    num_samples: int = 1,
) -> list[str]:
    """Explanations of a node from its record's "train" split."""
    records = explanation_records(record, n_per_split)
    if kind == NodeKind.ATTENTION_HEAD:
        return await explain_attention_head(client, records, num_samples=num_samples)
    return await explain_neuron(client, records, num_samples=num_samples)
