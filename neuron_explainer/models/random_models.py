"""Random-weight checkpoints of every supported family in the Hugging Face layout, built with
`transformers` itself: what the parity tests, the benchmarks and the viewer's end-to-end tests
load (no real weights of these families are reachable offline).

`save_random(family, folder)` writes config.json + model.safetensors (by `save_pretrained`) and a
small byte-level BPE tokenizer.json trained here in a second, with a BOS post-processor for the
families whose tokenizers add one. Weights are redrawn so that every norm gain and bias matters
and attention patterns are far from uniform. Needs `transformers` (a test dependency).
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch

# family -> (transformers config class name, its kwargs); small, but with every feature on:
# grouped queries, llama3 rope scaling, partial rotary, sliding windows shorter than the tests'
# prompts, soft-caps that bite.
SMALL: dict[str, tuple[str, dict[str, Any]]] = {
    "gpt2": ("GPT2Config", dict(n_embd=64, n_layer=2, n_head=4, n_positions=64)),
    "gpt_neox": (
        "GPTNeoXConfig",
        dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128,
             max_position_embeddings=64, rotary_pct=0.25, use_parallel_residual=True),
    ),
    "gpt_neox_sequential": (
        "GPTNeoXConfig",
        dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128,
             max_position_embeddings=64, rotary_pct=0.5, use_parallel_residual=False),
    ),
    "llama": (
        "LlamaConfig",
        dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
             intermediate_size=96, max_position_embeddings=64, tie_word_embeddings=False,
             rope_scaling={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                           "high_freq_factor": 4.0, "original_max_position_embeddings": 8}),
    ),
    "llama_tied": (
        "LlamaConfig",
        dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=1,
             intermediate_size=96, max_position_embeddings=64, tie_word_embeddings=True,
             attention_bias=True, mlp_bias=True),
    ),
    "qwen2": (
        "Qwen2Config",
        dict(hidden_size=64, num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=2,
             intermediate_size=96, max_position_embeddings=64, use_sliding_window=True,
             sliding_window=5, max_window_layers=1),
    ),
    "qwen3": (
        "Qwen3Config",
        dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
             head_dim=32, intermediate_size=96, max_position_embeddings=64),
    ),
    "mistral": (
        "MistralConfig",
        dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
             intermediate_size=96, max_position_embeddings=64, sliding_window=5),
    ),
    "gemma2": (
        "Gemma2Config",
        dict(hidden_size=64, num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=2,
             head_dim=16, intermediate_size=96, max_position_embeddings=64, sliding_window=5,
             query_pre_attn_scalar=24, attn_logit_softcapping=3.0, final_logit_softcapping=5.0),
    ),
}
FAMILIES = tuple(SMALL)
_BOS = {"llama", "llama_tied", "gemma2", "mistral"}  # their tokenizers put <bos> first
VOCAB = 320

_TEXT = (
    "When Mary and John went to the store, John gave a drink to Mary. The quick brown fox "
    "jumps over the lazy dog. It was the best of times, it was the worst of times. Alice was "
    "beginning to get very tired of sitting by her sister on the bank. 0123456789 ,.;:!? "
)


def make_tokenizer(folder: Path, vocab_size: int = VOCAB, bos: bool = False, texts: Iterable[str] = (_TEXT,)) -> Path:
    """Train a byte-level BPE `tokenizer.json` in `folder` (with a "<bos> $A" post-processor
    when `bos`)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    specials = ["<bos>", "<eos>", "<pad>"]
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False,
    )
    tok.train_from_iterator(list(texts) * 4, trainer)
    if bos:
        tok.post_processor = processors.TemplateProcessing(single="<bos> $A", special_tokens=[("<bos>", 0)])
    folder.mkdir(parents=True, exist_ok=True)
    tok.save(str(folder / "tokenizer.json"))
    return folder / "tokenizer.json"


# GPT-2 small's shape (12 layers, d_model 768, 12 heads, MLP 3072, vocabulary 50257), spelled in
# each config class's own field names; grouped-query families get 4 key/value heads.
_GPT2_SMALL = dict(d_model=768, n_layers=12, n_heads=12, kv_heads=4, d_mlp=3072, vocab=50257, ctx=1024)
_FIELD_NAMES = {
    "GPT2Config": dict(d_model="n_embd", n_layers="n_layer", n_heads="n_head", d_mlp="n_inner", ctx="n_positions"),
    "GPTNeoXConfig": dict(d_model="hidden_size", n_layers="num_hidden_layers", n_heads="num_attention_heads",
                          d_mlp="intermediate_size", ctx="max_position_embeddings"),
}
_LLAMA_NAMES = dict(d_model="hidden_size", n_layers="num_hidden_layers", n_heads="num_attention_heads",
                    kv_heads="num_key_value_heads", d_mlp="intermediate_size", ctx="max_position_embeddings")


def gpt2_small_sized(family: str) -> dict[str, Any]:
    """Config overrides that give `family` GPT-2 small's size (for benchmarks)."""
    class_name, base = SMALL[family]
    names = _FIELD_NAMES.get(class_name, _LLAMA_NAMES)
    out: dict[str, Any] = {names[k]: v for k, v in _GPT2_SMALL.items() if k in names}
    out["vocab_size"] = _GPT2_SMALL["vocab"]
    if "head_dim" in base:
        out["head_dim"] = _GPT2_SMALL["d_model"] // _GPT2_SMALL["n_heads"]
    if "num_key_value_heads" in base and base["num_key_value_heads"] == 1:
        out["num_key_value_heads"] = 1
    return out


def hf_model(family: str, seed: int = 0, **overrides: Any) -> Any:
    """A random `transformers` model of `family` (a key of SMALL), in eval mode, fp32, eager
    attention (so output_attentions returns the probabilities the forward uses)."""
    import transformers

    class_name, kwargs = SMALL[family]
    kwargs = {**kwargs, **overrides}
    # GPT-2 keeps tiktoken's BPE, so it needs GPT-2's vocabulary
    kwargs.setdefault("vocab_size", 50257 if class_name == "GPT2Config" else VOCAB)
    kwargs.setdefault("bos_token_id", 0)
    kwargs.setdefault("eos_token_id", 1)
    if class_name != "GPT2Config":
        kwargs.setdefault("pad_token_id", 2)
    config = getattr(transformers, class_name)(**kwargs)
    config._attn_implementation = "eager"
    torch.manual_seed(seed)
    model = transformers.AutoModelForCausalLM.from_config(config, attn_implementation="eager").eval()
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=gen)
            is_norm = "norm" in name or ".ln" in name or "ln_f" in name
            if is_norm and name.endswith("weight"):
                base = 0.0 if class_name == "Gemma2Config" else 1.0  # Gemma applies (1 + w)
                p.copy_(base + 0.2 * noise)
            elif name.endswith("bias"):
                p.copy_(0.1 * noise)
            else:
                p.copy_(noise * (1.0 / p.shape[-1] ** 0.5 if p.ndim > 1 else 0.1))
    return model


def save_random(family: str, folder: Path, seed: int = 0, texts: Iterable[str] = (_TEXT,), **overrides: Any) -> tuple[Path, Any]:
    """(folder, the transformers model) for a random `family` checkpoint saved in `folder`, with
    a tokenizer trained on `texts` (GPT-2 keeps tiktoken's BPE)."""
    model = hf_model(family, seed, **overrides)
    model.save_pretrained(folder)
    if family != "gpt2":
        make_tokenizer(folder, bos=family in _BOS, texts=texts)
    return folder, model
