"""``python -m torch_reference.train``: the same run in PyTorch - real torchvision ResNets, same config files,
flags and loop as ``python -m ms_transfer.train``.

The loop is :func:`ms_transfer.core.loop.fit`, driving the torch backend
(:class:`torch_reference.backend.TorchBackend`): same config schema, data preparation and file scan, freezing patterns (matched on the MindSpore names of
torchvision's parameters, so ``--unfreeze 'fc.*' 'layer4.*'`` selects the same layers), frozen-BN semantics (a
BatchNorm whose weight and bias are frozen runs in eval mode), per-pattern LR multipliers, per-step LR schedules,
frozen-trunk fast path and feature cache, and the ``metrics.jsonl`` fields. Artifacts: ``config.yaml``,
``metrics.jsonl``, ``best.pth``, ``last.pth`` (+ optimizer state), ``curves.png``, ``predictions.png``.
``mode`` (GRAPH/PYNATIVE) is a MindSpore setting and is ignored here; torch always resizes with Pillow.
"""
from __future__ import annotations

import gc
import sys
from typing import Dict, Optional, Sequence

from ms_transfer.core.callbacks import Callback
from ms_transfer.core.config import TrainConfig
from ms_transfer.core.loop import fit
from ms_transfer.core.recipe import cli_main

from .backend import TorchBackend

__all__ = ["train", "main"]


def train(cfg: TrainConfig, callbacks: Optional[Sequence[Callback]] = None) -> Dict:
    """Run (or resume) training in PyTorch; returns the same summary dict as ``ms_transfer.train.train``
    (``callbacks`` as there)."""
    try:
        return fit(cfg, TorchBackend(), callbacks)
    finally:
        gc.collect()   # the run's objects hold reference cycles: VGG16's 0.5 GiB stayed past the run until a collection


def main(argv: Optional[Sequence[str]] = None) -> int:
    """CLI entry point; bad input exits 2 with the reason, a failed run exits 1."""
    return cli_main(train, argv, "python -m torch_reference.train", __doc__)


if __name__ == "__main__":
    sys.exit(main())
