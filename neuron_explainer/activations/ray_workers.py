"""Shards over Ray: one `ShardWorker` actor (one model replica) per worker or per GPU.

`RayShardPool` is a `ray.util.ActorPool` of restartable actors: a worker that dies mid-shard is
restarted by Ray (which reloads its model replica) and the shard is run again on it
(`max_restarts`, `max_task_retries`), so a build survives lost workers. Results come back in
submission order (`ActorPool.get_next`), which is the shard order the merge needs.

    --workers N            start a local Ray with N workers (or join one already started)
    --ray-address auto     join a running cluster (`ray start --head` / `ray://host:10001`)
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
from torch import Tensor

from neuron_explainer.activations.running_state import NodeRange, RunningState
from neuron_explainer.activations.shard_worker import FAULT_ENV, ShardWorker

if TYPE_CHECKING:
    from neuron_explainer.collate import CollateConfig, FamilySpec

__all__ = ["RayShardPool"]

MAX_RESTARTS = 4


class RayShardPool:
    """`workers` actors holding a copy of `model` each; `process` / `calibrate` calls run on
    them, and `get_next` returns results in submission order."""

    def __init__(
        self,
        model: Any,
        cfg: CollateConfig,
        workers: int | None,
        address: str | None,
        threads: int,
        all_specs: Sequence[FamilySpec],
    ) -> None:
        import ray
        from ray.util import ActorPool

        self._started = False
        if not ray.is_initialized():
            env = {k: os.environ[k] for k in (FAULT_ENV,) if k in os.environ}
            kwargs: dict[str, Any] = {
                "include_dashboard": False,
                "log_to_driver": False,
                "runtime_env": {"env_vars": env} if env else None,
            }
            if address:
                ray.init(address=address, **kwargs)
            else:
                ray.init(num_cpus=max(1, workers or 1) * threads, **kwargs)
            self._started = True
        resources = ray.cluster_resources()
        want_gpu = model.device.type == "cuda" and resources.get("GPU", 0) >= 1
        if workers is None:
            workers = (
                int(resources.get("GPU", 0))
                if want_gpu
                else max(1, int(resources.get("CPU", 1)) // threads)
            )
        # models travel on the CPU; each replica moves to its own GPU
        device = "cuda" if want_gpu else "cpu"
        # kept referenced: a restarted actor fetches its model replica from it again
        self._model_ref = model_ref = ray.put(model.to("cpu"))
        if want_gpu:
            model.to("cuda")
        actor_cls: Any = ray.remote(_ShardActor).options(
            num_cpus=threads,
            num_gpus=1 if want_gpu else 0,
            max_restarts=MAX_RESTARTS,
            max_task_retries=MAX_RESTARTS,
        )
        self.actors: list[Any] = [
            actor_cls.remote(model_ref, cfg, threads, device, list(all_specs))
            for _ in range(workers)
        ]
        self.workers = workers
        self._pool = ActorPool(self.actors)
        self._ray = ray
        self._in_flight = 0

    def calibrate(self, ranges: Sequence[NodeRange], tokens: np.ndarray) -> dict[str, Any]:
        return self._ray.get(self.actors[0].calibrate.remote(list(ranges), tokens))

    def submit(
        self,
        ranges: Sequence[NodeRange],
        boundaries: dict[str, Tensor | None] | None,
        first_seq_id: int,
        tokens: np.ndarray,
    ) -> None:
        self._pool.submit(
            lambda actor, args: actor.process_bytes.remote(*args),
            (list(ranges), boundaries, first_seq_id, tokens),
        )
        self._in_flight += 1

    def in_flight(self) -> int:
        return self._in_flight

    def has_next(self) -> bool:
        return self._pool.has_next()

    def get_next(self, ranges: Sequence[NodeRange], cfg: CollateConfig) -> RunningState:
        data = self._pool.get_next()
        self._in_flight -= 1
        state = RunningState(ranges, cfg, _cpu())
        if not state.load_bytes(data):
            raise RuntimeError("a worker sent back a state for other node ranges")
        return state

    def peak_memory(self) -> list[int]:
        """Each worker's peak resident memory (bytes)."""
        return self._ray.get([a.peak_rss.remote() for a in self.actors])

    def close(self) -> None:
        for a in self.actors:
            self._ray.kill(a)
        if self._started:
            self._ray.shutdown()


def _cpu() -> Any:
    import torch

    return torch.device("cpu")


class _ShardActor:
    """A Ray actor around a `ShardWorker` (created by `RayShardPool`)."""

    def __init__(
        self,
        model: Any,
        cfg: CollateConfig,
        threads: int,
        device: str,
        all_specs: list[FamilySpec],
    ) -> None:
        model = model.to(device)
        for p in model.parameters():
            p.requires_grad_(False)
        self.worker = ShardWorker(model, cfg, threads, all_specs)

    def calibrate(self, ranges: list[NodeRange], tokens: np.ndarray) -> dict[str, Any]:
        return self.worker.calibrate(ranges, tokens)

    def process_bytes(
        self,
        ranges: list[NodeRange],
        boundaries: dict[str, Tensor | None] | None,
        first_seq_id: int,
        tokens: np.ndarray,
    ) -> bytes:
        return self.worker.process_bytes(ranges, boundaries, first_seq_id, tokens)

    def peak_rss(self) -> int:
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
