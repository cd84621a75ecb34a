"""What the training loop (and parity, and the evaluation CLIs) need from a framework, split by concern.

:func:`ms_transfer.core.loop.fit` is written once against :class:`Backend`;
``ms_transfer.mindspore_backend.backend.MindSporeBackend`` and ``torch_reference.backend.TorchBackend`` implement it
(``tests/test_backend_protocol.py`` checks every member). Batches are the backend's own tensors; everything that crosses
back into the loop (losses, logits, features, labels) is numpy. The parts, as Lightning separates a ``Strategy``'s
collectives and ``CheckpointIO`` from the step:

- :class:`Distribution`: this process's rank (:class:`~.distributed.Dist`), barrier, all-gather, the parameters
  the ranks compare;
- :class:`RunIO`: pretrained weights and run checkpoints (the weight-file *formats* themselves are registered
  with :mod:`.checkpoint_io` by each backend's format module, so the core reads and writes files of any
  framework without importing one);
- :class:`Data`: the loader over scanned samples and batches as numpy;
- :class:`Step`: the model, a stage's freezing and optimizer, the train step, eval logits, the BatchNorm
  moments and statistics of PreciseBN;
- :class:`FastPath` (optional): the frozen-trunk steps. :meth:`Step.fast_path` returns it (or ``None``) and the
  loop asks once per stage; a backend without a fast path returns ``None`` and implements none of it.

A new backend implements :class:`Backend` (all four parts) and registers its weight-file format
(:func:`.checkpoint_io.register_format`).
"""
from __future__ import annotations

from typing import Any, Dict, Iterable, List, Mapping, Optional, Protocol, Sequence, Tuple, runtime_checkable

import numpy as np

from .config import TrainConfig
from .data import SplitScan
from .distributed import Dist
from .freeze import FreezeReport
from .recipe import Stage

__all__ = ["Batch", "Backend", "Data", "Distribution", "FastPath", "RunIO", "Step"]

Batch = Tuple[Any, Any]


@runtime_checkable
class Distribution(Protocol):
    """Data parallelism: which rank this process is and the few collectives the loop needs."""

    #: this process's rank in a data-parallel run (set by :meth:`Step.setup`; ``world_size == 1`` otherwise)
    dist: Dist

    def barrier(self) -> None:
        """Wait for every rank (no-op in a single process)."""

    def all_gather(self, array: "np.ndarray") -> "np.ndarray":
        """``(world_size, *shape)``: every rank's float32 ``array`` (a single process: ``array[None]``)."""

    def parameter_arrays(self) -> List["np.ndarray"]:
        """Every parameter (not BatchNorm running statistics), in a fixed order (ranks compare their digests)."""


@runtime_checkable
class RunIO(Protocol):
    """Weights in and out of the model: pretrained files and the run checkpoints."""

    #: extension of the run checkpoints (``ckpt`` / ``pth``)
    ckpt_ext: str

    def load_pretrained(self, path: str) -> str:
        """Load a weight file of any format / naming into the model (head replaced if its size differs);
        returns the load report."""

    def load_run(self, path: Any) -> Dict:
        """Load the model of a run checkpoint of this backend (into the current model when it is that model, as
        MindSpore does to keep its compiled graphs; else a new one) and keep its optimizer state for
        :meth:`Step.enter_stage`; returns the checkpoint's metadata."""

    def save_run(self, path: Any, meta: Dict, with_optimizer: bool) -> None:
        """Write a run checkpoint atomically (model, ``meta``, and the optimizer state if asked)."""


@runtime_checkable
class Data(Protocol):
    """The input pipeline and the conversion of its batches to numpy."""

    def loader(self, split: SplitScan, *, train: bool, shuffle: bool, seed: int) -> Tuple[Iterable[Batch], List]:
        """``(batches, load_failures)`` of one pass over ``split``: the train or val transform, the order of
        ``shuffle_order(len(split), seed)`` if ``shuffle``; ``load_failures`` grows while iterating."""

    def labels(self, y: Any) -> np.ndarray:
        """A batch's labels as numpy int64."""

    def images(self, x: Any) -> np.ndarray:
        """A batch's images as numpy float32 NCHW."""


@runtime_checkable
class FastPath(Protocol):
    """The frozen-trunk fast path of a stage where only the head trains: the trunk runs as inference."""

    def extract(self, x: Any) -> np.ndarray:
        """Trunk features of a batch, as inference."""

    def head_step(self, features: np.ndarray, labels: np.ndarray) -> float:
        """One optimizer step of the head on trunk features; returns the loss before the update."""

    def head_logits(self, features: np.ndarray) -> np.ndarray:
        """Eval-mode logits of the head on trunk features."""

    def trunk_arrays(self) -> Iterable[Tuple[str, np.ndarray]]:
        """``(name, array)`` of every trunk parameter and BatchNorm statistic (the feature-cache key)."""

    def head_arrays(self) -> List[Tuple[str, np.ndarray]]:
        """``(name, array)`` of the head's parameters in layer order (each Dense layer's weight, then its bias)."""

    def set_head_arrays(self, arrays: Mapping[str, np.ndarray]) -> None:
        """Overwrite head parameters by name (``head_init: class_means``)."""


@runtime_checkable
class Step(Protocol):
    """The model and its training: build or adopt it, enter a stage, take steps, evaluate."""

    #: ``mindspore`` / ``torch``: written into the run lock and the feature-cache key
    name: str
    #: the run's config (``None`` until :meth:`setup`, or when constructed without one for evaluation)
    cfg: Optional[TrainConfig]
    #: the framework's model (a MindSpore ``nn.Cell`` / a torch ``nn.Module``; ``None`` before build/adopt)
    model: Any
    #: padding convention of the model (``torch`` / ``same``), recorded in run checkpoints
    padding: str
    #: the current stage's per-step base learning rates (:meth:`enter_stage`)
    lrs: List[float]

    def setup(self, cfg: TrainConfig) -> None:
        """Device, execution mode, seeds, threads; under a launcher (``core.distributed.detect``) also the
        communication backend and gradient averaging; called first."""

    def version(self) -> str:
        """``"<framework> <version>"`` (the feature-cache key depends on it)."""

    def build(self, arch: str, num_classes: int, padding: str) -> None:
        """A freshly initialised model."""

    def adopt(self, model: Any, arch: Optional[str] = None, padding: Optional[str] = None) -> "Step":
        """Use an existing model (parity, evaluation) instead of building one; ``arch`` / ``padding`` default to
        what the model records (a MindSpore net's ``arch`` / ``padding``), else ``None`` / ``torch``. Returns
        the backend."""

    def enter_stage(self, stage: Stage, lrs: Sequence[float], restore_optimizer: bool = False) -> FreezeReport:
        """Freeze by the stage's patterns, build its optimizer (per-step base LRs ``lrs``, multiplied by each
        parameter's ``lr_mult``), restoring the optimizer state of :meth:`RunIO.load_run` if asked."""

    def replace_optimizer(self, optimizer: Any) -> None:
        """Train the current stage with ``optimizer`` (a framework optimizer over the trainable parameters)
        instead of the one :meth:`enter_stage` built: parity's injected optimizer bugs. The train step is
        rebuilt around it."""

    def fast_path(self) -> Optional[FastPath]:
        """The frozen-trunk fast path of the current stage, or ``None`` when the stage trains more than the
        head (asked once per stage, after :meth:`enter_stage`)."""

    def train_step(self, x: Any, y: Any, want_features: bool = False) -> Tuple[float, Optional[np.ndarray]]:
        """One optimizer step; returns the loss before the update and, on the fast path with
        ``want_features``, the batch's trunk features."""

    def logits(self, x: Any) -> np.ndarray:
        """Eval-mode logits of a batch (backend tensor or numpy images)."""

    def trainable_batchnorms(self) -> List[str]:
        """Names of the BatchNorm layers that train (normalise with batch statistics in training): the layers
        :class:`~.callbacks.PreciseBN` recomputes; frozen ones (inference mode) are not listed."""

    def batchnorm_moments(self, x: Any) -> List[Tuple[str, int, np.ndarray, np.ndarray]]:
        """``(layer, elements per channel, mean, biased variance)`` of the input of every layer of
        :meth:`trainable_batchnorms` (once per call of the layer) in one forward pass of batch ``x``: the model in
        eval mode except those layers, which normalise with the batch's statistics. Changes no state of the model
        (moving statistics included)."""

    def set_batchnorm_statistics(self, stats: Mapping[str, Tuple[np.ndarray, np.ndarray]]) -> None:
        """Overwrite the moving ``(mean, unbiased variance)`` of the named BatchNorm layers."""


@runtime_checkable
class Backend(Step, Data, RunIO, Distribution, Protocol):
    """One framework's side of a training run: every part but the optional :class:`FastPath`."""
