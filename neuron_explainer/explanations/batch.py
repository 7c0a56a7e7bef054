"""Explain and score many nodes of a dataset with an LLM; resumable.

    python -m neuron_explainer.explanations.batch DATASET --dst attn_write_norm --all \
        [--dataset-folder FOLDER] [--layers 0,2-3 | --nodes 0:1,3:7] \
        [--llm-base-url URL] [--explainer-model NAME] [--concurrency 4]

For every node: explain it from its top-activating records, score the explanation on held-out
records, and store the result in the same files `/explain`, `/score` and
`/existing_explanations` read (see `store`). Nodes whose file in the explanation set already
holds a scored explanation are skipped, so an interrupted run resumes where it stopped when run
again (and the LLM response cache makes half-finished nodes cheap to redo).

DATASET is a registered short name (the published `gpt2-small`, ...) or, with
`--dataset-folder`, the name to give a local folder of records (a builder output with
`dataset.json`, JSON or bulk, or a folder of `<layer>/<index>.json` records, or of bulk
`<layer>.parquet` files with their `sequences.safetensors`, of type `--dst`). The LLM is
configured as for the server: flags, else `OPENAI_BASE_URL` / `OPENAI_API_KEY` /
`NEURON_EXPLAINER_LLM_MODEL`.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from tqdm import tqdm

from neuron_explainer.activations.bulk import BULK_SUFFIX, BulkFileReader, layers_in
from neuron_explainer.activations.datasets import PUBLISHED_BASE, DatasetEntry, DatasetRegistry
from neuron_explainer.explanations import store
from neuron_explainer.explanations.explainer import NodeKind, explain_node, node_kind
from neuron_explainer.explanations.llm import LLMClient, LLMConfig, LLMError
from neuron_explainer.explanations.scoring import score_node
from neuron_explainer.explanations.simulator import (
    SIMULATOR_CHOICES,
    SimulatorChoice,
    SimulatorKind,
    resolve_simulator,
)

log = logging.getLogger(__name__)

Node = tuple[int, int]

__all__ = ["BatchSummary", "list_nodes", "main", "parse_layers", "parse_nodes", "run_batch"]


@dataclass
class BatchSummary:
    explained: list[Node] = field(default_factory=list)
    skipped: list[Node] = field(default_factory=list)  # already done before this run
    inactive: list[Node] = field(default_factory=list)  # never activate: nothing to explain
    failed: list[tuple[Node, str]] = field(default_factory=list)

    def line(self) -> str:
        return (
            f"{len(self.explained)} explained and scored, {len(self.skipped)} already done, "
            f"{len(self.inactive)} never active, {len(self.failed)} failed"
        )


# ------------------------------------------------------------------------------ nodes


def parse_layers(text: str) -> list[int]:
    """'0,2-4' -> [0, 2, 3, 4]."""
    layers: list[int] = []
    for part in filter(None, (p.strip() for p in text.split(","))):
        match = re.fullmatch(r"(\d+)(?:-(\d+))?", part)
        if not match:
            raise ValueError(f"bad layer range {part!r} (expected e.g. 0,2-4)")
        low, high = int(match[1]), int(match[2] or match[1])
        layers.extend(range(low, high + 1))
    return sorted(set(layers))


def parse_nodes(text: str) -> list[Node]:
    """'0:1,3:7' -> [(0, 1), (3, 7)] (layer:index pairs)."""
    nodes = []
    for part in filter(None, (p.strip() for p in text.split(","))):
        match = re.fullmatch(r"(\d+):(\d+)", part)
        if not match:
            raise ValueError(f"bad node {part!r} (expected layer:index, e.g. 3:7)")
        nodes.append((int(match[1]), int(match[2])))
    return nodes


def list_nodes(
    entry: DatasetEntry, layers: Sequence[int] | None = None, nodes_per_layer: int | None = None
) -> list[Node]:
    """Every node of `entry` (restricted to `layers`): from its known node counts, else from
    the record files of a local dataset, else `nodes_per_layer` per layer of `layers`."""
    found: list[Node] = []
    if entry.n_nodes is not None:
        found = [(layer, i) for layer, n in enumerate(entry.n_nodes) for i in range(n)]
    elif entry.is_local and entry.format == "bulk":
        for layer in layers_in(Path(entry.root)):
            reader = BulkFileReader(Path(entry.root) / f"{layer}{BULK_SUFFIX}")
            found += [(layer, i) for i in range(reader.n_nodes)]
            reader.close()
    elif entry.is_local:
        root = Path(entry.root)
        for layer_dir in root.iterdir():
            if layer_dir.is_dir() and layer_dir.name.isdigit():
                for f in layer_dir.iterdir():
                    if f.suffix in (".json", ".pt") and f.stem.isdigit():
                        found.append((int(layer_dir.name), int(f.stem)))
    elif nodes_per_layer is not None and layers is not None:
        found = [(layer, i) for layer in layers for i in range(nodes_per_layer)]
    else:
        raise ValueError(
            f"cannot list the nodes of {entry.short_name} ({entry.root}): pass --nodes, or "
            "--layers with --nodes-per-layer"
        )
    if layers is not None:
        wanted = set(layers)
        found = [n for n in found if n[0] in wanted]
    return sorted(set(found))


# ------------------------------------------------------------------------------- run


async def run_batch(
    registry: DatasetRegistry,
    entry: DatasetEntry,
    nodes: Sequence[Node],
    client: LLMClient,
    *,
    simulator: SimulatorChoice = "auto",
    explanation_set: str | None = None,
    concurrency: int = 4,
    n_per_split: int = 5,
    num_explanations: int = 1,
    max_sequences: int | None = None,
    progress: bool = True,
) -> BatchSummary:
    """Explain and score `nodes` of `entry`, `concurrency` nodes at a time."""
    summary = BatchSummary()
    queue: asyncio.Queue[Node] = asyncio.Queue()
    for node in nodes:
        queue.put_nowait(node)
    bar = tqdm(total=len(nodes), unit="node", disable=not progress, file=sys.stderr)

    simulator_kind: SimulatorKind = "logprob_free"  # heads are scored pair by pair regardless
    if node_kind(entry.dst) == NodeKind.NEURON:
        simulator_kind = await resolve_simulator(simulator, client)
    name = explanation_set or store.set_name(await client.resolve_model(), simulator_kind)

    async def process(layer: int, index: int) -> None:
        path = store.results_path(entry, name, layer, index)
        if store.stored_explanations(store.read_results(path)):
            summary.skipped.append((layer, index))
            return
        record = await asyncio.to_thread(registry.load_record, entry, layer, index)
        try:
            active = record.max_activation > 0
        except ValueError:
            active = False
        if not active:
            summary.inactive.append((layer, index))
            return
        kind = node_kind(entry.dst, record.most_positive_activation_records)
        explanations = await explain_node(
            client, record, kind, n_per_split=n_per_split, num_samples=num_explanations
        )
        for explanation in explanations:
            scored = await score_node(
                client,
                record,
                kind,
                explanation,
                simulator=simulator_kind,
                n_per_split=n_per_split,
                max_sequences=max_sequences,
            )
            await asyncio.to_thread(
                store.add_scored_explanation,
                path,
                kind=kind,
                layer=layer,
                index=index,
                explanation=explanation,
                scored=scored,
            )
        summary.explained.append((layer, index))

    async def worker() -> None:
        while True:
            try:
                layer, index = queue.get_nowait()
            except asyncio.QueueEmpty:
                return
            try:
                await process(layer, index)
            except (LLMError, LookupError, ValueError, OSError, RuntimeError) as exc:
                reason = f"{type(exc).__name__}: {exc}"
                log.warning("node %d:%d failed: %s", layer, index, reason)
                summary.failed.append(((layer, index), reason))
            bar.update(1)
            bar.set_postfix(failed=len(summary.failed), refresh=False)

    try:
        await asyncio.gather(*(worker() for _ in range(max(1, concurrency))))
    finally:
        bar.close()
    return summary


# ------------------------------------------------------------------------------- CLI


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m neuron_explainer.explanations.batch",
        description="Explain and score many nodes with an LLM (resumable).",
    )
    p.add_argument(
        "dataset", help="dataset short name (e.g. gpt2-small), or the name for --dataset-folder"
    )
    p.add_argument(
        "--dst", required=True, help="derived scalar type, e.g. mlp_post_act, attn_write_norm"
    )
    p.add_argument("--dataset-folder", help="a local folder of records to register as DATASET")
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--all", action="store_true", help="every node of the dataset")
    which.add_argument("--layers", help="every node of these layers, e.g. 0,2-4")
    which.add_argument("--nodes", help="these nodes, layer:index, e.g. 0:1,3:7")
    p.add_argument("--nodes-per-layer", type=int, help="node count per layer (published datasets)")
    p.add_argument(
        "--llm-base-url",
        help="OpenAI-compatible API base URL (default: $OPENAI_BASE_URL, else OpenAI)",
    )
    p.add_argument(
        "--explainer-model",
        help="LLM model name (default: $NEURON_EXPLAINER_LLM_MODEL, gpt-4o on OpenAI, else the first the server lists)",
    )
    p.add_argument(
        "--llm-api-key",
        help="API key (default: $OPENAI_API_KEY; prefer the variable, flags show in ps)",
    )
    p.add_argument(
        "--llm-max-concurrent", type=int, default=8, help="LLM requests in flight at once"
    )
    p.add_argument("--no-llm-cache", action="store_true", help="do not cache LLM responses on disk")
    p.add_argument("--concurrency", type=int, default=4, help="nodes processed at once")
    p.add_argument(
        "--simulator",
        choices=SIMULATOR_CHOICES,
        default="auto",
        help="logprob_free (any chat endpoint), logprob (needs prompt logprobs from "
        "/completions, e.g. vLLM) or auto (logprob when the endpoint returns them)",
    )
    p.add_argument(
        "--explanation-set", help="name of the explanation set to write (default: llm_<model>)"
    )
    p.add_argument(
        "--num-explanations", type=int, default=1, help="explanations to write and score per node"
    )
    p.add_argument("--n-per-split", type=int, default=5, help="records per split (train/valid)")
    p.add_argument("--max-sequences", type=int, help="score on at most this many held-out records")
    p.add_argument("--published-base", default=PUBLISHED_BASE, help=argparse.SUPPRESS)
    p.add_argument("--no-progress", action="store_true")
    return p.parse_args(argv)


def _registry_and_entry(args: argparse.Namespace) -> tuple[DatasetRegistry, DatasetEntry]:
    registry = DatasetRegistry.with_published(args.published_base)
    if args.dataset_folder:
        try:  # a builder output, or a folder with the published per-dst subfolders
            registry.register_local_dataset(args.dataset, args.dataset_folder)
        except ValueError:  # else: a folder of <layer>/<index> records of type --dst
            registry.register_local_dataset(args.dataset, args.dataset_folder, dst=args.dst)
    return registry, registry.resolve(args.dataset, args.dst)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")
    try:
        registry, entry = _registry_and_entry(args)
        layers = parse_layers(args.layers) if args.layers else None
        if args.nodes:
            nodes = parse_nodes(args.nodes)
        else:
            nodes = list_nodes(entry, layers, args.nodes_per_layer)
    except (ValueError, LookupError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    config = LLMConfig.resolve(
        base_url=args.llm_base_url,
        model=args.explainer_model,
        api_key=args.llm_api_key,
        cache=not args.no_llm_cache,
        max_concurrent=args.llm_max_concurrent,
    )
    if config is None:
        print(
            "error: no LLM endpoint: pass --llm-base-url URL (and --explainer-model NAME) or set "
            "OPENAI_API_KEY / OPENAI_BASE_URL",
            file=sys.stderr,
        )
        return 2
    client = LLMClient(config)
    print(
        f"{len(nodes)} nodes of {entry.short_name} ({entry.dst}) with {client.describe()}",
        file=sys.stderr,
    )
    try:
        summary = asyncio.run(
            run_batch(
                registry,
                entry,
                nodes,
                client,
                simulator=args.simulator,
                explanation_set=args.explanation_set,
                concurrency=args.concurrency,
                n_per_split=args.n_per_split,
                num_explanations=args.num_explanations,
                max_sequences=args.max_sequences,
                progress=not args.no_progress,
            )
        )
    except KeyboardInterrupt:
        print("interrupted: run the same command again to resume", file=sys.stderr)
        return 130
    print(summary.line(), file=sys.stderr)
    for (layer, index), reason in summary.failed[:20]:
        print(f"  {layer}:{index}: {reason}", file=sys.stderr)
    return 1 if summary.failed else 0


if __name__ == "__main__":
    sys.exit(main())
