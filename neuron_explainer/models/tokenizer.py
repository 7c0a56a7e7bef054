"""Offline tokenizers: GPT-2's BPE bundled with the package, or a custom BPE saved on disk.

A custom tokenizer NAME is a pair of files (`save_tokenizer` writes NAME = "tokenizer"):

    NAME.tiktoken  one "<base64 of the token's bytes> <rank>" line per token: tiktoken's rank
                   format, as read by `tiktoken.load.load_tiktoken_bpe`.
    NAME.json      optional: {"name": "demo", "pattern": "<split regex>",
                              "special_tokens": {"<|endoftext|>": 511}}
                   Each key is optional; the defaults are NAME, GPT-2's pattern, and
                   <|endoftext|> taking the id after the largest rank.
"""

from __future__ import annotations

import base64
import functools
import gzip
import hashlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import tiktoken

ENDOFTEXT = "<|endoftext|>"

# Copied from tiktoken_ext/openai_public.py (r50k_pat_str): GPT-2's split regex in a faster,
# equivalent form.
GPT2_PATTERN = (
    r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}++| ?\p{N}++| ?[^\s\p{L}\p{N}]++|\s++$|\s+(?!\S)|\s"""
)

# Only GPT-2's vocab.bpe ships: the merges fix every rank, and the published encoder.json is
# exactly json.dumps of those ranks (tests/test_tokenizer.py checks its sha256), so shipping it
# too would add 340 kB of redundant data.
GPT2_VOCAB_BPE = Path(__file__).parent / "data" / "gpt2_vocab.bpe.gz"
# sha256 of the published, uncompressed vocab.bpe: the value tiktoken's own gpt2 loader checks.
GPT2_VOCAB_BPE_SHA256 = "1ce1664773c50f3e0cc8842619a93edc4624525b728b188a9e0be33b7726adc5"

# GPT-2's files write each byte as a printable character: printable bytes stand for themselves,
# the rest (space, controls, ...) for chr(256 + n). The single-byte tokens' ranks follow this order.
_PRINTABLE = [b for b in range(256) if chr(b).isprintable() and b != ord(" ")]
_SHIFTED = [b for b in range(256) if b not in _PRINTABLE]
_CHAR_TO_BYTE = {chr(b): b for b in _PRINTABLE} | {chr(256 + n): b for n, b in enumerate(_SHIFTED)}


def get_tokenizer(vocab: str | Path = "gpt2") -> tiktoken.Encoding:
    """Return the bundled GPT-2 tokenizer, or the custom tokenizer at path `vocab`.

    A path may name a folder (holding tokenizer.tiktoken), a .tiktoken file or its .json.
    Each tokenizer is loaded once per process.
    """
    if vocab == "gpt2":
        return _gpt2()
    return _load_custom(Path(vocab).resolve())  # resolved, so that one file is one cache entry


def save_tokenizer(enc: tiktoken.Encoding, folder: str | Path) -> Path:
    """Write `enc` as folder/tokenizer.tiktoken + tokenizer.json; return the folder."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    # tiktoken has no public getters for the ranks, pattern and special tokens.
    ranks = sorted(enc._mergeable_ranks.items(), key=lambda item: item[1])
    lines = [base64.b64encode(token) + b" %d\n" % rank for token, rank in ranks]
    (folder / "tokenizer.tiktoken").write_bytes(b"".join(lines))
    config = {"name": enc.name, "pattern": enc._pat_str, "special_tokens": enc._special_tokens}
    (folder / "tokenizer.json").write_text(json.dumps(config, indent=2) + "\n")
    return folder


def encode(enc: tiktoken.Encoding, text: str) -> list[int]:
    """Encode `text`; special tokens written in it (the debugger's prompts start with
    <|endoftext|>) become their special ids instead of raising."""
    return enc.encode(text, allowed_special="all")


def decode_tokens(enc: tiktoken.Encoding, ids: Sequence[int]) -> list[str]:
    """Return each token's string; bytes that are not valid UTF-8 on their own (part of a
    multi-byte character) become U+FFFD, as `enc.decode([id])` would give."""
    return [token.decode("utf-8", errors="replace") for token in enc.decode_tokens_bytes(ids)]


@functools.cache
def _gpt2() -> tiktoken.Encoding:
    return _load_gpt2(GPT2_VOCAB_BPE)


def _load_gpt2(vocab_bpe_gz: Path) -> tiktoken.Encoding:
    data = gzip.decompress(vocab_bpe_gz.read_bytes())
    if (digest := hashlib.sha256(data).hexdigest()) != GPT2_VOCAB_BPE_SHA256:
        raise RuntimeError(
            f"{vocab_bpe_gz} is corrupted: its sha256 is {digest}, not the published "
            f"{GPT2_VOCAB_BPE_SHA256}; reinstall neuron_explainer."
        )

    def to_bytes(chars: str) -> bytes:
        return bytes(_CHAR_TO_BYTE[c] for c in chars)

    # As in tiktoken.load.data_gym_to_mergeable_bpe_ranks: the 256 single bytes come first, then
    # one token per merge, ranked in file order (line 0 is a "#version" header, the last is empty).
    ranks = {bytes([b]): rank for rank, b in enumerate(_PRINTABLE + _SHIFTED)}
    for rank, merge in enumerate(data.decode().split("\n")[1:-1], start=len(ranks)):
        first, second = merge.split()
        ranks[to_bytes(first) + to_bytes(second)] = rank
    return tiktoken.Encoding(
        name="gpt2",
        pat_str=GPT2_PATTERN,
        mergeable_ranks=ranks,
        special_tokens={ENDOFTEXT: 50256},
        explicit_n_vocab=50257,
    )


@functools.cache
def _load_custom(path: Path) -> tiktoken.Encoding:
    if path.is_dir():
        path = path / "tokenizer.tiktoken"
    if path.suffix == ".json":
        ranks_path, config_path = path.with_suffix(".tiktoken"), path
    else:
        ranks_path, config_path = path, path.with_suffix(".json")
    if not ranks_path.is_file():
        raise ValueError(
            f"Unknown tokenizer: {ranks_path} not found; use 'gpt2' or the path of a tokenizer "
            "folder, a .tiktoken rank file, or its .json."
        )
    ranks = _read_ranks(ranks_path)
    config: dict[str, Any] = json.loads(config_path.read_text()) if config_path.is_file() else {}
    return tiktoken.Encoding(
        name=config.get("name", ranks_path.stem),
        pat_str=config.get("pattern", GPT2_PATTERN),
        mergeable_ranks=ranks,
        special_tokens=config.get("special_tokens", {ENDOFTEXT: max(ranks.values()) + 1}),
    )


def _read_ranks(path: Path) -> dict[bytes, int]:
    # Parsed here rather than with tiktoken.load.load_tiktoken_bpe, which caches files by path
    # and so keeps returning a file's old content after it is rewritten.
    ranks = {}
    for number, line in enumerate(path.read_bytes().splitlines(), start=1):
        try:
            if line.strip():
                token, rank = line.split()
                ranks[base64.b64decode(token, validate=True)] = int(rank)
        except ValueError as e:  # also binascii.Error, a ValueError subclass
            raise ValueError(
                f"{path}:{number}: expected '<base64 token> <rank>', got {line!r}"
            ) from e
    return ranks
