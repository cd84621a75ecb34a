"""A training run's side effects, as callbacks (Keras / Lightning style) that :func:`~.loop.fit` calls.

The loop owns the order of stages and epochs, resume and the ranks of a data-parallel run; everything a run
writes or shows goes through a :class:`Callback`'s hooks, each receiving the run's :class:`FitState`:

- ``on_fit_start(state)``: the model is built or resumed, ``config.yaml`` written;
- ``on_stage_start(state)``: a stage (``state.stage``, its per-step base LRs ``state.stage_lrs``) begins;
- ``on_epoch_start(state, cached)``: epoch ``state.epoch``'s train pass begins (``cached``: on cached features);
- ``on_train_batch_end(state, batch, loss)``: one optimizer step is done (``batch``: its index in the epoch);
- ``on_epoch_end(state, epoch, metrics)``: trained and validated; ``metrics`` is the ``metrics.jsonl`` row;
- ``on_fit_end(state)``: every epoch is done (before the run's closing summary line);
- ``on_exception(state, exc)``: the run failed (``fit`` raises ``exc`` again afterwards).

A callback runs on rank 0 of a data-parallel run only (only rank 0 writes), unless it sets ``all_ranks``.
:func:`default_callbacks` are what ``fit`` uses when given none: progress (tqdm bar, epoch lines), the metrics
file, the ``best``/``last`` checkpoints, the plots, the test evaluation, and the TensorBoard logger when the
config asks for it. To add one: subclass :class:`Callback`, override the hooks you need and pass
``fit(cfg, backend, callbacks=[*default_callbacks(cfg), Mine()])``.
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import numpy as np
from tqdm import tqdm

from .checkpoint_io import atomic_write
from .config import TrainConfig
from .data import Preprocess, SplitScan, scan_split
from .distributed import Dist
from .plots import plot_curves, plot_predictions
from .recipe import Stage, format_row, sample_per_class
from .tasks import SUM_CLASSES

__all__ = ["FitState", "Callback", "CallbackList", "ProgressBar", "MetricsWriter", "CheckpointWriter", "Plots",
           "TestEvaluation", "default_callbacks"]

log = logging.getLogger(__name__)


@dataclass
class FitState:
    """What callbacks see of a run: its config, backend, data, and the history so far (the loop updates it)."""

    cfg: TrainConfig
    #: the run's :class:`~.backend.Backend`
    backend: Any
    dist: Dist
    #: the run directory
    out: Path
    #: the dataset root (``train/``, ``val/``, maybe ``test/``)
    root: Path
    classes: List[str]
    #: the loop's evaluation helper: ``val`` (the val split as evaluated), ``val_batches()``, ``evaluate(split)``,
    #: ``task``
    run: Any
    #: optimizer steps of one epoch (on this rank)
    steps_per_epoch: int
    #: unreadable files skipped in train + val
    skipped: int
    #: what every checkpoint's metadata holds (arch, classes, image size, padding, config)
    meta: Dict
    history: List[Dict] = field(default_factory=list)
    best_acc: float = -1.0
    #: the last epoch's val accuracy beat every earlier one
    improved: bool = False
    epoch: int = 0
    stage: Optional[Stage] = None
    stage_lrs: Sequence[float] = ()

    @property
    def is_main(self) -> bool:
        """Rank 0 (or a single process): the one that writes."""
        return self.dist.is_main

    def end_epoch(self, row: Dict) -> None:
        """Record an epoch's ``metrics.jsonl`` row: history, best accuracy, whether it improved."""
        self.history.append(row)
        self.improved = row["val_acc"] > self.best_acc
        self.best_acc = max(self.best_acc, row["val_acc"])

    def checkpoint_meta(self) -> Dict:
        """The metadata of the last epoch's checkpoints (what ``--resume`` restores the history from)."""
        row = self.history[-1]
        return {**self.meta, "epoch": row["epoch"], "stage": row["stage"], "metrics": row,
                "best_acc": self.best_acc, "history": self.history}

    def global_step(self, batch: int) -> int:
        """1-based count of the optimizer steps of the whole run at ``batch`` of the current epoch."""
        return (self.epoch - 1) * self.steps_per_epoch + batch + 1

    def lr(self, batch: int) -> float:
        """Base learning rate of ``batch`` of the current epoch (a parameter group's is this times its
        ``lr_mult``)."""
        return float(self.stage_lrs[(self.epoch - self.stage.first_epoch) * self.steps_per_epoch + batch])


class Callback:
    """Base class: every hook does nothing; override the ones you need (see the module docstring)."""

    #: also run on the ranks other than 0 of a data-parallel run
    all_ranks: bool = False

    def on_fit_start(self, state: FitState) -> None:
        """The model is built (or resumed) and ``config.yaml`` written; the first epoch is next."""

    def on_stage_start(self, state: FitState) -> None:
        """``state.stage`` begins (its optimizer built); ``state.stage_lrs`` are its per-step base LRs."""

    def on_epoch_start(self, state: FitState, cached: bool) -> None:
        """Epoch ``state.epoch``'s train pass begins; ``cached``: the head trains on cached trunk features."""

    def on_train_batch_end(self, state: FitState, batch: int, loss: float) -> None:
        """Optimizer step ``batch`` (0-based, in this epoch) is done; ``loss`` was its loss before the update."""

    def on_epoch_end(self, state: FitState, epoch: int, metrics: Dict) -> None:
        """Epoch ``epoch`` is trained and validated; ``metrics`` is its row (already in ``state.history``)."""

    def on_fit_end(self, state: FitState) -> None:
        """Every epoch is done."""

    def on_exception(self, state: FitState, exc: BaseException) -> None:
        """The run failed with ``exc`` (raised again after every callback saw it)."""


class CallbackList:
    """Callbacks called in order, hook by hook; on ranks other than 0 only those with ``all_ranks``."""

    def __init__(self, callbacks: Sequence[Callback] = ()) -> None:
        bad = [c for c in callbacks if not isinstance(c, Callback)]
        if bad:
            raise TypeError(f"callbacks must be ms_transfer.core.callbacks.Callback instances; got {bad[0]!r}")
        self.callbacks = list(callbacks)

    def _call(self, hook: str, state: FitState, *args) -> None:
        for callback in self.callbacks:
            if state.is_main or callback.all_ranks:
                getattr(callback, hook)(state, *args)

    def on_fit_start(self, state: FitState) -> None:
        self._call("on_fit_start", state)

    def on_stage_start(self, state: FitState) -> None:
        self._call("on_stage_start", state)

    def on_epoch_start(self, state: FitState, cached: bool) -> None:
        self._call("on_epoch_start", state, cached)

    def on_train_batch_end(self, state: FitState, batch: int, loss: float) -> None:
        self._call("on_train_batch_end", state, batch, loss)

    def on_epoch_end(self, state: FitState, epoch: int, metrics: Dict) -> None:
        self._call("on_epoch_end", state, epoch, metrics)

    def on_fit_end(self, state: FitState) -> None:
        self._call("on_fit_end", state)

    def on_exception(self, state: FitState, exc: BaseException) -> None:
        self._call("on_exception", state, exc)


class ProgressBar(Callback):
    """A tqdm bar per epoch (batches, running loss; off when stderr is no terminal or the log level is above
    info) and the one-line epoch summary (:func:`~.recipe.format_row`)."""

    def __init__(self) -> None:
        self.bar: Optional[tqdm] = None

    def on_epoch_start(self, state: FitState, cached: bool) -> None:
        self._close()
        quiet = not log.isEnabledFor(logging.INFO)
        self.bar = tqdm(total=state.steps_per_epoch, unit="batch", leave=False, disable=True if quiet else None,
                        desc=f"epoch {state.epoch}/{state.cfg.epochs}" + (" (cached features)" if cached else ""))

    def on_train_batch_end(self, state: FitState, batch: int, loss: float) -> None:
        if self.bar is not None:
            self.bar.set_postfix(loss=f"{loss:.4f}", refresh=False)
            self.bar.update(1)

    def on_epoch_end(self, state: FitState, epoch: int, metrics: Dict) -> None:
        self._close()
        log.info(format_row(metrics, state.cfg.epochs))

    def on_exception(self, state: FitState, exc: BaseException) -> None:
        self._close()

    def _close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


class MetricsWriter(Callback):
    """Appends each epoch's row to ``metrics.jsonl`` (one JSON object per line)."""

    def on_epoch_end(self, state: FitState, epoch: int, metrics: Dict) -> None:
        with open(state.out / "metrics.jsonl", "a") as f:
            f.write(json.dumps(metrics) + "\n")


class CheckpointWriter(Callback):
    """``best`` (by val accuracy, without optimizer state) and ``last`` (with it: what ``--resume`` continues)
    after every epoch, each written atomically by the backend in its own format."""

    def on_epoch_end(self, state: FitState, epoch: int, metrics: Dict) -> None:
        backend, meta = state.backend, state.checkpoint_meta()
        if state.improved:
            backend.save_run(state.out / f"best.{backend.ckpt_ext}", meta, with_optimizer=False)
        backend.save_run(state.out / f"last.{backend.ckpt_ext}", meta, with_optimizer=True)


class Plots(Callback):
    """``curves.png`` (losses, val accuracy per epoch) and ``predictions.png`` (val images of every class, digit
    pairs side by side titled with the rounded sum) at the end of the run."""

    def on_fit_end(self, state: FitState) -> None:
        plot_curves(state.history, state.out / "curves.png")
        backend, run = state.backend, state.run
        classes = run.val.classes  # as evaluated: the digit adder's are the sums, not the training digits
        batches, _ = run.val_batches()
        images, labels = sample_per_class(((backend.images(x), backend.labels(y)) for x, y in batches),
                                          len(classes), per_class=max(1, 8 // len(classes)))
        if run.task == "digit_sum":
            width = images.shape[3] // 2
            outputs = backend.logits((images[..., :width], images[..., width:]))
            preds = np.clip(np.rint(outputs[:, 0]), 0, len(SUM_CLASSES) - 1).astype(np.int64)
        else:
            preds = backend.logits(images).argmax(axis=1)
        pre = Preprocess.from_config(state.cfg)
        plot_predictions(images, labels, preds, classes, state.out / "predictions.png", mean=pre.mean, std=pre.std)


class TestEvaluation(Callback):
    """When the dataset has a ``test/`` split (the array datasets do): the final model's metrics on it, reported
    and written to ``test.json`` (what ``python -m ms_transfer.study`` reports)."""

    __test__ = False  # a pytest collecting a module that imports this class must not take it for a test

    def on_fit_end(self, state: FitState) -> None:
        root, classes = state.root, state.classes
        if not (root / "test").is_dir():
            return
        samples, test_classes, skipped = scan_split(root, "test")
        if test_classes != classes:
            log.info(f"test/ has classes {test_classes}, not the training classes; no test evaluation")
            return
        result = state.run.evaluate(SplitScan(root, "test", classes, samples, skipped))
        epoch = state.history[-1]["epoch"] if state.history else 0
        row = {"epoch": epoch, "model": "last", "test_acc": result["accuracy"], "test_loss": result["loss"],
               "num_samples": result["num_samples"]}
        atomic_write(state.out / "test.json", lambda tmp: Path(tmp).write_text(json.dumps(row, indent=1)))
        log.info(f"test accuracy {row['test_acc']:.4f} on {row['num_samples']} samples (model after epoch {epoch})")


def default_callbacks(cfg: TrainConfig) -> List[Callback]:
    """What a run writes and shows, in order: progress, ``metrics.jsonl``, ``best``/``last`` checkpoints, plots,
    ``test.json``, and TensorBoard event files when ``cfg.tensorboard`` names a directory."""
    callbacks: List[Callback] = [ProgressBar(), MetricsWriter(), CheckpointWriter(), Plots(), TestEvaluation()]
    if cfg.tensorboard:
        from .tensorboard_logger import TensorBoardLogger  # the optional extra: imported only when asked for
        callbacks.append(TensorBoardLogger(cfg.tensorboard))
    return callbacks
