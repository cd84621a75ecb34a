"""MindSpore's side of PreciseBN (:mod:`ms_transfer.core.callbacks.precise_bn`): which BatchNorm layers train, the
moments of their inputs in one forward pass, and writing their recomputed statistics.

The inputs are read in a PYNATIVE pass (:func:`.context.pynative`: the mode is switched for the pass and back), where a
cell's Python ``construct`` runs as written; a GRAPH-mode run keeps its compiled train step and eval graph.
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
    the net in eval mode except those cells (batch statistics), in PYNATIVE mode (the named cells must be trainable
    ones: their ``use_batch_statistics`` is ``None`` before and after). Their moving statistics are restored
    afterwards bit for bit (a batch-statistics BatchNorm updates them); the net is left in eval mode."""
    cells = dict(net.cells_and_names())
    moments: List[Tuple[str, int, np.ndarray, np.ndarray]] = []

    def recording(name: str, construct):
        def record(x):
            # in numpy, accumulated in float64: MindSpore's CPU mean and squared-deviation ops took 52 ms for a
            # (64, 32, 28, 28) input against numpy's 7 ms (PreciseBN over fashion_cnn's 1,800 training digits: 2.4 s
            # per epoch, torch 1.0 s)
            a = x.asnumpy()
            axes = (0,) + tuple(range(2, a.ndim))
            mean, var = a.mean(axis=axes, dtype=np.float64), a.var(axis=axes, dtype=np.float64)
            moments.append((name, a.size // a.shape[1], mean, var))
            return construct(x)
        return record

    saved = {n: (cells[n].moving_mean.asnumpy().copy(), cells[n].moving_variance.asnumpy().copy()) for n in names}
    # The inputs are read by a recording `construct` set on the instance for the pass, not by forward pre-hooks,
    # and batch statistics come from use_batch_statistics=True, not set_train(True) on those cells: a hook once
    # registered, or mixed training flags, make a GRAPH-mode net recompile its train step and eval graph afterwards
    # (measured on fashion_cnn: 6.7 s and ~2 s after every pass, against 0.05-0.2 s).
    with pynative():
        net.set_train(False)
        for n in names:
            cells[n].construct = recording(n, cells[n].construct)
            cells[n].use_batch_statistics = True
        try:
            net(*inputs)
        finally:
            for n in names:
                del cells[n].construct   # the class's own again
                cells[n].use_batch_statistics = None
            set_batchnorm_statistics(net, saved)
    return moments


def set_batchnorm_statistics(net: nn.Cell, stats: Mapping[str, Tuple[np.ndarray, np.ndarray]]) -> None:
    """Overwrite the named BatchNorms' ``moving_mean`` / ``moving_variance``."""
    cells = dict(net.cells_and_names())
    for name, (mean, var) in stats.items():
        cells[name].moving_mean.set_data(ms.Tensor(np.asarray(mean, np.float32)))
        cells[name].moving_variance.set_data(ms.Tensor(np.asarray(var, np.float32)))
