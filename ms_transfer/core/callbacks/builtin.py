"""The callbacks every run gets by default (:func:`~ms_transfer.core.callbacks.default_callbacks`): progress,
``metrics.jsonl``, ``best``/``last`` checkpoints, plots, ``test.json``."""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Dict, Optional

import numpy as np
from tqdm import tqdm

from ..checkpoint_io import atomic_write
from ..data import Preprocess, SplitScan, scan_split
from ..layout import has_splits
from ..plots import plot_curves, plot_predictions
from ..recipe import format_row, sample_per_class
from ..tasks import SUM_CLASSES, is_pair_task
from .base import Callback, FitState

__all__ = ["ProgressBar", "MetricsWriter", "CheckpointWriter", "Plots", "EarlyStopping", "TestEvaluation"]

log = logging.getLogger(__name__)


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
        if is_pair_task(run.task):
            width = images.shape[3] // 2
            outputs = backend.logits((images[..., :width], images[..., width:]))
            preds = (np.clip(np.rint(outputs[:, 0]), 0, len(SUM_CLASSES) - 1).astype(np.int64)
                     if run.task == "digit_sum" else outputs.argmax(axis=1))
        else:
            preds = backend.logits(images).argmax(axis=1)
        pre = Preprocess.from_config(state.cfg)
        plot_predictions(images, labels, preds, classes, state.out / "predictions.png", mean=pre.mean, std=pre.std)


class EarlyStopping(Callback):
    """Ends the run once the validation accuracy has not improved for ``patience`` epochs (Keras'
    ``EarlyStopping(monitor="val_accuracy", min_delta=0)``): after epoch ``e`` when ``e - best_epoch >= patience``.
    Resume-safe: the best accuracy and epoch come back with ``last``'s history, so a resumed run that had already
    stopped trains no further epoch. Runs on every rank (each validates the whole val set: the same decision)."""

    all_ranks = True

    def __init__(self, patience: int) -> None:
        if patience < 1:
            raise ValueError(f"EarlyStopping: patience must be >= 1 epoch, got {patience}")
        self.patience = patience

    def on_fit_start(self, state: FitState) -> None:
        self._check(state, resumed=True)

    def on_epoch_end(self, state: FitState, epoch: int, metrics: Dict) -> None:
        self._check(state, resumed=False)

    def _check(self, state: FitState, resumed: bool) -> None:
        if not state.history:
            return
        last = state.history[-1]["epoch"]
        if last - state.best_epoch >= self.patience and last < state.cfg.epochs:
            state.stop = True
            log.info(f"Early stopping{' (the resumed run had stopped)' if resumed else ''} after epoch {last}: "
                     f"validation accuracy has not improved for {last - state.best_epoch} epoch(s) (patience "
                     f"{self.patience}); the best is {state.best_acc:.4f} at epoch {state.best_epoch}")


class TestEvaluation(Callback):
    """When the dataset has a ``test/`` split (the array datasets do): the metrics of the best validation epoch's
    checkpoint (``best``, written by :class:`CheckpointWriter`) on it, reported and written to ``test.json`` (what
    ``python -m ms_transfer.study`` reports). When the last epoch is not the best, the backend's model is replaced
    by ``best``'s (``load_run``) before the test pass: the selection uses validation data only, the test split is
    seen once. Without a ``best`` file (a run without :class:`CheckpointWriter`) the last model is tested and
    ``test.json`` says so (``"model": "last"``)."""

    __test__ = False  # a pytest collecting a module that imports this class must not take it for a test

    def on_fit_end(self, state: FitState) -> None:
        root, classes = state.root, state.classes
        # a test split belongs to the train/val layout: in a plain folder of class folders, test/ is a class
        if not (root / "test").is_dir() or not has_splits(root):
            return
        samples, test_classes, skipped = scan_split(root, "test")
        if test_classes != classes:
            log.info(f"test/ has classes {test_classes}, not the training classes; no test evaluation")
            return
        backend = state.backend
        last = state.history[-1]["epoch"] if state.history else 0
        epoch, model = state.best_epoch, "best"
        best = state.out / f"best.{backend.ckpt_ext}"
        if epoch != last:
            if best.is_file():
                backend.load_run(best)
            else:
                log.warning(f"no {best.name} in {state.out}: testing the model after epoch {last}, not the best "
                            f"validation epoch {epoch}")
                epoch, model = last, "last"
        result = state.run.evaluate(SplitScan(root, "test", classes, samples, skipped))
        row = {"epoch": epoch, "model": model, "val_acc": next((r["val_acc"] for r in state.history
                                                                if r["epoch"] == epoch), None),
               "test_acc": result["accuracy"], "test_loss": result["loss"], "num_samples": result["num_samples"],
               "epochs_trained": last, "early_stopping_patience": state.cfg.early_stopping_patience,
               "train_samples": len(state.run.train)}
        if "predictions" in result:   # per test image, in test/'s order: e.g. the digit adder study's recogniser
            row["test_predictions"] = result["predictions"]   # baseline adds two of them
        atomic_write(state.out / "test.json", lambda tmp: Path(tmp).write_text(json.dumps(row, indent=1)))
        log.info(f"test accuracy {row['test_acc']:.4f} on {row['num_samples']} samples (the {model} model: epoch "
                 f"{epoch} of {last})")
