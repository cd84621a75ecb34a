"""Giving freed memory back to the operating system between the computations of a comparison.

A comparison allocates and frees the same large tensors again and again (a working copy cast to float64 and back,
one float32 sample's gradients after another). glibc's ``malloc`` serves blocks under its mmap threshold (which it
raises up to 32 MB as large blocks are freed: nearly every tensor of a ResNet) from heaps it does not return to the
system while they are fragmented, so the process's resident memory grew with every computation although nothing was
kept: ResNet50, 224 px, batch 2, five float64 / float32 gradient computations in torch alone: 0.76 GiB before, 1.60
GiB after, 0.92 GiB once trimmed (``malloc_trim(0)`` after each: the resident size returned to 0.92-1.11 GiB every
time). :func:`release_freed_memory` is that trim; a no-op where the C library has none (musl, macOS, Windows).
"""
from __future__ import annotations

import ctypes
import ctypes.util
from typing import Callable, Optional


def _malloc_trim() -> Optional[Callable[[int], int]]:
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return libc.malloc_trim
    except (OSError, AttributeError):
        return None


_TRIM = _malloc_trim()


def release_freed_memory() -> None:
    """Return the C heap's free pages to the system (glibc ``malloc_trim(0)``: every arena; a few ms)."""
    if _TRIM is not None:
        _TRIM(0)
