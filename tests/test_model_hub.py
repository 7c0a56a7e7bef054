"""`--model owner/repo`: a model fetched by repo id through huggingface_hub, from a local server
that speaks the hub's file API (HF_ENDPOINT); then from the cache, also with the hub gone; and a
one-line error when it is neither reachable nor cached."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from conftest import LocalHTTPServer
from fake_hub import FakeHub

from neuron_explainer.models.loading import ModelLoadError, load_model, tokenizer_of
from neuron_explainer.models.random_models import save_random

pytest.importorskip("transformers")
REPO = "EleutherAI/pythia-test"


@pytest.fixture
def hub(http_server: LocalHTTPServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> FakeHub:
    fake = FakeHub(http_server)
    monkeypatch.setenv("HF_ENDPOINT", fake.endpoint)
    monkeypatch.setenv("HF_HUB_DISABLE_TELEMETRY", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf_cache"))
    return fake


def test_repo_id_downloads_once_then_loads_from_the_cache(hub: FakeHub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder, hf = save_random("gpt_neox", tmp_path / "made")
    hub.add_folder(REPO, folder)
    hub.add_file(REPO, "pytorch_model.bin", b"not wanted: the repo has safetensors")
    x = torch.randint(3, 300, (1, 9))
    with torch.no_grad():
        expected = hf(x).logits

    model = load_model(REPO)
    fetched = {p.rsplit("/", 1)[-1] for p in hub.downloads()}
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= fetched
    assert "pytorch_model.bin" not in fetched
    with torch.no_grad():
        torch.testing.assert_close(model(x), expected, atol=1e-4, rtol=0)
    assert tokenizer_of(model).encode("When Mary") == tokenizer_of(load_model(folder)).encode("When Mary")

    count = len(hub.downloads())
    load_model(REPO)
    assert len(hub.downloads()) == count  # a cache hit: no file body fetched again

    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # the hub is gone
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with torch.no_grad():
        torch.testing.assert_close(load_model(REPO)(x), expected, atol=1e-4, rtol=0)


def test_offline_and_not_cached_is_one_line(hub: FakeHub, monkeypatch: pytest.MonkeyPatch) -> None:
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(ModelLoadError) as e:
        load_model(REPO)
    message = str(e.value)
    assert "\n" not in message and "--model-path" in message and REPO in message


def test_unknown_repo_is_one_line(hub: FakeHub) -> None:
    with pytest.raises(ModelLoadError) as e:
        load_model("EleutherAI/no-such-model")
    assert "\n" not in str(e.value) and "no-such-model" in str(e.value)
