"""Loading streams weights: the host memory a load needs stays within 1.3x the checkpoint's size.

Measured in a fresh process: its peak resident set minus what it held before loading. A tiny
model is loaded first, so that the one-time cost of torch's lazily imported meta-device kernels
(about 70 MB, whatever the model's size) is not counted as the checkpoint's."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

pytest.importorskip("transformers")

_MEASURE = """
import json, sys, torch
from neuron_explainer.models.loading import load_model
torch.set_num_threads(1)
def status_kib(field):
    # VmHWM, not getrusage's ru_maxrss: that one keeps the forked parent's size across exec
    for line in open("/proc/self/status"):
        if line.startswith(field + ":"):
            return int(line.split()[1])
load_model(sys.argv[2])  # warm-up: lazy imports
before = status_kib("VmRSS")
model = load_model(sys.argv[1], dtype=None)
n = sum(p.numel() * p.element_size() for p in model.parameters())
print(json.dumps({"before": before, "peak": status_kib("VmHWM"), "params": n}))
"""


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs /proc (Linux)")
def test_loading_a_500mb_checkpoint_needs_at_most_1_3x_its_size(tmp_path: Path) -> None:
    import transformers

    # a Llama of about 530 MB in fp32, saved in two shards by transformers itself
    config = transformers.LlamaConfig(
        hidden_size=1024, num_hidden_layers=7, num_attention_heads=16, num_key_value_heads=4,
        intermediate_size=4352, vocab_size=8192, max_position_embeddings=256, tie_word_embeddings=False,
    )
    with torch.device("meta"):
        model = transformers.LlamaForCausalLM(config)
    model = model.to_empty(device="cpu")
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.02)
    model.save_pretrained(tmp_path / "big", max_shard_size="300MB")
    del model
    from neuron_explainer.models.random_models import make_tokenizer, save_random

    make_tokenizer(tmp_path / "big")
    size = sum(f.stat().st_size for f in (tmp_path / "big").glob("*.safetensors"))
    assert size >= 500e6 and len(list((tmp_path / "big").glob("*.safetensors"))) >= 2

    tiny, _ = save_random("llama", tmp_path / "tiny")
    out = subprocess.run(
        [sys.executable, "-c", _MEASURE, str(tmp_path / "big"), str(tiny)],
        capture_output=True, text=True, check=True, timeout=600,
    )
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["params"] >= 0.99 * size
    needed = (result["peak"] - result["before"]) * 1024
    assert needed <= 1.3 * size, f"loading took {needed / 1e6:.0f} MB for a {size / 1e6:.0f} MB checkpoint"
