"""Prompts as circuit-tracer attributes them: a start token at position 0.

The first position of a transformer is unlike the others (huge norms, many active latents,
attention sinks); circuit-tracer puts a special token there and leaves position 0 out of the
graph. `graph_prompt` does the same with our tokenizers: the model's own prompt convention
(Llama's and Gemma's <bos>), and when the prompt does not start with a start token, the
tokenizer's BOS, or for tokenizers without one its end-of-text token (<|endoftext|>, GPT-2's
document separator, which the debugger's prompts start with).
"""

from __future__ import annotations

from neuron_explainer.models.tokenizer import Tokenizer

__all__ = ["graph_prompt", "single_token"]


def graph_prompt(tokenizer: Tokenizer, text: str, prepend_bos: bool = True) -> tuple[list[int], bool]:
    """(token ids, whether position 0 is a start token): pass the flag as `attribute`'s
    `exclude_first_position`, so that a real first token is never dropped."""
    ids = tokenizer.encode_prompt(text)
    starts = [t for t in (tokenizer.bos_token_id, tokenizer.eos_token_id) if t is not None]
    if prepend_bos and starts and (not ids or ids[0] not in starts):
        ids = [starts[0], *ids]
    return ids, bool(ids) and ids[0] in starts


def single_token(tokenizer: Tokenizer, text: str) -> int:
    """The id of `text` if it is one token; ValueError otherwise."""
    ids = tokenizer.encode(text)
    if len(ids) != 1:
        raise ValueError(f"{text!r} is {len(ids)} tokens, not one (mind the leading space, e.g. ' Mary')")
    return ids[0]
