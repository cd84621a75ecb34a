"""TensorBoard event files of a run (``--tensorboard DIR``), as a :class:`~.base.Callback`.

Written with the ``tensorboard`` package's own event-file writer (pure Python and protobuf: it loads neither
torch nor TensorFlow, so a MindSpore run stays MindSpore-only; tensorboardX would import torch whenever it is
installed); the ``tensorboard`` extra installs it (``pip install -e '.[tensorboard]'``), and ``tensorboard --logdir
DIR`` shows the scalars:

- per optimizer step (x = the run's step count, continued by ``--resume``): ``step/loss``, ``step/lr`` (the base
  learning rate; a parameter group's is this times its ``lr_mult``);
- per epoch (x = the epoch): ``epoch/train_loss``, ``epoch/val_loss``, ``epoch/val_acc``, ``epoch/images_per_s``.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Dict

from ..config import ConfigError
from .base import Callback, FitState

__all__ = ["TensorBoardLogger", "EPOCH_TAGS"]

#: ``metrics.jsonl`` field -> its per-epoch tag
EPOCH_TAGS = {"train_loss": "epoch/train_loss", "val_loss": "epoch/val_loss", "val_acc": "epoch/val_acc",
              "images_per_s": "epoch/images_per_s"}


def _event_file_api():
    """``(EventFileWriter, Event, Summary)`` of the ``tensorboard`` package, or a clear error naming the extra."""
    try:
        from tensorboard.compat.proto.event_pb2 import Event
        from tensorboard.compat.proto.summary_pb2 import Summary
        from tensorboard.summary.writer.event_file_writer import EventFileWriter
    except ImportError:
        raise ConfigError("tensorboard: writing TensorBoard event files needs the tensorboard package; install the "
                          "extra: pip install -e '.[tensorboard]' (or pip install tensorboard), or drop --tensorboard"
                          ) from None
    return EventFileWriter, Event, Summary


class TensorBoardLogger(Callback):
    """Scalars of the run into TensorBoard event files under ``log_dir`` (see the module docstring)."""

    def __init__(self, log_dir: str) -> None:
        self.log_dir = Path(log_dir)
        # a missing package fails here, before the run starts
        self._writer_class, self._event, self._summary = _event_file_api()
        self.writer = None

    def on_fit_start(self, state: FitState) -> None:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.writer = self._writer_class(str(self.log_dir))

    def scalar(self, tag: str, value: float, step: int) -> None:
        """One scalar event (``tag`` at ``step``)."""
        summary = self._summary(value=[self._summary.Value(tag=tag, simple_value=float(value))])
        self.writer.add_event(self._event(wall_time=time.time(), step=int(step), summary=summary))

    def on_train_batch_end(self, state: FitState, batch: int, loss: float) -> None:
        step = state.global_step(batch)
        self.scalar("step/loss", loss, step)
        self.scalar("step/lr", state.lr(batch), step)

    def on_epoch_end(self, state: FitState, epoch: int, metrics: Dict) -> None:
        for key, tag in EPOCH_TAGS.items():
            self.scalar(tag, metrics[key], epoch)
        self.writer.flush()  # an epoch's scalars are on disk even if the run dies later

    def on_fit_end(self, state: FitState) -> None:
        self._close()

    def on_exception(self, state: FitState, exc: BaseException) -> None:
        self._close()

    def _close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None
