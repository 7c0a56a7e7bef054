"""What one worker does with one shard: run the model over its sequences and fold the values
into a fresh running state. The same code runs in the builder's own process and in each Ray
worker, which is what makes their outputs byte-identical.

The model is only touched through `collate.Recorder` (model + token batch -> per-family
values): that is the boundary a different model interface replaces.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor

from neuron_explainer.activations.running_state import NodeRange, RunningState

if TYPE_CHECKING:
    from neuron_explainer.collate import CollateConfig, FamilySpec

__all__ = ["FAULT_ENV", "ShardWorker"]

# Test hook: when this variable names a file that exists, the worker that first sees it removes
# it and kills its own process (SIGKILL) in the middle of a shard, as a crashed machine would.
FAULT_ENV = "NEURON_EXPLAINER_COLLATE_KILL_FILE"


def _maybe_die() -> None:
    path = os.environ.get(FAULT_ENV)
    if not path:
        return
    try:
        os.unlink(path)
    except FileNotFoundError:
        return
    os.kill(os.getpid(), signal.SIGKILL)


class ShardWorker:
    """One model replica and the recorders for the node ranges it is asked about."""

    def __init__(
        self,
        model: Any,
        cfg: CollateConfig,
        threads: int | None = None,
        all_specs: Sequence[FamilySpec] | None = None,
    ) -> None:
        if threads:
            torch.set_num_threads(threads)
        self.model = model
        self.cfg = cfg
        self.all_specs = list(all_specs) if all_specs is not None else None
        self._recorders: dict[tuple[str, ...], Any] = {}

    @property
    def device(self) -> torch.device:
        return torch.device(self.model.device)

    def _recorder(self, ranges: Sequence[NodeRange]) -> Any:
        from neuron_explainer.collate import Recorder

        specs = list(dict.fromkeys(r.spec for r in ranges))
        key = tuple(s.key for s in specs)
        if key not in self._recorders:
            recorder = Recorder(self.model, specs)
            if self.all_specs is not None:
                # Every group runs the same forward pass: hooking a value can change the path
                # (attention probabilities switch off the fused kernel), and so the floats.
                recorder.names = Recorder(self.model, self.all_specs).names
            self._recorders = {key: recorder}  # one group at a time
        return self._recorders[key]

    def _batches(self, tokens: np.ndarray) -> Any:
        bs = self.cfg.batch_size
        for b0 in range(0, len(tokens), bs):
            yield b0, torch.from_numpy(tokens[b0 : b0 + bs]).long().to(self.device)

    @torch.no_grad()
    def calibrate(
        self, ranges: Sequence[NodeRange], tokens: np.ndarray
    ) -> dict[str, Tensor | None]:
        """Per node range, the quantile boundaries (n_quantiles, n) of the per-sequence scores
        of `tokens` (the corpus's first sequences)."""
        recorder = self._recorder(ranges)
        wanted = {r.key: r for r in ranges}
        scores: dict[str, list[Tensor]] = {}
        for _, batch in self._batches(tokens):
            parts: dict[str, Tensor] = {}
            for spec, sl, seqs_sl, fb in recorder.batches(batch):
                if spec.key not in wanted:
                    continue
                part = parts.get(spec.key)
                if part is None:
                    part = parts[spec.key] = torch.zeros(len(batch), spec.n_nodes)
                part[seqs_sl, sl] = fb.scores.float().cpu()
            for key, p in parts.items():
                scores.setdefault(key, []).append(p)
        levels = torch.tensor(self.cfg.quantiles)
        out: dict[str, Tensor | None] = {}
        for key, r in wanted.items():
            if key in scores:
                s = torch.cat(scores[key], 0)[:, r.lo : r.hi]
                out[key] = torch.quantile(s, levels, dim=0)
            else:
                out[key] = None
        return out

    @torch.no_grad()
    def process(
        self,
        ranges: Sequence[NodeRange],
        boundaries: dict[str, Tensor | None] | None,
        first_seq_id: int,
        tokens: np.ndarray,
    ) -> RunningState:
        """The state of `ranges` over the shard `tokens` (sequences first_seq_id, ...)."""
        recorder = self._recorder(ranges)
        state = RunningState(ranges, self.cfg, self.device)
        if boundaries is not None:
            state.set_boundaries(boundaries)
        for b0, batch in self._batches(tokens):
            if b0:
                _maybe_die()
            ids = torch.arange(
                first_seq_id + b0, first_seq_id + b0 + len(batch), device=self.device
            )
            for spec, sl, seqs_sl, fb in recorder.batches(batch):
                state.update(spec, sl, fb, ids[seqs_sl])
        state.n_sequences = len(tokens)
        state.n_tokens = int(tokens.size)
        state.keep_tokens(
            [torch.arange(first_seq_id, first_seq_id + len(tokens))],
            [torch.from_numpy(np.ascontiguousarray(tokens, dtype=np.int32))],
        )
        return state

    def process_bytes(
        self,
        ranges: Sequence[NodeRange],
        boundaries: dict[str, Tensor | None] | None,
        first_seq_id: int,
        tokens: np.ndarray,
    ) -> bytes:
        """`process`, serialized (what a Ray worker sends back)."""
        return self.process(ranges, boundaries, first_seq_id, tokens).to_bytes()
