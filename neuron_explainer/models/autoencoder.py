"""Sparse autoencoders in OpenAI's published layout, a registry of published sets, and attaching
them to our hooked `Transformer`.

An autoencoder reads one activation `x` (e.g. `mlp.post_act` of one layer) and writes it as a
sparse sum of learned directions:

    latents = act(encoder(x - pre_bias) + latent_bias)
    recon   = decoder(latents) + pre_bias

with act = ReLU, TopK(k) (keep the k largest pre-activations, then ReLU) or Identity.

File layout (a `torch.save`d dict, as published at
https://openaipublic.blob.core.windows.net/sparse-autoencoder/gpt2-small/<folder>/autoencoders/<layer>.pt):

    pre_bias                      (n_inputs,)
    latent_bias                   (n_latents,)
    encoder.weight                (n_latents, n_inputs)
    decoder.weight                (n_inputs, n_latents)
    stats_last_nonzero            (n_latents,) long: training steps since each latent last fired
    latents_activation_frequency  (n_latents,) optional
    latents_mean_square           (n_latents,) optional
    activation                    "ReLU" | "TopK" | "Identity" (absent means "ReLU")
    activation_state_dict         {} ; for TopK {"k": int, "postact_fn": "ReLU" | "Identity"}

`SparseAutoencoder.from_state_dict` / `state_dict_openai` read and write exactly this layout
(unknown extra entries are kept and written back), so autoencoders we train ourselves are saved
in the same format (`save_autoencoder`).

A *set* of autoencoders is one per layer, all reading the same hook location. Published gpt2-small
sets are in `AUTOENCODERS`; a local (or http) folder works too, laid out as

    <folder>/autoencoder.json   {"reads": "resid.delta_mlp", "n_layers": 12,
                                 "kind": "mlp",           # optional, derived from "reads"
                                 "n_latents": 32768,      # optional, checked when loading
                                 "model": "gpt2-small"}   # optional, informational
    <folder>/0.pt ... <folder>/<n_layers - 1>.pt

(`save_autoencoder_set` writes one). `attach` routes a model's activations through a set; the
latents then appear as hook points `blocks.{layer}.mlp_autoencoder.latents` (kind "mlp") or
`blocks.{layer}.attn_autoencoder.latents` (kind "attention").
"""

from __future__ import annotations

import io
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from neuron_explainer import file_utils
from neuron_explainer.models.transformer import BLOCK_LOCATIONS, Transformer, hook_name

__all__ = [
    "AUTOENCODERS",
    "AUTOENCODER_JSON",
    "DEAD_FREQUENCY_THRESHOLD",
    "AutoencoderSpec",
    "SparseAutoencoder",
    "attach",
    "dead_latent_mask",
    "drop_dead_latents",
    "latents_hook_name",
    "load_autoencoder",
    "load_autoencoder_set",
    "register_autoencoder",
    "resolve_autoencoder_spec",
    "save_autoencoder",
    "save_autoencoder_set",
    "spec_from_folder",
]

Activation = Literal["relu", "topk", "identity"]
Kind = Literal["mlp", "attention"]

# our activation name <-> the class name stored in the published files
_TO_OPENAI = {"relu": "ReLU", "topk": "TopK", "identity": "Identity"}
_FROM_OPENAI = {v: k for k, v in _TO_OPENAI.items()}
_POSTACT_FNS = ("ReLU", "Identity")  # allowed TopK post-activations

# The seed (autoencoder_context.py) calls a latent dead when its recorded activation frequency is
# below this.
DEAD_FREQUENCY_THRESHOLD = 1e-8

_REQUIRED_KEYS = ("pre_bias", "latent_bias", "encoder.weight", "decoder.weight")
_STAT_KEYS = ("stats_last_nonzero", "latents_activation_frequency", "latents_mean_square")
_ACTIVATION_KEYS = ("activation", "activation_state_dict")


class SparseAutoencoder(nn.Module):
    """A sparse autoencoder; see the module docstring for the maths and the file layout.

    Inputs may have any leading dimensions: encode maps (..., n_inputs) -> (..., n_latents).
    """

    stats_last_nonzero: Tensor
    latents_activation_frequency: Tensor | None
    latents_mean_square: Tensor | None

    def __init__(
        self,
        n_latents: int,
        n_inputs: int,
        activation: Activation = "relu",
        k: int | None = None,
        topk_postact: Literal["relu", "identity"] = "relu",
        *,
        init: bool = True,
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
    ) -> None:
        """init=False leaves the weights uninitialised (for loading, which replaces them)."""
        super().__init__()
        if activation not in _TO_OPENAI:
            raise ValueError(f"unknown activation {activation!r}; use one of {sorted(_TO_OPENAI)}")
        if activation == "topk" and (k is None or not 1 <= k <= n_latents):
            raise ValueError(f"topk activation needs 1 <= k <= n_latents={n_latents}, got k={k}")
        if topk_postact not in ("relu", "identity"):
            raise ValueError(f"unknown topk_postact {topk_postact!r}; use 'relu' or 'identity'")
        self.activation: Activation = activation
        self.k = k if activation == "topk" else None
        self.topk_postact = topk_postact
        # entries of a loaded state dict we don't interpret; written back by state_dict_openai
        self.extra: dict[str, Any] = {}
        kw: dict[str, Any] = {"dtype": dtype, "device": device}
        self.pre_bias = nn.Parameter(torch.zeros(n_inputs, **kw))
        self.latent_bias = nn.Parameter(torch.zeros(n_latents, **kw))
        # skip_init: no wasted random init of what reset_parameters or loading overwrites
        lin: dict[str, Any] = {"bias": False, "dtype": dtype, "device": device or "cpu"}
        self.encoder = nn.utils.skip_init(nn.Linear, n_inputs, n_latents, **lin)
        self.decoder = nn.utils.skip_init(nn.Linear, n_latents, n_inputs, **lin)
        self.register_buffer(
            "stats_last_nonzero", torch.zeros(n_latents, dtype=torch.long, device=device)
        )
        self.register_buffer("latents_activation_frequency", None)
        self.register_buffer("latents_mean_square", None)
        if init:
            self.reset_parameters()

    def reset_parameters(self, seed: int | None = None) -> None:
        """Random init for training: encoder rows ~ N(0, 1/n_inputs), decoder = encoder^T with
        unit-norm columns, zero biases."""
        gen = torch.Generator(device=self.device)
        if seed is not None:
            gen.manual_seed(seed)
        else:
            gen.seed()
        with torch.no_grad():
            w = (
                torch.randn(self.encoder.weight.shape, generator=gen, device=self.device)
                / self.n_inputs**0.5
            )
            self.encoder.weight.copy_(w)
            self.decoder.weight.copy_((w / w.norm(dim=1, keepdim=True).clamp(min=1e-8)).T)
            self.pre_bias.zero_()
            self.latent_bias.zero_()

    # ------------------------------------------------------------ properties

    @property
    def n_latents(self) -> int:
        return int(self.latent_bias.shape[0])

    @property
    def n_inputs(self) -> int:
        return int(self.pre_bias.shape[0])

    @property
    def dtype(self) -> torch.dtype:
        return self.encoder.weight.dtype

    @property
    def device(self) -> torch.device:
        return self.encoder.weight.device

    def extra_repr(self) -> str:
        act = (
            f"topk(k={self.k}, {self.topk_postact})"
            if self.activation == "topk"
            else self.activation
        )
        return f"n_latents={self.n_latents}, n_inputs={self.n_inputs}, activation={act}"

    # ---------------------------------------------------------------- maths

    def encode_pre_act(self, x: Tensor) -> Tensor:
        return F.linear(x - self.pre_bias, self.encoder.weight, self.latent_bias)

    def encode(self, x: Tensor) -> Tensor:
        pre = self.encode_pre_act(x)
        if self.activation == "relu":
            return F.relu(pre)
        if self.activation == "identity":
            return pre
        assert self.k is not None
        top = pre.topk(self.k, dim=-1)
        values = F.relu(top.values) if self.topk_postact == "relu" else top.values
        return torch.zeros_like(pre).scatter(-1, top.indices, values)

    def decode(self, latents: Tensor, x: Tensor | None = None) -> Tensor:
        """`x` (the encoded input) is not needed here; it is accepted as the community's sparse
        coders take it."""
        return F.linear(latents, self.decoder.weight) + self.pre_bias

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """(latents, reconstruction)."""
        latents = self.encode(x)
        return latents, self.decode(latents)

    def affine_read_directions(self) -> Tensor:
        """(n_latents, n_inputs): latent i's pre-activation is row i . x plus a constant."""
        return self.encoder.weight

    def write_directions(self) -> Tensor:
        """(n_latents, n_inputs): what latent i adds to the reconstruction per unit of it."""
        return self.decoder.weight.T

    def decoder_directions(self) -> Tensor:
        """(n_latents, n_inputs): row i is what latent i writes per unit of activation (a view of
        the decoder weight, not a copy)."""
        return self.decoder.weight.T

    @torch.no_grad()
    def update_stats(self, latents: Tensor) -> None:
        """Training bookkeeping, as in the published files: one step passes; latents that fired
        anywhere in `latents` (..., n_latents) reset their count of steps since last nonzero."""
        fired = (latents != 0).reshape(-1, self.n_latents).any(dim=0)
        self.stats_last_nonzero.masked_fill_(fired, 0)
        self.stats_last_nonzero += 1

    # ----------------------------------------------------------- state dicts

    @classmethod
    def from_state_dict(
        cls, sd: Mapping[str, Any], *, source: str = "state dict"
    ) -> SparseAutoencoder:
        """Build from the published layout. The tensors are used as they are (no copy), so the
        result shares storage with `sd`. Raises ValueError (one line, naming `source`)."""

        def bad(problem: str) -> ValueError:
            return ValueError(" ".join(f"{source} is not a sparse autoencoder: {problem}".split()))

        if not isinstance(sd, Mapping):
            raise bad(f"expected a dict of tensors, got {type(sd).__name__}")
        missing = [key for key in _REQUIRED_KEYS if key not in sd]
        if missing:
            raise bad(f"missing keys {missing} (has {sorted(map(str, sd))[:10]})")
        for key in (*_REQUIRED_KEYS, *_STAT_KEYS):
            if key in sd and not isinstance(sd[key], Tensor):
                raise bad(f"{key} is a {type(sd[key]).__name__}, not a tensor")
        enc = sd["encoder.weight"]
        if enc.ndim != 2:
            raise bad(
                f"encoder.weight has shape {tuple(enc.shape)}, expected (n_latents, n_inputs)"
            )
        n_latents, n_inputs = enc.shape
        expected = {
            "pre_bias": (n_inputs,),
            "latent_bias": (n_latents,),
            "decoder.weight": (n_inputs, n_latents),
            **{key: (n_latents,) for key in _STAT_KEYS},
        }
        for key, shape in expected.items():
            if key in sd and tuple(sd[key].shape) != shape:
                raise bad(
                    f"{key} has shape {tuple(sd[key].shape)}, expected {shape} "
                    f"(encoder.weight is {tuple(enc.shape)} = (n_latents, n_inputs))"
                )
        dtypes = {key: sd[key].dtype for key in _REQUIRED_KEYS}
        if len(set(dtypes.values())) != 1 or not enc.is_floating_point():
            raise bad(f"weights must share one floating dtype, got {dtypes}")

        act_name = sd.get("activation", "ReLU")
        if act_name not in _FROM_OPENAI:
            raise bad(f"unknown activation {act_name!r}, expected one of {sorted(_FROM_OPENAI)}")
        act_sd = sd.get("activation_state_dict", {})
        if not isinstance(act_sd, Mapping):
            raise bad(f"activation_state_dict is a {type(act_sd).__name__}, expected a dict")
        k: int | None = None
        postact = "ReLU"
        if act_name == "TopK":
            k, postact = act_sd.get("k"), act_sd.get("postact_fn", "ReLU")
            if not isinstance(k, int) or not 1 <= k <= n_latents:
                raise bad(f"TopK needs an int k in [1, {n_latents}], got {k!r}")
            if postact not in _POSTACT_FNS:
                raise bad(f"unknown TopK postact_fn {postact!r}, expected one of {_POSTACT_FNS}")

        ae = cls(
            n_latents,
            n_inputs,
            _FROM_OPENAI[act_name],  # type: ignore[arg-type]
            k=k,
            topk_postact="relu" if postact == "ReLU" else "identity",
            init=False,
            dtype=enc.dtype,
            device=enc.device,
        )
        ae.pre_bias = nn.Parameter(sd["pre_bias"])
        ae.latent_bias = nn.Parameter(sd["latent_bias"])
        ae.encoder.weight = nn.Parameter(enc)
        ae.decoder.weight = nn.Parameter(sd["decoder.weight"])
        if "stats_last_nonzero" in sd:
            ae.stats_last_nonzero = sd["stats_last_nonzero"]
        ae.latents_activation_frequency = sd.get("latents_activation_frequency")
        ae.latents_mean_square = sd.get("latents_mean_square")
        known = {*_REQUIRED_KEYS, *_STAT_KEYS, *_ACTIVATION_KEYS}
        ae.extra = {key: value for key, value in sd.items() if key not in known}
        return ae

    def state_dict_openai(self) -> dict[str, Any]:
        """The published layout (tensors detached, sharing storage with the module); always
        includes `activation` and `activation_state_dict`, and the optional statistics when
        present. `torch.save` it, or use `save_autoencoder`."""
        sd: dict[str, Any] = {
            "pre_bias": self.pre_bias.detach(),
            "latent_bias": self.latent_bias.detach(),
            "stats_last_nonzero": self.stats_last_nonzero,
        }
        for key in _STAT_KEYS[1:]:
            value = getattr(self, key)
            if value is not None:
                sd[key] = value
        sd["encoder.weight"] = self.encoder.weight.detach()
        sd["decoder.weight"] = self.decoder.weight.detach()
        sd["activation"] = _TO_OPENAI[self.activation]
        sd["activation_state_dict"] = (
            {"k": self.k, "postact_fn": _TO_OPENAI[self.topk_postact]}
            if self.activation == "topk"
            else {}
        )
        sd.update(self.extra)
        return sd


# ------------------------------------------------------------------- files


def load_autoencoder(
    location: str | os.PathLike[str],
    *,
    device: torch.device | str | None = None,
    hint: str | None = None,
    dtype: torch.dtype | None = torch.float32,
) -> SparseAutoencoder:
    """Load one autoencoder from a local `.pt` file or an http(s) URL (downloaded once, then
    served from the cache), its weights cast to `dtype` (None keeps the file's: the demo's are
    stored in float16). Its parameters are frozen (requires_grad False): gradients still flow
    *through* it. Raises file_utils.FetchError or ValueError with a one-line message."""
    path = file_utils.fetch(location, hint=hint)
    try:
        sd = torch.load(path, map_location=device or "cpu", weights_only=True)
    except Exception as e:
        detail = " ".join(str(e).split())[:200]
        raise ValueError(
            f"{location} is not a torch-saved autoencoder state dict ({type(e).__name__}: {detail})"
        ) from e
    ae = SparseAutoencoder.from_state_dict(sd, source=str(location))
    if dtype is not None:
        ae = ae.to(dtype)
    ae.requires_grad_(False)
    return ae


def save_autoencoder(ae: SparseAutoencoder, path: str | os.PathLike[str]) -> None:
    """Save in the published layout (atomically: no half-written file on failure)."""
    buf = io.BytesIO()
    torch.save(ae.state_dict_openai(), buf)
    file_utils.atomic_write_bytes(path, buf.getvalue())


# ------------------------------------------------------------ dead latents


def dead_latent_mask(
    ae: SparseAutoencoder,
    threshold: float = DEAD_FREQUENCY_THRESHOLD,
    *,
    max_steps_since_nonzero: int | None = None,
) -> Tensor:
    """(n_latents,) bools, True for dead latents.

    With `latents_activation_frequency` in the file (the seed's criterion): frequency < threshold.
    Without it, `stats_last_nonzero > max_steps_since_nonzero` when that is given; otherwise no
    latent is considered dead.
    """
    freq = ae.latents_activation_frequency
    if freq is not None:
        if bool((freq == 0).all()):
            raise ValueError("latents_activation_frequency is all zeros: every latent looks dead")
        return freq < threshold
    if max_steps_since_nonzero is not None:
        return ae.stats_last_nonzero > max_steps_since_nonzero
    return torch.zeros(ae.n_latents, dtype=torch.bool, device=ae.device)


def drop_dead_latents(
    ae: SparseAutoencoder,
    threshold: float = DEAD_FREQUENCY_THRESHOLD,
    *,
    max_steps_since_nonzero: int | None = None,
) -> tuple[SparseAutoencoder, Tensor]:
    """A new autoencoder with only the live latents (see `dead_latent_mask`), and a long tensor
    `kept` with kept[new_index] = original latent index. For inputs on which the dead latents are
    zero, `new.encode(x) == ae.encode(x)[..., kept]` and the reconstructions agree."""
    kept = ~dead_latent_mask(ae, threshold, max_steps_since_nonzero=max_steps_since_nonzero)
    kept = kept.nonzero().squeeze(-1)
    if kept.numel() == 0:
        raise ValueError("every latent is dead; nothing to keep")
    k = min(ae.k, kept.numel()) if ae.k is not None else None
    new = SparseAutoencoder(
        kept.numel(),
        ae.n_inputs,
        ae.activation,
        k=k,
        topk_postact=ae.topk_postact,
        init=False,
        dtype=ae.dtype,
        device=ae.device,
    )
    with torch.no_grad():
        new.pre_bias.copy_(ae.pre_bias)
        new.latent_bias.copy_(ae.latent_bias[kept])
        new.encoder.weight.copy_(ae.encoder.weight[kept])
        new.decoder.weight.copy_(ae.decoder.weight[:, kept])
    new.stats_last_nonzero = ae.stats_last_nonzero[kept].clone()
    for key in _STAT_KEYS[1:]:
        value = getattr(ae, key)
        setattr(new, key, None if value is None else value[kept].clone())
    new.extra = dict(ae.extra)
    new.requires_grad_(ae.encoder.weight.requires_grad)
    return new, kept


# ---------------------------------------------------------------- registry

MLP_LATENTS = "mlp_autoencoder.latents"
ATTN_LATENTS = "attn_autoencoder.latents"
AUTOENCODER_JSON = "autoencoder.json"
_SPEC_FIELDS = ("reads", "kind", "n_layers", "n_latents", "model")


def latents_hook_name(kind: Kind, layer: int) -> str:
    """`blocks.{layer}.mlp_autoencoder.latents` or `blocks.{layer}.attn_autoencoder.latents`."""
    return hook_name(MLP_LATENTS if kind == "mlp" else ATTN_LATENTS, layer)


def _default_kind(reads: str) -> Kind | None:
    if reads.startswith("mlp.") or reads == "resid.delta_mlp":
        return "mlp"
    if reads.startswith("attn.") or reads == "resid.delta_attn":
        return "attention"
    return None


@dataclass(frozen=True)
class AutoencoderSpec:
    """One autoencoder per layer, all reading hook location `reads` (e.g. `mlp.post_act`);
    `location` is the folder (URL or local path) holding `<layer>.pt`."""

    reads: str
    kind: Kind
    location: str
    n_layers: int
    n_latents: int | None = None  # when known; checked on load
    model: str | None = None  # the subject model, e.g. "gpt2-small" (informational)
    # folder of the seed's collated activation datasets for these latents, when published
    datasets_location: str | None = None

    def __post_init__(self) -> None:
        if self.reads not in BLOCK_LOCATIONS:
            raise ValueError(
                f"autoencoder reads unknown hook location {self.reads!r}; use one of {list(BLOCK_LOCATIONS)}"
            )
        if self.kind not in ("mlp", "attention"):
            raise ValueError(f"autoencoder kind must be 'mlp' or 'attention', got {self.kind!r}")
        if self.n_layers < 1:
            raise ValueError(f"n_layers must be positive, got {self.n_layers}")

    def url_for_layer(self, layer: int) -> str:
        """Location (URL or local path) of layer `layer`'s `.pt` file."""
        if not 0 <= layer < self.n_layers:
            raise ValueError(f"layer {layer} out of range for {self.n_layers} layers")
        return file_utils.join(self.location, f"{layer}.pt")

    def latents_hook_name(self, layer: int) -> str:
        return latents_hook_name(self.kind, layer)

    def to_json(self) -> dict[str, Any]:
        """The contents of a folder's autoencoder.json."""
        d = {"reads": self.reads, "kind": self.kind, "n_layers": self.n_layers}
        return d | {k: v for k, v in (("n_latents", self.n_latents), ("model", self.model)) if v}


_OPENAI_BLOB = "https://openaipublic.blob.core.windows.net"


def _published(folder: str, reads: str, kind: Kind, n_latents: int) -> AutoencoderSpec:
    return AutoencoderSpec(
        reads=reads,
        kind=kind,
        location=f"{_OPENAI_BLOB}/sparse-autoencoder/gpt2-small/{folder}/autoencoders",
        n_layers=12,
        n_latents=n_latents,
        model="gpt2-small",
        datasets_location=(
            f"{_OPENAI_BLOB}/neuron-explainer/gpt2-small/autoencoder_latent/{folder}/collated-activations"
        ),
    )


# name -> spec; published gpt2-small sets (v1: December 2023, v4: March 2024) plus registered ones
AUTOENCODERS: dict[str, AutoencoderSpec] = {
    "ae-mlp-post-act-v1": _published("mlp_post_act", "mlp.post_act", "mlp", 32768),
    "ae-resid-delta-mlp-v1": _published("resid_delta_mlp", "resid.delta_mlp", "mlp", 32768),
    "ae-mlp-post-act-v4": _published("mlp_post_act_v4", "mlp.post_act", "mlp", 32768),
    "ae-resid-delta-mlp-v4": _published("resid_delta_mlp_v4", "resid.delta_mlp", "mlp", 32768),
    "ae-resid-delta-attn-v4": _published(
        "resid_delta_attn_v4", "resid.delta_attn", "attention", 10240
    ),
}


def _demo_sets() -> None:
    """The bundled demo model's autoencoders (see neuron_explainer.demo), when present."""
    from neuron_explainer import demo

    for name, folder in (
        (demo.MLP_AUTOENCODER_NAME, demo.MLP_AUTOENCODERS_DIR),
        (demo.ATTN_AUTOENCODER_NAME, demo.ATTN_AUTOENCODERS_DIR),
    ):
        if (folder / AUTOENCODER_JSON).exists():
            AUTOENCODERS[name] = spec_from_folder(folder)


def register_autoencoder(name: str, spec: AutoencoderSpec, *, replace: bool = False) -> None:
    """Make `spec` loadable by name (e.g. a local folder: `spec_from_folder(path)`)."""
    if name in AUTOENCODERS and AUTOENCODERS[name] != spec and not replace:
        raise ValueError(f"autoencoder set {name!r} is already registered; pass replace=True")
    AUTOENCODERS[name] = spec


def spec_from_folder(folder: str | os.PathLike[str]) -> AutoencoderSpec:
    """Read `<folder>/autoencoder.json` (local path or URL); see the module docstring."""
    folder = os.fspath(folder)
    where = file_utils.join(folder, AUTOENCODER_JSON)
    d = file_utils.read_json(
        where,
        hint=f"an autoencoder folder needs {AUTOENCODER_JSON} next to its <layer>.pt files "
        "(see neuron_explainer.models.autoencoder)",
    )
    if not isinstance(d, dict):
        raise ValueError(f"{where} must hold a JSON object, got {type(d).__name__}")
    unknown = set(d) - set(_SPEC_FIELDS)
    missing = {"reads", "n_layers"} - set(d)
    if unknown or missing:
        raise ValueError(
            f"{where}: unknown fields {sorted(unknown)}, missing {sorted(missing)}; "
            f"fields are {list(_SPEC_FIELDS)} (reads and n_layers required)"
        )
    kind = d.get("kind") or _default_kind(str(d["reads"]))
    if kind is None:
        raise ValueError(f"{where}: give \"kind\" ('mlp' or 'attention') for reads={d['reads']!r}")
    try:
        return AutoencoderSpec(
            reads=d["reads"],
            kind=kind,
            location=folder,
            n_layers=int(d["n_layers"]),
            n_latents=d.get("n_latents"),
            model=d.get("model"),
        )
    except ValueError as e:
        raise ValueError(f"{where}: {e}") from e


def save_autoencoder_set(
    folder: str | os.PathLike[str],
    autoencoders: Sequence[SparseAutoencoder],
    *,
    reads: str,
    kind: Kind | None = None,
    model: str | None = None,
) -> AutoencoderSpec:
    """Write `<folder>/<layer>.pt` for each autoencoder plus autoencoder.json; returns its spec."""
    kind = kind or _default_kind(reads)
    if kind is None:
        raise ValueError(f"pass kind ('mlp' or 'attention') for reads={reads!r}")
    n_latents = {ae.n_latents for ae in autoencoders}
    spec = AutoencoderSpec(
        reads=reads,
        kind=kind,
        location=os.fspath(folder),
        n_layers=len(autoencoders),
        n_latents=n_latents.pop() if len(n_latents) == 1 else None,
        model=model,
    )
    Path(folder).mkdir(parents=True, exist_ok=True)
    for layer, ae in enumerate(autoencoders):
        save_autoencoder(ae, spec.url_for_layer(layer))
    text = json.dumps(spec.to_json(), indent=2) + "\n"
    file_utils.atomic_write_bytes(Path(folder) / AUTOENCODER_JSON, text.encode())
    return spec


def resolve_autoencoder_spec(name_or_folder: str | os.PathLike[str]) -> AutoencoderSpec:
    """A registered name, or a folder (local path or URL) holding autoencoder.json."""
    key = os.fspath(name_or_folder)
    if key in AUTOENCODERS:
        return AUTOENCODERS[key]
    if file_utils.is_url(key) or Path(key).expanduser().exists():
        return spec_from_folder(key)
    raise ValueError(
        f"unknown autoencoder set {key!r}; known: {', '.join(sorted(AUTOENCODERS))}; "
        f"or pass a local folder with {AUTOENCODER_JSON} and <layer>.pt files"
    )


def load_autoencoder_set(
    name_or_folder: str | os.PathLike[str],
    n_layers: int,
    *,
    device: torch.device | str | None = None,
) -> tuple[AutoencoderSpec, list[SparseAutoencoder]]:
    """The spec and one loaded autoencoder per layer (index = layer) for a model with `n_layers`
    layers. Published files are downloaded once and then served from the cache."""
    spec = resolve_autoencoder_spec(name_or_folder)
    label = os.fspath(name_or_folder)
    if spec.n_layers != n_layers:
        raise ValueError(
            f"autoencoder set {label!r} has {spec.n_layers} layers but the model has {n_layers}"
        )
    hint = (
        "check the network connection, or download the files and pass a local folder "
        f"with {AUTOENCODER_JSON}"
        if file_utils.is_url(spec.location)
        else None
    )
    aes = [
        load_autoencoder(spec.url_for_layer(i), device=device, hint=hint) for i in range(n_layers)
    ]
    for layer, ae in enumerate(aes):
        if spec.n_latents is not None and ae.n_latents != spec.n_latents:
            raise ValueError(
                f"{spec.url_for_layer(layer)} has {ae.n_latents} latents, expected {spec.n_latents}"
            )
        if ae.n_inputs != aes[0].n_inputs:
            raise ValueError(
                f"{spec.url_for_layer(layer)} reads {ae.n_inputs} inputs but layer 0 reads "
                f"{aes[0].n_inputs}"
            )
    return spec, aes


# ------------------------------------------------------------------ attach


def _width(model: Transformer, location: str) -> int | None:
    """Size of the last dimension of activations at a block hook location, when it is simple."""
    if location.startswith("mlp."):
        return model.cfg.d_mlp
    if location.startswith("resid."):
        return model.cfg.d_model
    return None


def attach(
    model: Transformer,
    spec: AutoencoderSpec,
    autoencoders: Sequence[SparseAutoencoder | None],
) -> list[str]:
    """Route `model`'s activations at `spec.reads` of each layer through that layer's autoencoder
    (None skips a layer); returns the latents hook names added. Outputs are unchanged; each
    autoencoder is moved to the model's device (keeping its dtype). Undo with
    `model.remove_autoencoders()`."""
    if len(autoencoders) != model.cfg.n_layers:
        raise ValueError(
            f"got {len(autoencoders)} autoencoders for a model with {model.cfg.n_layers} layers"
        )
    # latents name -> hook point of autoencoders already attached
    taken = {a.latents: a.reads for a in model.attachments()}
    names = []
    expected = _width(model, spec.reads)
    for layer, ae in enumerate(autoencoders):
        if ae is None:
            continue
        at, latents = hook_name(spec.reads, layer), spec.latents_hook_name(layer)
        if expected is not None and ae.n_inputs != expected:
            raise ValueError(
                f"autoencoder for {at} reads {ae.n_inputs} inputs but that activation has {expected}"
            )
        if taken.get(latents, at) != at:
            raise ValueError(
                f"hook point {latents} is already used by the autoencoder at {taken[latents]}; "
                "remove_autoencoders() first"
            )
        model.detach(latents)  # the same set attached again replaces itself
        model.add_autoencoder(at, ae.to(model.device), latents)
        names.append(latents)
    return names


_demo_sets()
