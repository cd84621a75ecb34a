"""The MindSpore backend of the training loop (:mod:`ms_transfer.core.loop`): models, freezing, optimizers, the
compiled train step (GRAPH, or PYNATIVE to debug), the frozen-trunk fast path, the input pipeline and run
checkpoints, behind the :class:`~ms_transfer.core.backend.Backend` protocol.

``python -m parity --train-steps`` drives this same class on fixed batches (:meth:`MindSporeBackend.adopt` a net,
:meth:`~MindSporeBackend.enter_stage`, :meth:`~MindSporeBackend.train_step`), through the protocol's members only.
"""
from __future__ import annotations

import warnings
from typing import Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

import mindspore as ms
import numpy as np
from mindspore import nn, ops

from . import batchnorm, compile_cache, parallel
from .checkpoint import load_optimizer_state, load_pretrained, save_run_checkpoint
from .context import freeze_imported_objects, prepare_onednn, set_context
from ..core.archs import task_of
from ..core.class_means import check_head_names
from ..core.config import TrainConfig
from ..core.data import Preprocess, SplitScan
from ..core.distributed import SINGLE, detect
from ..core.freeze import FreezeReport
from ..core.recipe import Stage, TrainingError
from ..core.tasks import is_pair_samples, is_pair_task
from .data import build_dataset
from .frozen_trunk import FrozenTrunkStep, PairTrainStep, TrainStep, frozen_trunk_reason, head_name, is_head
from ..models.factory import build_model, load_run_checkpoint
from .optim import apply_freeze, build_optimizer, lr_groups

__all__ = ["MindSporeBackend", "make_loss", "PairWithLoss", "SumSquaredError", "WithLoss"]


class SumSquaredError(nn.Cell):
    """The digit adder's loss: mean squared error of the (N, 1) output against the integer sums, as torch's
    ``F.mse_loss(out[:, 0], y.float())``."""

    def __init__(self) -> None:
        super().__init__()
        self.cast = ops.Cast()

    def construct(self, outputs: ms.Tensor, sums: ms.Tensor) -> ms.Tensor:
        diff = outputs[:, 0] - self.cast(sums, ms.float32)
        return (diff * diff).mean()


class WithLoss(nn.Cell):
    """``loss(net(x), labels)``; :class:`PairWithLoss` for a net of two inputs. Fixed arguments, not ``*args``: the
    cell a train step differentiates is kept alive by MindSpore 2.7.2 otherwise (see
    :class:`~ms_transfer.mindspore_backend.frozen_trunk.TrainStep`)."""

    def __init__(self, net: nn.Cell, loss: nn.Cell) -> None:
        super().__init__(auto_prefix=False)
        self.net, self.loss = net, loss

    def construct(self, x, labels):
        return self.loss(self.net(x), labels)


class PairWithLoss(WithLoss):
    """``loss(net(x1, x2), labels)`` (the digit adder's pair of images)."""

    def construct(self, x1, x2, labels):
        return self.loss(self.net(x1, x2), labels)


def make_loss(task: str = "classify") -> nn.Cell:
    """Mean cross-entropy over integer labels, as ``torch.nn.functional.cross_entropy`` (``task="digit_sum"``:
    :class:`SumSquaredError`).

    Not the tutorial's ``nn.SoftmaxCrossEntropyWithLogits(sparse=True)``: on CPU it returns ``inf`` once the
    target's softmax probability underflows (logits ~100 apart; measured: inf where torch gives 2933.5), which
    the NaN/Inf guard would stop on. ``nn.CrossEntropyLoss`` works in log-space like torch and stays finite.
    """
    if task == "digit_sum":
        return SumSquaredError()
    return nn.CrossEntropyLoss(reduction="mean")


def _images(x):
    """A batch as tensors (a pair batch: a tuple of two)."""
    if isinstance(x, (list, tuple)):
        return tuple(_images(t) for t in x)
    return x if isinstance(x, ms.Tensor) else ms.Tensor(np.ascontiguousarray(x, np.float32))


def _as_tuple(x) -> tuple:
    return tuple(x) if isinstance(x, (list, tuple)) else (x,)


def _labels(y) -> ms.Tensor:
    return y if isinstance(y, ms.Tensor) else ms.Tensor(np.asarray(y, np.int32))


class MindSporeBackend:
    """The network, the compiled train step of the current stage and the pipeline (see the module docstring).

    When the stage leaves only the head (``fc``; VGG: ``classifier``) trainable, :attr:`fast` is a
    :class:`FrozenTrunkStep` and
    :meth:`train_step` uses it (trunk inference + head step), falling back to the full-net cell :attr:`step`
    if the freezing changes so that the two would differ (reported once).
    """

    name = "mindspore"
    ckpt_ext = "ckpt"

    def __init__(self, cfg: Optional[TrainConfig] = None) -> None:
        self.cfg = cfg
        self.task = "classify"
        self.model: Optional[nn.Cell] = None   # the network
        self.padding = "torch"
        self.optimizer: Optional[nn.Optimizer] = None
        self.stage: Optional[Stage] = None
        self.lrs: List[float] = []
        self.fast: Optional[FrozenTrunkStep] = None
        self._resume_state: Dict[str, np.ndarray] = {}
        self._training: Optional[bool] = None
        self._fallback_reported = False
        self.dist = SINGLE
        self._compile_cache = False   # set by setup() (the training loop), never by parity's adopt()
        self._eval_batch = 0   # the batch size of every GRAPH eval pass (see logits), fixed at its first call

    # --- model -------------------------------------------------------------------------------------------
    def setup(self, cfg: TrainConfig) -> None:
        self.cfg = cfg
        dist = detect()
        if cfg.device == "CPU":  # which conv path oneDNN takes (probed once, then cached; not by launched ranks)
            prepare_onednn(probe=not dist.enabled)
        set_context(cfg.mode, cfg.device)
        if compile_cache.one_run_per_process():   # the training CLI: its imports are done, the process is this run's
            freeze_imported_objects()             # MindSpore's collection before each compile skips them
        if dist.enabled:  # under msrun: join the cluster, average gradients (see .parallel)
            self.dist = parallel.init_data_parallel(dist)
        self._compile_cache = cfg.compile_cache == "auto"
        ms.set_seed(cfg.seed)   # the same on every rank: MindSpore does not broadcast the initial weights

    def version(self) -> str:
        return f"mindspore {ms.__version__}"

    def adopt(self, model: nn.Cell, arch: Optional[str] = None, padding: Optional[str] = None) -> "MindSporeBackend":
        """Use an existing net (parity, evaluation) instead of building one; ``arch`` / ``padding`` default to the
        net's own (every registered model records them)."""
        self.model, self.padding, self._training = model, padding or getattr(model, "padding", "torch"), None
        self.task = task_of(arch or getattr(model, "arch", None) or "")
        return self

    def build(self, arch: str, num_classes: int, padding: str) -> None:
        self.adopt(build_model(arch, num_classes, padding))

    def load_pretrained(self, path: str) -> str:
        exclude = self.cfg.pretrained_exclude if self.cfg is not None else ()
        return f"Loaded {path}\n{load_pretrained(self.model, path, verbose=False, exclude=exclude)}"

    def load_run(self, path) -> Dict:
        net, weights = load_run_checkpoint(path, into=self.model)   # the same net keeps its compiled graphs
        if net is not self.model:
            self.adopt(net)
        self._resume_state = weights.state
        return weights.meta

    def save_run(self, path, meta: Dict, with_optimizer: bool) -> None:
        save_run_checkpoint(path, self.model, meta, optimizer=self.optimizer if with_optimizer else None)

    # --- stage and steps ---------------------------------------------------------------------------------
    def enter_stage(self, stage: Stage, lrs: Sequence[float], restore_optimizer: bool = False) -> FreezeReport:
        """Apply the stage's freezing and build its optimizer (per-step LRs) and train step."""
        if self._compile_cache:   # once, before the first graph compiles (see .compile_cache)
            self._compile_cache = False
            path = compile_cache.enable(self.cfg, lrs)
            if path is not None:
                reused = any(path.rglob("*"))
                print(f"Compile cache: {path} ({'reusing the graphs of an earlier identical run' if reused else 'new'})")
        report = apply_freeze(self.model, stage.freeze, stage.unfreeze)
        params = self.model.trainable_params()
        if not params:
            raise TrainingError("the freeze patterns leave no trainable parameter; check --freeze/--unfreeze")
        cfg = self.cfg
        self.stage, self.lrs = stage, list(lrs)
        self.optimizer = build_optimizer(cfg.optimizer, lr_groups(params, cfg.lr_mult), self.lrs, cfg.momentum,
                                         cfg.weight_decay)
        self.compile_step()
        if restore_optimizer:
            load_optimizer_state(self.optimizer, self.model, self._resume_state)
        return report

    def replace_optimizer(self, optimizer: nn.Optimizer) -> None:
        """Train the stage with ``optimizer`` instead (parity's injected bugs); the train step is recompiled."""
        self.optimizer = optimizer
        self.compile_step()

    def compile_step(self) -> None:
        """(Re)build the train step(s) around ``self.optimizer``."""
        step, with_loss = (PairTrainStep, PairWithLoss) if is_pair_task(self.task) else (TrainStep, WithLoss)
        self.step = step(with_loss(self.model, make_loss(self.task)), self.optimizer)
        self.step.set_train(True)
        self._training = True
        self.fast = FrozenTrunkStep(self.model, self.optimizer, make_loss()) \
            if frozen_trunk_reason(self.model) is None else None
        self._fallback_reported = False

    def fast_path(self) -> Optional["MindSporeBackend"]:
        """This backend (its :meth:`extract`, :meth:`head_step`, :meth:`head_logits`, :meth:`trunk_arrays`) when
        the stage trains only the head, else ``None``."""
        return self if self.frozen_trunk_reason() is None else None

    def frozen_trunk_reason(self) -> Optional[str]:
        """``None`` when only the head trains and the trunk runs as inference, else why not (checked again at
        every step: a freezing changed after :meth:`compile_step` falls back to the full network, reported once)."""
        if self.fast is None:
            return frozen_trunk_reason(self.model) or "the train step was built for the whole network"
        reason = self.fast.ready()
        if reason and not self._fallback_reported:
            self._fallback_reported = True
            warnings.warn(f"frozen-trunk fast path off: {reason}; training through the full network instead")
        return reason

    def _set_training(self, training: bool) -> None:
        if self._training is not training:
            self.model.set_train(training)
            self._training = training

    def train_step(self, x, y, want_features: bool = False) -> Tuple[float, Optional[np.ndarray]]:
        """One optimizer step on a batch; returns the loss computed before the update (and, on the fast path
        with ``want_features``, the trunk features)."""
        x, y = _images(x), _labels(y)
        self._set_training(True)
        if self.frozen_trunk_reason() is None:
            if want_features:
                # Filling the cache: the trunk-only and head-only graphs that the val pass and the cached epochs use
                # anyway, rather than the fused graph, so that no graph is compiled only for this epoch (measured,
                # ResNet50: ~1 s of head-graph compilation otherwise). Same updates either way.
                features = self.fast.extract(x)
                return float(self.fast.head_step(features, y).asnumpy()), features.asnumpy()
            loss, _ = self.fast.step(x, y)
            return float(loss.asnumpy()), None
        return float(self.step(*_as_tuple(x), y).asnumpy()), None

    def extract(self, x) -> np.ndarray:
        return self.fast.extract(_images(x)).asnumpy()

    def head_step(self, features: np.ndarray, labels: np.ndarray) -> float:
        self._set_training(True)
        return float(self.fast.head_step(features, labels).asnumpy())

    # --- inference and data ------------------------------------------------------------------------------
    def logits(self, x) -> np.ndarray:
        """Eval-mode outputs of a batch. In GRAPH mode every batch runs at one batch size, the run's
        ``batch_size`` (else the first batch's): a smaller batch zero-padded, a larger one in pieces, so one compiled
        graph serves every pass. MindSpore compiles a graph per input shape (~0.2 s for fashion_cnn, ~0.5 s for
        ResNet18 at 32 px): a split's partial last batch and the plot's few images each compiled another. The
        network must treat samples independently in eval mode, as every network here does (BatchNorm uses its
        moving statistics)."""
        self._set_training(False)
        inputs = _as_tuple(_images(x))
        n = int(inputs[0].shape[0])
        if ms.get_context("mode") != ms.GRAPH_MODE:
            return self.model(*inputs).asnumpy()
        size = self._eval_batch = self._eval_batch or (self.cfg.batch_size if self.cfg is not None else n)
        if n == size:
            return self.model(*inputs).asnumpy()
        arrays, outputs = [t.asnumpy() for t in inputs], []
        for start in range(0, n, size):
            part = [a[start:start + size] for a in arrays]
            m = len(part[0])
            part = [np.concatenate([a, np.zeros((size - m, *a.shape[1:]), a.dtype)]) for a in part] if m < size \
                else part
            outputs.append(self.model(*[ms.Tensor(a) for a in part]).asnumpy()[:m])
        return np.concatenate(outputs)

    def trainable_batchnorms(self) -> List[str]:
        return batchnorm.trainable_batchnorms(self.model)

    def batchnorm_moments(self, x) -> List[Tuple[str, int, np.ndarray, np.ndarray]]:
        self._training = None   # the pass leaves the net in eval mode; the next step sets its mode again
        return batchnorm.batchnorm_moments(self.model, self.trainable_batchnorms(), _as_tuple(_images(x)))

    def set_batchnorm_statistics(self, stats: Mapping[str, Tuple[np.ndarray, np.ndarray]]) -> None:
        batchnorm.set_batchnorm_statistics(self.model, stats)

    def head_logits(self, features: np.ndarray) -> np.ndarray:
        self._set_training(False)  # a VGG head holds Dropout layers
        return getattr(self.model, head_name(self.model))(_images(features)).asnumpy()

    def labels(self, y) -> np.ndarray:
        return (y.asnumpy() if isinstance(y, ms.Tensor) else np.asarray(y)).astype(np.int64)

    def images(self, x) -> np.ndarray:
        if isinstance(x, (list, tuple)):  # a pair: side by side
            return np.concatenate([self.images(t) for t in x], axis=3)
        return x.asnumpy() if isinstance(x, ms.Tensor) else np.asarray(x, np.float32)

    def parameter_arrays(self) -> List[np.ndarray]:
        # BN moving statistics excluded: with batch-statistics BN each rank averages its own slices
        return [p.asnumpy() for p in self.model.get_parameters()
                if not p.name.endswith(("moving_mean", "moving_variance"))]

    def barrier(self) -> None:
        if self.dist.enabled:
            parallel.barrier()

    def all_gather(self, array: np.ndarray) -> np.ndarray:
        return parallel.all_gather(array) if self.dist.enabled else np.asarray(array)[None]

    def trunk_arrays(self) -> Iterable[Tuple[str, np.ndarray]]:
        head = head_name(self.model)
        return [(p.name, p.asnumpy()) for p in self.model.get_parameters() if not is_head(p.name, head)]

    def head_arrays(self) -> List[Tuple[str, np.ndarray]]:
        head = head_name(self.model)
        return [(p.name, p.asnumpy()) for p in self.model.get_parameters() if is_head(p.name, head)]

    def set_head_arrays(self, arrays: Mapping[str, np.ndarray]) -> None:
        head = head_name(self.model)
        params = {p.name: p for p in self.model.get_parameters() if is_head(p.name, head)}
        check_head_names(arrays, params)
        for name, array in arrays.items():
            params[name].set_data(ms.Tensor(np.asarray(array, params[name].asnumpy().dtype)))

    def loader(self, split: SplitScan, *, train: bool, shuffle: bool, seed: int):
        cfg = self.cfg
        dataset, source = build_dataset(split.samples, Preprocess.from_config(cfg), cfg.batch_size, train=train, shuffle=shuffle,
                                        seed=seed, num_workers=cfg.num_workers, resize_backend=cfg.resize_backend,
                                        augment=cfg.augment, augment_shift=cfg.augment_shift)
        batches = dataset.create_tuple_iterator(num_epochs=1)
        if is_pair_samples(split.samples):  # digit pairs: ((images_a, images_b), sums)
            batches = (((a, b), y) for a, b, y in batches)
        return batches, source.load_failures
