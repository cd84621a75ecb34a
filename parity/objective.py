"""The scalar both frameworks differentiate, and how outputs are named (no framework imported here).

``cross_entropy``: mean cross-entropy of the first output against integer targets (a classifier).
``projection``: ``sum_i mean(output_i * W_i)`` with fixed seeded ``W_i`` of each output's shape -- a loss any
model has, whatever its outputs mean, and one whose gradient reaches every output element.
"""
from __future__ import annotations

from typing import Any, Dict, List, Mapping, Sequence, Tuple

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


class CallRecorder:
    """What a localisation forward's hooks record: ``(layer name, call index, inputs, outputs)`` in the order the
    calls finished (a layer used twice, like torchvision's ``relu``, gets call indices 0 and 1)."""

    def __init__(self) -> None:
        self.records: List[Tuple[str, int, List[np.ndarray], List[np.ndarray]]] = []
        self._calls: Dict[str, int] = {}

    def add(self, name: str, inputs: List[np.ndarray], outputs: List[np.ndarray]) -> None:
        k = self._calls.get(name, 0)
        self._calls[name] = k + 1
        self.records.append((name, k, inputs, outputs))


def projection_weights(shapes: Sequence[Sequence[int]], seed: int) -> List[np.ndarray]:
    """The fixed ``W_i`` of the projection loss (float32, standard normal)."""
    rng = np.random.RandomState(seed + 7)
    return [rng.standard_normal(tuple(s)).astype(np.float32) for s in shapes]


def synthetic_grads(params: Mapping[str, np.ndarray], steps: int, seed: int) -> List[Dict[str, np.ndarray]]:
    """Seeded gradients (0.1 x each parameter's RMS) fed identically to both optimizers.

    The optimizer is checked on shared gradients so that its update rule (learning rate, momentum convention,
    which tensors get weight decay) is compared at float32 rounding precision, instead of drowning in the ~2%
    train-mode gradient noise; the gradients themselves have their own checks. Plain numpy, in ``params``' order,
    so a reference bundle regenerates them without storing them.
    """
    rng = np.random.RandomState(seed + 3)
    rms = {k: float(np.sqrt(np.mean(np.asarray(v, np.float64) ** 2))) or 1.0 for k, v in params.items()}
    return [{k: (0.1 * rms[k] * rng.standard_normal(np.shape(v))).astype(np.float32) for k, v in params.items()}
            for _ in range(steps)]


def generated_tensor(spec: Mapping, shape: Sequence[int]) -> np.ndarray:
    """A float32 tensor from a generator spec ``{"dist": "normal" | "uniform", "scale": s, "seed": [a, b]}``:
    ``s * N(0, 1)`` or ``U(-s, s)`` from numpy's ``RandomState`` (whose streams numpy keeps stable across versions,
    NEP 19), so that a reference bundle regenerates large weights instead of storing them."""
    rng = np.random.RandomState(list(spec["seed"]))
    if spec["dist"] == "normal":
        return (spec["scale"] * rng.standard_normal(tuple(shape))).astype(np.float32)
    if spec["dist"] == "uniform":
        return rng.uniform(-spec["scale"], spec["scale"], tuple(shape)).astype(np.float32)
    raise ValueError(f"unknown generator {spec['dist']!r}")
