"""The records builder on a real local Ray (started here with 2 CPUs, stopped after): two
workers give the bytes of the one-process build, so do a worker killed mid-shard and an
interrupted build resumed, and node-range groups give the same records too."""

from __future__ import annotations

import os
import random
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from test_collate import WORDS, _model

from neuron_explainer.activations.corpus import Corpus
from neuron_explainer.activations.shard_worker import FAULT_ENV
from neuron_explainer.collate import CHECKPOINT, CollateConfig, build
from neuron_explainer.models.tokenizer import get_tokenizer

ray = pytest.importorskip("ray")

CFG = CollateConfig(
    context=16,
    top_k=4,
    random_sample=3,
    quantile_sample=2,
    quantiles=(0.5, 0.9),
    quantile_calibration=12,
    batch_size=5,
    shard_sequences=20,
    seed=3,
    format="bulk",
)


@pytest.fixture(scope="module")
def local_ray(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    kill_file = tmp_path_factory.mktemp("fault") / "kill-once"
    os.environ[FAULT_ENV] = str(kill_file)  # workers inherit it; inert until the file exists
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        yield kill_file
    finally:
        ray.shutdown()
        os.environ.pop(FAULT_ENV, None)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Corpus:
    rng = random.Random(1)
    docs = [" ".join(rng.choice(WORDS) for _ in range(rng.randint(20, 120))) for _ in range(60)]
    path = tmp_path_factory.mktemp("corpus") / "docs.parquet"
    pq.write_table(pa.table({"id": list(range(len(docs))), "text": docs}), path)
    return Corpus(files=(str(path),))


@pytest.fixture(scope="module")
def model() -> torch.nn.Module:
    return _model()


def _tree(folder: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()
    }


@pytest.fixture(scope="module")
def one_process(
    model: torch.nn.Module, corpus: Corpus, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    out = tmp_path_factory.mktemp("one")
    result = build(model, get_tokenizer(), corpus, out, CFG, progress=False, threads=1)
    assert result.complete and result.shards_done >= 4 and result.n_tokens > 3000
    return out


def test_two_workers_equal_one_process(
    local_ray: Path, model: torch.nn.Module, corpus: Corpus, one_process: Path, tmp_path: Path
) -> None:
    result = build(
        model, get_tokenizer(), corpus, tmp_path, CFG, progress=False, workers=2, threads=1
    )
    assert result.complete and len(result.worker_peak_bytes) == 2
    assert _tree(tmp_path) == _tree(one_process)


def test_killed_worker_is_replaced(
    local_ray: Path, model: torch.nn.Module, corpus: Corpus, one_process: Path, tmp_path: Path
) -> None:
    local_ray.write_text("kill the next worker that reaches its second batch")
    result = build(
        model, get_tokenizer(), corpus, tmp_path, CFG, progress=False, workers=2, threads=1
    )
    assert not local_ray.exists()  # a worker did die mid-shard
    assert result.complete
    assert _tree(tmp_path) == _tree(one_process)


def test_interrupted_ray_build_resumes(
    local_ray: Path, model: torch.nn.Module, corpus: Corpus, one_process: Path, tmp_path: Path
) -> None:
    enc = get_tokenizer()
    first = build(
        model, enc, corpus, tmp_path, CFG, progress=False, workers=2, threads=1,
        stop_after_shards=2,
    )  # fmt: skip
    assert not first.complete and (tmp_path / CHECKPOINT).is_file()
    second = build(model, enc, corpus, tmp_path, CFG, progress=False, threads=1)  # no Ray
    assert second.complete
    assert _tree(tmp_path) == _tree(one_process)


def test_node_groups_give_the_same_records(
    local_ray: Path, model: torch.nn.Module, corpus: Corpus, one_process: Path, tmp_path: Path
) -> None:
    """A state budget of ~1/5 of the whole splits the nodes into groups (one corpus pass
    each); interrupted in the middle of a group and resumed, the bytes are the same."""
    from neuron_explainer.activations.running_state import state_bytes
    from neuron_explainer.collate import family_specs

    budget = state_bytes(family_specs(model), CFG) // 5
    enc = get_tokenizer()
    first = build(
        model, enc, corpus, tmp_path, CFG, progress=False, workers=2, threads=1,
        max_state_bytes=budget, stop_after_shards=7,
    )  # fmt: skip
    assert not first.complete
    done = build(
        model, enc, corpus, tmp_path, CFG, progress=False, workers=2, threads=1,
        max_state_bytes=budget,
    )  # fmt: skip
    assert done.complete
    assert _tree(tmp_path) == _tree(one_process)
