"""PreciseBN: before every evaluation, the moving statistics of the BatchNorm layers that train are replaced by the
population statistics of their inputs over the whole training split (detectron2's ``PreciseBN`` hook, timm's
"precise BN"; Wu & Johnson, "Rethinking 'Batch' in BatchNorm", 2021).

Why: with few steps per epoch and a slow momentum (the Keras seeds' 0.99: 1% of a batch's statistics per step), the
moving averages still describe the early weights when the epoch ends, so evaluation normalises with statistics
of another network. Recomputing them from the trained weights removes that artefact.

What is computed, as detectron2 does: one pass over the training split under the *eval* transform, the model in
eval mode except the BatchNorm layers that train, which normalise with their batch statistics (so each layer's
input is what training would give it); per layer, the mean and the unbiased variance of its input over every
element of the split (batch moments combined exactly: Chan et al.'s pairwise update in float64, not an average of
per-batch variances). Frozen BatchNorm layers (inference mode) are neither used in batch mode nor changed: their
statistics stay bit-identical. The backends supply only the per-batch moments
(:meth:`~..backend.Step.batchnorm_moments`) and write the result (:meth:`~..backend.Step.set_batchnorm_statistics`);
the accumulation is written once, here.
"""
from __future__ import annotations

import logging
import time
from typing import Dict, Iterable, Tuple

import numpy as np

from .base import Callback, FitState

__all__ = ["MomentAccumulator", "PreciseBN", "population_statistics"]

log = logging.getLogger(__name__)

#: ``(layer name, elements per channel, per-channel mean, per-channel biased variance)`` of one BN input in a batch
Moments = Tuple[str, int, np.ndarray, np.ndarray]


class MomentAccumulator:
    """Per-layer count, mean and sum of squared deviations (M2), merged batch by batch in float64 (Chan, Golub &
    LeVeque's pairwise update: exact up to rounding, whatever the batch sizes)."""

    def __init__(self) -> None:
        self._count: Dict[str, int] = {}
        self._mean: Dict[str, np.ndarray] = {}
        self._m2: Dict[str, np.ndarray] = {}

    def add(self, name: str, count: int, mean: np.ndarray, var: np.ndarray) -> None:
        """Merge one batch's moments of layer ``name``: ``count`` elements per channel, their ``mean`` and biased
        ``var`` (per channel)."""
        mean, m2 = np.asarray(mean, np.float64), np.asarray(var, np.float64) * count
        if name not in self._count:
            self._count[name], self._mean[name], self._m2[name] = count, mean, m2
            return
        n_a, total = self._count[name], self._count[name] + count
        delta = mean - self._mean[name]
        self._mean[name] = self._mean[name] + delta * (count / total)
        self._m2[name] = self._m2[name] + m2 + delta ** 2 * (n_a * count / total)
        self._count[name] = total

    def statistics(self) -> Dict[str, Tuple[np.ndarray, np.ndarray]]:
        """``{layer: (mean, unbiased variance)}`` as float32 (what BatchNorm's moving statistics hold; torch and
        MindSpore both keep the unbiased variance)."""
        out = {}
        for name, n in self._count.items():
            if n < 2:
                raise ValueError(f"PreciseBN: BatchNorm {name!r} saw {n} element per channel over the training "
                                 "split; an unbiased variance needs at least 2")
            out[name] = (self._mean[name].astype(np.float32), (self._m2[name] / (n - 1)).astype(np.float32))
        return out


def population_statistics(batch_moments: Iterable[Iterable[Moments]]) -> Dict[str, Tuple[np.ndarray, np.ndarray]]:
    """``{layer: (mean, unbiased variance)}`` over every batch's moments (each batch: the backend's
    :meth:`~..backend.Step.batchnorm_moments`)."""
    acc = MomentAccumulator()
    for moments in batch_moments:
        for name, count, mean, var in moments:
            acc.add(name, count, mean, var)
    return acc.statistics()


class PreciseBN(Callback):
    """Recomputes the statistics of the BatchNorm layers that train before every validation (see the module
    docstring), so validation, the ``best``/``last`` checkpoints written after it, evaluate, predict and resume
    all see them. A no-op when no BatchNorm trains (frozen trunk, networks without BatchNorm). Runs on every rank of
    a data-parallel run: each passes over the whole training split and gets the same statistics."""

    all_ranks = True

    def __init__(self) -> None:
        self._reported = False

    def on_validation_start(self, state: FitState) -> None:
        backend, run = state.backend, state.run
        layers = backend.trainable_batchnorms()
        if not layers:
            return
        start = time.perf_counter()
        train = run.eval_split(run.train)   # the digit adder's pairs: every training digit once
        batches, _ = backend.loader(train, train=False, shuffle=False, seed=state.cfg.seed)
        stats = population_statistics(backend.batchnorm_moments(x) for x, _ in batches)
        backend.set_batchnorm_statistics(stats)
        message = (f"PreciseBN: the statistics of {len(stats)} BatchNorm layer(s) that train recomputed over the "
                   f"{len(train)} training samples (eval transform) in {time.perf_counter() - start:.1f} s")
        if self._reported:
            log.debug(message)
        else:   # once per run at info level; later epochs at debug
            self._reported = True
            log.info(message + " (precise_bn=off turns it off)")
