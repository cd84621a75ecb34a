"""The scalar both frameworks differentiate, over every output, and how outputs are named (no framework here).

``cross_entropy``: mean cross-entropy of the first output against integer targets (a classifier).
``projection``: ``sum_i mean(output_i * W_i)`` with fixed seeded ``W_i`` of each output's shape -- a loss any
model has, whatever its outputs mean, and one whose gradient reaches every output element.
"""
from __future__ import annotations

from typing import Any, List, Sequence

import numpy as np

CROSS_ENTROPY = "cross_entropy"
PROJECTION = "projection"
LOSSES = (CROSS_ENTROPY, PROJECTION)


def output_names(n: int) -> List[str]:
    """``output`` for a single output, ``output[i]`` for several."""
    return ["output"] if n == 1 else [f"output[{i}]" for i in range(n)]


def flatten(out, tensor_type: type) -> List[Any]:
    """A model's output as a flat list of ``tensor_type`` objects (a tensor, or nested tuples / lists of them)."""
    if isinstance(out, tensor_type):
        return [out]
    if isinstance(out, (tuple, list)):
        return [t for o in out for t in flatten(o, tensor_type)]
    raise TypeError(f"parity compares tensor outputs (or tuples / lists of them), got {type(out).__name__}")


def projection_weights(shapes: Sequence[Sequence[int]], seed: int) -> List[np.ndarray]:
    """The fixed ``W_i`` of the projection loss (float32, standard normal)."""
    rng = np.random.RandomState(seed + 7)
    return [rng.standard_normal(tuple(s)).astype(np.float32) for s in shapes]
