"""Freed memory back to the system after model requests, once enough of it has piled up.

A request allocates and frees hundreds of MB (recorded activations, their gradients, vocabulary
scores). glibc keeps what is freed in its heap, so the server's resident memory stays above
what it holds between requests: on GPT-2 small, 75 MB after a 7-token request, 130-160 MB after
a 64-token one, 1 GB after 512 tokens. `malloc_trim` returns it in a few milliseconds, but then
the next request faults every page back in: trimming after each request cost a 64-token request
on GPT-2 small 56 ms of 490 (7 tokens: 27 of 335), a tenth of the bare forward and backward. So
the heap may keep up to RETAIN_BYTES of freed memory for the next request (what a request of
up to a few hundred tokens reuses), and is trimmed when the process has grown by more than that
since the last trim. The peak is the same either way: a request reuses what the last one freed.
Elsewhere than glibc on Linux this does nothing."""

from __future__ import annotations

import ctypes
import ctypes.util
import os
from collections.abc import Callable

RETAIN_BYTES = 256 * 2**20


def _load_malloc_trim() -> Callable[[int], int] | None:
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        trim = ctypes.CDLL(name).malloc_trim
    except (OSError, AttributeError):  # not glibc (musl, macOS)
        return None
    trim.argtypes, trim.restype = [ctypes.c_size_t], ctypes.c_int
    return trim


_MALLOC_TRIM = _load_malloc_trim()
_PAGE_BYTES = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def resident_bytes() -> int | None:
    """This process's resident set size (None where /proc is not there)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * _PAGE_BYTES
    except (OSError, ValueError, IndexError):
        return None


class _Trimmer:
    def __init__(self) -> None:
        self.resident_after_trim: int | None = None

    def __call__(self, retain: int) -> bool:
        if _MALLOC_TRIM is None:
            return False
        now = resident_bytes()
        if now is not None and self.resident_after_trim is not None and now - self.resident_after_trim <= retain:
            return False
        _MALLOC_TRIM(0)
        self.resident_after_trim = resident_bytes()
        return True


_trimmer = _Trimmer()


def release_freed_memory(retain: int = RETAIN_BYTES) -> bool:
    """Trim the heap if the process has grown by more than `retain` bytes since the last trim
    (the first call always trims); whether it trimmed."""
    return _trimmer(retain)
