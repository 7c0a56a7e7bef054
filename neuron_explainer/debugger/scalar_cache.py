"""The derived scalars a recording keeps, within a byte budget.

A request reads each scalar several times (ranked for the node table, summed for the token
display, looked up at the chosen nodes), so a recording keeps what it computed. But a head
scalar is (tokens x tokens x heads) per layer: at 512 tokens on GPT-2 small, 144 MiB over the
layers for each of act x grad, write norm and direct effect, more than the bare pass holds. So
the cache keeps new tensors only while their bytes stay under its budget; what does not fit is
computed again when asked for (elementwise work over activations the recording holds anyway,
a few ms a layer), and its memory is freed as soon as its reader lets go of it. Tensors that
are views of the recording's own activations or of a kept tensor cost nothing and are always
kept."""

from __future__ import annotations

from collections.abc import Callable, Iterable

from torch import Tensor

# Everything a prompt's request derives at 64 tokens (GPT-2 small: ~35 MiB) fits, so short
# prompts compute each scalar once; at 512 tokens the quadratic head scalars do not.
DEFAULT_BUDGET_BYTES = 64 << 20

Key = tuple[str, int | None]


class ScalarCache:
    def __init__(self, budget_bytes: int | None = None) -> None:
        self.budget_bytes = DEFAULT_BUDGET_BYTES if budget_bytes is None else budget_bytes
        self.used_bytes = 0
        self._kept: dict[Key, Tensor] = {}
        self._storages: set[int] = set()  # data pointers of storages already paid for

    def share(self, tensors: Iterable[Tensor]) -> None:
        """Mark the storages of `tensors` (the recording's activations and gradients) as held
        already: scalars that are views of them are kept for free."""
        self._storages |= {t.untyped_storage().data_ptr() for t in tensors}

    def get(self, key: Key, make: Callable[[], Tensor]) -> Tensor:
        x = self._kept.get(key)
        if x is None:
            x = make()
            self._keep(key, x)
        return x

    def __contains__(self, key: Key) -> bool:
        return key in self._kept

    def __len__(self) -> int:
        return len(self._kept)

    def _keep(self, key: Key, x: Tensor) -> None:
        storage = x.untyped_storage()
        if storage.data_ptr() in self._storages:
            self._kept[key] = x
            return
        if self.used_bytes + storage.nbytes() > self.budget_bytes:
            return
        self.used_bytes += storage.nbytes()
        self._storages.add(storage.data_ptr())
        self._kept[key] = x
