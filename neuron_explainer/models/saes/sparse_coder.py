"""One module for the community's sparse autoencoders and transcoders (SAELens' conventions).

A sparse coder reads an activation `x` (..., d_in) and writes latents (..., n_latents); its
decoder maps latents to (..., d_out). For an SAE d_out = d_in and the output reconstructs `x`;
a *transcoder* predicts another activation (e.g. the MLP output from the MLP input), and a *skip*
transcoder adds a linear term `x @ W_skip.T`. Parameter names and shapes are SAELens':

    W_enc (d_in, n_latents)   b_enc (n_latents)    W_dec (n_latents, d_out)   b_dec (d_out)
    threshold (n_latents)          jumprelu
    b_gate, b_mag, r_mag (n_latents)  gated (no b_enc)
    W_skip (d_out, d_in)           skip transcoders

Encoding, exactly as SAELens does it at inference:

    x    = x - mean(x)                       if center_input (models run with TransformerLens'
                                             center_writing_weights; see saelens_format)
    x    = flatten(x)                        if reshape_hook_z: (..., heads, d_head) -> (..., heads*d_head)
    x    = normalize(x)                      see normalization.py ("none" for most files)
    x    = x - b_dec                         if apply_b_dec_to_input (SAEs only)
    pre  = x @ W_enc + b_enc
    relu:     latents = relu(pre)
    topk:     the k largest pre-activations, ReLU'd; every other latent 0
    jumprelu: latents = relu(pre) * (pre > threshold)   (circuit-tracer: pre * (pre > threshold);
              the two differ only where a threshold is negative: `jumprelu_relu`)
    gated:    latents = (x @ W_enc + b_gate > 0) * relu(x @ (W_enc * exp(r_mag)) + b_mag)

Decoding: out = latents @ W_dec + b_dec; an SAE with an input-dependent normalization undoes it
with the statistics of the input it was given (so `decode` needs `x` then; SAELens keeps them from
the last `encode` call instead); a skip transcoder adds `x @ W_skip.T` of the raw input; hook_z
SAEs reshape back to (..., heads, d_head). Transcoders normalize their input only (as SAELens).

Inputs may have any leading dimensions. Loaders fold everything that is a constant of the file
(decoder-norm rescaling of TopK SAEs, dataset-wide norm scaling, whitening) into the weights, so
the module only ever computes the formulas above.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import torch
import torch.nn as nn
from torch import Tensor

from neuron_explainer.models.saes.hook_names import HookConventions, hook_point_for
from neuron_explainer.models.saes.normalization import RUNTIME_NORMALIZATIONS, Normalizer
from neuron_explainer.models.saes.tl_processing import centers_input

__all__ = ["ACTIVATIONS", "Activation", "SparseCoder", "SparseCoderInfo"]

Activation = Literal["relu", "topk", "jumprelu", "gated"]
ACTIVATIONS: tuple[str, ...] = ("relu", "topk", "jumprelu", "gated")


@dataclass
class SparseCoderInfo:
    """Where a sparse coder came from and what it was trained on (informational).

    `hook_in` / `hook_out` are the activation names as the file gives them (TransformerLens
    names, e.g. `blocks.8.hook_resid_pre`); `SparseCoder.reads` / `.writes` are ours.
    `model_from_pretrained_kwargs`: the TransformerLens processing it was trained under."""

    format: str  # "saelens", "gemma_scope", "llama_scope", "circuit_tracer", "qwen_scope", ...
    source: str  # folder, file, "release:sae_id" or "hf://repo/path"
    architecture: str  # as the file names it ("standard", "jumprelu_transcoder", ...)
    model_name: str | None = None
    hook_in: str | None = None
    hook_out: str | None = None
    model_from_pretrained_kwargs: dict[str, Any] = field(default_factory=dict)
    # why a hook name has no hook point of ours (the coder still encodes and decodes)
    unmapped_hooks: list[str] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)


class SparseCoder(nn.Module):
    """A sparse autoencoder or transcoder; see the module docstring for the maths.

    Duck-types `neuron_explainer.models.autoencoder.SparseAutoencoder`: `encode`, `decode`,
    `n_latents`, `n_inputs`, `dtype`, `device`, `decoder_directions()`."""

    W_enc: nn.Parameter
    W_dec: nn.Parameter
    b_dec: nn.Parameter
    log_feature_density: Tensor | None

    def __init__(
        self,
        d_in: int,
        n_latents: int,
        *,
        activation: Activation = "relu",
        d_out: int | None = None,
        transcoder: bool = False,
        skip: bool = False,
        k: int | None = None,
        apply_b_dec_to_input: bool = False,
        normalize_activations: str = "none",
        reshape_hook_z: bool = False,
        info: SparseCoderInfo | None = None,
        conventions: HookConventions | None = None,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str | None = None,
    ) -> None:
        """Parameters start at zero (loaders assign the real ones with `load_weights`). What it
        reads and writes, and whether its input is centered, follow from `info` (see `place`)."""
        super().__init__()
        d_out = d_in if d_out is None else d_out
        if activation not in ACTIVATIONS:
            raise ValueError(f"unknown activation {activation!r}; supported: {list(ACTIVATIONS)}")
        if activation == "topk" and (k is None or not 1 <= k <= n_latents):
            raise ValueError(f"topk needs an integer 1 <= k <= n_latents={n_latents}, got k={k!r}")
        if normalize_activations not in RUNTIME_NORMALIZATIONS:
            raise ValueError(
                f"normalize_activations {normalize_activations!r} is not computed at inference; "
                f"supported: {list(RUNTIME_NORMALIZATIONS)}"
            )
        if not transcoder and d_out != d_in:
            raise ValueError(f"an SAE reconstructs its input: d_out={d_out} must equal d_in={d_in}")
        if skip and not transcoder:
            raise ValueError("a skip connection (W_skip) needs a transcoder")
        if transcoder and apply_b_dec_to_input:
            raise ValueError("apply_b_dec_to_input is not defined for transcoders (b_dec is in the output space)")
        if transcoder and reshape_hook_z:
            raise ValueError("reshape_activations 'hook_z' is not supported for transcoders")
        self.activation: Activation = activation
        self.k = k if activation == "topk" else None
        self.jumprelu_relu = True  # False: circuit-tracer's pre * (pre > threshold)
        self.is_transcoder = transcoder
        self.apply_b_dec_to_input = apply_b_dec_to_input
        self.normalizer = Normalizer(normalize_activations)
        self.reshape_hook_z = reshape_hook_z
        self.d_head: int | None = None  # hook_z SAEs: set by the first encode, or by the caller
        self.info = info or SparseCoderInfo(format="module", source="constructed", architecture=activation)
        self.center_input = False
        self.reads: str | None = None  # our hook point names, set by `place`
        self.writes: str | None = None
        kw: dict[str, Any] = {"dtype": dtype, "device": device}
        self.W_enc = nn.Parameter(torch.zeros(d_in, n_latents, **kw))
        self.W_dec = nn.Parameter(torch.zeros(n_latents, d_out, **kw))
        self.b_dec = nn.Parameter(torch.zeros(d_out, **kw))
        if activation == "gated":
            self.b_gate = nn.Parameter(torch.zeros(n_latents, **kw))
            self.b_mag = nn.Parameter(torch.zeros(n_latents, **kw))
            self.r_mag = nn.Parameter(torch.zeros(n_latents, **kw))
        else:
            self.b_enc = nn.Parameter(torch.zeros(n_latents, **kw))
        if activation == "jumprelu":
            self.threshold = nn.Parameter(torch.zeros(n_latents, **kw))
        if skip:
            self.W_skip = nn.Parameter(torch.zeros(d_out, d_in, **kw))
        self.register_buffer("log_feature_density", None)
        self.place(conventions)

    def place(self, conventions: HookConventions | None = None) -> SparseCoder:
        """Set `reads` / `writes` (our hook points) and `center_input` from `info` for a model
        family's `conventions` (the default is GPT-2's layout); call again to place the coder
        on another family. A name without a hook point of ours leaves None and a reason in
        `info.unmapped_hooks`."""
        conv = conventions or HookConventions()
        info = self.info
        info.unmapped_hooks.clear()
        self.center_input = centers_input(
            info.model_from_pretrained_kwargs, info.hook_in, conv, source=info.source
        )

        def ours(name: str | None) -> str | None:
            if not name:
                return None
            try:
                return hook_point_for(name, conv)
            except ValueError as e:
                info.unmapped_hooks.append(str(e))
                return None

        self.reads = ours(info.hook_in)
        self.writes = ours(info.hook_out) if self.is_transcoder else self.reads
        return self

    # ------------------------------------------------------------ properties

    @property
    def n_latents(self) -> int:
        return int(self.W_enc.shape[1])

    @property
    def n_inputs(self) -> int:
        return int(self.W_enc.shape[0])

    @property
    def n_outputs(self) -> int:
        return int(self.W_dec.shape[1])

    @property
    def dtype(self) -> torch.dtype:
        return self.W_enc.dtype

    @property
    def device(self) -> torch.device:
        return self.W_enc.device

    @property
    def has_skip(self) -> bool:
        return hasattr(self, "W_skip")

    @property
    def decode_needs_input(self) -> bool:
        """True when `decode` must be given the input `x` (skip term, or an SAE's
        input-dependent normalization to undo)."""
        return self.has_skip or (not self.is_transcoder and self.normalizer.input_dependent)

    def extra_repr(self) -> str:
        kind = "transcoder" if self.is_transcoder else "sae"
        act = f"topk(k={self.k})" if self.activation == "topk" else self.activation
        parts = [f"{kind}", f"d_in={self.n_inputs}", f"n_latents={self.n_latents}"]
        if self.is_transcoder:
            parts.append(f"d_out={self.n_outputs}")
        parts.append(f"activation={act}")
        if self.has_skip:
            parts.append("skip")
        if self.normalizer.mode != "none":
            parts.append(f"normalize={self.normalizer.mode}")
        if self.reshape_hook_z:
            parts.append("hook_z")
        if self.reads:
            parts.append(f"reads={self.reads}")
        if self.is_transcoder and self.writes:
            parts.append(f"writes={self.writes}")
        return ", ".join(parts)

    # -------------------------------------------------------------- weights

    def load_weights(
        self, weights: dict[str, Tensor], *, source: str, device: torch.device | str | None = None
    ) -> None:
        """Take parameters from a dict with exactly this module's parameter names and shapes,
        cast to the module's dtype and moved to `device` (default: the module's; "meta" modules,
        which loaders build to skip allocating placeholders, default to the CPU). The dict's
        tensors are used without a copy where dtype and device already fit. Raises ValueError
        naming `source`."""
        expected = {name: tuple(p.shape) for name, p in self.named_parameters()}
        missing = sorted(set(expected) - set(weights))
        unknown = sorted(set(weights) - set(expected))
        if missing or unknown:
            raise ValueError(
                f"{source}: weights do not fit a {self.activation} "
                f"{'transcoder' if self.is_transcoder else 'SAE'}: missing {missing}, unexpected {unknown}"
            )
        for name, shape in expected.items():
            got = tuple(weights[name].shape)
            if got != shape:
                raise ValueError(f"{source}: {name} has shape {got}, expected {shape}")
            if not weights[name].is_floating_point():
                raise ValueError(f"{source}: {name} is {weights[name].dtype}, not a floating tensor")
        target = torch.device(device) if device is not None else self.device
        if target.type == "meta":
            target = torch.device("cpu")
        for name, p in list(self.named_parameters()):
            module, _, leaf = name.rpartition(".")
            owner = self.get_submodule(module) if module else self
            tensor = weights[name].detach().to(device=target, dtype=self.dtype)
            setattr(owner, leaf, nn.Parameter(tensor.contiguous(), requires_grad=p.requires_grad))

    # ---------------------------------------------------------------- maths

    def _prepare_input(self, x: Tensor) -> Tensor:
        """The vector the encoder sees before normalization: dtype cast, centering, hook_z
        flattening."""
        x = x.to(self.dtype)
        if self.center_input:
            x = x - x.mean(dim=-1, keepdim=True)
        if self.reshape_hook_z:
            if x.ndim < 2 or x.shape[-2] * x.shape[-1] != self.n_inputs:
                raise ValueError(
                    f"hook_z SAE reads (..., n_heads, d_head) with n_heads*d_head={self.n_inputs}, "
                    f"got shape {tuple(x.shape)}"
                )
            if self.d_head is None:
                self.d_head = int(x.shape[-1])
            elif x.shape[-1] != self.d_head:
                raise ValueError(f"hook_z SAE expects d_head={self.d_head}, got shape {tuple(x.shape)}")
            x = x.flatten(-2)
        elif x.shape[-1] != self.n_inputs:
            raise ValueError(f"sparse coder reads {self.n_inputs} inputs, got shape {tuple(x.shape)}")
        return x

    def encode_pre_act(self, x: Tensor) -> Tensor:
        """Pre-activations (..., n_latents); for gated SAEs those of the magnitude path."""
        pre, _ = self._pre_acts(self._encoder_input(x))
        return pre

    def _encoder_input(self, x: Tensor) -> Tensor:
        sae_in = self.normalizer.normalize(self._prepare_input(x))
        if self.apply_b_dec_to_input:
            sae_in = sae_in - self.b_dec
        return sae_in

    def _pre_acts(self, sae_in: Tensor) -> tuple[Tensor, Tensor | None]:
        if self.activation == "gated":
            gate = sae_in @ self.W_enc + self.b_gate
            return sae_in @ (self.W_enc * self.r_mag.exp()) + self.b_mag, gate
        return sae_in @ self.W_enc + self.b_enc, None

    def encode(self, x: Tensor) -> Tensor:
        """(..., d_in) -> latents (..., n_latents); hook_z SAEs read (..., n_heads, d_head)."""
        pre, gate = self._pre_acts(self._encoder_input(x))
        if self.activation == "relu":
            return torch.relu(pre)
        if self.activation == "jumprelu":
            kept = torch.relu(pre) if self.jumprelu_relu else pre
            return kept * (pre > self.threshold).to(pre.dtype)
        if self.activation == "gated":
            assert gate is not None
            return (gate > 0).to(pre.dtype) * torch.relu(pre)
        assert self.k is not None
        top = pre.topk(self.k, dim=-1, sorted=False)
        return torch.zeros_like(pre).scatter(-1, top.indices, top.values.relu())

    def decode(self, latents: Tensor, x: Tensor | None = None) -> Tensor:
        """latents (..., n_latents) -> (..., d_out). `x`, the input that was encoded, is needed
        when `decode_needs_input` (skip transcoders; SAEs with an input-dependent
        normalization); hook_z SAEs return (..., n_heads, d_head)."""
        out = latents.to(self.dtype) @ self.W_dec + self.b_dec
        if self.decode_needs_input and x is None:
            why = "its skip connection" if self.has_skip else f"undoing {self.normalizer.mode!r}"
            raise ValueError(f"decode needs the encoded input x for {why}: call decode(latents, x)")
        if not self.is_transcoder and self.normalizer.input_dependent:
            assert x is not None
            out = self.normalizer.denormalize(out, self._prepare_input(x))
        if self.has_skip:
            assert x is not None
            out = out + x.to(self.dtype) @ self.W_skip.T
        if self.reshape_hook_z:
            if self.d_head is None:
                raise ValueError("hook_z SAE: d_head is unknown until the first encode; set .d_head")
            out = out.unflatten(-1, (-1, self.d_head))
        return out

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """(latents, output)."""
        latents = self.encode(x)
        return latents, self.decode(latents, x)

    def output_scale(self, x: Tensor) -> Tensor:
        """(..., 1): how much an SAE's decoder rows are scaled, per position, on their way to the
        output (1 unless the normalization depends on the input). Latent i writes
        latents[..., i] * output_scale(x) * W_dec[i]."""
        prepared = self._prepare_input(x)
        if self.is_transcoder or not self.normalizer.input_dependent:
            return torch.ones_like(prepared[..., :1])
        return self.normalizer.output_scale(prepared)

    def decoder_directions(self) -> Tensor:
        """(n_latents, d_out): row i is what latent i writes per unit of activation (a view of
        W_dec; hook_z SAEs: flattened heads, in the normalized space for input-dependent
        normalizations, see `output_scale`)."""
        return self.W_dec

    def affine_read_directions(self) -> Tensor | None:
        """(n_latents, d_in) rows such that latent i's pre-activation is row i . x plus a constant
        for the raw input x (centring folded in), or None when it is not affine in x (an
        input-dependent normalization, hook_z's reshaping aside)."""
        if self.normalizer.input_dependent:
            return None
        rows = self.encoder_directions()
        return rows - rows.mean(-1, keepdim=True) if self.center_input else rows

    def write_directions(self) -> Tensor | None:
        """(n_latents, d_out): what latent i adds to the output per unit of it, or None when that
        depends on the input (an SAE undoing an input-dependent normalization)."""
        if not self.is_transcoder and self.normalizer.input_dependent:
            return None
        return self.W_dec

    def encoder_directions(self) -> Tensor:
        """(n_latents, d_in): row i is the gradient of latent i's pre-activation with respect to
        the (prepared, normalized) input; for gated SAEs that of the magnitude path."""
        if self.activation == "gated":
            return (self.W_enc * self.r_mag.exp()).T
        return self.W_enc.T
