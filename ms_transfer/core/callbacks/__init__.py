"""A training run's side effects, as callbacks (Keras / Lightning style) that :func:`~.loop.fit` calls.

The loop owns the order of stages and epochs, resume and the ranks of a data-parallel run; everything a run
writes or shows goes through a :class:`Callback`'s hooks, each receiving the run's :class:`FitState`:

- ``on_fit_start(state)``: the model is built or resumed, ``config.yaml`` written;
- ``on_stage_start(state)``: a stage (``state.stage``, its per-step base LRs ``state.stage_lrs``) begins;
- ``on_epoch_start(state, cached)``: epoch ``state.epoch``'s train pass begins (``cached``: on cached features);
- ``on_train_batch_end(state, batch, loss)``: one optimizer step is done (``batch``: its index in the epoch);
- ``on_validation_start(state)``: the epoch is trained, its validation is next;
- ``on_epoch_end(state, epoch, metrics)``: trained and validated; ``metrics`` is the ``metrics.jsonl`` row;
- ``on_fit_end(state)``: every epoch is done (before the run's closing summary line);
- ``on_exception(state, exc)``: the run failed (``fit`` raises ``exc`` again afterwards).

A callback ends the run early by setting ``state.stop`` (checked after ``on_fit_start`` and every ``on_epoch_end``).
A callback runs on rank 0 of a data-parallel run only (only rank 0 writes), unless it sets ``all_ranks``.
:func:`default_callbacks` are what ``fit`` uses when given none: progress (tqdm bar, epoch lines), the metrics
file, the ``best``/``last`` checkpoints, the plots, the test evaluation, and the TensorBoard logger when the
config asks for it. To add one: subclass :class:`Callback`, override the hooks you need and pass
``fit(cfg, backend, callbacks=[*default_callbacks(cfg), Mine()])``.
"""
from __future__ import annotations

from typing import List

from ..config import TrainConfig
from .base import Callback, CallbackList, FitState
from .builtin import CheckpointWriter, EarlyStopping, MetricsWriter, Plots, ProgressBar, TestEvaluation
from .precise_bn import PreciseBN

__all__ = ["FitState", "Callback", "CallbackList", "ProgressBar", "MetricsWriter", "CheckpointWriter", "Plots",
           "EarlyStopping", "PreciseBN", "TestEvaluation", "default_callbacks"]


def default_callbacks(cfg: TrainConfig) -> List[Callback]:
    """What a run writes and shows, in order: progress, ``metrics.jsonl``, ``best``/``last`` checkpoints, early
    stopping when ``cfg.early_stopping_patience`` > 0, plots, ``test.json`` of the best validation epoch,
    TensorBoard event files when ``cfg.tensorboard`` names a directory, and PreciseBN's statistics before every
    validation unless ``cfg.precise_bn`` is ``off`` (its one hook, ``on_validation_start``, precedes every other
    callback's ``on_epoch_end``: its place in the list does not matter)."""
    callbacks: List[Callback] = [ProgressBar(), MetricsWriter(), CheckpointWriter()]
    if cfg.early_stopping_patience:
        callbacks.append(EarlyStopping(cfg.early_stopping_patience))
    callbacks += [Plots(), TestEvaluation()]
    if cfg.tensorboard:
        from .tensorboard import TensorBoardLogger  # the optional extra: imported only when asked for
        callbacks.append(TensorBoardLogger(cfg.tensorboard))
    if cfg.precise_bn == "auto":
        callbacks.append(PreciseBN())
    return callbacks
