"""Load GPT-2 checkpoints into our `Transformer`, whatever layout they come in.

`load_model(name_or_path)` accepts:

- a registered name (`gpt2-small`, `gpt2-medium`, `gpt2-large`, `gpt2-xl`; other code may add
  entries to MODEL_REGISTRY, or call `register_model`), which stands for one of the locations below;
- a local folder or an http(s) URL holding one of these layouts, recognised by its config.json:
    * ours (written by `save_model`): config.json = TransformerConfig fields plus
      `"format": "neuron_explainer"`, and model.safetensors;
    * OpenAI's published layout: config.json (enc, ctx_window, d_model, n_layers, m_attn,
      n_heads, m_mlp) and model_pieces/<state dict key>.pt, one torch.save'd tensor per key;
      URLs are downloaded once into file_utils' cache, after which no network is needed;
    * Hugging Face GPT-2: config.json with model_type gpt2, and model.safetensors or
      pytorch_model.bin (sharded checkpoints with an .index.json too);
- a Hugging Face repo id (`gpt2`, `openai-community/gpt2`) already in the local hub cache
  (`$HF_HUB_CACHE`, `$HF_HOME/hub` or `~/.cache/huggingface/hub`); nothing is ever downloaded
  from the hub.

Every failure raises ModelLoadError with a one-line "what is wrong: what to do" message.
"""

from __future__ import annotations

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
from typing import Any, TypeVar

import tiktoken
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import Tensor
from tqdm import tqdm

from neuron_explainer import file_utils
from neuron_explainer.models.transformer import Transformer, TransformerConfig

__all__ = [
    "FORMAT_NAME",
    "MODEL_REGISTRY",
    "NO_NETWORK_HINT",
    "ModelLoadError",
    "hf_gpt2_to_state_dict",
    "hf_hub_cache_dir",
    "load_model",
    "model_encoding",
    "model_source",
    "model_tokenizer",
    "register_model",
    "save_model",
]

_OPENAI_GPT2 = "https://openaipublic.blob.core.windows.net/neuron-explainer/subject-models/gpt2"

# name -> location (local folder or URL) of a checkpoint in any layout load_model reads.
MODEL_REGISTRY: dict[str, str] = {
    f"gpt2-{size}": f"{_OPENAI_GPT2}/{size}" for size in ("small", "medium", "large", "xl")
}
# the small model trained here and shipped in the package (works offline)
MODEL_REGISTRY["demo"] = os.fspath(Path(__file__).parent.parent / "demo" / "model")

FORMAT_NAME = "neuron_explainer"  # the "format" value in config.json of our own layout
_FORMAT_VERSION = 1
NO_NETWORK_HINT = (
    "check the URL and the network connection, or pass a local folder with --model-path"
)
# Tokenizer names that mean GPT-2's BPE (r50k_base is tiktoken's name for the same encoding).
_GPT2_ENCODINGS = ("gpt2", "r50k_base")
# Activation functions that are exactly our tanh-approximated GELU.
_HF_ACTIVATIONS = ("gelu_new", "gelu_pytorch_tanh")
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
    """Load a GPT-2 (see the module docstring for what `name_or_path` may be), in eval mode, on
    `device`, with floating point weights cast to `dtype` (None keeps the stored dtype).

    The returned model has two extra attributes: `source` (the folder or URL it came from, for
    finding sibling files) and `tokenizer_path` (what to pass to tokenizer.get_tokenizer)."""
    location = _resolve(os.fspath(name_or_path))
    config = _read_config(location)
    layout = _layout(config, location)
    # Resolve the tokenizer first, so that a missing one fails before a long download.
    enc = "gpt2" if layout == "huggingface" else str(config.get("enc", "gpt2"))
    tokenizer_path = _tokenizer_path(enc, location)
    if layout == FORMAT_NAME:
        cfg, state = _load_ours(location, config)
    elif layout == "openai":
        cfg, state = _load_openai(location, config)
    else:
        cfg, state = _load_hf(location, config)
    model = _build(cfg, state, location, dtype)
    try:
        model.to(device)
    except (RuntimeError, AssertionError) as e:  # e.g. "Torch not compiled with CUDA enabled"
        what = " ".join(str(e).split())[:160]
        raise ModelLoadError(
            f"could not move the model to {device} ({what}): pick another --device"
        ) from e
    model.eval()
    # Plain attributes (nn.Module would type them as Tensor | Module for mypy).
    model.source, model.tokenizer_path = location, tokenizer_path
    return model


def model_tokenizer(model_cfg: TransformerConfig, folder: str | os.PathLike[str] | None) -> str:
    """What to pass to `tokenizer.get_tokenizer` for a model: "gpt2", or the local path of the
    tokenizer file `model_cfg.enc` names relative to the model folder (downloaded, once, when the
    folder is a URL)."""
    return _tokenizer_path(model_cfg.enc, folder)


def model_encoding(model: Transformer) -> tiktoken.Encoding:
    """The tokenizer of a model returned by load_model (GPT-2's for models built in memory)."""
    from neuron_explainer.models.tokenizer import get_tokenizer

    return get_tokenizer(model.tokenizer_path)


def _tokenizer_path(enc: str, folder: str | os.PathLike[str] | None) -> str:
    if enc in _GPT2_ENCODINGS:
        return "gpt2"
    if folder is None:
        raise ModelLoadError(
            f"the model's tokenizer {enc!r} is a file relative to the model folder, but the model "
            "has no folder: save it with save_model or set cfg.enc to 'gpt2'"
        )
    folder = os.fspath(folder)
    if not file_utils.is_url(folder):
        path = Path(folder) / enc
        if not path.exists():
            raise ModelLoadError(
                f"tokenizer {enc!r} named by config.json was not found at {path}: put the "
                "tokenizer files there, or set 'enc' in config.json to 'gpt2'"
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
    """Turn a registered name, folder, URL or HF repo id into a folder or URL."""
    if name in MODEL_REGISTRY:
        return _resolve_location(MODEL_REGISTRY[name], name)
    if file_utils.is_url(name):
        return name.rstrip("/")
    path = Path(name).expanduser()
    if path.exists():
        return _resolve_location(name, name)
    snapshot = _hf_cache_snapshot(name)
    if snapshot is not None:
        return str(snapshot)
    known = ", ".join(sorted(MODEL_REGISTRY))
    if _looks_like_path(name):
        raise ModelLoadError(
            f"model folder not found: {os.path.abspath(path)}: check the path, or use one of the known model "
            f"names ({known})"
        )
    raise ModelLoadError(
        f"unknown model {name!r}: it is not a known model name ({known}), an existing folder, "
        f"a URL, or a Hugging Face repo id in the local cache {hf_hub_cache_dir()}: use one of "
        "the known names, or pass a local folder with --model-path"
    )


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
        model_type = config.get("model_type", "gpt2")
        if model_type != "gpt2":
            raise ModelLoadError(
                f"{location} holds a Hugging Face {model_type!r} model: only GPT-2 "
                "(model_type 'gpt2') is supported"
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
        "a Hugging Face GPT-2 folder (config.json with model.safetensors or pytorch_model.bin)"
    )


def _config(fields: Mapping[str, Any], location: str) -> TransformerConfig:
    try:
        cfg = TransformerConfig.from_dict(fields)
        cfg.d_head  # noqa: B018 -- checks that the heads divide the attention width
    except (TypeError, ValueError, AssertionError) as e:
        raise ModelLoadError(f"invalid model config in {location}: {e}") from e
    return cfg


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


def _load_tensor_file(path: Path) -> dict[str, Tensor]:
    """A .safetensors or torch.save'd state dict, on the CPU."""
    if path.suffix == ".safetensors":
        return _guard(lambda: load_file(path, device="cpu"), f"could not read {path}: ")
    state = _guard(
        lambda: torch.load(path, map_location="cpu", weights_only=True), f"could not read {path}: "
    )
    if not isinstance(state, Mapping) or not all(isinstance(v, Tensor) for v in state.values()):
        raise ModelLoadError(f"{path} does not hold a state dict of tensors: check the file")
    return dict(state)


# --- our layout


def _load_ours(
    location: str, config: Mapping[str, Any]
) -> tuple[TransformerConfig, dict[str, Tensor]]:
    version = config.get("format_version", _FORMAT_VERSION)
    if version != _FORMAT_VERSION:
        raise ModelLoadError(
            f"{location} was saved in format version {version}, this code reads "
            f"{_FORMAT_VERSION}: update neuron_explainer"
        )
    fields = {k: v for k, v in config.items() if k not in ("format", "format_version")}
    cfg = _config(fields, location)
    path = _fetch(file_utils.join(location, "model.safetensors"), f"the weights of {location}")
    return cfg, _load_tensor_file(path)


def save_model(
    model: Transformer, folder: str | os.PathLike[str], *, overwrite: bool = False
) -> Path:
    """Write `model` to `folder` in our layout (config.json + model.safetensors, plus the tokenizer
    files when cfg.enc names some), atomically: the folder appears complete or not at all.
    `load_model(folder)` gives back bitwise identical weights, in the dtype they were saved in."""
    folder = Path(folder).expanduser()
    if folder.exists() and not overwrite and (not folder.is_dir() or any(folder.iterdir())):
        raise FileExistsError(f"{folder} already exists: pass overwrite=True or another folder")
    state = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    config = {"format": FORMAT_NAME, "format_version": _FORMAT_VERSION, **model.cfg.to_dict()}
    tokenizer = None
    if model.cfg.enc not in _GPT2_ENCODINGS and model_source(model) is not None:
        tokenizer = Path(model_tokenizer(model.cfg, model_source(model)))
    folder.parent.mkdir(parents=True, exist_ok=True)
    with _temp_dir_next_to(folder) as tmp:
        save_file(state, tmp / "model.safetensors", metadata={"format": "pt"})
        (tmp / "config.json").write_text(json.dumps(config, indent=2) + "\n")
        if tokenizer is not None:
            _copy_tokenizer(tokenizer, tmp / model.cfg.enc)
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
    # get_tokenizer reads NAME.tiktoken and the optional NAME.json next to it.
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
    keys = list(_state_dict_shapes(TransformerConfig(n_layers=n_layers, n_heads=1, d_model=1)))
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
    return _config(fields, location), state


# --- Hugging Face layout


def _load_hf(
    location: str, config: Mapping[str, Any]
) -> tuple[TransformerConfig, dict[str, Tensor]]:
    if file_utils.is_url(location):
        raise ModelLoadError(
            f"{location} is a Hugging Face folder, which can only be loaded from disk: download "
            "it and pass the local folder with --model-path"
        )
    folder = Path(location)
    state: dict[str, Tensor] = {}
    for name in ("model.safetensors", "pytorch_model.bin"):
        index = folder / f"{name}.index.json"
        if (folder / name).is_file():
            state = _load_tensor_file(folder / name)
            break
        if index.is_file():
            weight_map = _read_weight_map(index)
            for shard in sorted(set(weight_map.values())):
                if not (folder / shard).is_file():
                    raise ModelLoadError(
                        f"shard {shard} listed in {index} is missing: re-download the model"
                    )
                state.update(_load_tensor_file(folder / shard))
            break
    else:
        raise ModelLoadError(
            f"{folder} has a Hugging Face config.json but no model.safetensors or "
            "pytorch_model.bin: re-download the model, or pass another folder"
        )
    return hf_gpt2_to_state_dict(config, state, where=str(folder))


def _read_weight_map(index: Path) -> dict[str, str]:
    try:
        weight_map = json.loads(index.read_text())["weight_map"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ModelLoadError(f"could not read {index} ({e!r}): re-download the model") from e
    if not isinstance(weight_map, dict):
        raise ModelLoadError(f"{index} has no weight_map object: re-download the model")
    return weight_map


def hf_gpt2_to_state_dict(
    hf_config: Mapping[str, Any], hf_state: Mapping[str, Tensor], *, where: str = "the checkpoint"
) -> tuple[TransformerConfig, dict[str, Tensor]]:
    """Convert a Hugging Face GPT-2 config.json and state dict (with or without the
    `transformer.` prefix) to our config and state dict. HF's Conv1D weights are stored
    (in, out), so every one is transposed; c_attn is split into q, k and v."""
    act = hf_config.get("activation_function", "gelu_new")
    if act not in _HF_ACTIVATIONS:
        raise ModelLoadError(
            f"{where} uses activation function {act!r}: only {' and '.join(_HF_ACTIVATIONS)} "
            "(GPT-2's tanh-approximated GELU) are supported"
        )
    if not hf_config.get("scale_attn_weights", True) or hf_config.get(
        "scale_attn_by_inverse_layer_idx"
    ):
        raise ModelLoadError(
            f"{where} uses non-standard attention scaling (scale_attn_weights / "
            "scale_attn_by_inverse_layer_idx): only GPT-2's 1/sqrt(d_head) is supported"
        )
    try:
        d_model = int(hf_config["n_embd"])
        n_inner = hf_config.get("n_inner") or 4 * d_model
        fields = {
            "enc": "gpt2",
            "ctx_window": int(hf_config.get("n_positions") or hf_config["n_ctx"]),
            "d_model": d_model,
            "n_layers": int(hf_config["n_layer"]),
            "n_heads": int(hf_config["n_head"]),
            "m_attn": 1,
            "m_mlp": n_inner / d_model,
            "n_vocab": int(hf_config["vocab_size"]),
            "layer_norm_eps": float(hf_config.get("layer_norm_epsilon", 1e-5)),
        }
    except (KeyError, TypeError, ValueError) as e:
        raise ModelLoadError(
            f"invalid Hugging Face GPT-2 config in {where}: missing or bad {e}"
        ) from e
    cfg = _config(fields, where)
    if cfg.d_ff != n_inner:
        raise ModelLoadError(f"{where}: n_inner={n_inner} is not representable as d_model * m_mlp")

    src = {k.removeprefix("transformer."): v for k, v in hf_state.items()}
    used: set[str] = set()

    def take(key: str) -> Tensor:
        if key not in src:
            raise ModelLoadError(
                f"{where} has no weight {key!r}: the checkpoint is incomplete or not GPT-2"
            )
        used.add(key)
        return src[key]

    def conv1d(key: str) -> Tensor:
        w = take(key)
        if w.ndim != 2:
            raise ModelLoadError(f"{where}: {key} has shape {tuple(w.shape)}, expected a matrix")
        return w.t().contiguous()

    out: dict[str, Tensor] = {
        "tok_embed.weight": take("wte.weight"),
        "pos_embed.weight": take("wpe.weight"),
        "final_ln.weight": take("ln_f.weight"),
        "final_ln.bias": take("ln_f.bias"),
    }
    if "lm_head.weight" in src:
        out["unembed.weight"] = take("lm_head.weight")
    elif hf_config.get("tie_word_embeddings", True):
        out["unembed.weight"] = out["tok_embed.weight"].clone()
    else:
        raise ModelLoadError(
            f"{where} has untied embeddings but no lm_head.weight: the checkpoint is incomplete"
        )
    d = cfg.d_attn
    for i in range(cfg.n_layers):
        h, x = f"h.{i}.", f"xf_layers.{i}."
        for ln in ("ln_1", "ln_2"):
            out[f"{x}{ln}.weight"] = take(f"{h}{ln}.weight")
            out[f"{x}{ln}.bias"] = take(f"{h}{ln}.bias")
        qkv_w, qkv_b = conv1d(f"{h}attn.c_attn.weight"), take(f"{h}attn.c_attn.bias")
        if qkv_w.shape[0] != 3 * d or qkv_b.shape != (3 * d,):
            raise ModelLoadError(
                f"{where}: {h}attn.c_attn has shape {tuple(qkv_w.t().shape)}, expected "
                f"{(cfg.d_model, 3 * d)}: config.json does not match the weights"
            )
        for j, name in enumerate(("q_proj", "k_proj", "v_proj")):
            out[f"{x}attn.{name}.weight"] = qkv_w[j * d : (j + 1) * d].contiguous()
            out[f"{x}attn.{name}.bias"] = qkv_b[j * d : (j + 1) * d].contiguous()
        for ours, theirs in (
            ("attn.out_proj", "attn.c_proj"),
            ("mlp.in_layer", "mlp.c_fc"),
            ("mlp.out_layer", "mlp.c_proj"),
        ):
            out[f"{x}{ours}.weight"] = conv1d(f"{h}{theirs}.weight")
            out[f"{x}{ours}.bias"] = take(f"{h}{theirs}.bias")
    # Old checkpoints also store the causal mask buffers attn.bias / attn.masked_bias.
    leftover = sorted(
        k for k in set(src) - used if not re.fullmatch(r"h\.\d+\.attn\.(bias|masked_bias)", k)
    )
    if leftover:
        shown = ", ".join(leftover[:5]) + (", ..." if len(leftover) > 5 else "")
        raise ModelLoadError(
            f"{where} has weights a plain GPT-2 does not ({shown}): only GPT2LMHeadModel / "
            "GPT2Model checkpoints are supported"
        )
    return cfg, out


def hf_hub_cache_dir() -> Path:
    """Where huggingface_hub keeps downloaded repos (we only ever read it)."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]).expanduser() / "hub"
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "huggingface" / "hub"


def _hf_cache_snapshot(repo_id: str) -> Path | None:
    """The snapshot folder of a repo in the local HF hub cache, or None."""
    if not re.fullmatch(r"[A-Za-z0-9][\w.-]*(/[\w.-]+)?", repo_id) or ".." in repo_id:
        return None
    # GPT-2's repos moved from "gpt2" to "openai-community/gpt2"; either name finds either.
    owner, _, name = repo_id.rpartition("/")
    candidates = [repo_id]
    if not owner:
        candidates.append(f"openai-community/{name}")
    elif owner == "openai-community":
        candidates.append(name)
    hub = hf_hub_cache_dir()
    for candidate in candidates:
        repo = hub / ("models--" + candidate.replace("/", "--"))
        snapshots = repo / "snapshots"
        if not snapshots.is_dir():
            continue
        ref = repo / "refs" / "main"
        if ref.is_file():
            pinned = snapshots / ref.read_text().strip()
            if (pinned / "config.json").is_file():
                return pinned
        complete = [s for s in snapshots.iterdir() if (s / "config.json").is_file()]
        if complete:
            return max(complete, key=lambda s: s.stat().st_mtime)
    return None


# --- building the model


def _state_dict_shapes(cfg: TransformerConfig) -> dict[str, tuple[int, ...]]:
    with torch.device("meta"):
        model = Transformer(cfg)
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def _build(
    cfg: TransformerConfig, state: dict[str, Tensor], location: str, dtype: torch.dtype | None
) -> Transformer:
    """A Transformer holding exactly `state`'s tensors (cast to dtype), after checking that every
    tensor is there with the shape `cfg` implies. Built on the meta device first, so no time or
    memory goes into random initial weights."""
    expected = _state_dict_shapes(cfg)
    missing = [k for k in expected if k not in state]
    if missing:
        raise ModelLoadError(
            f"{location} has no weight {missing[0]!r} ({len(missing)} missing): the checkpoint is incomplete"
        )
    unexpected = sorted(set(state) - set(expected))
    if unexpected:
        raise ModelLoadError(
            f"{location} has unexpected weight {unexpected[0]!r}: config.json does not match the "
            "weights"
        )
    for key, shape in expected.items():
        if tuple(state[key].shape) != shape:
            raise ModelLoadError(
                f"model piece {key} in {location} has shape {tuple(state[key].shape)} but the "
                f"config implies {shape}: config.json does not match the weights"
            )
    if dtype is not None:
        state = {k: v.to(dtype) if v.is_floating_point() else v for k, v in state.items()}
    # Give every parameter its own storage: checkpoints tie lm_head to wte, and views (q/k/v
    # split out of c_attn) would keep their whole base alive and could not be saved again.
    seen: set[int] = set()
    for key, v in state.items():
        storage = v.untyped_storage()
        if storage.data_ptr() in seen or storage.nbytes() != v.numel() * v.element_size():
            state[key] = v.clone()
        seen.add(storage.data_ptr())
    with torch.device("meta"):
        model = Transformer(cfg)
    model.load_state_dict(state, assign=True)
    return model
