"""What an attribution graph explains: its logit nodes.

A logit node is a fixed combination of the last position's logits, before any final soft-cap
(the soft-cap is not linear; the graph explains what goes into it). Three kinds of target:

- `TopLogits` (circuit-tracer's default): the most likely next tokens, as many as it takes to
  reach `desired_logit_prob` of the probability, at most `max_n_logits`; each node is its
  token's logit minus the mean logit over the vocabulary (softmax does not see a shift), and
  weighs its probability in the influence that prunes the graph;
- `Logits`: those tokens' logits, demeaned and weighted the same way;
- `LogitDifference`: the debugger's objective, mean logit of the targets minus that of the
  distractors (minus the vocabulary's mean logit when there are none); one node of weight 1.

A node's gradient with respect to the final residual stream (the final norm's divisor frozen)
comes from the model interface's `logit_lens`, so nothing here names the unembedding.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from neuron_explainer.models.transformer import Transformer

__all__ = ["LogitDifference", "LogitNode", "Logits", "Target", "TopLogits", "logit_nodes", "residual_directions"]


@dataclass(frozen=True)
class TopLogits:
    max_n_logits: int = 10
    desired_logit_prob: float = 0.95

    def __post_init__(self) -> None:
        if self.max_n_logits < 1:
            raise ValueError("max_n_logits must be at least 1")
        if not 0.0 < self.desired_logit_prob <= 1.0:
            raise ValueError("desired_logit_prob must be in (0, 1]")


@dataclass(frozen=True)
class Logits:
    tokens: tuple[int, ...]

    def __post_init__(self) -> None:
        if not self.tokens:
            raise ValueError("Logits needs at least one token")


@dataclass(frozen=True)
class LogitDifference:
    targets: tuple[int, ...]
    distractors: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        if not self.targets:
            raise ValueError("LogitDifference needs at least one target token")


Target = TopLogits | Logits | LogitDifference


@dataclass
class LogitNode:
    """One output node. `vocab_index` is its token's id, or n_vocab + i for a combination of
    several tokens (circuit-tracer's virtual indices). `direction` (n_vocab,) is the combination
    of logits it stands for; `value` that combination of this prompt's pre-soft-cap logits;
    `weight` its weight in influence (its probability; 1 for a logit difference)."""

    label: str
    vocab_index: int
    weight: float
    probability: float | None
    direction: Tensor
    value: float


def logit_nodes(
    target: Target, model: Transformer, last_logits: Tensor, token_string: Callable[[int], str]
) -> list[LogitNode]:
    """The logit nodes of `target` for the last position's logits `last_logits` (n_vocab,),
    as the model outputs them (after any final soft-cap)."""
    logits = last_logits.float()
    n_vocab = logits.shape[0]
    probs = torch.softmax(logits, -1)
    pre_cap = _before_softcap(logits, model.cfg.final_softcap)
    for t in _tokens_of(target):
        if not 0 <= t < n_vocab:
            raise ValueError(f"token id {t} is not in the vocabulary of {n_vocab}")

    def single(token: int) -> LogitNode:
        direction = torch.full_like(logits, -1.0 / n_vocab)
        direction[token] += 1.0
        p = float(probs[token])
        return LogitNode(token_string(token), token, p, p, direction, float(direction @ pre_cap))

    if isinstance(target, TopLogits):
        top_p, top = probs.topk(min(target.max_n_logits, n_vocab))
        # the first rank at which the cumulative probability reaches the desired one, included
        n = int(torch.searchsorted(top_p.cumsum(0), torch.tensor(target.desired_logit_prob))) + 1
        return [single(int(t)) for t in top[:n]]
    if isinstance(target, Logits):
        return [single(t) for t in target.tokens]
    direction = torch.zeros_like(logits)
    direction[list(target.targets)] += 1.0 / len(target.targets)
    if target.distractors:
        direction[list(target.distractors)] -= 1.0 / len(target.distractors)
        label = f"{_joined(target.targets, token_string)} − {_joined(target.distractors, token_string)}"
    else:
        direction -= 1.0 / n_vocab
        label = f"{_joined(target.targets, token_string)} − mean"
    return [LogitNode(label, n_vocab, 1.0, None, direction, float(direction @ pre_cap))]


def residual_directions(model: Transformer, directions: Tensor) -> Tensor:
    """(k, d_model): the gradient of each combination of logits (k, n_vocab) with respect to the
    final residual stream, times the final norm's divisor (divide by it at a position)."""
    writes = torch.zeros(directions.shape[0], model.cfg.d_model, device=model.device, requires_grad=True)
    with torch.enable_grad():
        lens = model.logit_lens(writes)
        (grad,) = torch.autograd.grad(lens, writes, directions.to(lens.device, lens.dtype))
    return grad


def _tokens_of(target: Target) -> Sequence[int]:
    if isinstance(target, Logits):
        return target.tokens
    if isinstance(target, LogitDifference):
        return (*target.targets, *target.distractors)
    return ()


def _joined(tokens: Sequence[int], token_string: Callable[[int], str]) -> str:
    return "+".join(repr(token_string(t)) for t in tokens)


def _before_softcap(logits: Tensor, cap: float | None) -> Tensor:
    """Undo cap * tanh(x / cap) (exact but for logits at the very edge of the cap)."""
    if cap is None:
        return logits
    bound = 1.0 - 1e-7
    return cap * torch.atanh((logits / cap).clamp(-bound, bound))

