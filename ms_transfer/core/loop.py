"""The training loop, written once: :func:`fit` runs (or resumes) a run with any :class:`~.backend.Backend`.

One run: lock the run directory (one process per run, either framework), check it, prepare and scan the data
(once), build or resume the model, write ``config.yaml`` (only once everything above succeeded: a command that
fails changes nothing in the run directory), then per epoch: enter the epoch's stage (freezing, optimizer),
train (through the frozen-trunk fast path and the feature cache when only the head trains), validate. What a run
writes and shows (``metrics.jsonl``, atomic ``best``/``last`` checkpoints, ``curves.png``, ``predictions.png``,
``test.json``, the progress bar and epoch lines) are callbacks (:mod:`.callbacks`); reports go through
:mod:`logging` (:mod:`.log`). ``--resume`` continues from ``last`` with the same data order as an uninterrupted run
(data seeded by ``seed + epoch``); with a larger ``--epochs`` it extends a finished run. A callback may end the run
early (``state.stop``: :class:`~.callbacks.EarlyStopping`); before each validation the ``on_validation_start`` hook
runs (:class:`~.callbacks.PreciseBN` recomputes the BatchNorm statistics there).
``head_init: class_means`` sets the head from the class means of the trunk's features before epoch 1
(:mod:`.class_means`) and records that model as epoch 0, validated and saved like any epoch.

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
import logging
import math
import os
import time
from pathlib import Path
from typing import Callable, Dict, Iterable, List, Optional, Sequence, Tuple

import numpy as np

from . import recipe
from .backend import Backend, FastPath
from .callbacks import Callback, CallbackList, FitState, default_callbacks
from .class_means import ClassMeansError, class_means, class_means_head
from .config import TrainConfig, save_config
from .archs import head_module, task_of
from .data import SplitScan, batch_indices, shuffle_order, cap_split, subset_split
from .distributed import Dist, shard_epoch
from .holdout import scan_training_data, write_split
from .feature_cache import FeatureCache, FeatureCollector, trunk_fingerprint
from .log import ensure_logging
from .metrics import classification_metrics, cross_entropy
from .recipe import (TrainingError, check_finite, check_resume, check_run_dir, epoch_row, plan_stages, prepare_data,
                     pretrained_weights, run_summary, stage_lrs, stage_of, Stage)
from .runlock import RunLock
from .tasks import VAL_PAIR_SEED, is_pair_task, num_outputs, pair_split, task_metrics
from .weights import resolve_padding

__all__ = ["fit", "run_epoch", "validate", "steps_per_epoch"]

log = logging.getLogger(__name__)
#: what the train passes call after every optimizer step: ``(batch index in the epoch, loss)``
OnBatch = Optional[Callable[[int, float], None]]


def steps_per_epoch(num_samples: int, batch_size: int) -> int:
    """Optimizer steps of one epoch: every sample once, the last batch smaller when it does not divide."""
    return math.ceil(num_samples / batch_size)


def _result(losses: List[float], images: int, seconds: float) -> Dict:
    return {"train_loss": float(np.mean(losses)), "images_per_s": images / seconds, "train_seconds": seconds,
            "train_images": images}


def run_epoch(backend: Backend, batches: Iterable, epoch: int, collector: Optional[FeatureCollector] = None,
              on_batch: OnBatch = None) -> Dict:
    """One pass of train steps over ``batches`` (NaN/Inf guard), calling ``on_batch(index, loss)`` after each;
    ``collector`` receives every batch's trunk features (fast path)."""
    losses, images, start = [], 0, time.perf_counter()
    for x, y in batches:
        loss, features = backend.train_step(x, y, want_features=collector is not None)
        check_finite(loss, epoch, len(losses))
        if collector is not None:
            collector.add(features, backend.labels(y))
        losses.append(loss)
        images += len(backend.labels(y))
        if on_batch is not None:
            on_batch(len(losses) - 1, loss)
    return _result(losses, images, time.perf_counter() - start)


def _cached_epoch(fast: FastPath, features: np.ndarray, labels: np.ndarray, batches: Sequence[np.ndarray],
                  epoch: int, on_batch: OnBatch = None) -> Dict:
    """One epoch of head steps on cached trunk features, batch ``i`` being ``features[batches[i]]``."""
    losses, images, start = [], 0, time.perf_counter()
    for index in batches:
        loss = fast.head_step(np.ascontiguousarray(features[index]), labels[index])
        check_finite(loss, epoch, len(losses))
        losses.append(loss)
        images += len(index)
        if on_batch is not None:
            on_batch(len(losses) - 1, loss)
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
    """State of one :func:`fit` call: the config, the backend, the scanned splits, the epoch's cache, and the
    callbacks with their :class:`~.callbacks.FitState` (set by :func:`_fit` once the run starts)."""

    def __init__(self, cfg: TrainConfig, backend: Backend, train: SplitScan, val: SplitScan, dist: Dist,
                 callbacks: CallbackList) -> None:
        self.cfg, self.backend, self.train, self.val, self.dist = cfg, backend, train, val, dist
        self.callbacks = callbacks
        self.state: Optional[FitState] = None
        self.task = task_of(cfg.arch)
        self.val = self.eval_split(val)
        if dist.enabled:  # the same count on every rank: global batches of world_size * batch_size
            _, self.steps, left_out = shard_epoch(range(len(train)), cfg.batch_size, dist.rank, dist.world_size)
            log.info(f"Data parallel: {dist.world_size} ranks x batch {cfg.batch_size} = global batch "
                     f"{dist.world_size * cfg.batch_size}, {self.steps} steps per epoch; each rank trains on its slice "
                     "of every global batch" + (f"; {left_out} sample(s) per epoch (train size mod {dist.world_size}, "
                                                "a different one each epoch) left out so that all ranks hold as many"
                                                if left_out else ""))
        else:
            self.steps = steps_per_epoch(len(train), cfg.batch_size)
        self.cache: Optional[FeatureCache] = None
        #: the stage's frozen-trunk fast path (``backend.fast_path()``, asked once per stage), or None
        self.fast: Optional[FastPath] = None

    def eval_split(self, scan: SplitScan) -> SplitScan:
        """A val/test split as evaluated: for the digit adder its fixed pairs (the train pairs are redrawn every
        epoch, :meth:`train_batches`)."""
        return pair_split(scan, VAL_PAIR_SEED) if is_pair_task(self.task) else scan

    def train_batches(self, epoch: int):
        seed = self.cfg.seed + epoch
        train = pair_split(self.train, seed) if is_pair_task(self.task) else self.train
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

    def evaluate(self, scan: SplitScan) -> Dict:
        """:func:`validate` of the current model on another split (e.g. ``test/``), as evaluated
        (:meth:`eval_split`)."""
        batches, _ = self.backend.loader(self.eval_split(scan), train=False, shuffle=False, seed=self.cfg.seed)
        return validate(self.backend, batches, len(scan.classes), self.task)

    def _train_pass(self, batches: Iterable, epoch: int, collector: Optional[FeatureCollector] = None) -> Dict:
        """:func:`run_epoch` with the callbacks' epoch-start and per-step hooks."""
        self.callbacks.on_epoch_start(self.state, False)
        return run_epoch(self.backend, batches, epoch, collector, self._on_batch)

    def _cached_pass(self, features: np.ndarray, labels: np.ndarray, order: Sequence[np.ndarray],
                     epoch: int) -> Dict:
        """:func:`_cached_epoch` with the callbacks' epoch-start and per-step hooks."""
        self.callbacks.on_epoch_start(self.state, True)
        return _cached_epoch(self.fast, features, labels, order, epoch, self._on_batch)

    def _on_batch(self, batch: int, loss: float) -> None:
        self.callbacks.on_train_batch_end(self.state, batch, loss)

    def open_cache(self) -> None:
        """The stage's feature cache, or ``None`` (trunk not frozen, or ``feature_cache: off``)."""
        self.cache = None
        if self.fast is None:
            return
        if self.dist.enabled and self.cfg.feature_cache != "off":
            log.info("Feature cache: off under data parallelism (each rank trains on a different part of the train "
                     "set every epoch, so no rank could fill a cache of the whole set without an extra trunk pass, "
                     "and the ranks would write one cache file at once); the frozen trunk runs as inference every "
                     "epoch")
            return
        if self.cfg.feature_cache == "off":
            log.info("Feature cache: off (feature_cache=off); the frozen trunk runs as inference every epoch")
            return
        self.cache = FeatureCache.for_config(trunk_fingerprint(self.fast.trunk_arrays()), self.backend.version(),
                                             self.cfg, self.train.samples, self.val.samples,
                                             recipe.CACHE_DIR / "features")
        log.info(self.cache.describe())

    def epoch(self, epoch: int) -> Dict:
        """Train one epoch: through the feature cache when the trunk is frozen, else the plain pass."""
        cfg = self.cfg
        if self.cache is None or self.fast is None or not self.cache.train_cached:
            batches, _ = self.train_batches(epoch)
            return self._train_pass(batches, epoch)
        cache = self.cache
        labels = cache.labels("train")
        order = batch_indices(len(labels), cfg.batch_size, cfg.seed + epoch)
        view = cache.view_of(epoch)
        features = cache.get("train", view)
        if features is not None:
            return self._cached_pass(features, labels, order, epoch)
        source = cache.source_epoch(view)
        if source is None or source == epoch:  # this epoch's own pipeline draws the view: fill while training
            batches, failures = self.train_batches(epoch)
            collector, before = FeatureCollector(labels, order), len(failures)
            result = self._train_pass(batches, epoch, collector)
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
            return self._train_pass(batches, epoch)
        result = self._cached_pass(features, labels, order, epoch)
        result["train_seconds"] = time.perf_counter() - start
        result["images_per_s"] = len(labels) / result["train_seconds"]
        return result

    def train_features(self) -> Tuple[np.ndarray, np.ndarray]:
        """``(features, labels)`` of the training split under the eval transform, through the frozen trunk. When
        the feature cache holds the train set's one deterministic view (``augment: none``, the eval transform), from
        the cache, filled here on a miss, so that epoch 1 reads these features instead of computing them again."""
        cache, cfg = self.cache, self.cfg
        if cache is not None and cache.train_cached and cache.source_epoch(0) is None:
            labels = cache.labels("train")
            features = cache.get("train", 0)
            if features is None:
                batches, failures = self.backend.loader(self.train, train=False, shuffle=False, seed=cfg.seed)
                collector = FeatureCollector(labels, batch_indices(len(labels), cfg.batch_size, None))
                features = cache.put("train", 0, self._extract(batches, failures, collector))
            if features is not None:
                return features, labels
        batches, _ = self.backend.loader(self.train, train=False, shuffle=False, seed=cfg.seed)
        parts = [(self.fast.extract(x), self.backend.labels(y)) for x, y in batches]
        return np.concatenate([f for f, _ in parts]), np.concatenate([y for _, y in parts])

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


def fit(cfg: TrainConfig, backend: Backend, callbacks: Optional[Sequence[Callback]] = None) -> Dict:
    """Run (or resume) training with ``backend``; returns the run summary (``{}`` on ranks other than 0 of a
    data-parallel run). ``callbacks`` do everything the run writes and shows; ``None`` means
    :func:`~.callbacks.default_callbacks` of ``cfg`` (pass ``[*default_callbacks(cfg), yours]`` to add one).
    See the module docstring."""
    ensure_logging()
    hooks = CallbackList(default_callbacks(cfg) if callbacks is None else callbacks)
    log.debug("Callbacks: " + ", ".join(type(c).__name__ for c in hooks.callbacks))
    backend.setup(cfg)
    dist = backend.dist
    if not dist.enabled:
        return _fit(cfg, backend, dist, hooks)
    quiet = open(os.devnull, "w") if not dist.is_main else None
    try:
        # ranks other than 0 keep their stdout quiet (their errors and warnings still reach stderr)
        with contextlib.redirect_stdout(quiet) if quiet else contextlib.nullcontext():
            return _fit(cfg, backend, dist, hooks)
    except BaseException as exc:
        log.error(f"[{dist.describe()}] the run failed: {type(exc).__name__}: {exc}\n[{dist.describe()}] "
                  f"{dist.launcher} stops the other ranks; {cfg.output_dir}'s best/last checkpoints are those of the "
                  "last completed epoch (written atomically by rank 0)")
        raise
    finally:
        if quiet:
            quiet.close()


def _fit(cfg: TrainConfig, backend: Backend, dist: Dist, hooks: CallbackList) -> Dict:
    out = Path(cfg.output_dir)
    last_ckpt = out / f"last.{backend.ckpt_ext}"
    # rank 0 alone locks the run directory, prepares the data (generation, download, export) and writes; every rank
    # checks the directory before the barrier, i.e. before rank 0 writes anything into it
    with RunLock(out, backend.name) if dist.is_main else contextlib.nullcontext():
        check_run_dir(out, last_ckpt, cfg.resume)
        root = prepare_data(cfg) if dist.is_main else None
        backend.barrier()
        root = root or prepare_data(cfg)
        classes, scans, plain = scan_training_data(root, out, cfg.holdout_fraction(True), cfg.seed, cfg.resume)
        train = subset_split(scans["train"], cfg.data_fraction, cfg.seed)
        if train is not scans["train"]:
            log.info(f"data_fraction {cfg.data_fraction:g}: training on {len(train)} of {len(scans['train'])} images")
        val = cap_split(scans["val"], train, cfg.seed) if cfg.val_cap == "train" else scans["val"]
        if val is not scans["val"]:
            log.info(f"val_cap train: validating on {len(val)} of {len(scans['val'])} images (per class at most the "
                     "training set's count)")
        run = _Run(cfg, backend, train, val, dist, hooks)
        history: List[Dict] = []
        best_acc, start_epoch, resumed = -1.0, 1, None
        if cfg.resume:
            resumed = backend.load_run(last_ckpt)
            start_epoch = check_resume(cfg, resumed, classes, last_ckpt)
            history, best_acc = list(resumed.get("history", [])), resumed.get("best_acc", -1.0)
            log.info(f"Resuming {out} after epoch {start_epoch - 1}"
                     + (f", extending it to {cfg.epochs} epochs" if resumed["config"]["epochs"] < cfg.epochs else ""))
        else:
            path, entry = pretrained_weights(cfg)
            padding, why = resolve_padding(cfg.padding, entry)
            backend.build(cfg.arch, num_outputs(cfg.arch, len(classes)), padding)
            if path:
                log.info(f"{backend.load_pretrained(path)}\n  note: {why}")
        if dist.enabled:
            check_ranks_agree(backend, "at the start (seeded initialisation / the loaded weights)")
        if dist.is_main:
            save_config(cfg, out / "config.yaml")
            if plain and not cfg.resume:
                write_split(out, scans)

        stages = plan_stages(cfg)
        skipped = len(run.train.skipped) + len(run.val.skipped)
        meta = {"arch": cfg.arch, "classes": classes, "image_size": cfg.image_size, "padding": backend.padding,
                "config": cfg.to_dict()}
        state = run.state = FitState(cfg, backend, dist, out, root, classes, run, run.steps, skipped, meta, history,
                                     best_acc)
        try:
            _epochs(run, state, stages, start_epoch, resumed)
        except BaseException as exc:
            hooks.on_exception(state, exc)
            raise
        if not dist.is_main:
            return {}
        return run_summary(out, state.best_acc, cfg, skipped, classes, backend.ckpt_ext)


def _epochs(run: _Run, state: FitState, stages: List, start_epoch: int, resumed: Optional[Dict]) -> None:
    """Train epochs ``start_epoch..cfg.epochs`` stage by stage, calling the run's callbacks; first epoch 0, the
    class-means head, when ``head_init: class_means`` and the run has no epoch yet."""
    cfg, backend, dist, hooks = run.cfg, run.backend, run.dist, run.callbacks
    hooks.on_fit_start(state)
    current = None
    if cfg.head_init == "class_means" and not state.history:   # (a resumed run has its epoch 0 already)
        current = _enter_stage(run, state, stages[0], False)
        _class_means_epoch(run, state)
        if dist.enabled:
            check_ranks_agree(backend, "after the class-means head (epoch 0)")
    for epoch in range(start_epoch, cfg.epochs + 1):
        if state.stop:   # a callback ended the run (early stopping; a resumed run that had already stopped)
            break
        state.epoch = epoch
        stage = stage_of(stages, epoch)
        if stage is not current:
            restore = resumed is not None and resumed.get("stage") == stage.name and epoch == start_epoch
            current = _enter_stage(run, state, stage, restore)
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
        # evaluation of the checkpoint it writes); only rank 0's callbacks record and save
        _end_epoch(run, state, epoch, stage, train_result)
    hooks.on_fit_end(state)


def _enter_stage(run: _Run, state: FitState, stage: Stage, restore: bool) -> Stage:
    """Freeze and build the optimizer for ``stage``, find its fast path and feature cache, call the callbacks."""
    cfg, backend = run.cfg, run.backend
    lrs = stage_lrs(cfg, stage, run.steps)
    report = backend.enter_stage(stage, lrs, restore)
    log.info(f"\nStage '{stage.name}' (epochs {stage.first_epoch}-{stage.last_epoch}):\n{report.table()}")
    run.fast = backend.fast_path()
    if run.fast is not None:
        log.info("Frozen trunk: it runs as inference (no backward, BatchNorm moving statistics); "
                 f"only the head ({head_module(cfg.arch)}) trains")
    run.open_cache()
    state.stage, state.stage_lrs = stage, lrs
    run.callbacks.on_stage_start(state)
    return stage


def _end_epoch(run: _Run, state: FitState, epoch: int, stage: Stage, train_result: Dict) -> None:
    """Validate, record the epoch's row and call the callbacks (checkpoints, metrics, early stopping)."""
    run.callbacks.on_validation_start(state)
    val = run.validate(len(state.classes))
    row = epoch_row(epoch, stage, train_result, val, state.skipped)
    state.end_epoch(row)
    run.callbacks.on_epoch_end(state, epoch, row)


def _class_means_epoch(run: _Run, state: FitState) -> None:
    """``head_init: class_means``: the head set from the trunk's features of the training split (eval transform;
    see :mod:`.class_means`), then validated, saved and logged as epoch 0 like any epoch."""
    if run.fast is None:
        raise TrainingError("head_init class_means needs the first stage to train only the head, with every "
                            f"trunk parameter and BatchNorm frozen, and {run.cfg.arch}'s first stage trains more "
                            "(freeze or unfreeze patterns?): use strategy fixed_feature or head_epochs alone, or "
                            "head_init model")
    start = time.perf_counter()
    state.epoch = 0
    features, labels = run.train_features()
    try:
        means = class_means(features, labels, len(state.classes), state.classes)
        head = class_means_head(run.fast.head_arrays(), means)
    except ClassMeansError as e:
        raise TrainingError(str(e)) from None
    run.fast.set_head_arrays(head)
    loss = float(cross_entropy(run.fast.head_logits(features), labels).mean())
    seconds = time.perf_counter() - start
    log.info(f"head_init class_means: the head classifies by the nearest of {len(state.classes)} class means of "
             f"the trunk's features of {len(labels)} training images ({seconds:.1f} s)")
    _end_epoch(run, state, 0, state.stage, {"train_loss": loss, "images_per_s": len(labels) / seconds,
                                            "train_seconds": seconds, "train_images": len(labels)})
