"""What a transformer looks like, in one frozen dataclass that every family fills in.

One configurable transformer (`transformer.Transformer`) covers GPT-2, GPT-NeoX / Pythia, Llama,
Qwen, Mistral and Gemma 2; the families differ only in the switches below (the same idea as
TransformerLens' `HookedTransformerConfig`). A family file in `families/` turns a Hugging Face
`config.json` into one of these and says where each weight comes from; nothing else depends on
the family.

Switches and the families that set them:

- `norm`: "layernorm" (GPT-2, NeoX) or "rmsnorm" (Llama, Qwen, Mistral, Gemma 2);
  `norm_offset` 1 means the gain is stored as w and applied as (1 + w) (Gemma).
- `positions`: "learned" (GPT-2) or "rotary" (the others); `rotary_dim` < d_head rotates only
  the first dimensions of each head (Pythia); `rope_scaling` holds a `rope_type` ("llama3",
  "linear") and its parameters.
- `gated_mlp`: the MLP computes act(gate(x)) * up(x) (SwiGLU, GeGLU) instead of act(in(x)).
- `parallel`: attention and MLP both read the block's input (NeoX's use_parallel_residual).
- `qk_norm`: RMSNorm over each head's query and key before the rotation (Qwen3).
- `sandwich_norms`: a norm after each sublayer too, before its write joins the residual
  stream (Gemma 2).
- `n_kv_heads` < n_heads: grouped-query attention (query head h uses key/value head
  h // (n_heads / n_kv_heads)).
- `embed_scale`: token embeddings are multiplied by it (Gemma: sqrt(d_model)).
- `attn_scale`: multiplies query·key (default 1/sqrt(d_head); Gemma: query_pre_attn_scalar^-0.5).
- `attn_softcap` / `final_softcap`: x -> cap * tanh(x / cap) on attention scores / on logits.
- `sliding_window` with `sliding_layers`: those layers' queries see only the last
  `sliding_window` keys (Mistral: every layer; Gemma 2: every other one).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Literal

Norm = Literal["layernorm", "rmsnorm"]
Positions = Literal["learned", "rotary"]
Activation = Literal["gelu_tanh", "gelu", "silu", "relu"]


@dataclass(frozen=True)
class TransformerConfig:
    family: str = "gpt2"
    n_layers: int = 12
    d_model: int = 768
    n_heads: int = 12
    d_head: int = None  # type: ignore[assignment]  # None: d_model // n_heads
    n_kv_heads: int | None = None  # None: as many as query heads
    d_mlp: int = None  # type: ignore[assignment]  # None: 4 * d_model
    n_vocab: int = 50257
    ctx_window: int = 1024

    norm: Norm = "layernorm"
    norm_eps: float = 1e-5
    norm_offset: float = 0.0
    positions: Positions = "learned"
    rotary_dim: int | None = None  # None: the whole head
    rope_theta: float = 10000.0
    rope_scaling: Mapping[str, Any] | None = None
    activation: Activation = "gelu_tanh"
    gated_mlp: bool = False
    parallel: bool = False
    qkv_bias: bool = True
    out_bias: bool = True  # attention output projection
    mlp_bias: bool = True
    qk_norm: bool = False
    sandwich_norms: bool = False
    embed_scale: float = 1.0
    attn_scale: float | None = None
    attn_softcap: float | None = None
    final_softcap: float | None = None
    sliding_window: int | None = None
    sliding_layers: tuple[int, ...] = ()
    tie_embeddings: bool = False

    # the tokenizer: "gpt2" (tiktoken's GPT-2 BPE), or a path relative to the model folder of a
    # tiktoken rank file (ours) or a Hugging Face tokenizer.json
    tokenizer: str = "gpt2"
    bos_token_id: int | None = None

    extra: Mapping[str, Any] = field(default_factory=dict)  # informational, e.g. the HF model_type

    def __post_init__(self) -> None:
        if self.d_head is None:
            if self.d_model % self.n_heads:
                raise ValueError(f"d_model={self.d_model} does not divide into {self.n_heads} heads")
            object.__setattr__(self, "d_head", self.d_model // self.n_heads)
        if self.d_mlp is None:
            object.__setattr__(self, "d_mlp", 4 * self.d_model)
        if self.n_kv_heads is not None and self.n_heads % self.n_kv_heads:
            raise ValueError(f"n_heads={self.n_heads} is not a multiple of n_kv_heads={self.n_kv_heads}")
        if self.rotary_dim is not None and (self.rotary_dim % 2 or self.rotary_dim > self.d_head):
            raise ValueError(f"rotary_dim={self.rotary_dim} must be even and at most d_head={self.d_head}")
        if any(not 0 <= i < self.n_layers for i in self.sliding_layers):
            raise ValueError(f"sliding_layers {self.sliding_layers} are not all layers of {self.n_layers}")
        if self.sliding_layers and not self.sliding_window:
            raise ValueError("sliding_layers needs a sliding_window")

    @property
    def kv_heads(self) -> int:
        return self.n_kv_heads or self.n_heads

    @property
    def d_attn(self) -> int:
        return self.n_heads * self.d_head

    @property
    def rotary_dims(self) -> int:
        return self.rotary_dim or self.d_head

    @property
    def scale(self) -> float:
        return self.attn_scale if self.attn_scale is not None else self.d_head**-0.5

    def window(self, layer: int) -> int | None:
        """How many keys (itself included) a query at `layer` sees, or None for all."""
        return self.sliding_window if layer in self.sliding_layers else None

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["sliding_layers"] = list(self.sliding_layers)
        d["rope_scaling"] = dict(self.rope_scaling) if self.rope_scaling else None
        d["extra"] = dict(self.extra)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> TransformerConfig:
        if "enc" in d or "m_mlp" in d:  # the GPT-2 fields of format version 1
            return cls.from_openai(d)
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown model config fields {sorted(unknown)}; known: {sorted(known)}")
        d = dict(d)
        if "sliding_layers" in d:
            d["sliding_layers"] = tuple(d["sliding_layers"])
        return cls(**d)

    @classmethod
    def from_openai(cls, d: Mapping[str, Any]) -> TransformerConfig:
        """OpenAI's published GPT-2 `config.json` (enc, ctx_window, d_model, n_layers, m_attn,
        n_heads, m_mlp[, n_vocab, layer_norm_eps]); also our own format's version 1."""
        known = {"enc", "ctx_window", "d_model", "n_layers", "m_attn", "n_heads", "m_mlp", "n_vocab", "layer_norm_eps"}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown model config fields {sorted(unknown)}; known: {sorted(known)}")
        d_model, n_heads = int(d.get("d_model", 768)), int(d.get("n_heads", 12))
        d_attn = int(d_model * float(d.get("m_attn", 1)))
        if d_attn % n_heads:
            raise ValueError("attention width must divide into heads")
        return cls(
            family="gpt2",
            n_layers=int(d.get("n_layers", 12)),
            d_model=d_model,
            n_heads=n_heads,
            d_head=d_attn // n_heads,
            d_mlp=int(d_model * float(d.get("m_mlp", 4))),
            n_vocab=int(d.get("n_vocab", 50257)),
            ctx_window=int(d.get("ctx_window", 1024)),
            norm_eps=float(d.get("layer_norm_eps", 1e-5)),
            tokenizer=str(d.get("enc", "gpt2")),
        )

    def to_openai(self) -> dict[str, Any]:
        """OpenAI's GPT-2 config.json fields for this config (a GPT-2-shaped one only)."""
        gpt2 = TransformerConfig.from_openai({})
        differs = [
            f.name for f in fields(self)
            if f.name not in ("n_layers", "d_model", "n_heads", "d_head", "d_mlp", "n_vocab", "ctx_window", "norm_eps", "tokenizer", "tie_embeddings", "extra")
            and getattr(self, f.name) != getattr(gpt2, f.name)
        ]
        if differs:
            raise ValueError(f"OpenAI's layout holds GPT-2s only; this config differs in {differs}")
        return {
            "enc": self.tokenizer,
            "ctx_window": self.ctx_window,
            "d_model": self.d_model,
            "n_layers": self.n_layers,
            "m_attn": self.d_attn / self.d_model,
            "n_heads": self.n_heads,
            "m_mlp": self.d_mlp / self.d_model,
            "n_vocab": self.n_vocab,
            "layer_norm_eps": self.norm_eps,
        }

