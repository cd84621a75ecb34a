"""The torch backend of the training loop (:mod:`ms_transfer.core.loop`): real torchvision ResNets and VGGs, freezing by
the same patterns (matched on the MindSpore names of torchvision's parameters, through the one naming table),
frozen BatchNorms in eval mode, SGD/Adam with LR-multiplier groups and the shared per-step LRs, the frozen-trunk
fast path, torchvision transforms over the shared file scan, and ``.pth`` run checkpoints.

``python -m parity --train-steps`` drives this same class on fixed batches.
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Callable, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

import numpy as np
from ._torch import torch

from ms_transfer.core import naming
from ms_transfer.core.checkpoint_io import CheckpointError
from ms_transfer.core.class_means import check_head_names
from ms_transfer.core.config import ConfigError, TrainConfig
from ms_transfer.core.archs import head_module, task_of
from ms_transfer.core.tasks import NO_FAST_PATH
from ms_transfer.core.data import Preprocess, SplitScan
from ms_transfer.core.distributed import SINGLE, detect, threads_per_rank
from ms_transfer.core.freeze import FreezeReport, freeze_report, is_frozen, lr_multiplier
from ms_transfer.core.recipe import Stage, TrainingError

from . import batchnorm
from .checkpoint import load_pretrained, load_run_checkpoint, save_run_checkpoint
from .data import build_loader
from .models import build_model

__all__ = ["TorchBackend", "build_torch_optimizer", "torch_device"]


def torch_device(device: str) -> torch.device:
    """``CPU`` / ``GPU`` (the config's names) as a torch device; a clear error when CUDA is missing, and for
    ``Ascend`` (a MindSpore device_target torch has no backend for here)."""
    if device == "Ascend":
        raise ConfigError("device Ascend is MindSpore's: the torch side runs on CPU or GPU (CUDA); run it with "
                          "--device CPU, or check the MindSpore port on Ascend against a reference bundle "
                          "(python -m parity --check-reference DIR --device Ascend)")
    if device == "GPU":
        if not torch.cuda.is_available():
            raise ConfigError("device GPU requested but torch sees no CUDA device; use --device CPU")
        return torch.device("cuda")
    return torch.device("cpu")


def build_torch_optimizer(name: str, groups: Sequence[Dict], momentum: float,
                          weight_decay: float) -> torch.optim.Optimizer:
    """torch counterpart of ``ms_transfer.mindspore_backend.optim.build_optimizer`` (groups carry ``lr_mult``)."""
    if name in ("momentum", "sgd"):  # nn.Momentum and nn.SGD (dampening 0) both follow torch SGD's rule
        return torch.optim.SGD(groups, lr=0.0, momentum=momentum, weight_decay=weight_decay)
    if name == "adam":
        return torch.optim.Adam(groups, lr=0.0, weight_decay=weight_decay)
    raise ValueError(f"unknown optimizer {name!r}; use momentum, sgd or adam")


def _as_tuple(x) -> tuple:
    return tuple(x) if isinstance(x, (list, tuple)) else (x,)




class TorchBackend:
    """The model, its freezing and optimizer for the current stage; the torch side of the shared loop."""

    name = "torch"
    ckpt_ext = "pth"

    def __init__(self, cfg: Optional[TrainConfig] = None) -> None:
        self.cfg = cfg
        self.device = torch.device("cpu")
        self.model: Optional[torch.nn.Module] = None
        self.padding = "torch"
        self.optimizer: Optional[torch.optim.Optimizer] = None
        self.stage: Optional[Stage] = None
        self.lrs: List[float] = []
        self.step_index = 0
        self.frozen_bns: List[torch.nn.Module] = []
        self._resume: Dict = {}
        self.dist = SINGLE
        #: DistributedDataParallel wrappers of the model and of its head (data parallel only; see enter_stage)
        self.ddp: Optional[torch.nn.Module] = None
        self.ddp_head: Optional[torch.nn.Module] = None

    # --- model -------------------------------------------------------------------------------------------
    def setup(self, cfg: TrainConfig) -> None:
        self.cfg = cfg
        self.device = torch_device(cfg.device)
        dist = detect()
        if dist.enabled:  # under torchrun: DDP over gloo (CPU) / nccl (GPU)
            self._init_data_parallel(dist)
        torch.manual_seed(cfg.seed)   # DDP also broadcasts rank 0's weights when it wraps the model

    def _init_data_parallel(self, dist) -> None:
        import torch.distributed as tdist
        if not tdist.is_initialized():
            tdist.init_process_group("nccl" if self.device.type == "cuda" else "gloo")
        if (tdist.get_rank(), tdist.get_world_size()) != (dist.rank, dist.world_size):
            raise RuntimeError(f"torchrun exported rank {dist.rank} of {dist.world_size}, but the process group "
                               f"says rank {tdist.get_rank()} of {tdist.get_world_size()}")
        if self.device.type == "cuda":
            torch.cuda.set_device(int(__import__("os").environ.get("LOCAL_RANK", 0)))
            self.device = torch.device("cuda", torch.cuda.current_device())
        # torchrun exports OMP_NUM_THREADS=1 unless the user set it; the cores divided among this machine's ranks
        threads = threads_per_rank(dist)
        torch.set_num_threads(threads)
        self.dist = dist
        print(f"Data parallel (torchrun, DDP over {tdist.get_backend()}): rank {dist.rank} of {dist.world_size}, "
              f"{threads} thread(s) per rank")

    def version(self) -> str:
        return f"torch {torch.__version__}"

    def adopt(self, model: torch.nn.Module, arch: Optional[str] = None,
              padding: Optional[str] = None) -> "TorchBackend":
        """Use an existing torchvision model (parity, evaluation) instead of building one; ``arch`` is needed
        for freezing and pretrained loading, ``padding`` defaults to torch's."""
        self.model, self.arch, self.padding = model.to(self.device), arch, padding or "torch"
        return self

    def build(self, arch: str, num_classes: int, padding: str) -> None:
        self.adopt(build_model(arch, num_classes, padding), arch, padding)

    def load_pretrained(self, path: str) -> str:
        exclude = self.cfg.pretrained_exclude if self.cfg is not None else ()
        return load_pretrained(self.model, path, self.arch, verbose=False, exclude=exclude)

    def load_run(self, path) -> Dict:
        model, meta, raw = load_run_checkpoint(path)
        self.adopt(model, meta["arch"], meta.get("padding", "torch"))
        self._resume = raw
        return meta

    def save_run(self, path, meta: Dict, with_optimizer: bool) -> None:
        save_run_checkpoint(path, self.model, meta, optimizer=self.optimizer if with_optimizer else None,
                            step=self.step_index)

    # --- stage and steps ---------------------------------------------------------------------------------
    def enter_stage(self, stage: Stage, lrs: Sequence[float], restore_optimizer: bool = False) -> FreezeReport:
        """Freeze by pattern (frozen BNs go to eval mode) and build the stage's optimizer."""
        entries, groups = [], OrderedDict()
        # patterns are written in MindSpore names: translate torchvision's through the one mapping table
        ms_names = naming.name_map(self.arch, "torchvision", "ms_transfer")
        for name, p in self.model.named_parameters():
            ms_name = ms_names[name]
            p.requires_grad_(not is_frozen(ms_name, stage.freeze, stage.unfreeze))
            entries.append((ms_name, p.numel(), p.requires_grad))
            if p.requires_grad:
                groups.setdefault(lr_multiplier(ms_name, self.cfg.lr_mult), []).append(p)
        self.frozen_bns = [m for m in self.model.modules() if isinstance(m, torch.nn.BatchNorm2d)
                           and not (m.weight.requires_grad or m.bias.requires_grad)]
        if not groups:
            raise TrainingError("the freeze patterns leave no trainable parameter; check --freeze/--unfreeze")
        self.stage, self.lrs, self.step_index = stage, list(lrs), 0
        self._wrap_ddp()
        self.optimizer = build_torch_optimizer(
            self.cfg.optimizer, [{"params": ps, "lr_mult": m} for m, ps in groups.items()], self.cfg.momentum,
            self.cfg.weight_decay)
        if restore_optimizer:
            try:
                self.optimizer.load_state_dict(self._resume["optimizer"])
            except (KeyError, ValueError) as exc:
                raise CheckpointError(f"the run's optimizer state does not fit this run ({exc}); the optimizer "
                                      "settings changed since it was saved - start a new run") from None
            self.step_index = int(self._resume["step"])
        return freeze_report(entries, len(self.frozen_bns))

    def replace_optimizer(self, optimizer: torch.optim.Optimizer) -> None:
        """Train the stage with ``optimizer`` instead (its param groups carry ``lr_mult``, as
        :func:`build_torch_optimizer`'s: each step sets ``lr = lr_mult * base``)."""
        self.optimizer = optimizer

    def _wrap_ddp(self) -> None:
        """Data parallel: DDP around the model, and around its head for the frozen-trunk fast path (which
        differentiates the head alone). Built after the stage's freezing: DDP registers its gradient hooks on the
        parameters that require grad when it is constructed."""
        self.ddp = self.ddp_head = None
        if not self.dist.enabled:
            return
        from torch.nn.parallel import DistributedDataParallel as DDP
        if self.frozen_trunk_reason() is None:   # one wrapper per parameter: DDP hooks the gradients it averages
            self.ddp_head = DDP(self._head_module())
        else:
            self.ddp = DDP(self.model)

    def _net(self) -> torch.nn.Module:
        return self.ddp if self.ddp is not None else self.model

    def _head_net(self) -> torch.nn.Module:
        return self.ddp_head if self.ddp_head is not None else self._head_module()

    @property
    def head(self) -> str:
        """The head module's name: ``fc`` (ResNets, seed networks) or ``classifier`` (VGG)."""
        return head_module(self.arch)

    def _is_head(self, name: str) -> bool:
        return name.startswith(self.head + ".")

    def fast_path(self) -> Optional["TorchBackend"]:
        """This backend (its :meth:`extract`, :meth:`head_step`, :meth:`head_logits`, :meth:`trunk_arrays`) when
        the stage trains only the head, else ``None``."""
        return self if self.frozen_trunk_reason() is None else None

    def frozen_trunk_reason(self) -> Optional[str]:
        """``None`` when only the head trains (every BatchNorm frozen), else why not."""
        if task_of(self.arch or "") != "classify":
            return NO_FAST_PATH
        trainable = [n for n, p in self.model.named_parameters() if p.requires_grad]
        outside = [n for n in trainable if not self._is_head(n)]
        if outside:
            return f"parameters outside {self.head} are trainable ({', '.join(outside[:3])})"
        if not trainable:
            return f"no {self.head} parameter is trainable"
        frozen = {id(m) for m in self.frozen_bns}
        for name, m in self.model.named_modules():
            if isinstance(m, torch.nn.BatchNorm2d) and id(m) not in frozen:
                return f"BatchNorm {name!r} is not frozen (it would normalise with batch statistics)"
        return None

    def set_train(self) -> None:
        """Train mode, except frozen BatchNorms: they normalise with and keep their running statistics."""
        self.model.train()
        for bn in self.frozen_bns:
            bn.eval()

    def _apply_lr(self) -> None:
        base = self.lrs[min(self.step_index, len(self.lrs) - 1)]
        for group in self.optimizer.param_groups:
            group["lr"] = group["lr_mult"] * base

    def _head_module(self) -> torch.nn.Module:
        return getattr(self.model, self.head)

    def _features(self, x: torch.Tensor) -> torch.Tensor:
        """The pooled trunk features: torchvision's own forward with the head swapped for an identity."""
        head = self._head_module()
        setattr(self.model, self.head, torch.nn.Identity())
        try:
            return self.model(x)
        finally:
            setattr(self.model, self.head, head)

    def _loss(self, outputs: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Cross-entropy, or for the digit adder the squared error of its one output against the sum."""
        if task_of(self.arch or "") == "digit_sum":
            return torch.nn.functional.mse_loss(outputs[:, 0], y.to(outputs.dtype))
        return torch.nn.functional.cross_entropy(outputs, y)

    def step_on(self, logits_of: Callable[[], torch.Tensor], y: torch.Tensor) -> float:
        """One optimizer step on the loss of ``logits_of()`` against ``y`` (this step's LR); returns the loss.
        torch only: parity's one-process reference of per-rank BatchNorm (``parity.data_parallel``) computes
        the logits its own way."""
        self._apply_lr()
        self.optimizer.zero_grad(set_to_none=True)
        loss = self._loss(logits_of(), y)
        loss.backward()
        self.optimizer.step()
        self.step_index += 1
        return float(loss.item())

    def train_step(self, x, y, want_features: bool = False) -> Tuple[float, Optional[np.ndarray]]:
        """One optimizer step (LR of this step from the schedule); returns the loss before the update. With a
        frozen trunk, the trunk runs without autograd and only the head is differentiated (same update)."""
        x, y = self._tensor(x), self._target(y)
        self.set_train()
        if self.frozen_trunk_reason() is None:
            with torch.no_grad():
                features = self._features(x)
            loss = self.step_on(lambda: self._head_net()(features), y)
            return loss, features.cpu().numpy() if want_features else None
        return self.step_on(lambda: self._net()(*_as_tuple(x)), y), None

    def extract(self, x) -> np.ndarray:
        self.set_train()  # frozen trunk: every BatchNorm is in eval mode
        with torch.no_grad():
            return self._features(self._tensor(x)).cpu().numpy()

    def head_step(self, features: np.ndarray, labels: np.ndarray) -> float:
        self.set_train()  # after head_logits' eval mode: a VGG head's Dropout trains
        f = self._tensor(features)
        return self.step_on(lambda: self._head_net()(f), self._target(labels))

    # --- inference and data ------------------------------------------------------------------------------
    def _tensor(self, x):
        """A batch as a tensor on the device (a pair batch: a tuple of two)."""
        if isinstance(x, (list, tuple)):
            return tuple(self._tensor(t) for t in x)
        t = x if isinstance(x, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(x, np.float32))
        return t.to(self.device)

    def _target(self, y) -> torch.Tensor:
        t = y if isinstance(y, torch.Tensor) else torch.from_numpy(np.asarray(y, np.int64))
        return t.to(self.device, torch.int64)

    def logits(self, x) -> np.ndarray:
        self.model.eval()
        with torch.no_grad():
            return self.model(*_as_tuple(self._tensor(x))).float().cpu().numpy()

    def trainable_batchnorms(self) -> List[str]:
        return batchnorm.trainable_batchnorms(self.model, self.frozen_bns)

    def batchnorm_moments(self, x) -> List[Tuple[str, int, np.ndarray, np.ndarray]]:
        inputs = _as_tuple(self._tensor(x))
        return batchnorm.batchnorm_moments(self.model, self.trainable_batchnorms(), lambda: self.model(*inputs))

    def set_batchnorm_statistics(self, stats: Mapping[str, Tuple[np.ndarray, np.ndarray]]) -> None:
        batchnorm.set_batchnorm_statistics(self.model, stats)

    def head_logits(self, features: np.ndarray) -> np.ndarray:
        self.model.eval()  # a VGG head holds Dropout layers
        with torch.no_grad():
            return self._head_module()(self._tensor(features)).float().cpu().numpy()

    def labels(self, y) -> np.ndarray:
        return (y.cpu().numpy() if isinstance(y, torch.Tensor) else np.asarray(y)).astype(np.int64)

    def images(self, x) -> np.ndarray:
        if isinstance(x, (list, tuple)):  # a pair: side by side
            return np.concatenate([self.images(t) for t in x], axis=3)
        return x.cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x, np.float32)

    def parameter_arrays(self) -> List[np.ndarray]:
        return [p.detach().cpu().numpy() for _, p in self.model.named_parameters()]

    def barrier(self) -> None:
        if self.dist.enabled:
            torch.distributed.barrier()

    def all_gather(self, array: np.ndarray) -> np.ndarray:
        t = torch.from_numpy(np.ascontiguousarray(array, np.float32))
        if not self.dist.enabled:
            return t.numpy()[None]
        parts = [torch.empty_like(t) for _ in range(self.dist.world_size)]
        torch.distributed.all_gather(parts, t)
        return torch.stack(parts).numpy()

    def trunk_arrays(self) -> Iterable[Tuple[str, np.ndarray]]:
        return [(k, v.detach().cpu().numpy()) for k, v in self.model.state_dict().items() if not self._is_head(k)]

    def head_arrays(self) -> List[Tuple[str, np.ndarray]]:
        return [(n, p.detach().cpu().numpy()) for n, p in self.model.named_parameters() if self._is_head(n)]

    def set_head_arrays(self, arrays: Mapping[str, np.ndarray]) -> None:
        params = {n: p for n, p in self.model.named_parameters() if self._is_head(n)}
        check_head_names(arrays, params)
        with torch.no_grad():
            for name, array in arrays.items():
                params[name].copy_(torch.from_numpy(np.asarray(array)).to(params[name].dtype))

    def loader(self, split: SplitScan, *, train: bool, shuffle: bool, seed: int):
        cfg = self.cfg
        return build_loader(split.samples, Preprocess.from_config(cfg), cfg.batch_size, train=train, shuffle=shuffle, seed=seed,
                            num_workers=cfg.num_workers, augment=cfg.augment, augment_shift=cfg.augment_shift)
