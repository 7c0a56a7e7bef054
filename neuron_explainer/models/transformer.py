"""One configurable decoder-only transformer with named hook points, for every supported family.

`TransformerConfig` (config.py) switches between GPT-2, GPT-NeoX / Pythia, Llama, Qwen, Mistral
and Gemma 2; the forward pass below is the whole model. Every activation the debugger reads
passes through `self.hook(name, x)`. A hook point name is `blocks.{layer}.{location}` inside a
block, or just `{location}` outside one; the names are the same in every family (the seed's
activation location strings). Hooks are plain functions:

- forward hooks get the activation and may return a replacement (or None to leave it as is);
- backward hooks get the gradient flowing back into that activation and may return a
  replacement gradient.

With no hooks registered a hook point costs one dict lookup, and attention runs the fused
kernel unless someone hooks its scores or probabilities.

Tensor layouts seen by hooks (b = batch, s = sequence, h = heads, kv = key/value heads):
  resid.*, *.delta_*           (b, s, d_model)
  *_ln.scale, resid.ln_f.scale (b, s, 1)       the norm's divisor, sqrt(var + eps) or rms
  *_ln.normalized              (b, s, d_model)    the norm's output before its gain (and bias)
  attn.q                       (b, s, h, d_head)  after qk-norm and rotation
  attn.k / attn.v              (b, s, kv, d_head)
  attn.qk_logits / qk_probs    (b, h, s_query, s_key)   scores already scaled and soft-capped
  attn.v_out                   (b, s, h, d_head)  probs-weighted sum of values, per head
  attn.head_out                (b, s, h, d_model) each head's output; only computed if hooked
  mlp.pre_act / mlp.post_act   (b, s, d_mlp)
  logits                       (b, s, n_vocab)    after the final soft-cap
Family extras: `mlp.up` (b, s, d_mlp) for gated MLPs, where post_act = act(pre_act) * up and
pre_act is the gate's input; `attn.out`, `attn_post_ln.scale`, `mlp.out`, `mlp_post_ln.scale`
for sandwich norms (attn.out / mlp.out is the sublayer's output before its post-norm). Parallel
blocks (NeoX) have no `resid.post_attn`: their MLP reads the block's input.

Parameter names follow OpenAI's GPT-2 layout (`xf_layers.{i}.attn.q_proj.weight`, ...), so that
layout loads as a plain state dict. The methods at the end are the model interface: the only way
the debugger, the records builder and the server reach weights.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from neuron_explainer.models import rope
from neuron_explainer.models.config import TransformerConfig

__all__ = [
    "BLOCK_LOCATIONS", "HOOK_LOCATIONS", "MODEL_LOCATIONS", "Attachment", "Hook", "SparseCoderLike",
    "Transformer", "TransformerConfig", "hook_name",
]

Hook = Callable[[Tensor], Tensor | None]

# Hook point locations inside each block, in the order the forward pass reaches them.
BLOCK_LOCATIONS = (
    "attn_ln.scale",
    "attn_ln.normalized",
    "resid.post_attn_ln",
    "attn.q",
    "attn.k",
    "attn.v",
    "attn.qk_logits",
    "attn.qk_probs",
    "attn.v_out",
    "attn.head_out",
    "attn.out",
    "attn_post_ln.scale",
    "attn_post_ln.normalized",
    "resid.delta_attn",
    "resid.post_attn",
    "mlp_ln.scale",
    "mlp_ln.normalized",
    "resid.post_mlp_ln",
    "mlp.pre_act",
    "mlp.up",
    "mlp.post_act",
    "mlp.out",
    "mlp_post_ln.scale",
    "mlp_post_ln.normalized",
    "resid.delta_mlp",
    "resid.post_mlp",
)
# Hook point locations outside the blocks.
MODEL_LOCATIONS = ("resid.post_emb", "resid.ln_f.scale", "resid.ln_f.normalized", "resid.post_ln_f", "logits")
HOOK_LOCATIONS = MODEL_LOCATIONS + BLOCK_LOCATIONS
_SANDWICH_ONLY = (
    "attn.out", "attn_post_ln.scale", "attn_post_ln.normalized", "mlp.out", "mlp_post_ln.scale", "mlp_post_ln.normalized",
)


class SparseCoderLike(Protocol):
    """What the model needs of an attached sparse autoencoder or transcoder (OpenAI's
    `autoencoder.SparseAutoencoder`, the community's `saes.SparseCoder`)."""

    @property
    def dtype(self) -> torch.dtype: ...

    def encode(self, x: Tensor) -> Tensor: ...

    def decode(self, latents: Tensor, x: Tensor | None = None) -> Tensor: ...


@dataclass(frozen=True)
class Attachment:
    """A sparse coder inside the forward pass: it encodes the activation at hook point `reads`
    and reconstructs the one at `writes` (the same point for an SAE; the MLP's output for a
    transcoder reading its input); its latents are the hook point `latents`."""

    coder: Any  # a SparseCoderLike (Any: it is also an nn.Module)
    reads: str
    writes: str
    latents: str

    @property
    def is_transcoder(self) -> bool:
        return self.reads != self.writes


def hook_name(location: str, layer: int | None = None) -> str:
    """The stable name of a hook point: `blocks.3.mlp.post_act`, or `logits` for layerless ones."""
    return location if layer is None else f"blocks.{layer}.{location}"


class Norm(nn.Module):
    """LayerNorm or RMSNorm parameters; the maths is in `Transformer._norm` (its scale is a hook
    point). A Gemma-style gain is stored as w and applied as (offset + w)."""

    def __init__(self, d: int, cfg: TransformerConfig, bias: bool):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(d))
        self.bias = nn.Parameter(torch.zeros(d)) if bias else None
        self.kind, self.eps, self.offset = cfg.norm, cfg.norm_eps, cfg.norm_offset

    def gain(self) -> Tensor:
        return self.weight + self.offset if self.offset else self.weight


def _linear(d_in: int, d_out: int, bias: bool) -> nn.Linear:
    return nn.Linear(d_in, d_out, bias=bias)


class Block(nn.Module):
    def __init__(self, cfg: TransformerConfig):
        super().__init__()
        layer_norm = cfg.norm == "layernorm"
        d_kv = cfg.kv_heads * cfg.d_head
        self.ln_1 = Norm(cfg.d_model, cfg, layer_norm)
        self.attn = nn.Module()
        self.attn.q_proj = _linear(cfg.d_model, cfg.d_attn, cfg.qkv_bias)
        self.attn.k_proj = _linear(cfg.d_model, d_kv, cfg.qkv_bias)
        self.attn.v_proj = _linear(cfg.d_model, d_kv, cfg.qkv_bias)
        self.attn.out_proj = _linear(cfg.d_attn, cfg.d_model, cfg.out_bias)
        if cfg.qk_norm:
            self.attn.q_norm = Norm(cfg.d_head, cfg, False)
            self.attn.k_norm = Norm(cfg.d_head, cfg, False)
        self.ln_2 = Norm(cfg.d_model, cfg, layer_norm)
        self.mlp = nn.Module()
        self.mlp.in_layer = _linear(cfg.d_model, cfg.d_mlp, cfg.mlp_bias)  # "up" when gated
        if cfg.gated_mlp:
            self.mlp.gate_layer = _linear(cfg.d_model, cfg.d_mlp, cfg.mlp_bias)
        self.mlp.out_layer = _linear(cfg.d_mlp, cfg.d_model, cfg.mlp_bias)
        if cfg.sandwich_norms:
            self.post_attn_ln = Norm(cfg.d_model, cfg, layer_norm)
            self.post_mlp_ln = Norm(cfg.d_model, cfg, layer_norm)


_ACTIVATIONS: dict[str, Callable[[Tensor], Tensor]] = {
    "gelu_tanh": lambda x: F.gelu(x, approximate="tanh"),
    "gelu": F.gelu,
    "silu": F.silu,
    "relu": F.relu,
}


class Transformer(nn.Module):
    inv_freq: Tensor  # rotary frequencies (families with rotary positions)

    def __init__(self, cfg: TransformerConfig):
        super().__init__()
        self.cfg = cfg
        self.tok_embed = nn.Embedding(cfg.n_vocab, cfg.d_model)
        if cfg.positions == "learned":
            self.pos_embed = nn.Embedding(cfg.ctx_window, cfg.d_model)
        else:
            inv_freq = rope.inverse_frequencies(cfg.rotary_dims, cfg.rope_theta, cfg.rope_scaling)
            self.register_buffer("inv_freq", inv_freq, persistent=False)
        self.xf_layers = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layers))
        self.final_ln = Norm(cfg.d_model, cfg, cfg.norm == "layernorm")
        self.unembed = nn.Linear(cfg.d_model, cfg.n_vocab, bias=False)
        self._act = _ACTIVATIONS[cfg.activation]
        self._fwd_hooks: dict[str, list[Hook]] = {}
        self._bwd_hooks: dict[str, list[Hook]] = {}
        self._attachments: list[Attachment] = []
        self._by_reads: dict[str, list[Attachment]] = {}  # transcoders, by the point they read
        self._by_writes: dict[str, list[Attachment]] = {}  # all, by the point they rebuild
        self._inputs: dict[str, Tensor] = {}  # a transcoder's input, from `reads` to `writes`
        self.source: str | None = None  # folder or URL the weights came from (set by loading.py)
        self.tokenizer_path: str = cfg.tokenizer  # what to pass to tokenizer.load_tokenizer
        self._token_stats: tuple[Any, Tensor, Tensor] | None = None  # see read_tokens
        self._vocab_sum: tuple[Any, Tensor] | None = None  # see logit_sums

    def init_weights(self, seed: int = 0, std: float = 0.02) -> Transformer:
        """GPT-2's initialisation: N(0, 0.02), residual writes scaled by 1/sqrt(2 n_layers);
        norms start as the identity and biases at zero."""
        gen = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for module_name, module in self.named_modules():
                if isinstance(module, Norm):
                    module.weight.fill_(1.0 - module.offset)
                    if module.bias is not None:
                        module.bias.zero_()
                elif isinstance(module, nn.Linear | nn.Embedding):
                    scale = std / (2 * self.cfg.n_layers) ** 0.5 if "out_" in module_name else std
                    module.weight.copy_(torch.randn(module.weight.shape, generator=gen) * scale)
                    bias = getattr(module, "bias", None)
                    if bias is not None:
                        bias.zero_()
        return self

    def tie_embeddings(self) -> Transformer:
        """Make the unembedding the token embedding matrix itself (for training tied models)."""
        self.unembed.weight = self.tok_embed.weight
        return self

    @property
    def device(self) -> torch.device:
        return self.unembed.weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.unembed.weight.dtype

    # ---------------------------------------------------------------- hooks

    def hook(self, name: str, x: Tensor) -> Tensor:
        """Run the forward hooks registered at `name` and arm its backward hooks."""
        for fn in self._fwd_hooks.get(name, ()):
            out = fn(x)
            if out is not None:
                x = out
        for att in self._by_reads.get(name, ()):
            self._inputs[att.latents] = x
        for att in self._by_writes.get(name, ()):
            x = self._through_coder(att, x if not att.is_transcoder else self._inputs.pop(att.latents), x)
        if name in self._bwd_hooks and x.requires_grad:
            for fn in self._bwd_hooks[name]:
                x.register_hook(fn)
        return x

    def _hooked(self, name: str) -> bool:
        return name in self._fwd_hooks or name in self._bwd_hooks

    @contextlib.contextmanager
    def hooks(
        self,
        fwd: Mapping[str, Hook | Sequence[Hook]] | None = None,
        bwd: Mapping[str, Hook | Sequence[Hook]] | None = None,
    ) -> Iterator[Transformer]:
        """Register hooks for the duration of a `with` block (they nest)."""
        added: list[tuple[dict[str, list[Hook]], str, Hook]] = []
        for table, new in ((self._fwd_hooks, fwd), (self._bwd_hooks, bwd)):
            for name, fns in (new or {}).items():
                self._check_hook_name(name)
                for fn in [fns] if callable(fns) else fns:
                    table.setdefault(name, []).append(fn)
                    added.append((table, name, fn))
        try:
            yield self
        finally:
            for table, name, fn in reversed(added):
                # remove the last equal entry: ours, even if an outer context added the same fn
                fns = table[name]
                del fns[len(fns) - 1 - fns[::-1].index(fn)]
                if not fns:
                    del table[name]

    def block_locations(self) -> tuple[str, ...]:
        """The block hook locations this model has (the common ones plus its family's extras)."""
        cfg = self.cfg
        drop = set()
        if not cfg.gated_mlp:
            drop.add("mlp.up")
        if not cfg.sandwich_norms:
            drop.update(_SANDWICH_ONLY)
        if cfg.parallel:
            drop.add("resid.post_attn")
        return tuple(loc for loc in BLOCK_LOCATIONS if loc not in drop)

    def _check_hook_name(self, name: str) -> None:
        if name in MODEL_LOCATIONS or any(a.latents == name for a in self._attachments):
            return
        parts = name.split(".", 2)
        ok = (
            len(parts) == 3
            and parts[0] == "blocks"
            and parts[1].isdigit()
            and int(parts[1]) < self.cfg.n_layers
            and parts[2] in self.block_locations()
        )
        if not ok:
            raise ValueError(
                f"unknown hook point {name!r} for this {self.cfg.family} model; block locations: "
                f"{', '.join(self.block_locations())}"
            )

    def run_with_cache(
        self, tokens: Tensor, names: Sequence[str], pad: Tensor | None = None
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """Forward pass that also returns the activations at `names`."""
        cache: dict[str, Tensor] = {}

        def save(name: str) -> Hook:
            def fn(x: Tensor) -> None:
                cache[name] = x

            return fn

        with self.hooks(fwd={n: save(n) for n in names}):
            logits = self(tokens, pad=pad)
        return logits, cache

    # ------------------------------------------------------ sparse coders

    def attach(self, coder: SparseCoderLike, reads: str, latents: str, writes: str | None = None) -> Attachment:
        """Run `coder` inside the forward pass: it encodes the activation at hook point `reads`
        and reconstructs the one at `writes` (default: `reads`, an SAE; a transcoder reads the
        MLP's input and writes its output). Its latents become hook point `latents`, which hooks
        read, ablate or trace like any activation. Outputs are unchanged: the reconstruction
        error is added back, so every gradient is the plain model's."""
        writes = writes or reads
        self._check_hook_name(reads)
        self._check_hook_name(writes)
        if any(a.latents == latents for a in self._attachments) or latents in HOOK_LOCATIONS:
            raise ValueError(f"hook point {latents!r} is already taken: detach_all() first, or name the latents otherwise")
        if reads != writes and _forward_order(reads) >= _forward_order(writes):
            raise ValueError(f"a transcoder must read before it writes: {reads} does not come before {writes}")
        att = Attachment(coder, reads, writes, latents)
        self._attachments.append(att)
        if att.is_transcoder:
            self._by_reads.setdefault(reads, []).append(att)
        self._by_writes.setdefault(writes, []).append(att)
        return att

    def attachments(self) -> list[Attachment]:
        return list(self._attachments)

    def detach(self, latents: str) -> None:
        """Take out the sparse coder whose latents are hook point `latents` (if any)."""
        self._attachments = [a for a in self._attachments if a.latents != latents]
        for table in (self._by_reads, self._by_writes):
            for name in list(table):
                table[name] = [a for a in table[name] if a.latents != latents]
                if not table[name]:
                    del table[name]

    def detach_all(self) -> None:
        self._attachments.clear()
        self._by_reads.clear()
        self._by_writes.clear()

    # OpenAI-style names for the SAE case
    def add_autoencoder(self, at: str, ae: SparseCoderLike, latents_name: str) -> None:
        self.attach(ae, at, latents_name)

    remove_autoencoders = detach_all

    def _through_coder(self, att: Attachment, x_in: Tensor, y: Tensor) -> Tensor:
        coder = att.coder
        latents = coder.encode(x_in.to(coder.dtype))
        # error = y - decode(encode(x_in)) keeps its gradient paths, so d(out)/dy is exactly the
        # identity, d(out)/d(x_in) is zero, and upstream gradients are those of the plain model.
        error = y - coder.decode(latents, x_in).to(y.dtype)
        # The hook point gets its own tensor: were it `latents` itself, its gradient would sum
        # both decode paths, which cancel to exactly zero (and in-place edits by hooks would
        # corrupt what `error`'s backward saved).
        hooked = self.hook(att.latents, latents.clone() if self._hooked(att.latents) else latents)
        return coder.decode(hooked, x_in).to(y.dtype) + error

    # --------------------------------------------------------------- forward

    def _norm(self, x: Tensor, norm: Norm, scale_name: str) -> Tensor:
        # Written out (not F.layer_norm) so the scale is a hook point: the debugger detaches it.
        # Always in at least fp32: half precision loses too much in the variance.
        x32 = x.to(torch.promote_types(x.dtype, torch.float32))
        if norm.kind == "layernorm":
            x32 = x32 - x32.mean(-1, keepdim=True)
        scale = (x32.pow(2).mean(-1, keepdim=True) + norm.eps).sqrt()
        scale = self.hook(scale_name, scale)
        # before the gain: what TransformerLens calls hook_normalized (transcoders read it)
        normalized = self.hook(scale_name.removesuffix("scale") + "normalized", x32 / scale)
        out = normalized * norm.gain().to(x32.dtype)
        if norm.bias is not None:
            out = out + norm.bias.to(x32.dtype)
        return out.to(x.dtype)

    def _head_norm(self, x: Tensor, norm: Norm) -> Tensor:
        """Qwen3's RMSNorm over each head's query or key (no hook: it is part of projecting)."""
        x32 = x.to(torch.promote_types(x.dtype, torch.float32))
        scale = (x32.pow(2).mean(-1, keepdim=True) + norm.eps).sqrt()
        return (x32 / scale * norm.gain().to(x32.dtype)).to(x.dtype)

    def _project(self, i: int, which: str, x: Tensor, cos_sin: tuple[Tensor, Tensor] | None) -> Tensor:
        """Queries ("q") or keys ("k") of layer i for normalized inputs x (b, s, d_model): after
        qk-norm and rotation, as attention uses them, (b, s, heads, d_head)."""
        attn: Any = self.xf_layers[i].attn
        b, s, _ = x.shape
        out = getattr(attn, f"{which}_proj")(x).view(b, s, -1, self.cfg.d_head)
        if self.cfg.qk_norm:
            out = self._head_norm(out, getattr(attn, f"{which}_norm"))
        if cos_sin is not None:
            out = rope.rotate(out, *cos_sin)
        return out

    def _attention(self, i: int, x: Tensor, mask: Tensor | None, cos_sin: tuple[Tensor, Tensor] | None) -> Tensor:
        cfg = self.cfg
        attn: Any = self.xf_layers[i].attn
        b, s, _ = x.shape
        h, dh, group = cfg.n_heads, cfg.d_head, cfg.n_heads // cfg.kv_heads
        p = f"blocks.{i}."
        q = self.hook(p + "attn.q", self._project(i, "q", x, cos_sin))
        k = self.hook(p + "attn.k", self._project(i, "k", x, cos_sin))
        v = self.hook(p + "attn.v", attn.v_proj(x).view(b, s, -1, dh))
        q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)  # (b, heads, s, dh)
        window = cfg.window(i)
        if window is not None:
            local = _causal(s, x.device, window)
            mask = local if mask is None else mask & local
        looked_at = self._hooked(p + "attn.qk_logits") or self._hooked(p + "attn.qk_probs")
        if looked_at or cfg.attn_softcap is not None:
            if group > 1:
                k, v = k.repeat_interleave(group, dim=1), v.repeat_interleave(group, dim=1)
            # the scale on the queries (s x d_head numbers), not on the (s x s) scores, and -inf
            # where a query may not look filled in place (its gradient there is 0: nothing reads a
            # blocked pair): no pass over the scores that a long prompt would pay twice
            scores = (q * cfg.scale) @ k.transpose(-1, -2)
            if cfg.attn_softcap is not None:
                scores = torch.tanh(scores / cfg.attn_softcap) * cfg.attn_softcap
            allowed = mask if mask is not None else _causal(s, x.device)
            scores = self.hook(p + "attn.qk_logits", scores.masked_fill_(~allowed, float("-inf")))
            probs = torch.softmax(scores.to(torch.promote_types(scores.dtype, torch.float32)), dim=-1)
            probs = self.hook(p + "attn.qk_probs", probs.to(v.dtype))
            out = probs @ v
        else:  # fused kernel when nobody looks at the attention pattern
            out = F.scaled_dot_product_attention(
                q, k, v, attn_mask=mask, is_causal=mask is None, scale=cfg.scale, enable_gqa=group > 1
            )
        out = self.hook(p + "attn.v_out", out.transpose(1, 2))  # (b, s, h, dh)
        w, bias = attn.out_proj.weight, attn.out_proj.bias
        if self._hooked(p + "attn.head_out"):
            heads = self.hook(p + "attn.head_out", torch.einsum("bshe,dhe->bshd", out, w.view(cfg.d_model, h, dh)))
            return heads.sum(2) + bias if bias is not None else heads.sum(2)
        return F.linear(out.reshape(b, s, h * dh), w, bias)

    def _mlp(self, i: int, x: Tensor) -> Tensor:
        mlp: Any = self.xf_layers[i].mlp
        p = f"blocks.{i}."
        if self.cfg.gated_mlp:
            pre = self.hook(p + "mlp.pre_act", mlp.gate_layer(x))
            up = self.hook(p + "mlp.up", mlp.in_layer(x))
            post = self.hook(p + "mlp.post_act", self._act(pre) * up)
        else:
            pre = self.hook(p + "mlp.pre_act", mlp.in_layer(x))
            post = self.hook(p + "mlp.post_act", self._act(pre))
        return mlp.out_layer(post)

    def _sublayer_write(self, i: int, sublayer: str, out: Tensor) -> Tensor:
        """What a sublayer adds to the residual stream: its output, through its post-norm when
        the family has sandwich norms."""
        p = f"blocks.{i}."
        if not self.cfg.sandwich_norms:
            return self.hook(p + f"resid.delta_{sublayer}", out)
        blk: Any = self.xf_layers[i]
        out = self.hook(p + f"{sublayer}.out", out)
        normed = self._norm(out, getattr(blk, f"post_{sublayer}_ln"), p + f"{sublayer}_post_ln.scale")
        return self.hook(p + f"resid.delta_{sublayer}", normed)

    def embed(self, tokens: Tensor, positions: Tensor) -> Tensor:
        x = self.tok_embed(tokens)
        if self.cfg.embed_scale != 1.0:
            # as Gemma does it: the scale rounded to the weights' dtype first
            x = x * torch.tensor(self.cfg.embed_scale, dtype=x.dtype)
        if self.cfg.positions == "learned":
            x = x + self.pos_embed(positions)
        return x

    def forward(self, tokens: Tensor, pad: Tensor | None = None, logit_positions: Tensor | None = None) -> Tensor:
        """tokens: (b, s) ints. pad: (b, s) bools, True where a position is padding (left or
        right); padded keys are never attended to and positions count only real tokens.
        logit_positions: (b, p) indices of the positions whose logits are wanted (the final
        norm, the unembedding and their hook points then see (b, p, ...)); None: all of them.
        The unembedding is the largest matmul of a short prompt, and a loss at the last token
        needs it there only."""
        cfg = self.cfg
        b, s = tokens.shape
        self._inputs.clear()
        if s > cfg.ctx_window:
            raise ValueError(f"sequence of {s} tokens exceeds the context window {cfg.ctx_window}")
        mask = None
        if pad is None:
            positions = torch.arange(s, device=tokens.device).expand(b, s)
        else:
            positions = ((~pad).long().cumsum(-1) - 1).clamp(min=0)
            # (b, 1, q, k); the diagonal keeps rows of padded queries from being empty (NaNs)
            eye = torch.eye(s, dtype=torch.bool, device=tokens.device)
            mask = (_causal(s, tokens.device) & ~pad[:, None, None, :]) | eye
        cos_sin = None
        if cfg.positions == "rotary":
            cos_sin = rope.cos_sin(self.inv_freq, positions, self.dtype)
        x = self.hook("resid.post_emb", self.embed(tokens, positions))
        blk: Any
        for i, blk in enumerate(self.xf_layers):
            p = f"blocks.{i}."
            ln_x = self.hook(p + "resid.post_attn_ln", self._norm(x, blk.ln_1, p + "attn_ln.scale"))
            attn = self._sublayer_write(i, "attn", self._attention(i, ln_x, mask, cos_sin))
            if not cfg.parallel:
                x = self.hook(p + "resid.post_attn", x + attn)
            ln_x = self.hook(p + "resid.post_mlp_ln", self._norm(x, blk.ln_2, p + "mlp_ln.scale"))
            mlp = self._sublayer_write(i, "mlp", self._mlp(i, ln_x))
            x = self.hook(p + "resid.post_mlp", x + attn + mlp if cfg.parallel else x + mlp)
        if logit_positions is not None:
            x = x.gather(1, logit_positions[:, :, None].expand(-1, -1, x.shape[-1]))
        x = self.hook("resid.post_ln_f", self._norm(x, self.final_ln, "resid.ln_f.scale"))
        return self.hook("logits", self._softcap(self.unembed(x)))

    def _softcap(self, logits: Tensor) -> Tensor:
        cap = self.cfg.final_softcap
        return logits if cap is None else torch.tanh(logits / cap) * cap

    @torch.no_grad()
    def logits_of(self, resid: Tensor) -> Tensor:
        """(..., n_vocab): the logits of last-block residual streams (..., d_model), as the
        forward computes them (final norm, unembedding, soft-cap), outside autograd and without
        the hooks after the last block; through the fast vocabulary product (`_times_vocab`)."""
        normed = self._norm(resid, self.final_ln, "resid.ln_f.scale")
        flat = normed.reshape(-1, normed.shape[-1]).to(self.unembed.weight.dtype)
        return self._softcap(_times_vocab(flat, self.unembed.weight)).view(*resid.shape[:-1], -1)

    @torch.no_grad()
    def logit_sums(self, resid: Tensor) -> Tensor:
        """(...,): each last-block residual stream's logits (`logits_of`) summed over the
        vocabulary. Without a soft-cap the sum is linear in the final norm's output: one dot
        product with the unembedding's column sums (kept, in float64) instead of the vocabulary
        product; with one, the logits are summed in chunks of rows."""
        normed = self._norm(resid, self.final_ln, "resid.ln_f.scale").float()
        if self.cfg.final_softcap is not None:
            flat = resid.reshape(-1, resid.shape[-1])
            sums = [self.logits_of(flat[i : i + _LOGIT_ROWS]).float().sum(-1) for i in range(0, flat.shape[0], _LOGIT_ROWS)]
            return torch.cat(sums).view(resid.shape[:-1])
        w = self.unembed.weight
        key = (w.data_ptr(), w._version)
        if self._vocab_sum is None or self._vocab_sum[0] != key:
            # by chunks of rows: a float64 copy of the whole matrix would be 300 MB for GPT-2
            self._vocab_sum = (key, sum(chunk.double().sum(0) for chunk in w.split(_LOGIT_ROWS * 64)))
        return (normed.double() @ self._vocab_sum[1]).float()

    # -------------------------------------------------------------- sampling

    @torch.no_grad()
    def generate(
        self,
        prompts: Sequence[Sequence[int]],
        max_new_tokens: int,
        temperature: float = 1.0,
        top_p: float | None = None,
        seed: int | None = None,
    ) -> list[list[int]]:
        """Sample continuations of token prompts of any lengths (left-padded into one batch).
        temperature 0 is greedy; top_p keeps the smallest set of tokens with that much mass.
        No KV cache: each step reruns the sequence, which keeps hooks seeing whole sequences."""
        gen = torch.Generator(device=self.device)
        if seed is None:
            gen.seed()  # a fresh random seed; a new Generator would always start from the same one
        else:
            gen.manual_seed(seed)
        longest = max(len(p) for p in prompts)
        tokens = torch.tensor(
            [[0] * (longest - len(p)) + list(p) for p in prompts], device=self.device
        )
        pad = torch.tensor([[True] * (longest - len(p)) + [False] * len(p) for p in prompts],
                           device=self.device)
        out: list[list[int]] = [[] for _ in prompts]
        for _ in range(max_new_tokens):
            window = slice(max(0, tokens.shape[1] - self.cfg.ctx_window), None)
            logits = self(tokens[:, window], pad=pad[:, window])[:, -1].float()
            nxt = _sample(logits, temperature, top_p, gen)
            tokens = torch.cat([tokens, nxt[:, None]], dim=1)
            pad = torch.cat([pad, torch.zeros_like(pad[:, :1])], dim=1)
            for row, t in zip(out, nxt.tolist(), strict=True):
                row.append(t)
        return out

    # ------------------------------------------------------- model interface
    # What the debugger, the records builder and the server know of a model's weights. Writes
    # are residual-stream vectors per unit of activation; with sandwich norms they include the
    # post-norm's gain, and the per-token division by its scale (hook `write_scale_location`)
    # is the caller's, since it depends on the prompt.

    @property
    def mlp_traced_location(self) -> str:
        """What tracing a neuron differentiates: its pre-activation, or for a gated MLP (which
        has none) its activation act(gate) * up."""
        return "mlp.post_act" if self.cfg.gated_mlp else "mlp.pre_act"

    def write_scale_location(self, sublayer: str) -> str | None:
        """Hook location of the per-token divisor of `sublayer`'s ("attn" or "mlp") writes, or
        None when they join the residual stream as they are."""
        return f"{sublayer}_post_ln.scale" if self.cfg.sandwich_norms else None

    def _post_gain(self, layer: int, sublayer: str) -> Tensor | None:
        if not self.cfg.sandwich_norms:
            return None
        norm: Norm = getattr(self.xf_layers[layer], f"post_{sublayer}_ln")
        return norm.gain()

    def mlp_write(self, layer: int) -> Tensor:
        """(d_model, d_mlp): column n is what neuron n writes per unit of activation."""
        blk: Any = self.xf_layers[layer]
        w: Tensor = blk.mlp.out_layer.weight
        gain = self._post_gain(layer, "mlp")
        return w if gain is None else w * gain[:, None]

    def mlp_write_onto(self, layer: int, directions: Tensor) -> Tensor:
        """(n, d_mlp) float32: directions (n, d_model) @ mlp_write(layer), the post-norm's gain
        applied to the directions instead of to every neuron's column."""
        blk: Any = self.xf_layers[layer]
        w: Tensor = blk.mlp.out_layer.weight
        gain = self._post_gain(layer, "mlp")
        d = directions.float() if gain is None else directions.float() * gain.float()
        return d @ w.float()

    def mlp_write_columns(self, layer: int, neurons: Tensor) -> Tensor:
        """(d_model, m): mlp_write(layer)[:, neurons], without scaling every column."""
        blk: Any = self.xf_layers[layer]
        w: Tensor = blk.mlp.out_layer.weight[:, neurons]
        gain = self._post_gain(layer, "mlp")
        return w if gain is None else w * gain[:, None]

    def head_write(self, layer: int) -> Tensor:
        """(n_heads, d_head, d_model): W_O split by head (row e of head h is what dimension e of
        that head's value output writes)."""
        cfg = self.cfg
        blk: Any = self.xf_layers[layer]
        w: Tensor = blk.attn.out_proj.weight
        gain = self._post_gain(layer, "attn")
        if gain is not None:
            w = w * gain[:, None]
        return w.T.reshape(cfg.n_heads, cfg.d_head, cfg.d_model)

    def bias_write(self, layer: int, sublayer: str) -> Tensor:
        """(d_model,): what `sublayer`'s output bias writes at every token (zeros if none)."""
        blk: Any = self.xf_layers[layer]
        bias = (blk.attn.out_proj if sublayer == "attn" else blk.mlp.out_layer).bias
        if bias is None:
            return torch.zeros(self.cfg.d_model, device=self.device, dtype=self.dtype)
        gain = self._post_gain(layer, sublayer)
        return bias if gain is None else bias * gain

    def kv_head(self, head: int) -> int:
        """The key/value head that query head `head` reads (itself without grouped queries)."""
        return head // (self.cfg.n_heads // self.cfg.kv_heads)

    def expand_kv(self, x: Tensor) -> Tensor:
        """Key/value heads (..., kv_heads, d_head) repeated to one per query head."""
        group = self.cfg.n_heads // self.cfg.kv_heads
        return x if group == 1 else x.repeat_interleave(group, dim=-2)

    def token_embeddings(self) -> Tensor:
        """(n_vocab, d_model): what each token adds to the residual stream (positions aside)."""
        w = self.tok_embed.weight
        return w * torch.tensor(self.cfg.embed_scale, dtype=w.dtype) if self.cfg.embed_scale != 1.0 else w

    def input_norm_gain(self, layer: int, sublayer: str) -> Tensor:
        """The gain of the norm in front of `sublayer` ("attn" or "mlp") at `layer`."""
        blk: Any = self.xf_layers[layer]
        norm: Norm = blk.ln_1 if sublayer == "attn" else blk.ln_2
        return norm.gain()

    def normalized(self, x: Tensor) -> Tensor:
        """x as a block's input norm sees it, before the gain: centred and divided by its standard
        deviation (LayerNorm), or divided by its root mean square (RMSNorm)."""
        x = x.float()
        if self.cfg.norm == "layernorm":
            x = x - x.mean(-1, keepdim=True)
        return x / (x.pow(2).mean(-1, keepdim=True) + self.cfg.norm_eps).sqrt()

    def read_tokens(self, directions: Tensor) -> Tensor:
        """(n, n_vocab): each direction (n, d_model), in the space of a block's input norm before
        its gain, dotted with every token embedding as that norm normalizes it, without
        materialising the normalized embedding matrix."""
        w, s = self.tok_embed.weight, self.cfg.embed_scale
        key = (w.data_ptr(), w._version)
        if self._token_stats is None or self._token_stats[0] != key:
            with torch.no_grad():
                e = w.float() * s
                if self.cfg.norm == "layernorm":
                    mean, var = e.mean(-1), e.var(-1, unbiased=False)
                else:
                    mean, var = torch.zeros_like(e[:, 0]), e.pow(2).mean(-1)
                scale = (var + self.cfg.norm_eps).sqrt()
            self._token_stats = (key, mean, scale)
        _, mean, scale = self._token_stats
        raw = (directions.to(w.dtype) @ w.T).float() * s
        return (raw - directions.float().sum(-1, keepdim=True) * mean) / scale

    def vocab_scores(self, writes: Tensor, reads: Tensor) -> tuple[Tensor, Tensor]:
        """(logit_lens(writes), reads @ token_embeddings().T) in as few passes over the vocabulary
        as the weights allow: one when the unembedding is the token embedding matrix (tied), so
        that scoring many nodes' writes and reads costs one (memory-bound) matmul."""
        w = self.unembed.weight
        tied = w.data_ptr() == self.tok_embed.weight.data_ptr()
        if not tied or not len(writes) or not len(reads):
            return self.logit_lens(writes), (_times_vocab(reads.float(), self.token_embeddings().float()) if len(reads) else reads.new_zeros(0, w.shape[0]))
        rows = torch.cat([self._lens_rows(writes), reads.float() * self.cfg.embed_scale])
        scores = _times_vocab(rows.to(w.dtype), w).float()
        return scores[: len(writes)], scores[len(writes) :]

    def _lens_rows(self, writes: Tensor) -> Tensor:
        """Rows whose product with the unembedding is the logit lens of `writes`."""
        w = writes.float()
        if self.cfg.norm == "layernorm":
            w = w - w.mean(-1, keepdim=True)
        return w * self.final_ln.gain().float()

    def logit_lens(self, writes: Tensor) -> Tensor:
        """(n, n_vocab) logits that residual-stream vectors (n, d_model) add through the final
        norm (its scale held constant, so only centring and gain act) and the unembedding,
        before any soft-cap."""
        return _times_vocab(self._lens_rows(writes), self.unembed.weight.float())

    def queries(self, layer: int, normed: Tensor, positions: Tensor) -> Tensor:
        """(n, n_heads, d_head) queries of normalized inputs (n, d_model) at positions (n,)."""
        return self._project(layer, "q", normed[None], self._cos_sin(positions))[0]

    def keys(self, layer: int, normed: Tensor, positions: Tensor) -> Tensor:
        """(n, kv_heads, d_head) keys of normalized inputs (n, d_model) at positions (n,)."""
        return self._project(layer, "k", normed[None], self._cos_sin(positions))[0]

    def _cos_sin(self, positions: Tensor) -> tuple[Tensor, Tensor] | None:
        if self.cfg.positions != "rotary":
            return None
        return rope.cos_sin(self.inv_freq, positions[None], self.dtype)

    def mlp_activation(self, traced: Tensor) -> Tensor:
        """An ungated MLP's activations from its pre-activations (mlp_traced's values)."""
        return self._act(traced)

    def mlp_traced(self, layer: int, normed: Tensor) -> Tensor:
        """(..., d_mlp): the traced MLP quantity (see mlp_traced_location) of normalized inputs."""
        mlp: Any = self.xf_layers[layer].mlp
        if self.cfg.gated_mlp:
            return self._act(mlp.gate_layer(normed)) * mlp.in_layer(normed)
        return mlp.in_layer(normed)

    def mlp_traced_read(self, layer: int, normed: Tensor, neurons: Tensor) -> Tensor:
        """(m, d_model) float32: d mlp_traced(normed[i])[neurons[i]] / d normed[i] for normalized
        inputs (m, d_model), from those neurons' weight rows alone (what autograd through
        mlp_traced gives, without reading the whole MLP twice)."""
        mlp: Any = self.xf_layers[layer].mlp
        x = normed.float()

        def rows(linear: nn.Linear) -> tuple[Tensor, Tensor]:  # (rows, pre-activations)
            w = linear.weight[neurons].float()
            pre = (x * w).sum(-1)
            return w, pre if linear.bias is None else pre + linear.bias[neurons].float()

        up, up_pre = rows(mlp.in_layer)
        if not self.cfg.gated_mlp:
            return up
        gate, gate_pre = rows(mlp.gate_layer)
        with torch.enable_grad():
            z = gate_pre.detach().requires_grad_(True)
            act = self._act(z)
            (slope,) = torch.autograd.grad(act.sum(), z)
        # d [act(gate . x) * (up . x)] = act'(gate . x) (up . x) gate + act(gate . x) up
        return (slope * up_pre)[:, None] * gate + act.detach()[:, None] * up


def _forward_order(name: str) -> tuple[float, int]:
    """Where a model hook point comes in the forward pass, as a sortable key."""
    if name.startswith("blocks."):
        _, layer, location = name.split(".", 2)
        return int(layer), BLOCK_LOCATIONS.index(location)
    return (-1, 0) if name == "resid.post_emb" else (float("inf"), MODEL_LOCATIONS.index(name))


def _causal(s: int, device: torch.device, window: int | None = None) -> Tensor:
    """(s, s) bools: query i may see key j. With a window, only the last `window` keys."""
    allowed = torch.ones(s, s, dtype=torch.bool, device=device).tril()
    return allowed if window is None else allowed.triu(-(window - 1))


def _sample(logits: Tensor, temperature: float, top_p: float | None, gen: torch.Generator) -> Tensor:
    if temperature == 0:
        return logits.argmax(-1)
    probs = torch.softmax(logits / temperature, dim=-1)
    if top_p is not None:
        sorted_probs, order = probs.sort(dim=-1, descending=True)
        # drop a token when the tokens before it already hold top_p of the mass
        drop = sorted_probs.cumsum(-1) - sorted_probs >= top_p
        sorted_probs = sorted_probs.masked_fill(drop, 0.0)
        probs = torch.zeros_like(probs).scatter(-1, order, sorted_probs)
    return torch.multinomial(probs, 1, generator=gen).squeeze(-1)


# oneDNN's inner-product op (torch.ops.mkldnn), where this build of torch has it
_LOGIT_ROWS = 64  # rows of logits at a time where they are only summed (GPT-2: 13 MB)
_ONEDNN_LINEAR = torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise")


def _times_vocab(rows: Tensor, vocab: Tensor) -> Tensor:
    """rows (n, d) @ vocab (n_vocab, d).T as a contiguous (n, n_vocab) tensor (a top-k along
    its rows is ~3x faster than along a transposed view's).

    On the CPU in fp32 this calls oneDNN's inner product directly: aten's matmul calls MKL,
    whose fp32 kernels on AMD CPUs run at about half the speed (GPT-2's vocabulary, 136 rows, 2
    threads of an AVX-512 EPYC: 59 ms against 105 ms for MKL's best layout, the same sums to
    1e-6); the op has no backward, so not under autograd. Elsewhere: vocab @ rows.T, the rows
    padded to a multiple of 8 (MKL's kernels slow down ~1.5x otherwise), transposed and copied."""
    differentiated = torch.is_grad_enabled() and (rows.requires_grad or vocab.requires_grad)
    if _ONEDNN_LINEAR and not differentiated and rows.device.type == "cpu" and rows.dtype == vocab.dtype == torch.float32:
        return torch.ops.mkldnn._linear_pointwise(rows.contiguous(), vocab.contiguous(), None, "none", [], "")
    n = rows.shape[0]
    if n % 8:
        rows = torch.cat([rows, rows.new_zeros(8 - n % 8, rows.shape[1])])
    return (vocab @ rows.T).T[:n].contiguous()
