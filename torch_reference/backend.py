"""The torch backend of the training loop (:mod:`ms_transfer.core.loop`): real torchvision ResNets and VGGs, freezing by
the same patterns (matched on the MindSpore names of torchvision's parameters, through the one naming table),
frozen BatchNorms in eval mode, SGD/Adam with LR-multiplier groups and the shared per-step LRs, the frozen-trunk
fast path, torchvision transforms over the shared file scan, and ``.pth`` run checkpoints.

``python -m parity --train-steps`` drives this same class on fixed batches.
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

import numpy as np
import torch

from ms_transfer.core import naming
from ms_transfer.core.checkpoint_io import CheckpointError
from ms_transfer.core.config import ConfigError, TrainConfig
from ms_transfer.core.archs import head_module, task_of
from ms_transfer.core.tasks import NO_FAST_PATH
from ms_transfer.core.data import Preprocess, SplitScan
from ms_transfer.core.freeze import FreezeReport, freeze_report, is_frozen, lr_multiplier
from ms_transfer.core.recipe import Stage, TrainingError

from .checkpoint import load_pretrained, load_run_checkpoint, save_run_checkpoint
from .data import build_loader
from .models import build_model

__all__ = ["TorchBackend", "build_torch_optimizer", "torch_device"]


def torch_device(device: str) -> torch.device:
    """``CPU`` / ``GPU`` (the config's names) as a torch device; a clear error when CUDA is missing."""
    if device == "GPU":
        if not torch.cuda.is_available():
            raise ConfigError("device GPU requested but torch sees no CUDA device; use --device CPU")
        return torch.device("cuda")
    return torch.device("cpu")


def build_torch_optimizer(name: str, groups: Sequence[Dict], momentum: float,
                          weight_decay: float) -> torch.optim.Optimizer:
    """torch counterpart of ``ms_transfer.optim.build_optimizer`` (groups carry ``lr_mult``)."""
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

    # --- model -------------------------------------------------------------------------------------------
    def setup(self, cfg: TrainConfig) -> None:
        self.cfg = cfg
        self.device = torch_device(cfg.device)
        torch.manual_seed(cfg.seed)

    def version(self) -> str:
        return f"torch {torch.__version__}"

    def adopt(self, model: torch.nn.Module, arch: Optional[str] = None, padding: str = "torch") -> "TorchBackend":
        """Use an existing torchvision model (parity, evaluation) instead of building one; ``arch`` is needed
        for freezing and pretrained loading."""
        self.model, self.arch, self.padding = model.to(self.device), arch, padding
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

    @property
    def head(self) -> str:
        """The head module's name: ``fc`` (ResNets, seed networks) or ``classifier`` (VGG)."""
        return head_module(self.arch)

    def _is_head(self, name: str) -> bool:
        return name.startswith(self.head + ".")

    def frozen_trunk_reason(self) -> Optional[str]:
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

    def _step_on(self, logits_of, y: torch.Tensor) -> float:
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
            loss = self._step_on(lambda: self._head_module()(features), y)
            return loss, features.cpu().numpy() if want_features else None
        return self._step_on(lambda: self.model(*_as_tuple(x)), y), None

    def extract(self, x) -> np.ndarray:
        self.set_train()  # frozen trunk: every BatchNorm is in eval mode
        with torch.no_grad():
            return self._features(self._tensor(x)).cpu().numpy()

    def head_step(self, features: np.ndarray, labels: np.ndarray) -> float:
        self.set_train()  # after head_logits' eval mode: a VGG head's Dropout trains
        f = self._tensor(features)
        return self._step_on(lambda: self._head_module()(f), self._target(labels))

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

    def trunk_arrays(self) -> Iterable[Tuple[str, np.ndarray]]:
        return [(k, v.detach().cpu().numpy()) for k, v in self.model.state_dict().items() if not self._is_head(k)]

    def loader(self, split: SplitScan, *, train: bool, shuffle: bool, seed: int):
        cfg = self.cfg
        return build_loader(split.samples, Preprocess.from_config(cfg), cfg.batch_size, train=train, shuffle=shuffle, seed=seed,
                            num_workers=cfg.num_workers, augment=cfg.augment)
