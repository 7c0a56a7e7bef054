"""Corpora for the records builder: text files, local Parquet / JSONL / Arrow files or a Hugging
Face hub dataset, tokenized into fixed-length sequences.

A corpus is a stream of *documents*:
- a plain text file (`.txt`, or any other suffix not listed below) is one document, read in
  chunks of whole lines so a large file never sits in memory;
- each row of a `.parquet`, `.jsonl` / `.json`, or `.arrow` file, or of a hub dataset, is one
  document: its `text_column` (default `text`). These are read through `datasets` in streaming
  mode, so memory stays bounded whatever their size.

Documents are tokenized with the model's tokenizer (`Tokenizer`, below) following the model's
convention: a model with a BOS token gets it at the start of every document; a model without one
(GPT-2) gets its end-of-text token after every document, as GPT-2 was trained. Then:
- `packing="packed"` (default): one token stream, cut into consecutive `context`-token
  sequences (a final partial one is dropped); sequences may span documents;
- `packing="window"`: each document is cut on its own (windows never span documents; a
  document's final partial window, or a document shorter than `context`, is dropped).

Everything is deterministic: the order is the files' (or the dataset's) order, unless
`shuffle_buffer` > 0 asks `datasets` to shuffle rows with that buffer and the builder's seed.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import orjson

from neuron_explainer.models.tokenizer import Tokenizer, as_tokenizer

__all__ = [
    "Corpus",
    "CorpusError",
    "Packing",
    "iter_documents",
    "iter_sequences",
]

Packing = Literal["packed", "window"]
_DATASET_SUFFIXES = {".parquet": "parquet", ".jsonl": "json", ".json": "json", ".arrow": "arrow"}


class CorpusError(ValueError):
    """The corpus cannot be read as asked (missing file, missing column, hub unreachable)."""


@dataclass(frozen=True)
class Corpus:
    """Where the documents come from: local `files` (any mix of the kinds above) or a hub
    `dataset` (name, with `config` / `split` / `revision`)."""

    files: tuple[str, ...] = ()
    dataset: str | None = None
    config: str | None = None
    split: str = "train"
    revision: str | None = None
    text_column: str = "text"
    packing: Packing = "packed"
    shuffle_buffer: int = 0
    max_documents: int | None = None

    def __post_init__(self) -> None:
        if bool(self.files) == (self.dataset is not None):
            raise CorpusError("name either corpus files or one hub dataset")
        if self.packing not in ("packed", "window"):
            raise CorpusError(f"unknown packing {self.packing!r} (packed or window)")
        if self.shuffle_buffer < 0:
            raise CorpusError("--shuffle-buffer must be >= 0")
        for path in self.files:
            if not os.path.isfile(path):
                raise CorpusError(f"corpus file not found: {path}")

    def describe(self) -> list[str]:
        """Short names for dataset.json (never full local paths)."""
        if self.dataset is not None:
            return [f"{self.dataset}{':' + self.config if self.config else ''}[{self.split}]"]
        return [os.path.basename(p) for p in self.files]

    def fingerprint(self) -> str:
        """Changes when the documents may have: paths, sizes, mtimes, or the dataset's name."""
        h = hashlib.sha256()
        h.update(
            orjson.dumps(
                [
                    self.dataset,
                    self.config,
                    self.split,
                    self.revision,
                    self.text_column,
                    self.packing,
                    self.shuffle_buffer,
                    self.max_documents,
                ]
            )
        )
        for path in self.files:
            st = os.stat(path)
            h.update(orjson.dumps([os.path.abspath(path), st.st_size, st.st_mtime_ns]))
        return h.hexdigest()[:32]

    def local_bytes(self) -> int | None:
        """Total size of the local files (for a progress estimate), None for a hub dataset."""
        return sum(os.path.getsize(p) for p in self.files) if self.files else None


# --- documents ---------------------------------------------------------------------------------


def iter_documents(corpus: Corpus, seed: int = 0) -> Iterator[Iterable[str]]:
    """Each document, as an iterable of text chunks (one chunk for dataset rows)."""
    for n, doc in enumerate(_documents(corpus, seed)):
        if corpus.max_documents is not None and n >= corpus.max_documents:
            return
        yield doc


def _documents(corpus: Corpus, seed: int) -> Iterator[Iterable[str]]:
    if corpus.dataset is not None:
        yield from _rows(_hub_dataset(corpus), corpus, seed)
        return
    # consecutive files of one dataset kind are streamed together, text files one by one
    i = 0
    files = list(corpus.files)
    while i < len(files):
        kind = _DATASET_SUFFIXES.get(Path(files[i]).suffix.lower())
        if kind is None:
            yield _text_chunks(files[i])
            i += 1
            continue
        j = i
        while j < len(files) and _DATASET_SUFFIXES.get(Path(files[j]).suffix.lower()) == kind:
            j += 1
        yield from _rows(_local_dataset(kind, files[i:j]), corpus, seed)
        i = j


def _text_chunks(path: str, chunk_bytes: int = 1 << 20) -> Iterator[str]:
    with open(path, encoding="utf-8", errors="replace") as f:
        while True:
            lines = f.readlines(chunk_bytes)
            if not lines:
                return
            yield "".join(lines)


def _local_dataset(kind: str, files: list[str]) -> Any:
    import datasets

    datasets.disable_progress_bars()
    try:
        return datasets.load_dataset(kind, data_files=files, split="train", streaming=True)
    except Exception as e:  # datasets raises many types for unreadable files
        raise CorpusError(
            f"cannot read {', '.join(map(os.path.basename, files))} as {kind}: {e}"
        ) from None


def _hub_dataset(corpus: Corpus) -> Any:
    import datasets

    datasets.disable_progress_bars()
    try:
        return datasets.load_dataset(
            corpus.dataset,
            corpus.config,
            split=corpus.split,
            revision=corpus.revision,
            streaming=True,
        )
    except Exception as e:
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise CorpusError(
            f"cannot load hub dataset {corpus.dataset!r} ({first[:200]}); offline, pass local "
            "files instead: --corpus FILE.parquet|FILE.jsonl|FILE.arrow|FILE.txt"
        ) from None


def _rows(ds: Any, corpus: Corpus, seed: int) -> Iterator[Iterable[str]]:
    if corpus.shuffle_buffer:
        ds = ds.shuffle(seed=seed, buffer_size=corpus.shuffle_buffer)
    column = corpus.text_column
    try:
        for row in ds:
            if column not in row:
                raise CorpusError(
                    f"the corpus has no column {column!r} (columns: {', '.join(row)}); "
                    "pass --text-column"
                )
            text = row[column]
            if text is None:
                continue
            if not isinstance(text, str):
                raise CorpusError(f"column {column!r} holds {type(text).__name__}, not text")
            yield (text,)
    except CorpusError:
        raise
    except Exception as e:
        raise CorpusError(f"cannot read the corpus: {type(e).__name__}: {e}") from None


# --- sequences ---------------------------------------------------------------------------------


def _document_tokens(doc: Iterable[str], tok: Tokenizer) -> Iterator[list[int]]:
    """A document's tokens, in pieces (one per text chunk), with the BOS / EOS convention."""
    if tok.bos_token_id is not None:
        yield [tok.bos_token_id]
    for chunk in doc:
        yield tok.encode_ordinary(chunk)
    if tok.bos_token_id is None and tok.eos_token_id is not None:
        yield [tok.eos_token_id]


def iter_sequences(
    corpus: Corpus, tokenizer: Any, context: int, seed: int = 0
) -> Iterator[list[int]]:
    """The corpus's `context`-token sequences, in order (see the module docstring)."""
    tok = as_tokenizer(tokenizer)  # a tiktoken Encoding or a models.tokenizer.Tokenizer
    buffer: list[int] = []
    for doc in iter_documents(corpus, seed):
        if corpus.packing == "window":
            buffer = []
        for piece in _document_tokens(doc, tok):
            buffer.extend(piece)
            start = 0
            while len(buffer) - start >= context:
                yield buffer[start : start + context]
                start += context
            del buffer[:start]
