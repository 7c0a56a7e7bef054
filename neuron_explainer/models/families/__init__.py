"""Model families: how a Hugging Face checkpoint of each becomes our `Transformer`.

A family is one small module with two functions:

- `config(hf: Mapping) -> TransformerConfig`: read the checkpoint's config.json, refusing with a
  one-line `UnsupportedModel` whatever it cannot compute exactly;
- `weights(cfg, names) -> dict[our parameter name, Source]`: where each of our parameters comes
  from in the checkpoint (`names` are the tensor names it holds, for optional ones such as a
  tied lm_head).

`FAMILIES` maps Hugging Face `model_type` values to those modules. Adding a family means adding a
module here; nothing else in the code base knows the families' parameter names.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import ModuleType
from typing import Any

from torch import Tensor


class UnsupportedModel(ValueError):
    """A checkpoint asks for something we do not compute (exactly); the message is one line."""


@dataclass(frozen=True)
class Source:
    """One of our parameters, made by `fn` from the checkpoint tensors `keys` (in order)."""

    keys: tuple[str, ...]
    fn: Callable[..., Tensor] | None = None

    def build(self, *tensors: Tensor) -> Tensor:
        return self.fn(*tensors) if self.fn is not None else tensors[0]


def same(key: str) -> Source:
    return Source((key,))


def transposed(key: str) -> Source:
    return Source((key,), lambda w: w.t())


def require(hf: Mapping[str, Any], key: str, where: str = "config.json") -> Any:
    if key not in hf or hf[key] is None:
        raise UnsupportedModel(f"{where} has no {key!r}: the config is incomplete")
    return hf[key]


def refuse_if(condition: bool, message: str) -> None:
    if condition:
        raise UnsupportedModel(message)


def _families() -> dict[str, ModuleType]:
    from neuron_explainer.models.families import gemma2, gpt2, llama, neox, qwen

    table: dict[str, ModuleType] = {}
    for module in (gpt2, neox, llama, qwen, gemma2):
        for model_type in module.MODEL_TYPES:
            table[model_type] = module
    return table


def family_for(model_type: str) -> ModuleType:
    table = _families()
    if model_type not in table:
        raise UnsupportedModel(
            f"Hugging Face model_type {model_type!r} is not supported; supported: "
            f"{', '.join(sorted(table))}"
        )
    return table[model_type]


def supported_model_types() -> list[str]:
    return sorted(_families())
