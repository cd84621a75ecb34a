"""``python -m ms_transfer.train``: transfer learning (wolf vs dog by default) in MindSpore static graph.

One epoch: a compiled train step over the training set (tqdm bar), validation, ``metrics.jsonl``,
atomic ``last.ckpt`` (+ optimizer state) and ``best.ckpt`` (by val accuracy). ``--resume`` continues
from ``last.ckpt`` with the same data order as an uninterrupted run (data seeded by ``seed + epoch``).
"""
from __future__ import annotations

import json
import math
import sys
import time
from dataclasses import dataclass
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
from .data import DatasetError, check_same_classes, create_dataset, resolve_data_root
from .download import DownloadError
from .evaluate import evaluate_net
from .freeze import apply_freeze, lr_groups, strategy_patterns
from .models import create_model
from .optim import build_optimizer, lr_at
from .plots import plot_curves, plot_predictions

CACHE_DIR = Path.home() / ".cache" / "ms_transfer"


class TrainingError(RuntimeError):
    """The run cannot continue (non-finite loss, an existing run in the way, ...)."""


@dataclass
class Stage:
    """A span of epochs with one freezing spec and LR scale (two-stage schedules have two)."""

    name: str
    first_epoch: int  # 1-based, inclusive
    last_epoch: int
    freeze: List[str]
    unfreeze: List[str]
    lr_scale: float


def plan_stages(cfg: TrainConfig) -> List[Stage]:
    """Head-only stage (``head_epochs``) then the configured freezing, or a single stage."""
    freeze, unfreeze = strategy_patterns(cfg.strategy, cfg.partial_from)
    main = Stage(cfg.strategy, cfg.head_epochs + 1, cfg.epochs, freeze + cfg.freeze, unfreeze + cfg.unfreeze,
                 cfg.stage2_lr_scale if cfg.head_epochs else 1.0)
    if not cfg.head_epochs:
        return [main]
    return [Stage("head", 1, cfg.head_epochs, ["*"], ["fc.*"], 1.0), main]


def _prepare_data(cfg: TrainConfig) -> Path:
    data_dir = Path(cfg.data_dir)
    if cfg.demo:
        from .demo_data import make_demo_dataset
        make_demo_dataset(data_dir, n_train_per_class=64, n_val_per_class=16, image_size=max(cfg.image_size, 64),
                          seed=cfg.seed)
    elif cfg.download:
        from .download import download_canidae
        download_canidae(data_dir)
    return resolve_data_root(data_dir)


def _pretrained_path(cfg: TrainConfig) -> Optional[str]:
    if cfg.pretrained:
        return cfg.pretrained
    if cfg.pretrained_url:
        from .download import download_file
        target = CACHE_DIR / Path(cfg.pretrained_url.split("?")[0]).name
        if not target.exists():
            download_file(cfg.pretrained_url, target)
        return str(target)
    return None


def _datasets(cfg: TrainConfig, root: Path, epoch: int):
    train_ds, train_info = create_dataset(root, "train", cfg.image_size, cfg.batch_size, train=True, shuffle=True,
                                          seed=cfg.seed + epoch, num_workers=cfg.num_workers)
    return train_ds, train_info


def _stage_of(stages: Sequence[Stage], epoch: int) -> Stage:
    return next(s for s in stages if s.first_epoch <= epoch <= s.last_epoch)


class _Trainer:
    """Holds the network and the compiled train step of the current stage."""

    def __init__(self, cfg: TrainConfig, net: nn.Cell, steps_per_epoch: int) -> None:
        self.cfg, self.net, self.steps_per_epoch = cfg, net, steps_per_epoch
        self.loss_fn = nn.SoftmaxCrossEntropyWithLogits(sparse=True, reduction="mean")
        self.stage: Optional[Stage] = None

    def enter(self, stage: Stage) -> None:
        report = apply_freeze(self.net, stage.freeze, stage.unfreeze)
        print(f"\nStage '{stage.name}' (epochs {stage.first_epoch}-{stage.last_epoch}):\n{report.table()}")
        params = self.net.trainable_params()
        if not params:
            raise TrainingError("the freeze patterns leave no trainable parameter; check --freeze/--unfreeze")
        total = (stage.last_epoch - stage.first_epoch + 1) * self.steps_per_epoch
        base = [lr_at(s, total, self.steps_per_epoch, self.cfg.lr * stage.lr_scale, self.cfg.schedule,
                      self.cfg.step_size, self.cfg.gamma) for s in range(total)]
        self.optimizer = build_optimizer(self.cfg.optimizer, lr_groups(params, self.cfg.lr_mult), base,
                                         self.cfg.momentum, self.cfg.weight_decay)
        self.step = nn.TrainOneStepCell(nn.WithLossCell(self.net, self.loss_fn), self.optimizer)
        self.step.set_train(True)
        self.stage = stage

    def train_epoch(self, dataset, epoch: int) -> dict:
        losses, images, start = [], 0, time.perf_counter()
        bar = tqdm(dataset.create_tuple_iterator(num_epochs=1), total=self.steps_per_epoch,
                   desc=f"epoch {epoch}/{self.cfg.epochs}", unit="batch", leave=False, disable=None)
        for x, y in bar:
            loss = float(self.step(x, y).asnumpy())
            if not math.isfinite(loss):
                raise TrainingError(f"epoch {epoch}: loss became {loss} after {len(losses)} steps; stopping. "
                                    "The last good checkpoint is kept; lower --lr or check the data.")
            losses.append(loss)
            images += x.shape[0]
            bar.set_postfix(loss=f"{loss:.4f}")
        seconds = time.perf_counter() - start
        return {"train_loss": float(np.mean(losses)), "images_per_s": images / seconds, "train_seconds": seconds}


def _sample_per_class(dataset, num_classes: int, per_class: int):
    """Up to ``per_class`` validation images of every class (the val set is ordered by class)."""
    picked = {c: [] for c in range(num_classes)}
    for x, y in dataset.create_tuple_iterator(num_epochs=1, output_numpy=True):
        for image, label in zip(x, y):
            if len(picked[int(label)]) < per_class:
                picked[int(label)].append(image)
        if all(len(v) == per_class for v in picked.values()):
            break
    pairs = [(image, c) for c in picked for image in picked[c]]
    return np.stack([p[0] for p in pairs]), np.array([p[1] for p in pairs])


def _after_epoch(epoch: int) -> None:
    """Hook called after each epoch's checkpoints are written (tests use it to simulate a crash)."""


def train(cfg: TrainConfig) -> dict:
    """Run (or resume) training; returns a summary dict. See the module docstring."""
    set_context(cfg.mode, cfg.device)
    ms.set_seed(cfg.seed)
    out = Path(cfg.output_dir)
    last_ckpt = out / "last.ckpt"
    if last_ckpt.exists() and not cfg.resume:
        raise TrainingError(f"{out} already holds a run (last.ckpt); pass --resume to continue it or choose "
                            "another --output-dir (nothing was overwritten)")
    if cfg.resume and not last_ckpt.exists():
        raise TrainingError(f"--resume: {last_ckpt} not found; start without --resume")
    root = _prepare_data(cfg)
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
        pretrained = _pretrained_path(cfg)
        if pretrained:
            load_pretrained(net, pretrained)

    val_ds, val_info = create_dataset(root, "val", cfg.image_size, cfg.batch_size, train=False, shuffle=False,
                                      seed=cfg.seed, num_workers=cfg.num_workers)
    probe_ds, train_info = _datasets(cfg, root, 0)
    trainer = _Trainer(cfg, net, probe_ds.get_dataset_size())
    stages = plan_stages(cfg)
    skipped = len(train_info.skipped) + len(val_info.skipped)
    meta = {"arch": cfg.arch, "classes": classes, "image_size": cfg.image_size, "config": cfg.to_dict()}

    for epoch in range(start_epoch, cfg.epochs + 1):
        stage = _stage_of(stages, epoch)
        if trainer.stage is not stage:
            trainer.enter(stage)
            if resumed is not None and resumed.meta.get("stage") == stage.name and epoch == start_epoch:
                load_optimizer_state(trainer.optimizer, net, resumed.state)
        train_ds, _ = _datasets(cfg, root, epoch)
        row = {"epoch": epoch, "stage": stage.name, **trainer.train_epoch(train_ds, epoch)}
        val = evaluate_net(net, val_ds)
        net.set_train(True)
        row.update(val_loss=val["loss"], val_acc=val["accuracy"], skipped_files=skipped)
        row["epoch_seconds"] = row["train_seconds"] + val.get("seconds", 0.0)
        history.append(row)
        print(f"epoch {epoch}/{cfg.epochs} [{stage.name}] train loss {row['train_loss']:.4f} | val loss "
              f"{row['val_loss']:.4f} acc {row['val_acc']:.3f} | {row['images_per_s']:.1f} img/s | "
              f"{row['epoch_seconds']:.1f} s", flush=True)
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
    images, labels = _sample_per_class(val_ds, len(classes), per_class=max(1, 8 // len(classes)))
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
