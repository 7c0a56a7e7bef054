"""The bundled GPT-2 tokenizer must match tiktoken's own `gpt2` encoding, offline."""

from __future__ import annotations

import gzip
import hashlib
import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
import tiktoken
from tiktoken_ext import openai_public

from neuron_explainer.models import tokenizer
from neuron_explainer.models.tokenizer import decode_tokens, encode, get_tokenizer, save_tokenizer

BASE_URL = "https://openaipublic.blob.core.windows.net/gpt-2/encodings/main/"
ENCODER_JSON_SHA256 = "196139668be63f3b5d6574427317ae82f612a97c5d1cdaf36ed2256dbf636783"

TEXTS = [
    "",
    "Hello world! The quick brown fox jumps over the lazy dog.",
    "1234567890 3.14159 -42 1,000,000 2024-01-31 0x1F 1e-9",
    "!!!??? ... --- *** ((([[[{{{}}}]]]))) #$%^&*_+=~`|\\/ <<>> :;",
    "It's they're we'll I've he'd I'm don't IT'S THEY'RE 's're'll",
    "two  spaces,   three,        many",
    "tabs\tand\t\ttabs\n\nnewlines\r\nwindows\n",
    "trailing whitespace   ",
    "   leading whitespace",
    " \n \t \n\n\n  ",
    "naïve café résumé Ångström Straße œuvre",
    "日本語のテキストと中文文本，한국어 텍스트",
    "emoji 😀👍🏽 family 👨\u200d👩\u200d👧 flag 🇫🇷",
    "שלום עולם مرحبا بالعالم \u200fRTL mark",
    "combining e\u0301 a\u0308 n\u0303 and Z\u0351\u0352\u0357algo",
    "control \x00\x01\x1b[0m bell\x07 nbsp\u00a0soft\u00adhyphen",
    "<|endoftext|>The debugger's prompts start like this.",
    "before<|endoftext|>after <|endoftext|> <|endoftext|><|endoftext|>",
    "not special: <|endoftext <endoftext|> <|startoftext|>",
    "def f(x):\n    return {'a': [1, 2]}  # code\n",
]


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tiktoken.Encoding]:
    """tiktoken's own gpt2 encoding, built from the published files placed in its download cache."""
    cache = tmp_path_factory.mktemp("tiktoken_cache")
    for name, data in published_files().items():
        (cache / hashlib.sha1((BASE_URL + name).encode()).hexdigest()).write_bytes(data)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TIKTOKEN_CACHE_DIR", str(cache))
        # Built directly rather than via tiktoken.get_encoding, whose module-level registry would
        # keep this encoding (or a previously cached one) for the rest of the process.
        yield tiktoken.Encoding(**openai_public.gpt2())


def published_files() -> dict[str, bytes]:
    """vocab.bpe as bundled, and encoder.json rebuilt from our ranks (json.dumps reproduces it)."""
    enc = get_tokenizer()
    byte_to_char = {b: c for c, b in tokenizer._CHAR_TO_BYTE.items()}
    encoder = {
        "".join(byte_to_char[b] for b in enc.decode_single_token_bytes(i)): i for i in range(50256)
    }
    encoder[tokenizer.ENDOFTEXT] = 50256
    return {
        "vocab.bpe": gzip.decompress(tokenizer.GPT2_VOCAB_BPE.read_bytes()),
        "encoder.json": json.dumps(encoder).encode(),
    }


def test_ranks_reproduce_published_encoder_json() -> None:
    # Proves the ranks built from vocab.bpe equal the published encoder.json, byte for byte.
    assert hashlib.sha256(published_files()["encoder.json"]).hexdigest() == ENCODER_JSON_SHA256


def test_encoding_attributes(reference: tiktoken.Encoding) -> None:
    enc = get_tokenizer()
    assert enc is get_tokenizer("gpt2")  # cached
    assert (enc.name, enc.n_vocab, enc.eot_token) == ("gpt2", 50257, 50256)
    assert enc._pat_str == reference._pat_str
    assert enc._mergeable_ranks == reference._mergeable_ranks
    assert enc._special_tokens == reference._special_tokens


@pytest.mark.parametrize("text", TEXTS)
def test_matches_tiktoken_gpt2(reference: tiktoken.Encoding, text: str) -> None:
    enc = get_tokenizer()
    ids = encode(enc, text)
    assert ids == reference.encode(text, allowed_special="all")
    assert ids == enc.encode(text, allowed_special="all")
    assert enc.decode(ids) == text
    assert decode_tokens(enc, ids) == [reference.decode([i]) for i in ids]


def test_special_token_and_partial_utf8() -> None:
    enc = get_tokenizer()
    ids = encode(enc, "<|endoftext|>Hi 😀")
    assert ids[0] == 50256
    assert decode_tokens(enc, ids) == ["<|endoftext|>", "Hi", " \ufffd", "\ufffd"]
    assert encode(enc, "") == [] and decode_tokens(enc, []) == []


def test_corrupted_vocab_fails_with_one_clear_line(tmp_path: Path) -> None:
    data = bytearray(gzip.decompress(tokenizer.GPT2_VOCAB_BPE.read_bytes()))
    data[100] ^= 1
    corrupted = tmp_path / "gpt2_vocab.bpe.gz"
    corrupted.write_bytes(gzip.compress(bytes(data)))
    with pytest.raises(RuntimeError, match="is corrupted: its sha256 is") as error:
        tokenizer._load_gpt2(corrupted)
    assert "\n" not in str(error.value)


@pytest.mark.parametrize("vocab", ["gpt3", "no/such/folder", "missing.json"])
def test_unknown_vocab(vocab: str) -> None:
    with pytest.raises(ValueError, match="Unknown tokenizer") as error:
        get_tokenizer(vocab)
    assert "\n" not in str(error.value)


def tiny_bpe() -> tiktoken.Encoding:
    merges = [b"th", b"the", b" the", b"in", b"ing", b" a"]
    ranks = {bytes([b]): b for b in range(256)} | {m: 256 + i for i, m in enumerate(merges)}
    return tiktoken.Encoding(
        name="tiny",
        pat_str=r"\s?\w+|\s?[^\s\w]+|\s+",
        mergeable_ranks=ranks,
        special_tokens={"<|endoftext|>": 262, "<|pad|>": 263},
    )


def test_custom_tokenizer_round_trip(tmp_path: Path) -> None:
    original = tiny_bpe()
    folder = save_tokenizer(original, tmp_path / "tiny")
    text = "<|endoftext|>the thing in the bathing <|pad|> é"
    expected = encode(original, text)
    assert expected[:4] == [262, 257, ord(" "), 256]  # <|endoftext|>, "the", " ", "th"
    vocabs: list[str | Path] = [
        folder,
        folder / "tokenizer.tiktoken",
        str(folder / "tokenizer.json"),
    ]
    for vocab in vocabs:
        loaded = get_tokenizer(vocab)
        assert loaded.name == "tiny"
        assert loaded._pat_str == original._pat_str
        assert loaded._special_tokens == original._special_tokens
        assert encode(loaded, text) == expected
        assert decode_tokens(loaded, expected) == decode_tokens(original, expected)


def test_bare_rank_file_gets_defaults(tmp_path: Path) -> None:
    folder = save_tokenizer(tiny_bpe(), tmp_path)
    bare = shutil.copy(folder / "tokenizer.tiktoken", tmp_path / "bare.ranks")
    enc = get_tokenizer(bare)
    assert (enc.name, enc._pat_str) == ("bare", tokenizer.GPT2_PATTERN)
    assert enc._special_tokens == {"<|endoftext|>": 262}  # the id after the largest rank


def test_gpt2_save_round_trip(tmp_path: Path) -> None:
    enc = get_tokenizer()
    loaded = get_tokenizer(save_tokenizer(enc, tmp_path))
    assert (loaded.name, loaded.n_vocab) == ("gpt2", 50257)
    for text in TEXTS:
        assert encode(loaded, text) == encode(enc, text)


def test_malformed_rank_file(tmp_path: Path) -> None:
    (tmp_path / "bad.tiktoken").write_text("YQ== 0\nnot base64! 1\n")
    with pytest.raises(ValueError, match=r"bad\.tiktoken:2: expected"):
        get_tokenizer(tmp_path / "bad.tiktoken")
