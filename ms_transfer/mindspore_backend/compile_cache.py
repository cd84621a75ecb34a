"""MindSpore's compile cache for GRAPH mode, used only where a hit cannot be stale.

MindSpore keeps compiled graphs when ``MS_COMPILER_CACHE_ENABLE=1`` and reuses them from ``MS_COMPILER_CACHE_PATH``
(its ``enable_compile_cache`` context argument is deprecated in 2.10); it does not notice that the Python code
that built a graph changed. So every cache directory is keyed by everything a graph can depend on: the MindSpore
version, the source of every ``ms_transfer`` module (a code change is a new key), and the run's whole config
except where it writes (``output_dir``, ``resume``) plus the first stage's per-step LR list (one entry per step:
it carries the number of training samples). Measured (ResNet50, 224 px, batch 8, GRAPH, the trainer backend's first finetune step,
AMD EPYC 2 cores, MindSpore 2.10.0): 11.4 s uncached, 13.5 s filling the cache, 2.7 s on a hit; ResNet18 at
224 px: 4.0 s -> 1.2 s. A hit is tested to train bit-identically to an uncached run.

One run per process: MindSpore picks the cache up when a graph first compiles and indexes it by compile order, so
a second run in the same process (a notebook, the test suite) could meet the first run's graphs under its own
key. Only the training CLI (``python -m ms_transfer.train``: one process, one run) turns it on
(:func:`allow_for_this_process`), and only for the first run.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Optional, Sequence

from ..core import recipe
from ..core.config import TrainConfig

ENABLE_VAR, PATH_VAR = "MS_COMPILER_CACHE_ENABLE", "MS_COMPILER_CACHE_PATH"
#: config keys that only say where the run writes
_IGNORED = ("output_dir", "resume", "tensorboard")
_state = {"allowed": False, "used": False}


def allow_for_this_process() -> None:
    """Called by the training CLI: this process runs exactly one training run (see the module docstring)."""
    _state["allowed"] = True


def one_run_per_process() -> bool:
    """Whether this process runs one training run and ends (:func:`allow_for_this_process` was called)."""
    return _state["allowed"]


def _sources_digest() -> str:
    root = Path(__file__).resolve().parent.parent   # the whole ms_transfer package: every source a graph uses
    h = hashlib.sha256()
    for path in sorted(root.rglob("*.py")):
        h.update(str(path.relative_to(root)).encode())
        h.update(path.read_bytes())
    return h.hexdigest()


def cache_dir(cfg: TrainConfig, lrs: Sequence[float]) -> Path:
    """The directory of this (code, MindSpore, config, per-step LRs)."""
    import mindspore as ms
    config = {k: v for k, v in cfg.to_dict().items() if k not in _IGNORED}
    key = json.dumps({"mindspore": ms.__version__, "code": _sources_digest(), "config": config,
                      "lrs": [float(v) for v in lrs]}, sort_keys=True, default=str)
    return recipe.CACHE_DIR / "compile" / hashlib.sha256(key.encode()).hexdigest()[:20]


def enable(cfg: TrainConfig, lrs: Sequence[float]) -> Optional[Path]:
    """Switch MindSpore's compile cache on for this run (GRAPH mode, ``compile_cache: auto``, unless the user set
    ``MS_COMPILER_CACHE_ENABLE`` themselves); returns the directory, or ``None``. Call before the first graph
    compiles (the backend does, when it enters the first stage)."""
    if (not _state["allowed"] or _state["used"] or cfg.mode != "graph" or cfg.compile_cache == "off"
            or ENABLE_VAR in os.environ):
        return None
    _state["used"] = True
    path = cache_dir(cfg, lrs)
    path.mkdir(parents=True, exist_ok=True)
    os.environ[ENABLE_VAR], os.environ[PATH_VAR] = "1", str(path)
    return path
