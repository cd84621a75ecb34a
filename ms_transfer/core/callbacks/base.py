"""The callback protocol of :func:`~ms_transfer.core.loop.fit`: :class:`Callback`, the :class:`FitState` its hooks
receive, and :class:`CallbackList` (see the package docstring for the hooks)."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

from ..config import TrainConfig
from ..distributed import Dist
from ..recipe import Stage

__all__ = ["FitState", "Callback", "CallbackList"]


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
    #: the epoch of ``best_acc`` (the first one that reached it; 0 before any epoch): the checkpoint that is tested
    best_epoch: int = 0
    #: the last epoch's val accuracy beat every earlier one
    improved: bool = False
    epoch: int = 0
    stage: Optional[Stage] = None
    stage_lrs: Sequence[float] = ()
    #: set by a callback (e.g. :class:`~.builtin.EarlyStopping`) to end the run after the current epoch; the loop
    #: checks it after ``on_fit_start`` and after every ``on_epoch_end``
    stop: bool = False

    def __post_init__(self) -> None:
        # a resumed run: the best epoch is the first one of its history that reached the best accuracy
        if self.history and not self.best_epoch:
            self.best_epoch = next((r["epoch"] for r in self.history if r["val_acc"] == self.best_acc), 0)

    @property
    def is_main(self) -> bool:
        """Rank 0 (or a single process): the one that writes."""
        return self.dist.is_main

    def end_epoch(self, row: Dict) -> None:
        """Record an epoch's ``metrics.jsonl`` row: history, best accuracy, whether it improved."""
        self.history.append(row)
        self.improved = row["val_acc"] > self.best_acc
        if self.improved:
            self.best_acc, self.best_epoch = row["val_acc"], row["epoch"]

    def checkpoint_meta(self) -> Dict:
        """The metadata of the last epoch's checkpoints (what ``--resume`` restores the history from)."""
        row = self.history[-1]
        return {**self.meta, "epoch": row["epoch"], "stage": row["stage"], "metrics": row,
                "best_acc": self.best_acc, "best_epoch": self.best_epoch, "history": self.history}

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

    def on_validation_start(self, state: FitState) -> None:
        """Epoch ``state.epoch`` is trained; its validation (and the checkpoints after it) come next: the place to
        change what evaluation sees (e.g. :class:`~.precise_bn.PreciseBN`)."""

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

    def on_validation_start(self, state: FitState) -> None:
        self._call("on_validation_start", state)

    def on_epoch_end(self, state: FitState, epoch: int, metrics: Dict) -> None:
        self._call("on_epoch_end", state, epoch, metrics)

    def on_fit_end(self, state: FitState) -> None:
        self._call("on_fit_end", state)

    def on_exception(self, state: FitState, exc: BaseException) -> None:
        self._call("on_exception", state, exc)
