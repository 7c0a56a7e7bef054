"""Tokenizers: GPT-2's BPE bundled with the package, a custom BPE saved on disk (both run by
tiktoken), or a Hugging Face `tokenizer.json` (run by the `tokenizers` library, with the BOS
convention of its post-processor). `load_tokenizer` gives any of them behind one `Tokenizer`.

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
from typing import Any, Protocol

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


# ------------------------------------------------------------------ one interface for all


class Tokenizer(Protocol):
    """What the debugger and the records builder need of a tokenizer."""

    n_vocab: int
    bos_token_id: int | None  # prepended to prompts and documents (None: the model uses no BOS)
    eos_token_id: int | None  # ends each document of a corpus when there is no BOS

    def encode(self, text: str) -> list[int]:
        """Plain text to ids, no BOS; special tokens written in it become their ids."""
        ...

    def encode_prompt(self, text: str) -> list[int]:
        """A prompt as the model expects it: with its BOS convention."""
        ...

    def encode_ordinary(self, text: str) -> list[int]:
        """Corpus text to ids: special tokens written in it are ordinary text, no BOS."""
        ...

    def decode_tokens(self, ids: Sequence[int]) -> list[str]:
        """Each token's own string (bytes that are part of a character become U+FFFD)."""
        ...


class TiktokenTokenizer:
    """GPT-2's BPE or one of ours (no BOS: the debugger's prompts may start with
    <|endoftext|> written out; in a corpus it ends each document)."""

    bos_token_id: int | None = None

    def __init__(self, enc: tiktoken.Encoding):
        self.enc = enc
        self.n_vocab = enc.n_vocab
        self.eos_token_id: int | None = enc.eot_token if ENDOFTEXT in enc.special_tokens_set else None

    def encode(self, text: str) -> list[int]:
        return encode(self.enc, text)

    encode_prompt = encode

    def encode_ordinary(self, text: str) -> list[int]:
        return self.enc.encode_ordinary(text)

    def decode_tokens(self, ids: Sequence[int]) -> list[str]:
        return decode_tokens(self.enc, ids)


class HFTokenizer:
    """A Hugging Face `tokenizer.json`. Prompts get the special tokens its post-processor adds
    (Llama's and Gemma's <bos>); Pythia's and Qwen's add none."""

    def __init__(self, path: Path):
        from tokenizers import Tokenizer as RustTokenizer

        try:
            self.tok = RustTokenizer.from_file(str(path))
        except Exception as e:  # the library raises a plain Exception for bad files
            raise ValueError(f"could not read the tokenizer {path.name}: {' '.join(str(e).split())[:120]}") from e
        self.n_vocab = self.tok.get_vocab_size(with_added_tokens=True)
        # the special tokens the post-processor puts before a text (a suffix such as EOS is not
        # wanted at the end of a prompt)
        with_special = self.tok.encode("a", add_special_tokens=True).ids
        first = self.tok.encode("a", add_special_tokens=False).ids[0]
        self._prefix = with_special[: with_special.index(first)] if first in with_special else []
        self.bos_token_id = self._prefix[0] if self._prefix else None
        self.eos_token_id = _eos_of(path, self.tok)
        self._ordinary = RustTokenizer.from_file(str(path))
        self._ordinary.encode_special_tokens = True  # special tokens in corpus text are text

    def encode(self, text: str) -> list[int]:
        return self.tok.encode(text, add_special_tokens=False).ids

    def encode_prompt(self, text: str) -> list[int]:
        ids = self.encode(text)
        # the post-processor's prefix (BOS), unless the prompt already starts with it
        return ids if ids[: len(self._prefix)] == self._prefix else self._prefix + ids

    def encode_ordinary(self, text: str) -> list[int]:
        return self._ordinary.encode(text, add_special_tokens=False).ids

    def decode_tokens(self, ids: Sequence[int]) -> list[str]:
        return [self.tok.decode([i], skip_special_tokens=False) for i in ids]


def _eos_of(path: Path, tok: Any) -> int | None:
    """The end-of-sequence id its tokenizer_config.json names, if any."""
    config = path.with_name("tokenizer_config.json")
    try:
        eos = json.loads(config.read_text()).get("eos_token") if config.is_file() else None
    except (OSError, ValueError):
        return None
    if isinstance(eos, dict):  # an AddedToken written out
        eos = eos.get("content")
    token_id = tok.token_to_id(eos) if isinstance(eos, str) else None
    return int(token_id) if token_id is not None else None


def as_tokenizer(tok: Tokenizer | tiktoken.Encoding) -> Tokenizer:
    return TiktokenTokenizer(tok) if isinstance(tok, tiktoken.Encoding) else tok


@functools.cache
def load_tokenizer(path: str | Path = "gpt2") -> Tokenizer:
    """The tokenizer at `path`: "gpt2", a tokenizer.json (Hugging Face), or ours (a folder, a
    .tiktoken rank file or its .json)."""
    if path != "gpt2" and Path(path).name == "tokenizer.json" and _is_hf_tokenizer(Path(path)):
        return HFTokenizer(Path(path))
    return TiktokenTokenizer(get_tokenizer(path))


def _is_hf_tokenizer(path: Path) -> bool:
    try:
        return "model" in json.loads(path.read_text())
    except (OSError, ValueError):
        return False
