"""``python -m torch_reference.train``: the same run in PyTorch - real torchvision ResNets, same config files
and flags as ``python -m ms_transfer.train``.

Shared with the MindSpore trainer (``ms_transfer.recipe``, ``ms_transfer.freeze``, ``ms_transfer.config``):
the config schema, data preparation, freezing patterns (matched on the MindSpore names of torchvision's
parameters, translated through ``ms_transfer.naming``, so ``--unfreeze 'fc.*' 'layer4.*'`` selects the same
layers), frozen-BN semantics (a BatchNorm whose weight and bias are frozen runs in eval mode), per-pattern LR
multipliers, per-step LR schedules and the ``metrics.jsonl`` fields. Artifacts: ``config.yaml``,
``metrics.jsonl``, ``best.pth``, ``last.pth`` (+ optimizer state), ``curves.png``, ``predictions.png``.
``augment`` is honoured (``none``: train on the deterministic val transform). ``mode`` (GRAPH/PYNATIVE),
``feature_cache`` and ``cache_views`` are MindSpore settings and are ignored here (a frozen trunk's backward is
skipped by autograd anyway); torch always resizes with Pillow.
"""
from __future__ import annotations

import sys
import time
from collections import OrderedDict
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np
import torch
from tqdm import tqdm

from ms_transfer import naming, release_onednn_cap
from ms_transfer.checkpoint_io import CheckpointError
from ms_transfer.config import TrainConfig, save_config
from ms_transfer.data import check_same_classes
from ms_transfer.freeze import freeze_report, is_frozen, lr_multiplier
from ms_transfer.plots import plot_curves, plot_predictions
from ms_transfer.recipe import (Stage, TrainingError, check_finite, check_run_dir, cli_main, epoch_row,
                                plan_stages, prepare_data, pretrained_path, record_epoch, run_summary,
                                sample_per_class, stage_lrs, stage_of)

from .checkpoint import load_pretrained, load_run_checkpoint, save_run_checkpoint
from .data import create_loader
from .evaluate import evaluate_model, torch_device
from .models import build_model

__all__ = ["TorchTrainer", "build_torch_optimizer", "train", "main"]


def build_torch_optimizer(name: str, groups: Sequence[Dict], momentum: float,
                          weight_decay: float) -> torch.optim.Optimizer:
    """torch counterpart of ``ms_transfer.optim.build_optimizer`` (groups carry ``lr_mult``)."""
    if name in ("momentum", "sgd"):  # nn.Momentum and nn.SGD (dampening 0) both follow torch SGD's rule
        return torch.optim.SGD(groups, lr=0.0, momentum=momentum, weight_decay=weight_decay)
    if name == "adam":
        return torch.optim.Adam(groups, lr=0.0, weight_decay=weight_decay)
    raise ValueError(f"unknown optimizer {name!r}; use momentum, sgd or adam")


class TorchTrainer:
    """The model, its freezing and optimizer for the current stage; mirrors ``ms_transfer.train.Trainer``."""

    def __init__(self, cfg: TrainConfig, model: torch.nn.Module, steps_per_epoch: int) -> None:
        self.cfg, self.model, self.steps_per_epoch = cfg, model, steps_per_epoch
        # patterns are written in MindSpore names: translate torchvision's through the one mapping table
        self.ms_names = naming.name_map(cfg.arch, "torchvision", "ms_transfer")
        self.stage: Optional[Stage] = None
        self.step_index = 0
        self.frozen_bns: List[torch.nn.Module] = []

    def enter(self, stage: Stage, verbose: bool = True) -> None:
        """Freeze by pattern (frozen BNs go to eval mode) and build the stage's optimizer."""
        entries, groups = [], OrderedDict()
        for name, p in self.model.named_parameters():
            ms_name = self.ms_names[name]
            p.requires_grad_(not is_frozen(ms_name, stage.freeze, stage.unfreeze))
            entries.append((ms_name, p.numel(), p.requires_grad))
            if p.requires_grad:
                groups.setdefault(lr_multiplier(ms_name, self.cfg.lr_mult), []).append(p)
        self.frozen_bns = [m for m in self.model.modules() if isinstance(m, torch.nn.BatchNorm2d)
                           and not (m.weight.requires_grad or m.bias.requires_grad)]
        if verbose:
            report = freeze_report(entries, len(self.frozen_bns))
            print(f"\nStage '{stage.name}' (epochs {stage.first_epoch}-{stage.last_epoch}):\n{report.table()}")
        if not groups:
            raise TrainingError("the freeze patterns leave no trainable parameter; check --freeze/--unfreeze")
        self.lrs = stage_lrs(self.cfg, stage, self.steps_per_epoch)
        self.optimizer = build_torch_optimizer(
            self.cfg.optimizer, [{"params": ps, "lr_mult": m} for m, ps in groups.items()], self.cfg.momentum,
            self.cfg.weight_decay)
        self.step_index = 0
        self.stage = stage

    def set_train(self) -> None:
        """Train mode, except frozen BatchNorms: they normalise with and keep their running statistics."""
        self.model.train()
        for bn in self.frozen_bns:
            bn.eval()

    def train_step(self, x: torch.Tensor, y: torch.Tensor) -> float:
        """One optimizer step (LR of this step from the schedule); returns the loss before the update."""
        self.set_train()
        base = self.lrs[min(self.step_index, len(self.lrs) - 1)]
        for group in self.optimizer.param_groups:
            group["lr"] = group["lr_mult"] * base
        self.optimizer.zero_grad(set_to_none=True)
        loss = torch.nn.functional.cross_entropy(self.model(x), y)
        loss.backward()
        self.optimizer.step()
        self.step_index += 1
        return float(loss.item())

    def train_epoch(self, loader, epoch: int, device: torch.device) -> dict:
        losses, images, start = [], 0, time.perf_counter()
        bar = tqdm(loader, total=self.steps_per_epoch, desc=f"epoch {epoch}/{self.cfg.epochs}", unit="batch",
                   leave=False, disable=None)
        for x, y in bar:
            loss = self.train_step(x.to(device), y.to(device))
            check_finite(loss, epoch, len(losses))
            losses.append(loss)
            images += x.shape[0]
            bar.set_postfix(loss=f"{loss:.4f}")
        seconds = time.perf_counter() - start
        return {"train_loss": float(np.mean(losses)), "images_per_s": images / seconds, "train_seconds": seconds}


def _train_loader(cfg: TrainConfig, root: Path, epoch: int):
    # random augmentations draw from torch's RNG: seed it per epoch like the loader's shuffle (resumable)
    torch.manual_seed(cfg.seed + epoch)
    return create_loader(root, "train", cfg.image_size, cfg.batch_size, train=True, shuffle=True,
                         seed=cfg.seed + epoch, num_workers=cfg.num_workers, augment=cfg.augment)


def train(cfg: TrainConfig) -> dict:
    """Run (or resume) training in PyTorch; returns the same summary dict as ``ms_transfer.train.train``."""
    device = torch_device(cfg.device)
    torch.manual_seed(cfg.seed)
    out = Path(cfg.output_dir)
    last_ckpt = out / "last.pth"
    check_run_dir(out, last_ckpt, cfg.resume)
    root = prepare_data(cfg)
    classes = check_same_classes(root)
    out.mkdir(parents=True, exist_ok=True)
    save_config(cfg, out / "config.yaml")

    history: List[dict] = []
    best_acc, start_epoch, resumed, raw = -1.0, 1, None, {}
    if cfg.resume:
        model, resumed, raw = load_run_checkpoint(last_ckpt)
        if resumed["classes"] != classes or resumed["arch"] != cfg.arch:
            raise TrainingError(f"--resume: {last_ckpt} is {resumed['arch']} on {resumed['classes']}, "
                                f"but this run is {cfg.arch} on {classes}")
        history, best_acc, start_epoch = resumed.get("history", []), resumed.get("best_acc", -1.0), resumed["epoch"] + 1
        print(f"Resuming {out} after epoch {resumed['epoch']}")
    else:
        model = build_model(cfg.arch, num_classes=len(classes))
        pretrained = pretrained_path(cfg)
        if pretrained:
            load_pretrained(model, pretrained, cfg.arch)
    model.to(device)

    val_loader, val_info = create_loader(root, "val", cfg.image_size, cfg.batch_size, train=False, shuffle=False,
                                         seed=cfg.seed, num_workers=cfg.num_workers)
    probe, train_info = _train_loader(cfg, root, 0)
    trainer = TorchTrainer(cfg, model, len(probe))
    stages = plan_stages(cfg)
    skipped = len(train_info.skipped) + len(val_info.skipped)
    meta = {"arch": cfg.arch, "classes": classes, "image_size": cfg.image_size, "config": cfg.to_dict()}

    for epoch in range(start_epoch, cfg.epochs + 1):
        stage = stage_of(stages, epoch)
        if trainer.stage is not stage:
            trainer.enter(stage)
            if resumed is not None and resumed.get("stage") == stage.name and epoch == start_epoch:
                try:
                    trainer.optimizer.load_state_dict(raw["optimizer"])
                except (KeyError, ValueError) as exc:
                    raise CheckpointError(f"{last_ckpt}: optimizer state does not fit this run ({exc}); the "
                                          "optimizer settings changed since it was saved - start a new run") from None
                trainer.step_index = int(raw["step"])
        train_loader, _ = _train_loader(cfg, root, epoch)
        train_result = trainer.train_epoch(train_loader, epoch, device)
        val = evaluate_model(model, val_loader, len(classes))
        row = epoch_row(epoch, stage, train_result, val, skipped)
        epoch_meta, improved, best_acc = record_epoch(out, history, row, meta, best_acc, cfg.epochs)
        if improved:
            save_run_checkpoint(out / "best.pth", model, epoch_meta)
        save_run_checkpoint(last_ckpt, model, epoch_meta, optimizer=trainer.optimizer, step=trainer.step_index)
        _after_epoch(epoch)

    plot_curves(history, out / "curves.png")
    batches = ((x.numpy(), y.numpy()) for x, y in val_loader)
    images, labels = sample_per_class(batches, len(classes), per_class=max(1, 8 // len(classes)))
    model.eval()
    with torch.no_grad():
        preds = model(torch.from_numpy(images).to(device)).argmax(dim=1).cpu().numpy()
    plot_predictions(images, labels, preds, classes, out / "predictions.png")
    return run_summary(out, best_acc, cfg, skipped, classes, "pth")


def _after_epoch(epoch: int) -> None:
    """Hook called after each epoch's checkpoints are written (tests use it to simulate a crash)."""


def main(argv: Optional[Sequence[str]] = None) -> int:
    """CLI entry point; bad input exits 2 with the reason, a failed run exits 1."""
    release_onednn_cap()  # a torch-only process: let torch use AVX-512 (see ms_transfer/__init__.py)
    return cli_main(train, argv, "python -m torch_reference.train", __doc__)


if __name__ == "__main__":
    sys.exit(main())
