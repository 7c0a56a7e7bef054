"""Simulate a neuron's activations from an explanation of it.

Two simulators, both predicting normalised activations (0..10) for every token of a sequence:

- `LogprobFreeSimulator` (any chat endpoint): the completion carries the predicted activations
  as JSON; a completion that cannot be read yields all zeros and says why (`error`).
- `LogprobSimulator` (endpoints that return prompt logprobs: the legacy /completions endpoint
  with `echo` and `logprobs`, e.g. vLLM): the prompt lists every token with the activation
  "unknown"; the probabilities the model gives to "0".."10" in place of each "unknown" give an
  expected value per token, as in the paper.
"""

from __future__ import annotations

import json
import logging
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from neuron_explainer.explanations.llm import LLMClient, LLMError, LLMRequestError, chat_text
from neuron_explainer.explanations.prompts import (
    MAX_NORMALIZED,
    logprob_free_simulation_messages,
    logprob_simulation_prompt,
)

log = logging.getLogger(__name__)

SimulatorKind = Literal["logprob_free", "logprob"]
SIMULATOR_KINDS: tuple[SimulatorKind, ...] = ("logprob_free", "logprob")
# "auto": the logprob simulator if the endpoint returns prompt logprobs, else the other.
SimulatorChoice = Literal["logprob_free", "logprob", "auto"]
SIMULATOR_CHOICES: tuple[SimulatorChoice, ...] = ("logprob_free", "logprob", "auto")

__all__ = [
    "SIMULATOR_CHOICES",
    "SIMULATOR_KINDS",
    "LogprobFreeSimulator",
    "LogprobSimulator",
    "SequenceSimulation",
    "Simulator",
    "SimulatorChoice",
    "SimulatorKind",
    "make_simulator",
    "parse_echo_logprobs",
    "parse_json_activations",
    "resolve_simulator",
    "supports_prompt_logprobs",
]


@dataclass
class SequenceSimulation:
    """Predicted normalised activations (0..10) for the tokens of one sequence."""

    tokens: list[str]
    expected_activations: list[float]
    # Per token, the values of the predicted distribution and their probabilities (logprob
    # simulator only; empty lists otherwise).
    distribution_values: list[list[float]] = field(default_factory=list)
    distribution_probabilities: list[list[float]] = field(default_factory=list)
    # Why the prediction is all zeros (a malformed completion), else None. Not stored.
    error: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "dataclass_name": "SequenceSimulation",
            "tokens": self.tokens,
            "expected_activations": self.expected_activations,
            "activation_scale": "simulated_normalized_activations",
            "distribution_values": self.distribution_values,
            "distribution_probabilities": self.distribution_probabilities,
            "uncalibrated_simulation": None,
        }


class Simulator(Protocol):
    async def simulate(self, tokens: Sequence[str]) -> SequenceSimulation: ...


def _zeros(tokens: Sequence[str], error: str) -> SequenceSimulation:
    log.warning("simulation fell back to zeros: %s", error)
    return SequenceSimulation(list(tokens), [0.0] * len(tokens), error=error)


# ------------------------------------------------------------------------- logprob-free

_THINK = re.compile(r"<think>.*?</think>", re.DOTALL | re.IGNORECASE)


def _json_candidates(text: str) -> list[str]:
    text = _THINK.sub("", text).strip()
    candidates = [text]
    fenced = re.findall(r"```(?:json)?\s*(.*?)```", text, re.DOTALL)
    candidates.extend(fenced)
    for opener, closer in (("{", "}"), ("[", "]")):
        start, end = text.find(opener), text.rfind(closer)
        if 0 <= start < end:
            candidates.append(text[start : end + 1])
    return candidates


def parse_json_activations(text: str, n_tokens: int) -> tuple[list[float], str | None]:
    """Activations from a logprob-free completion: (values, None), or (zeros, reason).

    Accepts the JSON object (possibly fenced or surrounded by prose), or a bare list of
    `{"token", "activation"}` objects or numbers. The list must have one entry per token;
    an entry whose activation is not a number from 0 to 10 counts as 0.
    """
    zeros = [0.0] * n_tokens
    parsed: Any = None
    for candidate in _json_candidates(text or ""):
        try:
            parsed = json.loads(candidate)
            break
        except ValueError:
            continue
    else:
        return zeros, f"the completion is not JSON: {(text or '')[:120]!r}"
    entries = parsed.get("activations") if isinstance(parsed, dict) else parsed
    if not isinstance(entries, list):
        return zeros, "the completion has no list of activations"
    if len(entries) != n_tokens:
        return zeros, f"the completion has {len(entries)} activations for {n_tokens} tokens"
    values: list[float] = []
    for entry in entries:
        raw: Any = entry.get("activation") if isinstance(entry, dict) else entry
        try:
            value = float(raw)
        except (TypeError, ValueError):
            value = 0.0
        if not (0.0 <= value <= MAX_NORMALIZED) or math.isnan(value):
            value = 0.0
        values.append(value)
    return values, None


class LogprobFreeSimulator:
    """Predicts activations from a chat completion that carries them as JSON (temperature 0)."""

    def __init__(self, client: LLMClient, explanation: str) -> None:
        self.client = client
        self.explanation = explanation.strip()

    async def simulate(self, tokens: Sequence[str]) -> SequenceSimulation:
        messages = logprob_free_simulation_messages(self.explanation, tokens)
        # Room for the echoed JSON: about a dozen tokens per entry.
        max_tokens = max(512, 24 * len(tokens) + 200)
        response = await self.client.chat(messages, temperature=0, max_tokens=max_tokens)
        values, error = parse_json_activations(chat_text(response), len(tokens))
        if error is not None:
            return _zeros(tokens, error)
        return SequenceSimulation(list(tokens), values)


# ----------------------------------------------------------------------------- logprob


def _distribution(top: Mapping[str, float] | None) -> tuple[list[float], list[float]]:
    """Values 0..10 and their normalised probabilities among the top logprobs."""
    probabilities: dict[int, float] = {}
    for token, logprob in (top or {}).items():
        text = str(token).strip()
        if text.isdigit() and 0 <= int(text) <= MAX_NORMALIZED and logprob is not None:
            probabilities[int(text)] = probabilities.get(int(text), 0.0) + math.exp(float(logprob))
    total = sum(probabilities.values())
    if total <= 0:
        return [], []
    values = sorted(probabilities)
    return [float(v) for v in values], [probabilities[v] / total for v in values]


def _top_logprobs_as_dict(entry: Any) -> dict[str, float] | None:
    if isinstance(entry, dict):
        return {str(k): float(v) for k, v in entry.items() if v is not None}
    if isinstance(entry, list):  # [{"token": ..., "logprob": ...}, ...]
        return {
            str(e.get("token")): float(e["logprob"])
            for e in entry
            if isinstance(e, dict) and e.get("logprob") is not None
        }
    return None


def parse_echo_logprobs(
    response: Mapping[str, Any], prompt: str, offsets: Sequence[int]
) -> tuple[list[float], list[list[float]], list[list[float]], str | None]:
    """Expected values and distributions at the given character offsets of an echoed prompt.

    Returns (expected values, distribution values, distribution probabilities, problem); a
    token whose position cannot be found or has no digit among its top logprobs gets 0 and is
    counted in `problem`. Raises LLMError if the response has no prompt logprobs at all.
    """
    try:
        logprobs = response["choices"][0]["logprobs"]
        tokens = list(logprobs["tokens"])
        top = list(logprobs["top_logprobs"])
        starts = [int(o) for o in logprobs["text_offset"]]
    except (KeyError, IndexError, TypeError, ValueError):
        raise LLMError(
            "the endpoint returned no prompt logprobs (needs /completions with echo and "
            "logprobs); use the logprob-free simulator instead"
        ) from None
    expected: list[float] = []
    dist_values: list[list[float]] = []
    dist_probs: list[list[float]] = []
    missing = 0
    i = 0
    for offset in offsets:
        # The prompt token that contains `offset` (offsets increase, so scan forward).
        while i + 1 < len(starts) and starts[i + 1] <= offset:
            i += 1
        ok = (
            i < len(tokens)
            and starts[i] <= offset < starts[i] + max(1, len(tokens[i]))
            and prompt[starts[i] : offset].strip() == ""
        )
        values, probs = _distribution(_top_logprobs_as_dict(top[i])) if ok else ([], [])
        if not values:
            missing += 1
        expected.append(sum(v * p for v, p in zip(values, probs, strict=True)))
        dist_values.append(values)
        dist_probs.append(probs)
    problem = None
    if missing:
        problem = f"{missing} of {len(offsets)} tokens had no activation digits among the logprobs"
    return expected, dist_values, dist_probs, problem


class LogprobSimulator:
    """Predicts expected activations from the prompt logprobs of the legacy /completions API."""

    def __init__(self, client: LLMClient, explanation: str, top_logprobs: int = 15) -> None:
        self.client = client
        self.explanation = explanation.strip()
        self.top_logprobs = top_logprobs

    async def simulate(self, tokens: Sequence[str]) -> SequenceSimulation:
        prompt, offsets = logprob_simulation_prompt(self.explanation, tokens)
        response = await self.client.complete(
            prompt, max_tokens=1, echo=True, logprobs=self.top_logprobs, temperature=0
        )
        expected, values, probs, problem = parse_echo_logprobs(response, prompt, offsets)
        if problem is not None:
            log.warning("logprob simulation: %s", problem)
        return SequenceSimulation(list(tokens), expected, values, probs, error=problem)


def make_simulator(kind: SimulatorKind, client: LLMClient, explanation: str) -> Simulator:
    if kind == "logprob_free":
        return LogprobFreeSimulator(client, explanation)
    if kind == "logprob":
        return LogprobSimulator(client, explanation)
    raise ValueError(f"unknown simulator {kind!r} (choose from {', '.join(SIMULATOR_KINDS)})")


async def supports_prompt_logprobs(client: LLMClient) -> bool:
    """Whether the endpoint echoes prompt logprobs (`/completions` with `echo` and `logprobs`);
    asked once per client with a tiny request, then remembered."""
    known = client.capabilities.get("prompt_logprobs")
    if known is not None:
        return known
    prompt = "The\t0\ncat\tunknown\n"
    try:
        response = await client.complete(prompt, max_tokens=1, echo=True, logprobs=2, temperature=0)
        logprobs = response["choices"][0]["logprobs"]
        # The prompt's own tokens must come back (some servers ignore `echo`).
        supported = (
            "".join(logprobs["tokens"]).startswith(prompt)
            and len(logprobs["top_logprobs"]) == len(logprobs["tokens"])
            and len(logprobs["text_offset"]) == len(logprobs["tokens"])
        )
    except LLMRequestError:  # no /completions endpoint, or no echo / logprobs there
        supported = False
    except (KeyError, IndexError, TypeError):
        supported = False
    client.capabilities["prompt_logprobs"] = supported
    log.info("LLM endpoint %s prompt logprobs", "returns" if supported else "does not return")
    return supported


async def resolve_simulator(choice: SimulatorChoice, client: LLMClient) -> SimulatorKind:
    """The simulator `choice` means for this endpoint ("auto" asks it, see above)."""
    if choice == "auto":
        return "logprob" if await supports_prompt_logprobs(client) else "logprob_free"
    if choice not in SIMULATOR_KINDS:
        raise ValueError(
            f"unknown simulator {choice!r} (choose from {', '.join(SIMULATOR_CHOICES)})"
        )
    return choice
