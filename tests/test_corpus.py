"""Corpora for the records builder (`activations.corpus`): Parquet / JSONL / Arrow / text files
through `datasets`, the BOS / end-of-text conventions, packed and windowed sequences, seeded
shuffling, and one-line errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from neuron_explainer.activations.corpus import (
    Corpus,
    CorpusError,
    iter_sequences,
)
from neuron_explainer.models.tokenizer import TiktokenTokenizer, get_tokenizer

DOCS = [f"document {i} " + "word " * (3 + 5 * i) for i in range(6)]


class CharTokenizer:
    """A tokenizer with a BOS token: one id per character, BOS = 0."""

    bos_token_id: int | None = 0
    eos_token_id: int | None = 1
    n_vocab = 0x110000 + 2

    def encode(self, text: str) -> list[int]:
        return [ord(c) + 2 for c in text]

    encode_prompt = encode_ordinary = encode

    def decode_tokens(self, ids: Sequence[int]) -> list[str]:
        return [chr(i - 2) if i > 1 else f"<{i}>" for i in ids]


@pytest.fixture
def files(tmp_path: Path) -> dict[str, Path]:
    out = {"parquet": tmp_path / "c.parquet", "jsonl": tmp_path / "c.jsonl"}
    pq.write_table(pa.table({"n": list(range(len(DOCS))), "text": DOCS}), out["parquet"])
    out["jsonl"].write_text("".join(json.dumps({"body": d}) + "\n" for d in DOCS))
    arrow = tmp_path / "c.arrow"
    table = pa.table({"text": DOCS})
    with pa.OSFile(str(arrow), "wb") as sink, pa.ipc.new_stream(sink, table.schema) as w:
        w.write_table(table)
    out["arrow"] = arrow
    for i, d in enumerate(DOCS):
        (tmp_path / f"{i}.txt").write_text(d)
    return out


def _stream(docs: list[str], tok: CharTokenizer) -> list[int]:
    return [t for d in docs for t in [0, *tok.encode(d)]]


@pytest.mark.parametrize("kind", ["parquet", "jsonl", "arrow"])
def test_dataset_files_give_the_documents_in_order(files: dict[str, Path], kind: str) -> None:
    tok = CharTokenizer()
    corpus = Corpus(files=(str(files[kind]),), text_column="body" if kind == "jsonl" else "text")
    seqs = list(iter_sequences(corpus, tok, 16))
    stream = _stream(DOCS, tok)  # BOS before every document
    assert seqs == [stream[i : i + 16] for i in range(0, len(stream) - 15, 16)]


def test_text_files_and_gpt2_convention(files: dict[str, Path]) -> None:
    enc = get_tokenizer()
    paths = [str(files["parquet"].parent / f"{i}.txt") for i in range(3)]
    seqs = list(iter_sequences(Corpus(files=tuple(paths)), enc, 8))
    stream = [t for d in DOCS[:3] for t in [*enc.encode(d), enc.eot_token]]  # EOT after each
    assert [t for s in seqs for t in s] == stream[: len(seqs) * 8]
    assert len(stream) - len(seqs) * 8 < 8
    assert TiktokenTokenizer(enc).bos_token_id is None


def test_window_packing_never_spans_documents(files: dict[str, Path]) -> None:
    tok = CharTokenizer()
    corpus = Corpus(files=(str(files["parquet"]),), packing="window")
    seqs = list(iter_sequences(corpus, tok, 16))
    want = []
    for d in DOCS:
        ids = [0, *tok.encode(d)]
        want += [ids[i : i + 16] for i in range(0, len(ids) - 15, 16)]
    assert seqs == want
    assert all(s[0] == 0 or 0 not in s for s in seqs)


def test_shuffle_is_seeded(files: dict[str, Path]) -> None:
    tok = CharTokenizer()
    corpus = Corpus(files=(str(files["parquet"]),), shuffle_buffer=100, packing="window")
    a = list(iter_sequences(corpus, tok, 8, seed=1))
    b = list(iter_sequences(corpus, tok, 8, seed=1))
    c = list(iter_sequences(corpus, tok, 8, seed=2))
    assert a == b and a != c and sorted(a) == sorted(c)


def test_errors_are_one_line(files: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    tok = CharTokenizer()
    with pytest.raises(CorpusError, match=r"no column 'text'.*--text-column"):
        list(iter_sequences(Corpus(files=(str(files["jsonl"]),)), tok, 8))
    with pytest.raises(CorpusError, match="not found"):
        Corpus(files=("/nonexistent.parquet",))
    with pytest.raises(CorpusError, match="either"):
        Corpus()
    import datasets
    import huggingface_hub

    # offline as HF_HUB_OFFLINE=1 at start-up makes it (without: the same line after retries)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    with pytest.raises(CorpusError) as info:
        list(iter_sequences(Corpus(dataset="someone/not-cached-anywhere"), tok, 8))
    message = str(info.value)
    assert "\n" not in message and "--corpus FILE.parquet" in message


def test_hub_dataset_streams_through_hf_endpoint(http_server: Any, tmp_path: Path) -> None:
    """`--hf-dataset owner/name` over the hub's HTTP API (the local fake hub, reached as a real
    hub is: HF_ENDPOINT in a fresh process): its Parquet shards stream in file order, per split,
    and give the sequences the same files give locally."""
    from fake_hub import FakeHub

    hub = FakeHub(http_server)
    shards = {"train": [DOCS[:2], DOCS[2:5]], "validation": [DOCS[5:]]}
    local: dict[str, list[str]] = {}
    for split, parts in shards.items():
        for i, docs in enumerate(parts):
            path = tmp_path / f"{split}-{i:05d}-of-{len(parts):05d}.parquet"
            pq.write_table(pa.table({"text": docs}), path)
            hub.add_file("owner/corpus", f"data/{path.name}", path.read_bytes(), repo_type="dataset")
            local.setdefault(split, []).append(str(path))
    code = (
        "import json, sys\n"
        "from neuron_explainer.activations.corpus import Corpus, iter_sequences\n"
        "from neuron_explainer.models.tokenizer import get_tokenizer\n"
        "split = sys.argv[1]\n"
        "print(json.dumps(list(iter_sequences(Corpus(dataset='owner/corpus', split=split), get_tokenizer(), 8))))\n"
    )
    env = {
        **os.environ, "HF_ENDPOINT": hub.endpoint, "HF_HUB_CACHE": str(tmp_path / "hub_cache"),
        "HF_DATASETS_CACHE": str(tmp_path / "datasets_cache"), "HF_HUB_DISABLE_TELEMETRY": "1",
        "NO_PROXY": "127.0.0.1,localhost", "no_proxy": "127.0.0.1,localhost",
    }
    env.pop("HF_HUB_OFFLINE", None)
    env.pop("HF_DATASETS_OFFLINE", None)
    enc = get_tokenizer()
    for split in shards:
        run = subprocess.run([sys.executable, "-c", code, split], env=env, capture_output=True, text=True, timeout=300)
        assert run.returncode == 0, run.stderr[-2000:]
        streamed = json.loads(run.stdout.splitlines()[-1])
        expected = list(iter_sequences(Corpus(files=tuple(local[split])), enc, 8))
        assert streamed == expected and len(expected) > 0
    served = {p.rsplit("/", 1)[-1] for p in hub.downloads()}
    assert served >= {Path(f).name for files in local.values() for f in files}
