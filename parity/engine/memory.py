"""Giving freed memory back to the operating system between the computations of a comparison, and keeping arrays
out of memory until they are needed again.

A comparison allocates and frees the same large tensors again and again (a working copy cast to float64 and back,
one float32 sample's gradients after another). glibc's ``malloc`` serves blocks under its mmap threshold (which it
raises up to 32 MB as large blocks are freed: nearly every tensor of a ResNet) from heaps it does not return to the
system while they are fragmented, so the process's resident memory grew with every computation although nothing was
kept: ResNet50, 224 px, batch 2, five float64 / float32 gradient computations in torch alone: 0.76 GiB before, 1.60
GiB after, 0.92 GiB once trimmed (``malloc_trim(0)`` after each: the resident size returned to 0.92-1.11 GiB every
time). :func:`release_freed_memory` is that trim; a no-op where the C library has none (musl, macOS, Windows).

Arrays a comparison needs again later, but not for a while, can wait in an unnamed temporary file instead
(:func:`spill`, or one at a time as they are computed: :func:`spill_each`): the file's pages sit in the page cache,
which the kernel may write out and reclaim, not in the process's resident memory.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import mmap
import os
import tempfile
import weakref
from typing import IO, Any, Callable, List, Optional, Sequence

import numpy as np


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


def temporary_file() -> Optional[IO[bytes]]:
    """An unnamed temporary file (gone when closed or when the process ends), or None if none can be made."""
    try:
        return tempfile.TemporaryFile(prefix="ms_transfer-parity-")
    except OSError:
        return None


def as_bytes(a: np.ndarray) -> np.ndarray:
    """A C-contiguous array's bytes, as a flat writable uint8 view (no copy; empty and 0-d arrays included)."""
    return a.reshape(-1).view(np.uint8)


def read_fully(fd: int, a: np.ndarray, offset: int) -> int:
    """Fill ``a`` from the file at ``offset``; its byte count. A short read (a file cut short under us) is an
    error, not an array with uninitialised values in it."""
    got = os.preadv(fd, [as_bytes(a)], offset)
    if got != a.nbytes:
        raise OSError(f"a parity spill file ended early: {got} of {a.nbytes} bytes at {offset}")
    return got


class Spilled:
    """Arrays written to a temporary file by :func:`spill` (or one at a time: :func:`spill_each`, :meth:`put`);
    :meth:`load` gives them back, nested the same way, as often as asked: read-only arrays over the file mapped into
    memory, so a load copies nothing and allocates nothing (the file's pages are the page cache's)."""

    def __init__(self, tree: Any, file: Optional[IO[bytes]]) -> None:
        self._file = file
        self._full = False   # a write failed (a full disk): later puts stay in memory
        self._leaves: List[tuple] = []   # (offset, dtype, shape) of each array, in the order of the walk
        self._tree = self._write(tree) if file is not None else tree
        if file is not None:
            file.flush()
            weakref.finalize(self, file.close)   # the file goes with this object; mappings with their arrays

    def _write(self, node: Any) -> Any:
        if isinstance(node, Spilled):   # already in a file of its own: read from there
            return node
        if isinstance(node, np.ndarray):
            offset = self._file.tell()
            self._file.write(as_bytes(np.ascontiguousarray(node)))   # (a 0-d array comes out 1-d: its shape is kept)
            self._leaves.append((offset, node.dtype, node.shape))
            return _Leaf(len(self._leaves) - 1)
        if isinstance(node, dict):
            return {k: self._write(v) for k, v in node.items()}
        if isinstance(node, (list, tuple)):
            return type(node)(self._write(v) for v in node)
        return node

    def _read(self, node: Any, mapped: Optional[mmap.mmap]) -> Any:
        if isinstance(node, Spilled):
            return node.load()
        if isinstance(node, _Leaf):
            offset, dtype, shape = self._leaves[node.index]
            count = int(np.prod(shape, dtype=np.int64))
            if count == 0:
                a = np.empty(shape, dtype)
                a.flags.writeable = False   # read-only like the others
                return a
            return np.frombuffer(mapped, dtype, count, offset).reshape(shape)
        if isinstance(node, dict):
            return {k: self._read(v, mapped) for k, v in node.items()}
        if isinstance(node, (list, tuple)):
            return type(node)(self._read(v, mapped) for v in node)
        return node

    def put(self, key: Any, a: np.ndarray) -> None:
        """Add ``a`` under ``key`` to a dict spilled by :func:`spill_each`, written (and flushed) after the arrays
        already there, so that the caller can free it at once. Where there is no file, or once a write has failed (a
        full disk), it stays in memory; the arrays written before stay readable from the file."""
        if self._file is not None and not self._full:
            try:
                leaf = self._write(a)
                self._file.flush()   # on disk now: a later failure cannot take it with it
                self._tree[key] = leaf
                return
            except OSError:
                self._full = True
        self._tree[key] = a

    def order(self, keys: Sequence[Any]) -> None:
        """Put a dict spilled by :func:`spill_each` in the order of ``keys`` (the keys it holds; no data moves)."""
        self._tree = {k: self._tree[k] for k in keys if k in self._tree}

    def load(self) -> Any:
        """The arrays back, read-only, over a mapping of the file made for this call: the mapping (and the resident
        pages it counts) goes when the last of these arrays does; the file stays until this object goes."""
        if self._file is None:
            return self._read(self._tree, None) if _holds(self._tree, Spilled) else self._tree
        # an empty file cannot be mapped (nothing but empty arrays in it, or nothing written before a full disk)
        fd = self._file.fileno()
        mapped = mmap.mmap(fd, 0, access=mmap.ACCESS_READ) if os.fstat(fd).st_size else None
        return self._read(self._tree, mapped)


def _holds(node: Any, kind: type) -> bool:
    if isinstance(node, kind):
        return True
    if isinstance(node, dict):
        return any(_holds(v, kind) for v in node.values())
    if isinstance(node, (list, tuple)):
        return any(_holds(v, kind) for v in node)
    return False


class _Leaf:
    def __init__(self, index: int) -> None:
        self.index = index


def spill(tree: Any) -> Spilled:
    """The numpy arrays of ``tree`` (dicts, lists and tuples of them; other values kept as they are) written to an
    unnamed temporary file, so that the caller can drop its references and the memory goes until
    :meth:`Spilled.load`; a :class:`Spilled` inside ``tree`` stays in its own file and is loaded with the rest.
    Without a file (a full disk, no temporary directory) the arrays stay in memory: the same result, without the
    saving."""
    file = temporary_file() if _holds(tree, np.ndarray) else None   # (only spilled parts, or no arrays: no file)
    if file is None:
        return Spilled(tree, None)
    try:
        return Spilled(tree, file)
    except OSError:   # a full disk: the arrays stay where they are
        file.close()
        return Spilled(tree, None)


def spill_each() -> Spilled:
    """An empty dict spilled to a temporary file, filled one array at a time by :meth:`Spilled.put` as each is
    computed: what :func:`spill` does for a whole tree, without ever holding the whole tree (a float64 reference's
    gradients, written as backward computes them)."""
    return Spilled({}, temporary_file())
