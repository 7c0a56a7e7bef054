"""Load checkpoints of every supported family into our `Transformer`, whatever layout they come in.

`load_model(name_or_path)` accepts:

- a registered name (`gpt2-small`, `gpt2-medium`, `gpt2-large`, `gpt2-xl`, `demo`; other code may
  add entries with `register_model`), which stands for one of the locations below;
- a local folder or an http(s) URL holding one of these layouts, recognised by its config.json:
    * ours (written by `save_model`): config.json = TransformerConfig fields plus
      `"format": "neuron_explainer"`, and model.safetensors;
    * OpenAI's published GPT-2 layout: config.json (enc, ctx_window, d_model, n_layers, m_attn,
      n_heads, m_mlp) and model_pieces/<state dict key>.pt, one torch.save'd tensor per key;
      URLs are downloaded once into file_utils' cache, after which no network is needed;
    * the Hugging Face layout of any family in `families` (GPT-2, GPT-NeoX / Pythia, Llama,
      Mistral, Qwen2 / Qwen3, Gemma 2): config.json with its model_type, and model.safetensors
      or pytorch_model.bin, sharded or not, plus the model's tokenizer.json;
- a Hugging Face repo id (`EleutherAI/pythia-70m`), fetched through `huggingface_hub` into its
  cache (offline: found there, or a one-line error naming what to pass).

Weights stream one tensor at a time from the files to the target device and dtype: no full copy
of the checkpoint is ever held on the host. Every failure raises ModelLoadError with a one-line
"what is wrong: what to do" message.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pickle
import re
import secrets
import shutil
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType
from typing import Any, TypeVar

import tiktoken
import torch
from safetensors import SafetensorError
from safetensors.torch import save_file
from torch import Tensor
from tqdm import tqdm

from neuron_explainer import file_utils
from neuron_explainer.models import families, hub
from neuron_explainer.models.checkpoint import Checkpoint, CheckpointError, StateDict, Tensors
from neuron_explainer.models.config import TransformerConfig
from neuron_explainer.models.families import Source, UnsupportedModel, same
from neuron_explainer.models.transformer import Transformer

__all__ = [
    "FORMAT_NAME",
    "MODEL_REGISTRY",
    "NO_NETWORK_HINT",
    "ModelLoadError",
    "from_transformers",
    "load_model",
    "model_encoding",
    "model_source",
    "model_tokenizer",
    "register_model",
    "save_model",
    "tokenizer_of",
]

_OPENAI_GPT2 = "https://openaipublic.blob.core.windows.net/neuron-explainer/subject-models/gpt2"

# name -> location (local folder or URL) of a checkpoint in any layout load_model reads.
MODEL_REGISTRY: dict[str, str] = {
    f"gpt2-{size}": f"{_OPENAI_GPT2}/{size}" for size in ("small", "medium", "large", "xl")
}
# the small model trained here and shipped in the package (works offline)
MODEL_REGISTRY["demo"] = os.fspath(Path(__file__).parent.parent / "demo" / "model")

FORMAT_NAME = "neuron_explainer"  # the "format" value in config.json of our own layout
_FORMAT_VERSION = 2  # 1: OpenAI's GPT-2 config fields; 2: TransformerConfig's
NO_NETWORK_HINT = (
    "check the URL and the network connection, or pass a local folder with --model-path"
)
# Tokenizer names that mean GPT-2's BPE (r50k_base is tiktoken's name for the same encoding).
_GPT2_ENCODINGS = ("gpt2", "r50k_base")
_MAX_FETCH_THREADS = 8
_T = TypeVar("_T")


class ModelLoadError(ValueError):
    """A model could not be found or loaded; the message is one line saying what to do."""

    def __init__(self, message: str) -> None:
        super().__init__(" ".join(message.split()))


def register_model(name: str, location: str | os.PathLike[str], *, overwrite: bool = False) -> None:
    """Make `load_model(name)` load the checkpoint at `location` (a folder or URL)."""
    if name in MODEL_REGISTRY and not overwrite and MODEL_REGISTRY[name] != os.fspath(location):
        raise ValueError(f"model name {name!r} is already registered for {MODEL_REGISTRY[name]}")
    MODEL_REGISTRY[name] = os.fspath(location)


def model_source(model: Transformer) -> str | None:
    """The folder or URL `model` was loaded from (None for models built in memory).
    Also available as `model.source` on loaded models."""
    return model.source


# ------------------------------------------------------------------------------ loading


def load_model(
    name_or_path: str | os.PathLike[str],
    *,
    device: str | torch.device = "cpu",
    dtype: torch.dtype | None = torch.float32,
) -> Transformer:
    """Load a model (see the module docstring for what `name_or_path` may be), in eval mode, on
    `device`, with floating point weights cast to `dtype` (None keeps the stored dtype).

    The returned model has two extra attributes: `source` (the folder or URL it came from, for
    finding sibling files) and `tokenizer_path` (what to pass to tokenizer.load_tokenizer)."""
    device = _check_device(device)
    location = _resolve(os.fspath(name_or_path))
    config = _read_config(location)
    layout = _layout(config, location)
    if layout == "openai":
        cfg, state = _load_openai(location, config)
        tokenizer_path = _tokenizer_path(cfg.tokenizer, location)
        model = _build_from_state(cfg, state, location, device, dtype)
    else:
        if layout == FORMAT_NAME:
            cfg = _our_config(location, config)
            family: ModuleType | None = None
        else:
            family, cfg = _hf_config(location, config)
        # Resolve the tokenizer first, so that a missing one fails before a long download.
        tokenizer_path = _tokenizer_path(cfg.tokenizer, location)
        checkpoint = _checkpoint(location)
        model = _stream(cfg, checkpoint, family, location, device, dtype)
    model.eval()
    # Plain attributes (nn.Module would type them as Tensor | Module for mypy).
    model.source, model.tokenizer_path = location, tokenizer_path
    return model


def from_transformers(hf_model: Any, *, device: str | torch.device = "cpu", dtype: torch.dtype | None = torch.float32) -> Transformer:
    """Our model holding the weights of a `transformers` causal LM in memory (same families as
    load_model; the tokenizer is GPT-2's unless the caller sets `tokenizer_path`)."""
    config = hf_model.config.to_dict()
    family, cfg = _hf_config("the transformers model", config)
    cfg = dataclasses.replace(cfg, tokenizer="gpt2")
    model = _stream(cfg, StateDict(hf_model.state_dict()), family, "the transformers model", _check_device(device), dtype)
    return model.eval()


def model_tokenizer(model_cfg: TransformerConfig, folder: str | os.PathLike[str] | None) -> str:
    """What to pass to `tokenizer.load_tokenizer` for a model: "gpt2", or the local path of the
    tokenizer file `model_cfg.tokenizer` names relative to the model folder (downloaded, once,
    when the folder is a URL)."""
    return _tokenizer_path(model_cfg.tokenizer, folder)


def tokenizer_of(model: Transformer) -> Any:
    """The `tokenizer.Tokenizer` of a model returned by load_model (GPT-2's for models built in
    memory)."""
    from neuron_explainer.models.tokenizer import load_tokenizer

    return load_tokenizer(model.tokenizer_path)


def model_encoding(model: Transformer) -> tiktoken.Encoding:
    """The tiktoken encoding of a GPT-2-family model returned by load_model (GPT-2's for models
    built in memory)."""
    from neuron_explainer.models.tokenizer import get_tokenizer

    return get_tokenizer(model.tokenizer_path)


def _check_device(device: str | torch.device) -> torch.device:
    try:
        device = torch.device(device)
        torch.empty(0, device=device)
    except (RuntimeError, AssertionError) as e:  # e.g. "Torch not compiled with CUDA enabled"
        what = " ".join(str(e).split())[:160]
        raise ModelLoadError(f"could not use device {device} ({what}): pick another --device") from e
    return device


def _tokenizer_path(enc: str, folder: str | os.PathLike[str] | None) -> str:
    if enc in _GPT2_ENCODINGS:
        return "gpt2"
    if folder is None:
        raise ModelLoadError(
            f"the model's tokenizer {enc!r} is a file relative to the model folder, but the model "
            "has no folder: save it with save_model or set its tokenizer to 'gpt2'"
        )
    folder = os.fspath(folder)
    if not file_utils.is_url(folder):
        path = Path(folder) / enc
        if not path.exists():
            raise ModelLoadError(
                f"tokenizer {enc!r} named by config.json was not found in the model folder: put "
                "the tokenizer files there (for Hugging Face models, the repo's tokenizer.json)"
            )
        return str(path)
    # A URL: download the rank file (and its optional .json) next to each other in the cache.
    if enc.endswith((".tiktoken", ".json")):
        stem = enc.rsplit(".", 1)[0]
        ranks_url = file_utils.join(folder, stem + ".tiktoken")
        extra_url = file_utils.join(folder, stem + ".json")
    else:  # a tokenizer folder
        ranks_url = file_utils.join(folder, enc, "tokenizer.tiktoken")
        extra_url = file_utils.join(folder, enc, "tokenizer.json")
    ranks_path = _fetch(ranks_url, f"tokenizer {enc!r}")
    if file_utils.exists(extra_url):
        _fetch(extra_url, f"tokenizer {enc!r}")
    return str(ranks_path)


def _resolve(name: str) -> str:
    """Turn a registered name, folder, URL or hub repo id into a folder or URL."""
    if name in MODEL_REGISTRY:
        return _resolve_location(MODEL_REGISTRY[name], name)
    if file_utils.is_url(name):
        return name.rstrip("/")
    path = Path(name).expanduser()
    if path.exists():
        return _resolve_location(name, name)
    known = ", ".join(sorted(MODEL_REGISTRY))
    if _looks_like_path(name) or not hub.is_repo_id(name):
        raise ModelLoadError(
            f"model folder not found: {name}: check the path, or use one of the known model "
            f"names ({known}) or a Hugging Face repo id"
        )
    try:
        return str(hub.download_model(name))
    except file_utils.FetchError as e:
        raise ModelLoadError(f"model {name!r} is not a known name ({known}) or a folder, and as a Hugging Face repo: {e}") from e


def _resolve_location(location: str, name: str) -> str:
    if file_utils.is_url(location):
        return location.rstrip("/")
    path = Path(location).expanduser()
    if not path.exists():
        raise ModelLoadError(f"model folder not found: {path} (for {name!r}): check the path")
    if not path.is_dir():
        raise ModelLoadError(
            f"{path} is a file, not a model folder: pass the folder that holds config.json"
        )
    return str(path)


def _looks_like_path(name: str) -> bool:
    """True unless `name` could be a registered name or a Hugging Face repo id."""
    if name.startswith((".", "/", "~")) or "\\" in name:
        return True
    return "/" in name and not re.fullmatch(r"[\w.-]+/[\w.-]+", name)


def _read_config(location: str) -> dict[str, Any]:
    url = file_utils.is_url(location)
    config_location = file_utils.join(location, "config.json")
    if not url and not Path(config_location).is_file():
        raise ModelLoadError(_unrecognised(location, "it has no config.json"))
    config = _guard(
        lambda: file_utils.read_json(config_location, hint=NO_NETWORK_HINT if url else None),
        "",
    )
    if not isinstance(config, dict):
        raise ModelLoadError(f"{config_location} does not hold a JSON object: check the file")
    return config


def _layout(config: Mapping[str, Any], location: str) -> str:
    if config.get("format") == FORMAT_NAME:
        return FORMAT_NAME
    if "model_type" in config or "n_embd" in config:
        if file_utils.is_url(location):
            raise ModelLoadError(
                f"{location} is a Hugging Face folder, which loads from disk or the hub: pass "
                "the local folder with --model-path, or the repo id with --model"
            )
        return "huggingface"
    if "d_model" in config and "n_layers" in config:
        if not file_utils.is_url(location) and not (Path(location) / "model_pieces").is_dir():
            raise ModelLoadError(
                _unrecognised(location, "its config.json has no model_pieces/ next to it")
            )
        return "openai"
    raise ModelLoadError(_unrecognised(location, "its config.json matches no known layout"))


def _unrecognised(location: str, why: str) -> str:
    return (
        f"unrecognised model folder layout at {location} ({why}): expected config.json with "
        "model.safetensors (saved by save_model), config.json with model_pieces/ (OpenAI), or "
        "a Hugging Face folder (config.json with model.safetensors or pytorch_model.bin)"
    )


def _guard(fn: Callable[[], _T], context: str) -> _T:
    """Run fn(), turning file and format errors into one-line ModelLoadErrors."""
    try:
        return fn()
    except ModelLoadError:
        raise
    except file_utils.FetchError as e:
        raise ModelLoadError(f"{context}{e}") from e
    except (
        OSError,
        RuntimeError,
        ValueError,
        EOFError,
        KeyError,
        SafetensorError,
        pickle.UnpicklingError,
    ) as e:
        what = " ".join(str(e).split()) or type(e).__name__
        if len(what) > 160:  # torch.load's errors run to paragraphs
            what = what[:157] + "..."
        raise ModelLoadError(f"{context}{what}: the file may be corrupt or incomplete") from e


def _fetch(location: str, what: str) -> Path:
    hint = NO_NETWORK_HINT if file_utils.is_url(location) else "check the folder"
    try:
        return file_utils.fetch(location, hint=hint, progress=False)
    except file_utils.FetchError as e:
        raise ModelLoadError(f"could not load {what}: {e}") from e


# --- configs


def _our_config(location: str, config: Mapping[str, Any]) -> TransformerConfig:
    version = config.get("format_version", 1)
    fields = {k: v for k, v in config.items() if k not in ("format", "format_version")}
    try:
        if version == 1:
            return TransformerConfig.from_openai(fields)
        if version == _FORMAT_VERSION:
            return TransformerConfig.from_dict(fields)
    except (TypeError, ValueError) as e:
        raise ModelLoadError(f"invalid model config in {location}: {e}") from e
    raise ModelLoadError(
        f"{location} was saved in format version {version}, this code reads 1 and "
        f"{_FORMAT_VERSION}: update neuron_explainer"
    )


def _hf_config(location: str, config: Mapping[str, Any]) -> tuple[ModuleType, TransformerConfig]:
    try:
        family = families.family_for(str(config.get("model_type", "gpt2")))
        return family, family.config(config)
    except (UnsupportedModel, TypeError, ValueError) as e:
        raise ModelLoadError(f"{location}: {e}") from e


# --- streaming weights into the model


def _checkpoint(location: str) -> Checkpoint:
    try:
        if file_utils.is_url(location):  # our own layout served over http: fetch the file first
            return Checkpoint([_fetch(file_utils.join(location, "model.safetensors"), f"the weights of {location}")])
        return Checkpoint.in_folder(Path(location))
    except CheckpointError as e:
        raise ModelLoadError(f"{location}: {e}") from e


def _sources(cfg: TransformerConfig, checkpoint: Tensors, family: ModuleType | None, location: str) -> dict[str, Source]:
    names = checkpoint.names()
    with torch.device("meta"):
        expected = Transformer(cfg).state_dict()
    if family is None:  # our own layout: the checkpoint uses our names
        sources = {k: same(k) for k in expected}
        if cfg.tie_embeddings and "unembed.weight" not in names:  # saved once, used twice
            sources["unembed.weight"] = same("tok_embed.weight")
        ignored: tuple[str, ...] = ()
    else:
        try:
            sources = family.weights(cfg, names)
        except UnsupportedModel as e:
            raise ModelLoadError(f"{location}: {e}") from e
        ignored = family.IGNORED
    missing = [k for k in expected if k not in sources]
    assert not missing, f"family {cfg.family} does not say where {missing[0]} comes from"
    absent = sorted({key for s in sources.values() for key in s.keys} - names)
    if absent:
        raise ModelLoadError(
            f"{location} has no weight {absent[0]!r} ({len(absent)} missing): the checkpoint is "
            f"incomplete or config.json does not match it"
        )
    used = {key for s in sources.values() for key in s.keys}
    leftover = sorted(k for k in names - used if not any(re.fullmatch(p, k) for p in ignored))
    if leftover:
        shown = ", ".join(leftover[:3]) + (", ..." if len(leftover) > 3 else "")
        raise ModelLoadError(
            f"{location} has weights a {cfg.family} model as configured does not use ({shown}): "
            "config.json does not match the weights, or the model has parts we do not support"
        )
    return sources


def _stream(
    cfg: TransformerConfig,
    checkpoint: Tensors,
    family: ModuleType | None,
    location: str,
    device: torch.device,
    dtype: torch.dtype | None,
) -> Transformer:
    """Build the model on the meta device, then fill each parameter from the checkpoint, one at a
    time, straight into its dtype and device. Parameters made from the same checkpoint tensor
    (a tied unembedding) share it."""
    sources = _sources(cfg, checkpoint, family, location)
    with torch.device("meta"):
        model = Transformer(cfg)
    expected = model.state_dict()
    state: dict[str, Tensor] = {}
    shared: dict[tuple[str, ...], Tensor] = {}
    bar = tqdm(total=len(expected), desc="loading weights", unit="tensor", disable=None, leave=False)
    with bar:
        for key, meta in expected.items():
            source = sources[key]
            if source.fn is None and source.keys in shared:
                state[key] = shared[source.keys]
                bar.update(1)
                continue
            raw = [_guard(lambda k=k: checkpoint.read(k), f"{location}: ") for k in source.keys]  # type: ignore[misc]
            value = source.build(*raw)
            if tuple(value.shape) != tuple(meta.shape):
                raise ModelLoadError(
                    f"weight {key} in {location} has shape {tuple(value.shape)} but the config "
                    f"implies {tuple(meta.shape)}: config.json does not match the weights"
                )
            target = dtype if dtype is not None and value.is_floating_point() else value.dtype
            value = value.to(device=device, dtype=target)
            if not value.is_contiguous() or value.untyped_storage().nbytes() != value.numel() * value.element_size():
                value = value.clone(memory_format=torch.contiguous_format)  # not a view of a fused tensor
            state[key] = value
            if source.fn is None:
                shared[source.keys] = state[key]
            del raw, value
            bar.update(1)
    model.load_state_dict(state, assign=True)
    return model.to(device)  # buffers (rotary frequencies) follow the parameters


def _build_from_state(
    cfg: TransformerConfig, state: dict[str, Tensor], location: str, device: torch.device, dtype: torch.dtype | None
) -> Transformer:
    with torch.device("meta"):
        model = Transformer(cfg)
    expected = model.state_dict()
    for key, meta in expected.items():
        if key not in state:
            raise ModelLoadError(f"{location} has no weight {key!r}: the checkpoint is incomplete")
        if tuple(state[key].shape) != tuple(meta.shape):
            raise ModelLoadError(
                f"model piece {key} in {location} has shape {tuple(state[key].shape)} but the "
                f"config implies {tuple(meta.shape)}: config.json does not match the weights"
            )
    unexpected = sorted(set(state) - set(expected))
    if unexpected:
        raise ModelLoadError(f"{location} has unexpected weight {unexpected[0]!r}: config.json does not match the weights")
    cast = {
        k: v.to(device=device, dtype=dtype if dtype is not None and v.is_floating_point() else v.dtype)
        for k, v in state.items()
    }
    model.load_state_dict(cast, assign=True)
    return model.to(device)


# --- saving our layout


def save_model(
    model: Transformer, folder: str | os.PathLike[str], *, overwrite: bool = False
) -> Path:
    """Write `model` to `folder` in our layout (config.json + model.safetensors, plus the tokenizer
    files when cfg.tokenizer names some), atomically: the folder appears complete or not at all.
    `load_model(folder)` gives back bitwise identical weights, in the dtype they were saved in."""
    folder = Path(folder).expanduser()
    if folder.exists() and not overwrite and (not folder.is_dir() or any(folder.iterdir())):
        raise FileExistsError(f"{folder} already exists: pass overwrite=True or another folder")
    state: dict[str, Tensor] = {}
    seen: set[int] = set()
    for k, v in model.state_dict().items():
        if k == "unembed.weight" and model.cfg.tie_embeddings and torch.equal(v, model.tok_embed.weight):
            continue  # a tied unembedding is the embedding: stored once
        v = v.detach().to("cpu")
        # safetensors refuses tensors sharing memory (a tied unembedding): give each its own
        state[k] = v.clone() if v.untyped_storage().data_ptr() in seen else v.contiguous()
        seen.add(v.untyped_storage().data_ptr())
    config = {"format": FORMAT_NAME, "format_version": _FORMAT_VERSION, **model.cfg.to_dict()}
    tokenizer = None
    if model.cfg.tokenizer not in _GPT2_ENCODINGS and model_source(model) is not None:
        tokenizer = Path(model_tokenizer(model.cfg, model_source(model)))
    folder.parent.mkdir(parents=True, exist_ok=True)
    with _temp_dir_next_to(folder) as tmp:
        save_file(state, tmp / "model.safetensors", metadata={"format": "pt"})
        (tmp / "config.json").write_text(json.dumps(config, indent=2) + "\n")
        if tokenizer is not None:
            _copy_tokenizer(tokenizer, tmp / model.cfg.tokenizer)
        if folder.exists():
            old = folder.with_name(f".{folder.name}.old-{secrets.token_hex(4)}")
            os.replace(folder, old)
            os.replace(tmp, folder)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, folder)
    return folder


def _copy_tokenizer(src: Path, dst: Path) -> None:
    if src.is_dir():
        shutil.copytree(src, dst)
        return
    dst.parent.mkdir(parents=True, exist_ok=True)
    if src.name == "tokenizer.json":  # Hugging Face's: one file
        shutil.copyfile(src, dst)
        return
    # ours: get_tokenizer reads NAME.tiktoken and the optional NAME.json next to it.
    for suffix in (".tiktoken", ".json"):
        if src.with_suffix(suffix).is_file():
            shutil.copyfile(src.with_suffix(suffix), dst.with_suffix(suffix))


@contextmanager
def _temp_dir_next_to(folder: Path) -> Iterator[Path]:
    tmp = folder.with_name(f".{folder.name}.tmp-{os.getpid()}-{secrets.token_hex(4)}")
    tmp.mkdir()
    try:
        yield tmp
    finally:
        shutil.rmtree(tmp, ignore_errors=True)  # gone already when it was renamed into place


# --- OpenAI's layout


def _load_openai(
    location: str, config: Mapping[str, Any]
) -> tuple[TransformerConfig, dict[str, Tensor]]:
    # The piece names depend only on the number of layers, so fetch them all first: the
    # published configs have no n_vocab, which we then take from the embedding's shape.
    n_layers = config.get("n_layers")
    if not isinstance(n_layers, int) or n_layers < 0:
        raise ModelLoadError(f"invalid model config in {location}: n_layers must be an integer")
    with torch.device("meta"):
        keys = list(Transformer(TransformerConfig(n_layers=n_layers, n_heads=1, d_model=1)).state_dict())
    urls = {k: file_utils.join(location, "model_pieces", f"{k}.pt") for k in keys}
    remote = file_utils.is_url(location)
    todo = [k for k in keys if remote and not file_utils.cache_path(urls[k]).is_file()]

    def load_piece(key: str) -> Tensor:
        path = _fetch(urls[key], f"model piece {key}")
        piece = _guard(
            lambda: torch.load(path, map_location="cpu", weights_only=True),
            f"could not read model piece {key} ({path}): ",
        )
        if not isinstance(piece, Tensor):
            raise ModelLoadError(f"model piece {key} ({path}) is not a tensor: check the file")
        return piece

    state: dict[str, Tensor] = {}
    with (
        ThreadPoolExecutor(max_workers=_MAX_FETCH_THREADS) as pool,
        tqdm(
            total=len(keys),
            desc=f"downloading {location}",
            unit="piece",
            disable=None if todo else True,  # only on a terminal, and only when downloading
            leave=False,
        ) as bar,
    ):
        futures = {k: pool.submit(load_piece, k) for k in keys}
        try:
            for key, future in futures.items():
                state[key] = future.result()
                bar.update(1)
        finally:
            for future in futures.values():
                future.cancel()
    fields = dict(config)
    if "n_vocab" not in fields and state["tok_embed.weight"].ndim == 2:
        fields["n_vocab"] = state["tok_embed.weight"].shape[0]
    try:
        cfg = TransformerConfig.from_openai(fields)
    except (TypeError, ValueError) as e:
        raise ModelLoadError(f"invalid model config in {location}: {e}") from e
    return cfg, state
