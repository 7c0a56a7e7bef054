"""One pass, layer by layer, over every scalar a prompt's top-k steps read (the TDB request's
node table and its per-token and per-layer sums): each (scalar, layer) tensor is computed once
and feeds every ranking and every sum that reads it, then may be dropped.

What a step needs from a tensor is small: its candidates for the top and bottom k
(`StreamingTopK`), its sums over the axes the step does not keep, and its values at the nodes
the table will list. The nodes are known only after every layer has been ranked (and, in a
batch, after every prompt has), but each lies among some ranking's candidates at its layer;
so the values at all candidate positions of a layer's tensors are kept, which is what lets the
tensor go. The recording's `ScalarCache` keeps small tensors whole (a short prompt's, every
one); values at positions that are not kept (another prompt's nodes) are computed again.

A scalar that computes one token's values and its sums over nodes alone (the logits the pass
deferred: the TDB request ranks them at one token, over 50k vocabulary nodes per position) is
read that way wherever every ranking of it is at one token (`_scan_rows`)."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

import torch
from torch import Tensor

from neuron_explainer.activation_server import schemas as S
from neuron_explainer.activation_server.errors import RequestError
from neuron_explainer.activation_server.ranking import StreamingTopK, unravel
from neuron_explainer.debugger import scalars as sc
from neuron_explainer.debugger.inference import Recording

_TOKEN_AXES = ("sequence_tokens", "attended_to_sequence_tokens")

RankingKey = tuple[tuple[str, ...], int | None]  # (the group's scalars, the token it is restricted to)
SumKey = tuple[str, tuple[int, ...]]  # (scalar, the axes kept)


def kept_axes(weights: sc.Weights, dst: str, keep: set[str]) -> tuple[int, ...]:
    """The axes of `dst`'s tensor a sum keeps: of its token axes (the query's, then for token
    pairs the key's), those named in `keep`."""
    n_token_axes = sc.resolve(dst, weights)[1].token_axes
    return tuple(a for a, name in enumerate(_TOKEN_AXES[:n_token_axes]) if name in keep)


def restrict(x: Tensor, token_index: int | None) -> Tensor:
    return x if token_index is None else x[token_index : token_index + 1 or None]


class NodeScalars:
    def __init__(self, weights: sc.Weights, rec: Recording, specs: Iterable[S.MultipleTopKDerivedScalarsRequestSpec]) -> None:
        self.weights, self.rec = weights, rec
        self._layers = {name: sc.resolve(name, weights)[1].layer_list(weights, rec.context) for name in self._names(specs)}
        # what to rank: for each group's scalars, the largest k any step asks for, both ways
        # unless every step leaves out the bottom
        wanted: dict[RankingKey, tuple[int, set[bool]]] = {}
        sums: set[SumKey] = set()
        for spec in specs:
            keep = {d.value for d in spec.dimensions_to_keep_for_intermediate_sum}
            for group, dsts in spec.dst_list_by_group_id.items():
                key = (tuple(d.value for d in dsts), spec.token_index)
                k = S.MAX_NODE_TABLE_K + 1 if spec.top_and_bottom_k is None else spec.top_and_bottom_k
                directions = {True} if group.exclude_bottom_k else {True, False}
                old_k, old_directions = wanted.get(key, (0, set()))
                wanted[key] = max(k, old_k), directions | old_directions
                sums |= {(d.value, kept_axes(weights, d.value, keep)) for d in dsts}
        self._rankers = {key: {largest: StreamingTopK(k, largest) for largest in directions} for key, (k, directions) in wanted.items()}
        self._segments: dict[RankingKey, list[tuple[str, int | None, tuple[int, ...]]]] = {key: [] for key in wanted}
        self._ranked: dict[tuple[RankingKey, bool], list[tuple[int, int]]] = {}
        self._sums: dict[SumKey, list[Tensor]] = {key: [] for key in sums}
        # values at the candidates of tensors not kept: (sorted flat positions, values, shape)
        self._values: dict[tuple[str, int | None], tuple[Tensor, Tensor, tuple[int, ...]]] = {}
        self._scan()

    @staticmethod
    def _names(specs: Iterable[S.MultipleTopKDerivedScalarsRequestSpec]) -> list[str]:
        return list(dict.fromkeys(d.value for spec in specs for dsts in spec.dst_list_by_group_id.values() for d in dsts))

    def _scan(self) -> None:
        layers: list[int | None] = [None, *range(self.weights.model.cfg.n_layers)]
        for layer in layers:
            held: dict[str, Tensor] = {}  # this layer's tensors the cache does not keep
            held_rows: dict[str, tuple[dict[int, Tensor], tuple[int, ...]]] = {}  # the same, by token
            positions: dict[tuple[str, tuple[int, ...]], list[Tensor]] = {}  # (node type, shape) -> candidates here
            for name, name_layers in self._layers.items():
                if layer not in name_layers:
                    continue
                if self._by_token(name, layer):
                    held_rows[name] = self._scan_rows(name, layer, positions)
                    continue
                x = sc.compute(name, self.rec, self.weights, layer)
                node_type = sc.SCALARS[name].node_type
                for key, rankers in self._rankers.items():
                    if name not in key[0]:
                        continue
                    part = restrict(x, key[1])
                    self._segments[key].append((name, layer, tuple(part.shape)))
                    for ranker in rankers.values():
                        handle = ranker.add(len(self._segments[key]) - 1, part)
                        if (name, layer) not in self.rec.derived:
                            found = ranker.candidates(handle)
                            if found is None:  # the part stayed whole
                                found = torch.arange(part.numel(), device=part.device)
                            if key[1] is not None:  # back to the whole tensor's indices
                                found = found + (key[1] % x.shape[0]) * (x.numel() // x.shape[0])
                            positions.setdefault((node_type, tuple(x.shape)), []).append(found)
                for sum_name, axes in self._sums:
                    if sum_name == name:
                        drop = [a for a in range(x.ndim) if a not in axes]
                        self._sums[(name, axes)].append(x.sum(dim=drop) if drop else x)
                if (name, layer) not in self.rec.derived:
                    held[name] = x
            for name, x in held.items():
                # every scalar's candidates for this kind of node, at this layer
                lists = [f for f in positions.get((sc.SCALARS[name].node_type, tuple(x.shape)), []) if f.numel()]
                if not lists:
                    continue
                where = torch.unique(torch.cat(lists))  # sorted
                where = where[where < x.numel()]
                self._values[(name, layer)] = where, x[torch.unravel_index(where, x.shape)].clone(), tuple(x.shape)
            for name, (rows, shape) in held_rows.items():
                lists = [f for f in positions.get((sc.SCALARS[name].node_type, shape), []) if f.numel()]
                if not lists:
                    continue
                where = torch.unique(torch.cat(lists))
                per_token = math.prod(shape[1:])
                where = where[torch.isin(where // per_token, torch.tensor(sorted(rows), dtype=where.dtype))]  # rows at hand
                values = [rows[int(t)].reshape(-1)[where[where // per_token == t] - t * per_token] for t in sorted(rows)]
                self._values[(name, layer)] = where, torch.cat(values), shape

    def _by_token(self, name: str, layer: int | None) -> bool:
        """Whether every ranking of `name` is at one token and every sum of it keeps at most
        the token axis, and it computes those rows and sums alone (the deferred logits: a
        prompt's top output tokens, at one token of every position's vocabulary)."""
        if (name, layer) in self.rec.derived or not sc.has_cheap_rows(name, self.weights):
            return False
        if any(name in key[0] and key[1] is None for key in self._rankers):
            return False
        return all(axes in ((), (0,)) for sum_name, axes in self._sums if sum_name == name)

    def _scan_rows(
        self, name: str, layer: int | None, positions: dict[tuple[str, tuple[int, ...]], list[Tensor]]
    ) -> tuple[dict[int, Tensor], tuple[int, ...]]:
        """`_scan` of one scalar from its rows at the ranked tokens and its node sums; returns
        the rows by token and the whole tensor's shape."""
        n_tokens = len(self.rec.tokens)
        rows: dict[int, Tensor] = {}
        shape: tuple[int, ...] = ()
        node_type = sc.SCALARS[name].node_type
        for key, rankers in self._rankers.items():
            if name not in key[0]:
                continue
            assert key[1] is not None
            token = key[1] % n_tokens
            part = rows.get(token)
            if part is None:
                part = rows[token] = sc.compute_at_token(name, self.rec, self.weights, layer, token)
            shape = (n_tokens, *part.shape[1:])
            self._segments[key].append((name, layer, tuple(part.shape)))
            for ranker in rankers.values():
                found = ranker.candidates(ranker.add(len(self._segments[key]) - 1, part))
                if found is None:
                    found = torch.arange(part.numel(), device=part.device)
                positions.setdefault((node_type, shape), []).append(found + token * part.numel())
        sums = [axes for sum_name, axes in self._sums if sum_name == name]
        if sums:
            by_token = sc.compute_node_sums(name, self.rec, self.weights, layer)
            for axes in sums:
                self._sums[(name, axes)].append(by_token if axes else by_token.sum())
        return rows, shape

    # ------------------------------------------------------------------ answers

    def nodes(self, spec: S.MultipleTopKDerivedScalarsRequestSpec) -> list[S.MirroredNodeIndex]:
        """The union over groups of each group's top (and, unless the group is non-negative,
        bottom) k nodes across all its scalars and layers."""
        out: list[S.MirroredNodeIndex] = []
        for group, dsts in spec.dst_list_by_group_id.items():
            key = (tuple(d.value for d in dsts), spec.token_index)
            segments = self._segments[key]
            n_total = sum(math.prod(shape) for _, _, shape in segments)
            if n_total == 0:
                continue
            if spec.top_and_bottom_k is None and n_total > S.MAX_NODE_TABLE_K:
                raise RequestError(
                    f"topAndBottomK: without it every one of the {n_total} {group.value} nodes is "
                    f"listed; give topAndBottomK (at most {S.MAX_NODE_TABLE_K})"
                )
            want = n_total if spec.top_and_bottom_k is None else min(spec.top_and_bottom_k, n_total)
            for largest in [True] if group.exclude_bottom_k else [True, False]:
                ranked = self._ranked.get((key, largest))
                if ranked is None:
                    ranked = self._ranked[(key, largest)] = self._rankers[key][largest].best()
                for seg, flat_index in ranked[:want]:
                    name, layer, shape = segments[seg]
                    tensor_indices = list(unravel(flat_index, shape))
                    if spec.token_index is not None:
                        tensor_indices[0] = spec.token_index
                    out.append(
                        S.MirroredNodeIndex(
                            node_type=S.NodeType(sc.SCALARS[name].node_type),
                            tensor_indices=tuple(tensor_indices),
                            layer_index=layer,
                            pass_type=S.PassType.FORWARD,
                        )
                    )
        return out

    def value_at(self, dsts: Sequence[S.DerivedScalarType], node: S.MirroredNodeIndex) -> float:
        """The value at `node` of the first of `dsts` that scores its kind of node."""
        return self.values_at(dsts, [node])[0]

    def _computed_value(self, dsts: Sequence[S.DerivedScalarType], node: S.MirroredNodeIndex) -> float:
        """`value_at` for a node not among the kept candidates: from its token's row where the
        scalar computes one alone, else from the whole tensor."""
        for dst in dsts:
            if sc.SCALARS[dst.value].node_type != node.node_type.value or node.layer_index not in self._layer_list(dst.value):
                continue
            token = node.tensor_indices[0] if node.tensor_indices else None
            if self._by_token(dst.value, node.layer_index) and token is not None:
                row = sc.compute_at_token(dst.value, self.rec, self.weights, node.layer_index, int(token))
                if row.ndim == len(node.tensor_indices):
                    return float(row[(0, *node.tensor_indices[1:])])
                continue
            x = sc.compute(dst.value, self.rec, self.weights, node.layer_index)
            if x.ndim == len(node.tensor_indices):
                return float(x[tuple(node.tensor_indices)])
        raise RequestError(f"no scalar in the group scores {node.node_type.value} nodes")

    def values_at(self, dsts: Sequence[S.DerivedScalarType], nodes: Sequence[S.MirroredNodeIndex]) -> list[float]:
        """`value_at` of each node, looked up together: one gather per (scalar, layer)."""
        out: list[float | None] = [None] * len(nodes)
        by_tensor: dict[tuple[str, int | None], list[tuple[int, S.MirroredNodeIndex]]] = {}
        for i, node in enumerate(nodes):
            dst = next((d.value for d in dsts if sc.SCALARS[d.value].node_type == node.node_type.value
                        and node.layer_index in self._layer_list(d.value)), None)
            if dst is not None:
                by_tensor.setdefault((dst, node.layer_index), []).append((i, node))
        for (dst, layer), items in by_tensor.items():
            kept = self._values.get((dst, layer))
            if kept is not None:  # among the candidates kept while scanning
                where, values, shape = kept
                if not where.numel():
                    continue
                at_node = [(i, f) for i, node in items if (f := _flat_index(node.tensor_indices, shape)) is not None]
                flats = torch.tensor([f for _, f in at_node], dtype=where.dtype, device=where.device)
                at = torch.searchsorted(where, flats).clamp(max=where.numel() - 1)
                for (i, _), found, value in zip(at_node, (where[at] == flats).tolist(), values[at].tolist(), strict=True):
                    if found:
                        out[i] = value
            elif not self._by_token(dst, layer):  # the whole tensor is at hand (the cache keeps it)
                x = sc.compute(dst, self.rec, self.weights, layer)
                at_node = [(i, f) for i, node in items if len(node.tensor_indices) == x.ndim
                           and (f := _flat_index(node.tensor_indices, tuple(x.shape))) is not None]
                if at_node:
                    picked = x.reshape(-1)[torch.tensor([f for _, f in at_node], device=x.device)].tolist()
                    for (i, _), value in zip(at_node, picked, strict=True):
                        out[i] = value
        # the rest (another prompt's nodes, not among this one's candidates) one by one
        return [self._computed_value(dsts, node) if v is None else v for v, node in zip(out, nodes, strict=True)]

    def layer_sums(self, dst: str, axes: tuple[int, ...]) -> list[Tensor]:
        """`dst` at each of its layers, summed over all but `axes`."""
        kept = self._sums.get((dst, axes))
        if kept is not None:
            return kept
        out = []
        for layer in self._layer_list(dst):
            x = sc.compute(dst, self.rec, self.weights, layer)
            drop = [a for a in range(x.ndim) if a not in axes]
            out.append(x.sum(dim=drop) if drop else x)
        return out

    def _layer_list(self, dst: str) -> list[int | None]:
        if dst not in self._layers:
            self._layers[dst] = sc.resolve(dst, self.weights)[1].layer_list(self.weights, self.rec.context)
        return self._layers[dst]


def _flat_index(indices: Sequence[Any], shape: tuple[int, ...]) -> int | None:
    """A node's index into a tensor of `shape` -> its row-major offset (None if it names no
    single entry of it)."""
    if len(indices) != len(shape) or any(i is None for i in indices):
        return None
    flat = 0
    for i, size in zip(indices, shape, strict=True):
        if not -size <= int(i) < size:
            return None
        flat = flat * size + int(i) % size
    return flat
