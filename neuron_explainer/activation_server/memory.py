"""Freed memory back to the system after each model request.

A request allocates and frees hundreds of MB (recorded activations, their gradients, vocabulary
scores). glibc keeps much of what is freed in its heap, so the server's resident memory stays
that much above what it holds between requests (on a Gemma-2-small-sized model, after one
64-token request: 128 MB returned by the trim; after a 512-token one, more). `malloc_trim`
returns it, in well under a millisecond to a few. Elsewhere than glibc this does nothing."""

from __future__ import annotations

import ctypes
import ctypes.util
from collections.abc import Callable


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


def release_freed_memory() -> None:
    if _MALLOC_TRIM is not None:
        _MALLOC_TRIM(0)
