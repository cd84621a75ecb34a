"""MindSpore's side of PreciseBN (:mod:`ms_transfer.core.callbacks.precise_bn`): which BatchNorm layers train, the
moments of their inputs in one forward pass, and writing their recomputed statistics.

The inputs are read with Cell forward pre-hooks, which MindSpore runs in PYNATIVE mode only ("Hook Programming",
MindSpore tutorials); the pass switches to PYNATIVE and back (:func:`.context.pynative`), so a GRAPH-mode run keeps
its compiled train step.
"""
from __future__ import annotations

from typing import List, Mapping, Sequence, Tuple

import mindspore as ms
import numpy as np
from mindspore import nn

from .context import pynative

__all__ = ["trainable_batchnorms", "batchnorm_moments", "set_batchnorm_statistics"]


def trainable_batchnorms(net: nn.Cell) -> List[str]:
    """Names of the ``BatchNorm2d`` cells that normalise with batch statistics in training (``use_batch_statistics``
    ``None``; :func:`.optim.apply_freeze` sets frozen ones to ``False``: inference mode)."""
    return [n for n, c in net.cells_and_names() if isinstance(c, nn.BatchNorm2d) and c.use_batch_statistics is None]


def batchnorm_moments(net: nn.Cell, names: Sequence[str],
                      inputs: Tuple[ms.Tensor, ...]) -> List[Tuple[str, int, np.ndarray, np.ndarray]]:
    """``(name, elements per channel, mean, biased variance)`` of each named BatchNorm's input in ``net(*inputs)``,
    the net in eval mode except those cells (batch statistics), in PYNATIVE mode. Their moving statistics are
    restored afterwards bit for bit (a train-mode BatchNorm updates them); the net is left in eval mode."""
    cells = dict(net.cells_and_names())
    moments: List[Tuple[str, int, np.ndarray, np.ndarray]] = []

    def hook(name: str):
        def record(cell, args):
            t = args[0]
            axes = (0,) + tuple(range(2, t.ndim))
            mean = t.mean(axis=axes, keep_dims=True)
            var = ((t - mean) ** 2).mean(axis=axes)
            moments.append((name, t.size // t.shape[1], mean.reshape(-1).asnumpy(), var.asnumpy()))
        return record

    saved = {n: (cells[n].moving_mean.asnumpy().copy(), cells[n].moving_variance.asnumpy().copy()) for n in names}
    with pynative():
        handles = [cells[n].register_forward_pre_hook(hook(n)) for n in names]
        net.set_train(False)
        for n in names:
            cells[n].set_train(True)
        try:
            net(*inputs)
        finally:
            for h in handles:
                h.remove()
            set_batchnorm_statistics(net, saved)
            net.set_train(False)
    return moments


def set_batchnorm_statistics(net: nn.Cell, stats: Mapping[str, Tuple[np.ndarray, np.ndarray]]) -> None:
    """Overwrite the named BatchNorms' ``moving_mean`` / ``moving_variance``."""
    cells = dict(net.cells_and_names())
    for name, (mean, var) in stats.items():
        cells[name].moving_mean.set_data(ms.Tensor(np.asarray(mean, np.float32)))
        cells[name].moving_variance.set_data(ms.Tensor(np.asarray(var, np.float32)))
