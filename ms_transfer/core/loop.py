"""The training loop, written once: :func:`fit` runs (or resumes) a run with any :class:`~.backend.Backend`.

One run: lock the run directory (one process per run, either framework), check it, prepare and scan the data
(once), build or resume the model, write ``config.yaml`` (only once everything above succeeded: a command that
fails changes nothing in the run directory), then per epoch: enter the epoch's stage (freezing, optimizer),
train (through the frozen-trunk fast path and the feature cache when only the head trains), validate, append
to ``metrics.jsonl``, write ``best``/``last`` checkpoints atomically; finally ``curves.png`` and
``predictions.png``. ``--resume`` continues from ``last`` with the same data order as an uninterrupted run
(data seeded by ``seed + epoch``); with a larger ``--epochs`` it extends a finished run.

Frozen trunk (only the head trains, ``fc`` or a VGG's ``classifier``: ``fixed_feature``, the head-only stage, or
equivalent patterns): the trunk runs
as pure inference and only the head takes a train step. With ``feature_cache: auto`` the trunk features are also
cached (:class:`~.feature_cache.FeatureCache`): always for the val set, and for the train set when its transform
is deterministic (``augment: none``) or ``cache_views`` > 0; cached epochs train the head on exactly the batches
an uncached epoch would use (:func:`~.data.batch_indices` of the epoch's seed).
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import sys
import time
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence

import numpy as np
from tqdm import tqdm

from . import recipe
from .backend import Backend, FastPath
from .config import TrainConfig, save_config
from .archs import head_module, task_of
from .checkpoint_io import atomic_write
from .data import Preprocess, SplitScan, batch_indices, scan_dataset, scan_split, shuffle_order, subset_split
from .distributed import Dist, shard_epoch
from .feature_cache import FeatureCache, FeatureCollector, trunk_fingerprint
from .metrics import classification_metrics
from .plots import plot_curves, plot_predictions
from .recipe import (TrainingError, check_finite, check_resume, check_run_dir, epoch_row, plan_stages, prepare_data,
                     pretrained_weights, record_epoch, run_summary, sample_per_class, stage_lrs, stage_of)
from .runlock import RunLock
from .tasks import SUM_CLASSES, VAL_PAIR_SEED, num_outputs, pair_split, task_metrics
from .weights import resolve_padding

__all__ = ["fit", "run_epoch", "validate", "steps_per_epoch"]


def steps_per_epoch(num_samples: int, batch_size: int) -> int:
    """Optimizer steps of one epoch: every sample once, the last batch smaller when it does not divide."""
    return math.ceil(num_samples / batch_size)


def _after_epoch(epoch: int) -> None:
    """Hook called after each epoch's checkpoints are written (tests use it to simulate a crash)."""


def _result(losses: List[float], images: int, seconds: float) -> Dict:
    return {"train_loss": float(np.mean(losses)), "images_per_s": images / seconds, "train_seconds": seconds,
            "train_images": images}


def run_epoch(backend: Backend, batches: Iterable, total: int, epoch: int, epochs: int,
              collector: Optional[FeatureCollector] = None, bar: bool = True) -> Dict:
    """One pass of train steps over ``batches`` (tqdm bar unless ``bar`` is false, NaN/Inf guard); ``collector``
    receives every batch's trunk features (fast path)."""
    losses, images, start = [], 0, time.perf_counter()
    bar = tqdm(batches, total=total, desc=f"epoch {epoch}/{epochs}", unit="batch", leave=False,
               disable=None if bar else True)
    for x, y in bar:
        loss, features = backend.train_step(x, y, want_features=collector is not None)
        check_finite(loss, epoch, len(losses))
        if collector is not None:
            collector.add(features, backend.labels(y))
        losses.append(loss)
        images += len(backend.labels(y))
        bar.set_postfix(loss=f"{loss:.4f}")
    return _result(losses, images, time.perf_counter() - start)


def _cached_epoch(fast: FastPath, features: np.ndarray, labels: np.ndarray, batches: Sequence[np.ndarray],
                  epoch: int, epochs: int) -> Dict:
    """One epoch of head steps on cached trunk features, batch ``i`` being ``features[batches[i]]``."""
    losses, images, start = [], 0, time.perf_counter()
    bar = tqdm(batches, desc=f"epoch {epoch}/{epochs} (cached features)", unit="batch", leave=False, disable=None)
    for index in bar:
        loss = fast.head_step(np.ascontiguousarray(features[index]), labels[index])
        check_finite(loss, epoch, len(losses))
        losses.append(loss)
        images += len(index)
        bar.set_postfix(loss=f"{loss:.4f}")
    return _result(losses, images, time.perf_counter() - start)


def validate(backend: Backend, batches: Iterable, num_classes: int, task: str = "classify") -> Dict:
    """Eval-mode pass: loss, accuracy, per-class accuracy, confusion (classification), ``seconds``
    (:func:`~.tasks.task_metrics`)."""
    start = time.perf_counter()
    logits, labels = [], []
    for x, y in batches:
        logits.append(backend.logits(x))
        labels.append(backend.labels(y))
    result = task_metrics(task, logits, labels, num_classes)
    result["seconds"] = time.perf_counter() - start
    return result


def _head_metrics(fast: FastPath, features: np.ndarray, labels: np.ndarray, num_classes: int,
                  batch_size: int) -> Dict:
    """:func:`validate`'s result computed from trunk features (the head per batch)."""
    start = time.perf_counter()
    batches = batch_indices(len(labels), batch_size, None)
    logits = [fast.head_logits(np.ascontiguousarray(features[idx])) for idx in batches]
    result = classification_metrics(logits, [labels[idx].astype(np.int64) for idx in batches], num_classes)
    result["seconds"] = time.perf_counter() - start
    return result


class _Run:
    """State of one :func:`fit` call: the config, the backend, the scanned splits and the epoch's cache."""

    def __init__(self, cfg: TrainConfig, backend: Backend, train: SplitScan, val: SplitScan, dist: Dist) -> None:
        self.cfg, self.backend, self.train, self.val, self.dist = cfg, backend, train, val, dist
        self.task = task_of(cfg.arch)
        self.val = self.eval_split(val)
        if dist.enabled:  # the same count on every rank: global batches of world_size * batch_size
            _, self.steps, left_out = shard_epoch(range(len(train)), cfg.batch_size, dist.rank, dist.world_size)
            print(f"Data parallel: {dist.world_size} ranks x batch {cfg.batch_size} = global batch "
                  f"{dist.world_size * cfg.batch_size}, {self.steps} steps per epoch; each rank trains on its slice of "
                  "every global batch" + (f"; {left_out} sample(s) per epoch (train size mod {dist.world_size}, a "
                                          "different one each epoch) left out so that all ranks hold as many"
                                          if left_out else ""))
        else:
            self.steps = steps_per_epoch(len(train), cfg.batch_size)
        self.cache: Optional[FeatureCache] = None
        #: the stage's frozen-trunk fast path (``backend.fast_path()``, asked once per stage), or None
        self.fast: Optional[FastPath] = None

    def eval_split(self, scan: SplitScan) -> SplitScan:
        """A val/test split as evaluated: for the digit adder its fixed pairs (the train pairs are redrawn every
        epoch, :meth:`train_batches`)."""
        return pair_split(scan, VAL_PAIR_SEED) if self.task == "digit_sum" else scan

    def train_batches(self, epoch: int):
        seed = self.cfg.seed + epoch
        train = pair_split(self.train, seed) if self.task == "digit_sum" else self.train
        if not self.dist.enabled:
            return self.backend.loader(train, train=True, shuffle=True, seed=seed)
        # this rank's slice of every global batch, in the single-process order (see core.distributed)
        mine, _, _ = shard_epoch(shuffle_order(len(train), seed), self.cfg.batch_size, self.dist.rank,
                                 self.dist.world_size)
        self.shard_size = len(mine)
        shard = SplitScan(train.root, train.split, train.classes, [train.samples[i] for i in mine], train.skipped)
        return self.backend.loader(shard, train=True, shuffle=False, seed=seed)

    def val_batches(self):
        return self.backend.loader(self.val, train=False, shuffle=False, seed=self.cfg.seed)

    def open_cache(self) -> None:
        """The stage's feature cache, or ``None`` (trunk not frozen, or ``feature_cache: off``)."""
        self.cache = None
        if self.fast is None:
            return
        if self.dist.enabled and self.cfg.feature_cache != "off":
            print("Feature cache: off under data parallelism (each rank trains on a different part of the train set "
                  "every epoch, so no rank could fill a cache of the whole set without an extra trunk pass, and the "
                  "ranks would write one cache file at once); the frozen trunk runs as inference every epoch")
            return
        if self.cfg.feature_cache == "off":
            print("Feature cache: off (feature_cache=off); the frozen trunk runs as inference every epoch")
            return
        self.cache = FeatureCache.for_config(trunk_fingerprint(self.fast.trunk_arrays()), self.backend.version(),
                                             self.cfg, self.train.samples, self.val.samples,
                                             recipe.CACHE_DIR / "features")
        print(self.cache.describe())

    def epoch(self, epoch: int) -> Dict:
        """Train one epoch: through the feature cache when the trunk is frozen, else the plain pass."""
        cfg, backend = self.cfg, self.backend
        if self.cache is None or self.fast is None or not self.cache.train_cached:
            batches, _ = self.train_batches(epoch)
            return run_epoch(backend, batches, self.steps, epoch, cfg.epochs, bar=self.dist.is_main)
        cache = self.cache
        labels = cache.labels("train")
        order = batch_indices(len(labels), cfg.batch_size, cfg.seed + epoch)
        view = cache.view_of(epoch)
        features = cache.get("train", view)
        if features is not None:
            return _cached_epoch(self.fast, features, labels, order, epoch, cfg.epochs)
        source = cache.source_epoch(view)
        if source is None or source == epoch:  # this epoch's own pipeline draws the view: fill while training
            batches, failures = self.train_batches(epoch)
            collector, before = FeatureCollector(labels, order), len(failures)
            result = run_epoch(backend, batches, self.steps, epoch, cfg.epochs, collector)
            if len(failures) > before:
                collector.spoil("an image failed to decode and was substituted")
            cache.put("train", view, collector)
            return result
        # The view belongs to an earlier epoch's augmentation (resumed after it with no cache entry): draw it from
        # that epoch's pipeline without training, then train on it like any cached epoch.
        start = time.perf_counter()
        batches, failures = self.train_batches(source)
        collector = FeatureCollector(labels, batch_indices(len(labels), cfg.batch_size, cfg.seed + source))
        features = cache.put("train", view, self._extract(batches, failures, collector))
        if features is None:  # could not build the view: fall back to this epoch's own augmentation
            batches, _ = self.train_batches(epoch)
            return run_epoch(backend, batches, self.steps, epoch, cfg.epochs)
        result = _cached_epoch(self.fast, features, labels, order, epoch, cfg.epochs)
        result["train_seconds"] = time.perf_counter() - start
        result["images_per_s"] = len(labels) / result["train_seconds"]
        return result

    def _extract(self, batches, failures: List, collector: FeatureCollector) -> FeatureCollector:
        """One inference pass of the frozen trunk into ``collector`` (no training)."""
        before = len(failures)
        for x, y in batches:
            collector.add(self.fast.extract(x), self.backend.labels(y))
        if len(failures) > before:  # a substitute's features must not be stored under another image
            collector.spoil("an image failed to decode and was substituted")
        return collector

    def validate(self, num_classes: int) -> Dict:
        """Validation; from cached val features when the trunk is frozen (computed and cached on a miss)."""
        if self.cache is None or self.fast is None:
            return validate(self.backend, self.val_batches()[0], num_classes, self.task)
        labels = self.cache.labels("val")
        features = self.cache.get("val")
        if features is None:
            start = time.perf_counter()
            batches, failures = self.val_batches()
            collector = FeatureCollector(labels, batch_indices(len(labels), self.cfg.batch_size, None))
            features = self.cache.put("val", 0, self._extract(batches, failures, collector))
            if features is None:
                return validate(self.backend, self.val_batches()[0], num_classes)
            result = _head_metrics(self.fast, features, labels, num_classes, self.cfg.batch_size)
            result["seconds"] = time.perf_counter() - start
            return result
        return _head_metrics(self.fast, features, labels, num_classes, self.cfg.batch_size)


def _plot_predictions(run: _Run, path: Path) -> None:
    """``predictions.png``: val images of every class (digit pairs side by side, titled with the rounded sum)."""
    backend, cfg = run.backend, run.cfg
    classes = run.val.classes
    batches, _ = run.val_batches()
    images, labels = sample_per_class(((backend.images(x), backend.labels(y)) for x, y in batches), len(classes),
                                      per_class=max(1, 8 // len(classes)))
    if run.task == "digit_sum":
        width = images.shape[3] // 2
        outputs = backend.logits((images[..., :width], images[..., width:]))
        preds = np.clip(np.rint(outputs[:, 0]), 0, len(SUM_CLASSES) - 1).astype(np.int64)
    else:
        preds = backend.logits(images).argmax(axis=1)
    pre = Preprocess.from_config(cfg)
    plot_predictions(images, labels, preds, classes, path, mean=pre.mean, std=pre.std)


def _test(run: _Run, root: Path, classes: List[str], out: Path, epoch: int) -> None:
    """When the dataset has a ``test/`` split (the array datasets do): the final model's metrics on it, printed and
    written to ``test.json`` (what ``python -m ms_transfer.study`` reports)."""
    if not (root / "test").is_dir():
        return
    samples, test_classes, skipped = scan_split(root, "test")
    if test_classes != classes:
        print(f"test/ has classes {test_classes}, not the training classes; no test evaluation")
        return
    test = run.eval_split(SplitScan(root, "test", classes, samples, skipped))
    batches, _ = run.backend.loader(test, train=False, shuffle=False, seed=run.cfg.seed)
    result = validate(run.backend, batches, len(classes), run.task)
    row = {"epoch": epoch, "model": "last", "test_acc": result["accuracy"], "test_loss": result["loss"],
           "num_samples": result["num_samples"]}
    atomic_write(out / "test.json", lambda tmp: Path(tmp).write_text(json.dumps(row, indent=1)))
    print(f"test accuracy {row['test_acc']:.4f} on {row['num_samples']} samples (model after epoch {epoch})")


def parameters_digest(arrays: Iterable[np.ndarray]) -> np.ndarray:
    """A SHA-256 of the arrays' bytes, as 16 float32 values (exact small integers, so any collective carries it
    unchanged): ranks compare it to check that they hold bit-identical parameters."""
    h = hashlib.sha256()
    for a in arrays:
        h.update(np.ascontiguousarray(a).tobytes())
    return np.frombuffer(h.digest(), dtype=np.uint16).astype(np.float32)


def check_ranks_agree(backend: Backend, when: str) -> None:
    """Data parallel: every rank must hold bit-identical parameters (checked, not assumed); a clear error if not.
    BatchNorm running statistics are not compared: with batch-statistics BN each rank averages its own slices."""
    digests = backend.all_gather(parameters_digest(backend.parameter_arrays()))
    differ = [r for r in range(1, len(digests)) if not np.array_equal(digests[r], digests[0])]
    if differ:
        raise TrainingError(f"data parallel: ranks {differ} hold parameters different from rank 0's {when}; the "
                            "gradient averaging or the initial weights are not the same on every rank")


def fit(cfg: TrainConfig, backend: Backend) -> Dict:
    """Run (or resume) training with ``backend``; returns the run summary (``{}`` on ranks other than 0 of a
    data-parallel run). See the module docstring."""
    backend.setup(cfg)
    dist = backend.dist
    if not dist.enabled:
        return _fit(cfg, backend, dist)
    quiet = open(os.devnull, "w") if not dist.is_main else None
    try:
        # ranks other than 0 keep their stdout quiet (their errors and warnings still reach stderr)
        with contextlib.redirect_stdout(quiet) if quiet else contextlib.nullcontext():
            return _fit(cfg, backend, dist)
    except BaseException as exc:
        print(f"[{dist.describe()}] the run failed: {type(exc).__name__}: {exc}\n[{dist.describe()}] {dist.launcher} "
              f"stops the other ranks; {cfg.output_dir}'s best/last checkpoints are those of the last completed "
              "epoch (written atomically by rank 0)", file=sys.stderr, flush=True)
        raise
    finally:
        if quiet:
            quiet.close()


def _fit(cfg: TrainConfig, backend: Backend, dist: Dist) -> Dict:
    out = Path(cfg.output_dir)
    last_ckpt = out / f"last.{backend.ckpt_ext}"
    # rank 0 alone locks the run directory, prepares the data (generation, download, export) and writes; every rank
    # checks the directory before the barrier, i.e. before rank 0 writes anything into it
    with RunLock(out, backend.name) if dist.is_main else contextlib.nullcontext():
        check_run_dir(out, last_ckpt, cfg.resume)
        root = prepare_data(cfg) if dist.is_main else None
        backend.barrier()
        root = root or prepare_data(cfg)
        classes, scans = scan_dataset(root)
        train = subset_split(scans["train"], cfg.data_fraction, cfg.seed)
        if train is not scans["train"]:
            print(f"data_fraction {cfg.data_fraction:g}: training on {len(train)} of {len(scans['train'])} images")
        run = _Run(cfg, backend, train, scans["val"], dist)
        history: List[Dict] = []
        best_acc, start_epoch, resumed = -1.0, 1, None
        if cfg.resume:
            resumed = backend.load_run(last_ckpt)
            start_epoch = check_resume(cfg, resumed, classes, last_ckpt)
            history, best_acc = list(resumed.get("history", [])), resumed.get("best_acc", -1.0)
            print(f"Resuming {out} after epoch {start_epoch - 1}"
                  + (f", extending it to {cfg.epochs} epochs" if resumed["config"]["epochs"] < cfg.epochs else ""))
        else:
            path, entry = pretrained_weights(cfg)
            padding, why = resolve_padding(cfg.padding, entry)
            backend.build(cfg.arch, num_outputs(cfg.arch, len(classes)), padding)
            if path:
                print(f"{backend.load_pretrained(path)}\n  note: {why}")
        if dist.enabled:
            check_ranks_agree(backend, "at the start (seeded initialisation / the loaded weights)")
        if dist.is_main:
            save_config(cfg, out / "config.yaml")

        stages = plan_stages(cfg)
        skipped = len(run.train.skipped) + len(run.val.skipped)
        meta = {"arch": cfg.arch, "classes": classes, "image_size": cfg.image_size, "padding": backend.padding,
                "config": cfg.to_dict()}
        current = None
        for epoch in range(start_epoch, cfg.epochs + 1):
            stage = stage_of(stages, epoch)
            if stage is not current:
                restore = resumed is not None and resumed.get("stage") == stage.name and epoch == start_epoch
                report = backend.enter_stage(stage, stage_lrs(cfg, stage, run.steps), restore)
                print(f"\nStage '{stage.name}' (epochs {stage.first_epoch}-{stage.last_epoch}):\n{report.table()}")
                run.fast = backend.fast_path()
                if run.fast is not None:
                    print("Frozen trunk: it runs as inference (no backward, BatchNorm moving statistics); "
                          f"only the head ({head_module(cfg.arch)}) trains")
                run.open_cache()
                current = stage
            train_result = run.epoch(epoch)
            if dist.enabled:
                if train_result["train_images"] != run.shard_size:   # e.g. a pipeline that shards on its own
                    raise TrainingError(f"data parallel: rank {dist.rank} trained on {train_result['train_images']} "
                                        f"samples in epoch {epoch}, but its shard holds {run.shard_size}")
                check_ranks_agree(backend, f"after epoch {epoch}")
                # the logged loss is the mean over the ranks' (equal-sized) slices, the speed that of all ranks
                both = backend.all_gather(np.array([train_result["train_loss"], train_result["images_per_s"]]))
                train_result.update(train_loss=float(both[:, 0].mean()), images_per_s=float(both[:, 1].sum()))
            # every rank validates the whole val set (the same weights: rank 0's numbers are a single-process
            # evaluation of the checkpoint it writes); only rank 0 records and saves
            val = run.validate(len(classes))
            if dist.is_main:
                row = epoch_row(epoch, stage, train_result, val, skipped)
                epoch_meta, improved, best_acc = record_epoch(out, history, row, meta, best_acc, cfg.epochs)
                if improved:
                    backend.save_run(out / f"best.{backend.ckpt_ext}", epoch_meta, with_optimizer=False)
                backend.save_run(last_ckpt, epoch_meta, with_optimizer=True)
            _after_epoch(epoch)

        if not dist.is_main:
            return {}
        plot_curves(history, out / "curves.png")
        _plot_predictions(run, out / "predictions.png")
        _test(run, root, classes, out, history[-1]["epoch"] if history else 0)
        return run_summary(out, best_acc, cfg, skipped, classes, backend.ckpt_ext)
