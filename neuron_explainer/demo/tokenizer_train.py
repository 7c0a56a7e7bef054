"""Train the demo model's byte-level BPE and save it in our tiktoken rank format.

    python -m neuron_explainer.demo.tokenizer_train --out DIR [--vocab 4096]

The BPE is trained with the `tokenizers` library on the training corpus (never heldout/) plus
generated IOI sentences (so that the demo's names are single tokens). Its merges become tiktoken
ranks: the 256 single bytes first, then one token per merge in merge order, then <|endoftext|>.
With GPT-2's split pattern that makes tiktoken reproduce the trainer's tokenization, which
`check_equal` verifies on sample text.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterable
from pathlib import Path

import tiktoken

from neuron_explainer.demo import data
from neuron_explainer.models.tokenizer import (
    _CHAR_TO_BYTE,
    ENDOFTEXT,
    GPT2_PATTERN,
    get_tokenizer,
    save_tokenizer,
)


def train_bpe(texts: Iterable[str], vocab_size: int) -> tuple[tiktoken.Encoding, object]:
    """Returns (tiktoken encoding, the `tokenizers.Tokenizer`). vocab_size includes
    <|endoftext|>."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size - 1,
        min_frequency=2,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        special_tokens=[],
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    import json

    model = json.loads(tok.to_str())["model"]
    merges = model["merges"]
    ranks: dict[bytes, int] = {bytes([b]): b for b in range(256)}

    def to_bytes(chars: str) -> bytes:
        return bytes(_CHAR_TO_BYTE[c] for c in chars)

    for merge in merges:
        first, second = merge.split(" ") if isinstance(merge, str) else merge
        token = to_bytes(first) + to_bytes(second)
        if token not in ranks:
            ranks[token] = len(ranks)
    enc = tiktoken.Encoding(
        name="demo",
        pat_str=GPT2_PATTERN,
        mergeable_ranks=ranks,
        special_tokens={ENDOFTEXT: len(ranks)},
    )
    return enc, tok


def check_equal(enc: tiktoken.Encoding, tok: object, texts: Iterable[str]) -> int:
    """Assert tiktoken and the trainer tokenize each text into the same token bytes; returns
    the number of tokens checked."""
    n = 0
    for text in texts:
        ours = enc.decode_tokens_bytes(enc.encode_ordinary(text))
        theirs = [to_b(t) for t in tok.encode(text).tokens]  # type: ignore[attr-defined]
        if ours != theirs:
            for i, (a, b) in enumerate(zip(ours, theirs, strict=False)):
                if a != b:
                    raise AssertionError(f"tokenizations differ at token {i}: {a!r} vs {b!r}")
            raise AssertionError("tokenizations differ in length")
        n += len(ours)
    return n


def to_b(chars: str) -> bytes:
    return bytes(_CHAR_TO_BYTE[c] for c in chars)


def training_texts(corpus_dir: str | Path, seed: int) -> list[str]:
    texts = data.read_corpus(corpus_dir)
    # IOI sentences, so that names, places and objects become tokens (about 10% of the bytes).
    texts.append("\n".join(data.ioi_training_sentences(12000, data.NAMES, seed)))
    return texts


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True, help="folder for tokenizer.tiktoken + tokenizer.json")
    ap.add_argument("--corpus-dir", default=str(data.DEFAULT_CORPUS_DIR))
    ap.add_argument("--vocab", type=int, default=4096)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    texts = training_texts(args.corpus_dir, args.seed)
    enc, tok = train_bpe(texts, args.vocab)
    sample = [t[i : i + 20000] for t in texts for i in (0, len(t) // 2)]
    n = check_equal(enc, tok, sample)
    save_tokenizer(enc, args.out)
    loaded = get_tokenizer(args.out)
    assert loaded.encode_ordinary(sample[0]) == enc.encode_ordinary(sample[0])
    n_bytes = sum(len(t.encode()) for t in texts[:-1])
    n_tok = sum(len(x) for x in enc.encode_ordinary_batch(texts[:-1]))
    print(
        f"vocab {enc.n_vocab}; tiktoken == tokenizers on {n} tokens; "
        f"{n_bytes / n_tok:.2f} bytes/token on the corpus; "
        f"{len(data.single_token_names(enc))}/{len(data.NAMES)} names are single tokens"
    )


if __name__ == "__main__":
    main()
