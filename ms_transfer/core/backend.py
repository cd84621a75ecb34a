"""What the training loop needs from a framework: the :class:`Backend` protocol.

:func:`ms_transfer.core.loop.fit` is written once against it; ``ms_transfer.backend.MindSporeBackend`` and
``torch_reference.backend.TorchBackend`` implement it. Batches are the backend's own tensors; everything that
crosses back into the loop (losses, logits, features, labels) is numpy.
"""
from __future__ import annotations

from typing import Any, Dict, Iterable, List, Optional, Protocol, Sequence, Tuple

import numpy as np

from .config import TrainConfig
from .data import SplitScan
from .distributed import Dist
from .freeze import FreezeReport
from .recipe import Stage

Batch = Tuple[Any, Any]


class Backend(Protocol):
    """One framework's side of a training run (see the module docstring)."""

    #: ``mindspore`` / ``torch``: written into the run lock and the feature-cache key
    name: str
    #: extension of the run checkpoints (``ckpt`` / ``pth``)
    ckpt_ext: str
    #: padding convention of the built model (``torch`` / ``same``), recorded in run checkpoints
    padding: str
    #: this process's rank in a data-parallel run (set by :meth:`setup`; ``world_size == 1`` otherwise)
    dist: Dist

    def setup(self, cfg: TrainConfig) -> None:
        """Device, execution mode, seeds, threads; under a launcher (``core.distributed.detect``) also the
        communication backend and gradient averaging; called first."""

    def barrier(self) -> None:
        """Wait for every rank (no-op in a single process)."""

    def all_gather(self, array: "np.ndarray") -> "np.ndarray":
        """``(world_size, *shape)``: every rank's float32 ``array`` (a single process: ``array[None]``)."""

    def parameter_arrays(self) -> List["np.ndarray"]:
        """Every parameter (not BatchNorm running statistics), in a fixed order (ranks compare their digests)."""

    def version(self) -> str:
        """``"<framework> <version>"`` (the feature-cache key depends on it)."""

    def build(self, arch: str, num_classes: int, padding: str) -> None:
        """A freshly initialised model."""

    def load_pretrained(self, path: str) -> str:
        """Load a weight file of any format / naming into the model (head replaced if its size differs);
        returns the load report."""

    def load_run(self, path: Any) -> Dict:
        """Rebuild the model from a run checkpoint of this backend and keep its optimizer state for
        :meth:`enter_stage`; returns the checkpoint's metadata."""

    def save_run(self, path: Any, meta: Dict, with_optimizer: bool) -> None:
        """Write a run checkpoint atomically (model, ``meta``, and the optimizer state if asked)."""

    def enter_stage(self, stage: Stage, lrs: Sequence[float], restore_optimizer: bool) -> FreezeReport:
        """Freeze by the stage's patterns, build its optimizer (per-step base LRs ``lrs``, multiplied by each
        parameter's ``lr_mult``), restoring the optimizer state of :meth:`load_run` if asked."""

    def loader(self, split: SplitScan, *, train: bool, shuffle: bool, seed: int) -> Tuple[Iterable[Batch], List]:
        """``(batches, load_failures)`` of one pass over ``split``: the train or val transform, the order of
        ``shuffle_order(len(split), seed)`` if ``shuffle``; ``load_failures`` grows while iterating."""

    def frozen_trunk_reason(self) -> Optional[str]:
        """``None`` when only the head trains and the trunk runs as inference (the fast path applies),
        else why not."""

    def train_step(self, x: Any, y: Any, want_features: bool = False) -> Tuple[float, Optional[np.ndarray]]:
        """One optimizer step; returns the loss before the update and, on the fast path with
        ``want_features``, the batch's trunk features."""

    def extract(self, x: Any) -> np.ndarray:
        """Trunk features of a batch, as inference (fast path only)."""

    def head_step(self, features: np.ndarray, labels: np.ndarray) -> float:
        """One optimizer step of the head on trunk features (fast path only)."""

    def logits(self, x: Any) -> np.ndarray:
        """Eval-mode logits of a batch (backend tensor or numpy images)."""

    def head_logits(self, features: np.ndarray) -> np.ndarray:
        """Eval-mode logits of the head on trunk features."""

    def labels(self, y: Any) -> np.ndarray:
        """A batch's labels as numpy int64."""

    def images(self, x: Any) -> np.ndarray:
        """A batch's images as numpy float32 NCHW."""

    def trunk_arrays(self) -> Iterable[Tuple[str, np.ndarray]]:
        """``(name, array)`` of every trunk parameter and BatchNorm statistic (the feature-cache key)."""
