"""Draw an attribution graph from the command line, as Neuronpedia's graph JSON.

    python -m neuron_explainer.graph --model MODEL --transcoders SET --prompt TEXT --out graph.json
        [--target " Mary" [--distractor " John"]]   (default: the top logits)
        [--max-feature-nodes 7500] [--batch-size 256] [--node-threshold 0.8] [--edge-threshold 0.98]

MODEL is what the server's --model takes (a registered name such as `demo`, a Hugging Face repo
id, a folder); SET a transcoder set or a cross-layer transcoder (circuit-tracer's layouts, with
their config.yaml): a folder or hf://owner/repo. The file opens in Neuronpedia's graph viewer, circuit-tracer's, and ours.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from tqdm import tqdm

from neuron_explainer.debugger.graph import (
    DEFAULT_BATCH_SIZE,
    DEFAULT_EDGE_THRESHOLD,
    DEFAULT_MAX_FEATURE_NODES,
    DEFAULT_NODE_THRESHOLD,
    LogitDifference,
    Logits,
    Target,
    TopLogits,
    attribute,
    load_transcoders,
    to_graph_file,
    write_graph_file,
)
from neuron_explainer.debugger.graph.prompts import graph_prompt, single_token
from neuron_explainer.models.tokenizer import Tokenizer


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m neuron_explainer.graph", description=__doc__.split("\n\n")[0])
    p.add_argument("--model", required=True, help="registered name (demo, gpt2-small), Hugging Face repo id, or folder")
    p.add_argument("--transcoders", required=True, metavar="SET", help="transcoder set: a folder or hf://owner/repo")
    p.add_argument("--prompt", required=True)
    p.add_argument("--out", required=True, type=Path, help="where to write the graph JSON")
    p.add_argument("--target", action="append", metavar="TOKEN", help="a target token, repeatable (default: the top logits)")
    p.add_argument("--distractor", action="append", metavar="TOKEN",
                   help="a distractor token, repeatable: the target is then the logit difference")
    p.add_argument("--max-n-logits", type=int, default=10, help="top logits: at most this many (default: %(default)s)")
    p.add_argument("--desired-logit-prob", type=float, default=0.95,
                   help="top logits: as many as reach this probability (default: %(default)s)")
    p.add_argument("--max-feature-nodes", type=int, default=DEFAULT_MAX_FEATURE_NODES,
                   help="at most this many feature nodes, the most influential (default: %(default)s)")
    p.add_argument("--batch-size", type=int, default=DEFAULT_BATCH_SIZE, help="nodes per backward pass (default: %(default)s)")
    p.add_argument("--node-threshold", type=float, default=DEFAULT_NODE_THRESHOLD)
    p.add_argument("--edge-threshold", type=float, default=DEFAULT_EDGE_THRESHOLD)
    p.add_argument("--no-bos", action="store_true", help="do not put a start token first (position 0 is then a node)")
    p.add_argument("--slug", default="graph", help="the graph's name in the file")
    p.add_argument("--scan", help="model id the file is filed under (default: --model)")
    p.add_argument("--device", help="cpu, cuda, mps (default: the best available)")
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p.parse_args(argv)


def _target(args: argparse.Namespace, tokenizer: Tokenizer) -> Target:
    if not args.target:
        if args.distractor:
            raise ValueError("--distractor needs --target")
        return TopLogits(args.max_n_logits, args.desired_logit_prob)
    targets = tuple(single_token(tokenizer, t) for t in args.target)
    if not args.distractor:
        return Logits(targets)
    return LogitDifference(targets, tuple(single_token(tokenizer, t) for t in args.distractor))


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    import torch

    from neuron_explainer.file_utils import FetchError
    from neuron_explainer.models.loading import ModelLoadError, load_model, tokenizer_of

    dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[args.dtype]
    device = args.device or ("cuda" if torch.cuda.is_available() else "mps" if torch.backends.mps.is_available() else "cpu")
    try:
        model = load_model(args.model, device=device, dtype=dtype).requires_grad_(False)
        tokenizer = tokenizer_of(model)
        transcoders = load_transcoders(args.transcoders, model)
        tokens, starts_with_bos = graph_prompt(tokenizer, args.prompt, not args.no_bos)
        target = _target(args, tokenizer)
        bar = tqdm(desc="attribution (nodes)", unit="node", disable=args.quiet, file=sys.stderr)

        def progress(done: int, total: int) -> None:
            bar.total = total
            bar.update(done - bar.n)

        graph = attribute(
            model, transcoders, tokens, target,
            token_string=lambda t: tokenizer.decode_tokens([t])[0],
            max_feature_nodes=args.max_feature_nodes, batch_size=args.batch_size,
            exclude_first_position=starts_with_bos, progress=progress,
        )
        bar.close()
        pruned = graph.prune(args.node_threshold, args.edge_threshold)
        doc = to_graph_file(
            graph, pruned, tokenizer.decode_tokens(tokens), prompt=args.prompt, slug=args.slug,
            scan=args.scan or args.model, info={"model": args.model, "transcoder_set": args.transcoders},
        )
        write_graph_file(doc, args.out)
    except (ValueError, ModelLoadError, FetchError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    print(
        f"{args.out}: {len(doc.nodes)} nodes, {len(doc.links)} links ({graph.n_features} of {graph.n_active} active "
        f"latents attributed, {graph.n_backward_passes} backward passes, {graph.timings['total']:.1f}s)"
    )


if __name__ == "__main__":
    main()
