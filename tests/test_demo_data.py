"""Fast tests of the demo model's training data, tokenizer training and evaluation helpers."""

from __future__ import annotations

import builtins
import io
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from neuron_explainer.demo import data, evaluate
from neuron_explainer.demo.tokenizer_train import check_equal, train_bpe
from neuron_explainer.models.tokenizer import get_tokenizer, save_tokenizer

TEXT = (
    "Once upon a time there was a little girl who lived in a village near the forest. "
    "Whenever she went out, the little girl wore a red riding cloak, so everyone in the village "
    "called her Little Red Riding Hood. 'What big teeth you have!' said she, in 1812.\n\n"
)


@pytest.fixture()
def corpus(tmp_path: Path) -> Path:
    (tmp_path / "a.txt").write_text(TEXT * 20)
    (tmp_path / "b.txt").write_text(TEXT.upper() * 20)
    (tmp_path / "README.md").write_text("not a training file")
    (tmp_path / "heldout").mkdir()
    (tmp_path / "heldout" / "secret.txt").write_text("HELDOUT TEXT " * 100)
    return tmp_path


def test_training_reader_never_reads_heldout(corpus: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    opened: list[str] = []
    real_open = io.open

    def spy(file, *args, **kwargs):
        opened.append(str(file))
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", spy)
    monkeypatch.setattr(io, "open", spy)
    texts = data.read_corpus(corpus)
    assert [p.name for p in data.corpus_files(corpus)] == ["a.txt", "b.txt"]
    assert len(texts) == 2 and all("HELDOUT" not in t for t in texts)
    assert opened and not any("heldout" in p or p.endswith(".md") for p in opened)
    assert [p.name for p in data.heldout_files(corpus)] == ["secret.txt"]


def test_training_stream_has_no_heldout_tokens(corpus: Path) -> None:
    enc, _ = train_bpe(data.read_corpus(corpus), 300)
    eot = enc.n_vocab - 1
    docs = enc.encode_ordinary_batch(data.read_corpus(corpus))
    stream = data.MixedStream(
        np.concatenate([np.array(d) for d in docs]),
        [[1, 2, 3]],
        vocab=enc.n_vocab,
        eot=eot,
        newline=enc.encode_ordinary("\n")[0],
        ctx=32,
        seed=0,
    )
    text = "".join(
        enc.decode(row[row != eot].tolist()) for row in stream.batch(0, 64, data.Mix(1, 0, 0))
    )
    assert "HELDOUT" not in text


def test_ioi_templates_disjoint() -> None:
    train, held = set(data.TRAIN_TEMPLATES), set(data.HELDOUT_TEMPLATES)
    assert train and held and not train & held
    assert len(train | held) == len(data.ALL_TEMPLATES)
    train_texts = {data.template_text(t) for t in train}
    assert not train_texts & {data.template_text(t) for t in held}
    # every intro and every ending is also seen in training (structurally within their span)
    assert {i for i, _ in held} <= {i for i, _ in train}
    assert {e for _, e in held} <= {e for _, e in train}
    assert len(held) * 8 == len(data.ALL_TEMPLATES)


def _template_regex(template: tuple[int, int]) -> re.Pattern[str]:
    pattern = re.escape(data.template_text(template))
    for slot in ("A", "B", "S", "place", "object", "object2", "adj"):
        pattern = pattern.replace(re.escape("{" + slot + "}"), r"\w+")
    return re.compile(pattern + r" \w+\.")


def test_training_sentences_never_use_heldout_templates() -> None:
    held = [_template_regex(t) for t in data.HELDOUT_TEMPLATES]
    train = [_template_regex(t) for t in data.TRAIN_TEMPLATES]
    for sentence in data.ioi_training_sentences(2000, data.NAMES, seed=3):
        assert not any(r.fullmatch(sentence) for r in held), sentence
        assert any(r.fullmatch(sentence) for r in train), sentence


def test_ioi_prompts() -> None:
    prompts = data.ioi_prompts(300, data.NAMES, heldout=True, seed=0)
    assert {p.template for p in prompts} == set(data.HELDOUT_TEMPLATES)
    for p in prompts:
        assert p.io != p.s and p.text.endswith(" to")
        assert p.text.count(p.s.strip()) == 2 and p.text.count(p.io.strip()) == 1
    assert {p.order for p in prompts} == {"ABBA", "BABA"}


def test_tokenizer_round_trip(corpus: Path, tmp_path: Path) -> None:
    texts = [
        *data.read_corpus(corpus),
        "When Mary and John went to the store, John gave a drink to Mary.",
    ]
    enc, tok = train_bpe(texts, 400)
    assert check_equal(enc, tok, texts) > 0
    folder = save_tokenizer(enc, tmp_path / "tok")
    loaded = get_tokenizer(folder)
    sample = TEXT + " naïve café 東京 \t\n  x"
    assert loaded.encode_ordinary(sample) == enc.encode_ordinary(sample)
    assert loaded.decode(loaded.encode_ordinary(sample)) == sample
    assert loaded.encode("<|endoftext|>", allowed_special="all") == [enc.n_vocab - 1]


def test_induction_generator() -> None:
    rows = data.repeated_random_tokens(np.random.default_rng(0), 5, 12, 100, bos=99)
    assert rows.shape == (5, 25) and (rows[:, 0] == 99).all()
    assert (rows[:, 1:13] == rows[:, 13:]).all() and rows[:, 1:].max() < 100


def test_mixed_stream_deterministic() -> None:
    corpus = np.arange(10_000) % 97
    stream = data.MixedStream(corpus, [[5, 6, 7, 8]], vocab=100, eot=99, newline=98, ctx=64, seed=1)
    mix = data.Mix(0.4, 0.3, 0.3)
    a, b = stream.batch(7, 16, mix), stream.batch(7, 16, mix)
    assert a.shape == (16, 65) and (a == b).all()
    assert not (stream.batch(8, 16, mix) == a).all()


def test_induction_eval_detects_copying() -> None:
    vocab, eot = 1000, 999

    def copier(tokens: torch.Tensor) -> torch.Tensor:  # predicts what followed the last occurrence
        logits = torch.zeros(*tokens.shape, vocab)
        for b in range(tokens.shape[0]):
            seen: dict[int, int] = {}
            row = tokens[b].tolist()
            for i, t in enumerate(row):
                if t in seen and seen[t] + 1 < len(row):
                    logits[b, i, row[seen[t] + 1]] = 20.0
                seen[t] = i
        return logits

    uniform = lambda t: torch.zeros(*t.shape, vocab)  # noqa: E731
    assert evaluate.induction_eval(copier, vocab, eot, n=8, length=20)["improvement"] > 2
    assert abs(evaluate.induction_eval(uniform, vocab, eot, n=8, length=20)["improvement"]) < 1e-5
