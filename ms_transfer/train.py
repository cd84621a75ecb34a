"""``python -m ms_transfer.train``: transfer learning (wolf vs dog by default) in MindSpore static graph.

One epoch: a compiled train step over the training set (tqdm bar), validation, ``metrics.jsonl``,
atomic ``last.ckpt`` (+ optimizer state) and ``best.ckpt`` (by val accuracy). ``--resume`` continues
from ``last.ckpt`` with the same data order as an uninterrupted run (data seeded by ``seed + epoch``).
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import List, Optional, Sequence

import mindspore as ms
import numpy as np
from mindspore import nn
from tqdm import tqdm

from .checkpoint import (CheckpointError, load_optimizer_state, load_pretrained, load_run_checkpoint,
                         save_run_checkpoint)
from .config import ConfigError, TrainConfig, resolve_config, save_config
from .context import set_context
from .data import DatasetError, check_same_classes, create_dataset
from .download import DownloadError
from .evaluate import evaluate_net
from .freeze import apply_freeze, lr_groups
from .models import create_model
from .optim import build_optimizer
from .plots import plot_curves, plot_predictions
from .recipe import (Stage, TrainingError, check_finite, check_run_dir, epoch_row, format_row, plan_stages,
                     prepare_data, pretrained_path, sample_per_class, stage_lrs, stage_of)

__all__ = ["Trainer", "TrainingError", "make_loss", "train", "main"]


def _datasets(cfg: TrainConfig, root: Path, epoch: int):
    return create_dataset(root, "train", cfg.image_size, cfg.batch_size, train=True, shuffle=True,
                          seed=cfg.seed + epoch, num_workers=cfg.num_workers)


def make_loss() -> nn.Cell:
    """Mean cross-entropy over integer labels, as ``torch.nn.functional.cross_entropy``.

    Not the tutorial's ``nn.SoftmaxCrossEntropyWithLogits(sparse=True)``: on CPU it returns ``inf`` once the
    target's softmax probability underflows (logits ~100 apart; measured: inf where torch gives 2933.5), which
    the NaN/Inf guard would stop on. ``nn.CrossEntropyLoss`` works in log-space like torch and stays finite.
    """
    return nn.CrossEntropyLoss(reduction="mean")


class Trainer:
    """The network and the compiled train step of the current stage (``python -m parity --train-steps``
    drives this same class on fixed batches)."""

    def __init__(self, cfg: TrainConfig, net: nn.Cell, steps_per_epoch: int) -> None:
        self.cfg, self.net, self.steps_per_epoch = cfg, net, steps_per_epoch
        self.loss_fn = make_loss()
        self.stage: Optional[Stage] = None

    def enter(self, stage: Stage, verbose: bool = True) -> None:
        """Apply the stage's freezing and build its optimizer (per-step LRs) and train step."""
        report = apply_freeze(self.net, stage.freeze, stage.unfreeze)
        if verbose:
            print(f"\nStage '{stage.name}' (epochs {stage.first_epoch}-{stage.last_epoch}):\n{report.table()}")
        params = self.net.trainable_params()
        if not params:
            raise TrainingError("the freeze patterns leave no trainable parameter; check --freeze/--unfreeze")
        self.optimizer = build_optimizer(self.cfg.optimizer, lr_groups(params, self.cfg.lr_mult),
                                         stage_lrs(self.cfg, stage, self.steps_per_epoch), self.cfg.momentum,
                                         self.cfg.weight_decay)
        self.compile_step()
        self.stage = stage

    def compile_step(self) -> None:
        """(Re)build the train step around ``self.optimizer``."""
        self.step = nn.TrainOneStepCell(nn.WithLossCell(self.net, self.loss_fn), self.optimizer)
        self.step.set_train(True)

    def train_step(self, x, y) -> float:
        """One optimizer step on a batch; returns the loss computed before the update."""
        return float(self.step(x, y).asnumpy())

    def train_epoch(self, dataset, epoch: int) -> dict:
        losses, images, start = [], 0, time.perf_counter()
        bar = tqdm(dataset.create_tuple_iterator(num_epochs=1), total=self.steps_per_epoch,
                   desc=f"epoch {epoch}/{self.cfg.epochs}", unit="batch", leave=False, disable=None)
        for x, y in bar:
            loss = self.train_step(x, y)
            check_finite(loss, epoch, len(losses))
            losses.append(loss)
            images += x.shape[0]
            bar.set_postfix(loss=f"{loss:.4f}")
        seconds = time.perf_counter() - start
        return {"train_loss": float(np.mean(losses)), "images_per_s": images / seconds, "train_seconds": seconds}


def _after_epoch(epoch: int) -> None:
    """Hook called after each epoch's checkpoints are written (tests use it to simulate a crash)."""


def train(cfg: TrainConfig) -> dict:
    """Run (or resume) training; returns a summary dict. See the module docstring."""
    set_context(cfg.mode, cfg.device)
    ms.set_seed(cfg.seed)
    out = Path(cfg.output_dir)
    last_ckpt = out / "last.ckpt"
    check_run_dir(out, last_ckpt, cfg.resume)
    root = prepare_data(cfg)
    classes = check_same_classes(root)
    out.mkdir(parents=True, exist_ok=True)
    save_config(cfg, out / "config.yaml")

    history: List[dict] = []
    best_acc, start_epoch, resumed = -1.0, 1, None
    if cfg.resume:
        net, resumed = load_run_checkpoint(last_ckpt)
        if resumed.meta["classes"] != classes or resumed.meta["arch"] != cfg.arch:
            raise TrainingError(f"--resume: {last_ckpt} is {resumed.meta['arch']} on {resumed.meta['classes']}, "
                                f"but this run is {cfg.arch} on {classes}")
        history = resumed.meta.get("history", [])
        best_acc = resumed.meta.get("best_acc", -1.0)
        start_epoch = resumed.meta["epoch"] + 1
        print(f"Resuming {out} after epoch {resumed.meta['epoch']}")
    else:
        net = create_model(cfg.arch, num_classes=len(classes))
        pretrained = pretrained_path(cfg)
        if pretrained:
            load_pretrained(net, pretrained)

    val_ds, val_info = create_dataset(root, "val", cfg.image_size, cfg.batch_size, train=False, shuffle=False,
                                      seed=cfg.seed, num_workers=cfg.num_workers,
                                      resize_backend=cfg.resize_backend)
    probe_ds, train_info = _datasets(cfg, root, 0)
    trainer = Trainer(cfg, net, probe_ds.get_dataset_size())
    stages = plan_stages(cfg)
    skipped = len(train_info.skipped) + len(val_info.skipped)
    meta = {"arch": cfg.arch, "classes": classes, "image_size": cfg.image_size, "config": cfg.to_dict()}

    for epoch in range(start_epoch, cfg.epochs + 1):
        stage = stage_of(stages, epoch)
        if trainer.stage is not stage:
            trainer.enter(stage)
            if resumed is not None and resumed.meta.get("stage") == stage.name and epoch == start_epoch:
                load_optimizer_state(trainer.optimizer, net, resumed.state)
        train_ds, _ = _datasets(cfg, root, epoch)
        train_result = trainer.train_epoch(train_ds, epoch)
        val = evaluate_net(net, val_ds)
        net.set_train(True)
        row = epoch_row(epoch, stage, train_result, val, skipped)
        history.append(row)
        print(format_row(row, cfg.epochs), flush=True)
        with open(out / "metrics.jsonl", "a") as f:
            f.write(json.dumps(row) + "\n")
        improved = row["val_acc"] > best_acc
        best_acc = max(best_acc, row["val_acc"])
        epoch_meta = {**meta, "epoch": epoch, "stage": stage.name, "metrics": row, "best_acc": best_acc,
                      "history": history}
        if improved:
            save_run_checkpoint(out / "best.ckpt", net, epoch_meta)
        save_run_checkpoint(last_ckpt, net, epoch_meta, optimizer=trainer.optimizer)
        _after_epoch(epoch)

    plot_curves(history, out / "curves.png")
    images, labels = sample_per_class(val_ds.create_tuple_iterator(num_epochs=1, output_numpy=True), len(classes),
                                      per_class=max(1, 8 // len(classes)))
    net.set_train(False)
    preds = net(ms.Tensor(images)).asnumpy().argmax(axis=1)
    plot_predictions(images, labels, preds, classes, out / "predictions.png")
    summary = {"run_dir": str(out), "best_val_acc": best_acc, "epochs": cfg.epochs, "skipped_files": skipped,
               "classes": classes}
    print(f"\nDone: best val accuracy {best_acc:.3f}; {skipped} unreadable file(s) skipped; run in {out} "
          "(best.ckpt, last.ckpt, metrics.jsonl, curves.png, predictions.png)")
    return summary


def main(argv: Optional[Sequence[str]] = None) -> int:
    """CLI entry point; bad input exits 2 with the reason, a failed run exits 1."""
    try:
        cfg = resolve_config(argv, description=__doc__)
        train(cfg)
    except (ConfigError, DatasetError, CheckpointError, DownloadError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except TrainingError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
