"""What a run learns, framework-neutral: ``classify`` (one image -> class logits, cross-entropy), ``digit_sum``
(the digit adder: a pair of digit images -> their sum, MSE regression, accuracy of the rounded sum) or
``digit_sum_class`` (the same pairs, logits over the 19 sums, cross-entropy).

The task follows from the architecture (:func:`~ms_transfer.core.archs.task_of`). For both pair tasks the image
folder's digits are paired *within* a split (:func:`pair_split`), so an image never meets one from another split,
and never itself: the train pairs are redrawn every epoch (seed + epoch, as the seed's two independent samplers
do), the val/test pairs are fixed. A pair sample is ``((path_a, path_b), label_a + label_b)``: both pipelines read
it like an image sample, with two images.
"""
from __future__ import annotations

from typing import Dict, List, Sequence

import numpy as np

from .archs import task_of
from .spec import PAIR_TASKS
from .data import SplitScan

__all__ = ["task_of", "is_pair_task", "num_outputs", "pair_split", "sum_metrics", "task_metrics", "SUM_CLASSES", "VAL_PAIR_SEED"]

#: the sums two digits can make (plot titles, per-sum accuracy)
SUM_CLASSES = [str(s) for s in range(19)]
#: the val/test pairs are the same in every run and every epoch
VAL_PAIR_SEED = 12345
#: why the frozen-trunk fast path (one input -> trunk features -> head) does not apply to the adder
NO_FAST_PATH = "a two-input network (the digit adder): its branches run in the full train step"


def is_pair_samples(samples) -> bool:
    """Whether ``samples`` are digit pairs ``((path_a, path_b), sum)`` (the pipelines then yield two images)."""
    return bool(samples) and isinstance(samples[0][0], tuple)


def is_pair_task(task: str) -> bool:
    """Whether ``task``'s samples are pairs of digit images (the digit adders)."""
    return task in PAIR_TASKS


def num_outputs(arch: str, num_classes: int) -> int:
    """Width of the network's output: the class count; 1 (the sum) for ``digit_sum``, 19 for ``digit_sum_class``."""
    task = task_of(arch)
    return {"digit_sum": 1, "digit_sum_class": len(SUM_CLASSES)}.get(task, num_classes)


def pair_split(scan: SplitScan, seed: int) -> SplitScan:
    """Every image of ``scan`` once as the first of a pair, its partner drawn from the same split by a seeded
    permutation without fixed points (an image is never paired with itself); labels become the sums."""
    n = len(scan.samples)
    if n < 2:
        raise ValueError(f"{scan.root / scan.split}: a digit pair needs at least 2 images, found {n}")
    partner = np.random.RandomState(int(seed)).permutation(n)
    for i in np.flatnonzero(partner == np.arange(n)):  # fixed point: swap with the next slot (still a permutation)
        j = (i + 1) % n
        partner[i], partner[j] = partner[j], partner[i]
    samples = [((scan.samples[i][0], scan.samples[p][0]), scan.samples[i][1] + scan.samples[p][1])
               for i, p in enumerate(partner)]
    return SplitScan(scan.root, scan.split, SUM_CLASSES, samples, scan.skipped)


def sum_metrics(outputs: Sequence[np.ndarray], targets: Sequence[np.ndarray]) -> Dict:
    """``loss`` (mean squared error), ``accuracy`` (rounded prediction == sum), ``per_class_accuracy`` per sum
    0..18 (``None`` without samples), ``mae`` and ``num_samples``."""
    if not targets:
        raise ValueError("the evaluation set is empty")
    pred = np.concatenate([np.asarray(o, np.float64).reshape(len(o), -1)[:, 0] for o in outputs])
    true = np.concatenate([np.asarray(t) for t in targets]).astype(np.int64)
    right = np.rint(pred) == true
    per_sum: List = [float(right[true == s].mean()) if np.any(true == s) else None for s in range(len(SUM_CLASSES))]
    return {"loss": float(np.mean((pred - true) ** 2)), "accuracy": float(right.mean()), "mae": float(np.mean(
        np.abs(pred - true))), "per_class_accuracy": per_sum, "num_samples": int(len(true))}


def check_classifier(arch: str, what: object) -> None:
    """Evaluate / predict take one image per sample: refuse the digit adder with where its results are."""
    if task_of(arch) != "classify":
        from .checkpoint_io import CheckpointError
        raise CheckpointError(f"{what} is a {arch} (a pair of digit images -> their sum); evaluate and predict "
                              "classify single images. Its test accuracy is in the run's test.json (written when "
                              "training ends), its per-epoch validation in metrics.jsonl")


def task_metrics(task: str, outputs: Sequence[np.ndarray], targets: Sequence[np.ndarray], num_classes: int) -> Dict:
    """The task's validation metrics (both have ``loss`` and ``accuracy``)."""
    from .metrics import classification_metrics

    if task == "digit_sum":
        return sum_metrics(outputs, targets)
    if task == "digit_sum_class":
        return classification_metrics(outputs, targets, len(SUM_CLASSES))
    return classification_metrics(outputs, targets, num_classes)
