"""TensorBoard event files of a run (``--tensorboard DIR``), as a :class:`~.callbacks.Callback`.

Written with tensorboardX's ``SummaryWriter`` (numpy and protobuf only, no torch), so both frameworks use it;
the ``tensorboard`` extra installs it (``pip install -e '.[tensorboard]'``). Scalars (``tensorboard --logdir
DIR`` shows them):

- per optimizer step (x = the run's step count, continued by ``--resume``): ``step/loss``, ``step/lr`` (the base
  learning rate; a parameter group's is this times its ``lr_mult``);
- per epoch (x = the epoch): ``epoch/train_loss``, ``epoch/val_loss``, ``epoch/val_acc``, ``epoch/images_per_s``.
"""
from __future__ import annotations

from pathlib import Path
from typing import Dict

from .callbacks import Callback, FitState
from .config import ConfigError

__all__ = ["TensorBoardLogger", "EPOCH_TAGS"]

#: ``metrics.jsonl`` field -> its per-epoch tag
EPOCH_TAGS = {"train_loss": "epoch/train_loss", "val_loss": "epoch/val_loss", "val_acc": "epoch/val_acc",
              "images_per_s": "epoch/images_per_s"}


def _summary_writer():
    try:
        from tensorboardX import SummaryWriter
    except ImportError:
        raise ConfigError("tensorboard: writing TensorBoard event files needs tensorboardX; install the extra: "
                          "pip install -e '.[tensorboard]' (or pip install tensorboardX), or drop --tensorboard"
                          ) from None
    return SummaryWriter


class TensorBoardLogger(Callback):
    """Scalars of the run into TensorBoard event files under ``log_dir`` (see the module docstring)."""

    def __init__(self, log_dir: str) -> None:
        self.log_dir = Path(log_dir)
        self._writer_class = _summary_writer()  # a missing tensorboardX fails before the run starts
        self.writer = None

    def on_fit_start(self, state: FitState) -> None:
        self.writer = self._writer_class(logdir=str(self.log_dir))

    def on_train_batch_end(self, state: FitState, batch: int, loss: float) -> None:
        step = state.global_step(batch)
        self.writer.add_scalar("step/loss", loss, step)
        self.writer.add_scalar("step/lr", state.lr(batch), step)

    def on_epoch_end(self, state: FitState, epoch: int, metrics: Dict) -> None:
        for key, tag in EPOCH_TAGS.items():
            self.writer.add_scalar(tag, metrics[key], epoch)
        self.writer.flush()  # an epoch's scalars are on disk even if the run dies later

    def on_fit_end(self, state: FitState) -> None:
        self._close()

    def on_exception(self, state: FitState, exc: BaseException) -> None:
        self._close()

    def _close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None
