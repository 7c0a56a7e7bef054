"""The kinds of autoencoder latents the debugger knows: one entry each, and every table, route
and lookup loops over them (a new kind is one more entry here, plus its write in
`Weights.latent_write` if it reads something new)."""

from __future__ import annotations

from dataclasses import dataclass

MLP_LATENTS = "mlp_autoencoder.latents"
ATTN_LATENTS = "attn_autoencoder.latents"
RESID_LATENTS = "resid_autoencoder.latents"  # community SAEs on the residual stream
TRANSCODER_LATENTS = "transcoder.latents"  # transcoders: MLP input -> MLP output


@dataclass(frozen=True)
class LatentKind:
    """hook: the latents' hook location (`blocks.{layer}.{hook}`); node_type: the API's node
    type; prefix: of its online derived scalars (`{prefix}_latent`, `{prefix}_write_norm`, ...);
    location_type: the API's activation location of the latents; offline: the derived scalar of
    its latents computed post hoc from the autoencoder's input (and `{offline_prefix}_write_norm`);
    label: for messages; seed: one of the seed's two kinds, which its generic latent names
    (online_autoencoder_latent, ...) stand for."""

    hook: str
    node_type: str
    prefix: str
    location_type: str
    offline: str
    offline_prefix: str
    label: str
    seed: bool = True


LATENT_KINDS: tuple[LatentKind, ...] = (
    LatentKind(
        MLP_LATENTS, "mlp_autoencoder_latent", "online_mlp_autoencoder",
        "online_mlp_autoencoder_latent", "mlp_autoencoder_latent", "mlp_autoencoder", "MLP",
    ),
    LatentKind(
        ATTN_LATENTS, "attention_autoencoder_latent", "online_attention_autoencoder",
        "online_attention_autoencoder_latent", "attention_autoencoder_latent", "attention_autoencoder",
        "attention",
    ),
    LatentKind(
        RESID_LATENTS, "residual_autoencoder_latent", "online_residual_autoencoder",
        "online_residual_autoencoder_latent", "residual_autoencoder_latent", "residual_autoencoder",
        "residual-stream", seed=False,
    ),
    LatentKind(
        TRANSCODER_LATENTS, "transcoder_latent", "online_transcoder", "online_transcoder_latent",
        "transcoder_latent", "transcoder", "transcoder", seed=False,
    ),
)
BY_HOOK = {k.hook: k for k in LATENT_KINDS}
BY_NODE_TYPE = {k.node_type: k for k in LATENT_KINDS}
BY_LOCATION_TYPE = {k.location_type: k for k in LATENT_KINDS}
GENERIC_NODE_TYPE = "autoencoder_latent"  # the seed's node type of its generic latent scalars
GENERIC_LOCATION_TYPE = "online_autoencoder_latent"
