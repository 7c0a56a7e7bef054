"""Loading an SAE or a transcoder set from wherever it is, in whichever published layout.

`load_sae(source)` takes

- a local folder (or file), its layout recognized from the files in it: SAELens (`cfg.json`),
  Llama Scope (`hyperparams.json`), Gemma Scope (`params.npz`), dictionary_learning (`ae.pt`),
  Qwen Scope (a `layer{L}.sae.pt` file);
- "RELEASE:SAE_ID" of SAELens' release table, e.g. "gpt2-small-res-jb:blocks.8.hook_resid_pre";
- "hf://owner/repo/path/in/repo[@revision]", a folder of a Hugging Face repository in one of
  those layouts.

`load_transcoder_set(source)` takes a circuit-tracer set: a local folder with `config.yaml`, or
"hf://owner/repo[/folder][@revision]".

Downloads go through huggingface_hub (hub.py): its cache, progress bars and HF_ENDPOINT.
"""

from __future__ import annotations

import contextlib
import os
import re
from pathlib import Path
from typing import Any

import torch

from neuron_explainer.file_utils import FetchError
from neuron_explainer.models import hub
from neuron_explainer.models.saes.circuit_tracer import (
    CONFIG_FILE,
    TranscoderSet,
    load_circuit_tracer_layer,
    load_circuit_tracer_set,
)
from neuron_explainer.models.saes.dictionary_learning import AE_FILE, load_dictionary_learning
from neuron_explainer.models.saes.dictionary_learning import CONFIG_FILE as DL_CONFIG_FILE
from neuron_explainer.models.saes.files import read_yaml_object
from neuron_explainer.models.saes.gemma_scope import PARAMS_FILE, load_gemma_scope
from neuron_explainer.models.saes.hook_names import HookConventions
from neuron_explainer.models.saes.llama_scope import (
    HYPERPARAMS_FILE,
    LLAMA_SCOPE_WEIGHTS,
    load_llama_scope,
)
from neuron_explainer.models.saes.qwen_scope import load_qwen_scope
from neuron_explainer.models.saes.releases import Release, find_release, split_release_spec
from neuron_explainer.models.saes.saelens_format import (
    CFG_FILE,
    SPARSITY_FILE,
    WEIGHTS_FILE,
    load_saelens_folder,
)
from neuron_explainer.models.saes.sparse_coder import SparseCoder

__all__ = ["SUPPORTED_CONVERSIONS", "detect_format", "load_sae", "load_transcoder_set"]

# SAELens release layouts ("conversion_func") we read
SUPPORTED_CONVERSIONS = (
    "sae_lens",
    "gemma_2",
    "gemma_2_transcoder",
    "llama_scope",
    "mwhanna_transcoder",
    "qwen_scope",
    "dictionary_learning_1",
)
# layout -> the file that marks it
_FORMAT_FILES = {
    "saelens": CFG_FILE,
    "llama_scope": HYPERPARAMS_FILE,
    "gemma_scope": PARAMS_FILE,
    "circuit_tracer": CONFIG_FILE,
    "dictionary_learning": AE_FILE,
}
_SOURCE_HINT = (
    "pass a local folder, RELEASE:SAE_ID of a SAELens release (e.g. "
    "gpt2-small-res-jb:blocks.8.hook_resid_pre), or hf://owner/repo/path"
)


def detect_format(folder: str | os.PathLike[str]) -> str:
    """"saelens", "llama_scope", "gemma_scope", "circuit_tracer" or "dictionary_learning", from
    the files in `folder`."""
    path = Path(folder)
    for fmt, name in _FORMAT_FILES.items():
        if (path / name).is_file():
            return fmt
    raise ValueError(
        f"{path}: no SAE layout recognized: expected one of {', '.join(_FORMAT_FILES.values())}"
    )


def _join(folder: str, name: str) -> str:
    return f"{folder.strip('/')}/{name}" if folder.strip("/") else name


def _sparsity(repo: str, folder: str, revision: str | None, cache_dir: str | None) -> None:
    """Fetch the optional sparsity file next to a SAELens folder; unreachable is fine (it is
    informational, and the SAE itself may be cached)."""
    with contextlib.suppress(hub.HubUnreachable):
        hub.download_file(repo, _join(folder, SPARSITY_FILE), revision=revision, cache_dir=cache_dir, optional=True)


def _load_local(path: Path, kw: dict[str, Any]) -> SparseCoder:
    if path.is_file():
        if path.suffix == ".npz":
            return load_gemma_scope(path, **kw)
        if path.name.endswith(".sae.pt"):
            return load_qwen_scope(path, **kw)
        if path.name in (CFG_FILE, HYPERPARAMS_FILE):
            path = path.parent
        else:
            raise ValueError(f"{path}: pass the SAE's folder, not one of its files")
    fmt = detect_format(path)
    if fmt == "saelens":
        return load_saelens_folder(path, **kw)
    if fmt == "llama_scope":
        return load_llama_scope(path, **kw)
    if fmt == "gemma_scope":
        return load_gemma_scope(path, **kw)
    if fmt == "dictionary_learning":
        return load_dictionary_learning(path, **kw)
    raise ValueError(f"{path} is a circuit-tracer transcoder set: load it with load_transcoder_set")


def _load_release(release: Release, sae_id: str, kw: dict[str, Any], cache_dir: str | None) -> SparseCoder:
    folder = release.path_of(sae_id)
    repo = release.repo_id
    source = f"{release.name}:{sae_id}"

    def get(name: str) -> Path | None:
        return hub.download_file(repo, _join(folder, name), cache_dir=cache_dir)

    conversion = release.conversion
    if conversion == "sae_lens":
        cfg = get(CFG_FILE)
        assert cfg is not None
        get(WEIGHTS_FILE)
        _sparsity(repo, folder, None, cache_dir)
        return load_saelens_folder(
            cfg.parent,
            config_overrides=release.config_overrides,
            norm_scaling_factor=release.norm_scaling_factors.get(sae_id),
            source=source,
            **kw,
        )
    if conversion in ("gemma_2", "gemma_2_transcoder"):
        npz = get(PARAMS_FILE)
        assert npz is not None
        return load_gemma_scope(
            npz, transcoder=conversion == "gemma_2_transcoder", location=f"{repo}/{folder}", source=source, **kw
        )
    if conversion == "llama_scope":
        get(LLAMA_SCOPE_WEIGHTS)
        hp = get(HYPERPARAMS_FILE)
        assert hp is not None
        return load_llama_scope(hp.parent, source=source, **kw)
    if conversion == "mwhanna_transcoder":  # one circuit-tracer layer file per SAE id
        m = re.search(r"layer_(\d+)\.safetensors$", folder)
        file = hub.download_file(repo, folder, cache_dir=cache_dir)
        if m is None or file is None:
            raise ValueError(f"{source}: expected a layer_<i>.safetensors path, got {folder!r}")
        return load_circuit_tracer_layer(
            file,
            int(m.group(1)),
            feature_input_hook="mlp.hook_in",
            feature_output_hook="hook_mlp_out",
            model_name=release.model,
            source=source,
            **kw,
        )
    if conversion == "qwen_scope":
        file = hub.download_file(repo, folder, cache_dir=cache_dir)
        assert file is not None
        return load_qwen_scope(file, repo_id=repo, model_name=release.model, source=source, **kw)
    if conversion == "dictionary_learning_1":
        get(DL_CONFIG_FILE)
        ae = get(AE_FILE)
        assert ae is not None
        return load_dictionary_learning(ae.parent, source=source, **kw)
    raise ValueError(
        f"release {release.name!r} uses SAELens' {conversion!r} layout, which is not supported; "
        f"supported layouts: {', '.join(SUPPORTED_CONVERSIONS)}"
    )


def _load_hf(uri: str, kw: dict[str, Any], cache_dir: str | None) -> SparseCoder:
    repo, folder, revision = hub.parse_hf_uri(uri)
    if folder.endswith((".npz", ".sae.pt")):
        file = hub.download_file(repo, folder, revision=revision, cache_dir=cache_dir)
        assert file is not None
        if folder.endswith(".npz"):
            return load_gemma_scope(file, location=f"{repo}/{folder}", source=uri, **kw)
        return load_qwen_scope(file, repo_id=repo, source=uri, **kw)
    offline: hub.HubUnreachable | None = None
    # cached layouts first, layouts the hub said are absent never: offline loads stay quick
    states = {
        fmt: hub.cached_state(repo, _join(folder, name), revision=revision, cache_dir=cache_dir)
        for fmt, name in _FORMAT_FILES.items()
    }
    order = sorted((fmt for fmt in _FORMAT_FILES if states[fmt] != "absent"), key=lambda f: states[f] != "present")
    for fmt in order:
        name = _FORMAT_FILES[fmt]
        try:
            found = hub.download_file(repo, _join(folder, name), revision=revision, cache_dir=cache_dir, optional=True)
        except hub.HubUnreachable as e:
            # not cached and the hub unreachable: another layout's files may still be cached
            offline, found = e, None
        if found is None:
            continue
        if fmt == "saelens":
            hub.download_file(repo, _join(folder, WEIGHTS_FILE), revision=revision, cache_dir=cache_dir)
            _sparsity(repo, folder, revision, cache_dir)
            return load_saelens_folder(found.parent, source=uri, **kw)
        if fmt == "llama_scope":
            hub.download_file(repo, _join(folder, LLAMA_SCOPE_WEIGHTS), revision=revision, cache_dir=cache_dir)
            return load_llama_scope(found.parent, source=uri, **kw)
        if fmt == "gemma_scope":
            return load_gemma_scope(found, location=f"{repo}/{folder}", source=uri, **kw)
        if fmt == "dictionary_learning":
            hub.download_file(repo, _join(folder, DL_CONFIG_FILE), revision=revision, cache_dir=cache_dir)
            return load_dictionary_learning(found.parent, source=uri, **kw)
        raise ValueError(f"{uri} is a circuit-tracer transcoder set: load it with load_transcoder_set")
    if offline is not None:
        raise offline
    raise FetchError(f"{uri} holds none of {', '.join(_FORMAT_FILES.values())}", "check the path in the repository")


def load_sae(
    source: str | os.PathLike[str],
    *,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
    conventions: HookConventions | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
) -> SparseCoder:
    """One SAE or transcoder from a local folder, "RELEASE:SAE_ID" or "hf://owner/repo/path"
    (see the module docstring). Its parameters are frozen; `reads` / `writes` are our hook
    points for `conventions`' model family. Raises ValueError (bad files or arguments) or
    file_utils.FetchError (downloads), with one-line messages."""
    kw: dict[str, Any] = {"dtype": dtype, "device": device, "conventions": conventions}
    cache = os.fspath(cache_dir) if cache_dir is not None else None
    text = os.fspath(source)
    path = Path(text).expanduser()
    if path.exists():
        return _load_local(path, kw)
    if text.startswith("hf://"):
        return _load_hf(text, kw, cache)
    spec = split_release_spec(text)
    if spec is not None:
        return _load_release(find_release(spec[0]), spec[1], kw, cache)
    if ":" in text and not text.startswith(("/", ".")):
        find_release(text.partition(":")[0])  # raises with the known releases
    raise ValueError(f"no SAE at {text!r}: {_SOURCE_HINT}")


def load_transcoder_set(
    source: str | os.PathLike[str],
    *,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
    conventions: HookConventions | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
) -> TranscoderSet:
    """A circuit-tracer transcoder set from a local folder (or its config.yaml) or
    "hf://owner/repo[/folder][@revision]"; `hf://` entries of its `transcoders` list are
    downloaded through the hub cache too."""
    kw: dict[str, Any] = {"dtype": dtype, "device": device, "conventions": conventions}
    cache = os.fspath(cache_dir) if cache_dir is not None else None

    def resolve(uri: str) -> Path:
        repo, file, revision = hub.parse_hf_uri(uri)
        local = hub.download_file(repo, file, revision=revision, cache_dir=cache)
        assert local is not None
        return local

    text = os.fspath(source)
    path = Path(text).expanduser()
    if path.exists():
        return load_circuit_tracer_set(path, resolve_uri=resolve, **kw)
    if not text.startswith("hf://"):
        raise ValueError(f"no transcoder set at {text!r}: pass its local folder or hf://owner/repo[/folder]")
    repo, folder, revision = hub.parse_hf_uri(text)
    config = hub.download_file(repo, _join(folder, CONFIG_FILE), revision=revision, cache_dir=cache)
    assert config is not None
    listed = read_yaml_object(config).get("transcoders")
    layer_files = None
    if isinstance(listed, list):
        for entry in listed:  # relative entries are files of the same repository folder
            if isinstance(entry, str) and not entry.startswith("hf://") and not Path(entry).is_absolute():
                hub.download_file(repo, _join(folder, entry), revision=revision, cache_dir=cache)
    else:
        snapshot = hub.download_snapshot(repo, [_join(folder, "layer_*.safetensors")], revision=revision, cache_dir=cache)
        layers = sorted(
            ((int(m.group(1)), p) for p in (snapshot / folder).glob("layer_*.safetensors") if (m := re.match(r"layer_(\d+)\.", p.name))),
        )
        layer_files = [p for _, p in layers]
        if [i for i, _ in layers] != list(range(len(layers))) or not layers:
            raise ValueError(f"{text}: layer files must be layer_0 .. layer_N, found {[i for i, _ in layers]}")
    return load_circuit_tracer_set(config, resolve_uri=resolve, layer_files=layer_files, source=text, **kw)
