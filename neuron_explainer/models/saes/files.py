"""Reading the files SAE formats are made of, each failure a one-line ValueError naming the file."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from torch import Tensor

__all__ = ["read_json_object", "read_npz", "read_safetensors", "read_torch_tensors", "read_yaml_object"]


def _one_line(e: BaseException) -> str:
    return " ".join(f"{type(e).__name__}: {e}".split())[:300]


def read_json_object(path: str | os.PathLike[str]) -> dict[str, Any]:
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError) as e:
        raise ValueError(f"{path}: not a readable JSON file ({_one_line(e)})") from e
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a JSON object, got {type(data).__name__}")
    return data


def read_yaml_object(path: str | os.PathLike[str]) -> dict[str, Any]:
    import yaml

    try:
        data = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError) as e:
        raise ValueError(f"{path}: not a readable YAML file ({_one_line(e)})") from e
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a YAML mapping, got {type(data).__name__}")
    return data


def read_safetensors(path: str | os.PathLike[str]) -> dict[str, Tensor]:
    """All tensors of a safetensors file, on the CPU in at least float32 (so that folds are
    exact to float32 whatever the file's dtype; the caller casts once at the end)."""
    try:
        tensors = load_file(os.fspath(path), device="cpu")
    except (OSError, SafetensorError, ValueError) as e:
        raise ValueError(f"{path}: not a readable safetensors file ({_one_line(e)})") from e
    return {key: _float32(value) for key, value in tensors.items()}


def read_npz(path: str | os.PathLike[str]) -> dict[str, Tensor]:
    """All arrays of a numpy .npz file as CPU tensors of at least float32 (pickled objects
    refused)."""
    try:
        with np.load(os.fspath(path), allow_pickle=False) as data:
            arrays = {key: np.asarray(data[key]) for key in data.files}
    except (OSError, ValueError) as e:
        raise ValueError(f"{path}: not a readable .npz file ({_one_line(e)})") from e
    return {key: _float32(torch.from_numpy(value.copy())) for key, value in arrays.items()}


def read_torch_tensors(path: str | os.PathLike[str]) -> dict[str, Tensor]:
    """A torch-saved dict of tensors (`weights_only`: no code is unpickled), CPU, at least
    float32; non-tensor entries are dropped."""
    try:
        data = torch.load(os.fspath(path), map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises many kinds for a bad or unsafe pickle
        raise ValueError(f"{path}: not a readable torch state dict ({_one_line(e)})") from e
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a dict of tensors, got {type(data).__name__}")
    return {str(k): _float32(v) for k, v in data.items() if isinstance(v, Tensor)}


def _float32(t: Tensor) -> Tensor:
    return t.to(torch.promote_types(t.dtype, torch.float32)) if t.is_floating_point() else t
