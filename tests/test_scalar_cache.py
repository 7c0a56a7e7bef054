"""The recording's cache of derived scalars keeps what it computed within its byte budget;
views of the recording's own activations are free; what does not fit is computed again."""

from __future__ import annotations

import torch

from neuron_explainer.debugger.scalar_cache import ScalarCache


def test_tensors_are_kept_within_the_budget_and_views_of_activations_for_free() -> None:
    activation = torch.zeros(100, 100)  # 40,000 bytes
    cache = ScalarCache(budget_bytes=50_000)
    cache.share([activation])
    calls: list[str] = []

    def make(name: str, x: torch.Tensor) -> torch.Tensor:
        calls.append(name)
        return x

    view = cache.get(("view", None), lambda: make("view", activation.T))
    first = cache.get(("first", 0), lambda: make("first", torch.ones(10_000)))  # 40,000 bytes: fits
    second = cache.get(("second", 0), lambda: make("second", torch.ones(10_000)))  # would pass 50,000
    assert cache.used_bytes == 40_000 and len(cache) == 2
    assert ("view", None) in cache and ("first", 0) in cache and ("second", 0) not in cache
    # kept: the same tensor, not made again; not kept: made again
    assert cache.get(("view", None), lambda: make("view", activation)) is view
    assert cache.get(("first", 0), lambda: make("first", torch.ones(1))) is first
    again = cache.get(("second", 0), lambda: make("second", torch.ones(10_000)))
    assert calls == ["view", "first", "second", "second"] and torch.equal(again, second)
    # a view of a kept tensor is free too
    cache.get(("first view", 0), lambda: first[:10])
    assert ("first view", 0) in cache and cache.used_bytes == 40_000


def test_no_budget_keeps_only_views() -> None:
    activation = torch.zeros(10)
    cache = ScalarCache(budget_bytes=0)
    cache.share([activation])
    cache.get(("copy", 0), lambda: activation + 1)
    cache.get(("view", 0), lambda: activation[2:])
    assert ("copy", 0) not in cache and ("view", 0) in cache
