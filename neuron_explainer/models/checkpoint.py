"""Read the tensors of a Hugging Face style checkpoint folder one at a time.

A folder holds `model.safetensors`, or shards listed by `model.safetensors.index.json`, or the
older `pytorch_model.bin` (optionally sharded the same way). Safetensors files are read with
plain file reads straight into each tensor's buffer rather than memory-mapped: the pages of a
mapped shard count as resident memory once touched, which would double the host memory a load
needs. The format is an 8-byte little-endian header length, a JSON header mapping each name to
its dtype, shape and byte range, then the raw bytes.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import Tensor

_DTYPES = {
    "F64": torch.float64,
    "F32": torch.float32,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
    "I64": torch.int64,
    "I32": torch.int32,
    "I16": torch.int16,
    "I8": torch.int8,
    "U8": torch.uint8,
    "BOOL": torch.bool,
}
_MAX_HEADER = 100 * 2**20  # safetensors' own limit


class CheckpointError(ValueError):
    """The checkpoint's files are missing or unreadable; the message is one line."""


class Tensors(Protocol):
    """Named tensors a model is built from: a checkpoint's files, or a state dict in memory."""

    def names(self) -> set[str]: ...

    def read(self, name: str) -> Tensor: ...


class StateDict:
    """The tensors of a state dict already in memory (e.g. a `transformers` model's)."""

    def __init__(self, state: Mapping[str, Tensor]):
        self.state = state

    def names(self) -> set[str]:
        return set(self.state)

    def read(self, name: str) -> Tensor:
        if name not in self.state:
            raise CheckpointError(f"the state dict has no tensor {name!r}")
        return self.state[name].detach()


class Checkpoint:
    """The tensors of one checkpoint's files, by name, read on demand (on the CPU)."""

    def __init__(self, files: list[Path]):
        self._where: dict[str, tuple[Path, Any]] = {}  # name -> (file, safetensors entry or None)
        self._bin: dict[Path, dict[str, Tensor]] = {}
        for path in files:
            if path.suffix == ".safetensors":
                for name, entry in _header(path)[0].items():
                    self._where[name] = (path, entry)
            else:
                for name in self._bin_state(path):
                    self._where[name] = (path, None)

    @classmethod
    def in_folder(cls, folder: Path) -> Checkpoint:
        return cls(_files(folder))

    def _bin_state(self, path: Path) -> dict[str, Tensor]:
        if path not in self._bin:
            try:
                state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
            except (OSError, RuntimeError, ValueError, EOFError) as e:
                raise CheckpointError(f"could not read {path.name}: the file may be corrupt or incomplete") from e
            if not isinstance(state, dict):
                raise CheckpointError(f"{path.name} does not hold a state dict")
            self._bin[path] = state
        return self._bin[path]

    def names(self) -> set[str]:
        return set(self._where)

    def nbytes(self) -> int:
        return sum(f.stat().st_size for f in {p for p, _ in self._where.values()})

    def read(self, name: str) -> Tensor:
        if name not in self._where:
            raise CheckpointError(f"the checkpoint has no tensor {name!r}: it is incomplete or of another model")
        path, entry = self._where[name]
        if entry is None:
            return self._bin_state(path)[name]
        dtype = _DTYPES.get(entry["dtype"])
        if dtype is None:
            raise CheckpointError(f"tensor {name} has dtype {entry['dtype']}, which is not supported")
        start, end = entry["data_offsets"]
        out = torch.empty(end - start, dtype=torch.uint8)
        with path.open("rb") as f:
            f.seek(_header(path)[1] + start)
            if f.readinto(out.numpy().data) != end - start:
                raise CheckpointError(f"{path.name} is truncated: re-download the model")
        return out.view(dtype).reshape(entry["shape"])


def _files(folder: Path) -> list[Path]:
    for name in ("model.safetensors", "pytorch_model.bin"):
        if (folder / name).is_file():
            return [folder / name]
        index = folder / f"{name}.index.json"
        if index.is_file():
            try:
                weight_map = json.loads(index.read_text())["weight_map"]
                shards = sorted(set(weight_map.values()))
            except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
                raise CheckpointError(f"could not read {index.name} ({type(e).__name__}): re-download the model") from e
            missing = [s for s in shards if not (folder / s).is_file()]
            if missing:
                raise CheckpointError(f"shard {missing[0]} listed in {index.name} is missing: re-download the model")
            return [folder / s for s in shards]
    raise CheckpointError(
        "the folder has a config.json but no model.safetensors or pytorch_model.bin (or their "
        ".index.json): re-download the model, or pass another folder"
    )


_HEADERS: dict[tuple[Path, float, int], tuple[dict[str, Any], int]] = {}


def _header(path: Path) -> tuple[dict[str, Any], int]:
    """(name -> {dtype, shape, data_offsets}, offset of the data) of a safetensors file."""
    stat = path.stat()
    key = (path, stat.st_mtime, stat.st_size)
    if key not in _HEADERS:
        try:
            with path.open("rb") as f:
                (n,) = struct.unpack("<Q", f.read(8))
                if n > _MAX_HEADER:
                    raise ValueError("header too large")
                header = json.loads(f.read(n))
        except (OSError, ValueError, struct.error) as e:
            raise CheckpointError(f"could not read {path.name} ({e}): the file may be corrupt or incomplete") from e
        header.pop("__metadata__", None)
        _HEADERS[key] = (header, 8 + n)
    return _HEADERS[key]
