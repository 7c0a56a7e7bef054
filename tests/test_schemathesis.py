"""Schemathesis against the real app on the bundled demo model: every operation of the OpenAPI
document, with requests generated from it (its examples, boundary values, random data), valid
(positive) and invalid (negative).

It passes when:
- no request gets a 5xx (`not_a_server_error`);
- every status a route answers is one its OpenAPI entry lists, and every answer, errors too,
  matches the schema given for it (`status_code_conformance`, `response_schema_conformance`,
  `content_type_conformance`);
- no schema-valid request is refused as invalid (`positive_data_acceptance`): it gets 2xx, or
  an answer about this server's model and data that a schema cannot state (400: the prompt's
  text is two tokens where one is needed, layer 9 of a 4-layer model; 404: no such record; 503:
  the published datasets need the network). A 422 would mean that the schema promised
  something the server refuses;
- every schema-invalid request is refused (`negative_data_rejection`).

Random valid data seldom makes sense to a model (a random prompt, token " Mary" spelled as 3
tokens): half of the positive cases are steered into this model's ranges (`_steer`: its layers,
indices, computed scalars, datasets, one-token targets), so that the computation itself runs on
random combinations of everything else (k, ablations, traces, groups, steps...).

The number of examples is bounded (SCHEMATHESIS_EXAMPLES per operation and phase, default 25), so
the run takes a minute or two on two cores.
"""

from __future__ import annotations

import json
import os
import zlib
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
import torch
from hypothesis import HealthCheck, settings
from schemathesis import GenerationMode

from neuron_explainer import demo
from neuron_explainer.activation_server.main import (
    apply_demo_defaults,
    build_debugger,
    create_app,
    parse_args,
)
from neuron_explainer.activations.datasets import DatasetRegistry
from neuron_explainer.debugger import scalars as sc

EXAMPLES = int(os.environ.get("SCHEMATHESIS_EXAMPLES", "25"))

CONFIG = f"""
seed = 12
[generation]
mode = "all"
max-examples = {EXAMPLES}
[checks]
# 503 is not a crash: this server was started without an LLM endpoint, and the published
# datasets need the network; the message says what to configure, and the route documents it
not_a_server_error.expected-statuses = ["2xx", "4xx", "503"]
positive_data_acceptance.expected-statuses = ["2xx", "400", "404", "503"]
negative_data_rejection.expected-statuses = ["400", "405", "413", "422"]
"""

STATUSES: Counter[tuple[str, str, int]] = Counter()


@pytest.fixture(scope="module")
def demo_app() -> Iterator[Any]:
    """The server as `python -m neuron_explainer.activation_server` starts it on the demo model,
    except that the published datasets point at a closed local port (offline: 503 at once)."""
    torch.set_num_threads(1)
    args = parse_args([])
    apply_demo_defaults(args)
    registry = DatasetRegistry.with_published(base="http://127.0.0.1:9/")
    for folder in demo.DATASET_DIRS:
        registry.register_local_dataset(demo.NAME, folder)
    yield create_app(build_debugger(args), registry)
    # what the run did (pytest -s shows it): positive cases must reach the model, some answer 200
    for key, n in sorted(STATUSES.items()):
        print(*key, n)
    ok = sum(n for (label, mode, status), n in STATUSES.items() if mode == "positive" and status == 200)
    assert ok >= 10, "almost no generated request was answered: the steering is broken"


# The document is the same with or without a model: the no-model app loads no weights.
schema = schemathesis.openapi.from_dict(
    create_app(None).openapi(), config=schemathesis.Config.from_str(CONFIG)
)

# --- steering positive cases into the demo model's ranges -------------------------------------

PROMPT = "<|endoftext|>When Mary and John went to the store, John gave a drink to"
SMALL = 6  # below every size of the demo model: tokens of PROMPT, heads, neurons, latents
N_LAYERS = 4
DATASET_DSTS = [
    "mlp_post_act", "attn_write_norm", "mlp_autoencoder_latent", "attention_autoencoder_latent",
    "flattened_attn_write_to_latent_summed_over_heads",
]
COMPUTED_DSTS = sorted(sc.SCALARS)
READ_PATHS = {"/neuron_record", "/attention_head_record", "/existing_explanations", "/explain", "/score"}


def _pick(options: list[str], seed: Any) -> str:
    return options[zlib.crc32(repr(seed).encode()) % len(options)]


def _steer(value: Any, key: str | None, reads: bool) -> Any:
    """`value` (found under `key`) moved into the demo model's ranges, staying schema-valid."""
    if isinstance(value, dict):
        return {
            k: _steer(v, k, reads or k == "normalizeActivationsUsingNeuronRecord")
            for k, v in value.items()
        }
    if isinstance(value, list):
        if key in ("targetTokens", "distractorTokens"):
            return [" Mary" if key == "targetTokens" else " John" for _ in value]
        if key in ("datasets",):
            return ["demo" for _ in value]
        if key == "explanationDatasets":
            return []
        if key == "tensorIndices":
            return [v % SMALL if isinstance(v, int) else v for v in value]
        return [_steer(v, key, reads) for v in value]
    if key == "prompt" and isinstance(value, str):
        return PROMPT
    if key == "layerIndex" and isinstance(value, int):
        return value % N_LAYERS
    if key in ("activationIndex", "tokenIndex") and isinstance(value, int):
        return value % SMALL
    if key == "neuronDataset" and value is not None:
        return "demo"
    if key == "dst" and isinstance(value, str):
        return _pick(DATASET_DSTS if reads else COMPUTED_DSTS, value)
    if key is not None and key.startswith("dstListByGroupId") and isinstance(value, str):
        return _pick(COMPUTED_DSTS, value)
    return value


@schema.hook
def map_case(context: Any, case: Any) -> Any:
    if case.meta is None or case.meta.generation.mode != GenerationMode.POSITIVE:
        return case
    if not isinstance(case.body, dict) or zlib.crc32(json.dumps(case.body, sort_keys=True).encode()) % 2:
        return case
    case.body = _steer(case.body, None, case.operation.path in READ_PATHS)
    # the DST lists of top-k groups: their values are DSTs under the group keys
    for spec in _top_k_specs(case.body):
        groups = spec["dstListByGroupId"]
        for group, dsts in groups.items():
            groups[group] = [_pick(COMPUTED_DSTS, (group, i, d)) for i, d in enumerate(dsts)]
    return case


def _top_k_specs(body: Any) -> Iterator[dict[str, Any]]:
    if isinstance(body, dict):
        if isinstance(body.get("dstListByGroupId"), dict):
            yield body
        for v in body.values():
            yield from _top_k_specs(v)
    elif isinstance(body, list):
        for v in body:
            yield from _top_k_specs(v)


@schema.parametrize()
@settings(deadline=None, suppress_health_check=list(HealthCheck))
def test_api(case: Any, demo_app: Any) -> None:
    response = case.call_and_validate(app=demo_app)
    mode = case.meta.generation.mode.value if case.meta else "?"
    STATUSES[(case.operation.label, mode, response.status_code)] += 1
