"""TransformerLens' hook names (what SAE files name) mapped to our hook points.

Our names are the same on every model family: `resid.post_emb`, and per block `blocks.{L}.` +

    resid.post_attn_ln   attention input (after its norm)       attn.q / attn.k / attn.v
    attn.qk_logits       attention scores                       attn.qk_probs
    attn.v_out           per-head z before W_O (TL hook_z)      attn.head_out (TL hook_result)
    resid.delta_attn     what attention adds to the residual    resid.post_attn
    resid.post_mlp_ln    MLP input (after its norm)             mlp.pre_act / mlp.post_act
    resid.delta_mlp      what the MLP adds to the residual      resid.post_mlp
    attn_ln.scale / mlp_ln.scale / resid.ln_f.scale   the norms' divisors

TransformerLens' `lnX.hook_normalized` is the normalized vector *before* the norm's weight and
bias, (x - mean) / scale for LayerNorm and x / rms for RMSNorm. That is not our
`resid.post_*_ln` (which includes weight and bias), so it maps to its own names
`attn_ln.normalized`, `mlp_ln.normalized` and `resid.ln_f.normalized`; a model that offers SAEs
on them must expose those hook points. `mlp.hook_in` / `mlp.hook_out` are circuit-tracer's
names for the MLP's input and output.

Two layouts change the meaning of a name (`HookConventions`): with attention and MLP in parallel
(GPT-NeoX / Pythia) there is no residual between the sublayers and the MLP reads the block's
input; with norms after the sublayers (Gemma 2) the MLP's raw output is normed before it is added
to the residual, so `mlp.hook_out` has no hook point of ours.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = ["BLOCK_HOOKS", "MODEL_HOOKS", "HookConventions", "hook_point_for", "split_layer"]


@dataclass(frozen=True)
class HookConventions:
    """The family facts a TransformerLens name's meaning depends on."""

    parallel_attn_mlp: bool = False  # GPT-NeoX / Pythia, GPT-J
    norms_after_sublayers: bool = False  # Gemma 2: a norm on each sublayer's output
    # RMSNorm families: TransformerLens ignores center_writing_weights for them (tl_processing)
    rms_norm: bool = False


# TransformerLens name inside block L (after "blocks.L.") -> our location inside block L
BLOCK_HOOKS: dict[str, str] = {
    "hook_resid_mid": "resid.post_attn",
    "hook_resid_post": "resid.post_mlp",
    "hook_attn_out": "resid.delta_attn",
    "hook_mlp_out": "resid.delta_mlp",
    "hook_mlp_in": "resid.post_attn",  # TL: the residual the MLP's norm reads
    "attn.hook_q": "attn.q",
    "attn.hook_k": "attn.k",
    "attn.hook_v": "attn.v",
    "attn.hook_z": "attn.v_out",
    "attn.hook_attn_scores": "attn.qk_logits",
    "attn.hook_pattern": "attn.qk_probs",
    "attn.hook_result": "attn.head_out",
    "ln1.hook_scale": "attn_ln.scale",
    "ln1.hook_normalized": "attn_ln.normalized",
    "ln2.hook_scale": "mlp_ln.scale",
    "ln2.hook_normalized": "mlp_ln.normalized",
    "mlp.hook_pre": "mlp.pre_act",
    "mlp.hook_post": "mlp.post_act",
    "mlp.hook_in": "resid.post_mlp_ln",  # circuit-tracer: the MLP's input
    "mlp.hook_out": "resid.delta_mlp",  # circuit-tracer: the MLP's output
}
# hook_resid_pre is handled apart: it is the previous block's output
_RESID_PRE = "hook_resid_pre"
# TransformerLens names outside the blocks -> ours
MODEL_HOOKS: dict[str, str] = {
    "ln_final.hook_scale": "resid.ln_f.scale",
    "ln_final.hook_normalized": "resid.ln_f.normalized",
}
_BLOCK_NAME = re.compile(r"^blocks\.(\d+)\.(.+)$")


def split_layer(name: str) -> tuple[int | None, str]:
    """`blocks.8.hook_resid_pre` -> (8, "hook_resid_pre"); a name outside blocks -> (None, name)."""
    m = _BLOCK_NAME.match(name)
    return (int(m.group(1)), m.group(2)) if m else (None, name)


def _unknown(name: str) -> ValueError:
    known = ", ".join([_RESID_PRE, *BLOCK_HOOKS])
    return ValueError(
        f"unknown TransformerLens hook name {name!r}; known: 'blocks.L.' + one of {known}; "
        f"or {', '.join(MODEL_HOOKS)}"
    )


def hook_point_for(tl_name: str, conventions: HookConventions | None = None) -> str:
    """Our hook point for TransformerLens hook name `tl_name`, e.g. `blocks.8.hook_resid_pre` ->
    `blocks.7.resid.post_mlp` (`resid.post_emb` for block 0). Raises ValueError (one line,
    listing the known names) for names we have no hook point for."""
    conv = conventions or HookConventions()
    layer, rest = split_layer(tl_name)
    if layer is None:
        if rest in MODEL_HOOKS:
            return MODEL_HOOKS[rest]
        raise _unknown(tl_name)
    if rest == _RESID_PRE or (rest == "hook_mlp_in" and conv.parallel_attn_mlp):
        return "resid.post_emb" if layer == 0 else f"blocks.{layer - 1}.resid.post_mlp"
    if rest not in BLOCK_HOOKS:
        raise _unknown(tl_name)
    if rest == "hook_resid_mid" and conv.parallel_attn_mlp:
        raise ValueError(
            f"{tl_name}: a model with attention and MLP in parallel has no residual between them"
        )
    if rest == "mlp.hook_out" and conv.norms_after_sublayers:
        raise ValueError(
            f"{tl_name}: with a norm after the MLP, its raw output is not what is added to the "
            "residual (hook_mlp_out is), and no hook point carries it"
        )
    return f"blocks.{layer}.{BLOCK_HOOKS[rest]}"
