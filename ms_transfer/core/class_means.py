"""A head that classifies by the nearest class mean of the trunk's features (``head_init: class_means``; plain
numpy).

With few labelled images per class, the trunk's features of each class averaged into one direction classify
better than a head trained on them: the nearest class mean by cosine similarity (SimpleShot, Wang et al. 2019;
"imprinted weights", Qi et al. 2018): ``make demo`` measures it against training from scratch and against the class
means of a random trunk (docs/studies.md).

The head keeps the architecture's layers, so the checkpoint, evaluation, prediction and conversion are those of any
run. Its weights make the logits ``s_c = m_c . f``: ``m_c`` the unit-length mean of class ``c``'s unit-length
training features, ``f`` a sample's features. For one sample ``|f|`` is common to every class, so the largest
``s_c`` is the largest cosine similarity. A head of several Dense layers with ReLU between them (a small network's
Dense 256, a VGG classifier) passes ``s`` through its hidden layers as ``(relu(s), relu(-s))``: their difference is
``s`` again, so it needs twice as many hidden units as classes. Its other units keep their drawn weights, and the
next layer starts by not reading them (zero weights from them): the logits are the class scores alone, and those
units train from the first step.
"""
from __future__ import annotations

from typing import Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np


class ClassMeansError(ValueError):
    """The head or the training set cannot hold class means (which, and why)."""


def class_means(features: np.ndarray, labels: np.ndarray, num_classes: int,
                names: Optional[Sequence[str]] = None) -> np.ndarray:
    """``(num_classes, D)`` unit-length means of the unit-length ``features`` ``(N, D)`` of each class (``names``:
    the classes' names, for the error when one has no image)."""
    flat = features.reshape(len(features), -1).astype(np.float64)
    unit = flat / np.maximum(np.linalg.norm(flat, axis=1, keepdims=True), 1e-12)
    missing = [c for c in range(num_classes) if not np.any(labels == c)]
    if missing:
        shown = [names[c] for c in missing] if names is not None else missing
        raise ClassMeansError(f"head_init class_means: the training set has no image of class(es) {shown}; every "
                              "class needs at least one (a larger data_fraction, or head_init model)")
    means = np.stack([unit[labels == c].mean(axis=0) for c in range(num_classes)])
    return means / np.maximum(np.linalg.norm(means, axis=1, keepdims=True), 1e-12)


def class_means_head(head: Sequence[Tuple[str, np.ndarray]], means: np.ndarray) -> Dict[str, np.ndarray]:
    """New values of a head's parameters (``head``: ``(name, array)`` in layer order, each Dense layer's weight
    ``(out, in)`` then its bias; ReLU between Dense layers) whose logits are ``means @ features``."""
    dense: List[Tuple[str, np.ndarray, str, np.ndarray]] = []
    items = list(head)
    if len(items) % 2 or not items:
        raise ClassMeansError(f"head_init class_means: expected a head of Dense layers (weight, bias), got "
                              f"{[n for n, _ in items]}")
    for (wname, w), (bname, b) in zip(items[0::2], items[1::2]):
        if w.ndim != 2 or b.ndim != 1 or b.shape[0] != w.shape[0]:
            raise ClassMeansError(f"head_init class_means: {wname} {w.shape} / {bname} {b.shape} is not a Dense "
                                  "layer's weight and bias")
        dense.append((wname, w, bname, b))
    classes, dim = means.shape
    if dense[0][1].shape[1] != dim or dense[-1][1].shape[0] != classes:
        raise ClassMeansError(f"head_init class_means: the head maps {dense[0][1].shape[1]} features to "
                              f"{dense[-1][1].shape[0]} classes, the class means are {classes} x {dim}")
    for wname, w, _, _ in dense[:-1]:
        if w.shape[0] < 2 * classes:
            raise ClassMeansError(f"head_init class_means: hidden layer {wname} has {w.shape[0]} units; passing "
                                  f"{classes} class scores through it needs >= {2 * classes} (use head_init model)")
    eye, k = np.eye(classes), 2 * classes
    out: Dict[str, np.ndarray] = {}
    for i, (wname, w, bname, b) in enumerate(dense):
        if len(dense) == 1:
            new, bias = means, np.zeros_like(b)
        elif i == len(dense) - 1:         # relu(s) - relu(-s) = s; the other units' outputs are not read
            new, bias = np.zeros(w.shape), np.zeros_like(b)
            new[:, :classes], new[:, classes:k] = eye, -eye
        else:
            # The first 2C units carry (s, -s); the others keep their drawn weights and bias, so that they output
            # something and train from the first step (at zero they would stay at zero: ReLU's gradient at 0 is 0)
            new, bias = w.astype(np.float64), b.copy()
            bias[:k] = 0
            if i == 0:                    # (s, -s)
                new[:classes], new[classes:k] = means, -means
            else:                         # (relu(s) - relu(-s), relu(-s) - relu(s)) = (s, -s), nothing else read
                new[:k] = 0
                new[:classes, :classes], new[:classes, classes:k] = eye, -eye
                new[classes:k, :classes], new[classes:k, classes:k] = -eye, eye
        out[wname], out[bname] = new.astype(w.dtype), bias
    return out


def check_head_names(arrays: Mapping[str, np.ndarray], head: Mapping[str, object]) -> None:
    """A backend's check before it sets head parameters: every name in ``arrays`` is one of ``head``'s."""
    unknown = sorted(set(arrays) - set(head))
    if unknown:
        raise ClassMeansError(f"not parameters of the head: {unknown}; the head has {sorted(head)}")
