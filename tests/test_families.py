"""Every family against `transformers` itself: random small checkpoints saved in the Hugging Face
layout, loaded by us, compared on logits, input gradients, every layer's residual stream,
attention probabilities and batching (offline, CPU, fp32; bf16/fp16 against our fp32 and
against `transformers` in the same dtype)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import Tensor

from neuron_explainer.models.loading import ModelLoadError, load_model, save_model, tokenizer_of
from neuron_explainer.models.random_models import FAMILIES, save_random
from neuron_explainer.models.transformer import Transformer

pytest.importorskip("transformers")


@pytest.fixture(scope="module", params=FAMILIES)
def pair(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Transformer, Any, Path]:
    torch.set_num_threads(1)
    family = request.param
    folder, hf = save_random(family, tmp_path_factory.mktemp(family))
    return family, load_model(folder), hf, folder


def toks(batch: int = 2, seq: int = 11, seed: int = 0) -> Tensor:
    # longer than the sliding windows (5), so the windows matter
    return torch.randint(3, 300, (batch, seq), generator=torch.Generator().manual_seed(seed))


def test_logits_match(pair: tuple[str, Transformer, Any, Path]) -> None:
    _, ours, hf, _ = pair
    x = toks()
    with torch.no_grad():
        expected = hf(x).logits
        torch.testing.assert_close(ours(x), expected, atol=1e-4, rtol=0)
    assert expected.std() > 0.3  # not a degenerate comparison


def test_gradients_wrt_input_embeddings_match(pair: tuple[str, Transformer, Any, Path]) -> None:
    _, ours, hf, _ = pair
    x = toks()
    # HF's first hidden state is what our resid.post_emb holds (token embedding, scaled as the
    # family does, plus learned positions for GPT-2); differentiate the same logits w.r.t. it.
    hidden0 = hf(x, output_hidden_states=True).hidden_states[0].detach()
    embeds = hf.get_input_embeddings()(x).detach().requires_grad_(True)
    hf_loss = (hf(inputs_embeds=embeds).logits[..., :7] * torch.arange(7.0)).sum()
    (hf_grad,) = torch.autograd.grad(hf_loss, embeds)

    leaf: list[Tensor] = []

    def make_leaf(e: Tensor) -> Tensor:
        torch.testing.assert_close(e, hidden0, atol=1e-5, rtol=0)
        leaf.append(e.detach().requires_grad_(True))
        return leaf[0]

    with ours.hooks(fwd={"resid.post_emb": make_leaf}):
        loss = (ours(x)[..., :7] * torch.arange(7.0)).sum()
    (grad,) = torch.autograd.grad(loss, leaf[0])
    assert hf_grad.abs().max() > 1e-3
    torch.testing.assert_close(grad, hf_grad, atol=1e-4, rtol=1e-4)


def test_residual_stream_matches_hidden_states(pair: tuple[str, Transformer, Any, Path]) -> None:
    _, ours, hf, _ = pair
    x = toks()
    n = ours.cfg.n_layers
    # HF's hidden_states: the embeddings, each block's output but the last, then the final
    # norm's output
    names = ["resid.post_emb"] + [f"blocks.{i}.resid.post_mlp" for i in range(n - 1)] + ["resid.post_ln_f"]
    with torch.no_grad():
        hidden = hf(x, output_hidden_states=True).hidden_states
        _, cache = ours.run_with_cache(x, names)
    assert len(hidden) == len(names)
    for name, h in zip(names, hidden, strict=True):
        torch.testing.assert_close(cache[name], h, atol=1e-4, rtol=1e-4, msg=name)


def test_attention_probabilities_match(pair: tuple[str, Transformer, Any, Path]) -> None:
    _, ours, hf, _ = pair
    x = toks()
    names = [f"blocks.{i}.attn.qk_probs" for i in range(ours.cfg.n_layers)]
    with torch.no_grad():
        attentions = hf(x, output_attentions=True).attentions
        _, cache = ours.run_with_cache(x, names)
    for name, a in zip(names, attentions, strict=True):
        torch.testing.assert_close(cache[name], a, atol=1e-5, rtol=1e-4, msg=name)
    # the windowed layers really are windowed: a query sees at most `window` keys
    for layer in ours.cfg.sliding_layers:
        seen = (cache[names[layer]] > 0).sum(-1)
        assert int(seen.max()) == ours.cfg.sliding_window


def test_batched_unequal_prompts_match_one_at_a_time(pair: tuple[str, Transformer, Any, Path]) -> None:
    _, ours, _, _ = pair
    prompts = [toks(1, 11, seed=1)[0], toks(1, 6, seed=2)[0], toks(1, 9, seed=3)[0]]
    longest = max(len(p) for p in prompts)
    for side in ("left", "right"):
        batch = torch.zeros(len(prompts), longest, dtype=torch.long)
        pad = torch.ones(len(prompts), longest, dtype=torch.bool)
        for i, p in enumerate(prompts):
            where = slice(longest - len(p), None) if side == "left" else slice(0, len(p))
            batch[i, where], pad[i, where] = p, False
        with torch.no_grad():
            together = ours(batch, pad=pad)
            for i, p in enumerate(prompts):
                alone = ours(p[None])[0]
                torch.testing.assert_close(together[i][~pad[i]], alone, atol=1e-5, rtol=1e-5)


def test_hooked_attention_equals_the_fused_kernel(pair: tuple[str, Transformer, Any, Path]) -> None:
    _, ours, _, _ = pair
    x = toks()
    with torch.no_grad():
        fused = ours(x)
        with ours.hooks(fwd={f"blocks.{i}.attn.qk_probs": lambda p: None for i in range(ours.cfg.n_layers)}):
            explicit = ours(x)
    torch.testing.assert_close(explicit, fused, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_runs_close_to_fp32(pair: tuple[str, Transformer, Any, Path], dtype: torch.dtype) -> None:
    _, ours, _, folder = pair
    low = load_model(folder, dtype=dtype)
    assert all(p.dtype == dtype for p in low.parameters())
    x = toks()
    with torch.no_grad():
        reference, got = ours(x), low(x).float()
    assert torch.isfinite(got).all()
    assert (got - reference).abs().max() < 0.05 * reference.abs().max() + 0.05


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_errs_no_more_than_transformers(pair: tuple[str, Transformer, Any, Path], dtype: torch.dtype) -> None:
    """In bf16 / fp16 our logits stray from the fp32 ones no further than `transformers`' own
    forward in the same dtype does (rounding differs op by op, so the bound is its error
    doubled, not equality)."""
    import copy

    _, ours, hf, folder = pair
    low = load_model(folder, dtype=dtype)
    hf_low = copy.deepcopy(hf).to(dtype)
    x = toks()
    with torch.no_grad():
        reference = ours(x)
        ours_err = float((low(x).float() - reference).abs().max())
        hf_err = float((hf_low(x).logits.float() - reference).abs().max())
    assert hf_err > 0  # the dtype really rounds
    assert ours_err <= 2 * hf_err + 1e-3, (ours_err, hf_err)


def test_save_and_reload_is_exact(pair: tuple[str, Transformer, Any, Path], tmp_path: Path) -> None:
    _, ours, _, _ = pair
    again = load_model(save_model(ours, tmp_path / "ours"))
    assert again.cfg == ours.cfg
    for (k, a), (_, b) in zip(ours.state_dict().items(), again.state_dict().items(), strict=True):
        assert torch.equal(a, b), k
    assert tokenizer_of(again).encode("When Mary") == tokenizer_of(ours).encode("When Mary")


def test_tokenizer_follows_the_model(pair: tuple[str, Transformer, Any, Path]) -> None:
    family, ours, _, folder = pair
    from tokenizers import Tokenizer

    tok = tokenizer_of(ours)
    if family == "gpt2":
        assert ours.tokenizer_path == "gpt2"
        return
    reference = Tokenizer.from_file(str(folder / "tokenizer.json"))
    text = "When Mary and John went to the store"
    assert tok.encode_prompt(text) == reference.encode(text).ids  # with its BOS convention
    assert tok.encode(text) == reference.encode(text, add_special_tokens=False).ids
    assert (tok.bos_token_id is not None) == (family in ("llama", "llama_tied", "mistral", "gemma2"))


def test_unsupported_rope_scaling_is_refused(tmp_path: Path) -> None:
    folder, _ = save_random("llama", tmp_path / "m")
    config = json.loads((folder / "config.json").read_text())
    config["rope_parameters"] = {"rope_type": "yarn", "factor": 4.0, "rope_theta": 10000.0}
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelLoadError) as e:
        load_model(folder)
    assert "yarn" in str(e.value) and "\n" not in str(e.value)


def test_unknown_family_is_refused(tmp_path: Path) -> None:
    folder, _ = save_random("llama", tmp_path / "m")
    config = json.loads((folder / "config.json").read_text())
    config["model_type"] = "mamba"
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelLoadError) as e:
        load_model(folder)
    assert "'mamba'" in str(e.value) and "llama" in str(e.value)


def test_sharded_checkpoint_loads(tmp_path: Path) -> None:
    folder, hf = save_random("llama", tmp_path / "m")
    hf.save_pretrained(tmp_path / "sharded", max_shard_size="50KB")
    (tmp_path / "sharded" / "tokenizer.json").write_bytes((folder / "tokenizer.json").read_bytes())
    assert (tmp_path / "sharded" / "model.safetensors.index.json").is_file()
    x = toks()
    with torch.no_grad():
        torch.testing.assert_close(load_model(tmp_path / "sharded")(x), hf(x).logits, atol=1e-4, rtol=0)
