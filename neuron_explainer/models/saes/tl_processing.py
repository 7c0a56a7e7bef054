"""What TransformerLens' weight processing did to the activations an SAE was trained on.

SAELens trains on `HookedTransformer.from_pretrained_no_processing(**model_from_pretrained_kwargs)`
(older releases on `from_pretrained`, whose defaults process; the release table records that as
a config override). Of the processing options, these change activations at hook points:

- `center_writing_weights` (LayerNorm models only; TransformerLens skips it for RMSNorm): every
  write into the residual stream has its mean over d_model removed, so residual-stream
  activations and the attention / MLP outputs are ours minus their mean. Reproduced exactly by
  centering the SAE's input (`SparseCoder.center_input`).
- `fold_value_biases`: z (hook_z) and v lose the value bias, a model parameter the SAE file does
  not carry: refused for SAEs on those hooks.
- `refactor_factored_attn_matrices`: changes q, k, v and z: refused for SAEs on attention hooks.

`fold_ln` and `center_unembed` change no activation an SAE reads (`lnX.hook_normalized` is taken
before the norm's weights either way).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from neuron_explainer.models.saes.hook_names import HookConventions, split_layer

__all__ = ["CENTERED_HOOKS", "centers_input"]

# hook names (after "blocks.L.") whose activations center_writing_weights centers
CENTERED_HOOKS = (
    "hook_resid_pre",
    "hook_resid_mid",
    "hook_resid_post",
    "hook_attn_out",
    "hook_mlp_out",
    "hook_mlp_in",
    "mlp.hook_out",
)
_VALUE_HOOKS = ("attn.hook_z", "attn.hook_v", "attn.hook_result")


def centers_input(
    kwargs: Mapping[str, Any] | None,
    hook_in: str | None,
    conventions: HookConventions,
    *,
    source: str,
) -> bool:
    """Whether the SAE's input must be centered to match what it was trained on; raises a
    one-line ValueError for processing we cannot reproduce."""
    kwargs = kwargs or {}
    if not isinstance(kwargs, Mapping):
        raise ValueError(f"{source}: model_from_pretrained_kwargs must be a mapping, got {kwargs!r}")
    _, rest = split_layer(hook_in or "")
    if kwargs.get("fold_value_biases") and rest in _VALUE_HOOKS:
        raise ValueError(
            f"{source}: trained on {hook_in} with fold_value_biases=True, i.e. without the value "
            "bias, which is a model parameter not in the SAE file; not supported"
        )
    if kwargs.get("refactor_factored_attn_matrices") and rest.startswith("attn."):
        raise ValueError(
            f"{source}: trained on {hook_in} with refactor_factored_attn_matrices=True; not supported"
        )
    return bool(kwargs.get("center_writing_weights")) and not conventions.rms_norm and rest in CENTERED_HOOKS
