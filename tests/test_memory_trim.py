"""The server's heap trimming (`activation_server.memory`): freed memory is given back to the
system once the process has grown by more than the allowance since the last trim, and kept for
the next request below it (trimming after every request cost it its page faults)."""

from __future__ import annotations

import ctypes
import ctypes.util
import subprocess
import sys

import pytest

from neuron_explainer.activation_server import memory

pytestmark = pytest.mark.skipif(
    memory._MALLOC_TRIM is None or memory.resident_bytes() is None, reason="needs glibc and /proc"
)

MB = 2**20


_LIBC = ctypes.CDLL(ctypes.util.find_library("c"))
_LIBC.malloc.restype, _LIBC.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
_LIBC.free.argtypes = [ctypes.c_void_p]
_pins: list[int] = []


def _allocate_and_free(total: int) -> None:
    """`total` bytes in 64 KiB pieces (below glibc's mmap threshold: they live in the heap),
    written so that they are resident, then freed; a small piece allocated after them stays, so
    that they are a hole in the heap (as a request's freed tensors are), not its top, which
    free() itself would give back."""
    pieces = [_LIBC.malloc(64 * 1024) for _ in range(total // (64 * 1024))]
    for p in pieces:
        ctypes.memset(p, 1, 64 * 1024)
    _pins.append(_LIBC.malloc(60 * 1024))
    for p in reversed(pieces):
        _LIBC.free(p)


def test_freed_memory_is_kept_below_the_allowance_and_returned_above_it() -> None:
    """In a fresh process: the suite's own heap (what earlier tests freed, threads they left)
    would move the resident sizes this reads."""
    result = subprocess.run([sys.executable, __file__], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]


def _scenario() -> None:
    memory.release_freed_memory(retain=0)  # a trim: the baseline
    _allocate_and_free(16 * MB)
    held = memory.resident_bytes()
    assert held is not None
    assert memory.release_freed_memory(retain=64 * MB) is False  # kept for the next request
    _allocate_and_free(128 * MB)
    before = memory.resident_bytes()
    assert before is not None and before - held > 64 * MB  # the freed pieces are still resident
    assert memory.release_freed_memory(retain=64 * MB) is True
    after = memory.resident_bytes()
    assert after is not None and before - after > 64 * MB  # given back
    assert memory.release_freed_memory(retain=64 * MB) is False  # nothing has grown since
    for p in _pins:
        _LIBC.free(p)


if __name__ == "__main__":
    _scenario()
