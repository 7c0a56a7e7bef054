"""Cross-layer transcoders (circuit-tracer's `CrossLayerTranscoder`): each layer's latents read
that layer's MLP input and write to the MLP outputs of that layer and of every later one.

    config.yaml          model_kind: cross_layer_transcoder, feature_input_hook,
                         feature_output_hook (TransformerLens names without `blocks.{i}.`), scan
    W_enc_{i}.safetensors  W_enc_{i} (n_latents, d_model), b_enc_{i} (n_latents),
                           b_dec_{i} (d_model), [threshold_{i} (n_latents): JumpReLU]
    W_dec_{i}.safetensors  W_dec_{i} (n_latents, n_layers - i, d_model): row j, slot k is what
                           latent j of layer i writes to layer i + k's MLP output

    latents_i = act(x_i @ W_enc_i.T + b_enc_i)      JumpReLU: pre * (pre > threshold), else ReLU
    out_l     = sum_{i <= l} latents_i @ W_dec_i[:, l - i] + b_dec_l  [+ x_l @ W_skip_l]

(the layout circuit-tracer's `to_safetensors` writes and `load_clt` reads; W_skip is not in
it, but a skip term can be given in memory).
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
from torch import Tensor

from neuron_explainer.models import hub
from neuron_explainer.models.saes.circuit_tracer import CONFIG_FILE, layer_hook
from neuron_explainer.models.saes.files import read_safetensors, read_yaml_object
from neuron_explainer.models.saes.hook_names import HookConventions, hook_point_for

__all__ = ["CROSS_LAYER_KIND", "CrossLayerTranscoder", "load_cross_layer_transcoder"]

CROSS_LAYER_KIND = "cross_layer_transcoder"
_ENC_FILE = re.compile(r"^W_enc_(\d+)\.safetensors$")


class CrossLayerTranscoder(nn.Module):
    """See the module docstring. `reads[i]` / `writes[i]` are our hook points for layer i."""

    W_enc: nn.Parameter
    b_enc: nn.Parameter
    b_dec: nn.Parameter

    def __init__(
        self,
        n_layers: int,
        n_latents: int,
        d_model: int,
        *,
        reads: list[str],
        writes: list[str],
        jumprelu: bool = False,
        skip: bool = False,
        scan: str | None = None,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str | None = None,
    ) -> None:
        super().__init__()
        if len(reads) != n_layers or len(writes) != n_layers:
            raise ValueError(f"a cross-layer transcoder of {n_layers} layers needs {n_layers} read and write hook points")
        kw: dict[str, Any] = {"dtype": dtype, "device": device}
        self.n_layers, self.n_latents, self.d_model = n_layers, n_latents, d_model
        self.reads, self.writes, self.scan = list(reads), list(writes), scan
        self.W_enc = nn.Parameter(torch.zeros(n_layers, n_latents, d_model, **kw))
        self.b_enc = nn.Parameter(torch.zeros(n_layers, n_latents, **kw))
        self.W_dec = nn.ParameterList(nn.Parameter(torch.zeros(n_latents, n_layers - i, d_model, **kw)) for i in range(n_layers))
        self.b_dec = nn.Parameter(torch.zeros(n_layers, d_model, **kw))
        self.threshold: nn.Parameter | None = nn.Parameter(torch.zeros(n_layers, n_latents, **kw)) if jumprelu else None
        self.W_skip: nn.Parameter | None = nn.Parameter(torch.zeros(n_layers, d_model, d_model, **kw)) if skip else None

    @property
    def dtype(self) -> torch.dtype:
        return self.W_enc.dtype

    def pre_activations(self, layer: int, x: Tensor) -> Tensor:
        return x.to(self.dtype) @ self.W_enc[layer].T + self.b_enc[layer]

    def encode(self, layer: int, x: Tensor) -> Tensor:
        pre = self.pre_activations(layer, x)
        if self.threshold is None:
            return torch.relu(pre)
        return pre * (pre > self.threshold[layer]).to(pre.dtype)

    def skip(self, layer: int, x: Tensor) -> Tensor:
        assert self.W_skip is not None
        return x.to(self.dtype) @ self.W_skip[layer]

    def decode(self, layer: int, latents: list[Tensor], x: Tensor | None = None) -> Tensor:
        """Layer `layer`'s output from the latents of layers 0..layer (each (..., n_latents))."""
        out = self.b_dec[layer] + sum(latents[i].to(self.dtype) @ self.W_dec[i][:, layer - i] for i in range(layer + 1))
        if self.W_skip is not None:
            assert x is not None, "a skip term needs the layer's input"
            out = out + self.skip(layer, x)
        return out


def _hooks(cfg: dict[str, Any], n_layers: int, conventions: HookConventions | None, source: str) -> tuple[list[str], list[str]]:
    names = []
    for key in ("feature_input_hook", "feature_output_hook"):
        hook = cfg.get(key)
        if not isinstance(hook, str) or not hook:
            raise ValueError(f"{source}: {CONFIG_FILE} needs a string {key!r}")
        names.append([hook_point_for(layer_hook(hook, i), conventions) for i in range(n_layers)])
    return names[0], names[1]


def load_cross_layer_transcoder(
    source: str | os.PathLike[str],
    *,
    conventions: HookConventions | None = None,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
) -> CrossLayerTranscoder:
    """A cross-layer transcoder from its folder or "hf://owner/repo[/folder][@revision]";
    ValueError (one line) for files that do not fit the layout."""
    text = os.fspath(source)
    if text.startswith("hf://"):
        repo, sub, revision = hub.parse_hf_uri(text)
        prefix = f"{sub}/" if sub else ""
        snapshot = hub.download_snapshot(
            repo, [prefix + CONFIG_FILE, prefix + "W_*.safetensors"], revision=revision, cache_dir=cache_dir,
            what="the cross-layer transcoder",
        )
        folder = snapshot / sub
    else:
        folder = Path(text)
        if folder.name == CONFIG_FILE:
            folder = folder.parent
    cfg = read_yaml_object(folder / CONFIG_FILE)
    if cfg.get("model_kind") != CROSS_LAYER_KIND:
        raise ValueError(f"{text}: model_kind {cfg.get('model_kind')!r} is not {CROSS_LAYER_KIND!r}")
    layers = sorted(int(m.group(1)) for p in folder.iterdir() if (m := _ENC_FILE.match(p.name)))
    if not layers or layers != list(range(len(layers))):
        raise ValueError(f"{text}: encoder files must be W_enc_0 .. W_enc_N-1.safetensors, found layers {layers}")
    n = len(layers)
    encoders = [read_safetensors(folder / f"W_enc_{i}.safetensors") for i in range(n)]
    decoders = [read_safetensors(folder / f"W_dec_{i}.safetensors") for i in range(n)]
    try:
        n_latents, d_model = (int(s) for s in encoders[0]["W_enc_0"].shape)
    except (KeyError, ValueError) as e:
        raise ValueError(f"{text}: W_enc_0.safetensors has no (n_latents, d_model) W_enc_0") from e
    jumprelu = "threshold_0" in encoders[0]
    reads, writes = _hooks(cfg, n, conventions, text)
    clt = CrossLayerTranscoder(
        n, n_latents, d_model, reads=reads, writes=writes, jumprelu=jumprelu,
        scan=cfg.get("scan") if isinstance(cfg.get("scan"), str) else None, dtype=dtype, device=device,
    )
    expected = {
        "W_enc": (n_latents, d_model), "b_enc": (n_latents,), "b_dec": (d_model,), "threshold": (n_latents,),
    }
    with torch.no_grad():
        for i in range(n):
            for key, shape in expected.items():
                if key == "threshold" and not jumprelu:
                    continue
                tensor = encoders[i].get(f"{key}_{i}")
                if tensor is None or tuple(tensor.shape) != shape:
                    raise ValueError(f"{text}: W_enc_{i}.safetensors needs {key}_{i} of shape {shape}")
                target = {"W_enc": clt.W_enc, "b_enc": clt.b_enc, "b_dec": clt.b_dec, "threshold": clt.threshold}[key]
                assert target is not None
                target[i].copy_(tensor)
            dec = decoders[i].get(f"W_dec_{i}")
            if dec is None or tuple(dec.shape) != (n_latents, n - i, d_model):
                raise ValueError(f"{text}: W_dec_{i}.safetensors needs W_dec_{i} of shape {(n_latents, n - i, d_model)}")
            clt.W_dec[i].copy_(dec)
    return clt.requires_grad_(False)
