"""Prompts for explaining and simulating nodes, and the few-shot examples they show.

Formats (those of "Language models can explain neurons in language models"):

- activations are shown normalised to integers 0..10 (`normalize_activations`): negative values
  count as 0, the largest activation of the node maps to 10;
- a sequence is shown one token per line as `token<TAB>activation`, between `<start>` and
  `<end>` lines; when the model is to predict the activations, each is written `unknown`;
- an attention head's token pair is shown in its sequence with the attended-to ("to") token as
  `**token**`, the attending ("from") token as `[[token]]` and a token paired with itself as
  `[[**token**]]`; sequences are separated by `<|sequence_separator|>`;
- the logprob-free simulator exchanges JSON: `{"to_find": explanation, "document": text,
  "activations": [{"token": t, "activation": null | 0..10}, ...]}`.

Explanations are completions of a fixed prefix (`NEURON_PREFIX`, `ATTENTION_PREFIX`) and are
stored without it. All few-shot examples below are our own.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass

from neuron_explainer.activations.records import ActivationRecord

Message = dict[str, str]

NEURON_PREFIX = "this neuron activates for"
ATTENTION_PREFIX = "this attention head"
UNKNOWN = "unknown"
MAX_NORMALIZED = 10
SEQUENCE_SEPARATOR = "<|sequence_separator|>"

TokenPair = tuple[int, int]
"""(from_token_index, to_token_index): the attending (later) token and the attended-to one."""


# ------------------------------------------------------------------------------ formatting


def normalize_activations(activations: Sequence[float], max_activation: float) -> list[int]:
    """Integers 0..10: floor(10 * max(x, 0) / max_activation), capped at 10; all 0 if the
    max activation is not positive."""
    if not max_activation > 0:
        return [0 for _ in activations]
    return [min(MAX_NORMALIZED, math.floor(10 * max(x, 0.0) / max_activation)) for x in activations]


def max_activation_of(records: Sequence[ActivationRecord]) -> float:
    """Largest activation (negatives count as 0) over `records`; 0.0 if there is none."""
    return max((max(0.0, *r.activations) for r in records if r.activations), default=0.0)


def display_token(token: str) -> str:
    """A token as one line can show it: newlines and tabs escaped."""
    return token.replace("\n", "\\n").replace("\t", "\\t").replace("\r", "\\r")


def format_record(
    record: ActivationRecord, max_activation: float, *, hide: bool = False, omit_zeros: bool = False
) -> str:
    """`token<TAB>activation` lines for one sequence (without the start/end markers)."""
    values = normalize_activations(record.activations, max_activation)
    lines = []
    for token, value in zip(record.tokens, values, strict=True):
        if omit_zeros and value == 0:
            continue
        lines.append(f"{display_token(token)}\t{UNKNOWN if hide else value}")
    return "\n".join(lines)


def format_records(
    records: Sequence[ActivationRecord],
    max_activation: float,
    *,
    hide: bool = False,
    omit_zeros: bool = False,
) -> str:
    """Several sequences, each between `<start>` and `<end>` lines."""
    parts = [
        "<start>\n" + format_record(r, max_activation, hide=hide, omit_zeros=omit_zeros) + "\n<end>"
        for r in records
    ]
    return "\n".join(parts)


def mark_token_pair(tokens: Sequence[str], pair: TokenPair) -> str:
    """The sequence's text with the pair's tokens marked (see the module docstring)."""
    from_index, to_index = pair
    out = []
    for i, token in enumerate(tokens):
        if i == from_index and i == to_index:
            out.append(f"[[**{token}**]]")
        elif i == from_index:
            out.append(f"[[{token}]]")
        elif i == to_index:
            out.append(f"**{token}**")
        else:
            out.append(token)
    return "".join(out)


# ------------------------------------------------------------------------ few-shot examples


@dataclass(frozen=True)
class NeuronExample:
    explanation: str
    records: tuple[ActivationRecord, ...]


@dataclass(frozen=True)
class AttentionExample:
    explanation: str
    # (tokens, strongly activating token pairs in that sequence)
    sequences: tuple[tuple[tuple[str, ...], tuple[TokenPair, ...]], ...]
    # (sequence index, token pair, 1 if the head activates on it else 0), for simulation
    labelled_pairs: tuple[tuple[int, TokenPair, int], ...]


def _record(pairs: Sequence[tuple[str, float]]) -> ActivationRecord:
    return ActivationRecord(tokens=[t for t, _ in pairs], activations=[a for _, a in pairs])


NEURON_EXAMPLES: tuple[NeuronExample, ...] = (
    NeuronExample(
        explanation="names of months of the year",
        records=(
            _record(
                [
                    ("The", 0.0),
                    (" festival", 0.0),
                    (" runs", 0.0),
                    (" from", 0.1),
                    (" late", 0.4),
                    (" June", 4.2),
                    (" until", 0.0),
                    (" early", 0.3),
                    (" August", 3.9),
                    (".", 0.0),
                ]
            ),
            _record(
                [
                    ("She", 0.0),
                    (" was", 0.0),
                    (" born", 0.0),
                    (" on", 0.0),
                    (" 3", 0.2),
                    (" March", 4.4),
                    (" 1990", 0.6),
                    (" in", 0.0),
                    (" Ohio", 0.0),
                    (".", 0.0),
                ]
            ),
        ),
    ),
    NeuronExample(
        explanation="closing brackets and parentheses in program code",
        records=(
            _record(
                [
                    ("if", 0.0),
                    (" (", 0.0),
                    ("x", 0.0),
                    (" >", 0.0),
                    (" 0", 0.0),
                    (")", 6.1),
                    (" {", 0.5),
                    ("\n", 0.0),
                    ("    return", 0.0),
                    (" f", 0.0),
                    ("(", 0.0),
                    ("x", 0.0),
                    (")", 7.0),
                    (";", 0.2),
                    ("\n", 0.0),
                    ("}", 4.8),
                ]
            ),
            _record(
                [
                    ("items", 0.0),
                    ("[", 0.0),
                    ("i", 0.0),
                    ("]", 6.6),
                    (" =", 0.0),
                    (" max", 0.0),
                    ("(", 0.0),
                    ("a", 0.0),
                    (",", 0.0),
                    (" b", 0.0),
                    (")", 6.9),
                ]
            ),
        ),
    ),
    NeuronExample(
        explanation="words about sadness, mourning and loss",
        records=(
            _record(
                [
                    ("He", 0.0),
                    (" felt", 0.3),
                    (" a", 0.0),
                    (" deep", 0.9),
                    (" sorrow", 8.2),
                    (" after", 0.0),
                    (" the", 0.0),
                    (" funeral", 5.5),
                    (".", 0.0),
                ]
            ),
            _record(
                [
                    ("The", 0.0),
                    (" children", 0.0),
                    (" cried", 6.3),
                    (" when", 0.0),
                    (" their", 0.0),
                    (" old", 0.0),
                    (" dog", 0.0),
                    (" died", 5.1),
                    (".", 0.0),
                ]
            ),
        ),
    ),
)

ATTENTION_EXAMPLES: tuple[AttentionExample, ...] = (
    AttentionExample(
        explanation="attends to the token right before the current token, from every token",
        sequences=(
            (("The", " cat", " sat", " on", " the", " warm", " mat", "."), ((2, 1), (6, 5))),
            (("Rain", " fell", " all", " night", " long", "."), ((3, 2),)),
        ),
        labelled_pairs=((0, (6, 5), 1), (0, (6, 1), 0), (1, (3, 2), 1), (1, (5, 0), 0)),
    ),
    AttentionExample(
        explanation="attends to an earlier mention of a name from a later repetition of the same name",
        sequences=(
            (
                (
                    "When",
                    " Mary",
                    " and",
                    " John",
                    " went",
                    " to",
                    " the",
                    " shop",
                    ",",
                    " John",
                    " gave",
                    " a",
                    " drink",
                    " to",
                ),
                ((9, 3),),
            ),
            (
                ("Alice", " met", " Bob", ".", " Later", ",", " Bob", " called", " Alice"),
                ((6, 2), (8, 0)),
            ),
        ),
        labelled_pairs=((0, (9, 3), 1), (0, (9, 8), 0), (1, (8, 0), 1), (1, (7, 6), 0)),
    ),
    AttentionExample(
        explanation="attends to an opening quotation mark from the quotation mark that closes it",
        sequences=(
            (("He", " said", ' "', "yes", '"', " and", " left", "."), ((4, 2),)),
            (("The", " sign", " read", ' "', "No", " entry", '"', "."), ((6, 3),)),
        ),
        labelled_pairs=((0, (4, 2), 1), (1, (6, 5), 0)),
    ),
)


# ------------------------------------------------------------------------ neuron explanation

_NEURON_EXPLAIN_SYSTEM = (
    "You are helping to interpret the neurons of a language model. For each neuron you are "
    "shown text excerpts, one token per line, each followed by a tab and the neuron's "
    "activation on that token. Activations are integers from 0 to 10: 0 means the neuron is "
    "silent, 10 means it is firing as strongly as it ever does. Work out what the neuron is "
    "detecting and describe it in one short phrase that completes the sentence "
    f'"{NEURON_PREFIX} ...". Describe the pattern; do not just list the words, and do not add '
    "anything after the phrase."
)


def _neuron_explain_turn(index: int, records: Sequence[ActivationRecord]) -> str:
    return (
        f"Neuron {index}\nActivations:\n{format_records(records, max_activation_of(records))}\n"
        f"Explanation of neuron {index} behavior: {NEURON_PREFIX}"
    )


def neuron_explanation_messages(records: Sequence[ActivationRecord]) -> list[Message]:
    """Chat messages asking for an explanation of a neuron (or latent) from its top records.

    Activations are normalised by the largest one among `records`.
    """
    messages: list[Message] = [{"role": "system", "content": _NEURON_EXPLAIN_SYSTEM}]
    for i, example in enumerate(NEURON_EXAMPLES, start=1):
        messages.append({"role": "user", "content": _neuron_explain_turn(i, example.records)})
        messages.append({"role": "assistant", "content": f" {example.explanation}."})
    messages.append(
        {"role": "user", "content": _neuron_explain_turn(len(NEURON_EXAMPLES) + 1, records)}
    )
    return messages


# -------------------------------------------------------------------- attention explanation

_ATTENTION_EXPLAIN_SYSTEM = (
    "You are helping to interpret the attention heads of a language model. An attention head "
    "compares every token with each token before it (and with itself) and activates on the "
    "token pairs it is looking for. For each head you are shown the pairs it activates on most "
    "strongly, each inside its sequence: the earlier, attended-to token is written **like "
    "this**, the later, attending token [[like this]], and a token paired with itself "
    "[[**like this**]]. Sequences are separated by "
    f"{SEQUENCE_SEPARATOR}. Only a few strong pairs are shown; generalise from them. Describe, "
    f'in one short phrase completing "{ATTENTION_PREFIX} ...", which earlier tokens the head '
    'attends to and from which later tokens, e.g. "attends to X from Y". Do not mention the '
    "markers and do not add anything after the phrase."
)


def _attention_explain_turn(
    index: int, sequences: Sequence[tuple[Sequence[str], Sequence[TokenPair]]]
) -> str:
    shown = [mark_token_pair(tokens, pair) for tokens, pairs in sequences for pair in pairs]
    body = f"\n{SEQUENCE_SEPARATOR}\n".join(shown)
    return (
        f"Attention head {index}\nStrongly activating token pairs:\n{body}\n"
        f"Explanation of attention head {index} behavior: {ATTENTION_PREFIX}"
    )


def attention_explanation_messages(
    sequences: Sequence[tuple[Sequence[str], Sequence[TokenPair]]],
) -> list[Message]:
    """Chat messages asking for an explanation of an attention head from its top token pairs,
    given as (tokens, pairs in those tokens) per sequence."""
    messages: list[Message] = [{"role": "system", "content": _ATTENTION_EXPLAIN_SYSTEM}]
    for i, example in enumerate(ATTENTION_EXAMPLES, start=1):
        messages.append({"role": "user", "content": _attention_explain_turn(i, example.sequences)})
        messages.append({"role": "assistant", "content": f" {example.explanation}."})
    messages.append(
        {
            "role": "user",
            "content": _attention_explain_turn(len(ATTENTION_EXAMPLES) + 1, sequences),
        }
    )
    return messages


# ------------------------------------------------------------ logprob-free neuron simulation

_SIMULATE_JSON_SYSTEM = (
    "You predict how a neuron of a language model fires, given an explanation of what it "
    "detects. You receive a JSON object with the explanation (to_find), a document, and the "
    "document's tokens, each with its activation set to null. Answer with the same JSON object, "
    "every token copied exactly and in the same order, but with each activation replaced by an "
    "integer from 0 (the neuron does not fire) to 10 (it fires as strongly as it can), "
    "following the explanation. Most tokens get 0. Answer with the JSON object only."
)


def simulation_json(
    explanation: str, tokens: Sequence[str], activations: Sequence[int] | None = None
) -> str:
    """The JSON object the logprob-free simulator exchanges (activations null when None)."""
    return json.dumps(
        {
            "to_find": explanation,
            "document": "".join(tokens),
            "activations": [
                {"token": token, "activation": None if activations is None else activations[i]}
                for i, token in enumerate(tokens)
            ],
        },
        ensure_ascii=False,
    )


def logprob_free_simulation_messages(explanation: str, tokens: Sequence[str]) -> list[Message]:
    """Chat messages whose completion carries the predicted activations as JSON."""
    messages: list[Message] = [{"role": "system", "content": _SIMULATE_JSON_SYSTEM}]
    for example in NEURON_EXAMPLES:
        record = example.records[0]
        values = normalize_activations(record.activations, max_activation_of(example.records))
        messages.append(
            {"role": "user", "content": simulation_json(example.explanation, record.tokens)}
        )
        messages.append(
            {
                "role": "assistant",
                "content": simulation_json(example.explanation, record.tokens, values),
            }
        )
    messages.append({"role": "user", "content": simulation_json(explanation, tokens)})
    return messages


# ---------------------------------------------------------- logprob-based neuron simulation

_SIMULATE_LOGPROB_HEADER = (
    "Each neuron of a language model detects something in text. Given a neuron's explanation, "
    "these are its activations on each token of a text, one `token<TAB>activation` line per "
    'token, from 0 (silent) to 10 (strongest); "unknown" marks an activation still to be '
    "predicted. Most activations are 0.\n"
)


def logprob_simulation_prompt(explanation: str, tokens: Sequence[str]) -> tuple[str, list[int]]:
    """A plain-text prompt for the completions endpoint, and the character offset of each
    `unknown` in it (one per token of `tokens`, in order).

    With `echo` and `logprobs`, the endpoint returns, for the prompt token at each offset, the
    most likely tokens in its place: their probabilities over "0".."10" give the predicted
    distribution of that token's activation.
    """
    parts = [_SIMULATE_LOGPROB_HEADER]
    for i, example in enumerate(NEURON_EXAMPLES, start=1):
        parts.append(
            f"\nNeuron {i}\nExplanation of neuron {i} behavior: {NEURON_PREFIX} "
            f"{example.explanation}\nActivations:\n"
            f"{format_records(example.records, max_activation_of(example.records))}\n"
        )
    n = len(NEURON_EXAMPLES) + 1
    parts.append(
        f"\nNeuron {n}\nExplanation of neuron {n} behavior: {NEURON_PREFIX} "
        f"{explanation.strip()}\nActivations:\n<start>\n"
    )
    prompt = "".join(parts)
    offsets = []
    for token in tokens:
        prompt += display_token(token) + "\t"
        offsets.append(len(prompt))
        prompt += UNKNOWN + "\n"
    prompt += "<end>\n"
    return prompt, offsets


# ------------------------------------------------------------- attention pair simulation

_SIMULATE_PAIR_SYSTEM = (
    "You predict whether an attention head of a language model activates on a given token "
    "pair, from an explanation of what the head looks for. The head compares each token with "
    "the tokens before it (and with itself). In the sequence shown, the earlier, attended-to "
    "token of the pair is written **like this** and the later, attending token [[like this]]; "
    "a token paired with itself is written [[**like this**]]. Answer 1 if the head activates "
    "strongly on the pair and 0 if it does not. Answer with the digit only."
)


def _pair_turn(index: int, explanation: str, tokens: Sequence[str], pair: TokenPair) -> str:
    from_index, to_index = pair
    return (
        f"Attention head {index}\nExplanation: {ATTENTION_PREFIX} {explanation.strip()}\n"
        f"Sequence:\n{mark_token_pair(tokens, pair)}\n"
        f"Token pair (attended-to, attending): ({tokens[to_index]}, {tokens[from_index]})\n"
        "Does the head activate on this pair (1 or 0)?"
    )


def attention_pair_messages(
    explanation: str, tokens: Sequence[str], pair: TokenPair
) -> list[Message]:
    """Chat messages asking for a 0/1 prediction for one token pair."""
    messages: list[Message] = [{"role": "system", "content": _SIMULATE_PAIR_SYSTEM}]
    index = 1
    for example in ATTENTION_EXAMPLES:
        for sequence_index, pair_, label in example.labelled_pairs:
            example_tokens = example.sequences[sequence_index][0]
            messages.append(
                {
                    "role": "user",
                    "content": _pair_turn(index, example.explanation, example_tokens, pair_),
                }
            )
            messages.append({"role": "assistant", "content": str(label)})
            index += 1
    messages.append({"role": "user", "content": _pair_turn(index, explanation, tokens, pair)})
    return messages
