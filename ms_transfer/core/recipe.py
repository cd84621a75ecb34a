"""The framework-neutral half of a training run, shared by ``ms_transfer.train`` and ``torch_reference.train``.

Everything here is plain Python (no MindSpore, no torch), so the two trainers cannot drift apart on:
the run-directory checks, data preparation, pretrained-weight resolution, the freezing stages, the
per-step learning rates, and the fields of a ``metrics.jsonl`` row.
"""
from __future__ import annotations

import logging
import math
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from .checkpoint_io import CheckpointError
from .config import ConfigError, TrainConfig, resolve_cli
from .arrays import SOURCES, ArrayDataError, download_idx, prepare_source
from .data import DatasetError, resolve_data_root
from .layout import find_dataset
from .demo_data import make_demo_dataset
from .download import FOLDER_DATASETS, DownloadError, download_dataset, download_file
from .freeze import head_patterns, strategy_patterns
from .log import setup_logging
from .runlock import RunDirInUse
from .weights import WeightsEntry, entry_for_url, resolve_pretrained, url_cache_path

log = logging.getLogger(__name__)

#: downloads, exported array datasets, trunk features (``MS_TRANSFER_CACHE`` moves it, e.g. for tests)
CACHE_DIR = Path(os.environ.get("MS_TRANSFER_CACHE", Path.home() / ".cache" / "ms_transfer"))
#: the fields of every ``metrics.jsonl`` row, in both frameworks
METRIC_FIELDS = ("epoch", "stage", "train_loss", "images_per_s", "train_seconds", "val_loss", "val_acc",
                 "skipped_files", "epoch_seconds")


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
    freeze, unfreeze = strategy_patterns(cfg.strategy, cfg.partial_from, cfg.arch)
    main = Stage(cfg.strategy, cfg.head_epochs + 1, cfg.epochs, freeze + cfg.freeze, unfreeze + cfg.unfreeze,
                 cfg.stage2_lr_scale if cfg.head_epochs else 1.0)
    if not cfg.head_epochs:
        return [main]
    return [Stage("head", 1, cfg.head_epochs, ["*"], head_patterns(cfg.arch), 1.0), main]


def stage_of(stages: Sequence[Stage], epoch: int) -> Stage:
    """The stage that trains ``epoch``."""
    return next(s for s in stages if s.first_epoch <= epoch <= s.last_epoch)


def lr_at(step: int, total_steps: int, steps_per_epoch: int, base_lr: float, schedule: str,
          step_size: int = 1, gamma: float = 0.1) -> float:
    """Learning rate of optimizer step ``step`` (0-based) of ``total_steps``; the same rule on both sides.

    ``constant``; ``step``: times ``gamma`` every ``step_size`` epochs; ``cosine``: per-step cosine decay
    from ``base_lr`` towards 0 (``torch.optim.lr_scheduler.CosineAnnealingLR`` with ``T_max=total_steps``).
    """
    if schedule == "constant":
        return base_lr
    if schedule == "step":
        return base_lr * gamma ** ((step // steps_per_epoch) // step_size)
    if schedule == "cosine":
        return base_lr * 0.5 * (1.0 + math.cos(math.pi * step / total_steps))
    raise ValueError(f"unknown schedule {schedule!r}; use constant, cosine or step")


def stage_lrs(cfg: TrainConfig, stage: Stage, steps_per_epoch: int) -> List[float]:
    """Base learning rate of every optimizer step of ``stage`` (multiply by a group's ``lr_mult``)."""
    total = (stage.last_epoch - stage.first_epoch + 1) * steps_per_epoch
    return [lr_at(s, total, steps_per_epoch, cfg.lr * stage.lr_scale, cfg.schedule, cfg.step_size, cfg.gamma)
            for s in range(total)]


#: the ``last`` checkpoint of each framework's runs, and the command that resumes it
RUN_MARKERS = {"last.ckpt": "python -m ms_transfer.train", "last.pth": "python -m torch_reference.train"}


def check_run_dir(out: Path, last_ckpt: Path, resume: bool) -> None:
    """Refuse to overwrite an existing run (of either framework) and to resume a run that does not exist."""
    other = [name for name in RUN_MARKERS if name != last_ckpt.name and (out / name).exists()]
    if other:
        raise TrainingError(f"{out} holds a run of the other framework ({other[0]}, resumed with "
                            f"{RUN_MARKERS[other[0]]}); choose another --output-dir (nothing was overwritten)")
    if last_ckpt.exists() and not resume:
        raise TrainingError(f"{out} already holds a run ({last_ckpt.name}); pass --resume to continue it or "
                            "choose another --output-dir (nothing was overwritten)")
    if resume and not last_ckpt.exists():
        raise TrainingError(f"--resume: {last_ckpt} not found; start without --resume")


#: config keys a ``--resume`` may change: where the data is, how it is read, how and where the run executes, and
#: ``epochs`` (larger: extend the run). Everything else shapes the model or the optimisation and must match.
RESUMABLE_KEYS = ("epochs", "resume", "data_dir", "download", "demo", "num_workers", "mode", "device",
                  "feature_cache", "compile_cache", "pretrained", "pretrained_url", "pretrained_exclude", "output_dir",
                  "tensorboard")


def check_resume(cfg: TrainConfig, meta: Dict, classes: List[str], last_ckpt: Path) -> int:
    """Check that ``cfg`` can continue the run saved in ``last_ckpt`` (``meta``); returns the first epoch to train.

    Raises :class:`TrainingError` naming the first key that differs from the saved run's config (other than
    :data:`RESUMABLE_KEYS`), and when the run already finished ``cfg.epochs`` epochs (pass a larger
    ``--epochs`` to extend it).
    """
    saved = meta.get("config", {})
    current = cfg.to_dict()
    if meta.get("classes") != classes:
        raise TrainingError(f"--resume: {last_ckpt} was trained on classes {meta.get('classes')}, but the data now "
                            f"has {classes}; resume with the same data or start a new run")
    for key, value in current.items():
        if key in RESUMABLE_KEYS or key not in saved:
            continue
        if saved[key] != value:
            raise TrainingError(f"--resume: {key} is {value!r} but the run in {last_ckpt.parent} was trained with "
                                f"{key}={saved[key]!r}; only {', '.join(RESUMABLE_KEYS[:1] + RESUMABLE_KEYS[2:])} "
                                f"may change on resume. Drop the {key} change, or start a new run in another "
                                "--output-dir (nothing was changed)")
    done = int(meta["epoch"])
    if cfg.epochs <= done:
        raise TrainingError(f"--resume: the run in {last_ckpt.parent} has already trained {done} epoch(s) and "
                            f"--epochs is {cfg.epochs}; pass --epochs N with N > {done} to extend it")
    return done + 1


def prepare_data(cfg: TrainConfig) -> Path:
    """Generate (``demo``), download (``download``) or export (an array ``dataset``) the dataset if asked; return
    the dataset root (the folder with ``train/`` and ``val/``, or a plain folder of class folders)."""
    data_dir = Path(cfg.data_dir)
    if cfg.dataset in SOURCES:
        try:
            if cfg.download:
                download_idx(cfg.dataset, data_dir)
            return prepare_source(cfg.dataset, cfg.holdout_fraction(False), CACHE_DIR / "datasets",
                                  data_dir if data_dir.is_dir() else None, cfg.dataset_classes)
        except ArrayDataError as exc:
            raise DatasetError(f"dataset {cfg.dataset}: {exc}") from None
    if cfg.demo:
        make_demo_dataset(data_dir, n_train_per_class=64, n_val_per_class=16, image_size=max(cfg.image_size, 64),
                          seed=cfg.seed)
    elif cfg.download:
        download_dataset("canidae" if cfg.dataset == "folder" else cfg.dataset, data_dir)
    elif cfg.dataset in FOLDER_DATASETS:
        try:
            return resolve_data_root(data_dir)
        except DatasetError as exc:
            raise DatasetError(f"{exc}\nDataset {cfg.dataset}: pass --download to fetch it ({FOLDER_DATASETS[cfg.dataset][0]}) "
                               f"into {data_dir}") from None
    return find_dataset(data_dir)[0]


def pretrained_weights(cfg: TrainConfig) -> Tuple[Optional[str], Optional[WeightsEntry]]:
    """``(local path, weights entry)`` of the run's starting weights (``(None, None)``: random init).

    ``pretrained`` is a file or an entry of the weights table (downloaded once, verified); ``pretrained_url``
    is the entry with that URL if there is one, else a plain download cached under the whole URL.
    """
    if cfg.pretrained:
        return resolve_pretrained(cfg.pretrained, CACHE_DIR)
    if cfg.pretrained_url:
        entry = entry_for_url(cfg.pretrained_url)
        if entry is not None:
            return resolve_pretrained(entry.name, CACHE_DIR)
        target = url_cache_path(cfg.pretrained_url, CACHE_DIR)
        if not target.exists():
            download_file(cfg.pretrained_url, target)
        return str(target), None
    return None, None


def check_finite(loss: float, epoch: int, steps_done: int) -> None:
    """Stop on a NaN/Inf loss (the last good checkpoint stays)."""
    if not math.isfinite(loss):
        raise TrainingError(f"epoch {epoch}: loss became {loss} after {steps_done} steps; stopping. "
                            "The last good checkpoint is kept; lower --lr or check the data.")


def epoch_row(epoch: int, stage: Stage, train: Dict, val: Dict, skipped: int) -> Dict:
    """One ``metrics.jsonl`` row (fields :data:`METRIC_FIELDS`) from the train and val results."""
    row = {"epoch": epoch, "stage": stage.name, "train_loss": train["train_loss"],
           "images_per_s": train["images_per_s"], "train_seconds": train["train_seconds"],
           "val_loss": val["loss"], "val_acc": val["accuracy"], "skipped_files": skipped}
    row["epoch_seconds"] = row["train_seconds"] + val.get("seconds", 0.0)
    return row


def format_row(row: Dict, epochs: int) -> str:
    """The one-line epoch summary printed by both trainers."""
    return (f"epoch {row['epoch']}/{epochs} [{row['stage']}] train loss {row['train_loss']:.4f} | val loss "
            f"{row['val_loss']:.4f} acc {row['val_acc']:.3f} | {row['images_per_s']:.1f} img/s | "
            f"{row['epoch_seconds']:.1f} s")


def sample_per_class(batches, num_classes: int, per_class: int):
    """Up to ``per_class`` images of every class from numpy ``(images, labels)`` batches (for the plot)."""
    picked: Dict[int, list] = {c: [] for c in range(num_classes)}
    for x, y in batches:
        for image, label in zip(x, y):
            if len(picked[int(label)]) < per_class:
                picked[int(label)].append(image)
        if all(len(v) == per_class for v in picked.values()):
            break
    pairs = [(image, c) for c in picked for image in picked[c]]
    return np.stack([p[0] for p in pairs]), np.array([p[1] for p in pairs])


def run_summary(out: Path, best_acc: float, cfg: TrainConfig, skipped: int, classes: List[str], ext: str) -> Dict:
    """Report the closing line of a run and return its summary dict (same fields in both frameworks)."""
    log.info(f"\nDone: best val accuracy {best_acc:.3f}; {skipped} unreadable file(s) skipped; run in {out} "
          f"(best.{ext}, last.{ext}, metrics.jsonl, curves.png, predictions.png)")
    return {"run_dir": str(out), "best_val_acc": best_acc, "epochs": cfg.epochs, "skipped_files": skipped,
            "classes": classes}


def cli_main(train: Callable[[TrainConfig], Dict], argv: Optional[Sequence[str]], prog: str, description: str) -> int:
    """Both trainers' CLI: resolve the config, train; bad input exits 2 with the reason, a failed run exits 1."""
    try:
        cfg, level = resolve_cli(argv, prog=prog, description=description)
        setup_logging(level)
        train(cfg)
    except (ConfigError, DatasetError, CheckpointError, DownloadError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except (TrainingError, RunDirInUse) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0
