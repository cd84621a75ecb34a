"""Run plots: loss/accuracy curves and a grid of validation predictions (blue right, red wrong).

Figures are plain :class:`matplotlib.figure.Figure` objects saved to files, never pyplot's: a library must not
choose the process's matplotlib backend (a notebook importing the loop keeps its own) and files need no display.
"""
from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path
from typing import Dict, List, Sequence

import numpy as np

from .presets import IMAGENET_MEAN, IMAGENET_STD


def _save(fig, path: Path) -> None:
    """Save atomically: a crash never leaves a truncated PNG."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=path.suffix, dir=path.parent)
    os.close(fd)
    try:
        fig.savefig(tmp, dpi=100, bbox_inches="tight")
        os.chmod(tmp, 0o644)  # mkstemp's 0600 would make plots unreadable to anyone else
        os.replace(tmp, path)
    finally:
        pyplot = sys.modules.get("matplotlib.pyplot")
        if pyplot is not None:
            pyplot.close(fig)   # a pyplot figure (the study's) leaves pyplot's registry; a plain Figure is in none
        if os.path.exists(tmp):
            os.unlink(tmp)


def _figure(**kwargs):
    """A plain matplotlib Figure. matplotlib is imported here, when a run plots, not with the loop: every process
    that imports the loop without plotting (evaluate, predict, data-parallel ranks, parity) would pay ~0.3-0.5 s."""
    from matplotlib.figure import Figure
    return Figure(**kwargs)


def plot_curves(history: List[Dict], path: Path) -> None:
    """``curves.png``: train/val loss and val accuracy per epoch."""
    epochs = [r["epoch"] for r in history]
    fig = _figure(figsize=(10, 4))
    ax_loss, ax_acc = fig.subplots(1, 2)
    ax_loss.plot(epochs, [r["train_loss"] for r in history], "o-", label="train")
    ax_loss.plot(epochs, [r["val_loss"] for r in history], "o-", label="val")
    ax_loss.set(xlabel="epoch", ylabel="loss", title="Loss")
    ax_loss.legend()
    ax_acc.plot(epochs, [r["val_acc"] for r in history], "o-", color="tab:green")
    ax_acc.set(xlabel="epoch", ylabel="accuracy", title="Validation accuracy", ylim=(0, 1.05))
    _save(fig, path)


def plot_predictions(images: np.ndarray, labels: Sequence[int], preds: Sequence[int], classes: Sequence[str],
                     path: Path, max_images: int = 8, mean: Sequence[float] = IMAGENET_MEAN,
                     std: Sequence[float] = IMAGENET_STD) -> List[str]:
    """``predictions.png``: de-normalised images (``mean``/``std`` of the run's normalisation; 1-channel images in
    grey) titled with the prediction; returns the title colours."""
    n = min(len(images), max_images)
    cols = min(n, 4)
    rows = (n + cols - 1) // cols
    fig = _figure(figsize=(3 * cols, 3 * rows))
    axes = fig.subplots(rows, cols, squeeze=False)
    colours = []
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i >= n:
            continue
        img = np.transpose(images[i], (1, 2, 0)) * np.array(std) + np.array(mean)
        colour = "blue" if preds[i] == labels[i] else "red"
        colours.append(colour)
        if img.shape[2] == 1:
            ax.imshow(np.clip(img[:, :, 0], 0, 1), cmap="gray", vmin=0, vmax=1)
        else:
            ax.imshow(np.clip(img, 0, 1))
        ax.set_title(f"predict: {classes[preds[i]]}", color=colour)
    _save(fig, path)
    return colours
