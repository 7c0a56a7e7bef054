"""circuit-tracer's transcoder sets: `config.yaml` + one `layer_{i}.safetensors` per layer.

    config.yaml   model_kind: transcoder_set
                  model_name: meta-llama/Llama-3.2-1B
                  feature_input_hook: mlp.hook_in      # per layer: blocks.{i}.mlp.hook_in
                  feature_output_hook: mlp.hook_out
                  scan: llama-3-131k-relu              # optional
                  transcoders: [hf://owner/repo/layer_0.safetensors, ...]   # optional; default:
                                                       # the folder's layer_*.safetensors
    layer_i.safetensors  W_enc (n_latents, d_in)  W_dec (n_latents, d_out)  b_enc  b_dec
                         activation_function.threshold (n_latents)   JumpReLU; else ReLU
                         W_skip (d_out, d_in)                        skip transcoders

    latents = act(x @ W_enc.T + b_enc), JumpReLU being pre * (pre > threshold)
    out     = latents @ W_dec + b_dec [+ x @ W_skip.T]

(circuit-tracer's `SingleLayerTranscoder`). Listed files may also be Gemma Scope `params.npz`
transcoders, or Gemma Scope 2 safetensors (`w_enc` (d_in, n_latents), `w_dec`, `b_enc`, `b_dec`,
`threshold`, `affine_skip_connection` (d_in, d_out)), which circuit-tracer reads the same way.
Cross-layer transcoders (model_kind: cross_layer_transcoder) are refused.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from neuron_explainer.models.saes.files import read_npz, read_safetensors, read_yaml_object
from neuron_explainer.models.saes.hook_names import HookConventions
from neuron_explainer.models.saes.sparse_coder import SparseCoder, SparseCoderInfo

__all__ = [
    "CONFIG_FILE",
    "TranscoderSet",
    "layer_hook",
    "load_circuit_tracer_layer",
    "load_circuit_tracer_set",
    "transcoder_kind",
]

CONFIG_FILE = "config.yaml"
_LAYER_FILE = re.compile(r"^layer_(\d+)\.safetensors$")
_THRESHOLD = "activation_function.threshold"


@dataclass
class TranscoderSet:
    """One transcoder per layer (index = layer), all reading `feature_input_hook` and writing
    `feature_output_hook` of their layer (names as circuit-tracer gives them, without the
    `blocks.{i}.` prefix)."""

    transcoders: list[SparseCoder]
    feature_input_hook: str
    feature_output_hook: str
    model_name: str | None = None
    scan: str | None = None

    def __len__(self) -> int:
        return len(self.transcoders)

    def __getitem__(self, layer: int) -> SparseCoder:
        return self.transcoders[layer]

    def __iter__(self) -> Iterator[SparseCoder]:
        return iter(self.transcoders)


def transcoder_kind(source: str | os.PathLike[str], cache_dir: str | os.PathLike[str] | None = None) -> str:
    """config.yaml's model_kind of a transcoder folder or hf://owner/repo[/folder]:
    "transcoder_set" (per layer) or "cross_layer_transcoder"."""
    from neuron_explainer.models import hub

    text = os.fspath(source)
    if text.startswith("hf://"):
        repo, sub, revision = hub.parse_hf_uri(text)
        config = hub.download_file(repo, f"{sub}/{CONFIG_FILE}" if sub else CONFIG_FILE, revision=revision, cache_dir=cache_dir)
        assert config is not None
    else:
        config = Path(text) / CONFIG_FILE if Path(text).is_dir() else Path(text)
    return str(read_yaml_object(config).get("model_kind", "transcoder_set")) if Path(config).is_file() else "transcoder_set"


def layer_hook(hook: str, layer: int) -> str:
    """circuit-tracer's per-layer hook name `hook` as a TransformerLens name of block `layer`."""
    return hook if hook.startswith("blocks.") else f"blocks.{layer}.{hook}"


def _circuit_tracer_weights(raw: dict[str, Tensor], source: str) -> dict[str, Tensor]:
    """Any of the three layouts (module docstring) -> SAELens names and orientation."""
    if "log_thresholds" in raw:
        raise ValueError(f"{source}: log_thresholds are not supported (nor by circuit-tracer)")
    if "w_enc" in raw:  # Gemma Scope 2
        w = {
            "W_enc": raw.pop("w_enc"),
            "W_dec": raw.pop("w_dec"),
            "b_enc": raw.pop("b_enc"),
            "b_dec": raw.pop("b_dec"),
            "threshold": raw.pop("threshold"),
        }
        if "affine_skip_connection" in raw:
            w["W_skip"] = raw.pop("affine_skip_connection").T.contiguous()
    else:
        required = ("W_enc", "W_dec", "b_enc", "b_dec")
        missing = [key for key in required if key not in raw]
        if missing:
            raise ValueError(f"{source}: not a circuit-tracer transcoder: missing {missing} (has {sorted(raw)})")
        w = {key: raw.pop(key) for key in required}
        w["W_enc"] = w["W_enc"].T.contiguous()
        if _THRESHOLD in raw:
            w["threshold"] = raw.pop(_THRESHOLD)
        if "W_skip" in raw:
            w["W_skip"] = raw.pop("W_skip")
    if raw:
        raise ValueError(f"{source}: unexpected tensors {sorted(raw)}")
    return w


def load_circuit_tracer_layer(
    path: str | os.PathLike[str],
    layer: int,
    *,
    feature_input_hook: str,
    feature_output_hook: str,
    model_name: str | None = None,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
    conventions: HookConventions | None = None,
    source: str | None = None,
) -> SparseCoder:
    """One layer's transcoder file (safetensors in any of the layouts above, or a Gemma Scope
    params.npz). Parameters are frozen."""
    file = Path(path)
    source = source or str(file)
    if file.suffix == ".npz":
        w = read_npz(file)
        w = {("W_" + k[2:] if k.startswith("w_") else k): v for k, v in w.items()}
        if sorted(w) != ["W_dec", "W_enc", "b_dec", "b_enc", "threshold"]:
            raise ValueError(f"{source}: not a Gemma Scope params.npz (has {sorted(w)})")
    else:
        w = _circuit_tracer_weights(read_safetensors(file), source)
    if w["W_enc"].ndim != 2 or w["W_dec"].ndim != 2:
        raise ValueError(f"{source}: W_enc and W_dec must be matrices")
    d_in, n_latents = (int(n) for n in w["W_enc"].shape)
    coder = SparseCoder(
        d_in,
        n_latents,
        activation="jumprelu" if "threshold" in w else "relu",
        d_out=int(w["W_dec"].shape[1]),
        transcoder=True,
        skip="W_skip" in w,
        info=SparseCoderInfo(
            format="circuit_tracer",
            source=source,
            architecture="jumprelu_transcoder" if "threshold" in w else "transcoder",
            model_name=model_name,
            hook_in=layer_hook(feature_input_hook, layer),
            hook_out=layer_hook(feature_output_hook, layer),
            extra={"layer": layer},
        ),
        conventions=conventions,
        dtype=dtype,
        device="meta",
    )
    coder.jumprelu_relu = False  # circuit-tracer's JumpReLU keeps negative pre-activations above a negative threshold
    coder.load_weights(w, source=source, device=device)
    return coder.requires_grad_(False)


def _layer_files(folder: Path, source: str) -> list[Path]:
    found = {int(m.group(1)): p for p in folder.iterdir() if (m := _LAYER_FILE.match(p.name))}
    if not found:
        raise ValueError(f"{source}: no layer_*.safetensors next to {CONFIG_FILE} and no 'transcoders' list")
    if sorted(found) != list(range(len(found))):
        raise ValueError(f"{source}: layer files must be layer_0 .. layer_{len(found) - 1}, found layers {sorted(found)}")
    return [found[i] for i in range(len(found))]


def _string(cfg: dict[str, Any], key: str, source: str) -> str:
    value = cfg.get(key)
    if not isinstance(value, str) or not value:
        raise ValueError(f"{source}: {CONFIG_FILE} needs a string {key!r}, got {value!r}")
    return value


def load_circuit_tracer_set(
    path: str | os.PathLike[str],
    *,
    resolve_uri: Callable[[str], Path] | None = None,
    layer_files: list[Path] | None = None,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
    conventions: HookConventions | None = None,
    source: str | None = None,
) -> TranscoderSet:
    """Load a transcoder set from its folder (or its config.yaml). `resolve_uri` downloads the
    `hf://` entries of a `transcoders` list (see loading.py); `layer_files`, when given,
    replaces the folder listing (downloaded sets)."""
    config_path = Path(path)
    if config_path.is_dir():
        config_path = config_path / CONFIG_FILE
    folder = config_path.parent
    source = source or str(folder)
    cfg = read_yaml_object(config_path)
    kind = cfg.get("model_kind", "transcoder_set")
    if kind != "transcoder_set":
        raise ValueError(f"{source}: model_kind {kind!r} is not supported (transcoder_set)")
    feature_in = _string(cfg, "feature_input_hook", source)
    feature_out = _string(cfg, "feature_output_hook", source)
    listed = cfg.get("transcoders")
    if listed is not None:
        if not isinstance(listed, list) or not all(isinstance(p, str) for p in listed) or not listed:
            raise ValueError(f"{source}: 'transcoders' must be a non-empty list of paths")
        files = []
        for entry in listed:
            if entry.startswith("hf://"):
                if resolve_uri is None:
                    raise ValueError(f"{source}: {entry} is on the Hugging Face hub; load it with load_transcoder_set")
                files.append(resolve_uri(entry))
            else:
                files.append(Path(entry) if Path(entry).is_absolute() else folder / entry)
    else:
        files = layer_files if layer_files is not None else _layer_files(folder, source)
    model_name = cfg.get("model_name") if isinstance(cfg.get("model_name"), str) else None
    transcoders = [
        load_circuit_tracer_layer(
            file,
            layer,
            feature_input_hook=feature_in,
            feature_output_hook=feature_out,
            model_name=model_name,
            dtype=dtype,
            device=device,
            conventions=conventions,
            source=f"{source} layer {layer}",
        )
        for layer, file in enumerate(files)
    ]
    widths = {t.n_latents for t in transcoders}
    if len(widths) != 1:
        raise ValueError(f"{source}: layers have different numbers of latents {sorted(widths)}")
    scan = cfg.get("scan")
    return TranscoderSet(transcoders, feature_in, feature_out, model_name, scan if isinstance(scan, str) else None)
