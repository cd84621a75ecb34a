"""MindSpore's weight files (``.ckpt``) for the core's checkpoint I/O: registered on import.

Importing this module does not load MindSpore (each function does, when a file is read or written): the torch
side imports it to read ``.ckpt`` files and never loads MindSpore otherwise.
"""
from __future__ import annotations

import json
from collections import OrderedDict
from pathlib import Path
from typing import Optional

from ..core.checkpoint_io import META_KEY, CheckpointError, WeightFormat, contiguous, register_format

__all__ = ["CKPT"]


def _mem_available() -> Optional[int]:
    """Bytes the kernel can hand out now (``MemAvailable``: free memory plus reclaimable page cache), or None."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def read_ckpt(path: Path):
    """``(state, meta)`` of a MindSpore checkpoint (``meta`` from its ``append_dict`` strings)."""
    import mindspore as ms
    # MindSpore 2.10's load_checkpoint refuses a file larger than *free* memory (sysconf SC_AVPHYS_PAGES), which
    # leaves out the page cache the kernel reclaims on demand: after a few GB of file I/O, free memory here was
    # 225 MB with 22 GB available, and a 241 MB ResNet152 .ckpt (a 531 MB VGG's, too) was refused. Ask it with
    # MemAvailable instead, for this call (its private hook; left alone where a version does not have it).
    from mindspore.train import serialization
    original = getattr(serialization, "_get_available_memory", None)
    available = _mem_available()
    if original is not None and available is not None:
        serialization._get_available_memory = lambda: available
    try:
        raw = ms.load_checkpoint(str(path))
    except (ValueError, RuntimeError) as exc:
        raise CheckpointError(f"{path}: not a readable MindSpore checkpoint ({exc})") from None
    finally:
        if original is not None:
            serialization._get_available_memory = original
    state, meta = OrderedDict(), {}
    for name, value in raw.items():
        if name == META_KEY:
            meta = json.loads(value)
        elif isinstance(value, str):
            meta[name] = value
        else:
            state[name] = value.asnumpy()
    return state, meta


def write_ckpt(path: Path, state, meta) -> None:
    """A MindSpore checkpoint of ``state``, ``meta`` as one JSON string entry (:data:`META_KEY`)."""
    import mindspore as ms
    # Tensor.from_numpy shares the array's memory; Tensor() copied every tensor first (VGG16: peak 2.24 -> 1.73 GiB
    # and 2.8 -> 1.0 s for its 553 MB; BENCHMARKS.md "What the tests' largest moment held, and a checkpoint's copies")
    entries = [{"name": k, "data": ms.Tensor.from_numpy(contiguous(v))} for k, v in state.items()]
    ms.save_checkpoint(entries, str(path), append_dict={META_KEY: json.dumps(meta)} if meta else None)


#: the registered format (tests patch its ``read`` / ``write``)
CKPT = register_format(WeightFormat("mindspore", read_ckpt, write_ckpt))
