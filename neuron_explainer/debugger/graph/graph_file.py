"""Neuronpedia's attribution graph JSON, the file its graph viewer and circuit-tracer's
`create_graph_files` read and write, as pydantic models (field names exactly as in the file).

    metadata   slug, scan (the model id Neuronpedia files it under), prompt_tokens, prompt,
               [node_threshold, schema_version, transcoder_list, feature_details, info,
               generation_settings, pruning_settings]
    qParams    the viewer's saved state: pinnedIds, supernodes, linkType, clickedId, sg_pos
    nodes[]    node_id, feature, layer, ctx_idx, feature_type, jsNodeId, clerp, influence,
               activation, token_prob, is_target_logit, run_idx, reverse_ctx_idx
    links[]    source, target (node ids), weight

`graph_schema.json` next to this file is the published JSON schema of that format (what is
required and of which type); every file we write validates against it, and unknown fields of
other generators' files are kept. Our nodes add `latent_index` (features), `token_id` and
`token` (embeddings and logits), which other readers ignore.
"""

from __future__ import annotations

import json
import os
import tempfile
from functools import cache
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

__all__ = [
    "SCHEMA_FILE",
    "AttributionGraphFile",
    "AttributionGraphLink",
    "AttributionGraphMetadata",
    "AttributionGraphNode",
    "AttributionGraphQParams",
    "graph_schema",
    "read_graph_file",
    "write_graph_file",
]

SCHEMA_FILE = Path(__file__).with_name("graph_schema.json")

# feature_type values
FEATURE = "cross layer transcoder"  # what Neuronpedia's viewer calls every transcoder latent
ERROR = "mlp reconstruction error"
EMBEDDING = "embedding"
LOGIT = "logit"


_NODE_EXTRAS = ("latent_index", "token_id", "token")


class _Open(BaseModel):
    model_config = ConfigDict(extra="allow")


class AttributionGraphMetadata(_Open):
    slug: str
    scan: str
    prompt_tokens: list[str]
    prompt: str
    transcoder_list: list[str] = Field(default_factory=list)
    node_threshold: float | None = None
    schema_version: int | None = 1
    feature_details: dict[str, Any] | None = None
    info: dict[str, Any] | None = None
    generation_settings: dict[str, Any] | None = None
    pruning_settings: dict[str, Any] | None = None


class AttributionGraphQParams(_Open):
    pinnedIds: list[str] = Field(default_factory=list)
    supernodes: list[list[str]] = Field(default_factory=list)
    linkType: str = "both"
    clickedId: str = ""
    sg_pos: str = ""


class AttributionGraphNode(_Open):
    node_id: str
    feature: int | None
    layer: str | int
    ctx_idx: int
    feature_type: str
    jsNodeId: str
    clerp: str = ""
    influence: float | None = None
    activation: float | None = None
    token_prob: float = 0.0
    is_target_logit: bool = False
    run_idx: int = 0
    reverse_ctx_idx: int = 0
    latent_index: int | None = None
    token_id: int | None = None
    token: str | None = None


class AttributionGraphLink(_Open):
    source: str
    target: str
    weight: float


class AttributionGraphFile(_Open):
    metadata: AttributionGraphMetadata
    qParams: AttributionGraphQParams
    nodes: list[AttributionGraphNode]
    links: list[AttributionGraphLink]

    def to_json(self) -> dict[str, Any]:
        """The file's JSON object: metadata without its unset (null) optional fields, which the
        schema types as objects and numbers, and nodes without our unset extras."""
        doc = self.model_dump(mode="json")
        doc["metadata"] = {k: v for k, v in doc["metadata"].items() if v is not None}
        for node in doc["nodes"]:
            for key in _NODE_EXTRAS:
                if node.get(key) is None:
                    node.pop(key, None)
        return doc

    def check_links(self) -> None:
        """Raise ValueError unless node ids are unique and every link joins two nodes."""
        ids = [n.node_id for n in self.nodes]
        if len(set(ids)) != len(ids):
            raise ValueError("the graph file has duplicate node ids")
        known = set(ids)
        for i, link in enumerate(self.links):
            if link.source not in known or link.target not in known:
                raise ValueError(f"links[{i}] joins a node the file does not have")


@cache
def graph_schema() -> dict[str, Any]:
    """The published JSON schema of the format (a dict, draft-07)."""
    schema: dict[str, Any] = json.loads(SCHEMA_FILE.read_text())
    return schema


def read_graph_file(path: str | os.PathLike[str]) -> AttributionGraphFile:
    """Read a graph JSON file (ours, circuit-tracer's or Neuronpedia's). Raises ValueError with
    one line naming what is wrong."""
    try:
        text = Path(path).read_bytes()
    except OSError as e:
        raise ValueError(f"cannot read the graph file: {e.strerror}") from e
    try:
        graph = AttributionGraphFile.model_validate_json(text)
    except ValidationError as e:
        first = e.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise ValueError(f"not an attribution graph file: {where}: {first['msg']}") from e
    graph.check_links()
    return graph


def write_graph_file(graph: AttributionGraphFile, path: str | os.PathLike[str]) -> None:
    """Write `graph` to `path` (a temporary file renamed into place: never half written)."""
    target = Path(path)
    fd, temp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(json.dumps(graph.to_json(), ensure_ascii=False, separators=(",", ":")).encode())
        os.chmod(temp, 0o644)  # mkstemp's 0600 is for the half-written file only
        os.replace(temp, target)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise
