"""Neuron records: the top-activating and random dataset examples of one node.

A *node* is an MLP neuron, an attention head (its values are per token pair) or an autoencoder
latent. Its record holds the examples with the highest activations, a random sample, random
samples per activation quantile and the moments of its activation distribution. Records are
stored one file per node, `<root>/<layer>/<index>.json` (or `.pt`), in the layout of OpenAI's
published "collated activations" (see `datasets.md` of the original project):

    {"dataclass_name": "NeuronRecord",
     "neuron_id": {"dataclass_name": "NeuronId", "neuron_index": 131, "layer_index": 5},
     "random_sample": [{"dataclass_name": "ActivationRecord", "activations": [...],
                        "tokens": [...]}, ...],
     "random_sample_by_quantile": [[...], ...] | null,
     "quantile_boundaries": [...] | null,
     "mean": float | null, "variance": ..., "skewness": ..., "kurtosis": ...,
     "most_positive_activation_records": [...]}

NaN moments are written as null (as orjson does). Reading is lenient: `dataclass_name` may be
missing, older files use `idx` / `layer` for the neuron id, unknown fields are ignored.

For attention heads (and latents by token pair) `activations` is the flattened lower triangle of
the example's token-pair matrix, row by row: query token 0 sees key 0, query 1 sees keys 0..1, and
so on (`len(activations) == n * (n + 1) / 2` for `n` tokens; a shorter list means each query sees
at most the last `m` keys, see `attended_to_lengths`).

`.pt` files are `torch.save` of the same dict. Reading also accepts a pickled record object
(its fields are read; only a small allow-list of classes is ever unpickled, never code).
"""

from __future__ import annotations

import io
import math
import pickle
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

import orjson

__all__ = [
    "ActivationRecord",
    "ActivationRecordSliceParams",
    "NeuronId",
    "NeuronRecord",
    "RecordFormat",
    "RecordFormatError",
    "activation_record_from_dict",
    "attended_to_lengths",
    "dumps_record",
    "loads_record",
    "normalized_activations",
    "record_from_dict",
    "record_to_dict",
    "unflatten_token_pair_activations",
]

RecordFormat = Literal["json", "pt"]


class RecordFormatError(ValueError):
    """The bytes are not a neuron record in a layout we know."""


@dataclass
class ActivationRecord:
    """One dataset example: its tokens and the node's activation on each token (or token pair)."""

    activations: list[float]
    tokens: list[str]


@dataclass
class NeuronId:
    """Which node a record is for: its layer and its index within the layer."""

    layer_index: int
    neuron_index: int


@dataclass
class ActivationRecordSliceParams:
    """How many examples each split (train, calibration, valid, test) gets; None = as many as
    divide evenly."""

    n_examples_per_split: int | None = None


_TOP_SPLITS = ("train", "calibration", "valid", "test")
_RANDOM_SPLITS = ("calibration", "valid", "test")


@dataclass
class NeuronRecord:
    """Dataset examples and activation statistics of one node."""

    neuron_id: NeuronId
    random_sample: list[ActivationRecord] = field(default_factory=list)
    """Examples drawn uniformly at random (independently for each node)."""
    random_sample_by_quantile: list[list[ActivationRecord]] | None = None
    """For each activation quantile bin, random examples whose max falls in it (None: not tracked)."""
    quantile_boundaries: list[float] | None = None
    """The boundaries between those bins."""
    mean: float | None = math.nan
    variance: float | None = math.nan
    skewness: float | None = math.nan
    kurtosis: float | None = math.nan
    most_positive_activation_records: list[ActivationRecord] = field(default_factory=list)
    """Examples with the highest activations, highest first."""

    @property
    def max_activation(self) -> float:
        """Largest activation over the top-activating examples."""
        values = [
            max(r.activations) for r in self.most_positive_activation_records if r.activations
        ]
        if not values:
            raise ValueError(f"neuron record {self.neuron_id} has no top-activating examples")
        return max(values)

    # --- splits used by explanation and scoring (interleaved, as in the seed) -------------

    def _split(
        self,
        records: list[ActivationRecord],
        splits: Sequence[str],
        split: str,
        params: ActivationRecordSliceParams | None,
    ) -> list[ActivationRecord]:
        n = params.n_examples_per_split if params is not None else None
        if n is None:
            n = len(records) // len(splits)
        if len(records) < n * len(splits):
            raise ValueError(
                f"{len(records)} examples are too few for {len(splits)} splits of {n} each"
            )
        return records[splits.index(split) : n * len(splits) : len(splits)]

    def train_activation_records(
        self, params: ActivationRecordSliceParams | None = None
    ) -> list[ActivationRecord]:
        """Top-activating examples for writing explanations."""
        return self._split(self.most_positive_activation_records, _TOP_SPLITS, "train", params)

    def _top_and_random(
        self, split: str, params: ActivationRecordSliceParams | None
    ) -> list[ActivationRecord]:
        return self._split(
            self.most_positive_activation_records, _TOP_SPLITS, split, params
        ) + self._split(self.random_sample, _RANDOM_SPLITS, split, params)

    def calibration_activation_records(
        self, params: ActivationRecordSliceParams | None = None
    ) -> list[ActivationRecord]:
        """Top and random examples, 1:1, for calibrating simulations."""
        return self._top_and_random("calibration", params)

    def valid_activation_records(
        self, params: ActivationRecordSliceParams | None = None
    ) -> list[ActivationRecord]:
        """Top and random examples, 1:1, for scoring explanations."""
        return self._top_and_random("valid", params)

    def test_activation_records(
        self, params: ActivationRecordSliceParams | None = None
    ) -> list[ActivationRecord]:
        """Top and random examples, 1:1, held out."""
        return self._top_and_random("test", params)


# --- normalisation -------------------------------------------------------------------------


def normalized_activations(record: NeuronRecord, values: Sequence[float]) -> list[float]:
    """`values` scaled by the record's max activation, negatives clamped to 0 (as the seed's
    /derived_scalars does for `normalizeActivationsUsingNeuronRecord`). A record whose max
    activation is not positive yields zeros rather than infinities."""
    peak = record.max_activation
    if not peak > 0:
        return [0.0 for _ in values]
    return [max(float(v), 0.0) / peak for v in values]


# --- token pairs ----------------------------------------------------------------------------


def attended_to_lengths(n_tokens: int, n_activations: int) -> list[int]:
    """How many keys each query token sees in a flattened token-pair record.

    Full causal attention gives 1, 2, ..., n; a record with fewer values means each query sees
    at most `m` keys: 1, 2, ..., m, m, ..., m. Raises RecordFormatError if no such m fits.
    """
    full = n_tokens * (n_tokens + 1) // 2
    if n_activations == full:
        return list(range(1, n_tokens + 1))
    # Missing values form the triangle of the n - m queries past m: (n - m)(n - m + 1) / 2.
    missing = full - n_activations
    k = (math.isqrt(1 + 8 * missing) - 1) // 2 if missing > 0 else -1
    if missing <= 0 or k * (k + 1) // 2 != missing or k >= n_tokens:
        raise RecordFormatError(f"{n_activations} token-pair values do not fit {n_tokens} tokens")
    m = n_tokens - k
    return [min(i + 1, m) for i in range(n_tokens)]


def unflatten_token_pair_activations(record: ActivationRecord) -> list[list[float]]:
    """Per query token, the values over the keys it attends to (see `attended_to_lengths`)."""
    out = []
    start = 0
    for length in attended_to_lengths(len(record.tokens), len(record.activations)):
        out.append(record.activations[start : start + length])
        start += length
    return out


# --- dict <-> record ------------------------------------------------------------------------


def _activation_record_to_dict(r: ActivationRecord) -> dict[str, Any]:
    return {"dataclass_name": "ActivationRecord", "activations": r.activations, "tokens": r.tokens}


def record_to_dict(record: NeuronRecord) -> dict[str, Any]:
    """The published JSON structure of `record` (NaN moments stay NaN here; `dumps_record`
    writes them as null)."""
    return {
        "dataclass_name": "NeuronRecord",
        "neuron_id": {
            "dataclass_name": "NeuronId",
            "neuron_index": record.neuron_id.neuron_index,
            "layer_index": record.neuron_id.layer_index,
        },
        "random_sample": [_activation_record_to_dict(r) for r in record.random_sample],
        "random_sample_by_quantile": None
        if record.random_sample_by_quantile is None
        else [[_activation_record_to_dict(r) for r in q] for q in record.random_sample_by_quantile],
        "quantile_boundaries": record.quantile_boundaries,
        "mean": record.mean,
        "variance": record.variance,
        "skewness": record.skewness,
        "kurtosis": record.kurtosis,
        "most_positive_activation_records": [
            _activation_record_to_dict(r) for r in record.most_positive_activation_records
        ],
    }


def _floats(values: Any, what: str) -> list[float]:
    if hasattr(values, "tolist"):  # a tensor or numpy array
        values = values.tolist()
    if not isinstance(values, list | tuple):
        raise RecordFormatError(f"{what} is not a list of numbers")
    try:
        return [float("nan") if v is None else float(v) for v in values]
    except (TypeError, ValueError) as e:
        raise RecordFormatError(f"{what} is not a list of numbers ({e})") from None


def activation_record_from_dict(d: Any, what: str = "activation record") -> ActivationRecord:
    """An ActivationRecord from its dict (or an object with the same attributes)."""
    d = _as_dict(d)
    if not isinstance(d, dict) or "activations" not in d or "tokens" not in d:
        raise RecordFormatError(f"{what} lacks activations or tokens")
    tokens = d["tokens"]
    if not isinstance(tokens, list | tuple) or not all(isinstance(t, str) for t in tokens):
        raise RecordFormatError(f"{what}: tokens is not a list of strings")
    return ActivationRecord(
        activations=_floats(d["activations"], f"{what}.activations"), tokens=list(tokens)
    )


def _optional_float(v: Any) -> float | None:
    if v is None:
        return None
    if hasattr(v, "item"):
        v = v.item()
    try:
        return float(v)
    except (TypeError, ValueError):
        raise RecordFormatError(f"{v!r} is not a number") from None


def record_from_dict(d: Any) -> NeuronRecord:
    """A NeuronRecord from the published structure (lenient, see the module docstring)."""
    d = _as_dict(d)
    if not isinstance(d, dict):
        raise RecordFormatError("a neuron record must be a JSON object")
    if "most_positive_activation_records" not in d and "random_sample" not in d:
        raise RecordFormatError("not a neuron record (no most_positive_activation_records)")
    nid = _as_dict(d.get("neuron_id")) or {}
    try:
        neuron_id = NeuronId(
            layer_index=int(nid.get("layer_index", nid.get("layer", -1))),
            neuron_index=int(nid.get("neuron_index", nid.get("idx", -1))),
        )
    except (TypeError, ValueError):
        raise RecordFormatError("neuron_id is not a layer and an index") from None

    def records(key: str) -> list[ActivationRecord]:
        value = d.get(key) or []
        return [activation_record_from_dict(r, f"{key}[{i}]") for i, r in enumerate(value)]

    by_quantile = d.get("random_sample_by_quantile")
    boundaries = d.get("quantile_boundaries")
    return NeuronRecord(
        neuron_id=neuron_id,
        random_sample=records("random_sample"),
        random_sample_by_quantile=None
        if by_quantile is None
        else [
            [activation_record_from_dict(r, f"random_sample_by_quantile[{i}]") for r in q]
            for i, q in enumerate(by_quantile)
        ],
        quantile_boundaries=None
        if boundaries is None
        else _floats(boundaries, "quantile_boundaries"),
        mean=_optional_float(d.get("mean")),
        variance=_optional_float(d.get("variance")),
        skewness=_optional_float(d.get("skewness")),
        kurtosis=_optional_float(d.get("kurtosis")),
        most_positive_activation_records=records("most_positive_activation_records"),
    )


# --- bytes <-> record -----------------------------------------------------------------------


def dumps_record(record: NeuronRecord, fmt: RecordFormat = "json") -> bytes:
    """Serialize in the published layout. Deterministic: equal records give equal bytes.
    Activations may also be float32 numpy rows (the builder's): JSON then holds float32's
    shortest exact decimal form."""
    if fmt == "json":
        return orjson.dumps(record_to_dict(record), option=orjson.OPT_SERIALIZE_NUMPY)
    if fmt == "pt":
        import torch

        buffer = io.BytesIO()
        torch.save(_plain(record_to_dict(record)), buffer)
        return buffer.getvalue()
    raise ValueError(f"unknown record format {fmt!r}")


def _plain(value: Any) -> Any:
    """numpy arrays -> lists, recursively (torch's weights-only loader refuses numpy)."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if hasattr(value, "tolist") and not isinstance(value, str | bytes):
        return value.tolist()
    return value


def loads_record(data: bytes, fmt: RecordFormat | None = None) -> NeuronRecord:
    """Parse a record from JSON or `.pt` bytes (`fmt` None: guessed from the bytes)."""
    if fmt is None:
        fmt = "pt" if data[:2] == b"PK" or data[:1] == b"\x80" else "json"
    if fmt == "json":
        try:
            parsed = orjson.loads(data)
        except orjson.JSONDecodeError as e:
            raise RecordFormatError(f"not valid JSON ({e})") from None
        return record_from_dict(parsed)
    if fmt == "pt":
        return record_from_dict(_load_pt(data))
    raise ValueError(f"unknown record format {fmt!r}")


class _Loose:
    """Stands in for any pickled `neuron_explainer` class: keeps its state, runs no code."""

    def __setstate__(self, state: Any) -> None:
        if isinstance(state, tuple) and len(state) == 2:  # (dict, slots)
            state = {**(state[0] or {}), **(state[1] or {})}
        self.__dict__.update(state if isinstance(state, dict) else {})


def _as_dict(value: Any) -> Any:
    return dict(value.__dict__) if isinstance(value, _Loose) else value


class _RestrictedUnpickler(pickle.Unpickler):
    _ALLOWED: ClassVar[set[tuple[str, str]]] = {
        ("collections", "OrderedDict"),
        ("builtins", "object"),
        ("copyreg", "_reconstructor"),
        ("torch._utils", "_rebuild_tensor_v2"),
        ("torch._utils", "_rebuild_tensor"),
        ("torch", "FloatStorage"),
        ("torch", "DoubleStorage"),
        ("torch", "HalfStorage"),
        ("torch", "BFloat16Storage"),
        ("torch", "float32"),
        ("torch", "float16"),
        ("torch", "bfloat16"),
    }

    def find_class(self, module: str, name: str) -> Any:
        if module.startswith("neuron_explainer.") or module == "__main__":
            return _Loose
        if (module, name) in self._ALLOWED:
            import importlib

            return getattr(importlib.import_module(module), name)
        raise pickle.UnpicklingError(f"refusing to unpickle {module}.{name}")


class _RestrictedPickleModule:
    Unpickler = _RestrictedUnpickler
    UnpicklingError = pickle.UnpicklingError

    @staticmethod
    def load(f: Any, **kwargs: Any) -> Any:
        return _RestrictedUnpickler(f, **kwargs).load()


def _load_pt(data: bytes) -> Any:
    import torch

    try:
        return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception:
        pass
    try:
        return torch.load(
            io.BytesIO(data),
            map_location="cpu",
            weights_only=False,
            pickle_module=_RestrictedPickleModule,
        )
    except Exception as e:
        raise RecordFormatError(
            f"not a readable .pt neuron record ({type(e).__name__}: {e})"
        ) from None
