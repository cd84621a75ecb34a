"""``python -m ms_transfer.train``: transfer learning (wolf vs dog by default) in MindSpore static graph.

One epoch: a compiled train step over the training set (tqdm bar), validation, ``metrics.jsonl``,
atomic ``last.ckpt`` (+ optimizer state) and ``best.ckpt`` (by val accuracy). ``--resume`` continues
from ``last.ckpt`` with the same data order as an uninterrupted run (data seeded by ``seed + epoch``).

Frozen trunk (only ``fc`` trains: ``fixed_feature``, the head-only stage, or equivalent patterns): the trunk
runs as pure inference and only the head takes a train step (:class:`ms_transfer.features.FrozenTrunkStep`).
With ``feature_cache: auto`` the trunk features are also cached (:class:`ms_transfer.features.FeatureCache`):
always for the val set, and for the train set when its transform is deterministic (``augment: none``) or
``cache_views`` > 0; cached epochs train the head on exactly the batches an uncached epoch would use.
"""
from __future__ import annotations

import sys
import time
import warnings
from pathlib import Path
from typing import List, Optional, Sequence

import mindspore as ms
import numpy as np
from mindspore import nn
from tqdm import tqdm

from . import recipe
from .checkpoint import load_optimizer_state, load_pretrained, load_run_checkpoint, save_run_checkpoint
from .config import TrainConfig, save_config
from .context import set_context
from .data import batch_indices, check_same_classes, create_dataset
from .evaluate import evaluate_net
from .features import FeatureCache, FeatureCollector, FrozenTrunkStep, frozen_trunk_reason, head_metrics
from .freeze import apply_freeze, lr_groups
from .models import create_model
from .optim import build_optimizer
from .plots import plot_curves, plot_predictions
from .recipe import (Stage, TrainingError, check_finite, check_run_dir, cli_main, epoch_row, plan_stages,
                     prepare_data, pretrained_path, record_epoch, run_summary, sample_per_class, stage_lrs,
                     stage_of)

__all__ = ["Trainer", "TrainingError", "make_loss", "train", "main"]


def _datasets(cfg: TrainConfig, root: Path, epoch: int):
    return create_dataset(root, "train", cfg.image_size, cfg.batch_size, train=True, shuffle=True,
                          seed=cfg.seed + epoch, num_workers=cfg.num_workers, resize_backend=cfg.resize_backend,
                          augment=cfg.augment)


def make_loss() -> nn.Cell:
    """Mean cross-entropy over integer labels, as ``torch.nn.functional.cross_entropy``.

    Not the tutorial's ``nn.SoftmaxCrossEntropyWithLogits(sparse=True)``: on CPU it returns ``inf`` once the
    target's softmax probability underflows (logits ~100 apart; measured: inf where torch gives 2933.5), which
    the NaN/Inf guard would stop on. ``nn.CrossEntropyLoss`` works in log-space like torch and stays finite.
    """
    return nn.CrossEntropyLoss(reduction="mean")


class Trainer:
    """The network and the compiled train step of the current stage (``python -m parity --train-steps``
    drives this same class on fixed batches).

    When the stage leaves only ``fc`` trainable, :attr:`fast` is a :class:`FrozenTrunkStep` and
    :meth:`train_step` uses it (trunk inference + head step), falling back to the full-net cell
    :attr:`step` if the freezing changes so that the two would differ (a trunk BatchNorm put back into
    batch-statistics mode, a trunk parameter made trainable).
    """

    def __init__(self, cfg: TrainConfig, net: nn.Cell, steps_per_epoch: int) -> None:
        self.cfg, self.net, self.steps_per_epoch = cfg, net, steps_per_epoch
        self.loss_fn = make_loss()
        self.stage: Optional[Stage] = None
        self.fast: Optional[FrozenTrunkStep] = None
        #: trunk features of the last :meth:`train_step` on the fast path (``None`` on the full-net path)
        self.last_features = None
        #: fast path as two graphs, trunk then head (set while filling the feature cache, see train_epoch)
        self.split_fast_step = False
        self._fallback_reported = False

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
        self.stage = stage
        self.compile_step()
        if verbose and self.fast is not None:
            print("Frozen trunk: it runs as inference (no backward, BatchNorm moving statistics); only fc trains")

    def compile_step(self) -> None:
        """(Re)build the train step(s) around ``self.optimizer``."""
        self.step = nn.TrainOneStepCell(nn.WithLossCell(self.net, self.loss_fn), self.optimizer)
        self.step.set_train(True)
        self.fast = FrozenTrunkStep(self.net, self.optimizer, self.loss_fn) \
            if frozen_trunk_reason(self.net) is None else None
        self._fallback_reported = False

    def fast_ready(self) -> bool:
        """Whether :attr:`fast` exists and still matches the net's freezing (reported once if not)."""
        if self.fast is None:
            return False
        reason = self.fast.ready()
        if reason and not self._fallback_reported:
            self._fallback_reported = True
            warnings.warn(f"frozen-trunk fast path off: {reason}; training through the full network instead")
        return reason is None

    def train_step(self, x, y) -> float:
        """One optimizer step on a batch; returns the loss computed before the update."""
        if self.fast_ready():
            if self.split_fast_step:
                self.last_features = self.fast.extract(x)
                return float(self.fast.head_step(self.last_features, y).asnumpy())
            loss, self.last_features = self.fast.step(x, y)
            return float(loss.asnumpy())
        self.last_features = None
        return float(self.step(x, y).asnumpy())

    def train_epoch(self, dataset, epoch: int, collector: Optional[FeatureCollector] = None) -> dict:
        """One pass over ``dataset``; ``collector`` (optional) receives every batch's trunk features."""
        # Filling the cache: run the trunk-only and head-only graphs that the val pass and the cached epochs use
        # anyway, instead of the fused trunk + head graph, so that no graph is compiled only for this epoch and
        # none is left to compile in the first cached epoch (measured, ResNet50: ~1 s of head-graph compilation,
        # 7x slower than a compiled cached epoch). Same updates either way.
        self.split_fast_step = collector is not None
        losses, images, start = [], 0, time.perf_counter()
        bar = tqdm(dataset.create_tuple_iterator(num_epochs=1), total=self.steps_per_epoch,
                   desc=f"epoch {epoch}/{self.cfg.epochs}", unit="batch", leave=False, disable=None)
        for x, y in bar:
            loss = self.train_step(x, y)
            check_finite(loss, epoch, len(losses))
            if collector is not None:
                features = self.last_features
                collector.add(None if features is None else features.asnumpy(), y.asnumpy())
            losses.append(loss)
            images += x.shape[0]
            bar.set_postfix(loss=f"{loss:.4f}")
        self.split_fast_step = False
        return _epoch_result(losses, images, time.perf_counter() - start)

    def train_cached_epoch(self, features: np.ndarray, labels: np.ndarray, batches: Sequence[np.ndarray],
                           epoch: int) -> dict:
        """One epoch of head steps on cached trunk features, batch ``i`` being ``features[batches[i]]``."""
        losses, images, start = [], 0, time.perf_counter()
        bar = tqdm(batches, total=len(batches), desc=f"epoch {epoch}/{self.cfg.epochs} (cached features)",
                   unit="batch", leave=False, disable=None)
        for index in bar:
            loss = float(self.fast.head_step(ms.Tensor(np.ascontiguousarray(features[index])),
                                             ms.Tensor(labels[index])).asnumpy())
            check_finite(loss, epoch, len(losses))
            losses.append(loss)
            images += len(index)
            bar.set_postfix(loss=f"{loss:.4f}")
        return _epoch_result(losses, images, time.perf_counter() - start)


def _epoch_result(losses: List[float], images: int, seconds: float) -> dict:
    return {"train_loss": float(np.mean(losses)), "images_per_s": images / seconds, "train_seconds": seconds}


def _feature_cache(cfg: TrainConfig, trainer: Trainer, train_samples, val_samples) -> Optional[FeatureCache]:
    """The stage's feature cache, or ``None`` (trunk not frozen, or ``feature_cache: off``)."""
    if trainer.fast is None:
        return None
    if cfg.feature_cache == "off":
        print("Feature cache: off (feature_cache=off); the frozen trunk runs as inference every epoch")
        return None
    cache = FeatureCache.for_config(trainer.net, cfg, train_samples, val_samples, recipe.CACHE_DIR / "features")
    print(cache.describe())
    return cache


def _train_frozen_epoch(cfg: TrainConfig, root: Path, trainer: Trainer, cache: FeatureCache, epoch: int) -> dict:
    """A frozen-trunk epoch through the cache: train from cached features, or fill the cache while training.

    The batches are :func:`batch_indices` of the epoch's data seed, exactly those the uncached pipeline
    yields, so a cached epoch takes the same optimizer steps on the same samples as an uncached one.
    """
    if not cache.train_cached:
        train_ds, _ = _datasets(cfg, root, epoch)
        return trainer.train_epoch(train_ds, epoch)
    labels = cache.labels("train")
    batches = batch_indices(len(labels), cfg.batch_size, cfg.seed + epoch)
    view = cache.view_of(epoch)
    features = cache.get("train", view)
    if features is not None:
        return trainer.train_cached_epoch(features, labels, batches, epoch)
    source = cache.source_epoch(view)
    if source is None or source == epoch:  # this epoch's own pipeline draws the view: fill while training
        train_ds, info = _datasets(cfg, root, epoch)
        collector, failures = FeatureCollector(labels, batches), len(info.load_failures)
        result = trainer.train_epoch(train_ds, epoch, collector)
        if len(info.load_failures) > failures:
            collector.spoil("an image failed to decode and was substituted")
        cache.put("train", view, collector)
        return result
    # The view belongs to an earlier epoch's augmentation (resumed after it with no cache entry): draw it from
    # that epoch's pipeline without training, then train on it like any cached epoch.
    start = time.perf_counter()
    source_ds, info = _datasets(cfg, root, source)
    collector = FeatureCollector(labels, batch_indices(len(labels), cfg.batch_size, cfg.seed + source))
    features = cache.put("train", view, _extract(trainer, source_ds, info, collector))
    if features is None:  # could not build the view: fall back to this epoch's own augmentation
        train_ds, _ = _datasets(cfg, root, epoch)
        return trainer.train_epoch(train_ds, epoch)
    result = trainer.train_cached_epoch(features, labels, batches, epoch)
    result["train_seconds"] = time.perf_counter() - start
    result["images_per_s"] = len(labels) / result["train_seconds"]
    return result


def _extract(trainer: Trainer, dataset, info, collector: FeatureCollector) -> FeatureCollector:
    """One inference pass of the frozen trunk over ``dataset`` into ``collector`` (no training)."""
    failures = len(info.load_failures)
    for x, y in dataset.create_tuple_iterator(num_epochs=1):
        collector.add(trainer.fast.extract(x).asnumpy(), y.asnumpy())
    if len(info.load_failures) > failures:  # a substitute's features must not be stored under another image
        collector.spoil("an image failed to decode and was substituted")
    return collector


def _validate_frozen(trainer: Trainer, cache: FeatureCache, val_ds, val_info, num_classes: int) -> dict:
    """Validation from cached val features; on a miss, one pass that computes (and caches) them."""
    labels = cache.labels("val")
    batches = batch_indices(len(labels), trainer.cfg.batch_size, None)
    features = cache.get("val")
    if features is None:
        start = time.perf_counter()
        features = cache.put("val", 0, _extract(trainer, val_ds, val_info, FeatureCollector(labels, batches)))
        if features is None:
            return evaluate_net(trainer.net, val_ds, num_classes)
        result = head_metrics(trainer.net.fc, features, labels, batches, num_classes)
        result["seconds"] = time.perf_counter() - start
        return result
    return head_metrics(trainer.net.fc, features, labels, batches, num_classes)


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
    cache: Optional[FeatureCache] = None

    for epoch in range(start_epoch, cfg.epochs + 1):
        stage = stage_of(stages, epoch)
        if trainer.stage is not stage:
            trainer.enter(stage)
            if resumed is not None and resumed.meta.get("stage") == stage.name and epoch == start_epoch:
                load_optimizer_state(trainer.optimizer, net, resumed.state)
            cache = _feature_cache(cfg, trainer, train_info.samples, val_info.samples)
        if cache is not None and trainer.fast_ready():
            train_result = _train_frozen_epoch(cfg, root, trainer, cache, epoch)
            val = _validate_frozen(trainer, cache, val_ds, val_info, len(classes))
        else:
            train_ds, _ = _datasets(cfg, root, epoch)
            train_result = trainer.train_epoch(train_ds, epoch)
            val = evaluate_net(net, val_ds)
        net.set_train(True)
        row = epoch_row(epoch, stage, train_result, val, skipped)
        epoch_meta, improved, best_acc = record_epoch(out, history, row, meta, best_acc, cfg.epochs)
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
    return run_summary(out, best_acc, cfg, skipped, classes, "ckpt")


def main(argv: Optional[Sequence[str]] = None) -> int:
    """CLI entry point; bad input exits 2 with the reason, a failed run exits 1."""
    return cli_main(train, argv, "python -m ms_transfer.train", __doc__)


if __name__ == "__main__":
    sys.exit(main())
