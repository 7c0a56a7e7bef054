"""GPT-2 with named hook points, in one file.

Every activation the debugger reads passes through `self.hook(name, x)`. A hook point name is
`blocks.{layer}.{location}` inside a block, or just `{location}` outside one; the locations are
the seed's activation location strings (`mlp.post_act`, `attn.qk_probs`, `resid.delta_attn`, ...),
see `hook_name` and HOOK_LOCATIONS. Hooks are plain functions:

- forward hooks get the activation and may return a replacement (or None to leave it as is);
- backward hooks get the gradient flowing back into that activation and may return a
  replacement gradient.

With no hooks registered a hook point costs one dict lookup. Parameter names follow OpenAI's
published checkpoint layout (`xf_layers.{i}.attn.q_proj.weight`, ...), so that layout loads as a
plain state dict.

Tensor layouts seen by hooks (b = batch, s = sequence, h = heads):
  resid.*, *.delta_*          (b, s, d_model)
  *_ln.scale, resid.ln_f.scale (b, s, 1)
  attn.q / attn.k / attn.v    (b, s, h, d_head)
  attn.qk_logits / qk_probs   (b, h, s_query, s_key)   logits already scaled by 1/sqrt(d_head)
  attn.v_out                  (b, s, h, d_head)        probs-weighted sum of values, per head
  attn.head_out               (b, s, h, d_model)       each head's write; only computed if hooked
  mlp.pre_act / mlp.post_act  (b, s, d_ff)
  logits                      (b, s, n_vocab)
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from typing import TYPE_CHECKING, Any

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

if TYPE_CHECKING:
    from neuron_explainer.models.autoencoder import SparseAutoencoder

Hook = Callable[[Tensor], Tensor | None]

# Hook point locations inside each block, in the order the forward pass reaches them.
BLOCK_LOCATIONS = (
    "attn_ln.scale",
    "resid.post_attn_ln",
    "attn.q",
    "attn.k",
    "attn.v",
    "attn.qk_logits",
    "attn.qk_probs",
    "attn.v_out",
    "attn.head_out",
    "resid.delta_attn",
    "resid.post_attn",
    "mlp_ln.scale",
    "resid.post_mlp_ln",
    "mlp.pre_act",
    "mlp.post_act",
    "resid.delta_mlp",
    "resid.post_mlp",
)
# Hook point locations outside the blocks.
MODEL_LOCATIONS = ("resid.post_emb", "resid.ln_f.scale", "resid.post_ln_f", "logits")
HOOK_LOCATIONS = MODEL_LOCATIONS + BLOCK_LOCATIONS


def hook_name(location: str, layer: int | None = None) -> str:
    """The stable name of a hook point: `blocks.3.mlp.post_act`, or `logits` for layerless ones."""
    return location if layer is None else f"blocks.{layer}.{location}"


@dataclass(frozen=True)
class TransformerConfig:
    """Field names follow OpenAI's published `config.json`; extra fields are ours."""

    enc: str = "gpt2"  # tokenizer: "gpt2" or a tokenizer file relative to the model folder
    ctx_window: int = 1024
    d_model: int = 768
    n_layers: int = 12
    m_attn: float = 1  # attention width as a multiple of d_model
    n_heads: int = 12
    m_mlp: float = 4  # MLP width as a multiple of d_model
    n_vocab: int = 50257
    layer_norm_eps: float = 1e-5

    @property
    def d_ff(self) -> int:
        return int(self.d_model * self.m_mlp)

    @property
    def d_attn(self) -> int:
        return int(self.d_model * self.m_attn)

    @property
    def d_head(self) -> int:
        assert self.d_attn % self.n_heads == 0, "attention width must divide into heads"
        return self.d_attn // self.n_heads

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> TransformerConfig:
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown model config fields {sorted(unknown)}; known: {sorted(known)}")
        return cls(**d)


class Block(nn.Module):
    def __init__(self, cfg: TransformerConfig):
        super().__init__()
        self.ln_1 = nn.LayerNorm(cfg.d_model, eps=cfg.layer_norm_eps)
        self.attn = nn.Module()
        self.attn.q_proj = nn.Linear(cfg.d_model, cfg.d_attn)
        self.attn.k_proj = nn.Linear(cfg.d_model, cfg.d_attn)
        self.attn.v_proj = nn.Linear(cfg.d_model, cfg.d_attn)
        self.attn.out_proj = nn.Linear(cfg.d_attn, cfg.d_model)
        self.ln_2 = nn.LayerNorm(cfg.d_model, eps=cfg.layer_norm_eps)
        self.mlp = nn.Module()
        self.mlp.in_layer = nn.Linear(cfg.d_model, cfg.d_ff)
        self.mlp.out_layer = nn.Linear(cfg.d_ff, cfg.d_model)


class Transformer(nn.Module):
    def __init__(self, cfg: TransformerConfig):
        super().__init__()
        self.cfg = cfg
        self.tok_embed = nn.Embedding(cfg.n_vocab, cfg.d_model)
        self.pos_embed = nn.Embedding(cfg.ctx_window, cfg.d_model)
        self.xf_layers = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layers))
        self.final_ln = nn.LayerNorm(cfg.d_model, eps=cfg.layer_norm_eps)
        self.unembed = nn.Linear(cfg.d_model, cfg.n_vocab, bias=False)
        self._fwd_hooks: dict[str, list[Hook]] = {}
        self._bwd_hooks: dict[str, list[Hook]] = {}
        # hook point name -> (autoencoder, name of the hook point for its latents)
        self._autoencoders: dict[str, tuple[SparseAutoencoder, str]] = {}
        self.source: str | None = None  # folder or URL the weights came from (set by loading.py)
        self.tokenizer_path: str = cfg.enc  # what to pass to tokenizer.get_tokenizer

    def init_weights(self, seed: int = 0, std: float = 0.02) -> Transformer:
        """GPT-2's initialisation: N(0, 0.02), residual writes scaled by 1/sqrt(2 n_layers)."""
        gen = torch.Generator().manual_seed(seed)
        for name, p in self.named_parameters():
            with torch.no_grad():
                if name.endswith("bias"):
                    p.zero_()
                elif "ln" in name.split(".")[-2] or name.startswith("final_ln"):
                    p.fill_(1.0)
                else:
                    scale = std / math.sqrt(2 * self.cfg.n_layers) if "out_" in name else std
                    p.copy_(torch.randn(p.shape, generator=gen) * scale)
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
        if name in self._autoencoders:
            x = self._through_autoencoder(x, *self._autoencoders[name])
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

    def _check_hook_name(self, name: str) -> None:
        if name in MODEL_LOCATIONS or any(n == name for _, n in self._autoencoders.values()):
            return
        parts = name.split(".", 2)
        ok = (
            len(parts) == 3
            and parts[0] == "blocks"
            and parts[1].isdigit()
            and int(parts[1]) < self.cfg.n_layers
            and parts[2] in BLOCK_LOCATIONS
        )
        if not ok:
            raise ValueError(f"unknown hook point {name!r}; see transformer.HOOK_LOCATIONS")

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

    # ---------------------------------------------------------- autoencoders

    def add_autoencoder(self, at: str, ae: SparseAutoencoder, latents_name: str) -> None:
        """Route the activation at hook point `at` through `ae`, exposing its latents as hook
        point `latents_name`. The model's output is unchanged (the reconstruction error is added
        back), but ablating or reading gradients of latents now works like for any activation."""
        self._check_hook_name(at)
        self._autoencoders[at] = (ae, latents_name)

    def remove_autoencoders(self) -> None:
        self._autoencoders.clear()

    def _through_autoencoder(self, x: Tensor, ae: SparseAutoencoder, latents_name: str) -> Tensor:
        latents = ae.encode(x.to(ae.dtype))
        # error = x - decode(encode(x)) keeps its gradient path to x, so d(out)/dx is exactly the
        # identity and upstream gradients are those of the plain model.
        error = x - ae.decode(latents).to(x.dtype)
        # The hook point gets its own tensor: were it `latents` itself, its gradient would sum
        # both decode paths, which cancel to exactly zero (and in-place edits by hooks would
        # corrupt what `error`'s backward saved).
        hooked = self.hook(latents_name, latents.clone() if self._hooked(latents_name) else latents)
        return ae.decode(hooked).to(x.dtype) + error

    # --------------------------------------------------------------- forward

    def _layer_norm(self, x: Tensor, ln: nn.LayerNorm, scale_name: str) -> Tensor:
        # Written out (not F.layer_norm) so the scale is a hook point: the debugger detaches it.
        # Always in fp32: half precision loses too much in the variance.
        x32 = x.to(torch.promote_types(x.dtype, torch.float32))
        centered = x32 - x32.mean(-1, keepdim=True)
        scale = (centered.pow(2).mean(-1, keepdim=True) + ln.eps).sqrt()
        scale = self.hook(scale_name, scale)
        return (centered / scale * ln.weight.to(x32.dtype) + ln.bias.to(x32.dtype)).to(x.dtype)

    def _attention(self, i: int, x: Tensor, mask: Tensor | None) -> Tensor:
        blk: Any = self.xf_layers[i]
        b, s, _ = x.shape
        h, dh = self.cfg.n_heads, self.cfg.d_head
        p = f"blocks.{i}."
        q = self.hook(p + "attn.q", blk.attn.q_proj(x).view(b, s, h, dh))
        k = self.hook(p + "attn.k", blk.attn.k_proj(x).view(b, s, h, dh))
        v = self.hook(p + "attn.v", blk.attn.v_proj(x).view(b, s, h, dh))
        q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)  # (b, h, s, dh)
        if self._hooked(p + "attn.qk_logits") or self._hooked(p + "attn.qk_probs"):
            logits = (q @ k.transpose(-1, -2)) / math.sqrt(dh)
            allowed = mask if mask is not None else _causal(s, x.device)
            logits = logits.masked_fill(~allowed, float("-inf"))
            logits = self.hook(p + "attn.qk_logits", logits)
            probs = torch.softmax(logits.to(torch.promote_types(logits.dtype, torch.float32)), dim=-1).to(v.dtype)
            probs = self.hook(p + "attn.qk_probs", probs)
            out = probs @ v
        else:  # fused kernel when nobody looks at the attention pattern
            out = F.scaled_dot_product_attention(
                q, k, v, attn_mask=mask, is_causal=mask is None
            )
        out = self.hook(p + "attn.v_out", out.transpose(1, 2))  # (b, s, h, dh)
        w, bias = blk.attn.out_proj.weight, blk.attn.out_proj.bias
        if self._hooked(p + "attn.head_out"):
            w_heads = w.view(self.cfg.d_model, h, dh)
            head_out = self.hook(p + "attn.head_out", torch.einsum("bshe,dhe->bshd", out, w_heads))
            return head_out.sum(2) + bias
        return F.linear(out.reshape(b, s, h * dh), w, bias)

    def forward(self, tokens: Tensor, pad: Tensor | None = None) -> Tensor:
        """tokens: (b, s) ints. pad: (b, s) bools, True where a position is padding (left or
        right); padded keys are never attended to and positions count only real tokens."""
        b, s = tokens.shape
        if s > self.cfg.ctx_window:
            raise ValueError(f"sequence of {s} tokens exceeds the context window {self.cfg.ctx_window}")
        mask = None
        if pad is None:
            pos = torch.arange(s, device=tokens.device).expand(b, s)
        else:
            pos = ((~pad).long().cumsum(-1) - 1).clamp(min=0)
            # (b, 1, q, k); the diagonal keeps rows of padded queries from being empty (NaNs)
            eye = torch.eye(s, dtype=torch.bool, device=tokens.device)
            mask = (_causal(s, tokens.device) & ~pad[:, None, None, :]) | eye
        x = self.hook("resid.post_emb", self.tok_embed(tokens) + self.pos_embed(pos))
        blk: Any
        for i, blk in enumerate(self.xf_layers):
            p = f"blocks.{i}."
            ln_x = self.hook(p + "resid.post_attn_ln", self._layer_norm(x, blk.ln_1, p + "attn_ln.scale"))
            x = x + self.hook(p + "resid.delta_attn", self._attention(i, ln_x, mask))
            x = self.hook(p + "resid.post_attn", x)
            ln_x = self.hook(p + "resid.post_mlp_ln", self._layer_norm(x, blk.ln_2, p + "mlp_ln.scale"))
            pre = self.hook(p + "mlp.pre_act", blk.mlp.in_layer(ln_x))
            post = self.hook(p + "mlp.post_act", F.gelu(pre, approximate="tanh"))
            x = x + self.hook(p + "resid.delta_mlp", blk.mlp.out_layer(post))
            x = self.hook(p + "resid.post_mlp", x)
        x = self.hook("resid.post_ln_f", self._layer_norm(x, self.final_ln, "resid.ln_f.scale"))
        return self.hook("logits", self.unembed(x))

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


def _causal(s: int, device: torch.device) -> Tensor:
    return torch.ones(s, s, dtype=torch.bool, device=device).tril()


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
